/* A blocking store-RPC client for tools: POSIX sockets + poll, no libuv. */
#ifndef CHORUS_CTL_CLIENT_H
#define CHORUS_CTL_CLIENT_H

#include <stdint.h>

#include "../cluster/config.h"
#include "../common/codec.h"
#include "../proto/proto.h"
#include "../raft-log/clog_cmd.h"

/*
 * One connection per node, opened lazily.  Requests are pipelined: send any
 * number with cc_send, collect replies with cc_recv (they come back tagged with
 * their request id, in any order).  The routing helpers (cc_submit, cc_read)
 * find a shard's leader, follow not_leader hints, move to another replica on
 * connection errors and back off up to a deadline.
 */
struct cc_conn {
    int fd;            /* -1 when closed */
    uint8_t *in;
    size_t in_len, in_cap;
    uint64_t retry_at; /* ms: do not reconnect before */
};

struct cc {
    const struct cluster_config *cfg;
    struct cc_conn conns[CLUSTER_MAX_NODES];
    uint32_t *leader; /* per shard: node id believed to lead it (0 unknown) */
    uint64_t next_req;
    int deadline_ms;  /* for the routing helpers, default 10000 */
    struct ch_wbuf frame; /* the last received frame's bytes */
};

/* A received frame: body points into c->frame until the next cc_recv. */
struct cc_reply {
    uint32_t node;
    struct proto_frame f;
};

uint64_t cc_now_ms(void);
uint64_t cc_now_us(void);
int cc_init(struct cc *c, const struct cluster_config *cfg);
void cc_close(struct cc *c);
/* Index of node id in cfg->nodes, or -1. */
int cc_node_index(const struct cc *c, uint32_t node);
/* Closes the node's connection (after an error); pending requests on it are lost. */
void cc_drop(struct cc *c, uint32_t node);

/* Sends a complete frame to node (connecting if needed, with a 2 s timeout).
 * 0 or CH_EIO / CH_EUNAVAILABLE (connection refused). */
int cc_send(struct cc *c, uint32_t node, const struct ch_wbuf *frame);

/*
 * Waits up to timeout_ms for one frame from any connected node.  Returns 0 with
 * *r filled, CH_ETIMEOUT, or CH_EIO with r->node set to the node whose
 * connection failed (it is closed).
 */
int cc_recv(struct cc *c, int timeout_ms, struct cc_reply *r);

/* Sends one request frame and waits for the reply with the same id from that node. */
int cc_call(struct cc *c, uint32_t node, const struct ch_wbuf *frame, uint64_t req_id,
            int timeout_ms, struct cc_reply *r);

/*
 * Submits commands (all of them must belong to one shard), routed to the
 * shard's leader with retries until c->deadline_ms.  results[i] receives each
 * command's result.  Returns 0 (see each result's err), or CH_EUNAVAILABLE when
 * no leader answered in time.
 */
int cc_submit(struct cc *c, const struct clog_cmd *cmds, uint32_t n,
              struct proto_result *results);

/*
 * Sends a request frame (its request id is overwritten for every attempt) to the
 * leader of `shard`, routed and retried like cc_submit, or only to `node` when it
 * is non-zero (shard cfg->n_shards: the meta group's leader).  Returns 0 with
 * the reply in *r, the err of an ERROR reply (the reply is still in *r), or
 * CH_EUNAVAILABLE.
 */
int cc_route_call(struct cc *c, struct ch_wbuf *frame, uint32_t shard, uint32_t node,
                  struct cc_reply *r);

/* Next request id. */
static inline uint64_t cc_req_id(struct cc *c)
{
    return ++c->next_req;
}

#endif
