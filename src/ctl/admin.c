/*
 * chorusctl's administration commands (issue 5): `config validate`, `conv inspect`
 * and `user add|disable|enable`.
 *
 * They reuse the server's own modules so that what the tool accepts is what
 * chorusd accepts: the config goes through cluster_config_load, user ids through
 * the gateway's wire_user_valid, password records through auth_password_hash
 * with the cluster's auth.scrypt_log2_n (as the gateway's register does), and
 * user commands travel as ordinary CLOG_OP_USER_* submits, which cc_submit
 * routes to the user's shard (cluster_shard_of_cmd).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../common/error.h"
#include "../gateway/auth.h"
#include "../gateway/wire.h"
#include "client.h"
#include "ctl.h"

/* ---- helpers -------------------------------------------------------------------- */

/* A JSON string of stored bytes; null when they are not UTF-8 (users and names
 * written through the gateway always are). */
static json_t *bytes_json(struct ch_slice s)
{
    json_t *j = json_stringn((const char *)s.ptr, s.len);
    return j ? j : json_null();
}

static int failed(const char *what, int err, const char *detail)
{
    fprintf(stderr, "chorusctl %s: %s (%s)\n", what, ch_errcode(err),
            detail ? detail : ch_strerror(err));
    return CTL_FAILED;
}

static int parse_conv(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != 0 || errno != 0 || v == 0)
        return -1;
    *out = v;
    return 0;
}

/* ---- config validate ------------------------------------------------------------ */

/*
 * config validate FILE: parses FILE with cluster_config_load, then applies the
 * one rule chorusd checks outside it (every node runs the gateway role, whose
 * gw_core_open refuses to start without auth.secret).  Needs no cluster.
 */
static int cmd_config_validate(const struct ctl_env *env, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: chorusctl config validate FILE\n");
        return CTL_USAGE;
    }
    const char *file = argv[0];
    struct cluster_config cfg;
    char err[512] = "";
    int rv = cluster_config_load(file, &cfg, err, sizeof err);
    if (rv == 0 && cfg.auth.secret[0] == 0) {
        snprintf(err, sizeof err,
                 "auth.secret: required by the gateway role (16+ characters)");
        cluster_config_free(&cfg);
        rv = CH_ECONFIG;
    }
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(file));
        json_object_set_new(o, "valid", json_boolean(rv == 0));
        if (rv != 0)
            json_object_set_new(o, "error", json_string(err));
        json_object_set_new(o, "nodes",
                            rv == 0 ? json_integer(cfg.n_nodes) : json_null());
        json_object_set_new(o, "shards",
                            rv == 0 ? json_integer(cfg.n_shards) : json_null());
        json_object_set_new(o, "replication",
                            rv == 0 ? json_integer(cfg.replication) : json_null());
        ctl_print_json(o);
    } else if (rv == 0) {
        printf("%s: valid: %u nodes, %u shards x %u replicas\n", file, cfg.n_nodes,
               cfg.n_shards, cfg.replication);
    } else {
        fprintf(stderr, "%s: invalid: %s\n", file, err);
    }
    if (rv != 0)
        return CTL_FAILED;
    cluster_config_free(&cfg);
    return CTL_OK;
}

int ctl_config(struct ctl_env *env, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "validate") == 0)
        return cmd_config_validate(env, argc - 1, argv + 1);
    fprintf(stderr, "usage: chorusctl config validate FILE\n");
    return CTL_USAGE;
}

/* ---- conv inspect --------------------------------------------------------------- */

static const char *role_name(uint8_t r)
{
    return r == CLOG_ROLE_OWNER ? "owner" : r == CLOG_ROLE_ADMIN ? "admin" : "member";
}

/* "2024-05-01T12:00:00.123Z" for a wall-clock time in ms. */
static void format_ms(uint64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL) {
        snprintf(buf, len, "?");
        return;
    }
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03uZ", (unsigned)(ms % 1000));
}

/*
 * The shard's replicas as the status sweep saw them, in placement order:
 * [{node, up, role?, term?, commit_index?, applied_index?}].  Sets *leader (0:
 * none) and *term.
 */
static json_t *shard_replicas(const struct cluster_config *cfg, json_t *status,
                              uint32_t shard, uint32_t *leader, uint64_t *term)
{
    json_t *sj = json_array_get(json_object_get(status, "shards"), shard);
    json_t *ld = json_object_get(sj, "leader");
    *leader = json_is_integer(ld) ? (uint32_t)json_integer_value(ld) : 0;
    *term = (uint64_t)json_integer_value(json_object_get(sj, "term"));
    json_t *seen = json_object_get(sj, "replicas");
    json_t *out = json_array();
    for (uint32_t i = 0; i < cfg->replication; i++) {
        uint32_t node = cfg->replicas[shard * cfg->replication + i];
        json_t *o = json_object();
        json_object_set_new(o, "node", json_integer(node));
        size_t k;
        json_t *r, *found = NULL;
        json_array_foreach(seen, k, r)
        {
            if ((uint32_t)json_integer_value(json_object_get(r, "node")) == node)
                found = r;
        }
        json_object_set_new(o, "up", json_boolean(found != NULL));
        if (found) {
            static const char *const keys[] = {"role", "term", "commit_index",
                                               "applied_index"};
            for (size_t x = 0; x < sizeof keys / sizeof keys[0]; x++)
                json_object_set(o, keys[x], json_object_get(found, keys[x]));
        }
        json_array_append_new(out, o);
    }
    return out;
}

/*
 * conv inspect CONV: where a conversation lives (shard, replicas, leader from the
 * status sweep) and what it holds (a linearizable CONV_GET on the leader).
 */
int ctl_conv_inspect(struct ctl_env *env, int argc, char **argv)
{
    uint64_t conv;
    if (argc != 1 || parse_conv(argv[0], &conv) != 0) {
        fprintf(stderr, "usage: chorusctl conv inspect CONV (a conversation id > 0)\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    uint32_t shard = cluster_shard_of_conv(conv, cfg.n_shards);
    json_t *status = ctl_status(&cfg, 0);
    if (ctl_status_unauthorized(status, "conv inspect")) {
        json_decref(status);
        cluster_config_free(&cfg);
        return CTL_FAILED;
    }
    uint32_t leader;
    uint64_t term;
    json_t *replicas = shard_replicas(&cfg, status, shard, &leader, &term);
    json_decref(status);

    struct cc c;
    struct ch_wbuf f;
    ch_wbuf_init(&f);
    struct proto_conv_get m = {.conv = conv, .flags = 0}; /* leader only */
    proto_encode_conv_get(&f, 0, &m);
    struct cc_reply r;
    if (cc_init(&c, &cfg) != 0 || ch_wbuf_error(&f))
        rv = CH_ENOMEM;
    else
        rv = cc_route_call(&c, &f, shard, 0, &r);
    ch_wbuf_free(&f);
    struct ch_rbuf body;
    struct proto_conv_get_reply g;
    if (rv == 0) {
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        if (r.f.type != PROTO_CONV_GET_REPLY ||
            proto_decode_conv_get_reply(&body, &g) != 0)
            rv = CH_EMALFORMED;
    }
    json_t *members = json_array();
    for (uint32_t i = 0; rv == 0 && i < g.n_members; i++) {
        struct proto_member pm;
        if (proto_get_member(&body, &pm) != 0) {
            rv = CH_EMALFORMED;
            break;
        }
        json_t *mj = json_object();
        json_object_set_new(mj, "user", bytes_json(pm.user));
        json_object_set_new(mj, "role", json_string(role_name(pm.role)));
        json_object_set_new(mj, "delivered", json_integer((json_int_t)pm.delivered));
        json_object_set_new(mj, "read", json_integer((json_int_t)pm.read));
        json_array_append_new(members, mj);
    }
    if (rv != 0) {
        char what[64];
        snprintf(what, sizeof what, "conv inspect %" PRIu64, conv);
        rv = failed(what, rv,
                    rv == CH_ENOTFOUND      ? "no such conversation"
                    : rv == CH_EUNAVAILABLE ? "no leader of its shard answered"
                                            : NULL);
        json_decref(members);
        json_decref(replicas);
        cc_close(&c);
        cluster_config_free(&cfg);
        return rv;
    }
    /* the node that answered a leader-only read is the leader right now */
    uint32_t answered = r.node;
    const char *kind = g.kind == CLOG_DIRECT ? "direct" : "group";
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "conv", json_integer((json_int_t)conv));
        json_object_set_new(o, "shard", json_integer(shard));
        json_object_set_new(o, "leader", leader ? json_integer(leader) : json_null());
        json_object_set_new(o, "term", json_integer((json_int_t)term));
        json_object_set_new(o, "answered_by", json_integer(answered));
        json_object_set_new(o, "replicas", replicas);
        json_object_set_new(o, "kind", json_string(kind));
        json_object_set_new(o, "name", bytes_json(g.name));
        json_object_set_new(o, "created_by", bytes_json(g.created_by));
        json_object_set_new(o, "created_ts", json_integer((json_int_t)g.created_ts));
        json_object_set_new(o, "last_seq", json_integer((json_int_t)g.last_seq));
        json_object_set_new(o, "member_count", json_integer(g.n_members));
        json_object_set_new(o, "members", members);
        ctl_print_json(o);
    } else {
        char when[48];
        format_ms(g.created_ts, when, sizeof when);
        printf("conversation %" PRIu64 "\n", conv);
        printf("  kind        %s\n", kind);
        printf("  name        \"%.*s\"\n", (int)g.name.len, (const char *)g.name.ptr);
        printf("  created     by %.*s at %s (%" PRIu64 ")\n", (int)g.created_by.len,
               (const char *)g.created_by.ptr, when, g.created_ts);
        printf("  last seq    %" PRIu64 "\n", g.last_seq);
        if (leader)
            printf("  shard       %u, leader node %u (term %" PRIu64 ")\n", shard, leader,
                   term);
        else
            printf("  shard       %u, no leader in the status sweep (node %u answered)\n",
                   shard, answered);
        printf("  replicas   ");
        size_t k;
        json_t *rep;
        json_array_foreach(replicas, k, rep)
        {
            json_t *role = json_object_get(rep, "role");
            printf(" %lld:%s", json_integer_value(json_object_get(rep, "node")),
                   role ? json_string_value(role) : "DOWN");
            if (role)
                printf("@%lld",
                       json_integer_value(json_object_get(rep, "applied_index")));
        }
        printf("   (node:role@applied)\n");
        printf("  members     %u\n\n", g.n_members);
        printf("  %-32s %-7s %10s %10s\n", "USER", "ROLE", "DELIVERED", "READ");
        json_t *mj;
        json_array_foreach(members, k, mj)
        {
            json_t *u = json_object_get(mj, "user");
            printf("  %-32s %-7s %10lld %10lld\n",
                   json_is_string(u) ? json_string_value(u) : "(not UTF-8)",
                   json_string_value(json_object_get(mj, "role")),
                   json_integer_value(json_object_get(mj, "delivered")),
                   json_integer_value(json_object_get(mj, "read")));
        }
        json_decref(members);
        json_decref(replicas);
    }
    cc_close(&c);
    cluster_config_free(&cfg);
    return CTL_OK;
}

/* ---- user add | disable | enable ------------------------------------------------ */

static int check_user(const char *verb, const char *user)
{
    if (user != NULL && wire_user_valid(user, strlen(user)))
        return 0;
    fprintf(
        stderr,
        "chorusctl user %s: %s is not a valid user id (1-%d of a-z 0-9 _ . -, starting "
        "with a-z or 0-9)\n",
        verb, user ? user : "(none)", WIRE_MAX_USER);
    return CTL_USAGE;
}

/* Reads the password from stdin's first line (its newline, and a \r, dropped). */
static int read_password_stdin(char *buf, size_t len)
{
    if (fgets(buf, (int)len, stdin) == NULL) {
        fprintf(stderr, "chorusctl user add: no password on stdin\n");
        return CTL_USAGE;
    }
    size_t n = strlen(buf);
    int had_newline = n > 0 && buf[n - 1] == '\n';
    if (!had_newline && !feof(stdin)) {
        fprintf(stderr, "chorusctl user add: password longer than %d bytes\n",
                WIRE_MAX_PASSWORD);
        return CTL_USAGE;
    }
    if (had_newline)
        buf[--n] = 0;
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = 0;
    return 0;
}

static int fill_random(uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = getrandom(buf + off, len - off, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

/* Submits one user command; prints the failure and returns CTL_FAILED, or 0 with *res. */
static int submit_user_cmd(const struct cluster_config *cfg, const struct clog_cmd *cmd,
                           const char *what, struct proto_result *res)
{
    struct cc c;
    if (cc_init(&c, cfg) != 0)
        return failed(what, CH_ENOMEM, NULL);
    int rv = cc_submit(&c, cmd, 1, res);
    cc_close(&c);
    if (rv == 0)
        rv = res->err;
    if (rv == 0)
        return 0;
    const char *detail = rv == CH_EEXISTS   ? "user already exists"
                         : rv == CH_ENOUSER ? "no such user"
                         : rv == CH_EUNAVAILABLE
                             ? "no leader of the user's shard answered"
                             : NULL;
    return failed(what, rv, detail);
}

static int cmd_user_add(const struct ctl_env *env, int argc, char **argv)
{
    const char *user = NULL, *password = NULL, *display = "";
    int from_stdin = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--password-stdin") == 0)
            from_stdin = 1;
        else if (strcmp(argv[i], "--password") == 0 && v)
            password = argv[++i];
        else if (strcmp(argv[i], "--display-name") == 0 && v)
            display = argv[++i];
        else if (argv[i][0] != '-' && user == NULL)
            user = argv[i];
        else {
            fprintf(stderr,
                    "usage: chorusctl user add USER (--password-stdin | --password "
                    "P) [--display-name N]\n");
            return CTL_USAGE;
        }
    }
    int rv = check_user("add", user);
    if (rv)
        return rv;
    if (from_stdin == (password != NULL)) {
        fprintf(stderr,
                "chorusctl user add: give one of --password-stdin, --password P\n");
        return CTL_USAGE;
    }
    char pw[WIRE_MAX_PASSWORD + 2];
    if (from_stdin) {
        if ((rv = read_password_stdin(pw, sizeof pw)) != 0)
            return rv;
    } else {
        snprintf(pw, sizeof pw, "%s", password);
    }
    size_t pw_len = strlen(pw);
    /* the gateway's register rules, so that the user can log in afterwards */
    if (pw_len < WIRE_MIN_PASSWORD || pw_len > WIRE_MAX_PASSWORD ||
        (password && strlen(password) != pw_len)) {
        fprintf(stderr, "chorusctl user add: the password must be %d..%d bytes\n",
                WIRE_MIN_PASSWORD, WIRE_MAX_PASSWORD);
        explicit_bzero(pw, sizeof pw);
        return CTL_USAGE;
    }
    json_t *dn = json_string(display); /* NULL: not UTF-8 */
    int display_ok = dn != NULL && strlen(display) <= WIRE_MAX_DISPLAY_NAME;
    json_decref(dn);
    if (!display_ok) {
        fprintf(stderr,
                "chorusctl user add: --display-name must be UTF-8, at most %d bytes\n",
                WIRE_MAX_DISPLAY_NAME);
        explicit_bzero(pw, sizeof pw);
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    if ((rv = ctl_load_config(env, &cfg)) != 0) {
        explicit_bzero(pw, sizeof pw);
        return rv;
    }
    uint8_t salt[AUTH_SALT_LEN];
    char record[AUTH_MAX_RECORD];
    struct auth_kdf kdf;
    auth_kdf_default(&kdf);
    kdf.n = 1ull << cfg.auth.scrypt_log2_n; /* as the gateway's kdf_work */
    if (fill_random(salt, sizeof salt) != 0)
        rv = CH_EIO;
    else
        rv = auth_password_hash(pw, pw_len, salt, &kdf, record, sizeof record);
    explicit_bzero(pw, sizeof pw);
    if (rv != 0) {
        cluster_config_free(&cfg);
        return failed("user add", rv, rv == CH_EIO ? "getrandom failed" : NULL);
    }
    struct clog_cmd cmd = {.op = CLOG_OP_USER_CREATE,
                           .actor = ch_slice_str(user),
                           .body = ch_slice_str(record),
                           .name = ch_slice_str(display)};
    uint32_t shard = cluster_shard_of_cmd(&cmd, cfg.n_shards);
    char what[96];
    snprintf(what, sizeof what, "user add %s", user);
    struct proto_result res;
    rv = submit_user_cmd(&cfg, &cmd, what, &res);
    cluster_config_free(&cfg);
    if (rv != 0)
        return rv;
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "user", json_string(user));
        json_object_set_new(o, "shard", json_integer(shard));
        json_object_set_new(o, "created", json_true());
        json_object_set_new(o, "ts", json_integer((json_int_t)res.ts));
        ctl_print_json(o);
    } else {
        printf("user %s created (shard %u)\n", user, shard);
    }
    return CTL_OK;
}

static int cmd_user_set_disabled(const struct ctl_env *env, const char *verb, int argc,
                                 char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: chorusctl user %s USER\n", verb);
        return CTL_USAGE;
    }
    const char *user = argv[0];
    int rv = check_user(verb, user);
    if (rv)
        return rv;
    struct cluster_config cfg;
    if ((rv = ctl_load_config(env, &cfg)) != 0)
        return rv;
    int disable = strcmp(verb, "disable") == 0;
    struct clog_cmd cmd = {.op = CLOG_OP_USER_UPDATE,
                           .kind = CLOG_USER_DISABLED,
                           .actor = ch_slice_str(user),
                           .ref_seq = (uint64_t)disable};
    uint32_t shard = cluster_shard_of_cmd(&cmd, cfg.n_shards);
    char what[96];
    snprintf(what, sizeof what, "user %s %s", verb, user);
    struct proto_result res;
    rv = submit_user_cmd(&cfg, &cmd, what, &res);
    cluster_config_free(&cfg);
    if (rv != 0)
        return rv;
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "user", json_string(user));
        json_object_set_new(o, "shard", json_integer(shard));
        json_object_set_new(o, "disabled", json_boolean(disable));
        json_object_set_new(o, "changed", json_boolean(!res.dup));
        ctl_print_json(o);
    } else {
        printf("user %s %s%s\n", user, disable ? "disabled" : "enabled",
               res.dup ? " (it already was)" : "");
    }
    return CTL_OK;
}

int ctl_user(struct ctl_env *env, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "add") == 0)
        return cmd_user_add(env, argc - 1, argv + 1);
    if (argc >= 1 && (strcmp(argv[0], "disable") == 0 || strcmp(argv[0], "enable") == 0))
        return cmd_user_set_disabled(env, argv[0], argc - 1, argv + 1);
    fprintf(stderr, "usage: chorusctl user add|disable|enable USER ... (see chorusctl "
                    "--help)\n");
    return CTL_USAGE;
}
