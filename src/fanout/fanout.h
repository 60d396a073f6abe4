/* Fanout (pure): which local connections follow which conversations, their cursors, shared encodings. */
#ifndef CHORUS_FANOUT_H
#define CHORUS_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"
#include "../raft-log/clog_event.h"

/*
 * A gateway follows the committed streams of the shards and must hand every
 * event to every local connection of every member, in seq order per
 * conversation, with no gap and no duplicate, while streams break and resume.
 * This module holds that logic without any I/O:
 *
 *  - A connection follows a conversation with a cursor `pushed`: the last seq
 *    handed to it.  An event is pushed only when it is exactly pushed + 1.  An
 *    event further ahead reveals a gap (a lost stream entry, a resubscription to
 *    a replica that was behind, a sync from an old cursor): the connection asks
 *    for a catch-up read of the conversation after `pushed` (the shell's `fetch`
 *    callback) and the read's events go through the same rule.  Older events
 *    are duplicates and are dropped.  So each connection's view of a
 *    conversation is the log's prefix, extended one seq at a time.
 *  - Membership events keep the follow sets exact: a CREATED or MEMBER_ADDED
 *    naming a local user makes each of that user's connections follow the
 *    conversation from just before that event; MEMBER_REMOVED / MEMBER_LEFT are
 *    delivered and then end the follow.
 *  - An event is encoded once (JSON, wire.h) into a reference-counted fan_msg
 *    that every recipient's queue shares.  Receipts (seq 0) are outside the
 *    sequence and are pushed to every follower as they come.
 *
 * The shell calls fan_event for each event of each committed stream entry and
 * fan_fetched with each catch-up page; the module calls back `push` (queue a
 * message on a connection: 0, or CH_ELIMIT when the connection's queue is full,
 * after which the shell drops the connection and this module forgets it) and
 * `fetch` (start one catch-up read; at most one per connection and
 * conversation is outstanding).
 */

/* An encoded message shared by recipients: `headroom` spare bytes (for the
 * WebSocket frame header) precede the payload. */
struct fan_msg {
    uint32_t refs;
    uint32_t len;      /* payload bytes */
    uint32_t headroom;
    uint8_t data[];    /* headroom bytes, then the payload */
};

/* A message holding a copy of len bytes with one reference; NULL on OOM. */
struct fan_msg *fan_msg_new(uint32_t headroom, const void *payload, size_t len);
static inline uint8_t *fan_msg_payload(struct fan_msg *m)
{
    return m->data + m->headroom;
}
static inline void fan_msg_ref(struct fan_msg *m)
{
    m->refs++;
}
void fan_msg_unref(struct fan_msg *m);

struct fan_callbacks {
    void *data;
    /* Queue m (the callee takes its own reference if it keeps it).  0 or CH_ELIMIT. */
    int (*push)(void *data, uint64_t conn, struct fan_msg *m);
    /* Start a catch-up read of conv after seq `after` for conn; its result comes back
     * through fan_fetched (or fan_fetch_failed). */
    void (*fetch)(void *data, uint64_t conn, uint64_t conv, uint64_t after);
    /* The connection overflowed its queue: the shell closes it (the module has
     * already forgotten it). */
    void (*overflow)(void *data, uint64_t conn);
    /* Optional: may catch-up events be queued on conn now?  Catch-up (sync, gap
     * reads) is paced by the client's reading: a read's events are pushed only
     * while there is room, the rest waits for fan_resume.  Only live events can
     * overflow a queue.  NULL: always. */
    int (*room)(void *data, uint64_t conn);
};

struct fan;

/* headroom: bytes reserved in front of every encoded message. */
int fan_create(const struct fan_callbacks *cb, uint32_t headroom, struct fan **out);
void fan_destroy(struct fan *f);

/* A new authenticated connection of `user`.  0, CH_EEXISTS or CH_ENOMEM. */
int fan_conn_add(struct fan *f, uint64_t conn, const void *user, size_t user_len);
/* Forgets a connection and everything it follows (no-op if unknown). */
void fan_conn_remove(struct fan *f, uint64_t conn);

/*
 * Makes conn follow conv with cursor `pushed` (events after it will be pushed).
 * If conn already follows conv, the cursor is left alone unless FAN_RESET is
 * given, in which case it is set to `pushed` (sync: the client says what it
 * has).  A catch-up read starts when the conversation is known to be ahead
 * (last_seq > pushed) or FAN_READ is given (sync: make sure).  0, CH_ENOTFOUND
 * (unknown conn) or CH_ENOMEM.
 */
#define FAN_RESET 1
#define FAN_READ 2
int fan_follow(struct fan *f, uint64_t conn, uint64_t conv, uint64_t pushed,
               uint64_t last_seq, int flags);

/* Does conn follow conv (i.e. is its user a member, as far as this gateway saw)? */
int fan_follows(const struct fan *f, uint64_t conn, uint64_t conv);
/* conn's cursor for conv, 0 if it does not follow it. */
uint64_t fan_cursor(const struct fan *f, uint64_t conn, uint64_t conv);
/* Is a catch-up read for (conn, conv) outstanding or still needed? */
int fan_behind(const struct fan *f, uint64_t conn, uint64_t conv);

/*
 * One committed event from a shard stream: `index` is the Raft index of the entry
 * that carried it on `shard` (the session-start rule below compares it with the
 * sessions' reads).  fan_event is fan_event_at with an index newer than any read.
 */
void fan_event_at(struct fan *f, const struct clog_event *ev, uint32_t shard, uint64_t index);
void fan_event(struct fan *f, const struct clog_event *ev);

/*
 * Session start.  A new session learns its user's conversations by reading each
 * shard (linearizably, at some Raft index A); meanwhile the stream goes on, and
 * after a restart it may replay old entries as the replica re-applies its log.
 * fan_conn_loading marks the connection as starting: a join (CREATED or
 * MEMBER_ADDED naming the user) seen on a shard whose read is still out makes a
 * tentative follow that pushes nothing.  fan_conn_shard_read installs one shard's
 * answer: each listed conversation is followed from its last_seq (a tentative
 * follow is confirmed there); an unlisted tentative follow stands only if its join
 * came after A; and from then on joins at or below A are ignored for this
 * connection (replays).  stream_position is the last index the stream has handed
 * to fan_event_at for that shard: when it is past A, the listed conversations get
 * a catch-up read (their events in between went by unfollowed).
 */
struct fan_start {
    uint64_t conv;
    uint64_t last_seq;
};
int fan_conn_loading(struct fan *f, uint64_t conn, uint32_t n_shards);
int fan_conn_shard_read(struct fan *f, uint64_t conn, uint32_t shard, uint64_t applied_index,
                        const struct fan_start *convs, size_t n, uint64_t stream_position);

/*
 * The result of a catch-up read for (conn, conv): `records` holds n event records
 * in ascending seq order (clog_event.h), has_more as in a history page,
 * last_seq the conversation's last seq at the time of the read.  Events go
 * through the push rule; another read starts if the connection is still behind.
 * Returns 1 when the connection is caught up (nothing more to read), 0 otherwise.
 */
int fan_fetched(struct fan *f, uint64_t conn, uint64_t conv, const uint8_t *records,
                size_t len, uint32_t n, int has_more, uint64_t last_seq);

/* conn's queue has room again: continue its paused catch-up reads (cheap when
 * there are none). */
void fan_resume(struct fan *f, uint64_t conn);

/* A catch-up read failed (the shell retries later via fan_refetch). */
void fan_fetch_failed(struct fan *f, uint64_t conn, uint64_t conv);

/*
 * Starts a catch-up read for every follow whose conversation matches `match`
 * (e.g. "is on shard 7" after a gap in that shard's stream) and for every follow
 * whose earlier read failed.
 */
void fan_refetch(struct fan *f, int (*match)(void *arg, uint64_t conv), void *arg);

/* Calls fn for every connection following conv (typing, presence fanout); fn may
 * remove connections (the removal takes effect after the walk). */
void fan_conv_conns(struct fan *f, uint64_t conv,
                    void (*fn)(void *arg, uint64_t conn, struct ch_slice user), void *arg);

/* Calls fn for each connection of a user. */
void fan_user_conns(struct fan *f, const void *user, size_t len,
                    void (*fn)(void *arg, uint64_t conn), void *arg);

struct fan_stats {
    uint64_t conns, users, convs, follows;
    uint64_t events, pushes, encodes, gaps, fetches, duplicates, overflows;
};
void fan_stats(const struct fan *f, struct fan_stats *st);

#endif
