/* Internal state of the conversation log, shared by clog.c and clog_snapshot.c. */
#ifndef CHORUS_CLOG_INTERNAL_H
#define CHORUS_CLOG_INTERNAL_H

#include "../common/hash.h"
#include "clog.h"

#define CLOG_MSG_IS_MESSAGE 1 /* event at this seq is a MESSAGE */
#define CLOG_MSG_DELETED 2    /* ... and a later DELETE removed it */

struct clog_member_rec {
    uint8_t role;
    uint16_t user_len;
    uint64_t delivered;
    uint64_t read;
    char user[]; /* the map key points here */
};

/* Idempotency index: open addressing on a 64-bit hash of (actor, client_msg_id);
 * a hit is confirmed against the event record, so collisions are harmless. */
struct clog_idem_slot {
    uint64_t hash; /* 0 = empty */
    uint64_t seq;
};

struct clog_conv {
    uint64_t id; /* the map key points here */
    uint8_t kind;
    uint64_t last_ts;

    uint8_t *arena; /* event records, seq order */
    size_t arena_len, arena_cap;
    uint64_t *offsets; /* offsets[seq - 1] */
    uint8_t *flags;    /* CLOG_MSG_* per seq */
    uint64_t n_events, cap_events;

    struct ch_map members;           /* user -> clog_member_rec */
    struct clog_member_rec **order;  /* join order; NULL = removed */
    uint32_t order_len, order_cap;
    uint32_t n_members;

    struct clog_idem_slot *idem;
    uint64_t idem_cap, idem_count;
};

struct clog {
    struct clog_limits limits;
    struct ch_map convs; /* 8-byte id -> clog_conv */
    struct ch_wbuf scratch;
    struct ch_wbuf tmp;
    uint64_t events;
    uint64_t event_bytes;
    uint64_t idem_keys;
    uint64_t applied_entries;
    uint64_t applied_commands;
};

struct clog_conv *clog__conv_new(uint64_t id, uint8_t kind);
void clog__conv_free(struct clog_conv *cv);
struct clog_conv *clog__conv_get(const struct clog *c, uint64_t id);
/* Appends an encoded record as the next seq; 0 or CH_ENOMEM. */
int clog__append_record(struct clog_conv *cv, const uint8_t *rec, size_t len, uint8_t flags);
int clog__member_add(struct clog_conv *cv, struct ch_slice user, uint8_t role,
                     struct clog_member_rec **out);
int clog__idem_put(struct clog_conv *cv, uint64_t hash, uint64_t seq);
uint64_t clog__idem_hash(struct ch_slice actor, struct ch_slice cmid);
/* Sorted conversation ids; caller frees.  NULL with n == 0 when empty or on OOM
 * (*oom set). */
uint64_t *clog__sorted_ids(const struct clog *c, size_t *n, int *oom);
void clog__free_all(struct ch_map *convs);

#endif
