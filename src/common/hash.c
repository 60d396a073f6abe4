#include "hash.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---- CRC-32C, byte-wise table generated on first use ---- */

static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = 1;
}

uint32_t ch_crc32c(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!crc_ready)
        crc_init();
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *b++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint64_t ch_hash64(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n--) {
        h ^= *b++;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- hash map ---- */

static uint64_t key_hash(const void *key, size_t klen)
{
    uint64_t h = ch_mix64(ch_hash64(CH_HASH64_INIT, key, klen));
    return h ? h : 1;
}

void ch_map_init(struct ch_map *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->count = 0;
}

void ch_map_free(struct ch_map *m)
{
    free(m->slots);
    ch_map_init(m);
}

static struct ch_map_slot *find(const struct ch_map *m, uint64_t h, const void *key,
                                size_t klen)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct ch_map_slot *s = &m->slots[i];
        if (s->hash == 0)
            return NULL;
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

void *ch_map_get(const struct ch_map *m, const void *key, size_t klen)
{
    struct ch_map_slot *s = find(m, key_hash(key, klen), key, klen);
    return s ? s->val : NULL;
}

static void place(struct ch_map_slot *slots, size_t cap, const struct ch_map_slot *e)
{
    size_t mask = cap - 1;
    size_t i = e->hash & mask;
    while (slots[i].hash != 0)
        i = (i + 1) & mask;
    slots[i] = *e;
}

static int grow(struct ch_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct ch_map_slot *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return CH_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].hash != 0)
            place(slots, cap, &m->slots[i]);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int ch_map_put(struct ch_map *m, const void *key, size_t klen, void *val)
{
    uint64_t h = key_hash(key, klen);
    struct ch_map_slot *s = find(m, h, key, klen);
    if (s) {
        s->key = key;
        s->val = val;
        return 0;
    }
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
        return CH_ENOMEM;
    struct ch_map_slot e = {h, key, (uint32_t)klen, val};
    place(m->slots, m->cap, &e);
    m->count++;
    return 0;
}

void *ch_map_del(struct ch_map *m, const void *key, size_t klen)
{
    struct ch_map_slot *s = find(m, key_hash(key, klen), key, klen);
    if (s == NULL)
        return NULL;
    void *val = s->val;
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(s - m->slots);
    /* Backward-shift: move later entries of the probe run into the hole. */
    for (size_t j = (hole + 1) & mask; m->slots[j].hash != 0; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        /* Entry j may move to hole iff hole lies cyclically in [home, j). */
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    memset(&m->slots[hole], 0, sizeof m->slots[hole]);
    m->count--;
    return val;
}

int ch_map_next(const struct ch_map *m, size_t *iter, const struct ch_map_slot **slot)
{
    while (*iter < m->cap) {
        const struct ch_map_slot *s = &m->slots[(*iter)++];
        if (s->hash != 0) {
            *slot = s;
            return 1;
        }
    }
    return 0;
}
