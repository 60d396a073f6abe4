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

/* Asks every node for its status: {cluster, nodes: [{id, up, ...}] in config order,
 * shards: [{id, leader (null if none), term, placement, replicas}]}.  The caller
 * owns the result (json_decref). */
json_t *ctl_status(const struct cluster_config *cfg, int digest);

#endif
