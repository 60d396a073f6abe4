/*
 * How every replica sets up libraft's raft_uv: its transport (raft_uv_tcp with
 * TCP_NODELAY on each connection it makes or accepts) and its tracer.
 *
 * raft_uv_tcp leaves Nagle's algorithm on.  A leader writes AppendEntries and a
 * follower its results as small messages, so a second message on a connection
 * waited for the TCP acknowledgement of the first (which the peer delays, hoping
 * to piggyback it), adding delay to every pipelined append.  This decorator
 * passes each call to an inner raft_uv_tcp and sets TCP_NODELAY on the stream
 * before raft_uv sees it.
 */
#ifndef CHORUS_RAFT_TCP_H
#define CHORUS_RAFT_TCP_H

#include <stdlib.h>

#include <raft.h>
#include <raft/uv.h>

struct ch_raft_tcp {
    struct raft_uv_transport outer; /* what raft_uv_init gets (its data is raft_uv's) */
    struct raft_uv_transport inner; /* libraft's raft_uv_tcp */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
};

/* raft_uv_tcp_init of the inner transport; 0 or a raft error code. */
int ch_raft_tcp_init(struct ch_raft_tcp *t, struct uv_loop_s *loop);

/* Releases the inner transport (raft_uv_tcp_close), after raft_uv closed it. */
void ch_raft_tcp_close(struct ch_raft_tcp *t);

/*
 * libraft formats every trace line (snprintf into a static buffer) before its
 * tracer decides to drop it: that was ~2% of a node's CPU under load.  A NULL
 * tracer skips the formatting.  LIBRAFT_TRACE set in the environment keeps the
 * library's own tracer, for debugging.
 */
static inline void ch_raft_quiet_tracer(struct raft *r, struct raft_io *io)
{
    if (getenv("LIBRAFT_TRACE") != NULL)
        return;
    r->tracer = NULL;
    raft_uv_set_tracer(io, NULL);
}

#endif
