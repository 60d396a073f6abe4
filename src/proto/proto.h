/* The store RPC: length-framed binary messages between gateways/tools and store nodes. */
#ifndef CHORUS_PROTO_H
#define CHORUS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"

/*
 * Every frame:  u32 length (of what follows) | u8 type | u8 flags | u16 0 |
 *               u64 request id | body (length - 12 bytes)
 * Replies echo the request id.  A connection carries any number of concurrent
 * requests; replies may come out of order.  Subscriptions answer with
 * PROTO_SUBSCRIBED and then stream PROTO_STREAM frames with the same request id
 * until the connection closes.
 */
#define PROTO_HEADER_SIZE 16
#define PROTO_DEFAULT_MAX_FRAME (16u << 20)

/*
 * Message schemas, declared once.  Each message has fixed fields (X-macro list)
 * and optionally a trailing repeated section that is read with an iterator.
 * Field types: u8, u16, u32, u64, str (u16 length + bytes; the encoder cuts a
 * longer string to 65535 bytes, so callers bound what they pass), bytes (u32
 * length + bytes).  X(type, name).
 */
#define PROTO_MESSAGES(M)                                                          \
    M(ERROR, 100, PROTO_ERROR_FIELDS)                                              \
    M(PING, 1, PROTO_PING_FIELDS)                                                  \
    M(PONG, 101, PROTO_PING_FIELDS)                                                \
    M(SUBMIT, 2, PROTO_SUBMIT_FIELDS)                                              \
    M(SUBMIT_REPLY, 102, PROTO_SUBMIT_REPLY_FIELDS)                                \
    M(HISTORY, 3, PROTO_HISTORY_FIELDS)                                            \
    M(HISTORY_REPLY, 103, PROTO_HISTORY_REPLY_FIELDS)                              \
    M(CONV_GET, 4, PROTO_CONV_GET_FIELDS)                                          \
    M(CONV_GET_REPLY, 104, PROTO_CONV_GET_REPLY_FIELDS)                            \
    M(SUBSCRIBE, 5, PROTO_SUBSCRIBE_FIELDS)                                        \
    M(SUBSCRIBED, 105, PROTO_SUBSCRIBED_FIELDS)                                    \
    M(STREAM, 106, PROTO_STREAM_FIELDS)                                            \
    M(STATUS, 6, PROTO_STATUS_FIELDS)                                              \
    M(STATUS_REPLY, 107, PROTO_STATUS_REPLY_FIELDS)                                \
    M(USER_GET, 7, PROTO_USER_GET_FIELDS)                                          \
    M(USER_GET_REPLY, 108, PROTO_USER_GET_REPLY_FIELDS)                            \
    M(USER_CONVS, 8, PROTO_USER_CONVS_FIELDS)                                      \
    M(USER_CONVS_REPLY, 109, PROTO_USER_CONVS_REPLY_FIELDS)                        \
    M(PUBLISH, 9, PROTO_PUBLISH_FIELDS)                                            \
    M(UNSUBSCRIBE, 10, PROTO_UNSUBSCRIBE_FIELDS)                                  \
    M(TRANSFER, 11, PROTO_TRANSFER_FIELDS)                                        \
    M(TRANSFER_REPLY, 110, PROTO_TRANSFER_REPLY_FIELDS)                            \
    M(META_GET, 12, PROTO_META_GET_FIELDS)                                        \
    M(META_GET_REPLY, 111, PROTO_META_GET_REPLY_FIELDS)                           \
    M(META_PROPOSE, 13, PROTO_META_PROPOSE_FIELDS)                                \
    M(META_PROPOSE_REPLY, 112, PROTO_META_PROPOSE_REPLY_FIELDS)                   \
    M(SHARD_CONF, 14, PROTO_SHARD_CONF_FIELDS)                                    \
    M(SHARD_CONF_REPLY, 113, PROTO_SHARD_CONF_REPLY_FIELDS)                       \
    M(SNAPSHOT, 15, PROTO_SNAPSHOT_FIELDS)                                        \
    M(SNAPSHOT_REPLY, 114, PROTO_SNAPSHOT_REPLY_FIELDS)

/* err: CH_E* code; leader_hint: node id of the shard's leader if known, else 0;
 * extra: code-specific (CH_ETOOOLD: oldest retained index); message: for humans. */
#define PROTO_ERROR_FIELDS(X) X(u16, err) X(u32, leader_hint) X(u64, extra) X(str, message)

#define PROTO_PING_FIELDS(X) X(u64, nonce)

/* Commands as a clog batch: n_cmds × (u32 length + clog_cmd encoding); one
 * result per command comes back in the same order. */
#define PROTO_SUBMIT_FIELDS(X) X(u32, n_cmds) X(bytes, cmds)

/* Repeated: n_results × proto_result. */
#define PROTO_SUBMIT_REPLY_FIELDS(X) X(u32, n_results)

#define PROTO_FLAG_STALE_OK 1 /* history/conv_get: read this replica's state, no barrier */

/* Semantics of after/before/limit as clog_history.  actor: when non-empty the
 * read is refused with CH_ENOTMEMBER unless actor is a member (gateways pass the
 * user; tools pass nothing). */
#define PROTO_HISTORY_FIELDS(X)                                                    \
    X(u64, conv) X(u64, after) X(u64, before) X(u32, limit) X(u8, flags) X(str, actor)

/* Repeated: n_events event records (clog_event.h). */
#define PROTO_HISTORY_REPLY_FIELDS(X)                                              \
    X(u64, conv) X(u64, last_seq) X(u8, has_more) X(u32, n_events)

#define PROTO_CONV_GET_FIELDS(X) X(u64, conv) X(u8, flags)

/* Repeated: n_members × proto_member, in join order. */
#define PROTO_CONV_GET_REPLY_FIELDS(X)                                             \
    X(u64, conv) X(u8, kind) X(str, name) X(str, created_by) X(u64, created_ts)       \
    X(u64, last_seq) X(u32, n_members)

/* from_index: first Raft index wanted (0: from the next committed entry). */
#define PROTO_SUBSCRIBE_FIELDS(X) X(u32, shard) X(u64, from_index)

/* next_index: index of the first entry the stream will carry. */
/* leader_hint: the shard's leader as this replica knows it (0: unknown); the
 * leader's stream is the freshest, since followers apply a commit only when the
 * leader's next message tells them of it. */
#define PROTO_SUBSCRIBED_FIELDS(X) X(u32, shard) X(u64, next_index) X(u32, leader_hint)

/* Ends the subscription that SUBSCRIBE request `sub_id` (its req_id) opened on
 * this connection; unknown ids are ignored.  No reply. */
#define PROTO_UNSUBSCRIBE_FIELDS(X) X(u32, shard) X(u64, sub_id)

/* One applied entry of the shard: its Raft index and the events it produced
 * (possibly none).  Repeated: n_events event records. */
#define PROTO_STREAM_FIELDS(X) X(u32, shard) X(u64, index) X(u32, n_events)

/* Moves the shard's leadership away from the node that receives it, which must be
 * the leader: to_node (a voting replica of the shard), or 0 to let Raft pick the
 * most up-to-date voter.  Answered after Raft's transfer finished with the leader
 * Raft then sees (to_node == the receiving leader is a no-op answered at once), or
 * an ERROR: not_leader + hint, not_found (CH_ENOSHARD), bad_request (to_node is not
 * a voting replica), unavailable (already transferring, or it failed / timed out). */
#define PROTO_TRANSFER_FIELDS(X) X(str, admin_token) X(u32, shard) X(u32, to_node)

/*
 * Admin messages (TRANSFER, META_PROPOSE, SHARD_CONF, SNAPSHOT) carry the
 * cluster's admin.token; a node whose config sets one answers any other token
 * with unauthorized (CH_EUNAUTHORIZED) once the message decodes, before acting
 * on it.
 */

/* The placement map (placement.h).  flags 0: a linearizable read, answered by the
 * meta group's leader after a Raft barrier (not_leader + hint elsewhere);
 * PROTO_FLAG_STALE_OK: the newest map this node knows (its meta replica's, or
 * the last it fetched).  version 0 and an empty map: none known (not seeded
 * yet).  Versions only ever move forward. */
#define PROTO_META_GET_FIELDS(X) X(u8, flags)
#define PROTO_META_GET_REPLY_FIELDS(X) X(u64, version) X(u32, meta_leader) X(bytes, map)

/* One placement command (placement_cmd_encode), for the meta group's leader: the
 * reply comes after it was committed and applied, with the map's new version;
 * a rejected command is an ERROR with the state machine's code and message;
 * not_leader + hint elsewhere. */
#define PROTO_META_PROPOSE_FIELDS(X) X(str, admin_token) X(bytes, cmd)
#define PROTO_META_PROPOSE_REPLY_FIELDS(X) X(u64, version)

/* A Raft membership change of one shard, for its leader (idempotent):
 * ADD makes node a standby (it receives the log but does not vote), PROMOTE a
 * voter (Raft catches it up first), REMOVE takes it out of the configuration.
 * The reply comes once the configuration change is committed; role is the
 * node's role afterwards (PROTO_RAFT_ROLE_*; NONE after REMOVE). */
#define PROTO_SHARD_CONF_FIELDS(X) X(str, admin_token) X(u32, shard) X(u8, op) X(u32, node)
#define PROTO_SHARD_CONF_REPLY_FIELDS(X) X(u32, shard) X(u32, node) X(u8, role)

/* Takes a snapshot of this node's replica of the shard now (admin): answered
 * once raft_uv's snapshot file of that index is on disk, with the index
 * (io_error when raft finished without it); timeout when no entry was applied
 * within a few seconds (send it to every replica at once: the leader commits a
 * few entries so the others apply one too). */
#define PROTO_SNAPSHOT_FIELDS(X) X(str, admin_token) X(u32, shard)
#define PROTO_SNAPSHOT_REPLY_FIELDS(X) X(u32, shard) X(u64, index)

enum proto_shard_conf_op {
    PROTO_SHARD_CONF_ADD = 1,
    PROTO_SHARD_CONF_PROMOTE = 2,
    PROTO_SHARD_CONF_REMOVE = 3,
};

/* A server's role in a shard's Raft configuration (status, SHARD_CONF). */
enum proto_raft_role {
    PROTO_RAFT_ROLE_NONE = 0,
    PROTO_RAFT_ROLE_VOTER = 1,
    PROTO_RAFT_ROLE_STANDBY = 2,
    PROTO_RAFT_ROLE_SPARE = 3,
};
#define PROTO_TRANSFER_REPLY_FIELDS(X) X(u32, shard) X(u32, leader)

#define PROTO_STATUS_FLAG_DIGEST 1 /* include each shard's state digest (costly) */
#define PROTO_STATUS_FIELDS(X) X(u8, flags)

/* Repeated: n_shards × proto_shard_status.  gw_connections: the node's open
 * WebSocket connections; disk_*: its data directory's file system (0: unknown). */
#define PROTO_STATUS_REPLY_FIELDS(X)                                               \
    X(u32, node_id) X(u64, uptime_ms) X(str, version) X(u32, gw_connections)         \
    X(u64, disk_free_bytes) X(u64, disk_total_bytes) X(u32, n_shards)

/* A user record, read on the user's shard (flags: PROTO_FLAG_STALE_OK). */
#define PROTO_USER_GET_FIELDS(X) X(str, user) X(u8, flags)
#define PROTO_USER_GET_REPLY_FIELDS(X)                                             \
    X(str, user) X(str, password_record) X(str, display_name) X(str, status)          \
    X(bytes, settings) X(u64, created_ts) X(u64, last_seen) X(u8, disabled)

/* The conversations of shard `shard` that `user` is a member of.
 * Repeated: n_convs × proto_user_conv, ascending conversation id.  applied_index:
 * the Raft index of the replica's state the answer was read from, comparable with
 * the committed stream's indexes (a gateway uses it to tell whether its stream is
 * ahead of the answer). */
#define PROTO_USER_CONVS_FIELDS(X) X(str, user) X(u32, shard) X(u8, flags)
#define PROTO_USER_CONVS_REPLY_FIELDS(X) X(u32, shard) X(u32, n_convs) X(u64, applied_index)

/*
 * An ephemeral notice between gateways (typing, presence): never committed, never
 * answered (req_id 0).  The store RPC server hands it to the node's gateway.
 * kind: PROTO_PUBLISH_*; origin: the sending node; state: typing on/off, online/off.
 */
#define PROTO_PUBLISH_FIELDS(X)                                                    \
    X(u8, kind) X(u8, state) X(u32, origin) X(u64, conv) X(u64, ts) X(str, user)

enum proto_publish_kind {
    PROTO_PUBLISH_TYPING = 1,   /* user typing in conv */
    PROTO_PUBLISH_PRESENCE = 2, /* user's connection count on origin went 0 <-> >0 */
    PROTO_PUBLISH_HELLO = 3,    /* origin (re)connected: resend your presence to it */
};

/* Repeated element types. */
#define PROTO_RESULT_FIELDS(X)                                                     \
    X(u16, err) X(u8, dup) X(u32, leader_hint) X(u64, conv) X(u64, seq) X(u64, ts)

#define PROTO_MEMBER_FIELDS(X) X(str, user) X(u8, role) X(u64, delivered) X(u64, read)

/* role: PROTO_ROLE_*; match_index per replica is known on the leader only (0). */
#define PROTO_SHARD_STATUS_FIELDS(X)                                               \
    X(u32, shard) X(u8, role) X(u64, term) X(u64, commit_index) X(u64, applied_index) \
    X(u64, last_index) X(u32, leader_id) X(u64, digest) X(u64, snapshot_index)         \
    X(u64, conversations) X(u64, events) X(u32, n_replicas)

#define PROTO_REPLICA_FIELDS(X) X(u32, node_id) X(u64, match_index) X(u8, raft_role)

#define PROTO_USER_CONV_FIELDS(X)                                                  \
    X(u64, conv) X(u8, kind) X(str, name) X(u64, last_seq) X(u64, delivered)          \
    X(u64, read) X(u32, n_members)

enum proto_role {
    PROTO_ROLE_UNAVAILABLE = 0,
    PROTO_ROLE_FOLLOWER = 1,
    PROTO_ROLE_CANDIDATE = 2,
    PROTO_ROLE_LEADER = 3,
};

/* ---- generated declarations ---- */

#define PROTO__CTYPE_u8 uint8_t
#define PROTO__CTYPE_u16 uint16_t
#define PROTO__CTYPE_u32 uint32_t
#define PROTO__CTYPE_u64 uint64_t
#define PROTO__CTYPE_str struct ch_slice
#define PROTO__CTYPE_bytes struct ch_slice
#define PROTO__FIELD(type, name) PROTO__CTYPE_##type name;

enum proto_type {
#define PROTO__TYPE_ENUM(NAME, code, FIELDS) PROTO_##NAME = code,
    PROTO_MESSAGES(PROTO__TYPE_ENUM)
#undef PROTO__TYPE_ENUM
};

/*
 * For each message NAME: struct proto_<name> with its fixed fields,
 *   void proto_encode_<name>(struct ch_wbuf *b, uint64_t req_id, const struct proto_<name> *m);
 *     writes the whole frame header + fixed fields; repeated elements are appended
 *     after it with proto_put_<element> and the length is fixed by proto_frame_end.
 *   int proto_decode_<name>(struct ch_rbuf *body, struct proto_<name> *m);
 *     reads the fixed fields from a frame body, leaving `body` at the repeated
 *     section; 0 or CH_EMALFORMED.
 * Struct names are the lower-case message names (proto_submit_reply, ...).
 */
struct proto_error { PROTO_ERROR_FIELDS(PROTO__FIELD) };
struct proto_ping { PROTO_PING_FIELDS(PROTO__FIELD) };
struct proto_submit { PROTO_SUBMIT_FIELDS(PROTO__FIELD) };
struct proto_submit_reply { PROTO_SUBMIT_REPLY_FIELDS(PROTO__FIELD) };
struct proto_history { PROTO_HISTORY_FIELDS(PROTO__FIELD) };
struct proto_history_reply { PROTO_HISTORY_REPLY_FIELDS(PROTO__FIELD) };
struct proto_conv_get { PROTO_CONV_GET_FIELDS(PROTO__FIELD) };
struct proto_conv_get_reply { PROTO_CONV_GET_REPLY_FIELDS(PROTO__FIELD) };
struct proto_subscribe { PROTO_SUBSCRIBE_FIELDS(PROTO__FIELD) };
struct proto_subscribed { PROTO_SUBSCRIBED_FIELDS(PROTO__FIELD) };
struct proto_stream { PROTO_STREAM_FIELDS(PROTO__FIELD) };
struct proto_status { PROTO_STATUS_FIELDS(PROTO__FIELD) };
struct proto_status_reply { PROTO_STATUS_REPLY_FIELDS(PROTO__FIELD) };
struct proto_result { PROTO_RESULT_FIELDS(PROTO__FIELD) };
struct proto_member { PROTO_MEMBER_FIELDS(PROTO__FIELD) };
struct proto_shard_status { PROTO_SHARD_STATUS_FIELDS(PROTO__FIELD) };
struct proto_replica { PROTO_REPLICA_FIELDS(PROTO__FIELD) };
struct proto_user_get { PROTO_USER_GET_FIELDS(PROTO__FIELD) };
struct proto_user_get_reply { PROTO_USER_GET_REPLY_FIELDS(PROTO__FIELD) };
struct proto_user_convs { PROTO_USER_CONVS_FIELDS(PROTO__FIELD) };
struct proto_user_convs_reply { PROTO_USER_CONVS_REPLY_FIELDS(PROTO__FIELD) };
struct proto_publish { PROTO_PUBLISH_FIELDS(PROTO__FIELD) };
struct proto_unsubscribe { PROTO_UNSUBSCRIBE_FIELDS(PROTO__FIELD) };
struct proto_transfer { PROTO_TRANSFER_FIELDS(PROTO__FIELD) };
struct proto_transfer_reply { PROTO_TRANSFER_REPLY_FIELDS(PROTO__FIELD) };
struct proto_meta_get { PROTO_META_GET_FIELDS(PROTO__FIELD) };
struct proto_meta_get_reply { PROTO_META_GET_REPLY_FIELDS(PROTO__FIELD) };
struct proto_meta_propose { PROTO_META_PROPOSE_FIELDS(PROTO__FIELD) };
struct proto_meta_propose_reply { PROTO_META_PROPOSE_REPLY_FIELDS(PROTO__FIELD) };
struct proto_shard_conf { PROTO_SHARD_CONF_FIELDS(PROTO__FIELD) };
struct proto_shard_conf_reply { PROTO_SHARD_CONF_REPLY_FIELDS(PROTO__FIELD) };
struct proto_snapshot { PROTO_SNAPSHOT_FIELDS(PROTO__FIELD) };
struct proto_snapshot_reply { PROTO_SNAPSHOT_REPLY_FIELDS(PROTO__FIELD) };
struct proto_user_conv { PROTO_USER_CONV_FIELDS(PROTO__FIELD) };
/* PONG shares PING's layout. */
#define proto_pong proto_ping

#define PROTO__DECLARE(NAME, lname)                                                \
    void proto_encode_##lname(struct ch_wbuf *b, uint64_t req_id,                  \
                              const struct proto_##lname *m);                      \
    int proto_decode_##lname(struct ch_rbuf *body, struct proto_##lname *m);
PROTO__DECLARE(ERROR, error)
PROTO__DECLARE(PING, ping)
PROTO__DECLARE(PONG, pong)
PROTO__DECLARE(SUBMIT, submit)
PROTO__DECLARE(SUBMIT_REPLY, submit_reply)
PROTO__DECLARE(HISTORY, history)
PROTO__DECLARE(HISTORY_REPLY, history_reply)
PROTO__DECLARE(CONV_GET, conv_get)
PROTO__DECLARE(CONV_GET_REPLY, conv_get_reply)
PROTO__DECLARE(SUBSCRIBE, subscribe)
PROTO__DECLARE(SUBSCRIBED, subscribed)
PROTO__DECLARE(STREAM, stream)
PROTO__DECLARE(STATUS, status)
PROTO__DECLARE(STATUS_REPLY, status_reply)
PROTO__DECLARE(USER_GET, user_get)
PROTO__DECLARE(USER_GET_REPLY, user_get_reply)
PROTO__DECLARE(USER_CONVS, user_convs)
PROTO__DECLARE(USER_CONVS_REPLY, user_convs_reply)
PROTO__DECLARE(PUBLISH, publish)
PROTO__DECLARE(UNSUBSCRIBE, unsubscribe)
PROTO__DECLARE(TRANSFER, transfer)
PROTO__DECLARE(TRANSFER_REPLY, transfer_reply)
PROTO__DECLARE(META_GET, meta_get)
PROTO__DECLARE(META_GET_REPLY, meta_get_reply)
PROTO__DECLARE(META_PROPOSE, meta_propose)
PROTO__DECLARE(META_PROPOSE_REPLY, meta_propose_reply)
PROTO__DECLARE(SHARD_CONF, shard_conf)
PROTO__DECLARE(SHARD_CONF_REPLY, shard_conf_reply)
PROTO__DECLARE(SNAPSHOT, snapshot)
PROTO__DECLARE(SNAPSHOT_REPLY, snapshot_reply)
#undef PROTO__DECLARE

/* Repeated elements: append to an open frame / read from a body. */
void proto_put_result(struct ch_wbuf *b, const struct proto_result *m);
int proto_get_result(struct ch_rbuf *r, struct proto_result *m);
void proto_put_member(struct ch_wbuf *b, const struct proto_member *m);
int proto_get_member(struct ch_rbuf *r, struct proto_member *m);
void proto_put_shard_status(struct ch_wbuf *b, const struct proto_shard_status *m);
int proto_get_shard_status(struct ch_rbuf *r, struct proto_shard_status *m);
void proto_put_replica(struct ch_wbuf *b, const struct proto_replica *m);
int proto_get_replica(struct ch_rbuf *r, struct proto_replica *m);
void proto_put_user_conv(struct ch_wbuf *b, const struct proto_user_conv *m);
int proto_get_user_conv(struct ch_rbuf *r, struct proto_user_conv *m);

/*
 * Frames.  proto_encode_* starts a frame at the buffer's current end and records
 * its start; after appending repeated elements (or raw records with ch_put_raw)
 * call proto_frame_end(b, start) with the offset the buffer had before the
 * encode call, which patches the length.  Frames with no repeated section are
 * complete after proto_encode_* (it calls proto_frame_end itself; calling it
 * again is harmless).
 */
void proto_frame_end(struct ch_wbuf *b, size_t start);

/* A parsed frame; body borrows from the input buffer. */
struct proto_frame {
    uint8_t type;
    uint8_t flags;
    uint64_t req_id;
    struct ch_slice body;
};

/*
 * Parses one frame at the start of buf (resumable, h2o-style).  Returns the
 * number of bytes consumed (> 0), 0 when more input is needed, or a negative
 * error: -CH_ETOOLARGE when the declared length exceeds max_frame,
 * -CH_EMALFORMED when the header is invalid (length < 12, reserved bits set).
 * Unknown types are not an error here: the dispatcher answers them with
 * CH_EUNKNOWN_OP.
 */
long proto_frame_parse(const uint8_t *buf, size_t len, size_t max_frame,
                       struct proto_frame *f);

/* Name of a message type ("SUBMIT", ...) or "?"; for logs and tools. */
const char *proto_type_name(int type);

/* Convenience: a complete PROTO_ERROR frame. */
void proto_put_error(struct ch_wbuf *b, uint64_t req_id, int err, uint32_t leader_hint,
                     uint64_t extra, const char *message);

#endif
