/*
 * `chorusctl local ...`: a cluster of chorusd processes on this machine.
 *
 * DIR/cluster.json is the cluster's config, DIR/node-N/ node N's data,
 * DIR/node-N.log its log and DIR/node-N.pid its process id.  Processes are
 * found and stopped by pid (checked against /proc/PID/cmdline so a recycled pid
 * is never signalled).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/error.h"
#include "../cluster/placement.h"
#include "client.h"
#include "ctl.h"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Directory of the running chorusctl binary. */
static int exe_dir(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (slash == NULL)
        return -1;
    *slash = 0;
    return 0;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Finds cluster-conf/NAME: $CHORUS_SOURCE, next to the binary's tree, or ./ */
static int find_conf(const char *name, char *out, size_t len)
{
    char base[PATH_MAX];
    const char *src = getenv("CHORUS_SOURCE");
    if (src) {
        snprintf(out, len, "%s/cluster-conf/%s", src, name);
        if (file_exists(out))
            return 0;
    }
    if (exe_dir(base, sizeof base) == 0) {
        snprintf(out, len, "%s/../cluster-conf/%s", base, name);
        if (file_exists(out))
            return 0;
    }
    snprintf(out, len, "cluster-conf/%s", name);
    return file_exists(out) ? 0 : -1;
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (in == NULL)
        return -1;
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    FILE *out = fopen(tmp, "wb");
    if (out == NULL) {
        fclose(in);
        return -1;
    }
    char buf[8192];
    size_t n;
    int rv = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rv = -1;
    fclose(in);
    if (fclose(out) != 0 || rv != 0)
        return -1;
    return rename(tmp, to);
}

static pid_t read_pid(const char *dir, uint32_t node)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/node-%u.pid", dir, node);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/*
 * Is pid a live chorusd (not a zombie, not a recycled pid)?  Reads the command
 * name and state from /proc/PID/stat: unlike cmdline, they stay readable while
 * a killed process is still exiting (and still holding its data-dir lock).
 */
static int chorusd_alive(pid_t pid)
{
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *open_paren = strchr(buf, '(');
    char *close_paren = strrchr(buf, ')');
    if (open_paren == NULL || close_paren == NULL || close_paren[1] != ' ')
        return 0;
    if (close_paren[2] == 'Z' || close_paren[2] == 'X')
        return 0;
    *close_paren = 0;
    return strcmp(open_paren + 1, "chorusd") == 0;
}

/* join: chorusd --join (a node added to a running cluster never bootstraps). */
static int start_node(const char *dir, const char *bin, uint32_t node, int join)
{
    char data[PATH_MAX], log[PATH_MAX], pidf[PATH_MAX], conf[PATH_MAX], id[16];
    snprintf(data, sizeof data, "%s/node-%u", dir, node);
    snprintf(log, sizeof log, "%s/node-%u.log", dir, node);
    snprintf(pidf, sizeof pidf, "%s/node-%u.pid", dir, node);
    snprintf(conf, sizeof conf, "%s/cluster.json", dir);
    snprintf(id, sizeof id, "%u", node);
    if (chorusd_alive(read_pid(dir, node))) {
        fprintf(stderr, "node %u is already running (pid %d)\n", node, (int)read_pid(dir, node));
        return CTL_FAILED;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return CTL_FAILED;
    }
    if (pid == 0) {
        setsid();
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || nul < 0)
            _exit(127);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        /* double fork: the node is not our child, so it never lingers as a zombie */
        pid_t inner = fork();
        if (inner != 0) {
            if (inner > 0) {
                FILE *pf = fopen(pidf, "w");
                if (pf) {
                    fprintf(pf, "%d\n", (int)inner);
                    fclose(pf);
                }
            }
            _exit(inner > 0 ? 0 : 127);
        }
        if (join)
            execl(bin, bin, "--config", conf, "--node", id, "--data", data, "--join",
                  (char *)NULL);
        else
            execl(bin, bin, "--config", conf, "--node", id, "--data", data, (char *)NULL);
        fprintf(stderr, "cannot exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "could not start node %u\n", node);
        return CTL_FAILED;
    }
    /* the pid file exists now; wait until the child has become chorusd (exec) */
    for (int i = 0; i < 100 && !chorusd_alive(read_pid(dir, node)); i++)
        sleep_ms(10);
    return CTL_OK;
}

static void print_log_tail(const char *dir, uint32_t node)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/node-%u.log", dir, node);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char lines[5][512];
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        memcpy(lines[n % 5], line, sizeof line);
        n++;
    }
    fclose(f);
    for (int i = n > 5 ? n - 5 : 0; i < n; i++)
        fprintf(stderr, "  %s", lines[i % 5]);
}

/* Waits until every listed node answers STATUS and every shard has a leader. */
static int wait_ready(const char *dir, const struct cluster_config *cfg, const uint32_t *nodes,
                      uint32_t n_nodes, int timeout_ms)
{
    struct cc c;
    if (cc_init(&c, cfg) != 0)
        return CTL_FAILED;
    uint64_t end = cc_now_ms() + (uint64_t)timeout_ms;
    int rv = CTL_FAILED;
    while (cc_now_ms() < end) {
        int all = 1;
        uint8_t *led = calloc(cfg->n_shards, 1);
        for (uint32_t i = 0; i < n_nodes && led; i++) {
            if (!chorusd_alive(read_pid(dir, nodes[i]))) {
                fprintf(stderr, "node %u exited; the end of its log:\n", nodes[i]);
                print_log_tail(dir, nodes[i]);
                free(led);
                cc_close(&c);
                return CTL_FAILED;
            }
        }
        for (uint32_t i = 0; i < cfg->n_nodes && led; i++) {
            struct ch_wbuf f;
            ch_wbuf_init(&f);
            uint64_t id = cc_req_id(&c);
            struct proto_status m = {0};
            proto_encode_status(&f, id, &m);
            struct cc_reply r;
            int err = cc_call(&c, cfg->nodes[i].id, &f, id, 1000, &r);
            ch_wbuf_free(&f);
            if (err != 0 || r.f.type != PROTO_STATUS_REPLY)
                continue;
            struct ch_rbuf body;
            ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
            struct proto_status_reply sr;
            if (proto_decode_status_reply(&body, &sr) != 0)
                continue;
            for (uint32_t k = 0; k < sr.n_shards; k++) {
                struct proto_shard_status ss;
                if (proto_get_shard_status(&body, &ss) != 0)
                    break;
                if (ss.role == PROTO_ROLE_LEADER && ss.shard < cfg->n_shards)
                    led[ss.shard] = 1;
                for (uint32_t x = 0; x < ss.n_replicas; x++) {
                    struct proto_replica rep;
                    proto_get_replica(&body, &rep);
                }
            }
        }
        for (uint32_t s = 0; s < cfg->n_shards && led; s++)
            if (!led[s])
                all = 0;
        free(led);
        struct placement map; /* and the meta group has its map */
        placement_init(&map);
        if (all && ctl_fetch_placement(cfg, &map) == 0) {
            placement_free(&map);
            rv = CTL_OK;
            break;
        }
        placement_free(&map);
        sleep_ms(200);
    }
    cc_close(&c);
    if (rv != CTL_OK)
        fprintf(stderr, "cluster not ready after %d ms (see %s/node-*.log)\n", timeout_ms,
                dir);
    return rv;
}

static int find_chorusd(const char *given, char *out, size_t len)
{
    if (given) {
        snprintf(out, len, "%s", given);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    char base[PATH_MAX];
    if (exe_dir(base, sizeof base) != 0)
        return -1;
    snprintf(out, len, "%s/chorusd", base);
    return access(out, X_OK) == 0 ? 0 : -1;
}

static int stop_node(const char *dir, uint32_t node, int sig)
{
    pid_t pid = read_pid(dir, node);
    char pidf[PATH_MAX];
    snprintf(pidf, sizeof pidf, "%s/node-%u.pid", dir, node);
    if (!chorusd_alive(pid)) {
        unlink(pidf);
        return 0;
    }
    kill(pid, sig);
    for (int i = 0; i < 200 && chorusd_alive(pid); i++)
        sleep_ms(50);
    if (chorusd_alive(pid)) {
        fprintf(stderr, "node %u (pid %d) did not stop in 10 s: SIGKILL\n", node, (int)pid);
        kill(pid, SIGKILL);
        for (int i = 0; i < 100 && chorusd_alive(pid); i++)
            sleep_ms(50);
    }
    unlink(pidf);
    return 1;
}

static int parse_node(const char *s, uint32_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v <= 0 || v > 1000000)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int ctl_local(struct ctl_env *env, int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "usage: chorusctl local up|down|start|stop ...\n");
        return CTL_USAGE;
    }
    const char *verb = argv[0];
    const char *bin = NULL;
    int n = 3, sig = SIGTERM, join = 0;
    uint32_t node = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--bin") == 0 && i + 1 < argc)
            bin = argv[++i];
        else if (strcmp(argv[i], "--kill") == 0)
            sig = SIGKILL;
        else if (strcmp(argv[i], "--join") == 0)
            join = 1;
        else if (node == 0 && parse_node(argv[i], &node) == 0)
            ;
        else {
            fprintf(stderr, "chorusctl local %s: unexpected argument '%s'\n", verb, argv[i]);
            return CTL_USAGE;
        }
    }
    if (mkdir(env->dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", env->dir, strerror(errno));
        return CTL_FAILED;
    }
    char conf[PATH_MAX];
    snprintf(conf, sizeof conf, "%s/cluster.json", env->dir);

    if (strcmp(verb, "up") == 0) {
        char chorusd[PATH_MAX];
        if (find_chorusd(bin, chorusd, sizeof chorusd) != 0) {
            fprintf(stderr, "cannot find an executable chorusd (use --bin)\n");
            return CTL_USAGE;
        }
        if (env->config_path && strcmp(env->config_path, conf) != 0) {
            if (copy_file(env->config_path, conf) != 0) {
                fprintf(stderr, "cannot copy %s to %s\n", env->config_path, conf);
                return CTL_FAILED;
            }
        } else if (!file_exists(conf)) {
            char src[PATH_MAX];
            const char *name = n == 1 ? "dev-1.json" : n == 3 ? "local-3.json" : NULL;
            if (name == NULL) {
                fprintf(stderr, "-n must be 1 or 3 (or give --config FILE)\n");
                return CTL_USAGE;
            }
            if (find_conf(name, src, sizeof src) != 0 || copy_file(src, conf) != 0) {
                fprintf(stderr, "cannot find cluster-conf/%s (set CHORUS_SOURCE)\n", name);
                return CTL_FAILED;
            }
        }
        struct ctl_env e = *env;
        e.config_path = conf;
        struct cluster_config cfg;
        int rv = ctl_load_config(&e, &cfg);
        if (rv != 0)
            return rv;
        /* "up" means "make sure it is up": nodes already running are left alone */
        uint32_t ids[CLUSTER_MAX_NODES];
        uint32_t running = 0;
        for (uint32_t i = 0; i < cfg.n_nodes; i++) {
            ids[i] = cfg.nodes[i].id;
            if (chorusd_alive(read_pid(env->dir, ids[i])))
                running++;
            else if (rv == 0)
                rv = start_node(env->dir, chorusd, ids[i], 0);
        }
        if (running > 0)
            printf("%u of %u nodes were already running from %s\n", running, cfg.n_nodes,
                   env->dir);
        if (rv == 0)
            rv = wait_ready(env->dir, &cfg, ids, cfg.n_nodes, 30000);
        if (rv == 0) {
            printf("cluster %s is up: %u nodes, %u shards x %u replicas\n", cfg.name,
                   cfg.n_nodes, cfg.n_shards, cfg.replication);
            printf("  directory   %s (logs: node-N.log)\n", env->dir);
            for (uint32_t i = 0; i < cfg.n_nodes; i++)
                printf("  node %-3u    web client http://%s:%u/  (store rpc %s:%u)\n",
                       cfg.nodes[i].id, cfg.nodes[i].gateway.host, cfg.nodes[i].gateway.port,
                       cfg.nodes[i].client.host, cfg.nodes[i].client.port);
            printf("  status      chorusctl --dir %s status\n", env->dir);
            printf("  stop        chorusctl --dir %s local down\n", env->dir);
        }
        cluster_config_free(&cfg);
        return rv;
    }
    struct ctl_env e = *env;
    if (e.config_path == NULL)
        e.config_path = conf;
    struct cluster_config cfg;
    int rv = ctl_load_config(&e, &cfg);
    if (rv != 0)
        return rv;
    if (strcmp(verb, "down") == 0) {
        int stopped = 0;
        for (uint32_t i = 0; i < cfg.n_nodes; i++)
            stopped += stop_node(env->dir, cfg.nodes[i].id, SIGTERM);
        printf("stopped %d node(s) of %s\n", stopped, cfg.name);
    } else if (strcmp(verb, "stop") == 0 || strcmp(verb, "start") == 0) {
        if (node == 0 || cluster_node_by_id(&cfg, node) == NULL) {
            fprintf(stderr, "chorusctl local %s: give a node id of this cluster\n", verb);
            rv = CTL_USAGE;
        } else if (verb[2] == 'o') { /* stop */
            if (!stop_node(env->dir, node, sig))
                printf("node %u was not running\n", node);
            else
                printf("node %u stopped (%s)\n", node, sig == SIGKILL ? "SIGKILL" : "SIGTERM");
        } else {
            char chorusd[PATH_MAX];
            if (find_chorusd(bin, chorusd, sizeof chorusd) != 0) {
                fprintf(stderr, "cannot find an executable chorusd (use --bin)\n");
                rv = CTL_USAGE;
            } else {
                rv = start_node(env->dir, chorusd, node, join);
                if (rv == 0) {
                    sleep_ms(300);
                    if (!chorusd_alive(read_pid(env->dir, node))) {
                        fprintf(stderr, "node %u exited; the end of its log:\n", node);
                        print_log_tail(env->dir, node);
                        rv = CTL_FAILED;
                    } else {
                        printf("node %u started (pid %d)\n", node,
                               (int)read_pid(env->dir, node));
                    }
                }
            }
        }
    } else {
        fprintf(stderr, "chorusctl local: unknown command '%s'\n", verb);
        rv = CTL_USAGE;
    }
    cluster_config_free(&cfg);
    return rv;
}
