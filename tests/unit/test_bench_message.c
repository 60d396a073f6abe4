/* Unit tests of chorus-bench's decoder of gateway messages (src/bench/message). */
#include <stdint.h>
#include <string.h>

#include "bench/message.h"
#include "common/error.h"
#include "test.h"

static int decode(const char *text, struct bench_message *m)
{
    char err[160];
    return bench_message_decode(text, strlen(text), m, err, sizeof err);
}

static void test_replies(void)
{
    struct bench_message m;
    CHECK_EQ_INT(
        decode("{\"type\":\"reply\",\"id\":7,\"ok\":true,\"result\":{\"conv\":4711,"
               "\"seq\":12,\"ts\":1795000000000,\"dup\":false}}",
               &m),
        0);
    CHECK_EQ_INT(m.type, BENCH_MSG_REPLY);
    CHECK_EQ_INT(m.has_id, 1);
    CHECK_EQ_INT(m.id, 7);
    CHECK_EQ_INT(m.ok, 1);
    CHECK_EQ_U64(m.result_conv, 4711);
    CHECK_EQ_U64(m.result_seq, 12);

    CHECK_EQ_INT(
        decode("{\"type\":\"reply\",\"id\":3,\"ok\":false,\"error\":{\"code\":"
               "\"rate_limited\",\"message\":\"slow down\",\"retry_after_ms\":250}}",
               &m),
        0);
    CHECK_EQ_INT(m.ok, 0);
    CHECK(strcmp(m.code, "rate_limited") == 0);
    CHECK_EQ_U64(m.retry_after_ms, 250);

    /* a null id (the gateway could not read ours) and a result without conv */
    CHECK_EQ_INT(decode("{\"type\":\"reply\",\"id\":null,\"ok\":true,\"result\":{}}", &m),
                 0);
    CHECK_EQ_INT(m.has_id, 0);
    CHECK_EQ_U64(m.result_conv, 0);
}

static void test_events_and_pushes(void)
{
    struct bench_message m;
    CHECK_EQ_INT(
        decode("{\"type\":\"event\",\"conv\":4711,\"seq\":12,\"ts\":1,\"event\":"
               "\"message\",\"from\":\"alice\",\"client_msg_id\":\"m-1\",\"body\":"
               "\"hi\"}",
               &m),
        0);
    CHECK_EQ_INT(m.type, BENCH_MSG_EVENT);
    CHECK_EQ_U64(m.conv, 4711);
    CHECK_EQ_U64(m.seq, 12);
    CHECK(strcmp(m.event, "message") == 0);
    CHECK(strcmp(m.client_msg_id, "m-1") == 0);

    /* receipts have seq 0 and no client_msg_id */
    CHECK_EQ_INT(
        decode("{\"type\":\"event\",\"conv\":1,\"seq\":0,\"event\":\"receipt\"}", &m), 0);
    CHECK_EQ_U64(m.seq, 0);
    CHECK_EQ_INT(m.client_msg_id[0], 0);

    CHECK_EQ_INT(decode("{\"type\":\"goodbye\",\"code\":\"slow_consumer\"}", &m), 0);
    CHECK_EQ_INT(m.type, BENCH_MSG_GOODBYE);
    CHECK(strcmp(m.code, "slow_consumer") == 0);

    CHECK_EQ_INT(decode("{\"type\":\"typing\",\"conv\":1,\"user\":\"bob\"}", &m), 0);
    CHECK_EQ_INT(m.type, BENCH_MSG_OTHER);
}

/* Everything malformed is CH_EMALFORMED with a reason, and leaves *out zeroed. */
static void test_malformed(void)
{
    static const char *const bad[] = {
        "",
        "{",
        "not json",
        "[1,2]",
        "\"reply\"",
        "{}",
        "{\"type\":7}",
        "{\"type\":\"reply\",\"type\":\"event\"}",                    /* duplicate key */
        "{\"type\":\"reply\",\"id\":1}",                              /* no ok */
        "{\"type\":\"reply\",\"id\":1,\"ok\":\"yes\",\"result\":{}}", /* ok not a bool */
        "{\"type\":\"reply\",\"id\":1,\"ok\":true}",                  /* no result */
        "{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{\"conv\":\"4711\"}}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{\"conv\":0}}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{\"conv\":9007199254740992}"
        "}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{\"conv\":-1}}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{\"conv\":1.5}}",
        "{\"type\":\"reply\",\"id\":[],\"ok\":true,\"result\":{}}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":false}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":false,\"error\":{}}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":false,\"error\":{\"code\":\"\"}}",
        "{\"type\":\"event\",\"conv\":1,\"seq\":2,\"event\":\"\"}", /* empty kind */
        "{\"type\":\"reply\",\"id\":1,\"ok\":false,\"error\":{\"code\":"
        "\"a-code-that-is-much-longer-than-thirty-two-bytes\"}}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":false,\"error\":{\"code\":\"x\","
        "\"retry_after_ms\":-5}}",
        "{\"type\":\"event\",\"seq\":1,\"event\":\"message\"}",  /* no conv */
        "{\"type\":\"event\",\"conv\":1,\"event\":\"message\"}", /* no seq */
        "{\"type\":\"event\",\"conv\":1,\"seq\":1}",             /* no event */
        "{\"type\":\"event\",\"conv\":1,\"seq\":1,\"event\":\"message\",\"client_msg_"
        "id\":"
        "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
        "{\"type\":\"event\",\"conv\":1,\"seq\":1,\"event\":\"a\\u0000b\"}", /* NUL */
        "{\"type\":\"goodbye\",\"code\":5}",
        "{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{}}trailing",
        "{\"type\":\"event\",\"conv\":1,\"seq\":1,\"event\":\"\xff\"}", /* not UTF-8 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct bench_message m;
        char err[160] = "unset";
        int rv = bench_message_decode(bad[i], strlen(bad[i]), &m, err, sizeof err);
        if (rv != CH_EMALFORMED)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK_EQ_INT(rv, CH_EMALFORMED);
        CHECK(err[0] != 0 && strcmp(err, "unset") != 0);
        CHECK_EQ_INT(m.type, 0);
        CHECK_EQ_U64(m.conv, 0);
    }
}

/* Bounds: the length argument is honoured (no NUL needed), deep nesting is refused by
 * jansson rather than crashing, a NULL err buffer is allowed. */
static void test_bounds(void)
{
    struct bench_message m;
    const char *text = "{\"type\":\"goodbye\"}XXXX";
    CHECK_EQ_INT(bench_message_decode(text, 18, &m, NULL, 0), 0);
    CHECK_EQ_INT(m.type, BENCH_MSG_GOODBYE);
    CHECK_EQ_INT(bench_message_decode(text, 17, &m, NULL, 0), CH_EMALFORMED);

    static char deep[20000];
    size_t n = 0;
    memcpy(deep, "{\"type\":\"typing\",\"x\":", 21);
    n = 21;
    for (int i = 0; i < 5000; i++)
        deep[n++] = '[';
    for (int i = 0; i < 5000; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    char err[160];
    CHECK_EQ_INT(bench_message_decode(deep, n, &m, err, sizeof err), CH_EMALFORMED);
}

TEST_MAIN(TEST_CASE(test_replies), TEST_CASE(test_events_and_pushes),
          TEST_CASE(test_malformed), TEST_CASE(test_bounds))
