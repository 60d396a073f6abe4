/*
 * Fuzz target: the placement map (src/cluster/placement.h) on arbitrary bytes.
 *
 * The input is tried three ways:
 *   1. as an encoded map: a map that decodes re-encodes to exactly the input
 *      (the format is canonical), and a copy encodes alike.  The input is also
 *      tried with its last 4 bytes replaced by the right CRC32C, or mutations
 *      would almost never get past the checksum to the validator;
 *   2. as one command: one that decodes re-encodes to the input; it is applied
 *      to an unseeded map and to a seeded one;
 *   3. as a script: u16 length + command, repeated, applied in order to the
 *      seeded map.
 * Every apply must keep the map valid (its encoding decodes and re-encodes to the
 * same bytes), leave the state byte-identical when it fails (with a message), and
 * be idempotent when it succeeds: the same command again answers 0 and changes
 * nothing (SEED again: CH_EEXISTS).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/config.h"
#include "cluster/placement.h"
#include "common/error.h"
#include "common/hash.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Four nodes, four shards of three replicas, four meta-capable raft ranges. */
static const char config_json[] =
    "{\"name\":\"f\",\"shards\":4,\"replication\":3,\"meta\":[1,2,3],\"nodes\":["
    "{\"id\":1,\"raft\":\"127.0.0.1:7000\",\"client\":\"127.0.0.1:7100\","
    "\"gateway\":\"127.0.0.1:7101\"},"
    "{\"id\":2,\"raft\":\"127.0.0.1:7010\",\"client\":\"127.0.0.1:7102\","
    "\"gateway\":\"127.0.0.1:7103\"},"
    "{\"id\":3,\"raft\":\"127.0.0.1:7020\",\"client\":\"127.0.0.1:7104\","
    "\"gateway\":\"127.0.0.1:7105\"},"
    "{\"id\":4,\"raft\":\"10.0.0.4:7000\",\"client\":\"10.0.0.4:7100\","
    "\"gateway\":\"10.0.0.4:7101\"}]}";

static struct placement base;   /* the seeded map every input starts from */
static struct ch_wbuf scratch;  /* encodings, reused */
static struct ch_wbuf scratch2; /* inputs with a fixed CRC */

static void encode(const struct placement *p, struct ch_wbuf *b)
{
    ch_wbuf_reset(b);
    placement_encode(p, b);
    if (ch_wbuf_error(b))
        abort();
}

/* A seeded map with a move in progress and a draining node, built by commands. */
static void make_base(void)
{
    struct cluster_config cfg;
    char err[256];
    if (cluster_config_parse(config_json, sizeof config_json - 1, &cfg, err,
                             sizeof err) != 0 ||
        placement_from_config(&base, &cfg) != 0)
        abort();
    cluster_config_free(&cfg);
    /* shard 0 is on 1, 2, 3: start moving it from 3 to 4; drain node 2. */
    struct placement_cmd move = {
        .op = PLACEMENT_MOVE_BEGIN, .shard = 0, .from = 3, .to = 4};
    struct placement_cmd drain = {.op = PLACEMENT_NODE_SET_STATE};
    drain.node.addr.id = 2;
    drain.node.state = PLACEMENT_NODE_DRAINING;
    if (placement_apply(&base, &move, err, sizeof err) != 0 ||
        placement_apply(&base, &drain, err, sizeof err) != 0)
        abort();
    ch_wbuf_init(&scratch);
    ch_wbuf_init(&scratch2);
}

/* The map is valid: it survives its own codec unchanged. */
static void check_valid(const struct placement *p)
{
    if (p->version == 0)
        return;
    struct ch_wbuf a, b;
    ch_wbuf_init(&a);
    ch_wbuf_init(&b);
    encode(p, &a);
    struct placement back;
    char err[256];
    if (placement_decode(a.data, a.len, &back, err, sizeof err) != 0) {
        fprintf(stderr, "a command left an invalid map: %s\n", err);
        abort();
    }
    encode(&back, &b);
    if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
        abort();
    placement_free(&back);
    ch_wbuf_free(&a);
    ch_wbuf_free(&b);
}

/* Applies c to p and checks the promises of placement_apply. */
static void apply_checked(struct placement *p, const struct placement_cmd *c)
{
    struct ch_wbuf before, after;
    ch_wbuf_init(&before);
    ch_wbuf_init(&after);
    encode(p, &before);
    uint64_t version = p->version;
    char msg[256];
    msg[0] = '\0';
    int rv = placement_apply(p, c, msg, sizeof msg);
    encode(p, &after);
    int same =
        before.len == after.len && memcmp(before.data, after.data, before.len) == 0;
    if (rv != 0) {
        if (rv == CH_ENOMEM)
            abort(); /* nothing here is large */
        if (!same || msg[0] == '\0' || memchr(msg, '\0', sizeof msg) == NULL)
            abort();
    } else {
        if (!same && c->op != PLACEMENT_SEED && p->version != version + 1)
            abort();
        if (same && p->version != version)
            abort();
        check_valid(p);
        /* idempotent: again changes nothing */
        encode(p, &before);
        rv = placement_apply(p, c, msg, sizeof msg);
        encode(p, &after);
        if (rv != (c->op == PLACEMENT_SEED ? CH_EEXISTS : 0) || before.len != after.len ||
            memcmp(before.data, after.data, before.len) != 0)
            abort();
    }
    /* the queries on whatever state we have */
    for (uint32_t i = 0; i < p->n_nodes; i++) {
        uint32_t id = p->nodes[i].addr.id;
        if (placement_node(p, id) != &p->nodes[i] || placement_count(p, id) > p->n_shards)
            abort();
        if (p->nodes[i].state == PLACEMENT_NODE_REMOVED && placement_count(p, id) != 0)
            abort();
    }
    ch_wbuf_free(&before);
    ch_wbuf_free(&after);
}

static void try_map(const uint8_t *data, size_t size)
{
    struct placement p;
    char err[256];
    err[0] = '\0';
    int rv = placement_decode(data, size, &p, err, sizeof err);
    if (rv != 0) {
        if ((rv != CH_EMALFORMED && rv != CH_ECORRUPT && rv != CH_EVERSION) ||
            err[0] == '\0' || p.version != 0 || p.replicas != NULL || p.moves != NULL)
            abort();
        placement_free(&p);
        return;
    }
    encode(&p, &scratch);
    if (scratch.len != size || memcmp(scratch.data, data, size) != 0)
        abort();
    struct placement copy;
    if (placement_copy(&copy, &p) != 0)
        abort();
    encode(&copy, &scratch);
    if (scratch.len != size || memcmp(scratch.data, data, size) != 0)
        abort();
    for (uint32_t s = 0; s < p.n_shards; s++)
        for (uint32_t i = 0; i < p.replication; i++)
            if (!placement_hosts(&p, p.replicas[s * p.replication + i], s))
                abort();
    placement_free(&copy);
    placement_free(&p);
}

/* data with its CRC trailer fixed, in scratch2 (NULL when too short for one) */
static const uint8_t *with_crc(const uint8_t *data, size_t size)
{
    if (size < 9)
        return NULL;
    ch_wbuf_reset(&scratch2);
    ch_put_raw(&scratch2, data, size - 4);
    ch_put_u32(&scratch2, ch_crc32c(0, data, size - 4));
    if (ch_wbuf_error(&scratch2))
        abort();
    return scratch2.data;
}

/* Decodes one command; on success it must re-encode to the same bytes. */
static int decode_cmd(const uint8_t *data, size_t size, struct placement_cmd *c)
{
    int rv = placement_cmd_decode(data, size, c);
    if (rv != 0) {
        if (rv != CH_EMALFORMED && rv != CH_EUNKNOWN_OP)
            abort();
        return rv;
    }
    ch_wbuf_reset(&scratch);
    placement_cmd_encode(c, &scratch);
    if (ch_wbuf_error(&scratch) || scratch.len != size ||
        memcmp(scratch.data, data, size) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (base.version == 0)
        make_base();

    try_map(data, size);
    const uint8_t *fixed = with_crc(data, size);
    if (fixed != NULL)
        try_map(fixed, size);

    struct placement_cmd c;
    if (decode_cmd(data, size, &c) == 0) {
        struct placement empty;
        placement_init(&empty);
        apply_checked(&empty, &c);
        placement_free(&empty);
        if (c.op == PLACEMENT_SEED &&
            (fixed = with_crc(c.seed.ptr, c.seed.len)) != NULL) {
            struct placement_cmd seed = c;
            seed.seed.ptr = fixed;
            placement_init(&empty);
            apply_checked(&empty, &seed);
            placement_free(&empty);
        }
        struct placement p;
        if (placement_copy(&p, &base) != 0)
            abort();
        apply_checked(&p, &c);
        placement_free(&p);
    }

    /* a script of length-prefixed commands */
    struct placement p;
    if (placement_copy(&p, &base) != 0)
        abort();
    size_t at = 0;
    while (size - at >= 2) {
        size_t n = (size_t)data[at] | (size_t)data[at + 1] << 8;
        at += 2;
        if (n > size - at)
            break;
        if (decode_cmd(data + at, n, &c) == 0)
            apply_checked(&p, &c);
        at += n;
    }
    placement_free(&p);
    return 0;
}
