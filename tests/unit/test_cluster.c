/* Unit tests of the cluster configuration and shard placement (src/cluster). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/config.h"
#include "common/error.h"
#include "raft-log/clog.h"
#include "raft-log/clog_cmd.h"
#include "test.h"

static char err[512];

static int parse(const char *json, struct cluster_config *cfg)
{
    err[0] = '\0';
    return cluster_config_parse(json, strlen(json), cfg, err, sizeof err);
}

/* Three nodes on one host with non-overlapping ranges for up to 20 shards. */
#define NODE(id, raft, client, gateway)                                            \
    "{\"id\":" #id ",\"raft\":\"127.0.0.1:" #raft "\",\"client\":\"127.0.0.1:" #client \
    "\",\"gateway\":\"127.0.0.1:" #gateway "\"}"
#define NODES3                                                                     \
    "\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(2, 7020, 7102, 7103) ","      \
    NODE(3, 7040, 7104, 7105) "]"
#define BASE "\"name\":\"t\",\"shards\":4," NODES3

/* ---- shipped configs -------------------------------------------------------------- */

static void test_shipped_configs_parse(void)
{
    static const struct {
        const char *file;
        uint32_t nodes, shards, replication;
        const char *host0;
        uint16_t raft0, client0, gateway0;
        int admin; /* ships a sample admin token */
    } want[] = {
        {"dev-1.json", 1, 4, 1, "127.0.0.1", 7100, 7200, 7300, 1},
        {"local-3.json", 3, 16, 3, "127.0.0.1", 7110, 7201, 7301, 1},
        {"netns-5.json", 5, 8, 3, "10.77.0.11", 7100, 7200, 7300, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/cluster-conf/%s", CHORUS_SOURCE_DIR,
                 want[i].file);
        struct cluster_config cfg;
        int rv = cluster_config_load(path, &cfg, err, sizeof err);
        if (rv != 0)
            fprintf(stderr, "  %s: %s\n", path, err);
        CHECK_EQ_INT(rv, 0);
        CHECK_EQ_INT(cfg.n_nodes, want[i].nodes);
        CHECK_EQ_INT(cfg.n_shards, want[i].shards);
        CHECK_EQ_INT(cfg.replication, want[i].replication);
        CHECK(strcmp(cfg.nodes[0].raft.host, want[i].host0) == 0);
        CHECK_EQ_INT(cfg.nodes[0].raft.port, want[i].raft0);
        CHECK_EQ_INT(cfg.nodes[0].client.port, want[i].client0);
        CHECK_EQ_INT(cfg.nodes[0].gateway.port, want[i].gateway0);
        CHECK_EQ_INT(cfg.raft.election_timeout_ms, 1000);
        CHECK_EQ_INT(cfg.raft.heartbeat_timeout_ms, 100);
        CHECK(want[i].admin == (strlen(cfg.admin.token) >= 16));
        /* Every shard has R distinct replicas on known nodes. */
        for (uint32_t s = 0; s < cfg.n_shards; s++) {
            uint32_t holders = 0;
            for (uint32_t n = 0; n < cfg.n_nodes; n++)
                holders += (uint32_t)cluster_node_has_shard(&cfg, cfg.nodes[n].id, s);
            CHECK_EQ_INT(holders, cfg.replication);
        }
        cluster_config_free(&cfg);
        CHECK(cfg.replicas == NULL);
    }
    /* local-3's last node: 16 raft ports from 7150, i.e. 7150..7165. */
    char path[1024];
    snprintf(path, sizeof path, "%s/cluster-conf/local-3.json", CHORUS_SOURCE_DIR);
    struct cluster_config cfg;
    CHECK_EQ_INT(cluster_config_load(path, &cfg, err, sizeof err), 0);
    char addr[64];
    cluster_raft_address(cluster_node_by_id(&cfg, 3), 15, addr, sizeof addr);
    CHECK(strcmp(addr, "127.0.0.1:7165") == 0);
    /* ... and 7166 for the meta group, whose voters default to all three */
    cluster_meta_address(cluster_node_by_id(&cfg, 3), cfg.n_shards, addr, sizeof addr);
    CHECK(strcmp(addr, "127.0.0.1:7166") == 0);
    CHECK_EQ_INT(cfg.n_meta, 3);
    for (uint32_t id = 1; id <= 3; id++)
        CHECK(cluster_node_is_meta(&cfg, id));
    cluster_config_free(&cfg);
}

static void test_load_errors(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(cluster_config_load("/nonexistent/chorus.json", &cfg, err, sizeof err),
                 CH_EIO);
    CHECK(strstr(err, "/nonexistent/chorus.json") != NULL);
    CHECK_EQ_INT(cluster_config_load("/nonexistent/chorus.json", &cfg, NULL, 0), CH_EIO);

    /* A file beyond the size limit is refused without being parsed. */
    char path[] = "/tmp/chorus-test-cluster-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    CHECK(f != NULL);
    static char spaces[4096];
    memset(spaces, ' ', sizeof spaces);
    for (int i = 0; i < 257; i++)
        fwrite(spaces, 1, sizeof spaces, f);
    fclose(f);
    int rv = cluster_config_load(path, &cfg, err, sizeof err);
    unlink(path);
    CHECK_EQ_INT(rv, CH_ECONFIG);
    CHECK(strstr(err, "larger") != NULL);
}

/* ---- defaults and placement ------------------------------------------------------- */

static void test_defaults(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse("{" BASE "}", &cfg), 0);
    CHECK(strcmp(cfg.name, "t") == 0);
    CHECK_EQ_INT(cfg.replication, 3);
    CHECK_EQ_INT(cfg.raft.election_timeout_ms, 1000);
    CHECK_EQ_INT(cfg.raft.heartbeat_timeout_ms, 100);
    CHECK_EQ_INT(cfg.raft.snapshot_threshold, 4096);
    CHECK_EQ_INT(cfg.raft.snapshot_trailing, 2048);
    CHECK_EQ_INT(cfg.raft.max_inflight_entries, 1024);
    CHECK_EQ_INT(cfg.raft.segment_size, 1u << 20);
    CHECK_EQ_INT(cfg.raft.pre_vote, 1);
    struct clog_limits l;
    clog_limits_default(&l);
    CHECK_EQ_INT(cfg.limits.max_body, l.max_body);
    CHECK_EQ_INT(cfg.limits.max_members, l.max_members);
    CHECK_EQ_INT(cfg.limits.max_events, l.max_events);
    cluster_config_free(&cfg);

    /* Replication defaults to 3, or to all nodes when there are fewer. */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":2,\"nodes\":["
                       NODE(1, 7000, 7100, 7101) ","
                       NODE(2, 7020, 7102, 7103) "]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.replication, 2);
    cluster_config_free(&cfg);

    /* Every option set explicitly. */
    CHECK_EQ_INT(
        parse("{" BASE ",\"replication\":2,\"placement\":\"round-robin\","
              "\"raft\":{\"election_timeout_ms\":300,\"heartbeat_timeout_ms\":50,"
              "\"snapshot_threshold\":100,\"snapshot_trailing\":50,"
              "\"max_inflight_entries\":64,\"segment_size\":65536,"
              "\"pre_vote\":false},"
              "\"limits\":{\"max_body\":1000,\"max_members\":50,"
              "\"max_events\":100000}}",
              &cfg),
        0);
    CHECK_EQ_INT(cfg.replication, 2);
    CHECK_EQ_INT(cfg.raft.election_timeout_ms, 300);
    CHECK_EQ_INT(cfg.raft.heartbeat_timeout_ms, 50);
    CHECK_EQ_INT(cfg.raft.snapshot_threshold, 100);
    CHECK_EQ_INT(cfg.raft.snapshot_trailing, 50);
    CHECK_EQ_INT(cfg.raft.max_inflight_entries, 64);
    CHECK_EQ_INT(cfg.raft.segment_size, 65536);
    CHECK_EQ_INT(cfg.raft.pre_vote, 0);
    CHECK_EQ_INT(cfg.limits.max_body, 1000);
    CHECK_EQ_INT(cfg.limits.max_members, 50);
    CHECK_EQ_INT(cfg.limits.max_events, 100000);
    cluster_config_free(&cfg);
}

/* Round-robin: shard s -> nodes[(s + i) % n] for i < R, in config order (not id order).
 */
static void test_round_robin_placement(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse("{\"name\":\"rr\",\"shards\":7,\"replication\":3,\"nodes\":["
                       NODE(50, 7000, 7100, 7101) "," NODE(7, 7020, 7102, 7103) ","
                       NODE(30, 7040, 7104, 7105) "," NODE(1, 7060, 7106, 7107) "]}",
                       &cfg),
                 0);
    static const uint32_t ids[4] = {50, 7, 30, 1};
    for (uint32_t s = 0; s < 7; s++)
        for (uint32_t i = 0; i < 3; i++)
            CHECK_EQ_INT(cfg.replicas[s * 3 + i], ids[(s + i) % 4]);
    CHECK(cluster_node_has_shard(&cfg, 50, 0));
    CHECK(cluster_node_has_shard(&cfg, 30, 0));
    CHECK(!cluster_node_has_shard(&cfg, 1, 0));
    CHECK(cluster_node_has_shard(&cfg, 1, 1));
    CHECK(!cluster_node_has_shard(&cfg, 50, 7)); /* no such shard */
    CHECK(!cluster_node_has_shard(&cfg, 99, 0)); /* no such node */
    cluster_config_free(&cfg);
}

static void test_explicit_placement(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":3,\"replication\":2," NODES3
                       ",\"placement\":{\"2\":[1,2],\"0\":[3,1],\"1\":[2,3]}}",
                       &cfg),
                 0);
    static const uint32_t want[3][2] = {{3, 1}, {2, 3}, {1, 2}};
    for (uint32_t s = 0; s < 3; s++)
        for (uint32_t i = 0; i < 2; i++)
            CHECK_EQ_INT(cfg.replicas[s * 2 + i], want[s][i]);
    CHECK(cluster_node_has_shard(&cfg, 3, 0) && cluster_node_has_shard(&cfg, 1, 0));
    CHECK(!cluster_node_has_shard(&cfg, 2, 0));
    cluster_config_free(&cfg);
}

static void test_lookups(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse("{" BASE "}", &cfg), 0);
    const struct cluster_node *n = cluster_node_by_id(&cfg, 2);
    CHECK(n != NULL && n->id == 2 && n == &cfg.nodes[1]);
    CHECK(cluster_node_by_id(&cfg, 0) == NULL);
    CHECK(cluster_node_by_id(&cfg, 4) == NULL);
    char addr[64];
    cluster_raft_address(n, 0, addr, sizeof addr);
    CHECK(strcmp(addr, "127.0.0.1:7020") == 0);
    cluster_raft_address(n, 3, addr, sizeof addr);
    CHECK(strcmp(addr, "127.0.0.1:7023") == 0);
    /* A short buffer is truncated and terminated, never overrun. */
    char tiny[6] = "xxxxx";
    cluster_raft_address(n, 3, tiny, sizeof tiny);
    CHECK(strcmp(tiny, "127.0") == 0);
    cluster_config_free(&cfg);
}

/* ---- validation ------------------------------------------------------------------- */

/* Each bad config fails with CH_ECONFIG, a message naming the field, and no memory. */
static void test_bad_configs_name_the_field(void)
{
    static const struct {
        const char *json;
        const char *needle;
    } cases[] = {
        /* syntax and shape */
        {"", "invalid JSON"},
        {"{", "invalid JSON"},
        {"{" BASE "} trailing", "invalid JSON"},
        {"[]", "top level"},
        {"{\"name\":\"t\",\"shards\":4,\"shards\":5," NODES3 "}", "invalid JSON"},
        {"{" BASE ",\"shardz\":1}", "unknown field \"shardz\" at the top level"},
        {"{" BASE ",\"Replication\":1}", "\"Replication\""},
        /* name */
        {"{\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":\"\",\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":7,\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":\"a b\",\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":\"../etc\",\"shards\":4," NODES3 "}", "name"},
        {"{\"name\":\"0123456789012345678901234567890123456789012345678901234567890123\","
         "\"shards\":4," NODES3 "}",
         "name"},
        /* shards */
        {"{\"name\":\"t\"," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":0," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":-1," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":1025," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":4.0," NODES3 "}", "shards"},
        {"{\"name\":\"t\",\"shards\":\"4\"," NODES3 "}", "shards"},
        /* replication */
        {"{" BASE ",\"replication\":0}", "replication"},
        {"{" BASE ",\"replication\":4}", "replication"},
        {"{" BASE ",\"replication\":true}", "replication"},
        /* nodes */
        {"{\"name\":\"t\",\"shards\":4}", "nodes"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[]}", "nodes"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":{}}", "nodes"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) ",5]}",
         "nodes[1]"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].id"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":0,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].id"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":4294967296,\"raft\":\"1.2.3.4:"
         "5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].id"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":\"1\",\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].id"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(
             1, 7020, 7102, 7103) "]}",
         "nodes[1].id"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"localhost:1\","
         "\"client\":\"127.0.0.1:2\",\"gateway\":\"127.0.0.1:3\"}]}",
         "nodes[0].raft: expected \"a.b.c.d:port\""},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(
             1, 7000, 7100,
             7101) ","
                   "{\"id\":2,\"raft\":\"127.0.0.1:7020\",\"client\":\"1.2.3.256:2\","
                   "\"gateway\":\"1.2.3.4:3\"}]}",
         "nodes[1].client: expected \"a.b.c.d:port\""},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\"}]}",
         "nodes[0].gateway"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":7300}]}",
         "nodes[0].gateway"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:5\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\",\"extra\":1}]}",
         "nodes[0]: unknown field \"extra\""},
        /* addresses: raft 7000..7099 swallows the node's own client port 7050 */
        {"{\"name\":\"t\",\"shards\":100,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:7000\","
         "\"client\":\"1.2.3.4:7050\",\"gateway\":\"1.2.3.4:9000\"}]}",
         "nodes[0].raft and nodes[0].client"},
        /* ... another node's raft range (7000..7003 vs 7003..7006) */
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(
             2, 7003, 7102, 7103) "]}",
         "nodes[0].raft and nodes[1].raft"},
        /* ... another node's gateway inside this node's raft range */
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(
             2, 7020, 7102, 7002) "]}",
         "nodes[0].raft and nodes[1].gateway"},
        /* ... two single ports equal */
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(
             2, 7020, 7101, 7103) "]}",
         "nodes[0].gateway and nodes[1].client"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7100) "]}",
         "nodes[0].client and nodes[0].gateway"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:65534\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].raft"},
        /* 65533 + 4 shards + the meta group: the last port would be 65537 */
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:65533\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].raft: 4 shards and the meta group need ports 65533..65537"},
        /* 65532: only the meta group's port, 65536, is out of range */
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":1,\"raft\":\"1.2.3.4:65532\","
         "\"client\":\"1.2.3.4:20\",\"gateway\":\"1.2.3.4:30\"}]}",
         "nodes[0].raft: 4 shards and the meta group need ports 65532..65536"},
        /* the meta group's port (raft + S) is taken like the shards' */
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(
             2, 7004, 7102, 7103) "]}",
         "nodes[0].raft and nodes[1].raft"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7004, 7101)
         "]}",
         "nodes[0].raft and nodes[0].client"},
        {"{\"name\":\"t\",\"shards\":4,\"nodes\":[" NODE(1, 7000, 7100, 7101) "," NODE(
             2, 7020, 7102, 7004) "]}",
         "nodes[0].raft and nodes[1].gateway: addresses overlap (a raft address takes "
         "one port per shard from its base, plus one for the meta group)"},
        /* meta */
        {"{" BASE ",\"meta\":[]}", "meta: expected an array of an odd number"},
        {"{" BASE ",\"meta\":[1,2]}", "meta: expected an array of an odd number"},
        {"{" BASE ",\"meta\":[1,2,3,1,2,3,1,2,3]}", "meta: expected an array"},
        {"{" BASE ",\"meta\":1}", "meta: expected an array"},
        {"{" BASE ",\"meta\":{\"1\":1}}", "meta: expected an array"},
        {"{" BASE ",\"meta\":[9]}", "meta[0]: expected the id of a node"},
        {"{" BASE ",\"meta\":[1,2,4]}", "meta[2]: expected the id of a node"},
        {"{" BASE ",\"meta\":[0]}", "meta[0]"},
        {"{" BASE ",\"meta\":[-1]}", "meta[0]"},
        {"{" BASE ",\"meta\":[4294967297]}", "meta[0]"},
        {"{" BASE ",\"meta\":[\"1\"]}", "meta[0]"},
        {"{" BASE ",\"meta\":[1.0]}", "meta[0]"},
        {"{" BASE ",\"meta\":[1,2,1]}", "meta[2]: node 1 is listed twice"},
        /* placement */
        {"{" BASE ",\"placement\":\"random\"}", "placement"},
        {"{" BASE ",\"placement\":[1,2,3]}", "placement"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,2]}}",
         "placement.1"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,2],\"1\":[2,3],\"2\":[1,3]}}",
         "placement.\"2\""},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,2],\"01\":[2,3]}}",
         "placement.\"01\""},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,2],\"x\":[2,3]}}",
         "placement.\"x\""},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,1],\"1\":[2,3]}}",
         "placement.0"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,9],\"1\":[2,3]}}",
         "placement.0[1]"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,\"2\"],\"1\":[2,3]}}",
         "placement.0[1]"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,2,3],\"1\":[2,3]}}",
         "placement.0"},
        {"{\"name\":\"t\",\"shards\":2,\"replication\":2," NODES3
         ",\"placement\":{\"0\":[1,2],\"1\":3}}",
         "placement.1"},
        /* raft tuning */
        {"{" BASE ",\"raft\":[]}", "raft"},
        {"{" BASE ",\"raft\":{\"election_timeout\":1000}}", "raft: unknown field "
                                                            "\"election_timeout\""},
        {"{" BASE ",\"raft\":{\"election_timeout_ms\":100,\"heartbeat_timeout_ms\":100}}",
         "raft.heartbeat_timeout_ms"},
        {"{" BASE ",\"raft\":{\"heartbeat_timeout_ms\":1000}}",
         "raft.heartbeat_timeout_ms"},
        {"{" BASE ",\"raft\":{\"election_timeout_ms\":0}}", "raft.election_timeout_ms"},
        {"{" BASE ",\"raft\":{\"snapshot_threshold\":-5}}", "raft.snapshot_threshold"},
        {"{" BASE ",\"raft\":{\"snapshot_trailing\":1}}", "raft.snapshot_trailing"},
        {"{" BASE ",\"raft\":{\"max_inflight_entries\":0}}", "raft.max_inflight_entries"},
        {"{" BASE ",\"raft\":{\"segment_size\":1}}", "raft.segment_size"},
        {"{" BASE ",\"raft\":{\"pre_vote\":1}}", "raft.pre_vote"},
        /* limits */
        {"{" BASE ",\"limits\":7}", "limits"},
        {"{" BASE ",\"limits\":{\"max_body\":0}}", "limits.max_body"},
        {"{" BASE ",\"limits\":{\"max_body\":1048577}}", "limits.max_body"},
        {"{" BASE ",\"limits\":{\"max_members\":1}}", "limits.max_members"},
        {"{" BASE ",\"limits\":{\"max_events\":\"many\"}}", "limits.max_events"},
        {"{" BASE ",\"limits\":{\"max_bodies\":10}}",
         "limits: unknown field \"max_bodies\""},
        /* admin */
        {"{" BASE ",\"admin\":\"0123456789abcdef\"}", "admin: expected an object"},
        {"{" BASE ",\"admin\":{}}", "admin.token: required"},
        {"{" BASE ",\"admin\":{\"token\":\"0123456789abcde\"}}", "admin.token"},
        {"{" BASE ",\"admin\":{\"token\":16}}", "admin.token"},
        {"{" BASE ",\"admin\":{\"token\":\"0123456789 abcdef\"}}", "admin.token"},
        {"{" BASE ",\"admin\":{\"token\":\"0123456789abcdef\\u00e9\"}}", "admin.token"},
        {"{" BASE ",\"admin\":{\"token\":\"0123456789abcdef\",\"tokens\":1}}",
         "admin: unknown field \"tokens\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cluster_config cfg;
        int rv = parse(cases[i].json, &cfg);
        if (rv != CH_ECONFIG || strstr(err, cases[i].needle) == NULL)
            fprintf(stderr, "  case %zu: rv %d, message \"%s\", wanted \"%s\"\n", i, rv,
                    err, cases[i].needle);
        CHECK_EQ_INT(rv, CH_ECONFIG);
        CHECK(strstr(err, cases[i].needle) != NULL);
        CHECK(cfg.replicas == NULL);
    }
}

/* Edges that are valid: the limits themselves. */
static void test_valid_edges(void)
{
    struct cluster_config cfg;
    /* No admin section: no token; a 16- and a 256-character token are accepted. */
    CHECK_EQ_INT(parse("{" BASE "}", &cfg), 0);
    CHECK(cfg.admin.token[0] == 0);
    cluster_config_free(&cfg);
    CHECK_EQ_INT(parse("{" BASE ",\"admin\":{\"token\":\"0123456789abcdef\"}}", &cfg), 0);
    CHECK(strcmp(cfg.admin.token, "0123456789abcdef") == 0);
    cluster_config_free(&cfg);
    {
        char json[1024], token[257];
        memset(token, 'k', 256);
        token[256] = 0;
        snprintf(json, sizeof json, "{" BASE ",\"admin\":{\"token\":\"%s\"}}", token);
        CHECK_EQ_INT(parse(json, &cfg), 0);
        CHECK(strcmp(cfg.admin.token, token) == 0);
        cluster_config_free(&cfg);
        snprintf(json, sizeof json, "{" BASE ",\"admin\":{\"token\":\"%sk\"}}", token);
        CHECK_EQ_INT(parse(json, &cfg), CH_ECONFIG);
        CHECK(strstr(err, "admin.token") != NULL);
    }
    /* Raft range (4 shards and the meta group) ending exactly at 65535. */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":4,\"nodes\":[{\"id\":4294967295,"
                       "\"raft\":\"1.2.3.4:65531\",\"client\":\"1.2.3.4:20\","
                       "\"gateway\":\"1.2.3.4:30\"}]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.nodes[0].id, 4294967295u);
    char meta_addr[64];
    cluster_meta_address(&cfg.nodes[0], cfg.n_shards, meta_addr, sizeof meta_addr);
    CHECK(strcmp(meta_addr, "1.2.3.4:65535") == 0);
    cluster_config_free(&cfg);
    /* Ranges that touch but do not overlap: 7000..7004 (7004: meta) and 7005.. */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":4,\"nodes\":["
                       NODE(1, 7000, 7005, 7006) ","
                       NODE(2, 7007, 7012, 7013) "]}",
                       &cfg),
                 0);
    cluster_config_free(&cfg);
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":4,\"nodes\":["
                       NODE(1, 7000, 7100, 7101) ","
                       NODE(2, 7005, 7102, 7103) "]}",
                       &cfg),
                 0);
    cluster_config_free(&cfg);
    /* The same ports on different hosts are fine. */
    CHECK_EQ_INT(
        parse("{\"name\":\"t\",\"shards\":1024,\"replication\":2,\"nodes\":["
              "{\"id\":1,\"raft\":\"10.0.0.1:7000\",\"client\":\"10.0.0.1:9000\","
              "\"gateway\":\"10.0.0.1:9001\"},"
              "{\"id\":2,\"raft\":\"10.0.0.2:7000\",\"client\":\"10.0.0.2:9000\","
              "\"gateway\":\"10.0.0.2:9001\"}]}",
              &cfg),
        0);
    CHECK_EQ_INT(cfg.n_shards, 1024);
    cluster_config_free(&cfg);
    /* The largest replication factor. */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":1,\"replication\":7,\"nodes\":["
                       NODE(1, 7000, 7100, 7101) "," NODE(2, 7002, 7102, 7103) ","
                       NODE(3, 7004, 7104, 7105) "," NODE(4, 7006, 7106, 7107) ","
                       NODE(5, 7008, 7108, 7109) "," NODE(6, 7010, 7110, 7111) ","
                       NODE(7, 7012, 7112, 7113) "," NODE(8, 7014, 7114, 7115) "]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.replication, 7);
    cluster_config_free(&cfg);
}

/* ---- meta group ------------------------------------------------------------------- */

static void test_meta_voters(void)
{
    struct cluster_config cfg;
    /* default: the first three nodes in file order (not id order) */
    CHECK_EQ_INT(parse("{\"name\":\"m\",\"shards\":4,\"nodes\":["
                       NODE(50, 7000, 7100, 7101) "," NODE(7, 7020, 7102, 7103) ","
                       NODE(30, 7040, 7104, 7105) "," NODE(1, 7060, 7106, 7107) ","
                       NODE(2, 7080, 7108, 7109) "]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.n_meta, 3);
    CHECK(cfg.meta[0] == 50 && cfg.meta[1] == 7 && cfg.meta[2] == 30);
    CHECK(cluster_node_is_meta(&cfg, 50) && cluster_node_is_meta(&cfg, 30));
    CHECK(!cluster_node_is_meta(&cfg, 1) && !cluster_node_is_meta(&cfg, 2));
    CHECK(!cluster_node_is_meta(&cfg, 0) && !cluster_node_is_meta(&cfg, 99));
    char addr[64];
    cluster_meta_address(cluster_node_by_id(&cfg, 7), cfg.n_shards, addr, sizeof addr);
    CHECK(strcmp(addr, "127.0.0.1:7024") == 0);
    char tiny[6] = "xxxxx";
    cluster_meta_address(cluster_node_by_id(&cfg, 7), cfg.n_shards, tiny, sizeof tiny);
    CHECK(strcmp(tiny, "127.0") == 0);
    cluster_config_free(&cfg);
    /* three nodes: all of them */
    CHECK_EQ_INT(parse("{" BASE "}", &cfg), 0);
    CHECK_EQ_INT(cfg.n_meta, 3);
    CHECK(cfg.meta[0] == 1 && cfg.meta[1] == 2 && cfg.meta[2] == 3);
    cluster_config_free(&cfg);
    /* two nodes: one voter, so that the group has an odd number */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":2,\"nodes\":["
                       NODE(8, 7000, 7100, 7101) "," NODE(9, 7020, 7102, 7103) "]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.n_meta, 1);
    CHECK_EQ_INT(cfg.meta[0], 8);
    CHECK(cluster_node_is_meta(&cfg, 8) && !cluster_node_is_meta(&cfg, 9));
    cluster_config_free(&cfg);
    /* one node */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":2,\"nodes\":["
                       NODE(4, 7000, 7100, 7101) "]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.n_meta, 1);
    CHECK_EQ_INT(cfg.meta[0], 4);
    cluster_config_free(&cfg);
    /* explicit: kept in the given order */
    CHECK_EQ_INT(parse("{" BASE ",\"meta\":[2]}", &cfg), 0);
    CHECK_EQ_INT(cfg.n_meta, 1);
    CHECK_EQ_INT(cfg.meta[0], 2);
    CHECK(!cluster_node_is_meta(&cfg, 1) && cluster_node_is_meta(&cfg, 2));
    cluster_config_free(&cfg);
    CHECK_EQ_INT(parse("{" BASE ",\"meta\":[3,1,2]}", &cfg), 0);
    CHECK_EQ_INT(cfg.n_meta, 3);
    CHECK(cfg.meta[0] == 3 && cfg.meta[1] == 1 && cfg.meta[2] == 2);
    cluster_config_free(&cfg);
    /* seven voters, the most */
    CHECK_EQ_INT(parse("{\"name\":\"t\",\"shards\":1,\"meta\":[8,7,6,5,4,3,2],"
                       "\"nodes\":["
                       NODE(1, 7000, 7100, 7101) "," NODE(2, 7002, 7102, 7103) ","
                       NODE(3, 7004, 7104, 7105) "," NODE(4, 7006, 7106, 7107) ","
                       NODE(5, 7008, 7108, 7109) "," NODE(6, 7010, 7110, 7111) ","
                       NODE(7, 7012, 7112, 7113) "," NODE(8, 7014, 7114, 7115) "]}",
                       &cfg),
                 0);
    CHECK_EQ_INT(cfg.n_meta, 7);
    CHECK(!cluster_node_is_meta(&cfg, 1) && cluster_node_is_meta(&cfg, 2));
    cluster_config_free(&cfg);
}

/* ---- addresses -------------------------------------------------------------------- */

static void test_address_parsing(void)
{
    static const struct {
        const char *s;
        const char *host;
        uint16_t port;
    } good[] = {
        {"10.0.0.1:80", "10.0.0.1", 80},
        {"0.0.0.0:1", "0.0.0.0", 1},
        {"255.255.255.255:65535", "255.255.255.255", 65535},
        {"127.0.0.1:7100", "127.0.0.1", 7100},
        {"1.20.100.0:10", "1.20.100.0", 10},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct cluster_addr a;
        CHECK_EQ_INT(cluster_addr_parse(good[i].s, &a), 0);
        CHECK(strcmp(a.host, good[i].host) == 0);
        CHECK_EQ_INT(a.port, good[i].port);
    }
    static const char *const bad[] = {
        NULL, "", ":", "10.0.0.1", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536",
        "10.0.0.1:99999", "10.0.0.1:123456", "10.0.0:80", "10.0.0.1.5:80", "10..0.1:80",
        "256.0.0.1:80", "1.2.3.1000:80", " 10.0.0.1:80", "10.0.0.1:80 ", "10.0.0.1 :80",
        "10.0.0.1:80x", "10.0.0.1:80:81", "+10.0.0.1:80", "10.0.0.-1:80", "10.0.0.1:-80",
        "10.0.0.1:+80", "010.0.0.1:80", "10.0.0.01:80", "10.0.0.1:080", "0x7f.0.0.1:80",
        "localhost:80", "[::1]:80", "::1:80", "10.0.0.1/24:80", "10.0.0.1\n:80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cluster_addr a;
        if (cluster_addr_parse(bad[i], &a) != CH_ECONFIG)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i] ? bad[i] : "(null)");
        CHECK_EQ_INT(cluster_addr_parse(bad[i], &a), CH_ECONFIG);
    }
}

/* ---- shard functions -------------------------------------------------------------- */

/*
 * These functions decide where data lives, so their values are part of the
 * on-disk contract: pin a few (checked against an independent model of
 * splitmix64's finaliser over FNV-1a), and require a roughly uniform spread.
 */
static void test_shard_functions(void)
{
    CHECK_EQ_INT(cluster_shard_of_conv(42, 16), cluster_shard_of_conv(42, 16));
    CHECK_EQ_INT(cluster_shard_of_user("alice", 5, 16),
                 cluster_shard_of_user("alice", 5, 16));
    CHECK_EQ_INT(cluster_shard_of_conv(1, 16), 5);
    CHECK_EQ_INT(cluster_shard_of_conv(42, 16), 2);
    CHECK_EQ_INT(cluster_shard_of_conv(UINT64_MAX, 1024), 379);
    CHECK_EQ_INT(cluster_shard_of_user("alice", 5, 16), 12);
    CHECK_EQ_INT(cluster_shard_of_user("", 0, 16), 11);
    /* A command lives on its conversation's shard; a user op (conv 0) on its user's,
     * whatever its conv field says: the store routes by this, the readers of user
     * records (USER_GET) look there. */
    struct clog_cmd post = {.op = CLOG_OP_POST, .conv = 42, .actor = ch_slice_str("alice")};
    CHECK_EQ_INT(cluster_shard_of_cmd(&post, 16), cluster_shard_of_conv(42, 16));
    for (uint8_t op = CLOG_OP_USER_CREATE; op <= CLOG_OP_USER_UPDATE; op++) {
        struct clog_cmd user = {.op = op, .conv = 0, .actor = ch_slice_str("alice")};
        CHECK_EQ_INT(cluster_shard_of_cmd(&user, 16), 12);
        CHECK(cluster_shard_of_cmd(&user, 16) != cluster_shard_of_conv(0, 16));
    }
    for (uint64_t c = 0; c < 1000; c++) {
        CHECK_EQ_INT(cluster_shard_of_conv(c, 1), 0);
        CHECK(cluster_shard_of_conv(c, 7) < 7);
    }

    uint32_t convs[16] = {0}, users[16] = {0};
    for (uint64_t i = 0; i < 160000; i++) {
        convs[cluster_shard_of_conv(i + 1, 16)]++;
        char u[32];
        int n = snprintf(u, sizeof u, "user-%llu", (unsigned long long)i);
        users[cluster_shard_of_user(u, (size_t)n, 16)]++;
    }
    for (int s = 0; s < 16; s++) {
        if (convs[s] <= 8000 || convs[s] >= 12000 || users[s] <= 8000 ||
            users[s] >= 12000)
            fprintf(stderr, "  shard %d: %u convs, %u users\n", s, convs[s], users[s]);
        CHECK(convs[s] > 8000 && convs[s] < 12000);
        CHECK(users[s] > 8000 && users[s] < 12000);
    }
}

TEST_MAIN(TEST_CASE(test_shipped_configs_parse), TEST_CASE(test_load_errors),
          TEST_CASE(test_defaults), TEST_CASE(test_round_robin_placement),
          TEST_CASE(test_explicit_placement), TEST_CASE(test_lookups),
          TEST_CASE(test_bad_configs_name_the_field), TEST_CASE(test_valid_edges),
          TEST_CASE(test_meta_voters), TEST_CASE(test_address_parsing),
          TEST_CASE(test_shard_functions))
