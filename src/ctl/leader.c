/*
 * chorusctl leader transfer|balance: moving shard leadership with the store
 * RPC's TRANSFER (docs/store-rpc.md).  The current leaders come from the same
 * status sweep `chorusctl status` makes; balance plans with the pure
 * balance.c and runs the plan one transfer at a time.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "balance.h"
#include "client.h"
#include "ctl.h"

/* Longer than the server's own guard (max(5 s, 2 election timeouts + 1 s)). */
#define LEADER_CALL_MIN_TIMEOUT_MS 10000

struct transfer_result {
    uint32_t from, to; /* the leader asked, and the leader afterwards */
    double ms;         /* request sent -> reply received */
    int err;
    char msg[256];
};

static int call_timeout(const struct cluster_config *cfg)
{
    int t = (int)(2 * cfg->raft.election_timeout_ms + 5000);
    return t < LEADER_CALL_MIN_TIMEOUT_MS ? LEADER_CALL_MIN_TIMEOUT_MS : t;
}

/*
 * Asks node `from` (believed to lead the shard) to hand leadership to `to` (0:
 * Raft's choice) and waits for the outcome.  Follows a not_leader hint twice at
 * most.  Returns 0 with res->to = the new leader, or an error code with res->msg.
 */
static int transfer_call(struct cc *c, uint32_t shard, uint32_t from, uint32_t to,
                         struct transfer_result *res)
{
    memset(res, 0, sizeof *res);
    res->from = from;
    for (int attempt = 0;; attempt++) {
        struct ch_wbuf f;
        ch_wbuf_init(&f);
        uint64_t id = cc_req_id(c);
        struct proto_transfer m = {.admin_token = ch_slice_str(ctl_admin_token(c->cfg)),
                                   .shard = shard,
                                   .to_node = to};
        proto_encode_transfer(&f, id, &m);
        struct cc_reply r;
        uint64_t t0 = cc_now_us();
        int rv = ch_wbuf_error(&f) ? CH_ENOMEM
                                   : cc_call(c, from, &f, id, call_timeout(c->cfg), &r);
        res->ms = (double)(cc_now_us() - t0) / 1000.0;
        ch_wbuf_free(&f);
        struct ch_rbuf body;
        if (rv != 0) {
            snprintf(res->msg, sizeof res->msg, "node %u: %s", from, ch_strerror(rv));
            return res->err = rv;
        }
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        if (r.f.type == PROTO_TRANSFER_REPLY) {
            struct proto_transfer_reply tr;
            if (proto_decode_transfer_reply(&body, &tr) == 0 && tr.shard == shard) {
                res->to = tr.leader;
                return 0;
            }
        } else if (r.f.type == PROTO_ERROR) {
            struct proto_error e;
            if (proto_decode_error(&body, &e) == 0) {
                if (e.err == CH_ENOTLEADER && e.leader_hint != 0 && e.leader_hint != from &&
                    attempt < 2) {
                    from = res->from = e.leader_hint; /* it moved since the status sweep */
                    continue;
                }
                snprintf(res->msg, sizeof res->msg, "%.*s",
                         (int)(e.message.len > 200 ? 200 : e.message.len),
                         (const char *)e.message.ptr);
                return res->err = e.err;
            }
        }
        snprintf(res->msg, sizeof res->msg, "node %u: unexpected reply", from);
        return res->err = CH_EMALFORMED;
    }
}

static int transfer_failed(const char *what, const struct transfer_result *res)
{
    fprintf(stderr, "chorusctl: %s: %s (%s)\n", what, ch_errcode(res->err),
            res->msg[0] ? res->msg : ch_strerror(res->err));
    return CTL_FAILED;
}

static int parse_num(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != 0)
        return -1;
    *out = v;
    return 0;
}

/* The leader of every shard per the status sweep (0: none); NULL on OOM. */
static uint32_t *status_leaders(json_t *st, uint32_t n_shards)
{
    uint32_t *leader = calloc(n_shards ? n_shards : 1, sizeof *leader);
    if (leader == NULL)
        return NULL;
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(st, "shards"), i, s)
    {
        json_int_t id = json_integer_value(json_object_get(s, "id"));
        json_t *l = json_object_get(s, "leader");
        if (id >= 0 && (uint32_t)id < n_shards && json_is_integer(l))
            leader[id] = (uint32_t)json_integer_value(l);
    }
    return leader;
}

/* ---- leader transfer SHARD [--to NODE] ------------------------------------------- */

static int cmd_transfer(const struct ctl_env *env, int argc, char **argv)
{
    uint64_t shard = UINT64_MAX, to = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc && parse_num(argv[i + 1], &to) == 0 &&
            to != 0) {
            i++;
            continue;
        }
        if (shard == UINT64_MAX && parse_num(argv[i], &shard) == 0)
            continue;
        fprintf(stderr, "usage: chorusctl leader transfer SHARD [--to NODE]\n");
        return CTL_USAGE;
    }
    if (shard == UINT64_MAX) {
        fprintf(stderr, "usage: chorusctl leader transfer SHARD [--to NODE]\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    if (shard >= cfg.n_shards || (to && cluster_node_by_id(&cfg, (uint32_t)to) == NULL)) {
        if (shard >= cfg.n_shards)
            fprintf(stderr, "chorusctl: no shard %" PRIu64 " (the cluster has %u)\n", shard,
                    cfg.n_shards);
        else
            fprintf(stderr, "chorusctl: node %" PRIu64 " is not in the config\n", to);
        cluster_config_free(&cfg);
        return CTL_USAGE;
    }
    json_t *st = ctl_status(&cfg, 0);
    if (ctl_status_unauthorized(st, "leader transfer")) {
        json_decref(st);
        cluster_config_free(&cfg);
        return CTL_FAILED;
    }
    uint32_t *leaders = st ? status_leaders(st, cfg.n_shards) : NULL;
    uint32_t from = leaders ? leaders[shard] : 0;
    free(leaders);
    json_decref(st);
    if (from == 0) {
        fprintf(stderr, "chorusctl: leader transfer: unavailable (shard %" PRIu64
                        " has no leader right now; see chorusctl status)\n",
                shard);
        cluster_config_free(&cfg);
        return CTL_FAILED;
    }
    struct cc c;
    cc_init(&c, &cfg);
    struct transfer_result res;
    rv = transfer_call(&c, (uint32_t)shard, from, (uint32_t)to, &res);
    cc_close(&c);
    if (rv != 0) {
        rv = transfer_failed("leader transfer", &res);
    } else if (to != 0 && res.to != to) {
        fprintf(stderr, "chorusctl: leader transfer: unavailable (leadership of shard %" PRIu64
                        " went to node %u, not node %" PRIu64 ")\n",
                shard, res.to, to);
        rv = CTL_FAILED;
    }
    if (rv == 0 && env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "shard", json_integer((json_int_t)shard));
        json_object_set_new(o, "from", json_integer(res.from));
        json_object_set_new(o, "to", json_integer(res.to));
        json_object_set_new(o, "requested", to ? json_integer((json_int_t)to) : json_null());
        json_object_set_new(o, "ms", json_real(res.ms));
        ctl_print_json(o);
    } else if (rv == 0) {
        printf("shard %" PRIu64 ": leader %u -> %u (%.1f ms)%s\n", shard, res.from, res.to,
               res.ms, res.from == res.to ? " (already the leader)" : "");
    }
    cluster_config_free(&cfg);
    return rv;
}

/* ---- leader balance [--dry-run] ---------------------------------------------------- */

static int cmd_balance(const struct ctl_env *env, int argc, char **argv)
{
    int dry_run = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            dry_run = 1;
            continue;
        }
        fprintf(stderr, "usage: chorusctl leader balance [--dry-run]\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    uint32_t ids[CLUSTER_MAX_NODES];
    uint8_t up[CLUSTER_MAX_NODES];
    json_t *st = ctl_status(&cfg, 0);
    if (ctl_status_unauthorized(st, "leader balance")) {
        json_decref(st);
        cluster_config_free(&cfg);
        return CTL_FAILED;
    }
    uint32_t *leaders = st ? status_leaders(st, cfg.n_shards) : NULL;
    for (uint32_t i = 0; i < cfg.n_nodes; i++) {
        ids[i] = cfg.nodes[i].id;
        json_t *n = json_array_get(json_object_get(st, "nodes"), i);
        /* a draining (or removed) node takes no leaders: like a down node here */
        const char *state = json_string_value(json_object_get(n, "state"));
        up[i] =
            json_is_true(json_object_get(n, "up")) &&
            !(state && (strcmp(state, "draining") == 0 || strcmp(state, "removed") == 0));
    }
    json_decref(st);
    struct balance_input in = {.n_nodes = cfg.n_nodes,
                               .node_ids = ids,
                               .node_up = up,
                               .n_shards = cfg.n_shards,
                               .replication = cfg.replication,
                               .replicas = cfg.replicas,
                               .leader = leaders};
    struct balance_plan plan;
    int err = leaders ? balance_plan(&in, &plan) : CH_ENOMEM;
    if (err != 0) {
        free(leaders);
        cluster_config_free(&cfg);
        fprintf(stderr, "chorusctl: leader balance: %s (%s)\n", ch_errcode(err),
                ch_strerror(err));
        return CTL_FAILED;
    }
    if (!env->json)
        printf("%zu move%s planned%s\n", plan.n_moves, plan.n_moves == 1 ? "" : "s",
               dry_run ? " (dry run)" : "");
    json_t *moves = json_array();
    struct cc c;
    cc_init(&c, &cfg);
    for (size_t m = 0; m < plan.n_moves; m++) {
        const struct balance_move *mv = &plan.moves[m];
        json_t *mj = json_object();
        json_object_set_new(mj, "shard", json_integer(mv->shard));
        json_object_set_new(mj, "from", json_integer(mv->from));
        json_object_set_new(mj, "to", json_integer(mv->to));
        json_array_append_new(moves, mj);
        if (dry_run) {
            if (!env->json)
                printf("shard %u: leader %u -> %u\n", mv->shard, mv->from, mv->to);
            continue;
        }
        struct transfer_result res;
        err = transfer_call(&c, mv->shard, mv->from, mv->to, &res);
        if (err == 0 && res.to != mv->to) {
            snprintf(res.msg, sizeof res.msg, "leadership of shard %u went to node %u, "
                     "not node %u", mv->shard, res.to, mv->to);
            err = res.err = CH_EUNAVAILABLE;
        }
        json_object_set_new(mj, "ms", json_real(res.ms));
        json_object_set_new(mj, "ok", json_boolean(err == 0));
        if (err != 0) {
            json_object_set_new(mj, "error", json_string(ch_errcode(err)));
            json_object_set_new(mj, "message", json_string(res.msg));
            rv = transfer_failed("leader balance", &res);
            fprintf(stderr, "chorusctl: leader balance: stopped after %zu of %zu moves\n", m,
                    plan.n_moves);
            break; /* the rest of the plan assumed this move */
        }
        if (!env->json) {
            printf("shard %u: leader %u -> %u (%.1f ms)\n", mv->shard, res.from, res.to,
                   res.ms);
            fflush(stdout);
        }
    }
    cc_close(&c);
    /* The outcome: the plan's counts for a dry run, else a fresh status sweep. */
    uint32_t counts[CLUSTER_MAX_NODES];
    memcpy(counts, plan.counts, cfg.n_nodes * sizeof counts[0]);
    if (!dry_run) {
        json_t *after = ctl_status(&cfg, 0);
        uint32_t *now = after ? status_leaders(after, cfg.n_shards) : NULL;
        if (now != NULL) {
            memset(counts, 0, sizeof counts);
            for (uint32_t s = 0; s < cfg.n_shards; s++)
                for (uint32_t i = 0; i < cfg.n_nodes; i++)
                    counts[i] += now[s] == ids[i];
        }
        free(now);
        json_decref(after);
    }
    uint32_t spread = balance_spread(&in, counts);
    if (env->json) {
        json_t *o = json_object();
        json_t *per_node = json_array();
        for (uint32_t i = 0; i < cfg.n_nodes; i++) {
            json_t *nj = json_object();
            json_object_set_new(nj, "node", json_integer(ids[i]));
            json_object_set_new(nj, "up", json_boolean(up[i]));
            json_object_set_new(nj, "leaders", json_integer(counts[i]));
            json_array_append_new(per_node, nj);
        }
        json_object_set_new(o, "dry_run", json_boolean(dry_run));
        json_object_set_new(o, "ok", json_boolean(rv == 0));
        json_object_set_new(o, "moves", moves);
        json_object_set_new(o, "leaders", per_node);
        json_object_set_new(o, "spread", json_integer(spread));
        ctl_print_json(o);
    } else {
        json_decref(moves);
        printf("leaders per node%s:", dry_run ? " after the plan" : "");
        for (uint32_t i = 0; i < cfg.n_nodes; i++) {
            if (up[i])
                printf(" %u:%u", ids[i], counts[i]);
            else
                printf(" %u:down", ids[i]);
        }
        printf(" (spread %u)\n", spread);
    }
    balance_plan_free(&plan);
    free(leaders);
    cluster_config_free(&cfg);
    return rv;
}

int ctl_leader(struct ctl_env *env, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "transfer") == 0)
        return cmd_transfer(env, argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "balance") == 0)
        return cmd_balance(env, argc - 1, argv + 1);
    fprintf(stderr, "usage: chorusctl leader transfer SHARD [--to NODE] | leader balance "
                    "[--dry-run]\n");
    return CTL_USAGE;
}
