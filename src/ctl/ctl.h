/* chorusctl's commands, shared between its source files. */
#ifndef CHORUS_CTL_H
#define CHORUS_CTL_H

#include <jansson.h>

#include "../cluster/config.h"

/* Exit codes of every command. */
enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

/* Options every command understands. */
struct ctl_env {
    const char *config_path; /* resolved cluster config */
    const char *dir;         /* local cluster directory */
    int json;
};

/* Prints j as one compact JSON line on stdout and releases it. */
void ctl_print_json(json_t *j);

/* Loads env->config_path; prints a message and returns CTL_USAGE on failure. */
int ctl_load_config(const struct ctl_env *env, struct cluster_config *cfg);

/* `local up|down|start|stop` */
int ctl_local(struct ctl_env *env, int argc, char **argv);
/* `debug load` */
int ctl_load(struct ctl_env *env, int argc, char **argv);
/* `leader transfer|balance` */
int ctl_leader(struct ctl_env *env, int argc, char **argv);

/* `config validate` (needs no cluster), `conv inspect`, `user add|disable|enable`
 * (admin.c) */
int ctl_config(struct ctl_env *env, int argc, char **argv);
int ctl_conv_inspect(struct ctl_env *env, int argc, char **argv);
int ctl_user(struct ctl_env *env, int argc, char **argv);

/* `shard move`, `node list|add|drain|remove` (move.c) */
int ctl_shard(struct ctl_env *env, int argc, char **argv);
int ctl_node(struct ctl_env *env, int argc, char **argv);

/* `snapshot SHARD|--all` (snapshot.c) */
int ctl_snapshot(struct ctl_env *env, int argc, char **argv);

/* Replaces cfg's placement (and adds nodes) with the meta group's map, read from
 * any node that answers: 0, or an error (cfg unchanged; the static placement is
 * then all chorusctl knows). */
int ctl_sync_placement(struct cluster_config *cfg);

/* The newest map any node knows (stale read): 0, or CH_EUNAVAILABLE when no node
 * answers with one (*out is then empty; placement_free it either way). */
struct placement;
int ctl_fetch_placement(const struct cluster_config *cfg, struct placement *out);

/* The admin token for admin RPCs: --token, else $CHORUS_ADMIN_TOKEN, else the
 * config's admin.token. */
const char *ctl_admin_token(const struct cluster_config *cfg);

/* Does the status sweep show that nodes refused the admin token?  Then prints
 * "chorusctl: WHAT: unauthorized (wrong admin token)" and returns 1. */
int ctl_status_unauthorized(const json_t *status, const char *what);

/* Asks every node for its status: {cluster, nodes: [{id, up, ...}] in config order,
 * shards: [{id, leader (null if none), term, placement, replicas}]}.  The caller
 * owns the result (json_decref). */
json_t *ctl_status(const struct cluster_config *cfg, int digest);

#endif
