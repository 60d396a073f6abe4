/* The conversation-log state machine of one shard: pure, deterministic, no I/O. */
#ifndef CHORUS_CLOG_H
#define CHORUS_CLOG_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"
#include "clog_cmd.h"
#include "clog_event.h"

/*
 * A shard's state machine owns many conversations: their members and roles,
 * the contiguous per-conversation event sequence, per-member delivered/read
 * cursors and the idempotency index.  It also owns the users (chat accounts)
 * that hash to the shard: password record, profile, settings, disabled flag and
 * last-seen time.  Replicas apply the same committed entries in the same order
 * and so hold the same state (clog_digest proves it).
 *
 * Idempotency: a POST/EDIT/DELETE/REACT carrying a client_msg_id is recorded
 * under (conversation, actor, client_msg_id) for the life of the conversation,
 * with no time window.  A retry returns the first event's seq with dup = 1 and
 * changes nothing.  The index costs one hash slot per keyed event (about 32
 * bytes plus the key, which is already stored in the event record) and is
 * rebuilt from the events on restore, so snapshots do not carry it.
 *
 * Limits must be equal on every replica (they come from the cluster config).
 */
struct clog_limits {
    uint32_t max_body;    /* message body bytes (default 65536) */
    uint32_t max_members; /* members per conversation (default 100000) */
    uint32_t max_events;  /* events per conversation (default 2^31) */
};

void clog_limits_default(struct clog_limits *l);

struct clog;

/* Creates an empty state machine.  Returns 0 or CH_ENOMEM. */
int clog_create(const struct clog_limits *limits, struct clog **out);
void clog_destroy(struct clog *c);

/* The outcome of one command. */
struct clog_result {
    uint16_t err;  /* 0 or a CH_E* code */
    uint8_t dup;   /* 1: idempotent repeat, nothing changed, seq is the first result */
    uint64_t conv; /* the command's conversation (0 for user ops) */
    uint64_t seq;  /* seq of the event the command produced (0 when none) */
    uint64_t ts;   /* the event's ts; user ops: the user's created_ts for USER_CREATE,
                      the entry ts for USER_UPDATE */
};

/*
 * What applying an entry produced: one result per command (in order) and the
 * events it created, as concatenated records (clog_event.h) in apply order.
 * The shell answers waiting clients from `results` and streams `events` to
 * subscribers.  Reused across applies: clog_apply resets it first.
 */
struct clog_output {
    struct clog_result *results;
    size_t n_results;
    size_t cap_results;
    struct ch_wbuf events;
    size_t n_events;
};

void clog_output_init(struct clog_output *o);
void clog_output_reset(struct clog_output *o);
void clog_output_free(struct clog_output *o);

/*
 * Applies one committed Raft entry.  Deterministic.  Per-command failures
 * (non-member, unknown conversation, ...) are results, not errors.  An entry
 * that cannot be decoded at all is skipped identically by every replica and
 * returns CH_EMALFORMED / CH_EVERSION / CH_ETOOLARGE with the state unchanged.
 * CH_ENOMEM means the state may be partially updated: the node must stop (its
 * replica is rebuilt from the Raft log and snapshot on restart).
 */
int clog_apply(struct clog *c, const void *entry, size_t len, struct clog_output *out);

/*
 * Applies one decoded command at time ts_ms, appending its result and events
 * to out (without resetting it).  clog_apply calls this per command; tests use
 * it directly.  Returns 0 or CH_ENOMEM (the command's own error is in *res).
 */
int clog_apply_cmd(struct clog *c, const struct clog_cmd *cmd, uint64_t ts_ms,
                   struct clog_output *out);

/* ---- reads (valid until the next apply or restore) ---- */

struct clog_conv_info {
    uint64_t conv;
    uint8_t kind;
    struct ch_slice name;
    struct ch_slice created_by;
    uint64_t created_ts;
    uint64_t last_seq;
    uint32_t n_members;
};

/* Returns 0 or CH_ENOTFOUND. */
int clog_conv_info(const struct clog *c, uint64_t conv, struct clog_conv_info *info);

struct clog_member {
    struct ch_slice user;
    uint8_t role;
    uint64_t delivered; /* highest seq delivered to any of the user's devices */
    uint64_t read;      /* highest seq read; read <= delivered is not required */
};

/* Looks up one member.  Returns 0, CH_ENOTFOUND (conversation) or CH_ENOTMEMBER. */
int clog_member_get(const struct clog *c, uint64_t conv, struct ch_slice user,
                    struct clog_member *m);

/*
 * Calls fn for each member in join order; stops early when fn returns non-zero
 * and returns that value.  Returns CH_ENOTFOUND for an unknown conversation.
 */
int clog_members_foreach(const struct clog *c, uint64_t conv,
                         int (*fn)(void *arg, const struct clog_member *m), void *arg);

/* Borrowed record of one event; 0, CH_ENOTFOUND or CH_ENOMESSAGE (seq out of range). */
int clog_event_get(const struct clog *c, uint64_t conv, uint64_t seq, struct ch_slice *record);

/*
 * A page of history, appended to out as event records in ascending seq order.
 *  - before == 0: the first `limit` events with seq > after;
 *    *has_more = there are events after the page.
 *  - before != 0 (after == 0): the last `limit` events with seq < before;
 *    *has_more = there are events before the page.
 *  - both: events in (after, before), first `limit` of them.
 * limit 0 returns no events (has_more tells whether any exist).
 * Returns 0, CH_ENOTFOUND or CH_ENOMEM; *n is the number of records appended.
 */
int clog_history(const struct clog *c, uint64_t conv, uint64_t after, uint64_t before,
                 uint32_t limit, struct ch_wbuf *out, uint32_t *n, int *has_more);

/* Calls fn for each conversation id in ascending order (for dumps and tests). */
int clog_convs_foreach(const struct clog *c, int (*fn)(void *arg, uint64_t conv), void *arg);

/* One user (chat account) of this shard, as stored by USER_CREATE / USER_UPDATE. */
struct clog_user {
    struct ch_slice user;
    struct ch_slice password_record; /* opaque, 1..CLOG_MAX_PASSWORD_RECORD bytes */
    struct ch_slice display_name;    /* as set, or the user id when none was set */
    struct ch_slice status;          /* may be empty */
    struct ch_slice settings;        /* opaque (the gateway stores JSON); may be empty */
    uint64_t created_ts;             /* ts of the USER_CREATE entry */
    uint64_t last_seen;              /* ms; 0 until first set */
    uint8_t disabled;                /* 0 or 1 */
};

/* Looks up a user of this shard; slices valid until the next apply/restore.
 * 0 or CH_ENOUSER. */
int clog_user_get(const struct clog *c, struct ch_slice user, struct clog_user *out);

/* Calls fn for every conversation of this shard that `user` is a member of, in
 * ascending conversation id order; stops when fn returns non-zero and returns that
 * value.  0 when the user is a member of none (users need not exist in the users
 * table to be members). */
int clog_user_convs_foreach(const struct clog *c, struct ch_slice user,
                            int (*fn)(void *arg, uint64_t conv), void *arg);

struct clog_stats {
    uint64_t conversations;
    uint64_t users;
    uint64_t events;
    uint64_t event_bytes;
    uint64_t idempotency_keys;
    uint64_t applied_entries;
    uint64_t applied_commands;
};

void clog_stats(const struct clog *c, struct clog_stats *st);

/* ---- snapshots ----
 *
 * Layout: u32 magic "CHS1" | u16 version | u16 flags (bit 0 lz4) | u64 raw_len |
 * u64 stored_len | u32 crc32c(stored payload) | u32 crc32c(header fields above) |
 * payload.  The raw payload lists conversations in ascending id order with their
 * metadata, members (join order, role, cursors) and event records, then (version
 * 2) the users in ascending byte order of user id with all their fields.  Version 1
 * snapshots (no users) still restore.  The per-user conversation index is derived
 * from the members and rebuilt on restore.
 */

/*
 * Serialises the whole state into one buffer allocated with `alloc`; on success
 * *out belongs to the caller.  Returns 0 or CH_ENOMEM.
 */
int clog_snapshot(const struct clog *c, void *(*alloc)(size_t), uint8_t **out, size_t *len);

/*
 * Replaces the state with a snapshot's.  Verifies magic, version, both
 * checksums and every record; on any error (CH_ECORRUPT, CH_EVERSION,
 * CH_EMALFORMED, CH_ENOMEM) the current state is left untouched.
 */
int clog_restore(struct clog *c, const void *buf, size_t len);

/*
 * 64-bit digest of the logical state: conversations, members with roles and
 * cursors, every event record, and every field of every user.  Independent of
 * hash-table layout and of whether the state came from applies or a restore.
 */
uint64_t clog_digest(const struct clog *c);

#endif
