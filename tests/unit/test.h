/* A minimal test harness: TEST functions, CHECK macros, a summary line ctest reads. */
#ifndef CHORUS_TEST_H
#define CHORUS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
    const char *name;
    void (*fn)(void);
};

extern int test__failed_checks;

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            test__failed_checks++;                                                 \
            return;                                                                \
        }                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                         \
    do {                                                                           \
        long long test__a = (long long)(a), test__b = (long long)(b);              \
        if (test__a != test__b) {                                                  \
            fprintf(stderr, "  %s:%d: CHECK_EQ_INT failed: %s == %lld, %s == %lld\n", \
                    __FILE__, __LINE__, #a, test__a, #b, test__b);                 \
            test__failed_checks++;                                                 \
            return;                                                                \
        }                                                                          \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                         \
    do {                                                                           \
        uint64_t test__a = (uint64_t)(a), test__b = (uint64_t)(b);                 \
        if (test__a != test__b) {                                                  \
            fprintf(stderr, "  %s:%d: CHECK_EQ_U64 failed: %s == %" PRIu64 ", %s == %" PRIu64 "\n", \
                    __FILE__, __LINE__, #a, test__a, #b, test__b);                 \
            test__failed_checks++;                                                 \
            return;                                                                \
        }                                                                          \
    } while (0)

/* Runs every case; prints one line per case and "N passed, N failed". */
static inline int test_run_all(const struct test_case *cases, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        int before = test__failed_checks;
        cases[i].fn();
        if (test__failed_checks == before) {
            passed++;
            printf("ok   %s\n", cases[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define TEST_MAIN(...)                                                             \
    int test__failed_checks;                                                       \
    int main(void)                                                                 \
    {                                                                              \
        static const struct test_case cases[] = {__VA_ARGS__};                     \
        return test_run_all(cases, sizeof cases / sizeof cases[0]);                \
    }

#define TEST_CASE(fn) {#fn, fn}

#endif
