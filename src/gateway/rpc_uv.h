/* The gateway's asynchronous store client: routed, retried store RPCs over libuv TCP. */
#ifndef CHORUS_RPC_UV_H
#define CHORUS_RPC_UV_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../cluster/config.h"
#include "../common/codec.h"
#include "../proto/proto.h"

/*
 * One TCP connection per cluster node (opened on first use, reopened with
 * backoff after a failure), many requests in flight on each.  A call names the
 * shard it is for; the client sends it to the replica it believes leads that
 * shard and follows the store's answers: `not_leader` with a hint goes straight
 * to the hinted node, no hint / no replica here / unavailable / a lost
 * connection / no answer within attempt_timeout_ms go to the next replica after
 * a short backoff.  Only a definitive answer, or the call's deadline, reaches
 * the caller.  Writes are safe to resend because every write the gateway sends
 * is idempotent in the state machine (client_msg_id, create-by-creator, cursor
 * moves only forward, user records compared by value).
 *
 * Subscriptions follow a shard's committed stream (proto SUBSCRIBE) from one
 * replica: the shard's leader when known (followers apply commits a heartbeat
 * late), else this node's own; they move to a new leader, and resubscribe
 * elsewhere from the next wanted Raft index when the stream breaks.
 */

struct rpc;

struct rpc_options {
    const struct cluster_config *config;
    uint32_t self;               /* this node's id (preferred for subscriptions) */
    uint32_t deadline_ms;        /* per call, then CH_EUNAVAILABLE / CH_ETIMEOUT */
    uint32_t attempt_timeout_ms; /* per attempt on one node */
    size_t max_frame;            /* largest reply accepted */
};

int rpc_open(uv_loop_t *loop, const struct rpc_options *opt, struct rpc **out);

/* Fails every pending call with CH_ESHUTDOWN, or CH_ETIMEOUT when some store
 * received it (outcome unknown) (callbacks run before this returns or from the
 * loop), closes connections; cb runs when every handle is closed and
 * the client is freed. */
void rpc_close(struct rpc *r, void (*cb)(void *data), void *data);

/*
 * The outcome of a call: err 0 with the reply frame (its body valid only during
 * the callback; it may be a PROTO_ERROR frame carrying a definitive error such as
 * CH_ENOTFOUND), or err != 0 with reply NULL: CH_EUNAVAILABLE (no replica
 * answered before the deadline and the request was never delivered), CH_ETIMEOUT
 * (it was delivered at least once but no definitive answer came: the outcome is
 * unknown), CH_ESHUTDOWN, CH_ENOMEM.  Runs on the loop thread, never inline
 * from rpc_call.
 */
typedef void (*rpc_cb)(void *data, int err, const struct proto_frame *reply);

/*
 * Sends one request frame (a complete proto frame, e.g. from proto_encode_*; its
 * request id is replaced) for `shard` (config->n_shards: for the meta group,
 * sent to its voters).  The frame is copied.  Returns 0 (cb will
 * run exactly once) or CH_ENOMEM / CH_ESHUTDOWN (cb never runs).
 */
int rpc_call(struct rpc *r, uint32_t shard, const uint8_t *frame, size_t len, rpc_cb cb,
             void *data);

/* Starts knowing the nodes appended to the config since (a placement change added
 * them); existing nodes keep their connections. */
void rpc_sync_nodes(struct rpc *r);

/* Sends an ephemeral PUBLISH frame to every other node that is connected or
 * connectable now; no reply, no retry (ephemeral by definition). */
void rpc_publish(struct rpc *r, const uint8_t *frame, size_t len);

/* Called after (re)connecting to a node, so gateways can resend presence. */
void rpc_on_connect(struct rpc *r, void (*fn)(void *data, uint32_t node), void *data);

struct rpc_sub;

/*
 * Follows shard's committed stream.  on_entry runs for each entry with index >=
 * the wanted index, in order (entries below it, replayed by a new replica, are
 * skipped here).  on_gap runs when entries were lost: the stream resumed at
 * `resumed_at` > the wanted index because the store no longer retained them, so
 * the subscriber must re-read what it cares about.  Returns 0 or CH_ENOMEM.
 */
int rpc_subscribe(struct rpc *r, uint32_t shard, uint64_t from_index,
                  void (*on_entry)(void *data, uint32_t shard, uint64_t index,
                                   const uint8_t *events, size_t len, uint32_t n_events),
                  void (*on_gap)(void *data, uint32_t shard, uint64_t resumed_at),
                  void *data, struct rpc_sub **out);

/* The Raft index of the last entry the subscription has handed to on_entry (or the
 * index before the first one it will hand out); 0 before the stream started. */
uint64_t rpc_sub_position(const struct rpc_sub *s);
/* Has the stream a definite position yet (a replica answered SUBSCRIBED once)?
 * Until then entries may go by unseen; afterwards resubscriptions resume. */
int rpc_sub_started(const struct rpc_sub *s);

struct rpc_stats {
    uint64_t calls, retries, redirects, timeouts, unavailable;
    uint64_t connects, disconnects;
};
void rpc_stats(const struct rpc *r, struct rpc_stats *st);

#endif
