/*
 * chorusd: one chorus node.  Hosts this node's replicas of every shard (one
 * canonical/raft group each) and serves the store RPC, all on one libuv loop.
 *
 *   chorusd --config FILE --node ID --data DIR [--join] [--web DIR] [--log-level LEVEL]
 *
 * On its first start a node bootstraps the shards the config places on it (and
 * the meta group, if it is a meta voter) — every node of a new cluster does the
 * same, with the same config.  After that the placement lives in the meta
 * group: the node polls it and opens the replicas it should host (joining their
 * groups) and closes and deletes the ones moved away.  --join: a node that
 * joins an existing cluster (added later, or replacing lost data) never
 * bootstraps anything; the shards' leaders add it and send it the logs.
 *
 * Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when it cannot
 * start (bad config, unusable or foreign data directory, corrupt state), 1 on a
 * fatal runtime error.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include <ftw.h>

#include "../cluster/config.h"
#include "../cluster/meta_uv.h"
#include "../cluster/placement.h"
#include "../common/bugs.h"
#include "../common/error.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "../gateway/gateway_lws.h"
#include "../gateway/metrics.h"
#include "../gateway/rpc_uv.h"
#include "../proto/proto.h"
#include "../raft-log/shard_uv.h"
#include "../raft-log/store_uv.h"

#define STREAM_RETAIN_ENTRIES 8192
#define WATCH_INTERVAL_MS 200
#define META_POLL_MS 300
#define BOOTSTRAPPED_FILE "BOOTSTRAPPED"

struct node {
    uv_loop_t loop;
    struct cluster_config config;
    uint32_t id;
    char data_dir[PATH_MAX];
    struct shard **shards;
    uint8_t *removing; /* per shard: closing to delete its data (moved away) */
    uint32_t shards_open;
    uint64_t boot;
    struct meta *meta;       /* this node's meta replica (meta voters only) */
    struct rpc *meta_rpc;    /* polls the meta group's leader */
    struct placement cached; /* newest map read linearizably from the meta group */
    uv_timer_t poll;
    int poll_inflight;
    int poll_warned;
    int poll_failures; /* consecutive polls without an answer */
    int poll_linearizable; /* the poll in flight is a linearizable read */
    int delete_pending;    /* a stale map moved a replica away: confirm, then delete */
    int disk_low;
    unsigned watch_ticks;
    uint64_t start_ms;
    struct store *store;
    struct gw *gw;
    uv_signal_t sigterm, sigint;
    uv_timer_t watch;
    int stopping;
    int exit_code;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: chorusd --config FILE --node ID --data DIR [--join] [--web DIR] "
                 "[--log-level debug|info|warn|error]\n");
}

/* ---- the data directory's identity ---------------------------------------------------
 *
 * DIR/IDENTITY records which cluster and node the directory belongs to, with a
 * checksum, so a node never starts on another node's data (a classic operator
 * mistake that would otherwise corrupt a Raft group).  DIR/LOCK is held with
 * flock for the life of the process.
 */
static int check_identity(struct node *n, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    char want[256];
    snprintf(want, sizeof want, "chorus-data v1 cluster=%s node=%u", n->config.name, n->id);
    uint32_t crc = ch_crc32c(0, want, strlen(want));
    snprintf(path, sizeof path, "%s/IDENTITY", n->data_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return CH_EIO;
        }
        char tmp[PATH_MAX + 16];
        snprintf(tmp, sizeof tmp, "%s/IDENTITY.tmp", n->data_dir);
        f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "%s crc=%08x\n", want, crc) < 0 || fflush(f) != 0 ||
            fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
            return CH_EIO;
        }
        return 0;
    }
    char line[512] = "";
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char expect[300];
    snprintf(expect, sizeof expect, "%s crc=%08x\n", want, crc);
    if (got == NULL || strcmp(line, expect) != 0) {
        line[strcspn(line, "\n")] = 0;
        snprintf(err, errlen,
                 "%s says \"%s\" but this is cluster=%s node=%u: refusing to use "
                 "another node's data (or the file is corrupt)",
                 path, line, n->config.name, n->id);
        return CH_ECONFIG;
    }
    return 0;
}

static int lock_data_dir(struct node *n, char *err, size_t errlen)
{
    if (mkdir(n->data_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data dir %s: %s", n->data_dir, strerror(errno));
        return CH_EIO;
    }
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/LOCK", n->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return CH_EIO;
    }
    /* A previous chorusd on this dir may still be exiting (kill -9 waits for its
     * in-flight disk I/O): give it a few seconds before giving up. */
    int locked = -1;
    for (int i = 0; i < 50 && (locked = flock(fd, LOCK_EX | LOCK_NB)) != 0; i++)
        usleep(100 * 1000);
    if (locked != 0) {
        snprintf(err, errlen, "%s is locked: another chorusd uses this data dir",
                 n->data_dir);
        close(fd);
        return CH_EIO;
    }
    return 0; /* the fd stays open (and locked) until exit */
}

/* ---- shutdown ---------------------------------------------------------------------- */

static void shard_closed(void *data)
{
    struct node *n = data;
    n->shards_open--;
}

static void close_shards(struct node *n)
{
    for (uint32_t i = 0; i < n->config.n_shards; i++) {
        if (n->shards[i] != NULL) {
            shard_close(n->shards[i], shard_closed, n);
            n->shards[i] = NULL;
        }
    }
}

static void store_closed(void *data)
{
    struct node *n = data;
    close_shards(n);
    if (n->meta != NULL) {
        meta_close(n->meta, NULL, NULL);
        n->meta = NULL;
    }
}

static void node_stop(struct node *n, int code)
{
    if (n->stopping)
        return;
    n->stopping = 1;
    n->exit_code = code;
    uv_close((uv_handle_t *)&n->sigterm, NULL);
    uv_close((uv_handle_t *)&n->sigint, NULL);
    uv_close((uv_handle_t *)&n->watch, NULL);
    uv_close((uv_handle_t *)&n->poll, NULL);
    if (n->meta_rpc != NULL) {
        rpc_close(n->meta_rpc, NULL, NULL);
        n->meta_rpc = NULL;
    }
    gw_stop(n->gw); /* libwebsockets closes its handles first (LIBRARY-NOTES) */
    if (n->store != NULL) {
        struct store *st = n->store;
        n->store = NULL;
        store_close(st, store_closed, n);
    } else {
        store_closed(n);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct node *n = h->data;
    CH_INFO(-1, "received %s, shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    node_stop(n, 0);
}

static void watch_disk(struct node *n);

static void on_watch(uv_timer_t *h)
{
    struct node *n = h->data;
    for (uint32_t i = 0; i < n->config.n_shards; i++)
        if (n->shards[i] != NULL)
            shard_watch(n->shards[i]);
    if (n->meta != NULL)
        meta_watch(n->meta);
    if (++n->watch_ticks % 25 == 1) /* every 5 s */
        watch_disk(n);
}

/* ---- placement: follow the meta group ------------------------------------------------
 *
 * Every META_POLL_MS the node reads the newest map a meta voter has (a stale
 * read: committed, maybe a little behind).  A newer map is adopted for routing
 * (placement_to_config: the store client and the gateway follow cfg) and then
 * reconciled: replicas the map gives this node are opened (joining their
 * groups).  Replicas it no longer gives are closed and their data deleted only
 * after a linearizable read (a Raft barrier on the meta leader, so only while a
 * delete is pending) confirms it: a replica's data goes only after the map, as
 * of now, says the shard moved away (chorusctl commits a move only after Raft
 * removed the old replica).
 */

static int open_shard(struct node *n, uint32_t s, int join, char *err, size_t errlen)
{
    struct shard_options so = {
        .config = &n->config,
        .node_id = n->id,
        .shard = s,
        .data_dir = n->data_dir,
        .boot_id = n->boot,
        .stream_retain_entries = STREAM_RETAIN_ENTRIES,
        .join = join,
    };
    int rv = shard_open(&n->loop, &so, &n->shards[s], err, errlen);
    if (rv == 0)
        n->shards_open++;
    return rv;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

struct removal {
    struct node *n;
    uint32_t shard;
};

static void reconcile(struct node *n, int allow_delete);

static void shard_removed(void *data)
{
    struct removal *rm = data;
    struct node *n = rm->n;
    n->shards_open--;
    n->removing[rm->shard] = 0;
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/shard-%u", n->data_dir, rm->shard);
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        CH_ERROR((int)rm->shard,
                 "replica closed but its data in %s could not be deleted: %s", dir,
                 strerror(errno));
    else
        CH_INFO((int)rm->shard, "replica removed: the shard moved away; deleted %s", dir);
    free(rm);
    if (!n->stopping)
        reconcile(n, 0);
}

/* Opens what the map gives this node; closes and deletes what it moved away only
 * with allow_delete (a map read linearizably), else marks a delete pending. */
static void reconcile(struct node *n, int allow_delete)
{
    const struct placement *p = &n->cached;
    if (p->version == 0 || n->stopping)
        return;
    if (p->n_shards != n->config.n_shards || p->replication != n->config.replication) {
        if (!n->poll_warned++)
            CH_ERROR(
                -1,
                "the meta group's placement has %u shards x %u, this config %u x %u: "
                "not following it (is this node's config the cluster's?)",
                p->n_shards, p->replication, n->config.n_shards, n->config.replication);
        return;
    }
    for (uint32_t s = 0; s < n->config.n_shards; s++) {
        int want = placement_hosts(p, n->id, s);
        if (want && n->shards[s] == NULL && !n->removing[s]) {
            char err[512] = "";
            int rv = open_shard(n, s, 1, err, sizeof err);
            if (rv != 0)
                CH_ERROR((int)s,
                         "cannot open the replica the placement gives this node: %s",
                         err);
            else
                CH_INFO((int)s, "opened a new replica (placement version %" PRIu64 ")",
                        p->version);
        } else if (!want && n->shards[s] != NULL && !allow_delete) {
            n->delete_pending = 1;
        } else if (!want && n->shards[s] != NULL) {
            struct removal *rm = malloc(sizeof *rm);
            if (rm == NULL)
                continue;
            rm->n = n;
            rm->shard = s;
            struct shard *sh = n->shards[s];
            n->shards[s] = NULL;
            n->removing[s] = 1;
            CH_INFO((int)s,
                    "placement version %" PRIu64 " moved the shard off this node: "
                    "closing its replica",
                    p->version);
            shard_close(sh, shard_removed, rm);
        }
    }
}

static void poll_done(void *data, int err, const struct proto_frame *reply)
{
    struct node *n = data;
    int linearizable = n->poll_linearizable;
    n->poll_inflight = 0;
    if (n->stopping)
        return;
    if (err != 0 || reply->type != PROTO_META_GET_REPLY) {
        /* say so once when the meta group stays unreachable, and when it is back */
        if (++n->poll_failures == 20)
            CH_WARN(-1, "placement: the meta group did not answer 20 reads in a row (%s): "
                        "following the last map read",
                    err ? ch_strerror(err) : "error reply");
        return;
    }
    if (n->poll_failures >= 20)
        CH_INFO(-1, "placement: the meta group answers again");
    n->poll_failures = 0;
    struct ch_rbuf body;
    ch_rbuf_init(&body, reply->body.ptr, reply->body.len);
    struct proto_meta_get_reply m;
    if (proto_decode_meta_get_reply(&body, &m) != 0 || m.version == 0)
        return;
    if (m.version > n->cached.version) {
        struct placement p;
        char msg[256] = "";
        int rv = placement_decode(m.map.ptr, m.map.len, &p, msg, sizeof msg);
        if (rv != 0) {
            CH_ERROR(-1, "meta: undecodable placement map: %s", msg);
            placement_free(&p);
            return;
        }
        if (p.n_shards == n->config.n_shards && p.replication == n->config.replication &&
            placement_to_config(&p, &n->config, msg, sizeof msg) != 0)
            CH_ERROR(-1, "meta: %s", msg);
        CH_INFO(-1, "placement version %" PRIu64 " adopted", p.version);
        placement_free(&n->cached);
        n->cached = p;
        rpc_sync_nodes(n->meta_rpc);
        gw_sync_nodes(n->gw);
    }
    if (linearizable)
        n->delete_pending = 0;
    reconcile(n, linearizable);
}

static void on_poll(uv_timer_t *h)
{
    struct node *n = h->data;
    if (n->poll_inflight || n->stopping || n->meta_rpc == NULL)
        return;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    /* a linearizable read appends a Raft barrier to the meta group: only when a
     * replica waits to be deleted, else the newest map a meta voter has */
    struct proto_meta_get m = {.flags = n->delete_pending ? 0 : PROTO_FLAG_STALE_OK};
    proto_encode_meta_get(&b, 0, &m);
    if (ch_wbuf_error(&b) == 0 &&
        rpc_call(n->meta_rpc, n->config.n_shards, b.data, b.len, poll_done, n) == 0) {
        n->poll_inflight = 1;
        n->poll_linearizable = n->delete_pending;
    }
    ch_wbuf_free(&b);
}

static int file_exists(const char *dir, const char *name)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

static int write_marker(const char *dir, const char *name)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL || fprintf(f, "bootstrapped\n") < 0 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0 || fclose(f) != 0)
        return CH_EIO;
    return 0;
}

/* GET /metrics: this node's shard replicas (gw_shard_metrics_fn). */
static size_t shard_metrics(void *data, struct metrics_shard *out, size_t max)
{
    struct node *n = data;
    size_t k = 0;
    for (uint32_t i = 0; i < n->config.n_shards && k < max; i++) {
        if (n->shards[i] == NULL)
            continue;
        struct shard_stats st;
        shard_stats(n->shards[i], &st);
        struct metrics_shard *m = &out[k++];
        m->shard = i;
        _Static_assert(RAFT_FOLLOWER == (int)METRICS_RAFT_FOLLOWER &&
                           RAFT_CANDIDATE == (int)METRICS_RAFT_CANDIDATE &&
                           RAFT_LEADER == (int)METRICS_RAFT_LEADER,
                       "enum metrics_raft_state follows enum raft_state");
        m->state = st.state >= 0 && st.state < METRICS_RAFT_N_STATES ? st.state
                                                                    : METRICS_RAFT_UNAVAILABLE;
        m->term = st.term;
        m->commit_index = st.commit_index;
        m->applied_index = st.applied_index;
        m->snapshot_index = st.snapshot_index;
        m->entries_applied = st.entries_applied;
        m->bytes_applied = st.bytes_applied;
        m->batches_proposed = st.batches_proposed;
        m->snapshots_taken = st.snapshots_taken;
        m->snapshots_installed = st.snapshots_installed;
        m->batch_commands = st.batch_commands;
        m->apply_latency_ns = st.apply_latency_ns;
    }
    return k;
}

/* statvfs of the data directory: what an unprivileged chorusd may still write. */
static int node_disk(void *data, uint64_t *free_bytes, uint64_t *total_bytes)
{
    struct node *n = data;
    struct statvfs v;
    if (statvfs(n->data_dir, &v) != 0)
        return -1;
    *free_bytes = (uint64_t)v.f_bavail * v.f_frsize;
    *total_bytes = (uint64_t)v.f_blocks * v.f_frsize;
    return 0;
}

/* Disk full is otherwise silent (libraft drops append errors): warn below 10%
 * or 1 GiB free, once per crossing, checked with the watch timer. */
static void watch_disk(struct node *n)
{
    uint64_t free_b, total;
    if (node_disk(n, &free_b, &total) != 0)
        return;
    int low = free_b < total / 10 || free_b < (1ull << 30);
    if (low && !n->disk_low)
        CH_WARN(-1, "data directory %s is nearly full: %" PRIu64 " MiB free of %" PRIu64
                    " MiB (Raft stops persisting silently when it is full: "
                    "docs/operations.md, Disk full)",
                n->data_dir, free_b >> 20, total >> 20);
    else if (!low && n->disk_low)
        CH_INFO(-1, "data directory %s: %" PRIu64 " MiB free again", n->data_dir,
                free_b >> 20);
    n->disk_low = low;
}

/* ---- the admin HTTP API (GET /admin/v1/status, /admin/v1/placement) ------------------- */

static const char *role_name(int role)
{
    static const char *const names[] = {"unavailable", "follower", "candidate", "leader"};
    return role >= 0 && role < 4 ? names[role] : "unavailable";
}

static const char *conf_role_name(int role)
{
    return role == PROTO_RAFT_ROLE_VOTER     ? "voter"
           : role == PROTO_RAFT_ROLE_STANDBY ? "standby"
           : role == PROTO_RAFT_ROLE_SPARE   ? "spare"
                                             : "none";
}

static json_t *admin_status(struct node *n, int digest)
{
    json_t *o = json_object();
    json_object_set_new(o, "node", json_integer(n->id));
    json_object_set_new(o, "cluster", json_string(n->config.name));
    json_object_set_new(o, "version", json_string(CHORUS_VERSION));
    json_object_set_new(o, "uptime_ms", json_integer((json_int_t)(uv_now(&n->loop) - n->start_ms)));
    json_object_set_new(o, "connections", json_integer(gw_connections(n->gw)));
    uint64_t free_b, total;
    if (node_disk(n, &free_b, &total) == 0) {
        json_object_set_new(o, "disk_free_bytes", json_integer((json_int_t)free_b));
        json_object_set_new(o, "disk_total_bytes", json_integer((json_int_t)total));
    }
    uint64_t version = n->cached.version;
    if (n->meta != NULL && meta_placement(n->meta)->version > version)
        version = meta_placement(n->meta)->version;
    json_object_set_new(o, "placement_version", json_integer((json_int_t)version));
    json_t *meta = json_object();
    json_object_set_new(meta, "voter", json_boolean(n->meta != NULL));
    if (n->meta != NULL)
        json_object_set_new(meta, "leader", json_integer(meta_leader_hint(n->meta)));
    json_object_set_new(o, "meta", meta);
    json_t *shards = json_array();
    for (uint32_t s = 0; s < n->config.n_shards; s++) {
        struct shard *sh = n->shards[s];
        if (sh == NULL)
            continue;
        struct raft *r = shard_raft(sh);
        struct clog_stats cs;
        clog_stats(shard_clog(sh), &cs);
        int leader = raft_state(r) == RAFT_LEADER;
        json_t *j = json_object();
        json_object_set_new(j, "shard", json_integer(s));
        json_object_set_new(j, "role", json_string(role_name((int)raft_state(r))));
        json_object_set_new(j, "term", json_integer((json_int_t)raft_current_term(r)));
        json_object_set_new(j, "commit_index", json_integer((json_int_t)raft_commit_index(r)));
        json_object_set_new(j, "applied_index", json_integer((json_int_t)raft_last_applied(r)));
        json_object_set_new(j, "last_index", json_integer((json_int_t)raft_last_index(r)));
        json_object_set_new(j, "leader", json_integer(shard_leader_hint(sh)));
        json_object_set_new(j, "snapshot_index", json_integer((json_int_t)shard_snapshot_index(sh)));
        json_object_set_new(j, "conversations", json_integer((json_int_t)cs.conversations));
        json_object_set_new(j, "events", json_integer((json_int_t)cs.events));
        if (digest) {
            char hex[24];
            snprintf(hex, sizeof hex, "%016" PRIx64, clog_digest(shard_clog(sh)));
            json_object_set_new(j, "digest", json_string(hex));
        }
        json_t *reps = json_array();
        for (unsigned k = 0; k < r->configuration.n; k++) {
            uint32_t id = (uint32_t)r->configuration.servers[k].id;
            json_t *rj = json_object();
            json_object_set_new(rj, "node", json_integer(id));
            json_object_set_new(rj, "raft_role", json_string(conf_role_name(shard_raft_role(sh, id))));
            raft_index match = 0;
            if (leader && raft_match_index(r, id, &match) == 0)
                json_object_set_new(rj, "match_index", json_integer((json_int_t)match));
            json_array_append_new(reps, rj);
        }
        json_object_set_new(j, "replicas", reps);
        json_array_append_new(shards, j);
    }
    json_object_set_new(o, "shards", shards);
    return o;
}

static json_t *addr_json(const struct cluster_addr *a)
{
    char buf[96];
    snprintf(buf, sizeof buf, "%s:%u", a->host, a->port);
    return json_string(buf);
}

static json_t *admin_placement(const struct placement *p)
{
    static const char *const states[] = {"?", "active", "draining", "removed"};
    json_t *o = json_object();
    json_object_set_new(o, "version", json_integer((json_int_t)p->version));
    json_t *meta = json_array();
    for (uint32_t i = 0; i < p->n_meta; i++)
        json_array_append_new(meta, json_integer(p->meta[i]));
    json_object_set_new(o, "meta", meta);
    json_t *nodes = json_array();
    for (uint32_t i = 0; i < p->n_nodes; i++) {
        const struct placement_node *nd = &p->nodes[i];
        json_t *j = json_object();
        json_object_set_new(j, "id", json_integer(nd->addr.id));
        json_object_set_new(j, "state", json_string(nd->state <= 3 ? states[nd->state] : "?"));
        json_object_set_new(j, "raft", addr_json(&nd->addr.raft));
        json_object_set_new(j, "client", addr_json(&nd->addr.client));
        json_object_set_new(j, "gateway", addr_json(&nd->addr.gateway));
        json_array_append_new(nodes, j);
    }
    json_object_set_new(o, "nodes", nodes);
    json_t *shards = json_array();
    for (uint32_t s = 0; s < p->n_shards; s++) {
        json_t *j = json_object(), *reps = json_array();
        json_object_set_new(j, "shard", json_integer(s));
        for (uint32_t i = 0; i < p->replication; i++)
            json_array_append_new(reps, json_integer(p->replicas[s * p->replication + i]));
        json_object_set_new(j, "replicas", reps);
        if (p->moves[s].to != 0) {
            json_t *mv = json_object();
            json_object_set_new(mv, "from", json_integer(p->moves[s].from));
            json_object_set_new(mv, "to", json_integer(p->moves[s].to));
            json_object_set_new(j, "moving", mv);
        }
        json_array_append_new(shards, j);
    }
    json_object_set_new(o, "shards", shards);
    return o;
}

static unsigned node_admin(void *data, const char *path, const char *query,
                           struct ch_wbuf *out)
{
    struct node *n = data;
    json_t *j = NULL;
    unsigned status = 200;
    if (strcmp(path, "/admin/v1/status") == 0) {
        j = admin_status(n, strcmp(query, "1") == 0);
    } else if (strcmp(path, "/admin/v1/placement") == 0) {
        const struct placement *p = &n->cached;
        if (n->meta != NULL && meta_placement(n->meta)->version >= p->version)
            p = meta_placement(n->meta);
        if (p->version == 0) {
            status = 503;
            j = json_pack("{s:{s:s,s:s}}", "error", "code", "unavailable", "message",
                          "no placement map yet");
        } else {
            j = admin_placement(p);
        }
    } else {
        status = 404;
        j = json_pack("{s:{s:s,s:s}}", "error", "code", "not_found", "message",
                      "no such admin endpoint (GET /admin/v1/status, /admin/v1/placement)");
    }
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        out->oom = 1;
        return 500;
    }
    ch_put_raw(out, text, strlen(text));
    ch_put_raw(out, "\n", 1);
    free(text);
    return status;
}

static uint32_t node_connections(void *data)
{
    struct node *n = data;
    return gw_connections(n->gw);
}

/* ---- main ----------------------------------------------------------------------------- */

static uint64_t boot_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != sizeof id)
        id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return id ? id : 1;
}

/*
 * A gateway holds a socket per client: lift the soft limit on open files to the
 * hard one (libwebsockets sizes its tables from the limit when the context is
 * created, so this runs first).  Beyond the hard limit needs the operator
 * (systemd LimitNOFILE=, docs/operations.md).
 */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        CH_INFO(-1, "open files limit raised from %llu to %llu", (unsigned long long)was,
                (unsigned long long)rl.rlim_max);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"node", required_argument, NULL, 'n'},
        {"data", required_argument, NULL, 'd'},
        {"log-level", required_argument, NULL, 'l'},
        {"web", required_argument, NULL, 'w'},
        {"join", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *data = NULL, *web = NULL;
    long node_id = 0;
    int level = CH_LOG_INFO, c, join = 0;
    while ((c = getopt_long(argc, argv, "c:n:d:l:w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'n':
            node_id = strtol(optarg, NULL, 10);
            break;
        case 'd':
            data = optarg;
            break;
        case 'w':
            web = optarg;
            break;
        case 'j':
            join = 1;
            break;
        case 'l':
            level = ch_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "chorusd: unknown log level '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL || data == NULL || node_id <= 0 || node_id > UINT32_MAX ||
        optind != argc) {
        usage(stderr);
        return 2;
    }
    ch_log_setup((unsigned)node_id, (enum ch_log_level)level);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
#if defined(CHORUS_BUGS) && CHORUS_BUGS
    /* A test build for the Jepsen suite: CHORUS_BUG may switch on one deliberate
     * bug (bugs.h).  A misspelt name must not run a correct node by accident. */
    const char *bug = getenv("CHORUS_BUG");
    if (ch_bug_setup(bug) != 0) {
        CH_ERROR(-1, "CHORUS_BUG=%s: no such bug (known: %s)", bug, ch_bug_names());
        return 2;
    }
    if (ch_bug_active() != CH_BUG_NONE)
        CH_WARN(-1, "DELIBERATE BUG ACTIVE: CHORUS_BUG=%s (a CHORUS_BUGS test build: "
                    "this node breaks its guarantees on purpose; never give it real data)",
                ch_bug_name(ch_bug_active()));
    else
        CH_INFO(-1, "built with CHORUS_BUGS, none selected (CHORUS_BUG unset)");
#endif

    static struct node node;
    struct node *n = &node;
    n->id = (uint32_t)node_id;
    char err[512] = "";
    int rv = cluster_config_load(config_path, &n->config, err, sizeof err);
    if (rv != 0) {
        CH_ERROR(-1, "config %s: %s", config_path, err);
        return 2;
    }
    const struct cluster_node *self = cluster_node_by_id(&n->config, n->id);
    if (self == NULL) {
        CH_ERROR(-1, "config %s: node %u is not one of its nodes", config_path, n->id);
        cluster_config_free(&n->config);
        return 2;
    }
    if (realpath(data, n->data_dir) == NULL) {
        if (mkdir(data, 0755) != 0 || realpath(data, n->data_dir) == NULL) {
            CH_ERROR(-1, "data dir %s: %s", data, strerror(errno));
            cluster_config_free(&n->config);
            return 2;
        }
    }
    if ((rv = lock_data_dir(n, err, sizeof err)) != 0 ||
        (rv = check_identity(n, err, sizeof err)) != 0) {
        CH_ERROR(-1, "%s", err);
        cluster_config_free(&n->config);
        return 2;
    }

    uv_loop_init(&n->loop);
    n->shards = calloc(n->config.n_shards, sizeof *n->shards);
    n->removing = calloc(n->config.n_shards, 1);
    if (n->shards == NULL || n->removing == NULL) {
        CH_ERROR(-1, "out of memory");
        return 2;
    }
    placement_init(&n->cached);
    n->boot = boot_id();
    /* A brand-new data dir of a new cluster bootstraps; anything else only opens
     * what it has and follows the meta group. */
    int fresh = !file_exists(n->data_dir, BOOTSTRAPPED_FILE);
    int bootstrap = fresh && !join;
    if (fresh && join)
        CH_INFO(-1, "joining an existing cluster: nothing is bootstrapped here");
    if (cluster_node_is_meta(&n->config, n->id)) {
        struct meta_options mo = {
            .config = &n->config,
            .node_id = n->id,
            .data_dir = n->data_dir,
            .bootstrap = bootstrap,
        };
        rv = meta_open(&n->loop, &mo, &n->meta, err, sizeof err);
    }
    uint32_t hosted = 0;
    for (uint32_t s = 0; s < n->config.n_shards && rv == 0; s++) {
        char name[32];
        snprintf(name, sizeof name, "shard-%u", s);
        int placed = bootstrap && cluster_node_has_shard(&n->config, n->id, s);
        if (!placed && !file_exists(n->data_dir, name))
            continue;
        rv = open_shard(n, s, !placed, err, sizeof err);
        hosted += rv == 0;
    }
    if (rv == 0 && fresh && write_marker(n->data_dir, BOOTSTRAPPED_FILE) != 0) {
        snprintf(err, sizeof err, "cannot write %s/%s: %s", n->data_dir,
                 BOOTSTRAPPED_FILE, strerror(errno));
        rv = CH_EIO;
    }
    if (rv != 0) {
        CH_ERROR(-1, "cannot start: %s (%s)", err, ch_errname(rv));
        n->exit_code = 2;
    } else {
        struct store_options so = {
            .config = &n->config,
            .node_id = n->id,
            .shards = n->shards,
            .start_time_ms = n->start_ms = uv_now(&n->loop),
            .max_frame = PROTO_DEFAULT_MAX_FRAME,
            .max_conn_backlog = 256u << 20,
            .meta = n->meta,
            .placement = &n->cached,
            .connections = node_connections,
            .connections_data = n,
            .disk = node_disk,
        };
        rv = store_listen(&n->loop, &so, &n->store, err, sizeof err);
        if (rv == 0)
            rv = gw_open(&n->loop, &n->config, n->id, web, &n->gw, err, sizeof err);
        if (rv == 0) {
            struct rpc_options ro = {
                .config = &n->config,
                .self = n->id,
                .deadline_ms = 2000,
                .attempt_timeout_ms = 500,
                .max_frame = PROTO_DEFAULT_MAX_FRAME,
            };
            if (rpc_open(&n->loop, &ro, &n->meta_rpc) != 0) {
                snprintf(err, sizeof err, "out of memory");
                rv = CH_ENOMEM;
            }
        }
        if (rv == 0) {
            store_set_publish(n->store, gw_on_publish, n->gw);
            gw_set_metrics_source(n->gw, shard_metrics, n, so.start_time_ms);
            gw_set_disk_source(n->gw, node_disk, n);
            gw_set_admin_source(n->gw, node_admin, n);
        }
        if (rv != 0) {
            CH_ERROR(-1, "cannot start: %s", err);
            n->exit_code = 2;
        }
    }
    uv_signal_init(&n->loop, &n->sigterm);
    uv_signal_init(&n->loop, &n->sigint);
    uv_timer_init(&n->loop, &n->watch);
    uv_timer_init(&n->loop, &n->poll);
    n->sigterm.data = n->sigint.data = n->watch.data = n->poll.data = n;
    if (rv != 0) {
        node_stop(n, 2);
    } else {
        uv_signal_start(&n->sigterm, on_signal, SIGTERM);
        uv_signal_start(&n->sigint, on_signal, SIGINT);
        uv_timer_start(&n->watch, on_watch, WATCH_INTERVAL_MS, WATCH_INTERVAL_MS);
        uv_timer_start(&n->poll, on_poll, 50, META_POLL_MS);
        CH_INFO(-1,
                "chorusd %s node %u of cluster %s up: %u of %u shards hosted%s, data %s",
                CHORUS_VERSION, n->id, n->config.name, hosted, n->config.n_shards,
                n->meta != NULL ? " + meta" : "", n->data_dir);
    }
    uv_run(&n->loop, UV_RUN_DEFAULT);
    gw_free(n->gw);
    if (uv_loop_close(&n->loop) != 0)
        CH_WARN(-1, "event loop closed with handles still open");
    free(n->shards);
    free(n->removing);
    placement_free(&n->cached);
    cluster_config_free(&n->config);
    if (n->exit_code == 0)
        CH_INFO(-1, "stopped");
    return n->exit_code;
}
