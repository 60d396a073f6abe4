/* This node's replica of the meta group: a small Raft group around the placement map. */
#ifndef CHORUS_META_UV_H
#define CHORUS_META_UV_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "placement.h"

/*
 * The meta group runs on the config's "meta" voters (DATA/meta, Raft port
 * raft.port + shards).  Its state machine is placement.h.  The first leader of
 * a new group proposes PLACEMENT_SEED with the map the static config describes;
 * every later change is a command proposed through meta_propose (chorusctl ->
 * store RPC META_PROPOSE -> here).
 */
struct meta;

struct meta_options {
    const struct cluster_config *config;
    uint32_t node_id;
    const char *data_dir;
    int bootstrap; /* a brand-new node: bootstrap the group (RAFT_CANTBOOTSTRAP is fine)
                    */
    /* Called on the loop thread after every applied change (p valid until the loop
     * runs again). */
    void (*on_change)(void *data, const struct placement *p);
    void *data;
};

int meta_open(uv_loop_t *loop, const struct meta_options *opt, struct meta **out,
              char *err, size_t errlen);
void meta_close(struct meta *m, void (*cb)(void *data), void *data);

/*
 * Called once per proposal after it was committed and applied on this (leader)
 * replica: status 0 with the map's version after it, or the state machine's
 * rejection (code + message), or CH_ENOTLEADER (leader_hint) / CH_EUNAVAILABLE
 * / CH_ESHUTDOWN when Raft could not commit it (then it may or may not apply
 * later: commands are idempotent, so retry).
 */
typedef void (*meta_done_cb)(void *data, int status, const char *msg, uint64_t version,
                             uint32_t leader_hint);

/* 0 (cb runs once, never inline) or CH_ENOTLEADER (*leader_hint) / CH_ENOMEM /
 * CH_ESHUTDOWN (cb never runs). */
int meta_propose(struct meta *m, const struct placement_cmd *cmd, meta_done_cb cb,
                 void *data, uint32_t *leader_hint);

/* A linearizable read: cb(data, 0, 0) once this (leader) replica has applied
 * everything committed before the call — meta_placement() is then the latest
 * map; or CH_ENOTLEADER (+ hint) / CH_EUNAVAILABLE / CH_ESHUTDOWN.  Returns 0
 * (cb runs once, never inline) or the error (cb never runs). */
typedef void (*meta_read_cb)(void *data, int status, uint32_t leader_hint);
int meta_read(struct meta *m, meta_read_cb cb, void *data, uint32_t *leader_hint);

/* A membership change of the meta group (raft_conf.h) on its leader: same
 * contract as raft_conf_change, plus CH_ENOTLEADER with *leader_hint. */
int meta_conf(struct meta *m, int op, uint32_t node, const char *address,
              void (*cb)(void *data, int status, int role), void *data, int *role,
              uint32_t *leader_hint);

/* The replica's current map (committed, possibly behind the leader's). */
const struct placement *meta_placement(const struct meta *m);
uint32_t meta_leader_hint(struct meta *m);

/* Periodic: logs state changes and, on a leader of an unseeded group, seeds it. */
void meta_watch(struct meta *m);

#endif
