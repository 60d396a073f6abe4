/* Checksums, hashes and an open-addressing hash map keyed by byte strings. */
#ifndef CHORUS_HASH_H
#define CHORUS_HASH_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (start with 0). */
uint32_t ch_crc32c(uint32_t crc, const void *p, size_t n);

/* 64-bit FNV-1a of n bytes, continuing from h (start with CH_HASH64_INIT). */
#define CH_HASH64_INIT 0xcbf29ce484222325ULL
uint64_t ch_hash64(uint64_t h, const void *p, size_t n);

/* A strong 64-bit integer mixer (splitmix64 finaliser): spreads ids over shards. */
static inline uint64_t ch_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/*
 * Hash map from byte-string keys to pointers.  The map does not copy keys: the
 * key bytes must stay valid and unchanged while the entry exists (store them
 * inside the value).  Linear probing with backward-shift deletion, so there are
 * no tombstones; the table grows at 3/4 load.  Not thread-safe.
 */
struct ch_map_slot {
    uint64_t hash; /* 0 marks an empty slot (real hashes are forced non-zero) */
    const void *key;
    uint32_t klen;
    void *val;
};

struct ch_map {
    struct ch_map_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
};

void ch_map_init(struct ch_map *m);
/* Frees the table (not keys or values). */
void ch_map_free(struct ch_map *m);
/* Returns the value or NULL. */
void *ch_map_get(const struct ch_map *m, const void *key, size_t klen);
/* Inserts or replaces; returns 0 or CH_ENOMEM (map unchanged on failure). */
int ch_map_put(struct ch_map *m, const void *key, size_t klen, void *val);
/* Removes the key if present; returns the old value or NULL. */
void *ch_map_del(struct ch_map *m, const void *key, size_t klen);

/* Iteration: for (i = 0; ch_map_next(m, &i, &slot);) ... ; no changes meanwhile. */
int ch_map_next(const struct ch_map *m, size_t *iter, const struct ch_map_slot **slot);

#endif
