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
#include "../raft-log/clog_cmd.h"

/* Largest config file cluster_config_load reads: real ones are a few KiB. */
#define CONFIG_MAX_FILE (1u << 20)

/* ---- addresses -------------------------------------------------------------------- */

/*
 * A decimal number of 1..max_digits digits without a leading zero (so "010" is not
 * read as octal by one tool and decimal by another).  Advances *s past it.
 */
static int parse_decimal(const char **s, int max_digits, unsigned long *out)
{
    const char *p = *s;
    unsigned long v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9') {
        if (++n > max_digits || (n == 2 && v == 0))
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
        p++;
    }
    if (n == 0)
        return -1;
    *s = p;
    *out = v;
    return 0;
}

int cluster_addr_parse(const char *s, struct cluster_addr *a)
{
    if (s == NULL)
        return CH_ECONFIG;
    unsigned long octet[4], port;
    const char *p = s;
    for (int i = 0; i < 4; i++) {
        if (parse_decimal(&p, 3, &octet[i]) != 0 || octet[i] > 255)
            return CH_ECONFIG;
        if (*p++ != (i < 3 ? '.' : ':'))
            return CH_ECONFIG;
    }
    if (parse_decimal(&p, 5, &port) != 0 || port == 0 || port > 65535 || *p != '\0')
        return CH_ECONFIG;
    snprintf(a->host, sizeof a->host, "%lu.%lu.%lu.%lu", octet[0], octet[1], octet[2],
             octet[3]);
    a->port = (uint16_t)port;
    return 0;
}

/* ---- JSON helpers ----------------------------------------------------------------- */

/* Rejects keys outside `allowed`: a misspelt option must not be silently ignored. */
static int check_keys(json_t *obj, const char *const *allowed, const char *where,
                      char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        const char *const *a = allowed;
        while (*a != NULL && strcmp(key, *a) != 0)
            a++;
        if (*a == NULL)
            return where[0] != '\0'
                       ? ch_fail(err, errlen, CH_ECONFIG, "%s: unknown field \"%s\"",
                                 where, key)
                       : ch_fail(err, errlen, CH_ECONFIG,
                                 "unknown field \"%s\" at the top level", key);
    }
    (void)v;
    return 0;
}

/* An unsigned integer within [lo, hi]; where/key name the field in messages. */
static int get_uint(json_t *v, const char *where, const char *key, uint32_t lo,
                    uint32_t hi, uint32_t *out, char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
        json_integer_value(v) > (json_int_t)hi)
        return ch_fail(err, errlen, CH_ECONFIG, "%s%s: expected an integer in [%u, %u]",
                       where, key, lo, hi);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* As get_uint, but the field may be absent (keeping *out, the default). */
static int get_opt_uint(json_t *obj, const char *where, const char *key, uint32_t lo,
                        uint32_t hi, uint32_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    return v == NULL ? 0 : get_uint(v, where, key, lo, hi, out, err, errlen);
}

/* ---- nodes ------------------------------------------------------------------------ */

static int parse_node(json_t *n, size_t index, struct cluster_config *cfg, char *err,
                      size_t errlen)
{
    static const char *const keys[] = {"id", "raft", "client", "gateway", "admin", NULL};
    static const char *const roles[] = {"raft", "client", "gateway"};
    char where[32];
    snprintf(where, sizeof where, "nodes[%zu]", index);
    if (!json_is_object(n))
        return ch_fail(err, errlen, CH_ECONFIG, "%s: expected an object", where);
    int rv = check_keys(n, keys, where, err, errlen);
    if (rv != 0)
        return rv;

    struct cluster_node *node = &cfg->nodes[index];
    json_t *id = json_object_get(n, "id");
    if (id == NULL)
        return ch_fail(err, errlen, CH_ECONFIG, "%s.id: required", where);
    if ((rv = get_uint(id, where, ".id", 1, UINT32_MAX, &node->id, err, errlen)) != 0)
        return rv;
    for (size_t k = 0; k < index; k++)
        if (cfg->nodes[k].id == node->id)
            return ch_fail(err, errlen, CH_ECONFIG,
                           "%s.id: %u is also the id of nodes[%zu]", where, node->id, k);

    struct cluster_addr *addrs[3] = {&node->raft, &node->client, &node->gateway};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(n, roles[i]);
        if (!json_is_string(v) || cluster_addr_parse(json_string_value(v), addrs[i]) != 0)
            return ch_fail(err, errlen, CH_ECONFIG, "%s.%s: expected \"a.b.c.d:port\"",
                           where, roles[i]);
    }
    json_t *admin = json_object_get(n, "admin");
    if (admin != NULL &&
        (!json_is_string(admin) || cluster_addr_parse(json_string_value(admin), &node->admin) != 0))
        return ch_fail(err, errlen, CH_ECONFIG, "%s.admin: expected \"a.b.c.d:port\"", where);
    return 0;
}

static int parse_nodes(json_t *arr, struct cluster_config *cfg, char *err, size_t errlen)
{
    if (arr == NULL)
        return ch_fail(err, errlen, CH_ECONFIG, "nodes: required");
    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > CLUSTER_MAX_NODES)
        return ch_fail(err, errlen, CH_ECONFIG, "nodes: expected an array of 1..%d nodes",
                       CLUSTER_MAX_NODES);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        int rv = parse_node(json_array_get(arr, i), i, cfg, err, errlen);
        if (rv != 0)
            return rv;
    }
    cfg->n_nodes = (uint32_t)json_array_size(arr);
    return 0;
}

/* Do the port ranges [a, a + a_n) and [b, b + b_n) on the same host intersect? */
static int ports_overlap(const struct cluster_addr *a, uint32_t a_n,
                         const struct cluster_addr *b, uint32_t b_n)
{
    return strcmp(a->host, b->host) == 0 && a->port < (uint32_t)b->port + b_n &&
           b->port < (uint32_t)a->port + a_n;
}

/*
 * Every listening address of every node must be distinct, where a node's raft
 * address stands for the S + 1 ports [raft.port, raft.port + S]: one per shard and
 * the last for the meta group.  Hosts compare as strings: two nodes on one machine
 * must use the same spelling.
 */
static int check_addresses(const struct cluster_config *cfg, char *err, size_t errlen)
{
    static const char *const roles[] = {"raft", "client", "gateway", "admin"};
    const uint32_t width[4] = {cfg->n_shards + 1, 1, 1, 1};
    for (uint32_t i = 0; i < cfg->n_nodes; i++) {
        const struct cluster_node *a = &cfg->nodes[i];
        if ((uint32_t)a->raft.port + cfg->n_shards > 65535)
            return ch_fail(
                err, errlen, CH_ECONFIG,
                "nodes[%u].raft: %u shards and the meta group need ports %u..%u, "
                "beyond 65535",
                i, cfg->n_shards, a->raft.port, a->raft.port + cfg->n_shards);
        const struct cluster_addr *aa[4] = {&a->raft, &a->client, &a->gateway, &a->admin};
        for (uint32_t j = i; j < cfg->n_nodes; j++) {
            const struct cluster_node *b = &cfg->nodes[j];
            const struct cluster_addr *bb[4] = {&b->raft, &b->client, &b->gateway,
                                                &b->admin};
            for (int x = 0; x < 4; x++)
                for (int y = i == j ? x + 1 : 0; y < 4; y++)
                    if (aa[x]->port != 0 && bb[y]->port != 0 &&
                        ports_overlap(aa[x], width[x], bb[y], width[y]))
                        return ch_fail(
                            err, errlen, CH_ECONFIG,
                            "nodes[%u].%s and nodes[%u].%s: addresses overlap%s", i,
                            roles[x], j, roles[y],
                            x == 0 || y == 0 ? " (a raft address takes one port per "
                                               "shard from its base, plus one for the "
                                               "meta group)"
                                             : "");
        }
    }
    return 0;
}

/* ---- placement -------------------------------------------------------------------- */

/* "0".."S-1" exactly as printed by %u: no sign, no leading zeros. */
static int shard_key(const char *key, uint32_t n_shards, uint32_t *shard)
{
    unsigned long v;
    const char *p = key;
    if (parse_decimal(&p, 4, &v) != 0 || *p != '\0' || v >= n_shards)
        return -1;
    *shard = (uint32_t)v;
    return 0;
}

static int parse_placement(json_t *p, struct cluster_config *cfg, char *err,
                           size_t errlen)
{
    const uint32_t S = cfg->n_shards, R = cfg->replication;
    uint32_t *replicas = calloc((size_t)S * R, sizeof *replicas);
    if (replicas == NULL)
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");

    /* Round-robin: shard s on nodes s, s+1, ..., s+R-1 (mod n) in config order. */
    if (p == NULL ||
        (json_is_string(p) && strcmp(json_string_value(p), "round-robin") == 0)) {
        for (uint32_t s = 0; s < S; s++)
            for (uint32_t i = 0; i < R; i++)
                replicas[s * R + i] = cfg->nodes[(s + i) % cfg->n_nodes].id;
        cfg->replicas = replicas;
        return 0;
    }

    int rv = 0;
    if (!json_is_object(p)) {
        rv = ch_fail(err, errlen, CH_ECONFIG,
                     "placement: expected \"round-robin\" or an object of node id lists");
        goto out;
    }
    const char *key;
    json_t *list;
    json_object_foreach(p, key, list)
    {
        uint32_t s;
        if (shard_key(key, S, &s) != 0) {
            rv = ch_fail(err, errlen, CH_ECONFIG,
                         "placement.\"%s\": not a shard number in 0..%u", key, S - 1);
            goto out;
        }
        if (!json_is_array(list) || json_array_size(list) != R) {
            rv = ch_fail(err, errlen, CH_ECONFIG,
                         "placement.%u: expected an array of %u node ids (replication)",
                         s, R);
            goto out;
        }
        for (uint32_t i = 0; i < R; i++) {
            json_t *id = json_array_get(list, i);
            json_int_t v = json_is_integer(id) ? json_integer_value(id) : 0;
            if (v <= 0 || v > (json_int_t)UINT32_MAX ||
                cluster_node_by_id(cfg, (uint32_t)v) == NULL) {
                rv = ch_fail(err, errlen, CH_ECONFIG,
                             "placement.%u[%u]: not the id of a node in \"nodes\"", s, i);
                goto out;
            }
            for (uint32_t k = 0; k < i; k++)
                if (replicas[s * R + k] == (uint32_t)v) {
                    rv =
                        ch_fail(err, errlen, CH_ECONFIG,
                                "placement.%u: node %u listed twice (replicas must be on "
                                "distinct nodes)",
                                s, (uint32_t)v);
                    goto out;
                }
            replicas[s * R + i] = (uint32_t)v;
        }
    }
    /* Keys are distinct (duplicates are rejected by the JSON parser), so any gap
     * shows up as an unfilled first replica. */
    for (uint32_t s = 0; s < S; s++)
        if (replicas[s * R] == 0) {
            rv = ch_fail(err, errlen, CH_ECONFIG,
                         "placement.%u: missing (every shard 0..%u needs its replicas)",
                         s, S - 1);
            goto out;
        }
out:
    if (rv != 0)
        free(replicas);
    else
        cfg->replicas = replicas;
    return rv;
}

/* ---- sections --------------------------------------------------------------------- */

static int parse_raft(json_t *raft, struct cluster_raft_tuning *t, char *err,
                      size_t errlen)
{
    static const char *const keys[] = {"election_timeout_ms",
                                       "heartbeat_timeout_ms",
                                       "snapshot_threshold",
                                       "snapshot_trailing",
                                       "max_inflight_entries",
                                       "max_inflight_batches",
                                       "segment_size",
                                       "pre_vote",
                                       NULL};
    int rv;
    if (raft != NULL) {
        if (!json_is_object(raft))
            return ch_fail(err, errlen, CH_ECONFIG, "raft: expected an object");
        if ((rv = check_keys(raft, keys, "raft", err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "election_timeout_ms", 50, 600000,
                               &t->election_timeout_ms, err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "heartbeat_timeout_ms", 10, 600000,
                               &t->heartbeat_timeout_ms, err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "snapshot_threshold", 16, UINT32_MAX,
                               &t->snapshot_threshold, err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "snapshot_trailing", 16, UINT32_MAX,
                               &t->snapshot_trailing, err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "max_inflight_entries", 1, 65536,
                               &t->max_inflight_entries, err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "max_inflight_batches", 1, 65536,
                               &t->max_inflight_batches, err, errlen)) != 0 ||
            (rv = get_opt_uint(raft, "raft.", "segment_size", 65536, 1u << 30,
                               &t->segment_size, err, errlen)) != 0)
            return rv;
        json_t *pv = json_object_get(raft, "pre_vote");
        if (pv != NULL) {
            if (!json_is_boolean(pv))
                return ch_fail(err, errlen, CH_ECONFIG,
                               "raft.pre_vote: expected true or false");
            t->pre_vote = json_is_true(pv);
        }
    }
    /* A leader that heartbeats less often than followers time out loses leadership
     * even on a healthy network. */
    if (t->heartbeat_timeout_ms >= t->election_timeout_ms)
        return ch_fail(err, errlen, CH_ECONFIG,
                       "raft.heartbeat_timeout_ms (%u) must be below "
                       "raft.election_timeout_ms (%u)",
                       t->heartbeat_timeout_ms, t->election_timeout_ms);
    return 0;
}

static int parse_limits(json_t *limits, struct clog_limits *l, char *err, size_t errlen)
{
    static const char *const keys[] = {"max_body", "max_members", "max_events", NULL};
    if (limits == NULL)
        return 0;
    if (!json_is_object(limits))
        return ch_fail(err, errlen, CH_ECONFIG, "limits: expected an object");
    int rv;
    if ((rv = check_keys(limits, keys, "limits", err, errlen)) != 0 ||
        (rv = get_opt_uint(limits, "limits.", "max_body", 1, CLOG_MAX_BODY, &l->max_body,
                           err, errlen)) != 0 ||
        (rv = get_opt_uint(limits, "limits.", "max_members", 2, 1000000, &l->max_members,
                           err, errlen)) != 0 ||
        (rv = get_opt_uint(limits, "limits.", "max_events", 16, 1u << 31, &l->max_events,
                           err, errlen)) != 0)
        return rv;
    return 0;
}

static int parse_auth(json_t *auth, struct cluster_auth *a, char *err, size_t errlen)
{
    static const char *const keys[] = {"secret", "token_ttl_s", "scrypt_log2_n", NULL};
    if (auth == NULL)
        return 0;
    if (!json_is_object(auth))
        return ch_fail(err, errlen, CH_ECONFIG, "auth: expected an object");
    int rv;
    if ((rv = check_keys(auth, keys, "auth", err, errlen)) != 0 ||
        (rv = get_opt_uint(auth, "auth.", "token_ttl_s", 10, 366u * 86400,
                           &a->token_ttl_s, err, errlen)) != 0 ||
        (rv = get_opt_uint(auth, "auth.", "scrypt_log2_n", 10, 20, &a->scrypt_log2_n, err,
                           errlen)) != 0)
        return rv;
    json_t *secret = json_object_get(auth, "secret");
    if (secret != NULL) {
        if (!json_is_string(secret) || json_string_length(secret) < 16 ||
            json_string_length(secret) >= sizeof a->secret)
            return ch_fail(err, errlen, CH_ECONFIG,
                           "auth.secret: expected a string of 16..%zu characters",
                           sizeof a->secret - 1);
        snprintf(a->secret, sizeof a->secret, "%s", json_string_value(secret));
    }
    return 0;
}

static int parse_admin(json_t *admin, struct cluster_admin *a, char *err, size_t errlen)
{
    static const char *const keys[] = {"token", NULL};
    if (admin == NULL)
        return 0;
    if (!json_is_object(admin))
        return ch_fail(err, errlen, CH_ECONFIG, "admin: expected an object");
    int rv = check_keys(admin, keys, "admin", err, errlen);
    if (rv != 0)
        return rv;
    json_t *token = json_object_get(admin, "token");
    if (token == NULL)
        return ch_fail(err, errlen, CH_ECONFIG,
                       "admin.token: required in an admin section");
    /* It travels in an HTTP header: printable ASCII without spaces only. */
    const char *t = json_string_value(token);
    int printable = t != NULL;
    for (const char *p = t; printable && *p; p++)
        printable = *p > ' ' && *p < 127;
    if (!json_is_string(token) || json_string_length(token) < 16 ||
        json_string_length(token) >= sizeof a->token || !printable)
        return ch_fail(err, errlen, CH_ECONFIG,
                       "admin.token: expected a string of 16..%zu printable characters "
                       "without spaces",
                       sizeof a->token - 1);
    snprintf(a->token, sizeof a->token, "%s", t);
    return 0;
}

static int parse_gateway(json_t *gw, struct cluster_gateway_tuning *g, char *err,
                         size_t errlen)
{
    static const char *const keys[] = {"max_frame",       "max_queue_bytes", "deadline_ms",
                                       "max_connections", "rx_buffer",       "rate",
                                       NULL};
    static const char *const rate_keys[] = {"send_per_s",   "send_burst",  "typing_per_s",
                                            "typing_burst", "login_per_s", "login_burst",
                                            NULL};
    if (gw == NULL)
        return 0;
    if (!json_is_object(gw))
        return ch_fail(err, errlen, CH_ECONFIG, "gateway: expected an object");
    int rv;
    if ((rv = check_keys(gw, keys, "gateway", err, errlen)) != 0 ||
        (rv = get_opt_uint(gw, "gateway.", "max_frame", 1024, 64u << 20, &g->max_frame,
                           err, errlen)) != 0 ||
        (rv = get_opt_uint(gw, "gateway.", "max_queue_bytes", 4096, 1u << 30,
                           &g->max_queue_bytes, err, errlen)) != 0 ||
        (rv = get_opt_uint(gw, "gateway.", "deadline_ms", 100, 600000, &g->deadline_ms,
                           err, errlen)) != 0 ||
        (rv = get_opt_uint(gw, "gateway.", "max_connections", 1, 10000000,
                           &g->max_connections, err, errlen)) != 0 ||
        (rv = get_opt_uint(gw, "gateway.", "rx_buffer", 256, 1u << 20, &g->rx_buffer, err,
                           errlen)) != 0)
        return rv;
    json_t *rate = json_object_get(gw, "rate");
    if (rate == NULL)
        return 0;
    if (!json_is_object(rate))
        return ch_fail(err, errlen, CH_ECONFIG, "gateway.rate: expected an object");
    struct cluster_rate *r = &g->rate;
    if ((rv = check_keys(rate, rate_keys, "gateway.rate", err, errlen)) != 0 ||
        (rv = get_opt_uint(rate, "gateway.rate.", "send_per_s", 1, 1000000, &r->send_per_s,
                           err, errlen)) != 0 ||
        (rv = get_opt_uint(rate, "gateway.rate.", "send_burst", 1, 1000000, &r->send_burst,
                           err, errlen)) != 0 ||
        (rv = get_opt_uint(rate, "gateway.rate.", "typing_per_s", 1, 1000000,
                           &r->typing_per_s, err, errlen)) != 0 ||
        (rv = get_opt_uint(rate, "gateway.rate.", "typing_burst", 1, 1000000,
                           &r->typing_burst, err, errlen)) != 0 ||
        (rv = get_opt_uint(rate, "gateway.rate.", "login_per_s", 1, 1000000,
                           &r->login_per_s, err, errlen)) != 0 ||
        (rv = get_opt_uint(rate, "gateway.rate.", "login_burst", 1, 1000000,
                           &r->login_burst, err, errlen)) != 0)
        return rv;
    return 0;
}

/* ---- meta group ------------------------------------------------------------------- */

/*
 * "meta": the voters of the meta group, an odd number of distinct known node ids
 * (Raft needs a majority; an even count only adds a voter that can be lost).
 * Default: the first three nodes in file order, all of them in smaller clusters,
 * except that two nodes get one voter, not two.
 */
static int parse_meta(json_t *meta, struct cluster_config *cfg, char *err, size_t errlen)
{
    if (meta == NULL) {
        cfg->n_meta = cfg->n_nodes < 3 ? 1 : 3;
        for (uint32_t i = 0; i < cfg->n_meta; i++)
            cfg->meta[i] = cfg->nodes[i].id;
        return 0;
    }
    size_t n = json_is_array(meta) ? json_array_size(meta) : 0;
    if (n == 0 || n > CLUSTER_MAX_REPLICATION || n % 2 == 0)
        return ch_fail(err, errlen, CH_ECONFIG,
                       "meta: expected an array of an odd number (1..%d) of node ids",
                       CLUSTER_MAX_REPLICATION);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(meta, i);
        uint32_t id;
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > UINT32_MAX ||
            cluster_node_by_id(cfg, id = (uint32_t)json_integer_value(v)) == NULL)
            return ch_fail(err, errlen, CH_ECONFIG,
                           "meta[%zu]: expected the id of a node", i);
        for (size_t k = 0; k < i; k++)
            if (cfg->meta[k] == id)
                return ch_fail(err, errlen, CH_ECONFIG,
                               "meta[%zu]: node %u is listed twice", i, id);
        cfg->meta[i] = id;
    }
    cfg->n_meta = (uint32_t)n;
    return 0;
}

static int parse_name(json_t *name, struct cluster_config *cfg, char *err, size_t errlen)
{
    if (name == NULL)
        return ch_fail(err, errlen, CH_ECONFIG, "name: required");
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) >= sizeof cfg->name)
        return ch_fail(err, errlen, CH_ECONFIG,
                       "name: expected a string of 1..%zu characters",
                       sizeof cfg->name - 1);
    /* The name ends up in paths and metric labels: keep it to a safe alphabet. */
    for (const char *p = json_string_value(name); *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return ch_fail(err, errlen, CH_ECONFIG,
                           "name: only letters, digits, '-', '_' and '.' are allowed");
    snprintf(cfg->name, sizeof cfg->name, "%s", json_string_value(name));
    return 0;
}

static int parse_root(json_t *root, struct cluster_config *cfg, char *err, size_t errlen)
{
    static const char *const keys[] = {"name",      "shards", "replication", "nodes",
                                       "placement", "raft",   "limits",      "auth",
                                       "gateway",   "admin",  "meta",        NULL};
    if (!json_is_object(root))
        return ch_fail(err, errlen, CH_ECONFIG,
                       "expected a JSON object at the top level");
    int rv;
    if ((rv = check_keys(root, keys, "", err, errlen)) != 0 ||
        (rv = parse_name(json_object_get(root, "name"), cfg, err, errlen)) != 0 ||
        (rv = parse_nodes(json_object_get(root, "nodes"), cfg, err, errlen)) != 0)
        return rv;

    json_t *shards = json_object_get(root, "shards");
    if (shards == NULL)
        return ch_fail(err, errlen, CH_ECONFIG, "shards: required (1..%d)",
                       CLUSTER_MAX_SHARDS);
    if ((rv = get_uint(shards, "", "shards", 1, CLUSTER_MAX_SHARDS, &cfg->n_shards, err,
                       errlen)) != 0)
        return rv;

    /* R defaults to 3, or to every node in clusters of fewer than three. */
    uint32_t r_max =
        cfg->n_nodes < CLUSTER_MAX_REPLICATION ? cfg->n_nodes : CLUSTER_MAX_REPLICATION;
    cfg->replication = r_max < 3 ? r_max : 3;
    json_t *replication = json_object_get(root, "replication");
    if (replication != NULL && get_uint(replication, "", "replication", 1, r_max,
                                        &cfg->replication, NULL, 0) != 0)
        return ch_fail(
            err, errlen, CH_ECONFIG,
            "replication: expected an integer in [1, %u] (at most the number of "
            "nodes, %u, and at most %d)",
            r_max, cfg->n_nodes, CLUSTER_MAX_REPLICATION);

    json_t *raft = json_object_get(root, "raft");
    json_t *limits = json_object_get(root, "limits");
    if ((rv = check_addresses(cfg, err, errlen)) != 0 ||
        (rv = parse_raft(raft, &cfg->raft, err, errlen)) != 0 ||
        (rv = parse_limits(limits, &cfg->limits, err, errlen)) != 0 ||
        (rv = parse_auth(json_object_get(root, "auth"), &cfg->auth, err, errlen)) != 0 ||
        (rv = parse_gateway(json_object_get(root, "gateway"), &cfg->gateway, err,
                            errlen)) != 0 ||
        (rv = parse_admin(json_object_get(root, "admin"), &cfg->admin, err, errlen)) !=
            0 ||
        (rv = parse_meta(json_object_get(root, "meta"), cfg, err, errlen)) != 0)
        return rv;
    return parse_placement(json_object_get(root, "placement"), cfg, err, errlen);
}

/* ---- public API ------------------------------------------------------------------- */

int cluster_config_parse(const char *json, size_t len, struct cluster_config *cfg,
                         char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->raft.election_timeout_ms = 1000;
    cfg->raft.heartbeat_timeout_ms = 100;
    cfg->raft.snapshot_threshold = 4096;
    cfg->raft.snapshot_trailing = 2048;
    cfg->raft.max_inflight_entries = 1024;
    cfg->raft.max_inflight_batches = 2;
    cfg->raft.segment_size = 1u << 20;
    cfg->raft.pre_vote = 1;
    clog_limits_default(&cfg->limits);
    cfg->auth.token_ttl_s = 86400;
    cfg->auth.scrypt_log2_n = 14;
    cfg->gateway.max_frame = 96u << 10;
    cfg->gateway.rx_buffer = 64u << 10;
    cfg->gateway.max_queue_bytes = 4u << 20;
    cfg->gateway.deadline_ms = 10000;
    cfg->gateway.max_connections = 200000;
    cfg->gateway.rate = (struct cluster_rate){50, 200, 5, 10, 5, 10};

    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return ch_fail(err, errlen, CH_ECONFIG, "invalid JSON at line %d column %d: %s",
                       jerr.line, jerr.column, jerr.text);
    int rv = parse_root(root, cfg, err, errlen);
    json_decref(root);
    if (rv != 0)
        cluster_config_free(cfg);
    return rv;
}

int cluster_config_load(const char *path, struct cluster_config *cfg, char *err,
                        size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return ch_fail(err, errlen, CH_EIO, "%s: %s", path, strerror(errno));
    /* One byte more than the limit tells "too large" from "exactly the limit". */
    char *buf = malloc(CONFIG_MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    }
    size_t len = fread(buf, 1, CONFIG_MAX_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rv;
    if (bad)
        rv = ch_fail(err, errlen, CH_EIO, "%s: read error", path);
    else if (len > CONFIG_MAX_FILE)
        rv = ch_fail(err, errlen, CH_ECONFIG, "%s: larger than %u bytes", path,
                     CONFIG_MAX_FILE);
    else
        rv = cluster_config_parse(buf, len, cfg, err, errlen);
    free(buf);
    return rv;
}

void cluster_config_free(struct cluster_config *cfg)
{
    free(cfg->replicas);
    cfg->replicas = NULL;
}

const struct cluster_node *cluster_node_by_id(const struct cluster_config *cfg,
                                              uint32_t id)
{
    for (uint32_t i = 0; i < cfg->n_nodes; i++)
        if (cfg->nodes[i].id == id)
            return &cfg->nodes[i];
    return NULL;
}

int cluster_node_has_shard(const struct cluster_config *cfg, uint32_t id, uint32_t shard)
{
    if (shard >= cfg->n_shards || cfg->replicas == NULL)
        return 0;
    for (uint32_t i = 0; i < cfg->replication; i++)
        if (cfg->replicas[shard * cfg->replication + i] == id)
            return 1;
    return 0;
}

/*
 * Conversation ids are often sequential or share low bits; the mixer spreads
 * them before the modulo.  These functions decide where data lives: changing
 * them moves every conversation, so they are frozen for a cluster's lifetime.
 */
uint32_t cluster_shard_of_conv(uint64_t conv, uint32_t n_shards)
{
    return n_shards ? (uint32_t)(ch_mix64(conv) % n_shards) : 0;
}

uint32_t cluster_shard_of_user(const void *user, size_t len, uint32_t n_shards)
{
    return n_shards
               ? (uint32_t)(ch_mix64(ch_hash64(CH_HASH64_INIT, user, len)) % n_shards)
               : 0;
}

uint32_t cluster_shard_of_cmd(const struct clog_cmd *cmd, uint32_t n_shards)
{
    if (cmd->op == CLOG_OP_USER_CREATE || cmd->op == CLOG_OP_USER_UPDATE)
        return cluster_shard_of_user(cmd->actor.ptr, cmd->actor.len, n_shards);
    return cluster_shard_of_conv(cmd->conv, n_shards);
}

void cluster_raft_address(const struct cluster_node *node, uint32_t shard, char *buf,
                          size_t len)
{
    snprintf(buf, len, "%s:%u", node->raft.host, (unsigned)node->raft.port + shard);
}

int cluster_node_is_meta(const struct cluster_config *cfg, uint32_t id)
{
    for (uint32_t i = 0; i < cfg->n_meta; i++)
        if (id != 0 && cfg->meta[i] == id)
            return 1;
    return 0;
}

void cluster_meta_address(const struct cluster_node *node, uint32_t n_shards, char *buf,
                          size_t len)
{
    snprintf(buf, len, "%s:%u", node->raft.host, (unsigned)node->raft.port + n_shards);
}
