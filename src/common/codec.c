#include "codec.h"

#include <stdlib.h>

#include "error.h"

void ch_wbuf_init(struct ch_wbuf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = 0;
}

void ch_wbuf_free(struct ch_wbuf *b)
{
    free(b->data);
    ch_wbuf_init(b);
}

void ch_wbuf_reset(struct ch_wbuf *b)
{
    b->len = 0;
    b->oom = 0;
}

int ch_wbuf_reserve(struct ch_wbuf *b, size_t n)
{
    if (b->oom)
        return CH_ENOMEM;
    if (n <= b->cap - b->len)
        return 0;
    size_t need = b->len + n;
    if (need < b->len) {
        b->oom = 1;
        return CH_ENOMEM;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap * 2 > cap ? cap * 2 : need;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return CH_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int ch_wbuf_error(const struct ch_wbuf *b)
{
    return b->oom ? CH_ENOMEM : 0;
}

uint8_t *ch_wbuf_take(struct ch_wbuf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len)
        *len = b->len;
    ch_wbuf_init(b);
    return p;
}

void ch_put_raw(struct ch_wbuf *b, const void *p, size_t n)
{
    if (n == 0 || ch_wbuf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void ch_put_u8(struct ch_wbuf *b, uint8_t v)
{
    ch_put_raw(b, &v, 1);
}

void ch_put_u16(struct ch_wbuf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    ch_put_raw(b, x, 2);
}

void ch_put_u32(struct ch_wbuf *b, uint32_t v)
{
    uint8_t x[4];
    ch_store_u32(x, v);
    ch_put_raw(b, x, 4);
}

void ch_put_u64(struct ch_wbuf *b, uint64_t v)
{
    ch_put_u32(b, (uint32_t)v);
    ch_put_u32(b, (uint32_t)(v >> 32));
}

void ch_put_str16(struct ch_wbuf *b, struct ch_slice s)
{
    size_t n = s.len > 0xffff ? 0xffff : s.len;
    ch_put_u16(b, (uint16_t)n);
    ch_put_raw(b, s.ptr, n);
}

void ch_put_bytes32(struct ch_wbuf *b, struct ch_slice s)
{
    ch_put_u32(b, (uint32_t)s.len);
    ch_put_raw(b, s.ptr, s.len);
}

void ch_patch_u32(struct ch_wbuf *b, size_t off, uint32_t v)
{
    if (!b->oom && off + 4 <= b->len)
        ch_store_u32(b->data + off, v);
}

static const uint8_t *take(struct ch_rbuf *r, size_t n)
{
    if (r->err || r->left < n) {
        r->err = CH_EMALFORMED;
        r->left = 0;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

uint8_t ch_get_u8(struct ch_rbuf *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

uint16_t ch_get_u16(struct ch_rbuf *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

uint32_t ch_get_u32(struct ch_rbuf *r)
{
    const uint8_t *p = take(r, 4);
    return p ? ch_load_u32(p) : 0;
}

uint64_t ch_get_u64(struct ch_rbuf *r)
{
    const uint8_t *p = take(r, 8);
    return p ? (uint64_t)ch_load_u32(p) | (uint64_t)ch_load_u32(p + 4) << 32 : 0;
}

struct ch_slice ch_get_raw(struct ch_rbuf *r, size_t n)
{
    struct ch_slice s = {NULL, 0};
    const uint8_t *p = take(r, n);
    if (p) {
        s.ptr = p;
        s.len = n;
    }
    return s;
}

struct ch_slice ch_get_str16(struct ch_rbuf *r)
{
    uint16_t n = ch_get_u16(r);
    return ch_get_raw(r, n);
}

struct ch_slice ch_get_bytes32(struct ch_rbuf *r, size_t max)
{
    uint32_t n = ch_get_u32(r);
    if (n > max) {
        struct ch_slice s = {NULL, 0};
        r->err = CH_EMALFORMED;
        r->left = 0;
        return s;
    }
    return ch_get_raw(r, n);
}
