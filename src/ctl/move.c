/*
 * chorusctl shard move | node add|drain|remove|list | placement: changing where
 * shard replicas live.
 *
 * The placement map is in the meta group (src/cluster/placement.h); the
 * replicas themselves change with Raft membership changes of each shard
 * (SHARD_CONF).  A move of shard S from node A to node B, each step idempotent
 * so an interrupted move can be resumed or aborted:
 *   1. meta MOVE_BEGIN(S, A, B): B's node opens an empty replica and waits;
 *   2. the shard's leader adds B as a standby: it receives the log (snapshot +
 *      entries) without voting; chorusctl shows B's match index as progress;
 *   3. promote B to voter (Raft catches it up to the leader's last entry first);
 *   4. if A leads, hand leadership to another voter;
 *   5. the leader removes A from the group;
 *   6. meta MOVE_COMMIT(S, A, B): A's node closes its replica and deletes it.
 * Abort (Ctrl-C, or `shard move S --abort`) before step 5: remove B, then meta
 * MOVE_ABORT; B's node deletes its partial copy.  From step 5 on the move only
 * goes forward.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../cluster/placement.h"
#include "../common/error.h"
#include "client.h"
#include "ctl.h"

#define MOVE_OPEN_TIMEOUT_MS 20000  /* the target node opens its replica */
#define MOVE_CLOSE_TIMEOUT_MS 20000 /* the source node deletes its replica */
#define MOVE_POLL_MS 100
#define MOVE_PROMOTE_LAG                                                                 \
    256 /* standby this close to the leader's last index: promote                        \
         */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void nap(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The message of an ERROR reply, or the error's text; with the wire code. */
static void reply_error(const struct cc_reply *r, int err, char *msg, size_t len)
{
    if (r != NULL && r->f.type == PROTO_ERROR) {
        struct ch_rbuf body;
        ch_rbuf_init(&body, r->f.body.ptr, r->f.body.len);
        struct proto_error e;
        if (proto_decode_error(&body, &e) == 0 && e.message.len > 0) {
            snprintf(msg, len, "%.*s (%s)",
                     (int)(e.message.len > 300 ? 300 : e.message.len),
                     (const char *)e.message.ptr, ch_errcode(err));
            return;
        }
    }
    snprintf(msg, len, "%s (%s)", ch_strerror(err), ch_errcode(err));
}

/* ---- meta group and shard calls -------------------------------------------------------
 */

/*
 * Sends the frame in f (freed here) to the leader of shard (n_shards: the meta
 * group) and checks the reply is of type want, leaving its body in *body.
 * Returns 0, or an error with a message.
 */
static int routed(struct cc *c, struct ch_wbuf *f, uint32_t shard, int want,
                  struct cc_reply *r, struct ch_rbuf *body, char *msg, size_t len)
{
    int rv = ch_wbuf_error(f) ? CH_ENOMEM : cc_route_call(c, f, shard, 0, r);
    ch_wbuf_free(f);
    if (rv != 0) {
        reply_error(rv == CH_EUNAVAILABLE || rv == CH_ENOMEM ? NULL : r, rv, msg, len);
        return rv;
    }
    ch_rbuf_init(body, r->f.body.ptr, r->f.body.len);
    if (r->f.type != want) {
        snprintf(msg, len, "unexpected %s reply", proto_type_name(r->f.type));
        return CH_EMALFORMED;
    }
    return 0;
}

/* A linearizable read of the map from the meta group's leader. */
static int meta_get(struct cc *c, struct placement *out, char *msg, size_t len)
{
    placement_init(out);
    struct ch_wbuf f;
    ch_wbuf_init(&f);
    struct proto_meta_get m = {.flags = 0};
    proto_encode_meta_get(&f, 0, &m);
    struct cc_reply r;
    struct ch_rbuf body;
    struct proto_meta_get_reply mr;
    int rv = routed(c, &f, c->cfg->n_shards, PROTO_META_GET_REPLY, &r, &body, msg, len);
    if (rv != 0)
        return rv;
    if (proto_decode_meta_get_reply(&body, &mr) != 0) {
        snprintf(msg, len, "malformed META_GET reply");
        return CH_EMALFORMED;
    }
    if (mr.version == 0) {
        snprintf(msg, len, "the meta group has no placement yet (still starting?)");
        return CH_EUNAVAILABLE;
    }
    return placement_decode(mr.map.ptr, mr.map.len, out, msg, len);
}

static int meta_propose(struct cc *c, const struct placement_cmd *cmd, uint64_t *version,
                        char *msg, size_t len)
{
    struct ch_wbuf cb, f;
    ch_wbuf_init(&cb);
    ch_wbuf_init(&f);
    placement_cmd_encode(cmd, &cb);
    struct proto_meta_propose m = {
        .admin_token = ch_slice_str(ctl_admin_token(c->cfg)),
        .cmd = {cb.data, cb.len},
    };
    proto_encode_meta_propose(&f, 0, &m);
    if (ch_wbuf_error(&cb))
        f.oom = 1;
    ch_wbuf_free(&cb);
    struct cc_reply r;
    struct ch_rbuf body;
    struct proto_meta_propose_reply pr;
    int rv =
        routed(c, &f, c->cfg->n_shards, PROTO_META_PROPOSE_REPLY, &r, &body, msg, len);
    if (rv != 0)
        return rv;
    if (proto_decode_meta_propose_reply(&body, &pr) != 0) {
        snprintf(msg, len, "malformed META_PROPOSE reply");
        return CH_EMALFORMED;
    }
    if (version)
        *version = pr.version;
    return 0;
}

/* A membership change on the shard's leader; *role: the node's role afterwards. */
static int shard_conf_call(struct cc *c, uint32_t shard, int op, uint32_t node, int *role,
                           char *msg, size_t len)
{
    struct ch_wbuf f;
    ch_wbuf_init(&f);
    struct proto_shard_conf m = {
        .admin_token = ch_slice_str(ctl_admin_token(c->cfg)),
        .shard = shard,
        .op = (uint8_t)op,
        .node = node,
    };
    proto_encode_shard_conf(&f, 0, &m);
    struct cc_reply r;
    struct ch_rbuf body;
    struct proto_shard_conf_reply cr;
    int saved = c->deadline_ms;
    c->deadline_ms = 60000; /* a promotion waits for Raft's catch-up rounds */
    int rv = routed(c, &f, shard, PROTO_SHARD_CONF_REPLY, &r, &body, msg, len);
    c->deadline_ms = saved;
    if (rv != 0)
        return rv;
    if (proto_decode_shard_conf_reply(&body, &cr) != 0) {
        snprintf(msg, len, "malformed SHARD_CONF reply");
        return CH_EMALFORMED;
    }
    *role = cr.role;
    return 0;
}

/* What one node says about one shard (STATUS): found 1/0, or -1 if it is down. */
struct replica_view {
    struct proto_shard_status ss;
    uint32_t n;
    struct proto_replica reps[CLUSTER_MAX_REPLICATION + 2];
};

static int node_shard(struct cc *c, uint32_t node, uint32_t shard, struct replica_view *v)
{
    struct ch_wbuf f;
    ch_wbuf_init(&f);
    uint64_t id = cc_req_id(c);
    struct proto_status m = {.flags = 0};
    proto_encode_status(&f, id, &m);
    struct cc_reply r;
    int rv = ch_wbuf_error(&f) ? CH_ENOMEM : cc_call(c, node, &f, id, 3000, &r);
    ch_wbuf_free(&f);
    if (rv != 0 || r.f.type != PROTO_STATUS_REPLY)
        return -1;
    struct ch_rbuf body;
    ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
    struct proto_status_reply sr;
    if (proto_decode_status_reply(&body, &sr) != 0)
        return -1;
    for (uint32_t k = 0; k < sr.n_shards; k++) {
        if (proto_get_shard_status(&body, &v->ss) != 0)
            return -1;
        v->n = 0;
        for (uint32_t x = 0; x < v->ss.n_replicas; x++) {
            struct proto_replica rep;
            if (proto_get_replica(&body, &rep) != 0)
                return -1;
            if (v->n < sizeof v->reps / sizeof v->reps[0])
                v->reps[v->n++] = rep;
        }
        if (v->ss.shard == shard)
            return 1;
    }
    return 0;
}

/* Finds the shard's leader by asking its replicas (placement + extra). */
static uint32_t find_leader(struct cc *c, const struct placement *p, uint32_t shard,
                            uint32_t extra, struct replica_view *v)
{
    uint32_t cand[CLUSTER_MAX_REPLICATION + 1];
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->replication; i++)
        cand[n++] = p->replicas[shard * p->replication + i];
    if (extra)
        cand[n++] = extra;
    uint32_t hint = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (node_shard(c, cand[i], shard, v) == 1) {
            if (v->ss.role == PROTO_ROLE_LEADER)
                return cand[i];
            if (v->ss.leader_id)
                hint = v->ss.leader_id;
        }
    }
    if (hint && node_shard(c, hint, shard, v) == 1 && v->ss.role == PROTO_ROLE_LEADER)
        return hint;
    return 0;
}

static int role_of(const struct replica_view *v, uint32_t node, uint64_t *match)
{
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->reps[i].node_id == node) {
            if (match)
                *match = v->reps[i].match_index;
            return v->reps[i].raft_role;
        }
    }
    return PROTO_RAFT_ROLE_NONE;
}

/* ---- one move
 * ---------------------------------------------------------------------------- */

struct move_report {
    uint32_t shard, from, to;
    double total_ms, catchup_ms;
    uint64_t entries; /* the leader's last index when the catch-up finished */
    int aborted;
    char msg[400];
};

static void progress(const struct ctl_env *env, uint32_t shard, uint32_t to,
                     const char *stage, uint64_t done, uint64_t total)
{
    if (env->json || !isatty(2))
        return;
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : 0;
    if (fill > width)
        fill = width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\rshard %u -> node %u  %-10s [%s] %3d%%  %" PRIu64 "/%" PRIu64 "   ",
            shard, to, stage, bar,
            total ? (int)(100.0 * (double)done / (double)total) : 0, done, total);
}

static void progress_end(const struct ctl_env *env)
{
    if (!env->json && isatty(2))
        fprintf(stderr, "\n");
}

/* Waits until `node` reports (want 1) or stops reporting (want 0) shard s. */
static int wait_hosting(struct cc *c, uint32_t node, uint32_t shard, int want,
                        int timeout_ms)
{
    uint64_t end = cc_now_ms() + (uint64_t)timeout_ms;
    struct replica_view v;
    int down = 0;
    while (cc_now_ms() < end && !(want == 1 && interrupted)) {
        int h = node_shard(c, node, shard, &v);
        if (h == want)
            return 0;
        /* waiting for a down node to delete its copy is pointless: it does when
         * it next starts and reads the map */
        if (want == 0 && (down = h < 0 ? down + 1 : 0) >= 3)
            return CH_EUNAVAILABLE;
        nap(MOVE_POLL_MS);
    }
    return CH_ETIMEOUT;
}

/* Undo of an unfinished move: B out of the group, then the map back. */
static int abort_move(struct cc *c, const struct placement *p, uint32_t shard,
                      uint32_t from, uint32_t to, char *msg, size_t len)
{
    struct replica_view v;
    int removed = 0;
    for (int attempt = 0; attempt < 20 && !removed; attempt++) {
        uint32_t leader = find_leader(c, p, shard, to, &v);
        if (leader == 0) {
            nap(500);
            continue;
        }
        if (role_of(&v, from, NULL) == PROTO_RAFT_ROLE_NONE) {
            snprintf(msg, len,
                     "shard %u: node %u was already removed from the group: the "
                     "move cannot be aborted, run it again to finish it",
                     shard, from);
            return CH_EINVAL;
        }
        if (leader == to) { /* hand leadership back before removing the new replica */
            struct ch_wbuf f;
            ch_wbuf_init(&f);
            struct proto_transfer m = {.admin_token =
                                           ch_slice_str(ctl_admin_token(c->cfg)),
                                       .shard = shard,
                                       .to_node = from};
            proto_encode_transfer(&f, 0, &m);
            struct cc_reply r;
            cc_route_call(c, &f, shard, to, &r);
            ch_wbuf_free(&f);
            continue;
        }
        int role;
        int rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_REMOVE, to, &role, msg, len);
        if (rv != 0)
            return rv;
        removed = 1;
    }
    if (!removed) {
        /* Never tell the map before Raft let go of B: its node would delete a
         * replica that may still be a voter. */
        snprintf(msg, len,
                 "shard %u: could not remove node %u from the group (no leader found); "
                 "the move stays in progress: run `shard move %u --abort` again",
                 shard, to, shard);
        return CH_EUNAVAILABLE;
    }
    struct placement_cmd cmd = {
        .op = PLACEMENT_MOVE_ABORT, .shard = shard, .from = from, .to = to};
    return meta_propose(c, &cmd, NULL, msg, len);
}

/* Waits until the standby `node` is close to the leader's last index (progress
 * bar on a terminal); CH_ESHUTDOWN when interrupted. */
static int catch_up(const struct ctl_env *env, struct cc *c, const struct placement *p,
                    uint32_t shard, uint32_t node, uint64_t *entries)
{
    struct replica_view v;
    for (;;) {
        if (interrupted)
            return CH_ESHUTDOWN;
        uint32_t leader = find_leader(c, p, shard, node, &v);
        uint64_t match = 0;
        if (leader != 0 && role_of(&v, node, &match) != PROTO_RAFT_ROLE_NONE) {
            progress(env, shard, node, "catch-up", match, v.ss.last_index);
            if (match + MOVE_PROMOTE_LAG >= v.ss.last_index) {
                *entries = v.ss.last_index;
                return 0;
            }
        }
        nap(MOVE_POLL_MS);
    }
}

static int run_move(const struct ctl_env *env, struct cc *c, uint32_t shard,
                    uint32_t from, uint32_t to, struct move_report *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->shard = shard;
    rep->from = from;
    rep->to = to;
    char *msg = rep->msg;
    size_t len = sizeof rep->msg;
    uint64_t t0 = cc_now_us();
    struct placement p;
    int rv = meta_get(c, &p, msg, len);
    if (rv != 0)
        return rv;
    struct placement_cmd cmd = {
        .op = PLACEMENT_MOVE_BEGIN, .shard = shard, .from = from, .to = to};
    if ((rv = meta_propose(c, &cmd, NULL, msg, len)) != 0) /* checks from/to/state */
        goto out;
    progress(env, shard, to, "opening", 0, 1);
    if (wait_hosting(c, to, shard, 1, MOVE_OPEN_TIMEOUT_MS) != 0) {
        if (interrupted)
            snprintf(msg, len, "interrupted");
        else
            snprintf(msg, len,
                     "node %u did not open a replica of shard %u within %d ms (is "
                     "it running?)",
                     to, shard, MOVE_OPEN_TIMEOUT_MS);
        rv = interrupted ? CH_ESHUTDOWN : CH_ETIMEOUT;
        goto undo;
    }
    int role;
    if ((rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_ADD, to, &role, msg, len)) != 0)
        goto undo;
    uint64_t tc = cc_now_us();
    struct replica_view v;
    if ((rv = catch_up(env, c, &p, shard, to, &rep->entries)) != 0) {
        snprintf(msg, len, "interrupted");
        goto undo;
    }
    if ((rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_PROMOTE, to, &role, msg, len)) !=
        0)
        goto undo;
    rep->catchup_ms = (double)(cc_now_us() - tc) / 1000.0;
    progress(env, shard, to, "voter", 1, 1);
    /* A leader cannot remove itself: move leadership off `from` first. */
    for (int attempt = 0;; attempt++) {
        uint32_t leader = find_leader(c, &p, shard, to, &v);
        if (leader != 0 && leader != from)
            break;
        if (attempt >= 30) {
            snprintf(msg, len, "shard %u: could not move leadership off node %u", shard,
                     from);
            rv = CH_EUNAVAILABLE;
            goto undo;
        }
        if (leader == from) {
            struct ch_wbuf f;
            ch_wbuf_init(&f);
            struct proto_transfer m = {.admin_token =
                                           ch_slice_str(ctl_admin_token(c->cfg)),
                                       .shard = shard,
                                       .to_node = 0};
            proto_encode_transfer(&f, 0, &m);
            struct cc_reply r;
            cc_route_call(c, &f, shard, from, &r);
            ch_wbuf_free(&f);
        } else {
            nap(300);
        }
    }
    /* From here on only forward: Ctrl-C no longer aborts this move (the steps
     * below never look at `interrupted`; `node remove` stops after it). */
    for (int attempt = 0;; attempt++) {
        rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_REMOVE, from, &role, msg, len);
        if (rv == 0)
            break;
        if (attempt >= 5)
            goto out; /* the map still says "moving": run the move again to finish */
        nap(500);
    }
    cmd.op = PLACEMENT_MOVE_COMMIT;
    if ((rv = meta_propose(c, &cmd, NULL, msg, len)) != 0)
        goto out;
    progress(env, shard, to, "cleanup", 1, 1);
    if ((rv = wait_hosting(c, from, shard, 0, MOVE_CLOSE_TIMEOUT_MS)) == CH_EUNAVAILABLE)
        snprintf(msg, len,
                 "moved; node %u is down: it deletes its old replica when it next "
                 "starts and reads the placement",
                 from);
    else if (rv != 0)
        snprintf(msg, len,
                 "moved; node %u has not deleted its old replica yet (it does when "
                 "it next reads the placement)",
                 from);
    rep->total_ms = (double)(cc_now_us() - t0) / 1000.0;
    progress_end(env);
    placement_free(&p);
    return 0;
undo:
    progress_end(env);
    {
        char why[400];
        snprintf(why, sizeof why, "%s", msg);
        int arv = abort_move(c, &p, shard, from, to, msg, len);
        if (arv == 0) {
            rep->aborted = 1;
            snprintf(msg, len, "%s; move aborted, placement unchanged", why);
        } else {
            char undo_msg[300];
            snprintf(undo_msg, sizeof undo_msg, "%s", msg);
            snprintf(msg, len, "%s; abort failed too: %s (run `shard move %u --abort`)",
                     why, undo_msg, shard);
        }
    }
out:
    progress_end(env);
    rep->total_ms = (double)(cc_now_us() - t0) / 1000.0;
    placement_free(&p);
    return rv;
}

static json_t *report_json(const struct move_report *r, int rv)
{
    json_t *o = json_object();
    json_object_set_new(o, "shard", json_integer(r->shard));
    json_object_set_new(o, "from", json_integer(r->from));
    json_object_set_new(o, "to", json_integer(r->to));
    json_object_set_new(o, "ok", json_boolean(rv == 0));
    json_object_set_new(o, "aborted", json_boolean(r->aborted));
    json_object_set_new(o, "total_ms", json_real(r->total_ms));
    json_object_set_new(o, "catchup_ms", json_real(r->catchup_ms));
    json_object_set_new(o, "entries", json_integer((json_int_t)r->entries));
    if (rv != 0) {
        json_object_set_new(o, "error", json_string(ch_errcode(rv)));
        json_object_set_new(o, "message", json_string(r->msg));
    } else if (r->msg[0]) {
        json_object_set_new(o, "note", json_string(r->msg));
    }
    return o;
}

static void print_report(const struct ctl_env *env, const struct move_report *r, int rv)
{
    if (env->json) {
        json_t *o = report_json(r, rv);
        ctl_print_json(o);
    } else if (rv == 0) {
        printf("shard %u moved from node %u to node %u in %.0f ms (catch-up of %" PRIu64
               " entries %.0f ms)%s%s\n",
               r->shard, r->from, r->to, r->total_ms, r->entries, r->catchup_ms,
               r->msg[0] ? ": " : "", r->msg);
    } else {
        fprintf(stderr, "chorusctl: shard %u move %u -> %u: %s\n", r->shard, r->from,
                r->to, r->msg);
    }
}

/* ---- commands
 * --------------------------------------------------------------------------- */

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != 0 || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int shard_move_cmd(const struct ctl_env *env, int argc, char **argv)
{
    uint32_t shard = 0, from = 0, to = 0;
    int have_shard = 0, abort_only = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0 && i + 1 < argc &&
            parse_u32(argv[i + 1], &from) == 0)
            i++;
        else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc &&
                 parse_u32(argv[i + 1], &to) == 0)
            i++;
        else if (strcmp(argv[i], "--abort") == 0)
            abort_only = 1;
        else if (!have_shard && parse_u32(argv[i], &shard) == 0)
            have_shard = 1;
        else {
            fprintf(stderr, "chorusctl shard move: unexpected argument %s\n", argv[i]);
            return CTL_USAGE;
        }
    }
    if (!have_shard || (!abort_only && (from == 0 || to == 0))) {
        fprintf(stderr, "usage: chorusctl shard move SHARD --from NODE --to NODE | "
                        "shard move SHARD --abort\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    if (shard >= cfg.n_shards) {
        fprintf(stderr, "chorusctl: no shard %u (the cluster has %u)\n", shard,
                cfg.n_shards);
        cluster_config_free(&cfg);
        return CTL_USAGE;
    }
    struct cc c;
    cc_init(&c, &cfg);
    char msg[400];
    if (abort_only) {
        struct placement p;
        rv = meta_get(&c, &p, msg, sizeof msg);
        if (rv == 0 && p.moves[shard].to == 0) {
            printf("shard %u: no move in progress\n", shard);
        } else if (rv == 0) {
            from = p.moves[shard].from;
            to = p.moves[shard].to;
            rv = abort_move(&c, &p, shard, from, to, msg, sizeof msg);
            if (rv == 0)
                printf("shard %u: move %u -> %u aborted\n", shard, from, to);
        }
        if (rv != 0)
            fprintf(stderr, "chorusctl: shard %u abort: %s\n", shard, msg);
        placement_free(&p);
        cc_close(&c);
        cluster_config_free(&cfg);
        return rv ? CTL_FAILED : CTL_OK;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct move_report rep;
    rv = run_move(env, &c, shard, from, to, &rep);
    print_report(env, &rep, rv);
    cc_close(&c);
    cluster_config_free(&cfg);
    return rv ? CTL_FAILED : CTL_OK;
}

int ctl_shard(struct ctl_env *env, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "move") == 0)
        return shard_move_cmd(env, argc - 1, argv + 1);
    fprintf(stderr,
            "usage: chorusctl shard move SHARD --from NODE --to NODE [--abort]\n");
    return CTL_USAGE;
}

static const char *state_name(uint8_t s)
{
    return s == PLACEMENT_NODE_ACTIVE     ? "active"
           : s == PLACEMENT_NODE_DRAINING ? "draining"
           : s == PLACEMENT_NODE_REMOVED  ? "removed"
                                          : "?";
}

static void addr_str(const struct cluster_addr *a, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%u", a->host, a->port);
}

static int node_list(const struct ctl_env *env, struct cc *c)
{
    struct placement p;
    char msg[400];
    int rv = meta_get(c, &p, msg, sizeof msg);
    if (rv != 0) {
        fprintf(stderr, "chorusctl: node list: %s\n", msg);
        placement_free(&p);
        return CTL_FAILED;
    }
    json_t *arr = json_array();
    if (!env->json)
        printf("placement version %" PRIu64 "\nNODE  STATE     REPLICAS  META  RAFT"
               "                   CLIENT\n",
               p.version);
    for (uint32_t i = 0; i < p.n_nodes; i++) {
        const struct placement_node *nd = &p.nodes[i];
        int meta = 0;
        for (uint32_t k = 0; k < p.n_meta; k++)
            meta |= p.meta[k] == nd->addr.id;
        char raft[96], client[96];
        addr_str(&nd->addr.raft, raft, sizeof raft);
        addr_str(&nd->addr.client, client, sizeof client);
        if (env->json) {
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(nd->addr.id));
            json_object_set_new(o, "state", json_string(state_name(nd->state)));
            json_object_set_new(o, "replicas",
                                json_integer(placement_count(&p, nd->addr.id)));
            json_object_set_new(o, "meta", json_boolean(meta));
            json_object_set_new(o, "raft", json_string(raft));
            json_object_set_new(o, "client", json_string(client));
            json_array_append_new(arr, o);
        } else {
            printf("%-5u %-9s %-9u %-5s %-22s %s\n", nd->addr.id, state_name(nd->state),
                   placement_count(&p, nd->addr.id), meta ? "yes" : "-", raft, client);
        }
    }
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "version", json_integer((json_int_t)p.version));
        json_object_set_new(o, "nodes", arr);
        ctl_print_json(o);
    } else {
        json_decref(arr);
    }
    placement_free(&p);
    return CTL_OK;
}

static int set_state(struct cc *c, uint32_t node, uint8_t state, char *msg, size_t len)
{
    struct placement_cmd cmd = {.op = PLACEMENT_NODE_SET_STATE};
    cmd.node.addr.id = node;
    cmd.node.state = state;
    return meta_propose(c, &cmd, NULL, msg, len);
}

/* The active node, not holding shard s, with the fewest replicas (0: none). */
static uint32_t pick_target(const struct placement *p, uint32_t shard)
{
    uint32_t best = 0, best_n = UINT32_MAX;
    for (uint32_t i = 0; i < p->n_nodes; i++) {
        const struct placement_node *nd = &p->nodes[i];
        if (nd->state != PLACEMENT_NODE_ACTIVE || placement_hosts(p, nd->addr.id, shard))
            continue;
        uint32_t n = placement_count(p, nd->addr.id);
        if (n < best_n) {
            best = nd->addr.id;
            best_n = n;
        }
    }
    return best;
}

/* Moves every leadership of `node` away (leader transfer to Raft's choice). */
static void drain_leaders(struct cc *c, const struct placement *p, uint32_t node)
{
    for (uint32_t s = 0; s < p->n_shards; s++) {
        if (!placement_hosts(p, node, s))
            continue;
        struct replica_view v;
        if (node_shard(c, node, s, &v) != 1 || v.ss.role != PROTO_ROLE_LEADER)
            continue;
        struct ch_wbuf f;
        ch_wbuf_init(&f);
        struct proto_transfer m = {.admin_token = ch_slice_str(ctl_admin_token(c->cfg)),
                                   .shard = s,
                                   .to_node = 0};
        proto_encode_transfer(&f, 0, &m);
        struct cc_reply r;
        cc_route_call(c, &f, s, node, &r);
        ch_wbuf_free(&f);
    }
}

static int node_drain_remove(const struct ctl_env *env, struct cc *c, uint32_t node,
                             int remove)
{
    char msg[400];
    if (remove && cluster_node_is_meta(c->cfg, node)) {
        fprintf(stderr,
                "chorusctl: node %u is a voter of the meta group (\"meta\" in the "
                "config): it cannot be removed\n",
                node);
        return CTL_FAILED;
    }
    int rv = set_state(c, node, PLACEMENT_NODE_DRAINING, msg, sizeof msg);
    if (rv != 0) {
        fprintf(stderr, "chorusctl: node %u: %s\n", node, msg);
        return CTL_FAILED;
    }
    struct placement p;
    if ((rv = meta_get(c, &p, msg, sizeof msg)) != 0) {
        fprintf(stderr, "chorusctl: node %u: %s\n", node, msg);
        placement_free(&p);
        return CTL_FAILED;
    }
    drain_leaders(c, &p, node);
    if (!remove) {
        if (!env->json)
            printf(
                "node %u draining: it keeps its %u replicas, leads nothing, gets nothing "
                "new\n",
                node, placement_count(&p, node));
        else
            printf("{\"node\":%u,\"state\":\"draining\",\"replicas\":%u}\n", node,
                   placement_count(&p, node));
        placement_free(&p);
        return CTL_OK;
    }
    json_t *moves = json_array();
    int failed = 0;
    for (uint32_t s = 0; s < p.n_shards && !failed && !interrupted; s++) {
        if (!placement_hosts(&p, node, s))
            continue;
        uint32_t to = pick_target(&p, s);
        if (to == 0) {
            fprintf(stderr,
                    "chorusctl: node %u: no active node can take shard %u's replica "
                    "(add a node first)\n",
                    node, s);
            failed = 1;
            break;
        }
        struct move_report rep;
        rv = run_move(env, c, s, node, to, &rep);
        if (env->json)
            json_array_append_new(moves, report_json(&rep, rv));
        else
            print_report(env, &rep, rv);
        if (rv != 0) {
            failed = 1;
            break;
        }
        placement_free(&p);
        if ((rv = meta_get(c, &p, msg, sizeof msg)) != 0) {
            fprintf(stderr, "chorusctl: node %u: %s\n", node, msg);
            failed = 1;
        }
    }
    if (!failed && !interrupted) {
        rv = set_state(c, node, PLACEMENT_NODE_REMOVED, msg, sizeof msg);
        if (rv != 0) {
            fprintf(stderr, "chorusctl: node %u: %s\n", node, msg);
            failed = 1;
        }
    }
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "node", json_integer(node));
        json_object_set_new(o, "removed", json_boolean(!failed && !interrupted));
        json_object_set_new(o, "moves", moves);
        ctl_print_json(o);
    } else {
        json_decref(moves);
        if (!failed && !interrupted)
            printf("node %u removed: it holds no replicas; stop its chorusd\n", node);
    }
    placement_free(&p);
    return failed || interrupted ? CTL_FAILED : CTL_OK;
}

/*
 * A node whose data is gone (disk replaced, directory wiped) and which runs
 * again with --join: Raft's leaders still count it as a voter with the log it
 * had, and ignore its rejections as stale, so it would never catch up.  Each of
 * its replicas is taken out of its group and added back as a new one: remove,
 * add as standby, catch up, promote.  Meanwhile the group has one voter fewer.
 */
static int rejoin_one(const struct ctl_env *env, struct cc *c, const struct placement *p,
                      uint32_t shard, uint32_t node, struct move_report *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->shard = shard;
    rep->from = rep->to = node;
    uint64_t t0 = cc_now_us();
    int meta = shard == p->n_shards, role;
    char *msg = rep->msg;
    size_t len = sizeof rep->msg;
    if (!meta) {
        struct replica_view v;
        uint32_t leader = find_leader(c, p, shard, 0, &v);
        if (leader == node) {
            snprintf(msg, len, "node %u leads shard %u: its replica is intact, left alone",
                     node, shard);
            return 0;
        }
    }
    int rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_REMOVE, node, &role, msg, len);
    if (rv == 0)
        rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_ADD, node, &role, msg, len);
    if (rv == 0 && !meta)
        rv = catch_up(env, c, p, shard, node, &rep->entries);
    if (rv == 0)
        rv = shard_conf_call(c, shard, PROTO_SHARD_CONF_PROMOTE, node, &role, msg, len);
    progress_end(env);
    if (rv == CH_ESHUTDOWN)
        snprintf(msg, len, "interrupted: node %u is a standby of shard %u; run `node "
                 "rejoin %u` again", node, shard, node);
    rep->total_ms = (double)(cc_now_us() - t0) / 1000.0;
    return rv;
}

static int node_rejoin(const struct ctl_env *env, struct cc *c, uint32_t node)
{
    struct placement p;
    char msg[400];
    int rv = meta_get(c, &p, msg, sizeof msg);
    if (rv != 0) {
        fprintf(stderr, "chorusctl: node rejoin %u: %s\n", node, msg);
        placement_free(&p);
        return CTL_FAILED;
    }
    json_t *arr = json_array();
    int failed = 0;
    for (uint32_t s = 0; s <= p.n_shards && !failed && !interrupted; s++) {
        if (s < p.n_shards ? !placement_hosts(&p, node, s)
                           : !cluster_node_is_meta(c->cfg, node))
            continue;
        struct move_report rep;
        rv = rejoin_one(env, c, &p, s, node, &rep);
        failed = rv != 0;
        if (env->json) {
            json_t *o = report_json(&rep, rv);
            if (s == p.n_shards)
                json_object_set_new(o, "shard", json_string("meta"));
            json_array_append_new(arr, o);
        } else if (rv == 0) {
            char what[32] = "meta group";
            if (s < p.n_shards)
                snprintf(what, sizeof what, "shard %u", s);
            printf("%s: node %u rejoined in %.0f ms%s%s\n", what, node, rep.total_ms,
                   rep.msg[0] ? ": " : "", rep.msg);
        } else {
            fprintf(stderr, "chorusctl: shard %u: node %u rejoin: %s\n", s, node, rep.msg);
        }
    }
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "node", json_integer(node));
        json_object_set_new(o, "ok", json_boolean(!failed && !interrupted));
        json_object_set_new(o, "groups", arr);
        ctl_print_json(o);
    } else {
        json_decref(arr);
    }
    placement_free(&p);
    return failed || interrupted ? CTL_FAILED : CTL_OK;
}

static int node_add(const struct ctl_env *env, struct cc *c,
                    const struct cluster_config *cfg, uint32_t node, int argc,
                    char **argv)
{
    struct placement_cmd cmd = {.op = PLACEMENT_NODE_ADD};
    cmd.node.addr.id = node;
    cmd.node.state = PLACEMENT_NODE_ACTIVE;
    const struct cluster_node *cn = cluster_node_by_id(cfg, node);
    if (cn != NULL)
        cmd.node.addr = *cn;
    for (int i = 0; i < argc; i++) {
        struct cluster_addr *a =
            strcmp(argv[i], "--raft") == 0      ? &cmd.node.addr.raft
            : strcmp(argv[i], "--client") == 0  ? &cmd.node.addr.client
            : strcmp(argv[i], "--gateway") == 0 ? &cmd.node.addr.gateway
                                                : NULL;
        if (a == NULL || i + 1 >= argc || cluster_addr_parse(argv[i + 1], a) != 0) {
            fprintf(stderr,
                    "chorusctl node add: bad argument %s (--raft/--client/--gateway "
                    "a.b.c.d:port)\n",
                    argv[i]);
            return CTL_USAGE;
        }
        i++;
    }
    if (cmd.node.addr.raft.port == 0 || cmd.node.addr.client.port == 0 ||
        cmd.node.addr.gateway.port == 0) {
        fprintf(stderr,
                "chorusctl node add: node %u is not in the config: give --raft, "
                "--client and --gateway\n",
                node);
        return CTL_USAGE;
    }
    char msg[400];
    uint64_t version = 0;
    int rv = meta_propose(c, &cmd, &version, msg, sizeof msg);
    if (rv != 0) {
        fprintf(stderr, "chorusctl: node add %u: %s\n", node, msg);
        return CTL_FAILED;
    }
    if (env->json)
        printf("{\"node\":%u,\"state\":\"active\",\"version\":%" PRIu64 "}\n", node,
               version);
    else
        printf("node %u added (placement version %" PRIu64 "); start it with `chorusd "
               "--join`, then move replicas to it with `chorusctl shard move`\n",
               node, version);
    return CTL_OK;
}

int ctl_node(struct ctl_env *env, int argc, char **argv)
{
    uint32_t node = 0;
    const char *sub = argc >= 1 ? argv[0] : "";
    int needs_node = strcmp(sub, "list") != 0;
    if (argc < 1 ||
        (needs_node && (argc < 2 || parse_u32(argv[1], &node) != 0 || node == 0)) ||
        (strcmp(sub, "add") != 0 && strcmp(sub, "drain") != 0 &&
         strcmp(sub, "remove") != 0 && strcmp(sub, "list") != 0 &&
         strcmp(sub, "rejoin") != 0 && strcmp(sub, "activate") != 0)) {
        fprintf(stderr, "usage: chorusctl node list | node add ID [--raft A --client A "
                        "--gateway A] | node drain|activate|remove|rejoin ID\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    struct cc c;
    cc_init(&c, &cfg);
    if (strcmp(sub, "list") == 0) {
        rv = node_list(env, &c);
    } else if (strcmp(sub, "add") == 0) {
        rv = node_add(env, &c, &cfg, node, argc - 2, argv + 2);
    } else {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigaction(SIGINT, &sa, NULL);
        if (strcmp(sub, "rejoin") == 0) {
            rv = node_rejoin(env, &c, node);
        } else if (strcmp(sub, "activate") == 0) {
            char msg[400];
            rv = set_state(&c, node, PLACEMENT_NODE_ACTIVE, msg, sizeof msg);
            if (rv != 0)
                fprintf(stderr, "chorusctl: node activate %u: %s\n", node, msg);
            else if (env->json)
                printf("{\"node\":%u,\"state\":\"active\"}\n", node);
            else
                printf("node %u active: it may receive replicas and leaders again\n", node);
            rv = rv ? CTL_FAILED : CTL_OK;
        }
        else
            rv = node_drain_remove(env, &c, node, strcmp(sub, "remove") == 0);
    }
    cc_close(&c);
    cluster_config_free(&cfg);
    return rv;
}

int ctl_fetch_placement(const struct cluster_config *cfg, struct placement *out)
{
    placement_init(out);
    struct cc c;
    if (cc_init(&c, cfg) != 0)
        return CH_ENOMEM;
    int rv = CH_EUNAVAILABLE;
    for (uint32_t i = 0; i < cfg->n_nodes && rv != 0; i++) {
        struct ch_wbuf f;
        ch_wbuf_init(&f);
        uint64_t id = cc_req_id(&c);
        struct proto_meta_get m = {.flags = PROTO_FLAG_STALE_OK};
        proto_encode_meta_get(&f, id, &m);
        struct cc_reply r;
        int err = ch_wbuf_error(&f) ? CH_ENOMEM
                                    : cc_call(&c, cfg->nodes[i].id, &f, id, 1000, &r);
        ch_wbuf_free(&f);
        if (err != 0 || r.f.type != PROTO_META_GET_REPLY)
            continue;
        struct ch_rbuf body;
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        struct proto_meta_get_reply mr;
        if (proto_decode_meta_get_reply(&body, &mr) != 0 || mr.version == 0)
            continue;
        char msg[256];
        if (placement_decode(mr.map.ptr, mr.map.len, out, msg, sizeof msg) == 0 &&
            out->n_shards == cfg->n_shards && out->replication == cfg->replication)
            rv = 0;
        else
            placement_free(out);
    }
    cc_close(&c);
    return rv;
}

int ctl_sync_placement(struct cluster_config *cfg)
{
    struct placement p;
    int rv = ctl_fetch_placement(cfg, &p);
    if (rv == 0) {
        char msg[256];
        rv = placement_to_config(&p, cfg, msg, sizeof msg);
    }
    placement_free(&p);
    return rv;
}
