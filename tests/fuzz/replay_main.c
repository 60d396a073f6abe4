/*
 * Replay driver for fuzz targets built without libFuzzer: feeds every file of the
 * corpus directories given on the command line, then a fixed number of
 * deterministic inputs (random bytes and bit-flipped/truncated corpus files), to
 * LLVMFuzzerTestOneInput.  Under ASan+UBSan this turns each fuzz target into a
 * regression test that CI runs on every build.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FILES 4096
#define RANDOM_INPUTS 20000
#define MUTATIONS_PER_FILE 200

static uint8_t *files[MAX_FILES];
static size_t sizes[MAX_FILES];
static size_t n_files;

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void load_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n_files < MAX_FILES) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        uint8_t *buf = malloc((size_t)st.st_size + 1);
        size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
        fclose(f);
        if (buf == NULL)
            continue;
        files[n_files] = buf;
        sizes[n_files] = n;
        n_files++;
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        load_dir(argv[i]);
    size_t runs = 0;
    for (size_t i = 0; i < n_files; i++, runs++)
        LLVMFuzzerTestOneInput(files[i], sizes[i]);
    uint8_t *buf = malloc(1 << 16);
    if (buf == NULL)
        return 1;
    for (size_t i = 0; i < n_files; i++) {
        for (int m = 0; m < MUTATIONS_PER_FILE; m++, runs++) {
            size_t n = sizes[i] < (1 << 16) ? sizes[i] : (1 << 16);
            memcpy(buf, files[i], n);
            if (n > 0) {
                int flips = 1 + (int)(rng() % 4);
                for (int k = 0; k < flips; k++)
                    buf[rng() % n] ^= (uint8_t)(1u << (rng() % 8));
                if (rng() % 4 == 0)
                    n = rng() % (n + 1);
            }
            LLVMFuzzerTestOneInput(buf, n);
        }
    }
    for (int i = 0; i < RANDOM_INPUTS; i++, runs++) {
        size_t n = rng() % 512;
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rng();
        LLVMFuzzerTestOneInput(buf, n);
    }
    free(buf);
    for (size_t i = 0; i < n_files; i++)
        free(files[i]);
    printf("replayed %zu corpus files, %zu inputs in all\n", n_files, runs);
    printf("1 passed, 0 failed\n");
    return 0;
}
