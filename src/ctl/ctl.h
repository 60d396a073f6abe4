/* chorusctl's commands, shared between its source files. */
#ifndef CHORUS_CTL_H
#define CHORUS_CTL_H

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

#endif
