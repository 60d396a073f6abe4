/*
 * chorusctl: operate a chorus cluster.
 *
 *   chorusctl [--config FILE | --dir DIR] [--json] COMMAND ...
 *
 * The config is --config, else DIR/cluster.json where DIR is --dir, $CHORUS_HOME
 * or ./.chorus-local.  Exit status: 0 ok, 1 the operation failed, 2 usage or
 * configuration error.  Errors name the wire code (not_found, forbidden, ...).
 */
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cluster/placement.h"
#include "../common/error.h"
#include "../raft-log/clog_event.h"
#include "client.h"
#include "ctl.h"
#include "http.h"

static const char *const usage_text =
    "usage: chorusctl [--config FILE | --dir DIR] [--json] [--token T] COMMAND ...\n"
    "\n"
    "cluster\n"
    "  status [--digest]                  nodes, shards, leaders, terms, indexes, lag\n"
    "  local up [-n 1|3] [--bin CHORUSD]  start a local cluster in DIR (background)\n"
    "  local down                         stop it\n"
    "  local stop NODE [--kill]           stop one node (SIGTERM, or SIGKILL)\n"
    "  local start NODE [--join]          start one node again (--join: a node new to\n"
    "                                     the cluster, e.g. after `node add`)\n"
    "  leader transfer SHARD [--to NODE]  move a shard's leadership (to NODE, a "
    "replica;\n"
    "                                     else Raft picks), prints old -> new and the "
    "time\n"
    "  leader balance [--dry-run]         spread leaders evenly over the up nodes, one\n"
    "                                     transfer at a time (--dry-run: print the "
    "plan)\n"
    "  config validate FILE               check a cluster config as chorusd would (no\n"
    "                                     cluster needed): nodes, shards, replicas\n"
    "  shard move SHARD --from A --to B   move one replica (add, catch up, promote,\n"
    "                                     remove; progress bar; Ctrl-C aborts safely)\n"
    "  shard move SHARD --abort           undo an interrupted move\n"
    "  snapshot SHARD | snapshot --all    every replica writes a Raft snapshot now\n"
    "  node list                          nodes in the placement map, states, replicas\n"
    "  node add ID [--raft A --client A --gateway A]  register a node (then start it\n"
    "                                     with chorusd --join)\n"
    "  node drain ID                      no leaders, no new replicas on ID\n"
    "  node activate ID                   undo drain\n"
    "  node remove ID                     move every replica off ID, then remove it\n"
    "  node rejoin ID                     re-add ID's replicas as new ones after it\n"
    "                                     lost its data (start it with --join first)\n"
    "admin commands send --token, else $CHORUS_ADMIN_TOKEN, else the config's\n"
    "admin.token.  Exit status: 0 ok, 1 failed (status: a node down or a shard\n"
    "without leader), 2 usage or config error\n"
    "conversations\n"
    "  conv create CONV --actor U (--group NAME | --direct) --members a,b,...\n"
    "  conv get CONV [--stale] [--node N]\n"
    "  conv inspect CONV                  shard, replicas, leader, members and cursors\n"
    "  conv add CONV --actor U --user V [--role admin|member]\n"
    "  conv remove CONV --actor U --user V\n"
    "  conv leave CONV --actor U\n"
    "  send CONV --actor U [--id CLIENT_MSG_ID] TEXT\n"
    "  edit CONV SEQ --actor U [--id ID] TEXT      delete CONV SEQ --actor U [--id ID]\n"
    "  react CONV SEQ --actor U [--remove] EMOJI   receipt CONV SEQ --actor U [--read]\n"
    "  history CONV [--after N] [--before N] [--limit N] [--node N --stale]\n"
    "users\n"
    "  user add USER (--password-stdin | --password P) [--display-name N]\n"
    "                                     create a login (scrypt with "
    "auth.scrypt_log2_n;\n"
    "                                     prefer --password-stdin: argv is visible in "
    "ps)\n"
    "  user disable USER                  refuse the user's logins (forbidden)\n"
    "  user enable USER                   allow them again\n"
    "debugging\n"
    "  debug load --convs C --messages M [--window W] [--members K] [--size B]\n"
    "             [--seed S] [--out FILE]\n"
    "  debug digest                       replica digests per shard, compared\n"
    "  debug subscribe SHARD [--node N] [--from INDEX] [--entries N] [--timeout MS]\n"
    "                                     follow a shard's committed stream (JSON "
    "lines)\n";

static const char *admin_token_override;

const char *ctl_admin_token(const struct cluster_config *cfg)
{
    return admin_token_override != NULL ? admin_token_override : cfg->admin.token;
}

int ctl_load_config(const struct ctl_env *env, struct cluster_config *cfg)
{
    char err[512];
    int rv = cluster_config_load(env->config_path, cfg, err, sizeof err);
    if (rv != 0) {
        fprintf(stderr, "chorusctl: config %s: %s\n", env->config_path, err);
        return CTL_USAGE;
    }
    /* The config's placement is only the seed: the cluster's map is in the meta group. */
    ctl_sync_placement(cfg);
    return 0;
}

static int fail_code(int err, const char *what)
{
    fprintf(stderr, "chorusctl: %s: %s (%s)\n", what, ch_errcode(err), ch_strerror(err));
    return CTL_FAILED;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s == 0 || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != 0)
        return -1;
    *out = v;
    return 0;
}

/* ---- options of conversation commands ----------------------------------------- */

struct opts {
    const char *actor, *user, *role, *group, *members, *id;
    int direct, stale, remove, read;
    uint64_t after, before, limit, node;
    const char *pos[3];
    int n_pos;
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->limit = 50;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define STR_OPT(name, field)                                                       \
    if (strcmp(a, name) == 0) {                                                    \
        if (!v)                                                                    \
            goto missing;                                                          \
        o->field = v;                                                              \
        i++;                                                                       \
        continue;                                                                  \
    }
#define NUM_OPT(name, field)                                                       \
    if (strcmp(a, name) == 0) {                                                    \
        if (parse_u64(v, &o->field) != 0)                                          \
            goto missing;                                                          \
        i++;                                                                       \
        continue;                                                                  \
    }
        STR_OPT("--actor", actor)
        STR_OPT("--user", user)
        STR_OPT("--role", role)
        STR_OPT("--group", group)
        STR_OPT("--members", members)
        STR_OPT("--id", id)
        NUM_OPT("--after", after)
        NUM_OPT("--before", before)
        NUM_OPT("--limit", limit)
        NUM_OPT("--node", node)
#undef STR_OPT
#undef NUM_OPT
        if (strcmp(a, "--direct") == 0)
            o->direct = 1;
        else if (strcmp(a, "--stale") == 0)
            o->stale = 1;
        else if (strcmp(a, "--remove") == 0)
            o->remove = 1;
        else if (strcmp(a, "--read") == 0)
            o->read = 1;
        else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "chorusctl: unknown option %s\n", a);
            return CTL_USAGE;
        } else if (o->n_pos < 3)
            o->pos[o->n_pos++] = a;
        else {
            fprintf(stderr, "chorusctl: unexpected argument %s\n", a);
            return CTL_USAGE;
        }
        continue;
    missing:
        fprintf(stderr, "chorusctl: %s needs a valid value\n", a);
        return CTL_USAGE;
    }
    return 0;
}

/* ---- output helpers -------------------------------------------------------------- */

static json_t *str_json(struct ch_slice s)
{
    json_t *j = json_stringn((const char *)s.ptr, s.len);
    if (j != NULL)
        return j;
    /* not UTF-8: show bytes as hex */
    char *hex = malloc(s.len * 2 + 5);
    if (hex == NULL)
        return json_null();
    strcpy(hex, "hex:");
    for (size_t i = 0; i < s.len; i++)
        sprintf(hex + 4 + 2 * i, "%02x", s.ptr[i]);
    j = json_string(hex);
    free(hex);
    return j;
}

static json_t *event_json(const struct clog_event *ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "conv", json_integer((json_int_t)ev->conv));
    json_object_set_new(o, "seq", json_integer((json_int_t)ev->seq));
    json_object_set_new(o, "type", json_string(clog_event_type_name(ev->type)));
    json_object_set_new(o, "ts", json_integer((json_int_t)ev->ts));
    json_object_set_new(o, "actor", str_json(ev->actor));
    if (ev->kind)
        json_object_set_new(o, "kind", json_integer(ev->kind));
    if (ev->ref_seq)
        json_object_set_new(o, "ref_seq", json_integer((json_int_t)ev->ref_seq));
    if (ev->target.len)
        json_object_set_new(o, "target", str_json(ev->target));
    if (ev->client_msg_id.len)
        json_object_set_new(o, "client_msg_id", str_json(ev->client_msg_id));
    if (ev->body.len || ev->type == CLOG_EV_MESSAGE)
        json_object_set_new(o, "body", str_json(ev->body));
    return o;
}

void ctl_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(j);
}

/* ---- conversation commands ---------------------------------------------------------- */

static int submit_one(const struct cluster_config *cfg, const struct clog_cmd *cmd,
                      const char *what, struct proto_result *res)
{
    struct cc c;
    if (cc_init(&c, cfg) != 0)
        return fail_code(CH_ENOMEM, what);
    int rv = cc_submit(&c, cmd, 1, res);
    cc_close(&c);
    if (rv != 0)
        return fail_code(rv, what);
    if (res->err != 0)
        return fail_code(res->err, what);
    return 0;
}

static void print_result(const struct ctl_env *env, const struct proto_result *r)
{
    if (env->json) {
        json_t *o = json_object();
        json_object_set_new(o, "conv", json_integer((json_int_t)r->conv));
        json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
        json_object_set_new(o, "ts", json_integer((json_int_t)r->ts));
        json_object_set_new(o, "dup", json_boolean(r->dup));
        ctl_print_json(o);
    } else {
        printf("conv %" PRIu64 " seq %" PRIu64 "%s\n", r->conv, r->seq,
               r->dup ? " (duplicate: already applied)" : "");
    }
}

static uint8_t parse_role(const char *s)
{
    if (s == NULL || strcmp(s, "member") == 0)
        return CLOG_ROLE_MEMBER;
    if (strcmp(s, "admin") == 0)
        return CLOG_ROLE_ADMIN;
    return 0;
}

static const char *role_name(uint8_t r)
{
    return r == CLOG_ROLE_OWNER ? "owner" : r == CLOG_ROLE_ADMIN ? "admin" : "member";
}

static int cmd_write(const struct ctl_env *env, const char *verb, int argc, char **argv)
{
    struct opts o;
    int rv = parse_opts(argc, argv, &o);
    if (rv)
        return rv;
    struct clog_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    if (o.n_pos < 1 || parse_u64(o.pos[0], &cmd.conv) != 0 || cmd.conv == 0) {
        fprintf(stderr, "chorusctl %s: first argument must be a conversation id (u64 > 0)\n",
                verb);
        return CTL_USAGE;
    }
    if (o.actor == NULL) {
        fprintf(stderr, "chorusctl %s: --actor is required\n", verb);
        return CTL_USAGE;
    }
    cmd.actor = ch_slice_str(o.actor);
    cmd.client_msg_id = ch_slice_str(o.id);
    struct ch_wbuf members;
    ch_wbuf_init(&members);
    const char *text = NULL;
    int want_pos = 1;
    if (strcmp(verb, "create") == 0) {
        if ((o.group == NULL) == (o.direct == 0) || o.members == NULL) {
            fprintf(stderr, "chorusctl conv create: give --group NAME or --direct, and "
                            "--members\n");
            return CTL_USAGE;
        }
        cmd.op = CLOG_OP_CREATE;
        cmd.kind = o.direct ? CLOG_DIRECT : CLOG_GROUP;
        cmd.name = ch_slice_str(o.group);
        size_t at = clog_members_begin(&members);
        uint32_t count = 0;
        const char *p = o.members;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len > 0) {
                struct ch_slice u = {(const uint8_t *)p, len};
                clog_members_put(&members, u, CLOG_ROLE_MEMBER);
                count++;
            }
            p += len + (comma ? 1 : 0);
        }
        clog_members_end(&members, at, count);
        cmd.members.ptr = members.data;
        cmd.members.len = members.len;
    } else if (strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0) {
        if (o.user == NULL || (cmd.kind = parse_role(o.role)) == 0) {
            fprintf(stderr, "chorusctl conv %s: --user V is required (--role admin|member)\n",
                    verb);
            return CTL_USAGE;
        }
        cmd.op = verb[0] == 'a' ? CLOG_OP_ADD_MEMBER : CLOG_OP_REMOVE_MEMBER;
        cmd.target = ch_slice_str(o.user);
    } else if (strcmp(verb, "leave") == 0) {
        cmd.op = CLOG_OP_LEAVE;
    } else if (strcmp(verb, "send") == 0) {
        cmd.op = CLOG_OP_POST;
        want_pos = 2;
        text = o.n_pos > 1 ? o.pos[1] : NULL;
    } else {
        /* edit / delete / react / receipt take a seq */
        want_pos = strcmp(verb, "delete") == 0 || strcmp(verb, "receipt") == 0 ? 2 : 3;
        if (o.n_pos < 2 || parse_u64(o.pos[1], &cmd.ref_seq) != 0) {
            fprintf(stderr, "chorusctl %s: second argument must be a seq\n", verb);
            return CTL_USAGE;
        }
        text = o.n_pos > 2 ? o.pos[2] : NULL;
        if (strcmp(verb, "edit") == 0)
            cmd.op = CLOG_OP_EDIT;
        else if (strcmp(verb, "delete") == 0)
            cmd.op = CLOG_OP_DELETE;
        else if (strcmp(verb, "react") == 0) {
            cmd.op = CLOG_OP_REACT;
            cmd.kind = o.remove ? CLOG_REACT_REMOVE : CLOG_REACT_ADD;
        } else {
            cmd.op = CLOG_OP_CURSOR;
            cmd.kind = o.read ? CLOG_CURSOR_READ : CLOG_CURSOR_DELIVERED;
        }
    }
    if (o.n_pos != want_pos) {
        fprintf(stderr, "chorusctl %s: wrong number of arguments (see chorusctl --help)\n",
                verb);
        ch_wbuf_free(&members);
        return CTL_USAGE;
    }
    if (text)
        cmd.body = ch_slice_str(text);
    struct cluster_config cfg;
    if ((rv = ctl_load_config(env, &cfg)) != 0) {
        ch_wbuf_free(&members);
        return rv;
    }
    struct proto_result res;
    rv = submit_one(&cfg, &cmd, verb, &res);
    if (rv == 0)
        print_result(env, &res);
    ch_wbuf_free(&members);
    cluster_config_free(&cfg);
    return rv;
}

/* Reads (history, conv get): routed to the leader, or --node N [--stale]. */
static int read_call(const struct ctl_env *env, const struct cluster_config *cfg,
                     struct ch_wbuf *frame, uint64_t conv, uint64_t node, struct cc *c,
                     struct cc_reply *r, const char *what)
{
    (void)env;
    if (node && cluster_node_by_id(cfg, (uint32_t)node) == NULL) {
        fprintf(stderr, "chorusctl %s: node %" PRIu64 " is not in the config\n", what, node);
        return CTL_USAGE;
    }
    int rv = cc_route_call(c, frame, cluster_shard_of_conv(conv, cfg->n_shards),
                           (uint32_t)node, r);
    if (rv != 0)
        return fail_code(rv, what);
    return 0;
}

static int cmd_history(const struct ctl_env *env, int argc, char **argv)
{
    struct opts o;
    int rv = parse_opts(argc, argv, &o);
    if (rv)
        return rv;
    uint64_t conv;
    if (o.n_pos != 1 || parse_u64(o.pos[0], &conv) != 0) {
        fprintf(stderr, "chorusctl history CONV [--after N] [--before N] [--limit N]\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    if ((rv = ctl_load_config(env, &cfg)) != 0)
        return rv;
    struct cc c;
    cc_init(&c, &cfg);
    /* Pages through everything asked for: --limit is the total. */
    uint64_t after = o.after, left = o.limit;
    int has_more = 1;
    while (rv == 0 && left > 0 && has_more) {
        struct ch_wbuf f;
        ch_wbuf_init(&f);
        struct proto_history m = {.conv = conv,
                                  .after = o.before ? 0 : after,
                                  .before = o.before,
                                  .limit = (uint32_t)(left > 1000 ? 1000 : left),
                                  .flags = o.stale ? PROTO_FLAG_STALE_OK : 0};
        proto_encode_history(&f, 0, &m);
        struct cc_reply r;
        rv = read_call(env, &cfg, &f, conv, o.node, &c, &r, "history");
        ch_wbuf_free(&f);
        if (rv != 0)
            break;
        struct ch_rbuf body;
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        struct proto_history_reply hr;
        if (r.f.type != PROTO_HISTORY_REPLY || proto_decode_history_reply(&body, &hr) != 0) {
            rv = fail_code(CH_EMALFORMED, "history");
            break;
        }
        for (uint32_t i = 0; i < hr.n_events; i++) {
            struct clog_event ev;
            if (clog_event_decode(&body, &ev) != 0) {
                rv = fail_code(CH_EMALFORMED, "history");
                break;
            }
            if (env->json) {
                ctl_print_json(event_json(&ev));
            } else {
                printf("%6" PRIu64 "  %-14s %-12.*s", ev.seq, clog_event_type_name(ev.type),
                       (int)ev.actor.len, (const char *)ev.actor.ptr);
                if (ev.ref_seq)
                    printf(" ref=%" PRIu64, ev.ref_seq);
                if (ev.target.len)
                    printf(" target=%.*s", (int)ev.target.len, (const char *)ev.target.ptr);
                if (ev.body.len)
                    printf(" %.*s", (int)ev.body.len, (const char *)ev.body.ptr);
                printf("\n");
            }
            after = ev.seq;
            left--;
        }
        has_more = hr.has_more && !o.before;
        if (hr.n_events == 0)
            break;
    }
    cc_close(&c);
    cluster_config_free(&cfg);
    return rv;
}

static int cmd_conv_get(const struct ctl_env *env, int argc, char **argv)
{
    struct opts o;
    int rv = parse_opts(argc, argv, &o);
    if (rv)
        return rv;
    uint64_t conv;
    if (o.n_pos != 1 || parse_u64(o.pos[0], &conv) != 0) {
        fprintf(stderr, "chorusctl conv get CONV\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    if ((rv = ctl_load_config(env, &cfg)) != 0)
        return rv;
    struct cc c;
    cc_init(&c, &cfg);
    struct ch_wbuf f;
    ch_wbuf_init(&f);
    struct proto_conv_get m = {.conv = conv, .flags = o.stale ? PROTO_FLAG_STALE_OK : 0};
    proto_encode_conv_get(&f, 0, &m);
    struct cc_reply r;
    rv = read_call(env, &cfg, &f, conv, o.node, &c, &r, "conv get");
    ch_wbuf_free(&f);
    struct ch_rbuf body;
    struct proto_conv_get_reply g;
    if (rv == 0) {
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        if (r.f.type != PROTO_CONV_GET_REPLY || proto_decode_conv_get_reply(&body, &g) != 0)
            rv = fail_code(CH_EMALFORMED, "conv get");
    }
    if (rv == 0) {
        json_t *o_json = json_object();
        json_t *members = json_array();
        if (!env->json)
            printf("conversation %" PRIu64 " (%s) \"%.*s\" created by %.*s, last seq %" PRIu64
                   ", %u members, shard %u\n",
                   conv, g.kind == CLOG_DIRECT ? "direct" : "group", (int)g.name.len,
                   (const char *)g.name.ptr, (int)g.created_by.len,
                   (const char *)g.created_by.ptr, g.last_seq, g.n_members,
                   cluster_shard_of_conv(conv, cfg.n_shards));
        for (uint32_t i = 0; i < g.n_members; i++) {
            struct proto_member pm;
            if (proto_get_member(&body, &pm) != 0)
                break;
            if (env->json) {
                json_t *mj = json_object();
                json_object_set_new(mj, "user", str_json(pm.user));
                json_object_set_new(mj, "role", json_string(role_name(pm.role)));
                json_object_set_new(mj, "delivered", json_integer((json_int_t)pm.delivered));
                json_object_set_new(mj, "read", json_integer((json_int_t)pm.read));
                json_array_append_new(members, mj);
            } else {
                printf("  %-24.*s %-7s delivered %-8" PRIu64 " read %" PRIu64 "\n",
                       (int)pm.user.len, (const char *)pm.user.ptr, role_name(pm.role),
                       pm.delivered, pm.read);
            }
        }
        if (env->json) {
            json_object_set_new(o_json, "conv", json_integer((json_int_t)conv));
            json_object_set_new(o_json, "kind",
                                json_string(g.kind == CLOG_DIRECT ? "direct" : "group"));
            json_object_set_new(o_json, "name", str_json(g.name));
            json_object_set_new(o_json, "created_by", str_json(g.created_by));
            json_object_set_new(o_json, "last_seq", json_integer((json_int_t)g.last_seq));
            json_object_set_new(o_json, "shard",
                                json_integer(cluster_shard_of_conv(conv, cfg.n_shards)));
            json_object_set_new(o_json, "members", members);
            ctl_print_json(o_json);
        } else {
            json_decref(members);
            json_decref(o_json);
        }
    }
    cc_close(&c);
    cluster_config_free(&cfg);
    return rv;
}

/* ---- status -------------------------------------------------------------------- */

struct node_view {
    int up;
    struct proto_status_reply st;
    struct proto_shard_status *shards;
    uint32_t *replica_nodes; /* per shard status: up to CLUSTER_MAX_REPLICATION */
};

/* Asks every node's admin HTTP API (GET /admin/v1/status); returns a JSON object
 * {nodes, shards}. */
static json_t *collect_status(const struct cluster_config *cfg, int digest)
{
    json_t *nodes = json_array();
    json_t *shards = json_array();
    json_t **per_shard = calloc(cfg->n_shards, sizeof *per_shard);
    uint64_t *best_term = calloc(cfg->n_shards, sizeof *best_term);
    uint32_t *leader = calloc(cfg->n_shards, sizeof *leader);
    uint64_t *leader_commit = calloc(cfg->n_shards, sizeof *leader_commit);
    for (uint32_t s = 0; s < cfg->n_shards; s++)
        per_shard[s] = json_array();
    struct placement map;
    int have_map = ctl_fetch_placement(cfg, &map) == 0;
    for (uint32_t i = 0; i < cfg->n_nodes; i++) {
        const struct cluster_node *nd = &cfg->nodes[i];
        const struct placement_node *pn = have_map ? placement_node(&map, nd->id) : NULL;
        char addr[96];
        snprintf(addr, sizeof addr, "%s:%u", nd->client.host, nd->client.port);
        json_t *nj = json_object();
        json_object_set_new(nj, "id", json_integer(nd->id));
        json_object_set_new(nj, "client", json_string(addr));
        json_object_set_new(nj, "state",
                            json_string(pn == NULL                           ? "unknown"
                                        : pn->state == PLACEMENT_NODE_ACTIVE ? "active"
                                        : pn->state == PLACEMENT_NODE_DRAINING
                                            ? "draining"
                                            : "removed"));
        /* the node's admin HTTP API (GET /admin/v1/status, bearer admin token) */
        const struct cluster_addr *aa = ctl_admin_addr(nd);
        char admin[96];
        snprintf(admin, sizeof admin, "%s:%u", aa->host, aa->port);
        json_object_set_new(nj, "admin", json_string(admin));
        int hstatus = 0;
        char *text = NULL;
        size_t text_len = 0;
        int err = ctl_http_get(aa, digest ? "/admin/v1/status?digest=1" : "/admin/v1/status",
                               ctl_admin_token(cfg), 3000, &hstatus, &text, &text_len);
        json_t *ns = err == 0 && hstatus == 200 ? json_loadb(text, text_len, 0, NULL) : NULL;
        int up = json_is_object(ns) &&
                 (uint32_t)json_integer_value(json_object_get(ns, "node")) == nd->id;
        if (err == 0 && hstatus == 401)
            json_object_set_new(nj, "error", json_string("unauthorized: wrong admin token"));
        else if (err == 0 && !up)
            json_object_set_new(nj, "error", json_string("unexpected admin API reply"));
        free(text);
        json_object_set_new(nj, "up", json_boolean(up));
        if (up) {
            static const char *const copy[] = {"uptime_ms", "version", "connections",
                                               "disk_free_bytes", "disk_total_bytes",
                                               "placement_version"};
            for (size_t k = 0; k < sizeof copy / sizeof copy[0]; k++) {
                json_t *v = json_object_get(ns, copy[k]);
                if (v)
                    json_object_set(nj, copy[k], v);
            }
            size_t k;
            json_t *ss;
            json_array_foreach(json_object_get(ns, "shards"), k, ss)
            {
                json_int_t shard = json_integer_value(json_object_get(ss, "shard"));
                if (shard < 0 || shard >= (json_int_t)cfg->n_shards)
                    continue;
                json_t *rj = json_object();
                json_object_set_new(rj, "node", json_integer(nd->id));
                static const char *const fields[] = {"role", "term", "commit_index",
                                                     "applied_index", "last_index",
                                                     "conversations", "events", "digest"};
                for (size_t x = 0; x < sizeof fields / sizeof fields[0]; x++) {
                    json_t *v = json_object_get(ss, fields[x]);
                    if (v)
                        json_object_set(rj, fields[x], v);
                }
                json_t *members = json_array(), *standbys = json_array();
                size_t y;
                json_t *rep;
                json_array_foreach(json_object_get(ss, "replicas"), y, rep)
                {
                    const char *role = json_string_value(json_object_get(rep, "raft_role"));
                    json_array_append_new(role && strcmp(role, "voter") == 0 ? members
                                                                             : standbys,
                                          json_integer(json_integer_value(
                                              json_object_get(rep, "node"))));
                }
                json_object_set_new(rj, "members", members);
                json_object_set_new(rj, "standbys", standbys);
                json_array_append_new(per_shard[shard], rj);
                const char *role = json_string_value(json_object_get(ss, "role"));
                uint64_t term = (uint64_t)json_integer_value(json_object_get(ss, "term"));
                if (role && strcmp(role, "leader") == 0 && term >= best_term[shard]) {
                    best_term[shard] = term;
                    leader[shard] = nd->id;
                    leader_commit[shard] =
                        (uint64_t)json_integer_value(json_object_get(ss, "commit_index"));
                }
            }
        }
        json_decref(ns);
        json_array_append_new(nodes, nj);
    }
    for (uint32_t s = 0; s < cfg->n_shards; s++) {
        json_t *sj = json_object();
        json_object_set_new(sj, "id", json_integer(s));
        json_object_set_new(sj, "leader", leader[s] ? json_integer(leader[s]) : json_null());
        uint64_t term = best_term[s];
        size_t k;
        json_t *rj;
        json_array_foreach(per_shard[s], k, rj)
        {
            uint64_t t = (uint64_t)json_integer_value(json_object_get(rj, "term"));
            if (!leader[s] && t > term)
                term = t;
            if (leader[s]) {
                uint64_t applied =
                    (uint64_t)json_integer_value(json_object_get(rj, "applied_index"));
                json_object_set_new(rj, "lag",
                                    json_integer(leader_commit[s] > applied
                                                     ? (json_int_t)(leader_commit[s] - applied)
                                                     : 0));
            }
        }
        json_object_set_new(sj, "term", json_integer((json_int_t)term));
        json_t *expected = json_array();
        for (uint32_t i = 0; i < cfg->replication; i++)
            json_array_append_new(expected,
                                  json_integer(cfg->replicas[s * cfg->replication + i]));
        json_object_set_new(sj, "placement", expected);
        if (have_map && map.moves[s].to != 0) {
            json_t *mv = json_object();
            json_object_set_new(mv, "from", json_integer(map.moves[s].from));
            json_object_set_new(mv, "to", json_integer(map.moves[s].to));
            json_object_set_new(sj, "moving", mv);
        }
        json_object_set_new(sj, "replicas", per_shard[s]);
        json_array_append_new(shards, sj);
    }
    free(per_shard);
    free(best_term);
    free(leader);
    free(leader_commit);
    json_t *out = json_object();
    json_object_set_new(out, "cluster", json_string(cfg->name));
    json_object_set_new(out, "placement_version",
                        have_map ? json_integer((json_int_t)map.version) : json_null());
    placement_free(&map);
    json_object_set_new(out, "nodes", nodes);
    json_object_set_new(out, "shards", shards);
    return out;
}

int ctl_status_unauthorized(const json_t *status, const char *what)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(status, "nodes"), i, n)
    {
        const char *e = json_string_value(json_object_get(n, "error"));
        if (e && strncmp(e, "unauthorized", 12) == 0) {
            fprintf(stderr, "chorusctl: %s: unauthorized (wrong admin token)\n", what);
            return 1;
        }
    }
    return 0;
}

json_t *ctl_status(const struct cluster_config *cfg, int digest)
{
    return collect_status(cfg, digest);
}

static int cmd_status(const struct ctl_env *env, int argc, char **argv)
{
    int digest = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--digest") == 0)
            digest = 1;
        else {
            fprintf(stderr, "chorusctl status: unexpected argument %s\n", argv[i]);
            return CTL_USAGE;
        }
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    json_t *st = collect_status(&cfg, digest);
    int down = 0, leaderless = 0;
    size_t i;
    json_t *n, *s;
    json_array_foreach(json_object_get(st, "nodes"), i, n) down += !json_is_true(
        json_object_get(n, "up"));
    json_array_foreach(json_object_get(st, "shards"), i, s) leaderless +=
        json_is_null(json_object_get(s, "leader"));
    /* healthy: every node answers and every shard has a leader */
    int code = down || leaderless ? CTL_FAILED : CTL_OK;
    if (env->json) {
        ctl_print_json(st);
        cluster_config_free(&cfg);
        return code;
    }
    printf("cluster %s: %u nodes (%d down), %u shards x %u replicas, %d without leader\n\n",
           cfg.name, cfg.n_nodes, down, cfg.n_shards, cfg.replication, leaderless);
    printf("NODE  ADDRESS                UP    STATE     UPTIME     CONNS   DISK FREE  "
           "VERSION\n");
    json_array_foreach(json_object_get(st, "nodes"), i, n)
    {
        int up = json_is_true(json_object_get(n, "up"));
        char uptime[32] = "-";
        if (up)
            snprintf(uptime, sizeof uptime, "%.1fs",
                     (double)json_integer_value(json_object_get(n, "uptime_ms")) / 1000.0);
        char conns[24] = "-";
        if (up)
            snprintf(conns, sizeof conns, "%lld",
                     json_integer_value(json_object_get(n, "connections")));
        char disk[24] = "-";
        json_t *dt = json_object_get(n, "disk_total_bytes");
        if (dt && json_integer_value(dt) > 0)
            snprintf(disk, sizeof disk, "%.0f%%",
                     100.0 * (double)json_integer_value(json_object_get(n, "disk_free_bytes")) /
                         (double)json_integer_value(dt));
        printf("%-5lld %-22s %-5s %-9s %-10s %-7s %-10s %s\n",
               json_integer_value(json_object_get(n, "id")),
               json_string_value(json_object_get(n, "client")),
               up ? "up" : json_object_get(n, "error") ? "ERR" : "DOWN",
               json_string_value(json_object_get(n, "state")), uptime, conns, disk,
               up ? json_string_value(json_object_get(n, "version")) : "-");
        json_t *nerr = json_object_get(n, "error");
        if (nerr)
            fprintf(stderr, "chorusctl: node %lld (%s): %s\n",
                    json_integer_value(json_object_get(n, "id")),
                    json_string_value(json_object_get(n, "admin")), json_string_value(nerr));
    }
    printf("\nSHARD LEADER TERM   REPLICAS (node:role commit/applied lag%s)\n",
           digest ? " digest" : "");
    json_array_foreach(json_object_get(st, "shards"), i, s)
    {
        json_t *ld = json_object_get(s, "leader");
        char leader[16] = "-";
        if (!json_is_null(ld))
            snprintf(leader, sizeof leader, "%lld", json_integer_value(ld));
        printf("%-5lld %-6s %-6lld", json_integer_value(json_object_get(s, "id")), leader,
               json_integer_value(json_object_get(s, "term")));
        size_t k;
        json_t *r;
        json_t *mv = json_object_get(s, "moving");
        if (mv)
            printf(" moving %lld->%lld", json_integer_value(json_object_get(mv, "from")),
                   json_integer_value(json_object_get(mv, "to")));
        json_array_foreach(json_object_get(s, "replicas"), k, r)
        {
            const char *role = json_string_value(json_object_get(r, "role"));
            printf(" %lld:%c %lld/%lld", json_integer_value(json_object_get(r, "node")),
                   role[0] == 'l' ? 'L' : role[0] == 'f' ? 'F' : role[0] == 'c' ? 'C' : '?',
                   json_integer_value(json_object_get(r, "commit_index")),
                   json_integer_value(json_object_get(r, "applied_index")));
            json_t *lag = json_object_get(r, "lag");
            if (lag)
                printf(" lag=%lld", json_integer_value(lag));
            json_t *dg = json_object_get(r, "digest");
            if (dg)
                printf(" %s", json_string_value(dg));
        }
        printf("\n");
    }
    json_decref(st);
    cluster_config_free(&cfg);
    return code;
}

/* debug digest: replicas at the same applied index must have the same digest. */
static int cmd_digest(const struct ctl_env *env)
{
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    json_t *st = collect_status(&cfg, 1);
    int mismatches = 0;
    size_t i;
    json_t *s;
    json_t *out = json_array();
    json_array_foreach(json_object_get(st, "shards"), i, s)
    {
        json_t *reps = json_object_get(s, "replicas");
        size_t a, b;
        json_t *ra, *rb;
        int agree = 1;
        json_array_foreach(reps, a, ra)
        {
            json_array_foreach(reps, b, rb)
            {
                if (b <= a)
                    continue;
                if (json_integer_value(json_object_get(ra, "applied_index")) ==
                        json_integer_value(json_object_get(rb, "applied_index")) &&
                    strcmp(json_string_value(json_object_get(ra, "digest")),
                           json_string_value(json_object_get(rb, "digest"))) != 0)
                    agree = 0;
            }
        }
        mismatches += !agree;
        json_t *o = json_object();
        json_object_set_new(o, "shard", json_integer((json_int_t)i));
        json_object_set_new(o, "agree", json_boolean(agree));
        json_object_set(o, "replicas", reps);
        json_array_append_new(out, o);
        if (!env->json) {
            printf("shard %-3zu %s", i, agree ? "agree   " : "DIFFER  ");
            json_array_foreach(reps, a, ra)
            printf(" %lld@%lld=%s", json_integer_value(json_object_get(ra, "node")),
                   json_integer_value(json_object_get(ra, "applied_index")),
                   json_string_value(json_object_get(ra, "digest")));
            printf("\n");
        }
    }
    if (env->json)
        ctl_print_json(out);
    else
        json_decref(out);
    json_decref(st);
    cluster_config_free(&cfg);
    if (mismatches) {
        fprintf(stderr, "chorusctl: %d shard(s) with differing digests at equal indexes\n",
                mismatches);
        return CTL_FAILED;
    }
    return 0;
}

/*
 * debug subscribe SHARD [--node N] [--from INDEX] [--entries N] [--timeout MS]:
 * follows a shard's committed stream on one replica and prints each entry as a
 * JSON line {"shard","index","events":[...]}; stops after N entries with
 * events, or when nothing arrives for the timeout.
 */
static int cmd_subscribe(const struct ctl_env *env, int argc, char **argv)
{
    uint64_t shard = UINT64_MAX, node = 0, from = 0, entries = 0, timeout = 3000;
    for (int i = 0; i < argc; i++) {
        uint64_t *dst = NULL;
        if (strcmp(argv[i], "--node") == 0)
            dst = &node;
        else if (strcmp(argv[i], "--from") == 0)
            dst = &from;
        else if (strcmp(argv[i], "--entries") == 0)
            dst = &entries;
        else if (strcmp(argv[i], "--timeout") == 0)
            dst = &timeout;
        if (dst == NULL && shard == UINT64_MAX && parse_u64(argv[i], &shard) == 0)
            continue;
        if (dst == NULL || i + 1 >= argc || parse_u64(argv[i + 1], dst) != 0) {
            fprintf(stderr, "chorusctl debug subscribe SHARD [--node N] [--from INDEX] "
                            "[--entries N] [--timeout MS]\n");
            return CTL_USAGE;
        }
        i++;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    if (shard >= cfg.n_shards) {
        fprintf(stderr, "chorusctl: no shard %" PRIu64 "\n", shard);
        cluster_config_free(&cfg);
        return CTL_USAGE;
    }
    if (node == 0)
        node = cfg.replicas[shard * cfg.replication];
    struct cc c;
    cc_init(&c, &cfg);
    struct ch_wbuf f;
    ch_wbuf_init(&f);
    uint64_t id = cc_req_id(&c);
    struct proto_subscribe m = {.shard = (uint32_t)shard, .from_index = from};
    proto_encode_subscribe(&f, id, &m);
    struct cc_reply r;
    rv = cc_call(&c, (uint32_t)node, &f, id, 5000, &r);
    ch_wbuf_free(&f);
    if (rv == 0 && r.f.type == PROTO_ERROR) {
        struct ch_rbuf body;
        struct proto_error e;
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        rv = proto_decode_error(&body, &e) == 0 ? e.err : CH_EMALFORMED;
        if (rv == CH_ETOOOLD)
            fprintf(stderr, "oldest retained index: %" PRIu64 "\n", e.extra);
    } else if (rv == 0 && r.f.type != PROTO_SUBSCRIBED) {
        rv = CH_EMALFORMED;
    }
    if (rv != 0) {
        cc_close(&c);
        cluster_config_free(&cfg);
        return fail_code(rv, "subscribe");
    }
    uint64_t printed = 0;
    while (entries == 0 || printed < entries) {
        if (cc_recv(&c, (int)timeout, &r) != 0 || r.f.req_id != id)
            break;
        struct ch_rbuf body;
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        if (r.f.type == PROTO_ERROR) {
            struct proto_error e;
            proto_decode_error(&body, &e);
            rv = fail_code(e.err, "subscription ended");
            break;
        }
        struct proto_stream st;
        if (r.f.type != PROTO_STREAM || proto_decode_stream(&body, &st) != 0) {
            rv = fail_code(CH_EMALFORMED, "subscribe");
            break;
        }
        if (st.n_events == 0)
            continue;
        json_t *o = json_object();
        json_t *evs = json_array();
        json_object_set_new(o, "shard", json_integer(st.shard));
        json_object_set_new(o, "index", json_integer((json_int_t)st.index));
        for (uint32_t k = 0; k < st.n_events; k++) {
            struct clog_event ev;
            if (clog_event_decode(&body, &ev) != 0)
                break;
            json_array_append_new(evs, event_json(&ev));
        }
        json_object_set_new(o, "events", evs);
        ctl_print_json(o);
        fflush(stdout);
        printed++;
    }
    cc_close(&c);
    cluster_config_free(&cfg);
    return rv;
}

/* ---- main -------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct ctl_env env = {0};
    static char dir_buf[PATH_MAX], conf_buf[PATH_MAX + 16];
    /* global options may appear anywhere: pull them out of argv */
    int n = 0;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            env.config_path = argv[++i];
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            env.json = 1;
        else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            admin_token_override = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else
            argv[++n] = argv[i];
    }
    argc = n + 1;
    if (admin_token_override == NULL)
        admin_token_override = getenv("CHORUS_ADMIN_TOKEN");
    if (dir == NULL)
        dir = getenv("CHORUS_HOME");
    if (dir == NULL)
        dir = ".chorus-local";
    snprintf(dir_buf, sizeof dir_buf, "%s", dir);
    env.dir = dir_buf;
    if (env.config_path == NULL) {
        snprintf(conf_buf, sizeof conf_buf, "%s/cluster.json", dir_buf);
        env.config_path = conf_buf;
    }
    if (argc < 2) {
        fputs(usage_text, stderr);
        return CTL_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "local") == 0) {
        /* `local up` copies its config into DIR: only an explicit --config counts */
        if (env.config_path == conf_buf)
            env.config_path = NULL;
        return ctl_local(&env, argc - 2, argv + 2);
    }
    if (strcmp(cmd, "status") == 0)
        return cmd_status(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "leader") == 0)
        return ctl_leader(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "shard") == 0)
        return ctl_shard(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "node") == 0)
        return ctl_node(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "snapshot") == 0)
        return ctl_snapshot(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "config") == 0)
        return ctl_config(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "user") == 0)
        return ctl_user(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "history") == 0)
        return cmd_history(&env, argc - 2, argv + 2);
    if (strcmp(cmd, "send") == 0 || strcmp(cmd, "edit") == 0 || strcmp(cmd, "delete") == 0 ||
        strcmp(cmd, "react") == 0 || strcmp(cmd, "receipt") == 0)
        return cmd_write(&env, cmd, argc - 2, argv + 2);
    if (strcmp(cmd, "conv") == 0 && argc >= 3) {
        const char *sub = argv[2];
        if (strcmp(sub, "get") == 0)
            return cmd_conv_get(&env, argc - 3, argv + 3);
        if (strcmp(sub, "inspect") == 0)
            return ctl_conv_inspect(&env, argc - 3, argv + 3);
        if (strcmp(sub, "create") == 0 || strcmp(sub, "add") == 0 ||
            strcmp(sub, "remove") == 0 || strcmp(sub, "leave") == 0)
            return cmd_write(&env, sub, argc - 3, argv + 3);
    }
    if (strcmp(cmd, "debug") == 0 && argc >= 3) {
        if (strcmp(argv[2], "load") == 0)
            return ctl_load(&env, argc - 3, argv + 3);
        if (strcmp(argv[2], "digest") == 0)
            return cmd_digest(&env);
        if (strcmp(argv[2], "subscribe") == 0)
            return cmd_subscribe(&env, argc - 3, argv + 3);
    }
    fprintf(stderr, "chorusctl: unknown command (see chorusctl --help)\n");
    return CTL_USAGE;
}
