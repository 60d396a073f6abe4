/*
 * Raft membership changes: one idempotent step per call, so a tool can retry
 * any of them after a lost answer or resume an interrupted shard move.
 */
#include "raft_conf.h"

#include <stdlib.h>

#include "../common/error.h"
#include "../common/log.h"
#include "../proto/proto.h"
#include "raft_err.h"

struct conf_change {
    struct raft_change req;
    struct raft *raft;
    int log_shard;
    int op;
    uint32_t node;
    int stage; /* ADD: 0 raft_add, 1 raft_assign STANDBY */
    raft_conf_cb cb;
    void *data;
};

int raft_conf_role(const struct raft *r, uint32_t node)
{
    const struct raft_configuration *conf = &r->configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id != node)
            continue;
        switch (conf->servers[i].role) {
        case RAFT_VOTER:
            return PROTO_RAFT_ROLE_VOTER;
        case RAFT_STANDBY:
            return PROTO_RAFT_ROLE_STANDBY;
        default:
            return PROTO_RAFT_ROLE_SPARE;
        }
    }
    return PROTO_RAFT_ROLE_NONE;
}

static int conf_err(int rv)
{
    return rv == RAFT_CANTCHANGE ? CH_EUNAVAILABLE
           : rv == RAFT_BADID    ? CH_EINVAL
                                 : ch_from_raft(rv);
}

static const char *op_name(int op)
{
    return op == PROTO_SHARD_CONF_ADD       ? "add as standby"
           : op == PROTO_SHARD_CONF_PROMOTE ? "promote to voter"
                                            : "remove";
}

static void conf_done(struct raft_change *req, int status)
{
    struct conf_change *c = req->data;
    if (status == 0 && c->op == PROTO_SHARD_CONF_ADD && c->stage == 0) {
        c->stage = 1;
        int rv = raft_assign(c->raft, &c->req, c->node, RAFT_STANDBY, conf_done);
        if (rv == 0)
            return;
        status = rv;
    }
    int role = status == RAFT_SHUTDOWN ? PROTO_RAFT_ROLE_NONE
                                       : raft_conf_role(c->raft, c->node);
    int err = status == 0 ? 0 : conf_err(status);
    CH_INFO(c->log_shard, "%smembership change: %s node %u: %s (role now %d)",
            c->log_shard < 0 ? "meta: " : "", op_name(c->op), c->node,
            err ? ch_strerror(err) : "done", role);
    c->cb(c->data, err, role);
    free(c);
}

int raft_conf_change(struct raft *r, int log_shard, int op, uint32_t node,
                     const char *address, raft_conf_cb cb, void *data, int *role)
{
    *role = raft_conf_role(r, node);
    switch (op) {
    case PROTO_SHARD_CONF_ADD:
        if (*role == PROTO_RAFT_ROLE_STANDBY || *role == PROTO_RAFT_ROLE_VOTER)
            return CH_EEXISTS;
        break;
    case PROTO_SHARD_CONF_PROMOTE:
        if (*role == PROTO_RAFT_ROLE_VOTER)
            return CH_EEXISTS;
        if (*role == PROTO_RAFT_ROLE_NONE)
            return CH_EINVAL;
        break;
    case PROTO_SHARD_CONF_REMOVE:
        if (*role == PROTO_RAFT_ROLE_NONE)
            return CH_EEXISTS;
        if (node == r->id)
            return CH_EINVAL;
        break;
    default:
        return CH_EINVAL;
    }
    struct conf_change *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CH_ENOMEM;
    c->raft = r;
    c->log_shard = log_shard;
    c->op = op;
    c->node = node;
    c->cb = cb;
    c->data = data;
    c->req.data = c;
    int rv;
    if (op == PROTO_SHARD_CONF_ADD && *role == PROTO_RAFT_ROLE_SPARE) {
        c->stage = 1;
        rv = raft_assign(r, &c->req, node, RAFT_STANDBY, conf_done);
    } else if (op == PROTO_SHARD_CONF_ADD) {
        rv = raft_add(r, &c->req, node, address, conf_done);
    } else if (op == PROTO_SHARD_CONF_PROMOTE) {
        rv = raft_assign(r, &c->req, node, RAFT_VOTER, conf_done);
    } else {
        rv = raft_remove(r, &c->req, node, conf_done);
    }
    if (rv != 0) {
        free(c);
        return conf_err(rv);
    }
    CH_INFO(log_shard, "%smembership change started: %s node %u",
            log_shard < 0 ? "meta: " : "", op_name(op), node);
    return 0;
}
