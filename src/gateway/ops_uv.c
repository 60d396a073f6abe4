/*
 * The gateway's request logic: client ops -> store RPCs -> replies, the fanout
 * glue (shard streams in, catch-up reads), typing and presence between gateways.
 *
 * Every op is decoded completely by wire.c before anything here runs.  Writes
 * become one clog command each, sent to the shard leader by rpc_uv.c (which
 * retries with the leader hint until the deadline) and answered from the
 * committed result.  Async work carries the client's id and looks the client up
 * again when it completes.
 */
#include "gateway_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/bugs.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../proto/proto.h"
#include "../raft-log/clog_cmd.h"
#include "auth.h"

#define GW_TICK_MS 500
#define GW_PRESENCE_REFRESH_MS 10000
#define GW_PRESENCE_EXPIRE_MS 35000
#define GW_FETCH_LIMIT 200
#define GW_STARTING_MSG "the gateway is still connecting to the shards: retry in a moment"
#define GW_USER_IDLE_MS 120000 /* a user's buckets are kept this long after its last use */

/* An op in flight. */
struct op {
    struct gw *gw;
    uint64_t client;
    int op;
    char id[WIRE_MAX_ID + 3];
    char user[WIRE_MAX_USER + 1];
    size_t user_len;
    uint64_t conv;
    uint8_t kind;
    int pending; /* multi-shard reads outstanding */
    int err;     /* first error of a multi-shard read */
    struct ch_wbuf acc;
    struct ch_wbuf login_reply; /* login/register on a WebSocket: sent once followed */
    struct ch_wbuf frame;       /* create/add_member: sent once its users are known */
    uint32_t shard;
    char missing[WIRE_MAX_USER + 1]; /* a user that does not exist */
    uint32_t count;
    /* register / login */
    uv_work_t work;
    char password[WIRE_MAX_PASSWORD + 1];
    size_t password_len;
    char record[AUTH_MAX_RECORD];
    char display_name[WIRE_MAX_DISPLAY_NAME + 1];
    uint8_t salt[AUTH_SALT_LEN];
    int work_rv;
    int attempt;
};

/* A sync waiting for its conversations to be caught up. */
struct gw_sync {
    struct gw_sync *next;
    char id[WIRE_MAX_ID + 3];
    uint64_t *convs;
    uint32_t n, left;
};

/* Presence of a user on other gateways. */
struct rpres {
    uint64_t nodes;      /* bit i: node index i reported the user online */
    uint64_t seen[64];   /* when node i last confirmed it */
    uint64_t last_seen;  /* when the user was last seen going offline anywhere */
    uint16_t len;
    char name[];
};

/* Connections watching a user's presence. */
struct watch {
    uint64_t *conns;
    uint32_t n, cap;
    uint16_t len;
    char name[];
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- replies ------------------------------------------------------------------------ */

static struct op *op_new(struct gw_client *c, const struct wire_request *req)
{
    struct op *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->gw = c->gw;
    o->client = c->id;
    o->op = req->op;
    snprintf(o->id, sizeof o->id, "%s", req->id);
    memcpy(o->user, c->user, c->user_len);
    o->user_len = c->user_len;
    ch_wbuf_init(&o->acc);
    ch_wbuf_init(&o->login_reply);
    ch_wbuf_init(&o->frame);
    return o;
}

static void op_free(struct op *o)
{
    ch_wbuf_free(&o->acc);
    ch_wbuf_free(&o->login_reply);
    ch_wbuf_free(&o->frame);
    free(o);
}

static void send_reply(struct gw *gw, uint64_t client, const char *id, const struct ch_wbuf *result)
{
    struct gw_client *c = gw_client_find(gw, client);
    if (c == NULL)
        return;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_reply_begin(&b, id);
    if (result != NULL && result->len > 0)
        ch_put_raw(&b, result->data, result->len);
    else
        wire_put_raw(&b, "{}");
    wire_reply_end(&b);
    if (!ch_wbuf_error(&b)) {
        gw->st.replies++;
        gw_client_send_text(c, b.data, b.len);
    }
    ch_wbuf_free(&b);
}

static void send_error(struct gw *gw, uint64_t client, const char *id, int err,
                       const char *message, uint64_t retry_after_ms)
{
    struct gw_client *c = gw_client_find(gw, client);
    if (c == NULL)
        return;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_reply_error(&b, id, err, message, retry_after_ms);
    if (!ch_wbuf_error(&b)) {
        gw->st.errors++;
        gw->st.errors_by_code[err > 0 && err < CH__ERR_COUNT ? err : CH_EINTERNAL]++;
        gw_client_send_text(c, b.data, b.len);
    }
    ch_wbuf_free(&b);
}

static void op_error(struct op *o, int err, const char *message)
{
    send_error(o->gw, o->client, o->id, err, message, 0);
    op_free(o);
}

/* A definitive error carried by a reply frame (PROTO_ERROR), or 0. */
static int frame_error(const struct proto_frame *f)
{
    if (f->type != PROTO_ERROR)
        return 0;
    struct ch_rbuf r;
    ch_rbuf_init(&r, f->body.ptr, f->body.len);
    struct proto_error e;
    if (proto_decode_error(&r, &e) != 0)
        return CH_EINTERNAL;
    return e.err ? e.err : CH_EINTERNAL;
}

/* The outcome of a read call: its error (transport or PROTO_ERROR), CH_EINTERNAL
 * for a reply of the wrong type, or 0 when f is a `type` frame. */
static int reply_check(int err, const struct proto_frame *f, uint8_t type)
{
    if (err == 0)
        err = frame_error(f);
    if (err == 0 && f->type != type)
        err = CH_EINTERNAL;
    return err;
}

/* The outcome of reading the account behind a valid token (USER_GET): 0 when it
 * is enabled, CH_EUSER_DISABLED, CH_EBAD_TOKEN when it does not exist (the token
 * was signed for no account), or the read's error. */
static int account_check(int err, const struct proto_frame *f)
{
    err = reply_check(err, f, PROTO_USER_GET_REPLY);
    if (err == 0) {
        struct ch_rbuf r;
        struct proto_user_get_reply m;
        ch_rbuf_init(&r, f->body.ptr, f->body.len);
        if (proto_decode_user_get_reply(&r, &m) != 0)
            err = CH_EINTERNAL;
        else if (m.disabled)
            err = CH_EUSER_DISABLED;
    }
    return err == CH_ENOUSER ? CH_EBAD_TOKEN : err;
}

/* The one result of a single-command SUBMIT, or an error code. */
static int submit_result(int err, const struct proto_frame *f, struct proto_result *res)
{
    if (err != 0)
        return err;
    if ((err = frame_error(f)) != 0)
        return err;
    if (f->type != PROTO_SUBMIT_REPLY)
        return CH_EINTERNAL;
    struct ch_rbuf r;
    ch_rbuf_init(&r, f->body.ptr, f->body.len);
    struct proto_submit_reply m;
    if (proto_decode_submit_reply(&r, &m) != 0 || m.n_results != 1 ||
        proto_get_result(&r, res) != 0)
        return CH_EINTERNAL;
    return res->err;
}

/* ---- sending commands ---------------------------------------------------------------- */

static int gw_call(struct gw *gw, uint32_t shard, const uint8_t *frame, size_t len, rpc_cb cb,
                   void *data)
{
    if (gw->stopped || gw->rpc == NULL)
        return CH_ESHUTDOWN;
    return rpc_call(gw->rpc, shard, frame, len, cb, data);
}

/* Encodes a one-command SUBMIT frame into out; 0 or CH_ENOMEM. */
static int encode_submit(struct ch_wbuf *out, const struct clog_cmd *cmd)
{
    struct ch_wbuf batch;
    ch_wbuf_init(&batch);
    clog_batch_add(&batch, cmd);
    struct proto_submit m = {.n_cmds = 1,
                             .cmds = {.ptr = batch.data, .len = batch.len}};
    proto_encode_submit(out, 0, &m);
    int rv = ch_wbuf_error(&batch) || ch_wbuf_error(out) ? CH_ENOMEM : 0;
    ch_wbuf_free(&batch);
    return rv;
}

static int submit(struct op *o, const struct clog_cmd *cmd, uint32_t shard, rpc_cb cb)
{
    struct ch_wbuf frame;
    ch_wbuf_init(&frame);
    int rv = encode_submit(&frame, cmd);
    if (rv == 0)
        rv = gw_call(o->gw, shard, frame.data, frame.len, cb, o);
    ch_wbuf_free(&frame);
    return rv;
}

static uint32_t conv_shard(const struct gw *gw, uint64_t conv)
{
    return cluster_shard_of_conv(conv, gw->cfg->n_shards);
}

static uint32_t user_shard(const struct gw *gw, const void *user, size_t len)
{
    return cluster_shard_of_user(user, len, gw->cfg->n_shards);
}

static struct ch_slice op_actor(const struct op *o)
{
    return (struct ch_slice){.ptr = (const uint8_t *)o->user, .len = o->user_len};
}

static int user_get_call(struct gw *gw, struct ch_slice user, uint8_t flags, rpc_cb cb,
                         void *data);
static void write_done(void *data, int err, const struct proto_frame *f);

/*
 * create / add_member name users that live on other shards, which the
 * conversation's state machine cannot see: the gateway reads each one (in
 * parallel) and refuses the write with not_found when one does not exist.
 */
struct user_check {
    struct op *o;
    char user[WIRE_MAX_USER + 1];
};

static void checked_users_done(struct op *o)
{
    if (o->err == CH_ENOUSER) {
        char msg[64 + WIRE_MAX_USER];
        snprintf(msg, sizeof msg, "no such user: %s", o->missing);
        op_error(o, CH_ENOUSER, msg);
        return;
    }
    if (o->err != 0) {
        op_error(o, o->err, NULL);
        return;
    }
    int rv = gw_call(o->gw, o->shard, o->frame.data, o->frame.len, write_done, o);
    if (rv != 0)
        op_error(o, rv, NULL);
}

static void user_checked(void *data, int err, const struct proto_frame *f)
{
    struct user_check *uc = data;
    struct op *o = uc->o;
    if (err == 0)
        err = frame_error(f);
    if (err == CH_ENOUSER && o->err == 0)
        snprintf(o->missing, sizeof o->missing, "%s", uc->user);
    if (err != 0 && o->err == 0)
        o->err = err;
    free(uc);
    if (--o->pending == 0)
        checked_users_done(o);
}

/* Submits cmd once every user in users[0..n) is known to exist (the actor is not
 * checked).  On return the op belongs to the callbacks. */
static void submit_checked(struct op *o, const struct clog_cmd *cmd, uint32_t shard,
                           const struct ch_slice *users, size_t n)
{
    o->shard = shard;
    int rv = encode_submit(&o->frame, cmd);
    if (rv != 0) {
        op_error(o, rv, NULL);
        return;
    }
    o->pending = 1; /* held until every check is issued */
    struct ch_slice me = op_actor(o);
    for (size_t i = 0; i < n && o->err == 0; i++) {
        if (ch_slice_eq(users[i], me))
            continue;
        struct user_check *uc = calloc(1, sizeof *uc);
        if (uc == NULL) {
            o->err = CH_ENOMEM;
            break;
        }
        uc->o = o;
        memcpy(uc->user, users[i].ptr, users[i].len < WIRE_MAX_USER ? users[i].len
                                                                   : WIRE_MAX_USER);
        o->pending++;
        rv = user_get_call(o->gw, users[i], 0, user_checked, uc);
        if (rv != 0) {
            o->pending--;
            free(uc);
            o->err = rv;
        }
    }
    if (--o->pending == 0)
        checked_users_done(o);
}

/* Write ops answered with {"conv","seq","ts","dup"}. */
static void write_done(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    struct proto_result res;
    memset(&res, 0, sizeof res);
    err = submit_result(err, f, &res);
    if (err != 0) {
        op_error(o, err, NULL);
        return;
    }
    ch_wbuf_reset(&o->acc);
    switch (o->op) {
    case WIRE_OP_RECEIPT:
        wire_put_raw(&o->acc, "{");
        wire_put_key(&o->acc, "dup");
        wire_put_bool(&o->acc, res.dup);
        wire_put_raw(&o->acc, "}");
        break;
    case WIRE_OP_SET_PROFILE:
    case WIRE_OP_SET_SETTINGS:
        wire_put_raw(&o->acc, "{}");
        break;
    default:
        wire_put_raw(&o->acc, "{");
        wire_put_key(&o->acc, "conv");
        wire_put_u64(&o->acc, res.conv ? res.conv : o->conv);
        wire_put_key(&o->acc, "seq");
        wire_put_u64(&o->acc, res.seq);
        wire_put_key(&o->acc, "ts");
        wire_put_u64(&o->acc, res.ts);
        wire_put_key(&o->acc, "dup");
        wire_put_bool(&o->acc, res.dup);
        wire_put_raw(&o->acc, "}");
        break;
    }
    o->gw->st.acks++;
    send_reply(o->gw, o->client, o->id, &o->acc);
    op_free(o);
}

/* Direct conversations get an id derived from both users (sorted), so both sides
 * name the same conversation; groups get a random one.  Both below 2^53. */
static uint64_t direct_conv_id(struct ch_slice a, struct ch_slice b)
{
    if (a.len > b.len || (a.len == b.len && memcmp(a.ptr, b.ptr, a.len) > 0)) {
        struct ch_slice t = a;
        a = b;
        b = t;
    }
    uint64_t h = ch_hash64(CH_HASH64_INIT, "direct", 6);
    h = ch_hash64(h, a.ptr, a.len);
    h = ch_hash64(h, "", 1);
    h = ch_hash64(h, b.ptr, b.len);
    h = ch_mix64(h) & WIRE_MAX_CONV;
    return h ? h : 1;
}

static uint64_t random_conv_id(void)
{
    uint64_t v = 0;
    if (uv_random(NULL, NULL, &v, sizeof v, 0, NULL) != 0)
        v = ch_mix64(wall_ms() ^ (uint64_t)(uintptr_t)&v);
    v &= WIRE_MAX_CONV;
    return v ? v : 1;
}

static void op_create(struct gw_client *c, const struct wire_request *req, struct op *o)
{
    struct ch_slice me = {.ptr = (const uint8_t *)c->user, .len = c->user_len};
    struct ch_wbuf members;
    ch_wbuf_init(&members);
    size_t begin = clog_members_begin(&members);
    uint32_t n = 0;
    for (size_t i = 0; i < req->n_users; i++) {
        uint8_t role = req->kind == CLOG_DIRECT ? CLOG_ROLE_MEMBER : CLOG_ROLE_MEMBER;
        clog_members_put(&members, req->users[i], role);
        n++;
    }
    if (req->kind == CLOG_DIRECT) {
        if (ch_slice_eq(req->users[0], me)) {
            ch_wbuf_free(&members);
            op_error(o, CH_EINVAL, "create: a direct conversation needs another user");
            return;
        }
        clog_members_put(&members, me, CLOG_ROLE_MEMBER);
        n++;
        o->conv = direct_conv_id(me, req->users[0]);
    } else {
        o->conv = random_conv_id();
    }
    clog_members_end(&members, begin, n);
    o->kind = req->kind;
    struct clog_cmd cmd = {.op = CLOG_OP_CREATE,
                           .kind = req->kind,
                           .conv = o->conv,
                           .actor = me,
                           .name = req->name,
                           .members = {.ptr = members.data, .len = members.len}};
    if (ch_wbuf_error(&members))
        op_error(o, CH_ENOMEM, NULL);
    else
        submit_checked(o, &cmd, conv_shard(c->gw, o->conv), req->users, req->n_users);
    ch_wbuf_free(&members);
}

/* ---- deliberate bug: deliver-uncommitted (CHORUS_BUGS) ------------------------------
 *
 * DELIBERATE BUG for the Jepsen suite (CHORUS_BUG=deliver-uncommitted).  The mistake:
 * "local members need not wait for the round trip through Raft": when a `send` is
 * submitted, the gateway hands fanout the message it expects the log to append -- the
 * next seq after the furthest local follower's cursor, the body, the sender -- as if
 * it had come from the committed stream, so it is encoded and pushed like a real
 * event and the followers' cursors move past it.  If the write never commits (a
 * shard without quorum), clients have seen a message that is in no history; and the
 * committed event that later takes that seq is dropped as a duplicate.
 */

struct bug_cursor {
    struct gw *gw;
    uint64_t conv;
    uint64_t max;
};

static void bug_max_cursor(void *arg, uint64_t conn, struct ch_slice user)
{
    struct bug_cursor *m = arg;
    uint64_t pushed = fan_cursor(m->gw->fan, conn, m->conv);
    (void)user;
    if (pushed > m->max)
        m->max = pushed;
}

static void bug_deliver_uncommitted(struct gw *gw, const struct clog_cmd *cmd)
{
    struct bug_cursor m = {.gw = gw, .conv = cmd->conv, .max = 0};
    fan_conv_conns(gw->fan, cmd->conv, bug_max_cursor, &m);
    if (m.max == 0)
        return; /* nobody here follows it */
    struct clog_event ev = {.type = CLOG_EV_MESSAGE,
                            .conv = cmd->conv,
                            .seq = m.max + 1,
                            .ts = wall_ms(),
                            .actor = cmd->actor,
                            .client_msg_id = cmd->client_msg_id,
                            .body = cmd->body};
    fan_event(gw->fan, &ev);
}

static void op_write(struct gw_client *c, const struct wire_request *req, struct op *o)
{
    struct clog_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.conv = req->conv;
    cmd.actor = op_actor(o);
    cmd.client_msg_id = req->client_msg_id;
    cmd.ref_seq = req->seq;
    cmd.body = req->body;
    o->conv = req->conv;
    switch (req->op) {
    case WIRE_OP_ADD_MEMBER:
        cmd.op = CLOG_OP_ADD_MEMBER;
        cmd.target = req->user;
        cmd.kind = req->kind ? req->kind : CLOG_ROLE_MEMBER;
        cmd.ref_seq = 0;
        break;
    case WIRE_OP_REMOVE_MEMBER:
        cmd.op = CLOG_OP_REMOVE_MEMBER;
        cmd.target = req->user;
        cmd.ref_seq = 0;
        break;
    case WIRE_OP_LEAVE:
        cmd.op = CLOG_OP_LEAVE;
        cmd.ref_seq = 0;
        break;
    case WIRE_OP_SEND:
        cmd.op = CLOG_OP_POST;
        cmd.ref_seq = 0;
        break;
    case WIRE_OP_EDIT:
        cmd.op = CLOG_OP_EDIT;
        break;
    case WIRE_OP_DELETE:
        cmd.op = CLOG_OP_DELETE;
        cmd.body = (struct ch_slice){0};
        break;
    case WIRE_OP_REACT:
        cmd.op = CLOG_OP_REACT;
        cmd.kind = req->flag ? CLOG_REACT_REMOVE : CLOG_REACT_ADD;
        break;
    case WIRE_OP_RECEIPT:
        cmd.op = CLOG_OP_CURSOR;
        cmd.kind = req->kind;
        cmd.client_msg_id = (struct ch_slice){0};
        break;
    default:
        op_error(o, CH_EINTERNAL, NULL);
        return;
    }
    if (cmd.op == CLOG_OP_ADD_MEMBER) {
        submit_checked(o, &cmd, conv_shard(o->gw, req->conv), &req->user, 1);
        return;
    }
    int rv = submit(o, &cmd, conv_shard(o->gw, req->conv), write_done);
    if (rv != 0) {
        op_error(o, rv, NULL);
        return;
    }
    if (ch_bug(CH_BUG_DELIVER_UNCOMMITTED) && cmd.op == CLOG_OP_POST) {
        /* DELIBERATE BUG (see above): pushed before it is committed. */
        bug_deliver_uncommitted(c->gw, &cmd);
    }
}

/* ---- reads ------------------------------------------------------------------------------ */

static void get_done(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    err = reply_check(err, f, PROTO_CONV_GET_REPLY);
    if (err != 0) {
        op_error(o, err, NULL);
        return;
    }
    struct ch_rbuf r;
    ch_rbuf_init(&r, f->body.ptr, f->body.len);
    struct proto_conv_get_reply m;
    if (proto_decode_conv_get_reply(&r, &m) != 0) {
        op_error(o, CH_EINTERNAL, NULL);
        return;
    }
    struct ch_wbuf *b = &o->acc;
    wire_put_raw(b, "{");
    wire_put_key(b, "conv");
    wire_put_u64(b, m.conv);
    wire_put_key(b, "kind");
    wire_put_string(b, wire_kind_name(m.kind), strlen(wire_kind_name(m.kind)));
    wire_put_key(b, "name");
    wire_put_string(b, m.name.ptr, m.name.len);
    wire_put_key(b, "created_by");
    wire_put_string(b, m.created_by.ptr, m.created_by.len);
    wire_put_key(b, "created_ts");
    wire_put_u64(b, m.created_ts);
    wire_put_key(b, "last_seq");
    wire_put_u64(b, m.last_seq);
    wire_put_key(b, "members");
    wire_put_raw(b, "[");
    int member = 0;
    for (uint32_t i = 0; i < m.n_members; i++) {
        struct proto_member pm;
        if (proto_get_member(&r, &pm) != 0)
            break;
        if (pm.user.len == o->user_len && memcmp(pm.user.ptr, o->user, o->user_len) == 0)
            member = 1;
        wire_put_raw(b, i ? ",{" : "{");
        wire_put_key(b, "user");
        wire_put_string(b, pm.user.ptr, pm.user.len);
        wire_put_key(b, "role");
        wire_put_string(b, wire_role_name(pm.role), strlen(wire_role_name(pm.role)));
        wire_put_key(b, "delivered");
        wire_put_u64(b, pm.delivered);
        wire_put_key(b, "read");
        wire_put_u64(b, pm.read);
        wire_put_raw(b, "}");
    }
    wire_put_raw(b, "]}");
    if (!member) {
        op_error(o, CH_ENOTMEMBER, NULL);
        return;
    }
    send_reply(o->gw, o->client, o->id, b);
    op_free(o);
}

static void op_get(const struct wire_request *req, struct op *o)
{
    struct ch_wbuf frame;
    ch_wbuf_init(&frame);
    struct proto_conv_get m = {.conv = req->conv, .flags = 0};
    proto_encode_conv_get(&frame, 0, &m);
    int rv = ch_wbuf_error(&frame) ? CH_ENOMEM
                                   : gw_call(o->gw, conv_shard(o->gw, req->conv),
                                              frame.data, frame.len, get_done, o);
    ch_wbuf_free(&frame);
    if (rv != 0)
        op_error(o, rv, NULL);
}

static void history_done(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    err = reply_check(err, f, PROTO_HISTORY_REPLY);
    if (err != 0) {
        op_error(o, err, NULL);
        return;
    }
    struct ch_rbuf r;
    ch_rbuf_init(&r, f->body.ptr, f->body.len);
    struct proto_history_reply m;
    if (proto_decode_history_reply(&r, &m) != 0) {
        op_error(o, CH_EINTERNAL, NULL);
        return;
    }
    struct ch_wbuf *b = &o->acc;
    wire_put_raw(b, "{");
    wire_put_key(b, "conv");
    wire_put_u64(b, m.conv);
    wire_put_key(b, "events");
    wire_put_raw(b, "[");
    for (uint32_t i = 0; i < m.n_events; i++) {
        struct clog_event ev;
        if (clog_event_decode(&r, &ev) != 0)
            break;
        if (i)
            wire_put_raw(b, ",");
        wire_event(b, &ev, 1);
    }
    wire_put_raw(b, "]");
    wire_put_key(b, "has_more");
    wire_put_bool(b, m.has_more);
    wire_put_key(b, "last_seq");
    wire_put_u64(b, m.last_seq);
    wire_put_raw(b, "}");
    send_reply(o->gw, o->client, o->id, b);
    op_free(o);
}

static int history_call(struct gw *gw, uint64_t conv, uint64_t after, uint64_t before,
                        uint32_t limit, struct ch_slice actor, rpc_cb cb, void *data)
{
    struct ch_wbuf frame;
    ch_wbuf_init(&frame);
    struct proto_history m = {.conv = conv,
                              .after = after,
                              .before = before,
                              .limit = limit,
                              .flags = 0,
                              .actor = actor};
    proto_encode_history(&frame, 0, &m);
    int rv = ch_wbuf_error(&frame)
                 ? CH_ENOMEM
                 : gw_call(gw, conv_shard(gw, conv), frame.data, frame.len, cb, data);
    ch_wbuf_free(&frame);
    return rv;
}

static void op_history(const struct wire_request *req, struct op *o)
{
    int rv = history_call(o->gw, req->conv, req->after, req->before,
                          req->limit ? req->limit : WIRE_DEFAULT_HISTORY, op_actor(o),
                          history_done, o);
    if (rv != 0)
        op_error(o, rv, NULL);
}

/* conversations: one USER_CONVS per shard, merged. */
static void convs_done(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    if (f == NULL && err == 0)
        goto count; /* op_conversations' own extra count */
    err = reply_check(err, f, PROTO_USER_CONVS_REPLY);
    if (err == 0) {
        struct ch_rbuf r;
        ch_rbuf_init(&r, f->body.ptr, f->body.len);
        struct proto_user_convs_reply m;
        if (proto_decode_user_convs_reply(&r, &m) != 0 || m.shard >= o->gw->cfg->n_shards) {
            err = CH_EINTERNAL;
        } else {
            struct gw_client *c = gw_client_find(o->gw, o->client);
            int session = o->op == WIRE_OP_AUTH && c != NULL && c->followed;
            struct fan_start *starts =
                session && m.n_convs ? calloc(m.n_convs, sizeof *starts) : NULL;
            if (session && m.n_convs && starts == NULL)
                err = CH_ENOMEM;
            uint32_t got = 0;
            for (uint32_t i = 0; i < m.n_convs; i++) {
                struct proto_user_conv uc;
                if (proto_get_user_conv(&r, &uc) != 0) {
                    err = CH_EINTERNAL;
                    break;
                }
                got++;
                struct ch_wbuf *b = &o->acc;
                wire_put_raw(b, o->count++ ? ",{" : "{");
                wire_put_key(b, "conv");
                wire_put_u64(b, uc.conv);
                wire_put_key(b, "kind");
                wire_put_string(b, wire_kind_name(uc.kind), strlen(wire_kind_name(uc.kind)));
                wire_put_key(b, "name");
                wire_put_string(b, uc.name.ptr, uc.name.len);
                wire_put_key(b, "last_seq");
                wire_put_u64(b, uc.last_seq);
                wire_put_key(b, "delivered");
                wire_put_u64(b, uc.delivered);
                wire_put_key(b, "read");
                wire_put_u64(b, uc.read);
                wire_put_key(b, "unread");
                wire_put_u64(b, uc.last_seq > uc.read ? uc.last_seq - uc.read : 0);
                wire_put_key(b, "members");
                wire_put_u64(b, uc.n_members);
                wire_put_raw(b, "}");
                if (starts != NULL)
                    starts[i] = (struct fan_start){.conv = uc.conv, .last_seq = uc.last_seq};
            }
            /* Session start: follow each conversation from its end as this answer
             * saw it (fanout.h explains the joins and replays in between). */
            if (session && err == 0) {
                const struct rpc_sub *sub = o->gw->subs ? o->gw->subs[m.shard] : NULL;
                int rv = fan_conn_shard_read(o->gw->fan, c->id, m.shard, m.applied_index,
                                             starts, got,
                                             sub ? rpc_sub_position(sub) : 0);
                if (rv != 0 && rv != CH_ENOTFOUND)
                    err = rv;
            }
            free(starts);
        }
    }
    if (err != 0 && o->err == 0)
        o->err = err;
count:
    if (--o->pending > 0)
        return;
    if (o->err != 0) {
        if (o->op == WIRE_OP_AUTH) {
            /* The session started but its follow set is incomplete: events of the
             * conversations on the failed shards would be missed.  Refuse the
             * session; the client reconnects and authenticates again. */
            struct gw_client *c = gw_client_find(o->gw, o->client);
            send_error(o->gw, o->client, o->id, o->err,
                       "cannot load your conversations right now: reconnect and retry", 0);
            if (c != NULL)
                gw_client_goodbye(c, ch_errcode(o->err),
                                  "the session could not start: reconnect and retry");
            op_free(o);
            return;
        }
        op_error(o, o->err, NULL);
        return;
    }
    if (o->login_reply.len > 0) {
        send_reply(o->gw, o->client, o->id, &o->login_reply);
        op_free(o);
        return;
    }
    struct ch_wbuf res;
    ch_wbuf_init(&res);
    if (o->op == WIRE_OP_AUTH) {
        wire_put_raw(&res, "{");
        wire_put_key(&res, "user");
        wire_put_string(&res, o->user, o->user_len);
        wire_put_key(&res, "expires");
        struct gw_client *c = gw_client_find(o->gw, o->client);
        wire_put_u64(&res, c ? c->token_exp : 0);
        wire_put_raw(&res, "}");
    } else {
        wire_put_raw(&res, "{\"conversations\":[");
        ch_put_raw(&res, o->acc.data, o->acc.len);
        wire_put_raw(&res, "]}");
    }
    send_reply(o->gw, o->client, o->id, &res);
    ch_wbuf_free(&res);
    op_free(o);
}

static void op_conversations(struct op *o)
{
    struct gw *gw = o->gw;
    o->pending = (int)gw->cfg->n_shards + 1; /* +1 until every call is issued */
    for (uint32_t s = 0; s < gw->cfg->n_shards; s++) {
        struct ch_wbuf frame;
        ch_wbuf_init(&frame);
        struct proto_user_convs m = {.user = op_actor(o), .shard = s, .flags = 0};
        proto_encode_user_convs(&frame, 0, &m);
        int rv = ch_wbuf_error(&frame)
                     ? CH_ENOMEM
                     : gw_call(gw, s, frame.data, frame.len, convs_done, o);
        ch_wbuf_free(&frame);
        if (rv != 0) {
            if (o->err == 0)
                o->err = rv;
            o->pending--;
        }
    }
    /* the extra count: finishes the op if every call already failed */
    convs_done(o, CH_OK, NULL);
}

/* ---- users ------------------------------------------------------------------------------- */

static int session_start(struct gw_client *c);

static void issue_token_reply(struct op *o)
{
    struct gw *gw = o->gw;
    char token[AUTH_MAX_TOKEN];
    uint64_t now = wall_ms() / 1000;
    char user[WIRE_MAX_USER + 1];
    memcpy(user, o->user, o->user_len);
    user[o->user_len] = 0;
    if (auth_token_issue((const uint8_t *)gw->cfg->auth.secret, strlen(gw->cfg->auth.secret),
                         user, now, gw->cfg->auth.token_ttl_s, token, sizeof token) != 0) {
        op_error(o, CH_EINTERNAL, NULL);
        return;
    }
    uint64_t exp = now + gw->cfg->auth.token_ttl_s;
    struct gw_client *c = gw_client_find(gw, o->client);
    if (c != NULL && !c->authed) {
        memcpy(c->user, o->user, o->user_len);
        c->user[o->user_len] = 0;
        c->user_len = o->user_len;
        c->token_exp = exp;
        c->authed = 1;
    }
    ch_wbuf_reset(&o->acc);
    wire_put_raw(&o->acc, "{");
    wire_put_key(&o->acc, "user");
    wire_put_string(&o->acc, o->user, o->user_len);
    wire_put_key(&o->acc, "token");
    wire_put_string(&o->acc, token, strlen(token));
    wire_put_key(&o->acc, "expires");
    wire_put_u64(&o->acc, exp);
    wire_put_raw(&o->acc, "}");
    /* On a WebSocket, register/login also authenticate the connection: start its
     * session and answer once the user's conversations are followed, so that every
     * event committed after the client has its answer is pushed to it. */
    c = gw_client_find(gw, o->client);
    int rv = 0;
    if (c != NULL && c->authed && !c->http && !c->followed &&
        (rv = session_start(c)) != 0) {
        c->authed = 0; /* no session: the client must retry, not carry on unfollowed */
        op_error(o, rv, rv == CH_EUNAVAILABLE ? GW_STARTING_MSG
                                              : NULL);
        return;
    }
    if (c != NULL && c->authed && !c->http && c->followed) {
        o->op = WIRE_OP_AUTH;
        struct ch_wbuf t = o->login_reply;
        o->login_reply = o->acc;
        o->acc = t;
        ch_wbuf_reset(&o->acc);
        op_conversations(o);
        return;
    }
    send_reply(gw, o->client, o->id, &o->acc);
    op_free(o);
}

static void register_created(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    struct proto_result res;
    err = submit_result(err, f, &res);
    if (err != 0) {
        op_error(o, err, err == CH_EEXISTS ? "user name is taken" : NULL);
        return;
    }
    issue_token_reply(o);
}

static void kdf_work(uv_work_t *w)
{
    struct op *o = w->data;
    struct auth_kdf kdf;
    auth_kdf_default(&kdf);
    kdf.n = 1ull << o->gw->cfg->auth.scrypt_log2_n;
    if (o->op == WIRE_OP_REGISTER)
        o->work_rv = auth_password_hash(o->password, o->password_len, o->salt, &kdf, o->record,
                                        sizeof o->record);
    else
        o->work_rv = auth_password_verify(o->password, o->password_len, o->record);
}

static void register_hashed(uv_work_t *w, int status)
{
    struct op *o = w->data;
    memset(o->password, 0, sizeof o->password);
    if (status != 0 || o->work_rv != 0) {
        op_error(o, status != 0 ? CH_ESHUTDOWN : o->work_rv, NULL);
        return;
    }
    struct clog_cmd cmd = {.op = CLOG_OP_USER_CREATE,
                           .actor = op_actor(o),
                           .body = ch_slice_str(o->record),
                           .name = ch_slice_str(o->display_name)};
    int rv = submit(o, &cmd, user_shard(o->gw, o->user, o->user_len), register_created);
    if (rv != 0)
        op_error(o, rv, NULL);
}

static void login_verified(uv_work_t *w, int status)
{
    struct op *o = w->data;
    memset(o->password, 0, sizeof o->password);
    if (status != 0) {
        op_error(o, CH_ESHUTDOWN, NULL);
        return;
    }
    if (o->work_rv != 0) {
        o->gw->st.auth_failures++;
        op_error(o, CH_EBAD_PASSWORD, NULL);
        return;
    }
    issue_token_reply(o);
}

static void login_fetched(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    if (err == 0)
        err = frame_error(f);
    if (err == CH_ENOUSER) {
        /* same answer as a wrong password: do not reveal which user names exist */
        o->gw->st.auth_failures++;
        op_error(o, CH_EBAD_PASSWORD, NULL);
        return;
    }
    if (err == 0 && f->type != PROTO_USER_GET_REPLY)
        err = CH_EINTERNAL;
    struct proto_user_get_reply m;
    if (err == 0) {
        struct ch_rbuf r;
        ch_rbuf_init(&r, f->body.ptr, f->body.len);
        if (proto_decode_user_get_reply(&r, &m) != 0 ||
            m.password_record.len >= sizeof o->record)
            err = CH_EINTERNAL;
    }
    if (err != 0) {
        op_error(o, err, NULL);
        return;
    }
    if (m.disabled) {
        op_error(o, CH_EUSER_DISABLED, NULL);
        return;
    }
    memcpy(o->record, m.password_record.ptr, m.password_record.len);
    o->record[m.password_record.len] = 0;
    o->work.data = o;
    if (uv_queue_work(o->gw->loop, &o->work, kdf_work, login_verified) != 0)
        op_error(o, CH_EINTERNAL, NULL);
}

static int user_get_call(struct gw *gw, struct ch_slice user, uint8_t flags, rpc_cb cb,
                         void *data)
{
    struct ch_wbuf frame;
    ch_wbuf_init(&frame);
    struct proto_user_get m = {.user = user, .flags = flags};
    proto_encode_user_get(&frame, 0, &m);
    int rv = ch_wbuf_error(&frame) ? CH_ENOMEM
                                   : gw_call(gw, user_shard(gw, user.ptr, user.len),
                                              frame.data, frame.len, cb, data);
    ch_wbuf_free(&frame);
    return rv;
}

/*
 * A session may start only once every shard's stream has a definite position:
 * its membership reads are compared with the stream, and entries that went by
 * before the stream started would be lost to it.
 */
static int streams_started(const struct gw *gw)
{
    if (gw->subs == NULL)
        return 0;
    for (uint32_t s = 0; s < gw->cfg->n_shards; s++)
        if (gw->subs[s] == NULL || !rpc_sub_started(gw->subs[s]))
            return 0;
    return 1;
}

/* The login bucket of a source address, created on first use; NULL on OOM. */
static struct gw_addr *gw_addr_get(struct gw *gw, const char *addr)
{
    size_t len = strlen(addr);
    struct gw_addr *a = ch_map_get(&gw->addrs, addr, len);
    uint64_t now = uv_now(gw->loop);
    if (a == NULL) {
        a = calloc(1, sizeof *a + len);
        if (a == NULL)
            return NULL;
        a->len = (uint16_t)len;
        memcpy(a->name, addr, len);
        const struct cluster_rate *r = &gw->cfg->gateway.rate;
        sess_bucket_init(&a->login, r->login_per_s, r->login_burst, now);
        if (ch_map_put(&gw->addrs, a->name, a->len, a) != 0) {
            free(a);
            return NULL;
        }
    }
    a->idle_since = now;
    return a;
}

static void op_register_login(struct gw_client *c, const struct wire_request *req,
                              struct op *o)
{
    uint64_t retry = 0, now = uv_now(c->gw->loop);
    if (!c->http && !streams_started(c->gw)) {
        /* refuse before doing anything: a register answered "unavailable" after
         * creating the account would make the client's retry a conflict */
        op_error(o, CH_EUNAVAILABLE, GW_STARTING_MSG);
        return;
    }
    struct gw_addr *a = gw_addr_get(c->gw, c->peer);
    /* per connection (a client looping on one socket) and per source address (one
     * that opens a socket per attempt, or uses REST) */
    if (sess_bucket_take(&c->login_bucket, now, &retry) != 0 ||
        (a != NULL && sess_bucket_take(&a->login, now, &retry) != 0)) {
        c->gw->st.rate_limited++;
        send_error(c->gw, c->id, req->id, CH_ERATELIMITED, NULL, retry);
        op_free(o);
        return;
    }
    memcpy(o->user, req->user.ptr, req->user.len);
    o->user_len = req->user.len;
    o->user[o->user_len] = 0;
    memcpy(o->password, req->password.ptr, req->password.len);
    o->password_len = req->password.len;
    o->password[o->password_len] = 0;
    if (req->op == WIRE_OP_REGISTER) {
        size_t n = req->display_name.len < WIRE_MAX_DISPLAY_NAME ? req->display_name.len
                                                                  : WIRE_MAX_DISPLAY_NAME;
        if (n > 0) /* an absent field is a NULL slice */
            memcpy(o->display_name, req->display_name.ptr, n);
        o->display_name[n] = 0;
        if (uv_random(NULL, NULL, o->salt, sizeof o->salt, 0, NULL) != 0) {
            op_error(o, CH_EINTERNAL, NULL);
            return;
        }
        o->work.data = o;
        if (uv_queue_work(c->gw->loop, &o->work, kdf_work, register_hashed) != 0)
            op_error(o, CH_EINTERNAL, NULL);
        return;
    }
    int rv = user_get_call(c->gw, op_actor(o), 0, login_fetched, o);
    if (rv != 0)
        op_error(o, rv, NULL);
}

static void profile_done(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    err = reply_check(err, f, PROTO_USER_GET_REPLY);
    struct proto_user_get_reply m;
    if (err == 0) {
        struct ch_rbuf r;
        ch_rbuf_init(&r, f->body.ptr, f->body.len);
        if (proto_decode_user_get_reply(&r, &m) != 0)
            err = CH_EINTERNAL;
    }
    if (err != 0) {
        op_error(o, err, NULL);
        return;
    }
    struct ch_wbuf *b = &o->acc;
    if (o->op == WIRE_OP_SETTINGS) {
        wire_put_raw(b, "{\"settings\":");
        if (m.settings.len == 0)
            wire_put_raw(b, "{}");
        else
            ch_put_raw(b, m.settings.ptr, m.settings.len); /* stored re-encoded by wire.c */
        wire_put_raw(b, "}");
    } else {
        wire_put_raw(b, "{");
        wire_put_key(b, "user");
        wire_put_string(b, m.user.ptr, m.user.len);
        wire_put_key(b, "display_name");
        if (m.display_name.len)
            wire_put_string(b, m.display_name.ptr, m.display_name.len);
        else
            wire_put_string(b, m.user.ptr, m.user.len);
        wire_put_key(b, "status");
        wire_put_string(b, m.status.ptr, m.status.len);
        wire_put_key(b, "created_ts");
        wire_put_u64(b, m.created_ts);
        wire_put_key(b, "last_seen");
        wire_put_u64(b, m.last_seen);
        wire_put_raw(b, "}");
    }
    send_reply(o->gw, o->client, o->id, b);
    op_free(o);
}

/* set_profile may change two fields: two commands in a row; the reply follows the
 * last one (each is idempotent, so a retry of both is harmless). */
static void set_profile_step(void *data, int err, const struct proto_frame *f);

static int set_profile_next(struct op *o, const char *display_name, size_t dn_len,
                            const char *status, size_t st_len, int which)
{
    struct clog_cmd cmd = {.op = CLOG_OP_USER_UPDATE, .actor = op_actor(o)};
    if (which == CLOG_USER_DISPLAY_NAME) {
        cmd.kind = CLOG_USER_DISPLAY_NAME;
        cmd.name = (struct ch_slice){.ptr = (const uint8_t *)display_name, .len = dn_len};
    } else {
        cmd.kind = CLOG_USER_STATUS;
        cmd.body = (struct ch_slice){.ptr = (const uint8_t *)status, .len = st_len};
    }
    return submit(o, &cmd, user_shard(o->gw, o->user, o->user_len), set_profile_step);
}

static void set_profile_step(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    struct proto_result res;
    err = submit_result(err, f, &res);
    if (err != 0) {
        op_error(o, err, NULL);
        return;
    }
    if (o->pending > 0) {
        /* the status is still to be written: it was parked in record */
        o->pending = 0;
        int rv = set_profile_next(o, NULL, 0, o->record, strlen(o->record), CLOG_USER_STATUS);
        if (rv != 0)
            op_error(o, rv, NULL);
        return;
    }
    send_reply(o->gw, o->client, o->id, NULL);
    op_free(o);
}

static void op_set_profile(const struct wire_request *req, struct op *o)
{
    int rv;
    if (req->has_status) {
        size_t n = req->status.len < sizeof o->record - 1 ? req->status.len
                                                          : sizeof o->record - 1;
        memcpy(o->record, req->status.ptr, n);
        o->record[n] = 0;
    }
    if (req->has_display_name) {
        o->pending = req->has_status;
        rv = set_profile_next(o, (const char *)req->display_name.ptr, req->display_name.len,
                              NULL, 0, CLOG_USER_DISPLAY_NAME);
    } else {
        rv = set_profile_next(o, NULL, 0, o->record, strlen(o->record), CLOG_USER_STATUS);
    }
    if (rv != 0)
        op_error(o, rv, NULL);
}

static void op_set_settings(const struct wire_request *req, struct op *o)
{
    struct clog_cmd cmd = {.op = CLOG_OP_USER_UPDATE,
                           .kind = CLOG_USER_SETTINGS,
                           .actor = op_actor(o),
                           .body = {.ptr = (const uint8_t *)req->settings,
                                    .len = req->settings_len}};
    int rv = submit(o, &cmd, user_shard(o->gw, o->user, o->user_len), write_done);
    if (rv != 0)
        op_error(o, rv, NULL);
}

/* ---- presence ---------------------------------------------------------------------------- */

static uint32_t node_index(const struct gw *gw, uint32_t node)
{
    for (uint32_t i = 0; i < gw->cfg->n_nodes && i < 64; i++)
        if (gw->cfg->nodes[i].id == node)
            return i;
    return 64;
}

static int user_online(struct gw *gw, const char *user, size_t len, uint64_t *last_seen)
{
    struct gw_user *u = ch_map_get(&gw->users, user, len);
    struct rpres *p = ch_map_get(&gw->presence, user, len);
    *last_seen = p ? p->last_seen : 0;
    return (u != NULL && u->conns > 0) || (p != NULL && p->nodes != 0);
}

static void put_presence(struct ch_wbuf *b, const char *user, size_t len, int online,
                         uint64_t last_seen)
{
    wire_put_raw(b, "{");
    wire_put_key(b, "user");
    wire_put_string(b, user, len);
    wire_put_key(b, "online");
    wire_put_bool(b, online);
    wire_put_key(b, "last_seen");
    wire_put_u64(b, last_seen);
    wire_put_raw(b, "}");
}

/* Tells every connection watching `user` its current state. */
static void presence_changed(struct gw *gw, const char *user, size_t len)
{
    struct watch *w = ch_map_get(&gw->watchers, user, len);
    if (w == NULL || w->n == 0)
        return;
    uint64_t last_seen;
    int online = user_online(gw, user, len, &last_seen);
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_put_raw(&b, "{\"type\":\"presence\",\"user\":");
    wire_put_string(&b, user, len);
    wire_put_key(&b, "online");
    wire_put_bool(&b, online);
    wire_put_key(&b, "last_seen");
    wire_put_u64(&b, last_seen);
    wire_put_raw(&b, "}");
    struct fan_msg *m = ch_wbuf_error(&b) ? NULL : fan_msg_new((uint32_t)gw->headroom, b.data, b.len);
    ch_wbuf_free(&b);
    if (m == NULL)
        return;
    for (uint32_t i = 0; i < w->n; i++) {
        struct gw_client *c = gw_client_find(gw, w->conns[i]);
        if (c != NULL && gw_client_push(c, m) != 0)
            gw_client_goodbye(c, "slow_consumer", "the connection fell too far behind");
    }
    fan_msg_unref(m);
}

static void publish(struct gw *gw, uint8_t kind, uint8_t state, uint64_t conv,
                    const char *user, size_t len, uint64_t ts)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_publish m = {.kind = kind,
                              .state = state,
                              .origin = gw->node_id,
                              .conv = conv,
                              .ts = ts,
                              .user = {.ptr = (const uint8_t *)user, .len = len}};
    proto_encode_publish(&b, 0, &m);
    if (!ch_wbuf_error(&b))
        rpc_publish(gw->rpc, b.data, b.len);
    ch_wbuf_free(&b);
}

static void last_seen_done(void *data, int err, const struct proto_frame *f)
{
    (void)err;
    (void)f;
    op_free(data);
}

/* A local user's first connection opened or last one closed. */
static void local_presence(struct gw *gw, struct gw_user *u, int online)
{
    uint64_t now = wall_ms();
    if (!online) {
        struct rpres *p = ch_map_get(&gw->presence, u->name, u->len);
        if (p != NULL)
            p->last_seen = now;
        /* remember last_seen in the user's record (best effort, idempotent) */
        struct op *o = calloc(1, sizeof *o);
        if (o != NULL) {
            o->gw = gw;
            ch_wbuf_init(&o->acc);
            memcpy(o->user, u->name, u->len);
            o->user_len = u->len;
            struct clog_cmd cmd = {.op = CLOG_OP_USER_UPDATE,
                                   .kind = CLOG_USER_LAST_SEEN,
                                   .actor = op_actor(o),
                                   .ref_seq = now};
            if (submit(o, &cmd, user_shard(gw, u->name, u->len), last_seen_done) != 0)
                op_free(o);
        }
    }
    publish(gw, PROTO_PUBLISH_PRESENCE, (uint8_t)online, 0, u->name, u->len, now);
    presence_changed(gw, u->name, u->len);
}

static void remote_presence(struct gw *gw, const struct proto_publish *m)
{
    uint32_t idx = node_index(gw, m->origin);
    if (idx >= 64 || m->user.len == 0 || m->user.len > WIRE_MAX_USER)
        return;
    struct rpres *p = ch_map_get(&gw->presence, m->user.ptr, m->user.len);
    if (p == NULL) {
        if (!m->state)
            return;
        p = calloc(1, sizeof *p + m->user.len);
        if (p == NULL)
            return;
        p->len = (uint16_t)m->user.len;
        memcpy(p->name, m->user.ptr, m->user.len);
        if (ch_map_put(&gw->presence, p->name, p->len, p) != 0) {
            free(p);
            return;
        }
    }
    uint64_t before = p->nodes;
    uint64_t last;
    int was = user_online(gw, p->name, p->len, &last);
    if (m->state) {
        p->nodes |= 1ull << idx;
        p->seen[idx] = uv_now(gw->loop);
    } else {
        p->nodes &= ~(1ull << idx);
        p->last_seen = m->ts > p->last_seen ? m->ts : p->last_seen;
    }
    int now_online = user_online(gw, p->name, p->len, &last);
    if (was != now_online || (before != p->nodes && !now_online))
        presence_changed(gw, p->name, p->len);
}

static void op_presence(struct gw_client *c, const struct wire_request *req, struct op *o)
{
    struct gw *gw = c->gw;
    struct ch_wbuf *b = &o->acc;
    wire_put_raw(b, "{\"presence\":[");
    for (size_t i = 0; i < req->n_users; i++) {
        struct ch_slice u = req->users[i];
        uint64_t last_seen;
        int online = user_online(gw, (const char *)u.ptr, u.len, &last_seen);
        if (i)
            wire_put_raw(b, ",");
        put_presence(b, (const char *)u.ptr, u.len, online, last_seen);
        if (c->http)
            continue;
        /* subscribe this connection to the user's changes */
        struct watch *w = ch_map_get(&gw->watchers, u.ptr, u.len);
        if (w == NULL) {
            w = calloc(1, sizeof *w + u.len);
            if (w == NULL)
                continue;
            w->len = (uint16_t)u.len;
            memcpy(w->name, u.ptr, u.len);
            if (ch_map_put(&gw->watchers, w->name, w->len, w) != 0) {
                free(w);
                continue;
            }
        }
        int have = 0;
        for (uint32_t k = 0; k < w->n; k++)
            have |= w->conns[k] == c->id;
        if (have)
            continue;
        if (w->n == w->cap) {
            uint32_t cap = w->cap ? w->cap * 2 : 4;
            uint64_t *v = realloc(w->conns, cap * sizeof *v);
            if (v == NULL)
                continue;
            w->conns = v;
            w->cap = cap;
        }
        w->conns[w->n++] = c->id;
    }
    wire_put_raw(b, "]}");
    send_reply(gw, o->client, o->id, b);
    op_free(o);
}

/* ---- typing ------------------------------------------------------------------------------ */

struct typing_ctx {
    struct gw *gw;
    struct fan_msg *m;
    struct ch_slice user;
};

static void typing_to(void *arg, uint64_t conn, struct ch_slice user)
{
    struct typing_ctx *t = arg;
    if (ch_slice_eq(user, t->user))
        return; /* not to the typist's own devices */
    struct gw_client *c = gw_client_find(t->gw, conn);
    if (c != NULL && gw_client_push(c, t->m) != 0)
        gw_client_goodbye(c, "slow_consumer", "the connection fell too far behind");
}

static void deliver_typing(struct gw *gw, uint64_t conv, struct ch_slice user, int state)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_put_raw(&b, "{\"type\":\"typing\",\"conv\":");
    wire_put_u64(&b, conv);
    wire_put_key(&b, "user");
    wire_put_string(&b, user.ptr, user.len);
    wire_put_key(&b, "state");
    wire_put_bool(&b, state);
    wire_put_raw(&b, "}");
    struct typing_ctx t = {.gw = gw, .user = user};
    t.m = ch_wbuf_error(&b) ? NULL : fan_msg_new((uint32_t)gw->headroom, b.data, b.len);
    ch_wbuf_free(&b);
    if (t.m == NULL)
        return;
    fan_conv_conns(gw->fan, conv, typing_to, &t);
    fan_msg_unref(t.m);
}

static void op_typing(struct gw_client *c, const struct wire_request *req, struct op *o)
{
    struct gw *gw = c->gw;
    if (!fan_follows(gw->fan, c->id, req->conv)) {
        op_error(o, CH_ENOTMEMBER, NULL);
        return;
    }
    struct gw_user *u = ch_map_get(&gw->users, c->user, c->user_len);
    uint64_t retry = 0;
    if (u != NULL && sess_bucket_take(&u->typing, uv_now(gw->loop), &retry) != 0) {
        gw->st.rate_limited++;
        send_error(gw, c->id, req->id, CH_ERATELIMITED, NULL, retry);
        op_free(o);
        return;
    }
    struct ch_slice me = {.ptr = (const uint8_t *)c->user, .len = c->user_len};
    deliver_typing(gw, req->conv, me, req->flag);
    publish(gw, PROTO_PUBLISH_TYPING, req->flag, req->conv, c->user, c->user_len, wall_ms());
    send_reply(gw, c->id, req->id, NULL);
    op_free(o);
}

void gw_on_publish(void *data, const struct proto_publish *m)
{
    struct gw *gw = data;
    if (gw->stopped || m->origin == gw->node_id)
        return;
    if (m->kind == PROTO_PUBLISH_TYPING) {
        if (m->user.len > 0 && m->user.len <= WIRE_MAX_USER)
            deliver_typing(gw, m->conv, m->user, m->state != 0);
    } else if (m->kind == PROTO_PUBLISH_PRESENCE) {
        remote_presence(gw, m);
    }
}

/* ---- authentication and sessions ---------------------------------------------------------- */

static int verify_token(struct gw_client *c, const char *token, size_t len)
{
    struct gw *gw = c->gw;
    char user[AUTH_MAX_USER + 1];
    uint64_t exp = 0;
    int rv = auth_token_verify((const uint8_t *)gw->cfg->auth.secret,
                               strlen(gw->cfg->auth.secret), token, len, wall_ms() / 1000,
                               user, &exp);
    if (rv != 0) {
        gw->st.auth_failures++;
        return rv;
    }
    size_t n = strlen(user);
    if (!wire_user_valid(user, n)) {
        gw->st.auth_failures++;
        return CH_EBAD_TOKEN;
    }
    memcpy(c->user, user, n + 1);
    c->user_len = n;
    c->token_exp = exp;
    c->authed = 1;
    return 0;
}

int gw_auth_token(struct gw_client *c, const char *token, size_t len)
{
    return verify_token(c, token, len);
}

/* The user's state on this gateway, created on first use; NULL on OOM. */
static struct gw_user *gw_user_get(struct gw *gw, const char *name, size_t len)
{
    struct gw_user *u = ch_map_get(&gw->users, name, len);
    uint64_t now = uv_now(gw->loop);
    if (u == NULL) {
        u = calloc(1, sizeof *u + len);
        if (u == NULL)
            return NULL;
        u->len = (uint16_t)len;
        memcpy(u->name, name, len);
        const struct cluster_rate *r = &gw->cfg->gateway.rate;
        sess_bucket_init(&u->send, r->send_per_s, r->send_burst, now);
        sess_bucket_init(&u->typing, r->typing_per_s, r->typing_burst, now);
        if (ch_map_put(&gw->users, u->name, u->len, u) != 0) {
            free(u);
            return NULL;
        }
    }
    if (u->conns == 0)
        u->idle_since = now;
    return u;
}

/* A WebSocket client became authenticated: fanout and presence learn about it. */
static int session_start(struct gw_client *c)
{
    struct gw *gw = c->gw;
    if (c->http || c->followed)
        return 0;
    if (!streams_started(gw))
        return CH_EUNAVAILABLE;
    int rv = fan_conn_add(gw->fan, c->id, c->user, c->user_len);
    if (rv == 0 && (rv = fan_conn_loading(gw->fan, c->id, gw->cfg->n_shards)) != 0)
        fan_conn_remove(gw->fan, c->id);
    if (rv != 0)
        return rv;
    c->followed = 1;
    struct gw_user *u = gw_user_get(gw, c->user, c->user_len);
    if (u == NULL)
        return CH_ENOMEM;
    if (u->conns++ == 0)
        local_presence(gw, u, 1);
    return 0;
}

/* auth, step 2: the token was good; the account must still be enabled. */
static void auth_user_checked(void *data, int err, const struct proto_frame *f)
{
    struct op *o = data;
    struct gw_client *c = gw_client_find(o->gw, o->client);
    err = account_check(err, f);
    if (c == NULL) {
        op_free(o);
        return;
    }
    if (err != 0) {
        c->user_len = 0; /* not authenticated, and no auth in progress */
        c->user[0] = 0;
    }
    if (err == 0) {
        c->authed = 1;
        if ((err = session_start(c)) != 0)
            c->authed = 0;
    }
    if (err != 0) {
        if (err == CH_EUSER_DISABLED || err == CH_EBAD_TOKEN)
            o->gw->st.auth_failures++;
        op_error(o, err, err == CH_EUNAVAILABLE ? GW_STARTING_MSG
                                                : NULL);
        return;
    }
    op_conversations(o); /* follows every conversation, then replies */
}

static void op_auth(struct gw_client *c, const struct wire_request *req, struct op *o)
{
    if (c->authed || c->user_len > 0) {
        op_error(o, CH_EINVAL, c->authed ? "auth: this connection is already authenticated"
                                         : "auth: an authentication is in progress");
        return;
    }
    int rv = verify_token(c, (const char *)req->token.ptr, req->token.len);
    if (rv != 0) {
        op_error(o, rv, NULL);
        return;
    }
    /* A token outlives a `user disable`: read the account (linearizably) before the
     * session starts; until then the connection is not authenticated. */
    c->authed = 0;
    memcpy(o->user, c->user, c->user_len);
    o->user_len = c->user_len;
    rv = user_get_call(c->gw, op_actor(o), 0, auth_user_checked, o);
    if (rv != 0)
        op_error(o, rv, NULL);
}

void gw_client_gone(struct gw_client *c)
{
    struct gw *gw = c->gw;
    for (struct gw_sync *s = c->syncs, *next; s != NULL; s = next) {
        next = s->next;
        free(s->convs);
        free(s);
    }
    c->syncs = NULL;
    if (!c->followed)
        return;
    c->followed = 0;
    fan_conn_remove(gw->fan, c->id);
    if (gw->stopped)
        return; /* shutting down: no presence changes, no last-seen writes */
    /* drop its presence watches */
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&gw->watchers, &it, &slot)) {
        struct watch *w = slot->val;
        for (uint32_t i = 0; i < w->n; i++) {
            if (w->conns[i] == c->id) {
                w->conns[i] = w->conns[--w->n];
                break;
            }
        }
    }
    struct gw_user *u = ch_map_get(&gw->users, c->user, c->user_len);
    if (u != NULL && u->conns > 0 && --u->conns == 0) {
        local_presence(gw, u, 0);
        u->idle_since = uv_now(gw->loop); /* kept for its buckets; the tick frees it */
    }
}

/* ---- sync -------------------------------------------------------------------------------- */

static void sync_conv_done(struct gw *gw, struct gw_client *c, uint64_t conv)
{
    for (struct gw_sync **p = &c->syncs; *p != NULL;) {
        struct gw_sync *s = *p;
        for (uint32_t i = 0; i < s->n; i++) {
            if (s->convs[i] == conv) {
                s->convs[i] = 0;
                s->left--;
            }
        }
        if (s->left == 0) {
            struct ch_wbuf b;
            ch_wbuf_init(&b);
            wire_put_raw(&b, "{");
            wire_put_key(&b, "synced");
            wire_put_u64(&b, s->n);
            wire_put_raw(&b, "}");
            send_reply(gw, c->id, s->id, &b);
            ch_wbuf_free(&b);
            *p = s->next;
            free(s->convs);
            free(s);
            continue;
        }
        p = &s->next;
    }
}

static void op_sync(struct gw_client *c, const struct wire_request *req, struct op *o)
{
    struct gw *gw = c->gw;
    struct gw_sync *s = calloc(1, sizeof *s);
    if (s == NULL || (req->n_cursors > 0 &&
                      (s->convs = calloc(req->n_cursors, sizeof *s->convs)) == NULL)) {
        free(s);
        op_error(o, CH_ENOMEM, NULL);
        return;
    }
    snprintf(s->id, sizeof s->id, "%s", req->id);
    s->n = (uint32_t)req->n_cursors;
    for (size_t i = 0; i < req->n_cursors; i++) {
        uint64_t conv = req->cursors[i].conv;
        if (!fan_follows(gw->fan, c->id, conv))
            continue; /* not a member (as far as this gateway knows): nothing to send */
        s->convs[i] = conv;
        s->left++;
    }
    op_free(o);
    if (s->left == 0) {
        struct ch_wbuf b;
        ch_wbuf_init(&b);
        wire_put_raw(&b, "{\"synced\":0}");
        send_reply(gw, c->id, s->id, &b);
        ch_wbuf_free(&b);
        free(s->convs);
        free(s);
        return;
    }
    s->next = c->syncs;
    c->syncs = s;
    uint64_t id = c->id;
    for (size_t i = 0; i < req->n_cursors; i++) {
        if (s->convs[i] == 0)
            continue;
        fan_follow(gw->fan, id, req->cursors[i].conv, req->cursors[i].seq, 0,
                   FAN_RESET | FAN_READ);
        if (gw_client_find(gw, id) == NULL)
            return;
    }
}

/* ---- fanout glue ---------------------------------------------------------------------------- */

struct fetch_ctx {
    struct gw *gw;
    uint64_t conn;
    uint64_t conv;
};

static void fetch_done(void *data, int err, const struct proto_frame *f)
{
    struct fetch_ctx *x = data;
    struct gw *gw = x->gw;
    err = reply_check(err, f, PROTO_HISTORY_REPLY);
    struct gw_client *c = gw->stopped ? NULL : gw_client_find(gw, x->conn);
    if (c == NULL || !c->followed) {
        free(x);
        return;
    }
    if (err != 0) {
        fan_fetch_failed(gw->fan, x->conn, x->conv);
        free(x);
        return;
    }
    struct ch_rbuf r;
    ch_rbuf_init(&r, f->body.ptr, f->body.len);
    struct proto_history_reply m;
    if (proto_decode_history_reply(&r, &m) != 0) {
        fan_fetch_failed(gw->fan, x->conn, x->conv);
        free(x);
        return;
    }
    int done = fan_fetched(gw->fan, x->conn, x->conv, r.p, r.left,
                           m.n_events, m.has_more, m.last_seq);
    c = gw_client_find(gw, x->conn);
    if (done && c != NULL)
        sync_conv_done(gw, c, x->conv);
    free(x);
}

static void fan_fetch_cb(void *data, uint64_t conn, uint64_t conv, uint64_t after)
{
    struct gw *gw = data;
    struct fetch_ctx *x = malloc(sizeof *x);
    if (x == NULL) {
        fan_fetch_failed(gw->fan, conn, conv);
        return;
    }
    x->gw = gw;
    x->conn = conn;
    x->conv = conv;
    if (history_call(gw, conv, after, 0, GW_FETCH_LIMIT, (struct ch_slice){0}, fetch_done,
                     x) != 0) {
        free(x);
        fan_fetch_failed(gw->fan, conn, conv);
    }
}

static int fan_push_cb(void *data, uint64_t conn, struct fan_msg *m)
{
    struct gw *gw = data;
    struct gw_client *c = gw_client_find(gw, conn);
    if (c == NULL)
        return 0;
    gw->st.pushes++;
    return gw_client_push(c, m);
}

/* Catch-up events are queued while the queue is under half full (fanout.h). */
static int fan_room_cb(void *data, uint64_t conn)
{
    struct gw *gw = data;
    struct gw_client *c = gw_client_find(gw, conn);
    return c != NULL && !c->closing && c->q.bytes < c->q.max_bytes / 2;
}

void gw_client_drained(struct gw_client *c)
{
    if (c->followed && !c->closing && c->q.bytes < c->q.max_bytes / 2)
        fan_resume(c->gw->fan, c->id);
}

static void fan_overflow_cb(void *data, uint64_t conn)
{
    struct gw *gw = data;
    struct gw_client *c = gw_client_find(gw, conn);
    if (c == NULL)
        return;
    gw->st.slow_consumers++;
    gw_client_goodbye(c, "slow_consumer",
                      "the connection fell too far behind; reconnect and sync");
}

/* A user's account was disabled (a committed USER_UPDATE): its open WebSockets
 * end now, as new ones and REST calls with its token are refused. */
static void disconnect_user(struct gw *gw, struct ch_slice user)
{
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&gw->clients, &it, &slot)) {
        struct gw_client *c = slot->val;
        if (c->http || !c->authed || c->closing || c->user_len != user.len ||
            memcmp(c->user, user.ptr, user.len) != 0)
            continue;
        CH_INFO(-1, "gateway: closing a session of disabled user %.*s", (int)user.len,
                c->user);
        gw_client_goodbye(c, "forbidden", "this account was disabled");
    }
}

static void stream_entry(void *data, uint32_t shard, uint64_t index, const uint8_t *events,
                         size_t len, uint32_t n_events)
{
    struct gw *gw = data;
    struct ch_rbuf r;
    ch_rbuf_init(&r, events, len);
    for (uint32_t i = 0; i < n_events; i++) {
        struct clog_event ev;
        if (clog_event_decode(&r, &ev) != 0)
            break;
        if (ev.type == CLOG_EV_USER_DISABLED)
            disconnect_user(gw, ev.actor);
        else
            fan_event_at(gw->fan, &ev, shard, index);
    }
}

struct shard_match {
    struct gw *gw;
    uint32_t shard;
};

static int conv_on_shard(void *arg, uint64_t conv)
{
    struct shard_match *m = arg;
    return conv_shard(m->gw, conv) == m->shard;
}

static void stream_gap(void *data, uint32_t shard, uint64_t resumed_at)
{
    struct gw *gw = data;
    CH_WARN((int)shard, "gateway: stream resumed at index %" PRIu64
                        " after a gap: re-reading followed conversations",
            resumed_at);
    struct shard_match m = {.gw = gw, .shard = shard};
    fan_refetch(gw->fan, conv_on_shard, &m);
}

/* Every known online local user, told to one node that just (re)connected. */
static void on_node_connect(void *data, uint32_t node)
{
    struct gw *gw = data;
    (void)node;
    size_t it = 0;
    const struct ch_map_slot *slot;
    uint64_t now = wall_ms();
    while (ch_map_next(&gw->users, &it, &slot)) {
        struct gw_user *u = slot->val;
        if (u->conns > 0)
            publish(gw, PROTO_PUBLISH_PRESENCE, 1, 0, u->name, u->len, now);
    }
}

/* Frees the entries of users (conns == 0) or addresses idle for GW_USER_IDLE_MS. */
static void expire_idle(struct ch_map *m, int users, uint64_t now)
{
    void *gone[64];
    size_t n;
    do {
        n = 0;
        size_t it = 0;
        const struct ch_map_slot *slot;
        while (n < 64 && ch_map_next(m, &it, &slot)) {
            uint64_t idle;
            if (users) {
                struct gw_user *u = slot->val;
                if (u->conns > 0)
                    continue;
                idle = u->idle_since;
            } else {
                idle = ((struct gw_addr *)slot->val)->idle_since;
            }
            if (now - idle >= GW_USER_IDLE_MS)
                gone[n++] = slot->val;
        }
        for (size_t i = 0; i < n; i++) {
            if (users) {
                struct gw_user *u = gone[i];
                ch_map_del(m, u->name, u->len);
            } else {
                struct gw_addr *a = gone[i];
                ch_map_del(m, a->name, a->len);
            }
            free(gone[i]);
        }
    } while (n == 64);
}

static void tick(uv_timer_t *t)
{
    struct gw *gw = t->data;
    uint64_t now = uv_now(gw->loop);
    expire_idle(&gw->users, 1, now);
    expire_idle(&gw->addrs, 0, now);
    fan_refetch(gw->fan, NULL, NULL); /* reads that failed: try again */
    /* refresh our users' presence on the other gateways, expire stale remote ones */
    if (now >= gw->presence_refresh_at) {
        gw->presence_refresh_at = now + GW_PRESENCE_REFRESH_MS;
        on_node_connect(gw, 0);
        size_t it = 0;
        const struct ch_map_slot *slot;
        while (ch_map_next(&gw->presence, &it, &slot)) {
            struct rpres *p = slot->val;
            for (uint32_t i = 0; i < 64; i++) {
                if ((p->nodes >> i & 1) && now - p->seen[i] > GW_PRESENCE_EXPIRE_MS) {
                    p->nodes &= ~(1ull << i);
                    p->last_seen = wall_ms();
                    if (p->nodes == 0)
                        presence_changed(gw, p->name, p->len);
                }
            }
        }
    }
    /* tokens expire while connected, too */
    uint64_t wall_s = wall_ms() / 1000;
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&gw->clients, &it, &slot)) {
        struct gw_client *c = slot->val;
        if (c->authed && !c->http && !c->closing && c->token_exp != 0 &&
            wall_s >= c->token_exp)
            gw_client_goodbye(c, "token_expired", "the token expired: log in again");
    }
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static int is_write(int op)
{
    switch (op) {
    case WIRE_OP_CREATE:
    case WIRE_OP_ADD_MEMBER:
    case WIRE_OP_REMOVE_MEMBER:
    case WIRE_OP_LEAVE:
    case WIRE_OP_SEND:
    case WIRE_OP_EDIT:
    case WIRE_OP_DELETE:
    case WIRE_OP_REACT:
        return 1;
    default:
        return 0;
    }
}

static void handle_request(struct gw_client *c, const char *text, size_t len);

/* A REST request with a bearer token waits for its account to be read: a token
 * outlives a `user disable` (the WebSocket `auth` does the same check). */
struct rest_check {
    struct gw *gw;
    uint64_t client;
    size_t len;
    char text[];
};

static void rest_account_checked(void *data, int err, const struct proto_frame *f)
{
    struct rest_check *x = data;
    struct gw_client *c = gw_client_find(x->gw, x->client);
    err = account_check(err, f);
    if (c != NULL) {
        if (err == 0) {
            c->account_checked = 1;
            handle_request(c, x->text, x->len);
        } else {
            c->authed = 0;
            x->gw->st.auth_failures += err == CH_EUSER_DISABLED || err == CH_EBAD_TOKEN;
            send_error(x->gw, x->client, "1", err, NULL, 0);
        }
    }
    free(x);
}

void gw_handle_request(struct gw_client *c, const char *text, size_t len)
{
    if (!c->http || !c->authed || c->account_checked) {
        handle_request(c, text, len);
        return;
    }
    struct rest_check *x = malloc(sizeof *x + len);
    if (x == NULL) {
        send_error(c->gw, c->id, "1", CH_ENOMEM, NULL, 0);
        return;
    }
    x->gw = c->gw;
    x->client = c->id;
    x->len = len;
    memcpy(x->text, text, len);
    struct ch_slice who = {.ptr = (const uint8_t *)c->user, .len = c->user_len};
    int rv = user_get_call(c->gw, who, 0, rest_account_checked, x);
    if (rv != 0) {
        free(x);
        send_error(c->gw, c->id, "1", rv, NULL, 0);
    }
}

static void handle_request(struct gw_client *c, const char *text, size_t len)
{
    struct gw *gw = c->gw;
    struct wire_request req;
    char msg[200];
    gw->st.requests++;
    int err = wire_parse_request(text, len, gw->cfg->limits.max_body, &req, msg, sizeof msg);
    if (err == 0 && req.op == WIRE_OP_SEND)
        gw->st.sends++;
    if (err != 0) {
        send_error(gw, c->id, req.id, err, msg, 0);
        wire_request_free(&req);
        return;
    }
    if (!c->authed && req.op != WIRE_OP_AUTH && req.op != WIRE_OP_LOGIN &&
        req.op != WIRE_OP_REGISTER && req.op != WIRE_OP_PING) {
        send_error(gw, c->id, req.id, CH_EUNAUTHORIZED,
                   "authenticate first (op auth, login or register)", 0);
        wire_request_free(&req);
        return;
    }
    if (is_write(req.op)) {
        struct gw_user *u = gw_user_get(gw, c->user, c->user_len);
        uint64_t retry = 0;
        if (u != NULL && sess_bucket_take(&u->send, uv_now(gw->loop), &retry) != 0) {
            gw->st.rate_limited++;
            send_error(gw, c->id, req.id, CH_ERATELIMITED, NULL, retry);
            wire_request_free(&req);
            return;
        }
    }
    struct op *o = op_new(c, &req);
    if (o == NULL) {
        send_error(gw, c->id, req.id, CH_ENOMEM, NULL, 0);
        wire_request_free(&req);
        return;
    }
    uint64_t cid = c->id;
    switch (req.op) {
    case WIRE_OP_PING:
        send_reply(gw, c->id, req.id, NULL);
        op_free(o);
        break;
    case WIRE_OP_REGISTER:
    case WIRE_OP_LOGIN:
        if (c->authed) {
            op_error(o, CH_EINVAL, "this connection is already authenticated");
            break;
        }
        op_register_login(c, &req, o);
        break;
    case WIRE_OP_AUTH:
        op_auth(c, &req, o);
        break;
    case WIRE_OP_CREATE:
        op_create(c, &req, o);
        break;
    case WIRE_OP_GET:
        op_get(&req, o);
        break;
    case WIRE_OP_CONVERSATIONS:
        op_conversations(o);
        break;
    case WIRE_OP_ADD_MEMBER:
    case WIRE_OP_REMOVE_MEMBER:
    case WIRE_OP_LEAVE:
    case WIRE_OP_SEND:
    case WIRE_OP_EDIT:
    case WIRE_OP_DELETE:
    case WIRE_OP_REACT:
    case WIRE_OP_RECEIPT:
        op_write(c, &req, o);
        break;
    case WIRE_OP_HISTORY:
        op_history(&req, o);
        break;
    case WIRE_OP_TYPING:
        if (c->http)
            op_error(o, CH_EUNKNOWN_OP, "typing needs a WebSocket");
        else
            op_typing(c, &req, o);
        break;
    case WIRE_OP_PRESENCE:
        op_presence(c, &req, o);
        break;
    case WIRE_OP_PROFILE: {
        struct ch_slice who = req.user.len ? req.user : op_actor(o);
        int rv = user_get_call(gw, who, PROTO_FLAG_STALE_OK, profile_done, o);
        if (rv != 0)
            op_error(o, rv, NULL);
        break;
    }
    case WIRE_OP_SETTINGS: {
        int rv = user_get_call(gw, op_actor(o), 0, profile_done, o);
        if (rv != 0)
            op_error(o, rv, NULL);
        break;
    }
    case WIRE_OP_SET_PROFILE:
        op_set_profile(&req, o);
        break;
    case WIRE_OP_SET_SETTINGS:
        op_set_settings(&req, o);
        break;
    case WIRE_OP_SYNC:
        if (c->http)
            op_error(o, CH_EUNKNOWN_OP, "sync needs a WebSocket");
        else
            op_sync(c, &req, o);
        break;
    default:
        op_error(o, CH_EUNKNOWN_OP, NULL);
        break;
    }
    wire_request_free(&req);
    (void)cid;
}

/* ---- lifetime ---------------------------------------------------------------------------- */

int gw_core_open(struct gw *gw, char *err, size_t errlen)
{
    if (gw->cfg->auth.secret[0] == 0) {
        snprintf(err, errlen, "auth.secret: required by the gateway role (16+ characters)");
        return CH_ECONFIG;
    }
    ch_map_init(&gw->clients);
    ch_map_init(&gw->users);
    ch_map_init(&gw->addrs);
    ch_map_init(&gw->presence);
    ch_map_init(&gw->watchers);
    struct fan_callbacks cb = {.data = gw,
                               .push = fan_push_cb,
                               .fetch = fan_fetch_cb,
                               .overflow = fan_overflow_cb,
                               .room = fan_room_cb};
    if (fan_create(&cb, (uint32_t)gw->headroom, &gw->fan) != 0) {
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    struct rpc_options ro = {.config = gw->cfg,
                             .self = gw->node_id,
                             .deadline_ms = gw->cfg->gateway.deadline_ms,
                             .attempt_timeout_ms = 2000,
                             .max_frame = PROTO_DEFAULT_MAX_FRAME};
    if (rpc_open(gw->loop, &ro, &gw->rpc) != 0) {
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    rpc_on_connect(gw->rpc, on_node_connect, gw);
    gw->subs = calloc(gw->cfg->n_shards, sizeof *gw->subs);
    if (gw->subs == NULL) {
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    for (uint32_t s = 0; s < gw->cfg->n_shards; s++) {
        if (rpc_subscribe(gw->rpc, s, 0, stream_entry, stream_gap, gw, &gw->subs[s]) != 0) {
            snprintf(err, errlen, "out of memory");
            return CH_ENOMEM;
        }
    }
    uv_timer_init(gw->loop, &gw->timer);
    gw->timer.data = gw;
    gw->timer_open = 1;
    uv_timer_start(&gw->timer, tick, GW_TICK_MS, GW_TICK_MS);
    return 0;
}

static void free_map_values(struct ch_map *m)
{
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(m, &it, &slot))
        free(slot->val);
    ch_map_free(m);
}

void gw_core_stop(struct gw *gw)
{
    gw->stopped = 1;
    if (gw->timer_open) {
        gw->timer_open = 0;
        uv_close((uv_handle_t *)&gw->timer, NULL);
    }
    if (gw->rpc != NULL) {
        rpc_close(gw->rpc, NULL, NULL); /* frees the subscriptions too */
        gw->rpc = NULL;
    }
    free(gw->subs);
    gw->subs = NULL;
}

void gw_core_free(struct gw *gw)
{
    fan_destroy(gw->fan);
    gw->fan = NULL;
    free_map_values(&gw->users);
    free_map_values(&gw->addrs);
    free_map_values(&gw->presence);
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&gw->watchers, &it, &slot))
        free(((struct watch *)slot->val)->conns);
    free_map_values(&gw->watchers);
    ch_map_free(&gw->clients);
}
