/* Unit tests of src/common: bounded codec, CRC-32C, hash map, errors. */
#include "test.h"

#include "common/codec.h"
#include "common/error.h"
#include "common/hash.h"

static void codec_round_trip(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    ch_put_u8(&b, 0xab);
    ch_put_u16(&b, 0xbeef);
    ch_put_u32(&b, 0xdeadbeef);
    ch_put_u64(&b, 0x0123456789abcdefULL);
    ch_put_str16(&b, ch_slice_str("hello"));
    ch_put_bytes32(&b, ch_slice_str("world!"));
    CHECK_EQ_INT(ch_wbuf_error(&b), 0);
    CHECK_EQ_INT(b.len, 1 + 2 + 4 + 8 + 2 + 5 + 4 + 6);
    CHECK_EQ_INT(b.data[1], 0xef); /* little-endian */
    struct ch_rbuf r;
    ch_rbuf_init(&r, b.data, b.len);
    CHECK_EQ_INT(ch_get_u8(&r), 0xab);
    CHECK_EQ_INT(ch_get_u16(&r), 0xbeef);
    CHECK_EQ_U64(ch_get_u32(&r), 0xdeadbeefu);
    CHECK_EQ_U64(ch_get_u64(&r), 0x0123456789abcdefULL);
    CHECK(ch_slice_eq(ch_get_str16(&r), ch_slice_str("hello")));
    CHECK(ch_slice_eq(ch_get_bytes32(&r, 100), ch_slice_str("world!")));
    CHECK_EQ_INT(r.err, 0);
    CHECK_EQ_INT(r.left, 0);
    ch_wbuf_free(&b);
}

static void codec_reader_is_bounded(void)
{
    uint8_t buf[6] = {10, 0, 'a', 'b', 'c', 'd'}; /* str16 claims 10 bytes, has 4 */
    struct ch_rbuf r;
    ch_rbuf_init(&r, buf, sizeof buf);
    struct ch_slice s = ch_get_str16(&r);
    CHECK_EQ_INT(r.err, CH_EMALFORMED);
    CHECK(s.ptr == NULL && s.len == 0);
    CHECK_EQ_INT(ch_get_u32(&r), 0); /* sticky: later reads give zeros */
    CHECK_EQ_INT(r.err, CH_EMALFORMED);

    uint8_t big[8] = {0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4};
    ch_rbuf_init(&r, big, sizeof big);
    ch_get_bytes32(&r, 1 << 20); /* length over the caller's maximum */
    CHECK_EQ_INT(r.err, CH_EMALFORMED);
    ch_rbuf_init(&r, big, 3);
    ch_get_u32(&r);
    CHECK_EQ_INT(r.err, CH_EMALFORMED);
}

static void wbuf_take_and_patch(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    ch_put_u32(&b, 0);
    ch_put_raw(&b, "xyz", 3);
    ch_patch_u32(&b, 0, 42);
    ch_patch_u32(&b, 100, 1); /* out of range: ignored */
    size_t len;
    uint8_t *p = ch_wbuf_take(&b, &len);
    CHECK_EQ_INT(len, 7);
    CHECK_EQ_U64(ch_load_u32(p), 42);
    CHECK(b.data == NULL && b.len == 0);
    free(p);
}

static void crc32c_known_vectors(void)
{
    CHECK_EQ_U64(ch_crc32c(0, "123456789", 9), 0xe3069283u);
    CHECK_EQ_U64(ch_crc32c(0, "", 0), 0);
    /* incremental equals one-shot */
    uint32_t a = ch_crc32c(0, "12345", 5);
    CHECK_EQ_U64(ch_crc32c(a, "6789", 4), 0xe3069283u);
}

static void map_basic(void)
{
    struct ch_map m;
    ch_map_init(&m);
    CHECK(ch_map_get(&m, "a", 1) == NULL);
    int v1 = 1, v2 = 2;
    CHECK_EQ_INT(ch_map_put(&m, "a", 1, &v1), 0);
    CHECK_EQ_INT(ch_map_put(&m, "b", 1, &v2), 0);
    CHECK(ch_map_get(&m, "a", 1) == &v1);
    CHECK_EQ_INT(ch_map_put(&m, "a", 1, &v2), 0); /* replace */
    CHECK(ch_map_get(&m, "a", 1) == &v2);
    CHECK_EQ_INT(m.count, 2);
    CHECK(ch_map_del(&m, "a", 1) == &v2);
    CHECK(ch_map_get(&m, "a", 1) == NULL);
    CHECK(ch_map_del(&m, "a", 1) == NULL);
    CHECK_EQ_INT(m.count, 1);
    ch_map_free(&m);
}

/* Many keys, random inserts and deletes, checked against a plain array. */
static void map_against_reference(void)
{
    enum { N = 20000 };
    static char keys[N][12];
    static int present[N];
    struct ch_map m;
    ch_map_init(&m);
    uint64_t x = 12345;
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof keys[i], "k%d", i);
    for (int step = 0; step < 200000; step++) {
        x = ch_mix64(x + (uint64_t)step);
        int k = (int)(x % N);
        size_t len = strlen(keys[k]);
        if (x & (1ull << 40)) {
            CHECK_EQ_INT(ch_map_put(&m, keys[k], len, keys[k]), 0);
            present[k] = 1;
        } else {
            void *old = ch_map_del(&m, keys[k], len);
            CHECK((old != NULL) == present[k]);
            present[k] = 0;
        }
    }
    size_t count = 0;
    for (int k = 0; k < N; k++) {
        void *v = ch_map_get(&m, keys[k], strlen(keys[k]));
        CHECK((v != NULL) == present[k]);
        CHECK(v == NULL || v == keys[k]);
        count += present[k];
    }
    CHECK_EQ_INT(m.count, count);
    size_t it = 0, seen = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&m, &it, &slot))
        seen++;
    CHECK_EQ_INT(seen, count);
    ch_map_free(&m);
}

static void errors_have_codes_and_messages(void)
{
    CHECK(strcmp(ch_errcode(CH_ENOTMEMBER), "forbidden") == 0);
    CHECK(strcmp(ch_errcode(CH_ENOTFOUND), "not_found") == 0);
    CHECK(strcmp(ch_errcode(CH_ETOOLARGE), "too_large") == 0);
    CHECK(strcmp(ch_errcode(CH_EUNAVAILABLE), "unavailable") == 0);
    CHECK(strcmp(ch_errname(CH_ECORRUPT), "CH_ECORRUPT") == 0);
    CHECK(strcmp(ch_strerror(-1), "unknown error") == 0);
    CHECK(strcmp(ch_errcode(10000), "internal") == 0);
    for (int e = 0; e < CH__ERR_COUNT; e++)
        CHECK(ch_strerror(e)[0] != 0 && ch_errcode(e)[0] != 0);
}

TEST_MAIN(TEST_CASE(codec_round_trip), TEST_CASE(codec_reader_is_bounded),
          TEST_CASE(wbuf_take_and_patch), TEST_CASE(crc32c_known_vectors),
          TEST_CASE(map_basic), TEST_CASE(map_against_reference),
          TEST_CASE(errors_have_codes_and_messages))
