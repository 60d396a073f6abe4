/* One shard replica on this node: a canonical/raft group (raft_uv) around a clog. */
#ifndef CHORUS_SHARD_UV_H
#define CHORUS_SHARD_UV_H

#include <stdint.h>

#include <uv.h>
#include <raft.h>
#include <raft/uv.h>

#include "../cluster/config.h"
#include "../common/histogram.h"
#include "clog.h"

/*
 * A shard replica owns its Raft group (raft_uv storage under DATA/shard-S, a TCP
 * transport on the node's raft base port + S), the conversation-log state
 * machine, the proposal batcher, linearizable-read barriers and the stream of
 * committed events that subscribers (gateways) follow.
 *
 * Write path: shard_submit queues an encoded command; once per loop iteration
 * (a uv_check handle) all queued commands become ONE Raft entry (clog entry
 * batch, lz4 when it pays) proposed with raft_apply, many entries in flight.
 * Each command's waiter is answered from the FSM apply of that entry, i.e. only
 * after it is committed and applied; if the proposal fails (leadership lost) the
 * waiters get CH_ENOTLEADER/CH_EUNAVAILABLE and the client retries with the same
 * client_msg_id, which the state machine deduplicates.
 */

struct shard;

/*
 * Called once per submitted command, with its result (res->err != 0 on
 * failure) and the leader hint for CH_ENOTLEADER (0 if unknown).  Runs on the
 * loop thread, from the FSM apply or from a Raft callback, never inline from
 * shard_submit.
 */
typedef void (*shard_done_cb)(void *data, uint32_t slot, const struct clog_result *res,
                              uint32_t leader_hint);

/* Called when a read barrier completes: status 0 means the caller may read the
 * clog now and see every write committed before the barrier was requested. */
typedef void (*shard_read_cb)(void *data, int status, uint32_t leader_hint);

/*
 * A subscriber to the shard's committed stream.  on_entry runs for every
 * applied entry, in index order, with the events it produced (records, possibly
 * none); on_reset when the stream cannot continue (the replica installed a
 * snapshot past the subscriber, or the shard is closing) — the subscriber is
 * already removed when it runs.  Owned by the caller.
 */
struct shard_sub {
    struct shard_sub *next;
    void *data;
    void (*on_entry)(struct shard_sub *sub, uint32_t shard, uint64_t index,
                     const uint8_t *events, size_t len, uint32_t n_events);
    void (*on_reset)(struct shard_sub *sub, uint32_t shard, int err);
};

struct shard_options {
    const struct cluster_config *config;
    uint32_t node_id;
    uint32_t shard;
    const char *data_dir; /* the node's data directory; the shard uses DIR/shard-S */
    uint64_t boot_id;     /* distinguishes this process's batches from earlier runs */
    size_t stream_retain_entries; /* committed entries kept for subscribers */
    /* A new replica of an existing group (a shard move's target, a node that lost
     * its data): never bootstrap; the leader adds it and sends it the log. */
    int join;
};

/*
 * Creates the replica: data dir, transport, raft_uv, raft_init, settings,
 * bootstrap (RAFT_CANTBOOTSTRAP on restart is normal) and raft_start, which
 * loads and restores the latest snapshot and the log.  Returns 0 or CH_EIO /
 * CH_ECORRUPT / CH_ENOMEM with a message in err; on error nothing is left open.
 */
int shard_open(uv_loop_t *loop, const struct shard_options *opt, struct shard **out,
               char *err, size_t errlen);

/* Starts closing (raft_close, then raft_uv and transport); cb runs when done and
 * the shard's memory is freed.  Pending waiters are answered with CH_ESHUTDOWN. */
void shard_close(struct shard *s, void (*cb)(void *data), void *data);

/*
 * Queues one command for the next batch.  Returns 0 (cb will run exactly once),
 * or CH_ENOTLEADER (with *leader_hint) / CH_ESHUTDOWN / CH_ENOMEM, in which case
 * cb never runs.
 */
int shard_submit(struct shard *s, const struct clog_cmd *cmd, shard_done_cb cb, void *data,
                 uint32_t slot, uint32_t *leader_hint);

/* Requests a linearizable read point (one raft_barrier shared by every read
 * requested in the same loop iteration).  Same return convention as submit. */
int shard_read(struct shard *s, shard_read_cb cb, void *data, uint32_t *leader_hint);

/*
 * Subscribes from Raft index from_index (0: the next applied entry).  Entries
 * still retained are replayed through on_entry before this returns.  Returns 0
 * with *next_index = the index of the first entry the subscriber will get, or
 * CH_ETOOOLD with *next_index = the oldest index still retained.
 */
int shard_subscribe(struct shard *s, struct shard_sub *sub, uint64_t from_index,
                    uint64_t *next_index);
void shard_unsubscribe(struct shard *s, struct shard_sub *sub);

/*
 * Called once when a leadership transfer ends: status 0 with leader = the node
 * Raft now knows as the shard's leader (not this one, or this one for a transfer
 * to itself), or CH_EUNAVAILABLE (Raft gave up, or nothing happened within the
 * timeout; leader is then what this replica sees, possibly itself) / CH_ESHUTDOWN.
 */
typedef void (*shard_transfer_cb)(void *data, int status, uint32_t leader);

/*
 * Transfers the shard's leadership from this replica (which must lead) to
 * to_node, a voting replica, or with to_node 0 to the voter Raft picks
 * (raft_transfer; Raft ids are node ids).  One transfer at a time per shard.
 * to_node == this node is a no-op answered on the next loop iteration.  cb runs
 * once: after Raft's transfer callback and once a new leader is known, or after
 * timeout_ms with CH_EUNAVAILABLE (the request itself stays alive until Raft
 * calls back).  Returns 0 (cb will run, never inline), or CH_ENOTLEADER (with
 * *leader_hint), CH_EINVAL (to_node is not a voter of the shard),
 * CH_EUNAVAILABLE (a transfer is already in progress, or no voter can take
 * over), CH_ESHUTDOWN, CH_ENOMEM; then cb never runs.
 */
int shard_transfer(struct shard *s, uint32_t to_node, unsigned timeout_ms,
                   shard_transfer_cb cb, void *data, uint32_t *leader_hint);

/*
 * Raft membership changes of the shard, on its leader (proto SHARD_CONF):
 * PROTO_SHARD_CONF_ADD (raft_add, then raft_assign STANDBY: the node receives
 * the log without voting), _PROMOTE (raft_assign VOTER; Raft catches it up
 * first), _REMOVE (raft_remove; not the leader itself: transfer first).
 * `address` is the node's Raft address for this shard (ADD only).  cb runs once
 * with 0 and the node's role afterwards (PROTO_RAFT_ROLE_*), or an error.
 * Returns 0 (cb will run, never inline); CH_EEXISTS when the node already is
 * where op wants it (*role set, cb never runs); CH_ENOTLEADER (+ hint),
 * CH_EINVAL (promote an unknown node, remove the leader, bad op),
 * CH_EUNAVAILABLE (another configuration change is in progress), CH_ESHUTDOWN,
 * CH_ENOMEM: cb never runs.
 */
typedef void (*shard_conf_cb)(void *data, int status, int role);
int shard_conf(struct shard *s, int op, uint32_t node, const char *address,
               shard_conf_cb cb, void *data, int *role, uint32_t *leader_hint);

/* The role of node in the replica's current Raft configuration (PROTO_RAFT_ROLE_*). */
int shard_raft_role(struct shard *s, uint32_t node);

/*
 * Takes a snapshot of this replica now (an operator's request, proto SNAPSHOT):
 * the replica snapshots at its next applied entry; a leader commits a few
 * barrier entries to make sure there is one (so ask every replica at about the
 * same time and each gets one).  cb runs once with 0 and the snapshot's index
 * after the snapshot is written, CH_ETIMEOUT when no entry was applied within
 * timeout_ms, or CH_ESHUTDOWN.  Returns 0 (cb will run, never inline),
 * CH_EUNAVAILABLE (a request is already pending) or CH_ESHUTDOWN.
 */
typedef void (*shard_snapshot_cb)(void *data, int status, uint64_t index);
int shard_snapshot_now(struct shard *s, unsigned timeout_ms, shard_snapshot_cb cb,
                       void *data);

/* Logs a line when the replica's Raft state, term or known leader changed since
 * the last call (the node calls it periodically). */
void shard_watch(struct shard *s);

/* Read access for the RPC layer (valid until the loop runs again). */
const struct clog *shard_clog(const struct shard *s);
struct raft *shard_raft(struct shard *s);
uint32_t shard_id(const struct shard *s);
uint32_t shard_leader_hint(struct shard *s);
uint64_t shard_snapshot_index(const struct shard *s);
/* The Raft index of the last entry applied to the clog (the stream's numbering). */
uint64_t shard_applied_index(struct shard *s);

/* What a replica has done since it opened, for metrics (GET /metrics). */
struct shard_stats {
    int state; /* enum raft_state */
    uint64_t term, commit_index, applied_index, snapshot_index;
    uint64_t entries_applied, bytes_applied; /* FSM applies (every role) */
    uint64_t batches_proposed;               /* entries handed to raft_apply */
    uint64_t snapshots_taken, snapshots_installed; /* installed: also at startup */
    struct ch_hist batch_commands;   /* commands per proposed entry */
    struct ch_hist apply_latency_ns; /* raft_apply -> its callback, as leader */
};
/* Copies the replica's counters and current Raft state into *out. */
void shard_stats(struct shard *s, struct shard_stats *out);

#endif
