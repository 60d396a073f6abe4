/* Cluster configuration: parsing (jansson), validation and shard placement. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/hash.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return CH_ECONFIG;
}

int cluster_addr_parse(const char *s, struct cluster_addr *a)
{
    unsigned oct[4];
    unsigned port;
    int used = 0;
    if (s == NULL || sscanf(s, "%3u.%3u.%3u.%3u:%5u%n", &oct[0], &oct[1], &oct[2], &oct[3],
                            &port, &used) != 5 ||
        (size_t)used != strlen(s))
        return CH_ECONFIG;
    for (int i = 0; i < 4; i++)
        if (oct[i] > 255)
            return CH_ECONFIG;
    /* reject signs, spaces and leading zeros that sscanf would accept */
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == ':'))
            return CH_ECONFIG;
    if (port == 0 || port > 65535)
        return CH_ECONFIG;
    snprintf(a->host, sizeof a->host, "%u.%u.%u.%u", oct[0], oct[1], oct[2], oct[3]);
    a->port = (uint16_t)port;
    return 0;
}

/* Reads an optional unsigned integer field within [lo, hi]. */
static int get_uint(json_t *obj, const char *key, const char *where, uint32_t lo,
                    uint32_t hi, uint32_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(err, errlen, "%s%s: expected an integer in [%u, %u]", where, key, lo, hi);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int check_keys(json_t *obj, const char *const *allowed, const char *where, char *err,
                      size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(key, *a) == 0)
                ok = 1;
        if (!ok)
            return fail(err, errlen, "%s: unknown field \"%s\"", where, key);
    }
    (void)v;
    return 0;
}

static int get_addr(json_t *node, const char *key, int index, struct cluster_addr *a,
                    char *err, size_t errlen)
{
    json_t *v = json_object_get(node, key);
    if (!json_is_string(v) || cluster_addr_parse(json_string_value(v), a) != 0)
        return fail(err, errlen, "nodes[%d].%s: expected \"a.b.c.d:port\"", index, key);
    return 0;
}

static int addr_overlap(const struct cluster_addr *a, uint32_t a_n, const struct cluster_addr *b,
                        uint32_t b_n)
{
    if (strcmp(a->host, b->host) != 0)
        return 0;
    uint32_t a_end = (uint32_t)a->port + a_n, b_end = (uint32_t)b->port + b_n;
    return a->port < b_end && b->port < a_end;
}

static int parse_nodes(json_t *arr, struct cluster_config *cfg, char *err, size_t errlen)
{
    static const char *const node_keys[] = {"id", "raft", "client", "gateway", NULL};
    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > CLUSTER_MAX_NODES)
        return fail(err, errlen, "nodes: expected an array of 1..%d nodes", CLUSTER_MAX_NODES);
    size_t i;
    json_t *n;
    json_array_foreach(arr, i, n)
    {
        char where[32];
        snprintf(where, sizeof where, "nodes[%zu]", i);
        if (!json_is_object(n))
            return fail(err, errlen, "%s: expected an object", where);
        int rv = check_keys(n, node_keys, where, err, errlen);
        if (rv)
            return rv;
        struct cluster_node *node = &cfg->nodes[i];
        json_t *id = json_object_get(n, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 1 ||
            json_integer_value(id) > 1000000)
            return fail(err, errlen, "%s.id: expected an integer in [1, 1000000]", where);
        node->id = (uint32_t)json_integer_value(id);
        if ((rv = get_addr(n, "raft", (int)i, &node->raft, err, errlen)) ||
            (rv = get_addr(n, "client", (int)i, &node->client, err, errlen)) ||
            (rv = get_addr(n, "gateway", (int)i, &node->gateway, err, errlen)))
            return rv;
        for (size_t k = 0; k < i; k++)
            if (cfg->nodes[k].id == node->id)
                return fail(err, errlen, "%s.id: duplicate node id %u", where, node->id);
    }
    cfg->n_nodes = (uint32_t)json_array_size(arr);
    return 0;
}

/* Every listening address of every node must be distinct; a node's raft ports
 * span [raft.port, raft.port + shards). */
static int check_addresses(const struct cluster_config *cfg, char *err, size_t errlen)
{
    static const char *const names[] = {"raft", "client", "gateway"};
    if ((uint32_t)0xffff < cfg->n_shards)
        return fail(err, errlen, "shards: too many");
    for (uint32_t i = 0; i < cfg->n_nodes; i++) {
        const struct cluster_node *a = &cfg->nodes[i];
        if ((uint32_t)a->raft.port + cfg->n_shards - 1 > 65535)
            return fail(err, errlen, "nodes[%u].raft: port range %u..%u exceeds 65535", i,
                        a->raft.port, a->raft.port + cfg->n_shards - 1);
        const struct cluster_addr *aa[3] = {&a->raft, &a->client, &a->gateway};
        uint32_t an[3] = {cfg->n_shards, 1, 1};
        for (uint32_t j = i; j < cfg->n_nodes; j++) {
            const struct cluster_node *b = &cfg->nodes[j];
            const struct cluster_addr *bb[3] = {&b->raft, &b->client, &b->gateway};
            for (int x = 0; x < 3; x++)
                for (int y = 0; y < 3; y++) {
                    if (i == j && y <= x)
                        continue;
                    if (addr_overlap(aa[x], an[x], bb[y], an[y]))
                        return fail(err, errlen,
                                    "nodes[%u].%s and nodes[%u].%s: addresses overlap "
                                    "(raft uses %u ports from its base)",
                                    i, names[x], j, names[y], cfg->n_shards);
                }
        }
    }
    return 0;
}

static int parse_placement(json_t *p, struct cluster_config *cfg, char *err, size_t errlen)
{
    uint32_t S = cfg->n_shards, R = cfg->replication;
    cfg->replicas = calloc((size_t)S * R, sizeof *cfg->replicas);
    if (cfg->replicas == NULL)
        return CH_ENOMEM;
    if (p == NULL || (json_is_string(p) && strcmp(json_string_value(p), "round-robin") == 0)) {
        for (uint32_t s = 0; s < S; s++)
            for (uint32_t i = 0; i < R; i++)
                cfg->replicas[s * R + i] = cfg->nodes[(s + i) % cfg->n_nodes].id;
        return 0;
    }
    if (!json_is_object(p))
        return fail(err, errlen, "placement: expected \"round-robin\" or an object");
    if (json_object_size(p) != S)
        return fail(err, errlen, "placement: expected an entry for each of the %u shards", S);
    for (uint32_t s = 0; s < S; s++) {
        char key[16];
        snprintf(key, sizeof key, "%u", s);
        json_t *list = json_object_get(p, key);
        if (!json_is_array(list) || json_array_size(list) != R)
            return fail(err, errlen, "placement.%s: expected an array of %u node ids", key, R);
        for (uint32_t i = 0; i < R; i++) {
            json_t *id = json_array_get(list, i);
            uint32_t v = json_is_integer(id) && json_integer_value(id) > 0 &&
                                 json_integer_value(id) <= 1000000
                             ? (uint32_t)json_integer_value(id)
                             : 0;
            if (v == 0 || cluster_node_by_id(cfg, v) == NULL)
                return fail(err, errlen, "placement.%s[%u]: not a node id of this cluster", key,
                            i);
            for (uint32_t k = 0; k < i; k++)
                if (cfg->replicas[s * R + k] == v)
                    return fail(err, errlen, "placement.%s: node %u listed twice", key, v);
            cfg->replicas[s * R + i] = v;
        }
    }
    return 0;
}

static int parse_root(json_t *root, struct cluster_config *cfg, char *err, size_t errlen)
{
    static const char *const keys[] = {"name", "shards", "replication", "nodes", "placement",
                                       "raft", "limits", NULL};
    static const char *const raft_keys[] = {
        "election_timeout_ms", "heartbeat_timeout_ms", "snapshot_threshold",
        "snapshot_trailing", "max_inflight_entries", "segment_size", "pre_vote", NULL};
    static const char *const limit_keys[] = {"max_body", "max_members", "max_events", NULL};
    if (!json_is_object(root))
        return fail(err, errlen, "expected a JSON object at the top level");
    int rv = check_keys(root, keys, "config", err, errlen);
    if (rv)
        return rv;
    json_t *name = json_object_get(root, "name");
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) >= sizeof cfg->name)
        return fail(err, errlen, "name: expected a string of 1..%zu characters",
                    sizeof cfg->name - 1);
    for (const char *p = json_string_value(name); *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return fail(err, errlen, "name: only letters, digits, '-', '_' and '.'");
    snprintf(cfg->name, sizeof cfg->name, "%s", json_string_value(name));
    if ((rv = parse_nodes(json_object_get(root, "nodes"), cfg, err, errlen)))
        return rv;
    if (!json_is_integer(json_object_get(root, "shards")))
        return fail(err, errlen, "shards: required");
    if ((rv = get_uint(root, "shards", "", 1, CLUSTER_MAX_SHARDS, &cfg->n_shards, err,
                       errlen)))
        return rv;
    uint32_t rmax = cfg->n_nodes < CLUSTER_MAX_REPLICATION ? cfg->n_nodes
                                                           : CLUSTER_MAX_REPLICATION;
    cfg->replication = rmax < 3 ? rmax : 3;
    if ((rv = get_uint(root, "replication", "", 1, rmax, &cfg->replication, err, errlen)))
        return rv;
    if ((rv = check_addresses(cfg, err, errlen)))
        return rv;

    json_t *raft = json_object_get(root, "raft");
    if (raft != NULL) {
        if (!json_is_object(raft))
            return fail(err, errlen, "raft: expected an object");
        if ((rv = check_keys(raft, raft_keys, "raft", err, errlen)) ||
            (rv = get_uint(raft, "election_timeout_ms", "raft.", 50, 60000,
                           &cfg->raft.election_timeout_ms, err, errlen)) ||
            (rv = get_uint(raft, "heartbeat_timeout_ms", "raft.", 10, 30000,
                           &cfg->raft.heartbeat_timeout_ms, err, errlen)) ||
            (rv = get_uint(raft, "snapshot_threshold", "raft.", 16, 100000000,
                           &cfg->raft.snapshot_threshold, err, errlen)) ||
            (rv = get_uint(raft, "snapshot_trailing", "raft.", 16, 100000000,
                           &cfg->raft.snapshot_trailing, err, errlen)) ||
            (rv = get_uint(raft, "max_inflight_entries", "raft.", 1, 65536,
                           &cfg->raft.max_inflight_entries, err, errlen)) ||
            (rv = get_uint(raft, "segment_size", "raft.", 65536, 1u << 30,
                           &cfg->raft.segment_size, err, errlen)))
            return rv;
        json_t *pv = json_object_get(raft, "pre_vote");
        if (pv != NULL) {
            if (!json_is_boolean(pv))
                return fail(err, errlen, "raft.pre_vote: expected true or false");
            cfg->raft.pre_vote = json_is_true(pv);
        }
    }
    if (cfg->raft.heartbeat_timeout_ms >= cfg->raft.election_timeout_ms)
        return fail(err, errlen,
                    "raft.heartbeat_timeout_ms must be below raft.election_timeout_ms");
    json_t *limits = json_object_get(root, "limits");
    if (limits != NULL) {
        if (!json_is_object(limits))
            return fail(err, errlen, "limits: expected an object");
        if ((rv = check_keys(limits, limit_keys, "limits", err, errlen)) ||
            (rv = get_uint(limits, "max_body", "limits.", 1, CLOG_MAX_BODY,
                           &cfg->limits.max_body, err, errlen)) ||
            (rv = get_uint(limits, "max_members", "limits.", 2, 1000000,
                           &cfg->limits.max_members, err, errlen)) ||
            (rv = get_uint(limits, "max_events", "limits.", 16, 1u << 31,
                           &cfg->limits.max_events, err, errlen)))
            return rv;
    }
    return parse_placement(json_object_get(root, "placement"), cfg, err, errlen);
}

int cluster_config_parse(const char *json, size_t len, struct cluster_config *cfg, char *err,
                         size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->raft.election_timeout_ms = 1000;
    cfg->raft.heartbeat_timeout_ms = 100;
    cfg->raft.snapshot_threshold = 4096;
    cfg->raft.snapshot_trailing = 2048;
    cfg->raft.max_inflight_entries = 1024;
    cfg->raft.segment_size = 1u << 20;
    cfg->raft.pre_vote = 1;
    clog_limits_default(&cfg->limits);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    int rv = parse_root(root, cfg, err, errlen);
    json_decref(root);
    if (rv != 0) {
        free(cfg->replicas);
        cfg->replicas = NULL;
    }
    return rv;
}

int cluster_config_load(const char *path, struct cluster_config *cfg, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return CH_EIO;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) {
                free(buf);
                fclose(f);
                snprintf(err, errlen, "file larger than 16 MiB");
                return CH_ECONFIG;
            }
            char *p = realloc(buf, cap);
            if (p == NULL) {
                free(buf);
                fclose(f);
                return CH_ENOMEM;
            }
            buf = p;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "read error");
        return CH_EIO;
    }
    int rv = cluster_config_parse(buf, len, cfg, err, errlen);
    free(buf);
    return rv;
}

void cluster_config_free(struct cluster_config *cfg)
{
    free(cfg->replicas);
    cfg->replicas = NULL;
}

const struct cluster_node *cluster_node_by_id(const struct cluster_config *cfg, uint32_t id)
{
    for (uint32_t i = 0; i < cfg->n_nodes; i++)
        if (cfg->nodes[i].id == id)
            return &cfg->nodes[i];
    return NULL;
}

int cluster_node_has_shard(const struct cluster_config *cfg, uint32_t id, uint32_t shard)
{
    if (shard >= cfg->n_shards)
        return 0;
    for (uint32_t i = 0; i < cfg->replication; i++)
        if (cfg->replicas[shard * cfg->replication + i] == id)
            return 1;
    return 0;
}

uint32_t cluster_shard_of_conv(uint64_t conv, uint32_t n_shards)
{
    return (uint32_t)(ch_mix64(conv) % n_shards);
}

uint32_t cluster_shard_of_user(const void *user, size_t len, uint32_t n_shards)
{
    return (uint32_t)(ch_mix64(ch_hash64(CH_HASH64_INIT, user, len)) % n_shards);
}

void cluster_raft_address(const struct cluster_node *node, uint32_t shard, char *buf,
                          size_t len)
{
    snprintf(buf, len, "%s:%u", node->raft.host, (unsigned)node->raft.port + shard);
}
