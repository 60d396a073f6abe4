/* Unit tests of the cluster configuration and shard placement (src/cluster). */
#include "test.h"

#include "cluster/config.h"
#include "common/error.h"

static char err[512];

static int parse(const char *json, struct cluster_config *cfg)
{
    return cluster_config_parse(json, strlen(json), cfg, err, sizeof err);
}

#define NODES3                                                                     \
    "\"nodes\":[{\"id\":1,\"raft\":\"127.0.0.1:7000\",\"client\":\"127.0.0.1:7100\","  \
    "\"gateway\":\"127.0.0.1:7101\"},{\"id\":2,\"raft\":\"127.0.0.1:7020\","           \
    "\"client\":\"127.0.0.1:7102\",\"gateway\":\"127.0.0.1:7103\"},{\"id\":3,"         \
    "\"raft\":\"127.0.0.1:7040\",\"client\":\"127.0.0.1:7104\",\"gateway\":"           \
    "\"127.0.0.1:7105\"}]"

static void shipped_configs_parse(void)
{
    static const char *const files[] = {"dev-1.json", "local-3.json", "netns-5.json"};
    static const uint32_t nodes[] = {1, 3, 5};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/cluster-conf/%s", CHORUS_SOURCE_DIR, files[i]);
        struct cluster_config cfg;
        int rv = cluster_config_load(path, &cfg, err, sizeof err);
        if (rv != 0)
            fprintf(stderr, "  %s: %s\n", path, err);
        CHECK_EQ_INT(rv, 0);
        CHECK_EQ_INT(cfg.n_nodes, nodes[i]);
        for (uint32_t s = 0; s < cfg.n_shards; s++) {
            uint32_t holders = 0;
            for (uint32_t n = 0; n < cfg.n_nodes; n++)
                holders += (uint32_t)cluster_node_has_shard(&cfg, cfg.nodes[n].id, s);
            CHECK_EQ_INT(holders, cfg.replication);
        }
        cluster_config_free(&cfg);
    }
    struct cluster_config cfg;
    CHECK_EQ_INT(cluster_config_load("/nonexistent/x.json", &cfg, err, sizeof err), CH_EIO);
}

static void defaults_and_round_robin(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":4," NODES3 "}", &cfg), 0);
    CHECK_EQ_INT(cfg.replication, 3);
    CHECK_EQ_INT(cfg.raft.election_timeout_ms, 1000);
    CHECK_EQ_INT(cfg.raft.pre_vote, 1);
    CHECK_EQ_INT(cfg.limits.max_body, 65536);
    /* shard s -> nodes (s, s+1, s+2) mod 3 */
    CHECK_EQ_INT(cfg.replicas[1 * 3 + 0], 2);
    CHECK_EQ_INT(cfg.replicas[1 * 3 + 2], 1);
    char addr[64];
    cluster_raft_address(cluster_node_by_id(&cfg, 2), 3, addr, sizeof addr);
    CHECK(strcmp(addr, "127.0.0.1:7023") == 0);
    CHECK(cluster_node_by_id(&cfg, 9) == NULL);
    cluster_config_free(&cfg);
}

static void explicit_placement(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
                       ",\"placement\":{\"0\":[3,1],\"1\":[2,3]}}",
                       &cfg),
                 0);
    CHECK(cluster_node_has_shard(&cfg, 3, 0) && cluster_node_has_shard(&cfg, 1, 0));
    CHECK(!cluster_node_has_shard(&cfg, 2, 0));
    CHECK(!cluster_node_has_shard(&cfg, 1, 7));
    cluster_config_free(&cfg);
}

/* Each bad config fails with CH_ECONFIG and a message naming the field. */
static void bad_configs_name_the_field(void)
{
    static const struct {
        const char *json;
        const char *needle;
    } cases[] = {
        {"{", "invalid JSON"},
        {"[]", "top level"},
        {"{\"name\":\"t\",\"shards\":4,\"shardz\":1," NODES3 "}", "shardz"},
        {"{\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":\"a b\",\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":\"t\"," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":0," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":4,\"replication\":4," NODES3 "}", "replication"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[]}", "nodes"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"localhost:1\","
         "\"client\":\"127.0.0.1:2\",\"gateway\":\"127.0.0.1:3\"}]}",
         "nodes[0].raft"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.256:2\",\"gateway\":\"1.2.3.4:3\"}]}",
         "nodes[0].client"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":0,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].id"},
        /* raft range 7000..7099 swallows the client port 7050 */
        {"{\"name\":\"t\",\"shards\":100,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:7000\","
         "\"client\":\"1.2.3.4:7050\",\"gateway\":\"1.2.3.4:9000\"}]}",
         "overlap"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:65534\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "65535"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\",\"extra\":1}]}",
         "extra"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,1],\"1\":[2,3]}}",
         "placement.0"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,9],\"1\":[2,3]}}",
         "placement.0[1]"},
        {"{\"name\":\"t\",\"shards\":2," NODES3 ",\"placement\":{\"0\":[1,2,3]}}",
         "placement"},
        {"{\"name\":\"t\",\"shards\":2," NODES3
         ",\"raft\":{\"election_timeout_ms\":100,\"heartbeat_timeout_ms\":100}}",
         "heartbeat"},
        {"{\"name\":\"t\",\"shards\":2," NODES3 ",\"raft\":{\"pre_vote\":1}}", "pre_vote"},
        {"{\"name\":\"t\",\"shards\":2," NODES3 ",\"limits\":{\"max_body\":0}}",
         "limits.max_body"},
        {"{\"name\":\"t\",\"shards\":2,\"shards\":3," NODES3 "}", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cluster_config cfg;
        err[0] = 0;
        int rv = parse(cases[i].json, &cfg);
        if (rv != CH_ECONFIG || strstr(err, cases[i].needle) == NULL)
            fprintf(stderr, "  case %zu: rv %d, message \"%s\"\n", i, rv, err);
        CHECK_EQ_INT(rv, CH_ECONFIG);
        CHECK(strstr(err, cases[i].needle) != NULL);
    }
}

static void addresses(void)
{
    struct cluster_addr a;
    CHECK_EQ_INT(cluster_addr_parse("10.0.0.1:80", &a), 0);
    CHECK(strcmp(a.host, "10.0.0.1") == 0 && a.port == 80);
    CHECK_EQ_INT(cluster_addr_parse("10.0.0.1:0", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse("10.0.0.1:65536", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse("10.0.0:80", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse(" 10.0.0.1:80", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse("10.0.0.1:80x", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse("10.0.0.-1:80", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse("[::1]:80", &a), CH_ECONFIG);
    CHECK_EQ_INT(cluster_addr_parse(NULL, &a), CH_ECONFIG);
}

static void shards_are_stable_and_uniform(void)
{
    CHECK_EQ_INT(cluster_shard_of_conv(42, 16), cluster_shard_of_conv(42, 16));
    CHECK_EQ_INT(cluster_shard_of_user("alice", 5, 16), cluster_shard_of_user("alice", 5, 16));
    uint32_t counts[16] = {0}, ucounts[16] = {0};
    for (uint64_t i = 0; i < 160000; i++) {
        counts[cluster_shard_of_conv(i + 1, 16)]++;
        char u[24];
        int n = snprintf(u, sizeof u, "user%llu", (unsigned long long)i);
        ucounts[cluster_shard_of_user(u, (size_t)n, 16)]++;
    }
    for (int s = 0; s < 16; s++) {
        CHECK(counts[s] > 9000 && counts[s] < 11000);
        CHECK(ucounts[s] > 9000 && ucounts[s] < 11000);
    }
}

TEST_MAIN(TEST_CASE(shipped_configs_parse), TEST_CASE(defaults_and_round_robin),
          TEST_CASE(explicit_placement), TEST_CASE(bad_configs_name_the_field),
          TEST_CASE(addresses), TEST_CASE(shards_are_stable_and_uniform))
