/*
 * Prometheus text exposition format 0.0.4 (metrics.h).
 *
 * Each family is written once: "# HELP", "# TYPE", then one sample per node or
 * shard replica, so a family's samples are contiguous as the format requires.
 * Values are integers, or exact decimals for seconds (nanoseconds / 10^9 printed
 * digit by digit, never through a double), so the output is deterministic.
 */
#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../common/error.h"

struct label {
    const char *name;
    const char *value;
};

static void put_str(struct ch_wbuf *b, const char *s)
{
    ch_put_raw(b, s, strlen(s));
}

static void put_u64(struct ch_wbuf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    ch_put_raw(b, tmp, (size_t)n);
}

/* v / 10^digits exactly, without trailing zeros after the point, into buf (32+). */
static void format_scaled(char *buf, size_t len, uint64_t v, unsigned digits)
{
    uint64_t div = 1;
    for (unsigned i = 0; i < digits; i++)
        div *= 10;
    int n = snprintf(buf, len, "%llu", (unsigned long long)(v / div));
    uint64_t frac = v % div;
    if (frac == 0 || n < 0 || (size_t)n >= len)
        return;
    int m = snprintf(buf + n, len - (size_t)n, ".%0*llu", (int)digits,
                     (unsigned long long)frac);
    if (m < 0 || (size_t)(n + m) >= len)
        return;
    n += m;
    while (buf[n - 1] == '0')
        buf[--n] = 0;
}

static void put_scaled(struct ch_wbuf *b, uint64_t v, unsigned digits)
{
    char tmp[48];
    format_scaled(tmp, sizeof tmp, v, digits);
    put_str(b, tmp);
}

/* A label value: backslash, double quote and newline escaped. */
static void put_label_value(struct ch_wbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            put_str(b, "\\\\");
        else if (*s == '"')
            put_str(b, "\\\"");
        else if (*s == '\n')
            put_str(b, "\\n");
        else
            ch_put_raw(b, s, 1);
    }
}

static void family(struct ch_wbuf *b, const char *name, const char *type, const char *help)
{
    put_str(b, "# HELP ");
    put_str(b, name);
    ch_put_raw(b, " ", 1);
    put_str(b, help);
    put_str(b, "\n# TYPE ");
    put_str(b, name);
    ch_put_raw(b, " ", 1);
    put_str(b, type);
    ch_put_raw(b, "\n", 1);
}

/* "name{labels}" and a space; the caller writes the value and the newline. */
static void sample_head(struct ch_wbuf *b, const char *name, const char *suffix,
                        const struct label *l, size_t n)
{
    put_str(b, name);
    put_str(b, suffix);
    if (n > 0) {
        ch_put_raw(b, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                ch_put_raw(b, ",", 1);
            put_str(b, l[i].name);
            put_str(b, "=\"");
            put_label_value(b, l[i].value);
            ch_put_raw(b, "\"", 1);
        }
        ch_put_raw(b, "}", 1);
    }
    ch_put_raw(b, " ", 1);
}

static void sample_u64(struct ch_wbuf *b, const char *name, const struct label *l, size_t n,
                       uint64_t v)
{
    sample_head(b, name, "", l, n);
    put_u64(b, v);
    ch_put_raw(b, "\n", 1);
}

/*
 * The _bucket, _sum and _count samples of one histogram.  Observations and
 * bounds are in units of 10^-digits (9: nanoseconds shown as seconds).
 * l[0..n) are the series labels; one slot after them is used for `le`.
 */
static void sample_hist(struct ch_wbuf *b, const char *name, struct label *l, size_t n,
                        const struct ch_hist *h, unsigned digits)
{
    char le[48];
    for (size_t i = 0; i <= h->n_bounds; i++) {
        if (i < h->n_bounds)
            format_scaled(le, sizeof le, h->bounds[i], digits);
        else
            snprintf(le, sizeof le, "+Inf");
        l[n] = (struct label){"le", le};
        sample_head(b, name, "_bucket", l, n + 1);
        put_u64(b, ch_hist_cumulative(h, i));
        ch_put_raw(b, "\n", 1);
    }
    sample_head(b, name, "_sum", l, n);
    put_scaled(b, h->sum, digits);
    ch_put_raw(b, "\n", 1);
    sample_head(b, name, "_count", l, n);
    put_u64(b, h->count);
    ch_put_raw(b, "\n", 1);
}

/* ---- shard replicas ------------------------------------------------------------------- */

static const char *const state_names[METRICS_RAFT_N_STATES] = {"unavailable", "follower",
                                                                "candidate", "leader"};

static const struct {
    const char *name, *type, *help;
    size_t off;
} shard_values[] = {
    {"chorus_raft_term", "gauge", "Current Raft term of the shard replica.",
     offsetof(struct metrics_shard, term)},
    {"chorus_raft_commit_index", "gauge", "Raft commit index known to the shard replica.",
     offsetof(struct metrics_shard, commit_index)},
    {"chorus_raft_applied_index", "gauge",
     "Raft index of the last entry applied to the replica's state machine.",
     offsetof(struct metrics_shard, applied_index)},
    {"chorus_raft_snapshot_index", "gauge",
     "Raft index of the replica's last snapshot since it started or installed one (0: none).",
     offsetof(struct metrics_shard, snapshot_index)},
    {"chorus_shard_entries_applied_total", "counter",
     "Raft entries applied to the replica's state machine.",
     offsetof(struct metrics_shard, entries_applied)},
    {"chorus_shard_applied_bytes_total", "counter",
     "Bytes of Raft entries applied to the replica's state machine.",
     offsetof(struct metrics_shard, bytes_applied)},
    {"chorus_shard_batches_proposed_total", "counter",
     "Entries (command batches) this replica proposed as leader.",
     offsetof(struct metrics_shard, batches_proposed)},
    {"chorus_shard_snapshots_taken_total", "counter", "Snapshots taken by the replica.",
     offsetof(struct metrics_shard, snapshots_taken)},
    {"chorus_shard_snapshots_installed_total", "counter",
     "Snapshots restored into the replica (at startup or sent by a leader).",
     offsetof(struct metrics_shard, snapshots_installed)},
};

static void render_shards(struct ch_wbuf *b, const struct metrics_node *m, const char *node)
{
    char shard[16];
    struct label l[4] = {{"node", node}, {"shard", shard}};
    family(b, "chorus_raft_state", "gauge",
           "1 for the Raft state the shard replica is in, 0 for the others.");
    for (size_t i = 0; i < m->n_shards; i++) {
        snprintf(shard, sizeof shard, "%u", m->shards[i].shard);
        for (int st = 0; st < METRICS_RAFT_N_STATES; st++) {
            l[2] = (struct label){"state", state_names[st]};
            sample_u64(b, "chorus_raft_state", l, 3, m->shards[i].state == st);
        }
    }
    for (size_t f = 0; f < sizeof shard_values / sizeof shard_values[0]; f++) {
        family(b, shard_values[f].name, shard_values[f].type, shard_values[f].help);
        for (size_t i = 0; i < m->n_shards; i++) {
            snprintf(shard, sizeof shard, "%u", m->shards[i].shard);
            const char *base = (const char *)&m->shards[i];
            uint64_t v;
            memcpy(&v, base + shard_values[f].off, sizeof v);
            sample_u64(b, shard_values[f].name, l, 2, v);
        }
    }
    family(b, "chorus_shard_batch_commands", "histogram",
           "Client commands per entry proposed by the replica as leader.");
    for (size_t i = 0; i < m->n_shards; i++) {
        snprintf(shard, sizeof shard, "%u", m->shards[i].shard);
        sample_hist(b, "chorus_shard_batch_commands", l, 2, &m->shards[i].batch_commands, 0);
    }
    family(b, "chorus_shard_apply_latency_seconds", "histogram",
           "Time from raft_apply to the entry's apply callback on the leader.");
    for (size_t i = 0; i < m->n_shards; i++) {
        snprintf(shard, sizeof shard, "%u", m->shards[i].shard);
        sample_hist(b, "chorus_shard_apply_latency_seconds", l, 2,
                    &m->shards[i].apply_latency_ns, 9);
    }
}

/* ---- gateway ---------------------------------------------------------------------------- */

static const struct {
    const char *name, *type, *help;
    size_t off;
} gateway_values[] = {
#define GV(name, type, field, help) {name, type, help, offsetof(struct metrics_gateway, field)}
    GV("chorus_gateway_connections", "gauge", connections, "Open WebSocket connections."),
    GV("chorus_gateway_queued_bytes", "gauge", queued_bytes,
       "Unsent bytes queued over every WebSocket connection."),
    GV("chorus_gateway_requests_total", "counter", requests,
       "Client requests received (WebSocket and REST)."),
    GV("chorus_gateway_replies_total", "counter", replies, "Successful replies sent."),
    GV("chorus_gateway_sends_total", "counter", sends, "send requests received."),
    GV("chorus_gateway_acks_total", "counter", acks,
       "Writes acknowledged to clients (committed and applied)."),
    GV("chorus_gateway_rate_limited_total", "counter", rate_limited,
       "Requests refused with rate_limited."),
    GV("chorus_gateway_auth_failures_total", "counter", auth_failures,
       "Failed authentications (tokens, logins)."),
    GV("chorus_gateway_slow_consumer_disconnects_total", "counter", slow_consumers,
       "Connections dropped because their queue overflowed."),
    GV("chorus_gateway_pushes_total", "counter", pushes,
       "Events queued to connections by fanout."),
    GV("chorus_fanout_events_total", "counter", fan_events,
       "Committed events handed to fanout."),
    GV("chorus_fanout_encodes_total", "counter", fan_encodes,
       "Events encoded once for their recipients."),
    GV("chorus_fanout_gaps_total", "counter", fan_gaps,
       "Gaps detected in a connection's view of a conversation."),
    GV("chorus_fanout_fetches_total", "counter", fan_fetches, "Catch-up reads started."),
    GV("chorus_fanout_duplicates_total", "counter", fan_duplicates,
       "Events dropped as already delivered."),
    GV("chorus_fanout_overflows_total", "counter", fan_overflows,
       "Live pushes that did not fit a connection's queue."),
    GV("chorus_rpc_calls_total", "counter", rpc_calls, "Store RPC calls made by the gateway."),
    GV("chorus_rpc_retries_total", "counter", rpc_retries, "Store RPC attempts retried."),
    GV("chorus_rpc_redirects_total", "counter", rpc_redirects,
       "Store RPC attempts redirected by a leader hint."),
    GV("chorus_rpc_timeouts_total", "counter", rpc_timeouts,
       "Store RPC calls that ended in timeout."),
    GV("chorus_rpc_unavailable_total", "counter", rpc_unavailable,
       "Store RPC calls that ended in unavailable."),
    GV("chorus_rpc_connects_total", "counter", rpc_connects,
       "Store connections established."),
    GV("chorus_rpc_disconnects_total", "counter", rpc_disconnects, "Store connections lost."),
#undef GV
};

static void render_gateway(struct ch_wbuf *b, const struct metrics_gateway *g,
                           const char *node)
{
    struct label l[2] = {{"node", node}};
    for (size_t f = 0; f < sizeof gateway_values / sizeof gateway_values[0]; f++) {
        uint64_t v;
        memcpy(&v, (const char *)g + gateway_values[f].off, sizeof v);
        family(b, gateway_values[f].name, gateway_values[f].type, gateway_values[f].help);
        sample_u64(b, gateway_values[f].name, l, 1, v);
    }
    family(b, "chorus_gateway_errors_total", "counter",
           "Error replies sent, by wire error code.");
    if (g->errors_by_code == NULL) {
        sample_u64(b, "chorus_gateway_errors_total", l, 1, g->errors);
        return;
    }
    for (size_t i = 0; i < g->n_errors_by_code; i++) {
        l[1] = (struct label){"code", g->errors_by_code[i].label};
        sample_u64(b, "chorus_gateway_errors_total", l, 2, g->errors_by_code[i].value);
    }
}

/* ---- the node ---------------------------------------------------------------------------- */

int metrics_render(const struct metrics_node *m, struct ch_wbuf *out)
{
    char node[16];
    snprintf(node, sizeof node, "%u", m->node);
    struct label l[2] = {{"node", node}, {"version", m->version ? m->version : ""}};
    family(out, "chorus_build_info", "gauge", "Always 1; labelled with the chorusd version.");
    sample_u64(out, "chorus_build_info", l, 2, 1);
    family(out, "chorus_uptime_seconds", "gauge", "Seconds since chorusd started.");
    sample_head(out, "chorus_uptime_seconds", "", l, 1);
    put_scaled(out, m->uptime_ms, 3);
    ch_put_raw(out, "\n", 1);
    if (m->have_disk) {
        struct label dl[1] = {{"node", node}};
        family(out, "chorus_data_disk_free_bytes", "gauge",
               "Bytes available to chorusd on the data directory's file system.");
        sample_u64(out, "chorus_data_disk_free_bytes", dl, 1, m->disk_free_bytes);
        family(out, "chorus_data_disk_total_bytes", "gauge",
               "Size of the data directory's file system in bytes.");
        sample_u64(out, "chorus_data_disk_total_bytes", dl, 1, m->disk_total_bytes);
    }
    render_shards(out, m, node);
    if (m->gateway != NULL)
        render_gateway(out, m->gateway, node);
    return ch_wbuf_error(out) ? CH_ENOMEM : 0;
}
