/*
 * Fuzz target: cluster configuration parsing and validation on arbitrary bytes.
 * Beyond "no crash, no leak", a config that parses must satisfy every promise
 * the validator makes (the rest of chorus relies on them without re-checking),
 * and a rejected one must come with a message and nothing to free.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/config.h"
#include "common/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_valid(const struct cluster_config *cfg)
{
    if (cfg->n_nodes < 1 || cfg->n_nodes > CLUSTER_MAX_NODES || cfg->n_shards < 1 ||
        cfg->n_shards > CLUSTER_MAX_SHARDS || cfg->replication < 1 ||
        cfg->replication > cfg->n_nodes || cfg->replication > CLUSTER_MAX_REPLICATION ||
        cfg->raft.heartbeat_timeout_ms >= cfg->raft.election_timeout_ms ||
        cfg->name[0] == '\0' || cfg->replicas == NULL)
        abort();
    for (uint32_t i = 0; i < cfg->n_nodes; i++) {
        const struct cluster_node *n = &cfg->nodes[i];
        if (n->id == 0 || cluster_node_by_id(cfg, n->id) != n ||
            (uint32_t)n->raft.port + cfg->n_shards - 1 > 65535)
            abort();
        /* Addresses are canonical: they parse back to themselves. */
        const struct cluster_addr *addrs[3] = {&n->raft, &n->client, &n->gateway};
        for (int k = 0; k < 3; k++) {
            char text[CLUSTER_HOST_MAX + 8];
            struct cluster_addr back;
            snprintf(text, sizeof text, "%s:%u", addrs[k]->host, addrs[k]->port);
            if (cluster_addr_parse(text, &back) != 0 ||
                strcmp(back.host, addrs[k]->host) || back.port != addrs[k]->port)
                abort();
        }
        char raft[CLUSTER_HOST_MAX + 8];
        cluster_raft_address(n, cfg->n_shards - 1, raft, sizeof raft);
    }
    for (uint32_t s = 0; s < cfg->n_shards; s++)
        for (uint32_t i = 0; i < cfg->replication; i++) {
            uint32_t id = cfg->replicas[s * cfg->replication + i];
            if (cluster_node_by_id(cfg, id) == NULL ||
                !cluster_node_has_shard(cfg, id, s))
                abort();
            for (uint32_t k = 0; k < i; k++)
                if (cfg->replicas[s * cfg->replication + k] == id)
                    abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cluster_config cfg;
    char err[256];
    err[0] = '\0';
    int rv = cluster_config_parse((const char *)data, size, &cfg, err, sizeof err);
    if (rv == 0) {
        check_valid(&cfg);
        cluster_config_free(&cfg);
    } else if ((rv != CH_ECONFIG && rv != CH_ENOMEM) || err[0] == '\0' ||
               memchr(err, '\0', sizeof err) == NULL || cfg.replicas != NULL) {
        abort();
    }

    /* The address parser alone, on the input as a C string. */
    char text[64];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    struct cluster_addr a;
    if (cluster_addr_parse(text, &a) == 0 && a.port == 0)
        abort();
    return 0;
}
