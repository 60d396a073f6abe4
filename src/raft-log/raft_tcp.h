/*
 * The Raft transport of every replica: libraft's raft_uv_tcp with TCP_NODELAY on
 * each connection it makes or accepts.
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

#endif
