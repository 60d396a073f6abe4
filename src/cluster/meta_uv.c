/*
 * The meta group's replica on this node: raft_uv around the pure placement map.
 *
 * Entries are `u32 origin | u64 proposal id | u32 length | placement command |
 * zero padding` (raft wants entry sizes in multiples of 8).  Every replica
 * applies every entry; the replica that proposed it (origin == this node, id in
 * its in-flight list) answers the proposer from the apply, so an answer always
 * means "committed and applied", with the state machine's verdict.  Proposal ids
 * embed a per-boot id so an entry of an earlier run never matches a new proposal.
 */
#include "meta_uv.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <raft.h>
#include <raft/uv.h>

#include "../common/error.h"
#include "../common/log.h"
#include "../raft-log/raft_conf.h"
#include "../raft-log/raft_err.h"
#include "../raft-log/raft_tcp.h"

#define META_LOG -1 /* log lines say "meta" in their text */
#define META_SNAPSHOT_THRESHOLD 256
#define META_SNAPSHOT_TRAILING 128

struct proposal {
    struct raft_apply req;
    struct meta *m;
    uint64_t id;
    meta_done_cb cb;
    void *data;
    int answered;
    struct proposal *prev, *next;
};

struct meta {
    uv_loop_t *loop;
    struct meta_options opt;
    char dir[PATH_MAX];
    char address[64];

    struct raft raft;
    struct raft_io io;
    struct ch_raft_tcp transport; /* raft_uv_tcp with TCP_NODELAY */
    struct raft_fsm fsm;

    struct placement map;
    uint64_t boot_id;
    uint64_t next_id;
    struct proposal *inflight;
    int seeding; /* a SEED proposal is out */

    int last_state;
    uint32_t last_leader;
    uint64_t last_term;

    int closing;
    void (*close_cb)(void *data);
    void *close_data;
};

uint32_t meta_leader_hint(struct meta *m)
{
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&m->raft, &id, &addr);
    return (uint32_t)id;
}

const struct placement *meta_placement(const struct meta *m)
{
    return &m->map;
}

/* ---- state machine ------------------------------------------------------------------
 */

static void unlink_proposal(struct meta *m, struct proposal *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        m->inflight = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct meta *m = fsm->data;
    *result = NULL;
    struct ch_rbuf r;
    ch_rbuf_init(&r, buf->base, buf->len);
    uint32_t origin = ch_get_u32(&r);
    uint64_t id = ch_get_u64(&r);
    struct ch_slice body = ch_get_bytes32(&r, buf->len);
    struct placement_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    char msg[256] = "";
    int rv = r.err ? CH_EMALFORMED : placement_cmd_decode(body.ptr, body.len, &cmd);
    uint64_t before = m->map.version;
    if (rv == 0)
        rv = placement_apply(&m->map, &cmd, msg, sizeof msg);
    else
        snprintf(msg, sizeof msg, "undecodable meta entry");
    if (rv == CH_ENOMEM) {
        CH_ERROR(META_LOG, "meta: out of memory applying an entry; stopping");
        abort();
    }
    if (rv == 0 && m->map.version != before) {
        if (cmd.op == PLACEMENT_SEED)
            CH_INFO(META_LOG,
                    "meta: placement seeded from the config (%u shards x %u, "
                    "%u nodes)",
                    m->map.n_shards, m->map.replication, m->map.n_nodes);
        else
            CH_INFO(META_LOG,
                    "meta: placement version %" PRIu64 " (op %u shard %u %u->%u "
                    "node %u)",
                    m->map.version, cmd.op, cmd.shard, cmd.from, cmd.to,
                    cmd.node.addr.id);
    } else if (rv != 0 && !(cmd.op == PLACEMENT_SEED && rv == CH_EEXISTS)) {
        CH_INFO(META_LOG, "meta: command refused: %s (%s)", msg, ch_errname(rv));
    }
    if (origin == m->opt.node_id) {
        for (struct proposal *p = m->inflight; p != NULL; p = p->next) {
            if (p->id == id && !p->answered) {
                p->answered = 1;
                p->cb(p->data, rv, msg, m->map.version, 0);
                break;
            }
        }
    }
    if (rv == 0 && m->map.version != before && m->opt.on_change)
        m->opt.on_change(m->opt.data, &m->map);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct meta *m = fsm->data;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    placement_encode(&m->map, &b);
    if (ch_wbuf_error(&b) != 0) {
        ch_wbuf_free(&b);
        return RAFT_NOMEM;
    }
    *bufs = raft_malloc(sizeof **bufs);
    void *copy = raft_malloc(b.len ? b.len : 1);
    if (*bufs == NULL || copy == NULL) {
        raft_free(*bufs);
        raft_free(copy);
        ch_wbuf_free(&b);
        return RAFT_NOMEM;
    }
    memcpy(copy, b.data, b.len);
    (*bufs)[0].base = copy;
    (*bufs)[0].len = b.len;
    *n_bufs = 1;
    ch_wbuf_free(&b);
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct meta *m = fsm->data;
    struct placement p;
    char err[256] = "";
    int rv = placement_decode(buf->base, buf->len, &p, err, sizeof err);
    if (rv != 0) {
        CH_ERROR(META_LOG, "meta: snapshot restore failed: %s (%s)", err, ch_errname(rv));
        placement_free(&p);
        return rv == CH_ENOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    raft_free(buf->base);
    placement_free(&m->map);
    m->map = p;
    CH_INFO(META_LOG, "meta: snapshot restored, placement version %" PRIu64, p.version);
    if (m->opt.on_change)
        m->opt.on_change(m->opt.data, &m->map);
    return 0;
}

/* ---- proposals -------------------------------------------------------------------- */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct proposal *p = req->data;
    struct meta *m = p->m;
    unlink_proposal(m, p);
    if (!p->answered) {
        /* Not applied here (leadership lost, shutdown): outcome unknown to us. */
        int err = status == 0 ? CH_EINTERNAL : ch_from_raft(status);
        p->cb(p->data, err, ch_strerror(err), m->map.version,
              err == CH_ENOTLEADER ? meta_leader_hint(m) : 0);
    }
    free(p);
}

int meta_propose(struct meta *m, const struct placement_cmd *cmd, meta_done_cb cb,
                 void *data, uint32_t *leader_hint)
{
    *leader_hint = 0;
    if (m->closing)
        return CH_ESHUTDOWN;
    if (raft_state(&m->raft) != RAFT_LEADER) {
        *leader_hint = meta_leader_hint(m);
        return CH_ENOTLEADER;
    }
    struct proposal *p = calloc(1, sizeof *p);
    if (p == NULL)
        return CH_ENOMEM;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    p->id = m->boot_id << 32 | (++m->next_id & 0xffffffffu);
    struct ch_wbuf cmdbuf;
    ch_wbuf_init(&cmdbuf);
    placement_cmd_encode(cmd, &cmdbuf);
    ch_put_u32(&b, m->opt.node_id);
    ch_put_u64(&b, p->id);
    ch_put_bytes32(&b, (struct ch_slice){cmdbuf.data, cmdbuf.len});
    while (b.len % 8 != 0)
        ch_put_u8(&b, 0);
    if (ch_wbuf_error(&cmdbuf) != 0)
        b.oom = 1;
    ch_wbuf_free(&cmdbuf);
    struct raft_buffer rb = {.base = NULL, .len = b.len};
    if (ch_wbuf_error(&b) != 0 || (rb.base = raft_malloc(b.len)) == NULL) {
        ch_wbuf_free(&b);
        free(p);
        return CH_ENOMEM;
    }
    memcpy(rb.base, b.data, b.len);
    ch_wbuf_free(&b);
    p->m = m;
    p->cb = cb;
    p->data = data;
    p->req.data = p;
    p->next = m->inflight;
    if (m->inflight)
        m->inflight->prev = p;
    m->inflight = p;
    int rv = raft_apply(&m->raft, &p->req, &rb, 1, apply_cb);
    if (rv != 0) {
        CH_WARN(META_LOG, "meta: proposal refused by raft: %s (%s)", raft_strerror(rv),
                raft_errmsg(&m->raft));
        unlink_proposal(m, p);
        free(p);
        if (rv == RAFT_NOTLEADER)
            *leader_hint = meta_leader_hint(m);
        return ch_from_raft(rv);
    }
    return 0;
}

struct meta_reader {
    struct raft_barrier req;
    struct meta *m;
    meta_read_cb cb;
    void *data;
};

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct meta_reader *rd = req->data;
    int err = ch_from_raft(status);
    rd->cb(rd->data, err, err == CH_ENOTLEADER ? meta_leader_hint(rd->m) : 0);
    free(rd);
}

int meta_read(struct meta *m, meta_read_cb cb, void *data, uint32_t *leader_hint)
{
    *leader_hint = 0;
    if (m->closing)
        return CH_ESHUTDOWN;
    if (raft_state(&m->raft) != RAFT_LEADER) {
        *leader_hint = meta_leader_hint(m);
        return CH_ENOTLEADER;
    }
    struct meta_reader *rd = calloc(1, sizeof *rd);
    if (rd == NULL)
        return CH_ENOMEM;
    rd->m = m;
    rd->cb = cb;
    rd->data = data;
    rd->req.data = rd;
    int rv = raft_barrier(&m->raft, &rd->req, barrier_cb);
    if (rv != 0) {
        free(rd);
        if (rv == RAFT_NOTLEADER)
            *leader_hint = meta_leader_hint(m);
        return ch_from_raft(rv);
    }
    return 0;
}

int meta_conf(struct meta *m, int op, uint32_t node, const char *address,
              void (*cb)(void *data, int status, int role), void *data, int *role,
              uint32_t *leader_hint)
{
    *leader_hint = 0;
    *role = raft_conf_role(&m->raft, node);
    if (m->closing)
        return CH_ESHUTDOWN;
    if (raft_state(&m->raft) != RAFT_LEADER) {
        *leader_hint = meta_leader_hint(m);
        return CH_ENOTLEADER;
    }
    return raft_conf_change(&m->raft, -1, op, node, address, cb, data, role);
}

/* ---- seeding and watch ----------------------------------------------------------------
 */

static void seed_done(void *data, int status, const char *msg, uint64_t version,
                      uint32_t leader_hint)
{
    (void)version;
    (void)leader_hint;
    struct meta *m = data;
    m->seeding = 0;
    if (status != 0 && status != CH_EEXISTS && status != CH_ESHUTDOWN)
        CH_WARN(META_LOG, "meta: seeding the placement failed: %s (will retry)", msg);
}

static void maybe_seed(struct meta *m)
{
    if (m->seeding || m->map.version != 0 || raft_state(&m->raft) != RAFT_LEADER)
        return;
    struct placement seed;
    if (placement_from_config(&seed, m->opt.config) != 0)
        return;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    placement_encode(&seed, &b);
    placement_free(&seed);
    struct placement_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.op = PLACEMENT_SEED;
    cmd.seed.ptr = b.data;
    cmd.seed.len = b.len;
    uint32_t hint;
    if (ch_wbuf_error(&b) == 0 && meta_propose(m, &cmd, seed_done, m, &hint) == 0)
        m->seeding = 1;
    ch_wbuf_free(&b);
}

void meta_watch(struct meta *m)
{
    if (m->closing)
        return;
    int state = (int)raft_state(&m->raft);
    uint32_t leader = meta_leader_hint(m);
    uint64_t term = raft_current_term(&m->raft);
    if (state != m->last_state || leader != m->last_leader || term != m->last_term) {
        CH_INFO(
            META_LOG, "meta: raft state=%s term=%" PRIu64 " leader=%u commit=%" PRIu64,
            raft_state_name(state), term, leader, (uint64_t)raft_commit_index(&m->raft));
        m->last_state = state;
        m->last_leader = leader;
        m->last_term = term;
    }
    maybe_seed(m);
}

/* ---- open / close
 * ---------------------------------------------------------------------- */

static void raft_closed(struct raft *r)
{
    struct meta *m = r->data;
    raft_uv_close(&m->io);
    ch_raft_tcp_close(&m->transport);
    placement_free(&m->map);
    void (*cb)(void *) = m->close_cb;
    void *data = m->close_data;
    free(m);
    if (cb)
        cb(data);
}

void meta_close(struct meta *m, void (*cb)(void *data), void *data)
{
    if (m->closing)
        return;
    m->closing = 1;
    m->close_cb = cb;
    m->close_data = data;
    raft_close(&m->raft, raft_closed);
}

int meta_open(uv_loop_t *loop, const struct meta_options *opt, struct meta **out,
              char *err, size_t errlen)
{
    const struct cluster_config *cfg = opt->config;
    const struct cluster_node *self = cluster_node_by_id(cfg, opt->node_id);
    if (self == NULL) {
        snprintf(err, errlen, "node %u is not in the config", opt->node_id);
        return CH_ECONFIG;
    }
    struct meta *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    m->loop = loop;
    m->opt = *opt;
    m->last_state = -1;
    placement_init(&m->map);
    uint64_t boot = 0;
    if (getrandom(&boot, sizeof boot, 0) != sizeof boot)
        boot = (uint64_t)time(NULL);
    m->boot_id = boot & 0xffffffffu;
    snprintf(m->dir, sizeof m->dir, "%s/meta", opt->data_dir);
    if (mkdir(m->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", m->dir, strerror(errno));
        free(m);
        return CH_EIO;
    }
    cluster_meta_address(self, cfg->n_shards, m->address, sizeof m->address);

    m->fsm.version = 1;
    m->fsm.data = m;
    m->fsm.apply = fsm_apply;
    m->fsm.snapshot = fsm_snapshot;
    m->fsm.restore = fsm_restore;

    int rv;
    if ((rv = ch_raft_tcp_init(&m->transport, loop)) != 0) {
        snprintf(err, errlen, "meta raft transport: %s", raft_strerror(rv));
        free(m);
        return CH_EIO;
    }
    if ((rv = raft_uv_init(&m->io, loop, m->dir, &m->transport.outer)) != 0) {
        snprintf(err, errlen, "meta raft storage in %s: %s", m->dir, m->io.errmsg);
        ch_raft_tcp_close(&m->transport);
        free(m);
        return CH_EIO;
    }
    raft_uv_set_segment_size(&m->io, 256u << 10);
    raft_uv_set_connect_retry_delay(&m->io, 100);
    if ((rv = raft_init(&m->raft, &m->io, &m->fsm, opt->node_id, m->address)) != 0) {
        snprintf(err, errlen, "meta raft init in %s: %s", m->dir, raft_errmsg(&m->raft));
        raft_uv_close(&m->io);
        ch_raft_tcp_close(&m->transport);
        free(m);
        return CH_EIO;
    }
    m->raft.data = m;
    ch_raft_quiet_tracer(&m->raft, &m->io);
    raft_set_election_timeout(&m->raft, cfg->raft.election_timeout_ms);
    raft_set_heartbeat_timeout(&m->raft, cfg->raft.heartbeat_timeout_ms);
    raft_set_pre_vote(&m->raft, cfg->raft.pre_vote ? true : false);
    raft_set_snapshot_threshold(&m->raft, META_SNAPSHOT_THRESHOLD);
    raft_set_snapshot_trailing(&m->raft, META_SNAPSHOT_TRAILING);
    raft_set_capacity_threshold(&m->raft, 256);
    raft_seed(&m->raft, (unsigned)(boot * 2654435761u + opt->node_id));

    rv = 0;
    if (opt->bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (uint32_t i = 0; i < cfg->n_meta && rv == 0; i++) {
            char addr[64];
            cluster_meta_address(cluster_node_by_id(cfg, cfg->meta[i]), cfg->n_shards,
                                 addr, sizeof addr);
            rv = raft_configuration_add(&conf, cfg->meta[i], addr, RAFT_VOTER);
        }
        if (rv == 0)
            rv = raft_bootstrap(&m->raft, &conf);
        raft_configuration_close(&conf);
        if (rv == 0)
            CH_INFO(META_LOG, "meta: bootstrapped new meta replica in %s", m->dir);
        else if (rv == RAFT_CANTBOOTSTRAP)
            rv = 0;
    }
    if (rv == 0)
        rv = raft_start(&m->raft);
    if (rv != 0) {
        snprintf(err, errlen, "meta raft start on %s failed: %s: %s", m->address,
                 raft_strerror(rv), raft_errmsg(&m->raft));
        m->closing = 1;
        raft_close(&m->raft, raft_closed);
        return CH_EIO;
    }
    *out = m;
    return 0;
}
