/*
 * chorusctl snapshot SHARD|--all: every replica of the shards writes a Raft
 * snapshot now (proto SNAPSHOT), e.g. before a backup or to shorten the log a
 * restarting node replays.  All requests go out at once, because a replica
 * snapshots at its next applied entry, which the leader's request provides.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "client.h"
#include "ctl.h"

#define SNAPSHOT_WAIT_MS 15000

struct pending {
    uint64_t req_id;
    uint32_t shard, node;
    int done, err;
    uint64_t index;
    char msg[200];
};

static void take_reply(struct pending *p, const struct cc_reply *r)
{
    struct ch_rbuf body;
    ch_rbuf_init(&body, r->f.body.ptr, r->f.body.len);
    p->done = 1;
    if (r->f.type == PROTO_SNAPSHOT_REPLY) {
        struct proto_snapshot_reply m;
        if (proto_decode_snapshot_reply(&body, &m) == 0) {
            p->index = m.index;
            return;
        }
    } else if (r->f.type == PROTO_ERROR) {
        struct proto_error e;
        if (proto_decode_error(&body, &e) == 0) {
            p->err = e.err ? e.err : CH_EINTERNAL;
            snprintf(p->msg, sizeof p->msg, "%.*s (%s)",
                     (int)(e.message.len > 150 ? 150 : e.message.len),
                     (const char *)e.message.ptr, ch_errcode(p->err));
            if (e.message.len == 0)
                snprintf(p->msg, sizeof p->msg, "%s (%s)", ch_strerror(p->err),
                         ch_errcode(p->err));
            return;
        }
    }
    p->err = CH_EMALFORMED;
    snprintf(p->msg, sizeof p->msg, "unexpected %s reply", proto_type_name(r->f.type));
}

int ctl_snapshot(struct ctl_env *env, int argc, char **argv)
{
    int all = argc == 1 && strcmp(argv[0], "--all") == 0;
    char *end = NULL;
    unsigned long one = argc == 1 && !all ? strtoul(argv[0], &end, 10) : 0;
    if (argc != 1 || (!all && (end == argv[0] || *end != 0))) {
        fprintf(stderr, "usage: chorusctl snapshot SHARD | snapshot --all\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    if (!all && one >= cfg.n_shards) {
        fprintf(stderr, "chorusctl: no shard %lu (the cluster has %u)\n", one, cfg.n_shards);
        cluster_config_free(&cfg);
        return CTL_USAGE;
    }
    uint32_t first = all ? 0 : (uint32_t)one, last = all ? cfg.n_shards : first + 1;
    size_t n = (size_t)(last - first) * cfg.replication;
    struct pending *p = calloc(n, sizeof *p);
    struct cc c;
    if (p == NULL || cc_init(&c, &cfg) != 0) {
        free(p);
        cluster_config_free(&cfg);
        return CTL_FAILED;
    }
    size_t k = 0;
    for (uint32_t s = first; s < last; s++) {
        for (uint32_t i = 0; i < cfg.replication; i++, k++) {
            p[k].shard = s;
            p[k].node = cfg.replicas[s * cfg.replication + i];
            p[k].req_id = cc_req_id(&c);
            struct ch_wbuf f;
            ch_wbuf_init(&f);
            struct proto_snapshot m = {.admin_token = ch_slice_str(ctl_admin_token(&cfg)),
                                       .shard = s};
            proto_encode_snapshot(&f, p[k].req_id, &m);
            int err = ch_wbuf_error(&f) ? CH_ENOMEM : cc_send(&c, p[k].node, &f);
            ch_wbuf_free(&f);
            if (err != 0) {
                p[k].done = 1;
                p[k].err = err;
                snprintf(p[k].msg, sizeof p[k].msg, "node %u: %s", p[k].node,
                         ch_strerror(err));
            }
        }
    }
    uint64_t deadline = cc_now_ms() + SNAPSHOT_WAIT_MS;
    for (;;) {
        size_t open = 0;
        for (k = 0; k < n; k++)
            open += !p[k].done;
        uint64_t now = cc_now_ms();
        if (open == 0 || now >= deadline)
            break;
        struct cc_reply r;
        int err = cc_recv(&c, (int)(deadline - now), &r);
        for (k = 0; k < n; k++) {
            if (p[k].done)
                continue;
            if (err == 0 && p[k].req_id == r.f.req_id && p[k].node == r.node)
                take_reply(&p[k], &r);
            else if (err == CH_EIO && p[k].node == r.node) {
                p[k].done = 1;
                p[k].err = CH_EIO;
                snprintf(p[k].msg, sizeof p[k].msg, "node %u: connection lost", p[k].node);
            }
        }
    }
    int failed = 0;
    json_t *arr = json_array();
    if (!env->json)
        printf("SHARD NODE  RESULT\n");
    for (k = 0; k < n; k++) {
        if (!p[k].done) {
            p[k].err = CH_ETIMEOUT;
            snprintf(p[k].msg, sizeof p[k].msg, "no answer within %d ms", SNAPSHOT_WAIT_MS);
        }
        failed |= p[k].err != 0;
        if (env->json) {
            json_t *o = json_object();
            json_object_set_new(o, "shard", json_integer(p[k].shard));
            json_object_set_new(o, "node", json_integer(p[k].node));
            json_object_set_new(o, "ok", json_boolean(p[k].err == 0));
            if (p[k].err == 0)
                json_object_set_new(o, "index", json_integer((json_int_t)p[k].index));
            else
                json_object_set_new(o, "error", json_string(p[k].msg));
            json_array_append_new(arr, o);
        } else if (p[k].err == 0) {
            printf("%-5u %-5u snapshot at index %" PRIu64 "\n", p[k].shard, p[k].node,
                   p[k].index);
        } else {
            printf("%-5u %-5u FAILED: %s\n", p[k].shard, p[k].node, p[k].msg);
        }
    }
    if (env->json)
        ctl_print_json(arr);
    else
        json_decref(arr);
    cc_close(&c);
    free(p);
    cluster_config_free(&cfg);
    return failed ? CTL_FAILED : CTL_OK;
}
