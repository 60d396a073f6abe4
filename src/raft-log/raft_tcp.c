/* raft_uv_tcp with TCP_NODELAY (see raft_tcp.h). */
#include "raft_tcp.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

/* A connect in flight: the inner request, and the caller's. */
struct connect_req {
    struct raft_uv_connect req; /* given to the inner transport */
    struct raft_uv_connect *outer;
    raft_uv_connect_cb cb;
};

static void no_delay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP)
        uv_tcp_nodelay((uv_tcp_t *)stream, 1); /* best effort: a failure only costs delay */
}

static void copy_errmsg(struct ch_raft_tcp *t)
{
    memcpy(t->outer.errmsg, t->inner.errmsg, sizeof t->outer.errmsg);
}

static int tcp_init(struct raft_uv_transport *outer, raft_id id, const char *address)
{
    struct ch_raft_tcp *t = outer->impl;
    int rv = t->inner.init(&t->inner, id, address);
    if (rv != 0)
        copy_errmsg(t);
    return rv;
}

static void on_accept(struct raft_uv_transport *inner, raft_id id, const char *address,
                      struct uv_stream_s *stream)
{
    struct ch_raft_tcp *t = inner->data;
    no_delay(stream);
    t->accept_cb(&t->outer, id, address, stream);
}

static int tcp_listen(struct raft_uv_transport *outer, raft_uv_accept_cb cb)
{
    struct ch_raft_tcp *t = outer->impl;
    t->accept_cb = cb;
    int rv = t->inner.listen(&t->inner, on_accept);
    if (rv != 0)
        copy_errmsg(t);
    return rv;
}

static void on_connect(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    struct connect_req *c = req->data;
    if (status == 0)
        no_delay(stream);
    struct raft_uv_connect *outer = c->outer;
    raft_uv_connect_cb cb = c->cb;
    free(c);
    cb(outer, stream, status);
}

static int tcp_connect(struct raft_uv_transport *outer, struct raft_uv_connect *req,
                       raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct ch_raft_tcp *t = outer->impl;
    struct connect_req *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RAFT_NOMEM;
    c->req.data = c;
    c->outer = req;
    c->cb = cb;
    int rv = t->inner.connect(&t->inner, &c->req, id, address, on_connect);
    if (rv != 0) {
        copy_errmsg(t);
        free(c);
    }
    return rv;
}

static void on_close(struct raft_uv_transport *inner)
{
    struct ch_raft_tcp *t = inner->data;
    t->close_cb(&t->outer);
}

static void tcp_close(struct raft_uv_transport *outer, raft_uv_transport_close_cb cb)
{
    struct ch_raft_tcp *t = outer->impl;
    t->close_cb = cb;
    t->inner.close(&t->inner, on_close);
}

int ch_raft_tcp_init(struct ch_raft_tcp *t, struct uv_loop_s *loop)
{
    memset(t, 0, sizeof *t);
    t->inner.version = 1;
    t->inner.data = t;
    int rv = raft_uv_tcp_init(&t->inner, loop);
    if (rv != 0)
        return rv;
    t->outer.version = 1;
    t->outer.impl = t;
    t->outer.init = tcp_init;
    t->outer.listen = tcp_listen;
    t->outer.connect = tcp_connect;
    t->outer.close = tcp_close;
    return 0;
}

void ch_raft_tcp_close(struct ch_raft_tcp *t)
{
    raft_uv_tcp_close(&t->inner);
}
