/* Fuzz target: cluster configuration parsing and validation. */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/cluster/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cluster_config cfg;
    char err[256];
    if (cluster_config_parse((const char *)data, size, &cfg, err, sizeof err) == 0) {
        /* a valid config is internally consistent */
        for (uint32_t s = 0; s < cfg.n_shards; s++)
            for (uint32_t i = 0; i < cfg.replication; i++)
                if (cluster_node_by_id(&cfg, cfg.replicas[s * cfg.replication + i]) == NULL)
                    abort();
        cluster_config_free(&cfg);
    }
    return 0;
}
