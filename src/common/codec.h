/* Bounded little-endian binary encoding: a growable write buffer and a checked reader. */
#ifndef CHORUS_CODEC_H
#define CHORUS_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A borrowed byte range; never owns its memory. */
struct ch_slice {
    const uint8_t *ptr;
    size_t len;
};

static inline struct ch_slice ch_slice_str(const char *s)
{
    struct ch_slice sl = {(const uint8_t *)s, s ? strlen(s) : 0};
    return sl;
}

static inline int ch_slice_eq(struct ch_slice a, struct ch_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/*
 * Growable output buffer.  Writers never fail individually: the first allocation
 * failure sets `oom` and later writes are ignored, so a caller checks once at the
 * end (ch_wbuf_error).  Memory is owned by the buffer until ch_wbuf_take or free.
 */
struct ch_wbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    int oom;
};

void ch_wbuf_init(struct ch_wbuf *b);
void ch_wbuf_free(struct ch_wbuf *b);
void ch_wbuf_reset(struct ch_wbuf *b); /* len = 0, keeps capacity and clears oom */
/* Ensures room for n more bytes; returns 0 or CH_ENOMEM. */
int ch_wbuf_reserve(struct ch_wbuf *b, size_t n);
/* Returns CH_ENOMEM if any write failed since init/reset, else 0. */
int ch_wbuf_error(const struct ch_wbuf *b);
/* Hands the bytes to the caller (free with free()); the buffer is left empty. */
uint8_t *ch_wbuf_take(struct ch_wbuf *b, size_t *len);

void ch_put_u8(struct ch_wbuf *b, uint8_t v);
void ch_put_u16(struct ch_wbuf *b, uint16_t v);
void ch_put_u32(struct ch_wbuf *b, uint32_t v);
void ch_put_u64(struct ch_wbuf *b, uint64_t v);
void ch_put_raw(struct ch_wbuf *b, const void *p, size_t n);
/* u16 length + bytes (callers bound n to 65535 first). */
void ch_put_str16(struct ch_wbuf *b, struct ch_slice s);
/* u32 length + bytes. */
void ch_put_bytes32(struct ch_wbuf *b, struct ch_slice s);
/* Overwrites 4 bytes at offset (for back-patched lengths). */
void ch_patch_u32(struct ch_wbuf *b, size_t off, uint32_t v);

/*
 * Checked reader over a borrowed buffer.  Every getter returns 0 or
 * CH_EMALFORMED when the input is too short; after the first failure `err`
 * sticks and getters return zeros, so decoders may check once at the end.
 */
struct ch_rbuf {
    const uint8_t *p;
    size_t left;
    int err;
};

static inline void ch_rbuf_init(struct ch_rbuf *r, const void *p, size_t n)
{
    r->p = (const uint8_t *)p;
    r->left = n;
    r->err = 0;
}

uint8_t ch_get_u8(struct ch_rbuf *r);
uint16_t ch_get_u16(struct ch_rbuf *r);
uint32_t ch_get_u32(struct ch_rbuf *r);
uint64_t ch_get_u64(struct ch_rbuf *r);
/* Borrowed view of the next n bytes. */
struct ch_slice ch_get_raw(struct ch_rbuf *r, size_t n);
struct ch_slice ch_get_str16(struct ch_rbuf *r);
/* u32 length + bytes, rejected (CH_EMALFORMED) when longer than max. */
struct ch_slice ch_get_bytes32(struct ch_rbuf *r, size_t max);

/* Raw little-endian loads/stores for fixed headers. */
static inline uint32_t ch_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline void ch_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#endif
