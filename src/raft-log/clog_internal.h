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

/* A variable-length user field; ptr is NULL when len is 0. */
struct clog_blob {
    uint8_t *ptr;
    uint32_t len;
};

/* One user of the shard (USER_CREATE / USER_UPDATE). */
struct clog_user_rec {
    uint64_t created_ts;
    uint64_t last_seen;
    uint8_t disabled;
    uint16_t user_len;
    struct clog_blob password_record;
    struct clog_blob display_name; /* empty: the user id */
    struct clog_blob status;
    struct clog_blob settings;
    char user[]; /* the map key points here */
};

/*
 * Derived per-user conversation index: the ids of the conversations the user is
 * currently a member of, kept sorted so that reads need no allocation.  Inserting
 * and removing cost a binary search and a memmove of 8-byte ids; restore appends in
 * ascending id order.  An entry exists only while ids is non-empty (or reserved).
 */
struct clog_user_convs {
    uint64_t *ids; /* ascending */
    uint32_t n, cap;
    uint16_t user_len;
    char user[]; /* the map key points here */
};

struct clog {
    struct clog_limits limits;
    struct ch_map convs; /* 8-byte id -> clog_conv */
    struct ch_map users; /* user id -> clog_user_rec */
    struct ch_map user_convs; /* user id -> clog_user_convs (derived) */
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

/* Users table: a new record with copies of the fields (NULL on OOM), and freeing.
 * clog__users_free_all frees every record and the map. */
struct clog_user_rec *clog__user_new(struct ch_slice user,
                                     struct ch_slice password_record,
                                     struct ch_slice display_name, struct ch_slice status,
                                     struct ch_slice settings);
void clog__user_free(struct clog_user_rec *u);
void clog__users_free_all(struct ch_map *users);
/* Users sorted by ascending byte order of id; caller frees the array (not the records).
 * NULL with n == 0 when empty or on OOM (*oom set). */
struct clog_user_rec **clog__sorted_users(const struct ch_map *users, size_t *n,
                                          int *oom);

/* Per-user conversation index.  reserve makes room for one more id of `user`
 * (creating its entry); 0 or CH_ENOMEM.  insert needs a reservation and cannot
 * fail.  release drops an entry left empty by a reservation that was not used.
 * remove never fails. */
int clog__uconv_reserve(struct ch_map *index, struct ch_slice user);
void clog__uconv_insert(struct ch_map *index, struct ch_slice user, uint64_t conv);
void clog__uconv_release(struct ch_map *index, struct ch_slice user);
void clog__uconv_remove(struct ch_map *index, struct ch_slice user, uint64_t conv);
void clog__uconv_free_all(struct ch_map *index);
/* Adds every member of cv to the index; 0 or CH_ENOMEM (then the index may hold
 * some of them: used on a scratch index during restore). */
int clog__uconv_add_conv(struct ch_map *index, const struct clog_conv *cv);

#endif
