"""GET /metrics on every gateway of a real 3-node cluster ("metrics", ports +10000).

Checked:
 - the admin HTTP API (GET /admin/v1/status, /placement) on the nodes' admin
   addresses (nodes 1, 2) or the gateway address (node 3): token, JSON, digests,
   admin-only listeners; chorusctl status reads it, a wrong token is refused;
 - the admin token: 401 with a JSON error without a token, with a wrong one and
   with a malformed header; 200 with the right one; POST is refused;
 - the text parses as Prometheus exposition format 0.0.4 (a strict parser below:
   HELP and TYPE once per family before its samples, `name{labels} value`
   lines only, counters *_total, cumulative histogram buckets ending with
   +Inf == _count, no duplicate series, a node label on every sample);
 - exactly one leader per shard across the nodes; every replica of every shard is
   reported once, by the node that hosts it;
 - commit and applied indexes rise after chat traffic, and the gateway counters
   (requests, sends, acks, errors by code, pushes, fanout, rpc) moved;
 - the apply latency histogram counted the proposals of the leaders.
"""
import http.client
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402
from wsclient import ApiError, login, rest  # noqa: E402

TOKEN = "metrics-test-admin-token-0123456789"
cluster = None
GW = []

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\n]|\\[\\\"n])*)\""
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,%s)*)?\})? (\S+)$" % (NAME, LABEL, LABEL))


def get_metrics(addr, auth=None, path="/metrics"):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": auth} if auth is not None else {}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    ctype = resp.getheader("Content-Type")
    conn.close()
    return resp.status, ctype, body


def parse_value(text):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$", text):
        raise AssertionError("bad sample value %r" % text)
    return float(text)


def parse_exposition(text):
    """-> (families {name: type}, samples {(name, frozenset(labels)): value})."""
    assert text.endswith("\n"), "no final newline"
    families, samples = {}, {}
    helped, order = set(), []
    current = None
    for ln, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d: %r" % (ln, line)
        assert line, "empty " + where
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.+)$" % NAME, line)
            assert m, "comment that is not HELP/TYPE, " + where
            kind, name, rest_ = m.groups()
            if name != current:
                assert name not in order, "family not contiguous, " + where
                order.append(name)
                current = name
            assert not any(k[2] == name for k in samples), "HELP/TYPE after samples, " + where
            if kind == "HELP":
                assert name not in helped, "second HELP, " + where
                helped.add(name)
            else:
                assert name not in families, "second TYPE, " + where
                assert rest_ in ("counter", "gauge", "histogram"), where
                assert rest_ != "counter" or name.endswith("_total"), where
                families[name] = rest_
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line, " + where
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(m.lastindex)
        labels = tuple(re.findall(LABEL, labels_text))
        assert current in families and current in helped, "sample before HELP/TYPE, " + where
        ftype = families[current]
        if ftype == "histogram":
            assert name in (current + "_bucket", current + "_sum", current + "_count"), where
            assert (name.endswith("_bucket")) == any(k == "le" for k, _ in labels), where
        else:
            assert name == current, "sample outside its family, " + where
        assert labels and labels[0][0] == "node", "no node label, " + where
        key = (name, frozenset(labels), current)
        assert key not in samples, "duplicate series, " + where
        samples[key] = parse_value(value)
    assert set(families) == helped, "family without HELP or TYPE"
    # histograms: cumulative buckets, +Inf last and equal to _count
    for fam, ftype in families.items():
        if ftype != "histogram":
            continue
        series = {}
        for (name, labels, family), v in samples.items():
            if family != fam:
                continue
            base = frozenset(kv for kv in labels if kv[0] != "le")
            s = series.setdefault(base, {"buckets": [], "count": None, "sum": None})
            if name == fam + "_bucket":
                le = dict(labels)["le"]
                s["buckets"].append((parse_value(le), v))
            elif name == fam + "_count":
                s["count"] = v
            elif name == fam + "_sum":
                s["sum"] = v
        for base, s in series.items():
            b = sorted(s["buckets"])
            assert b and math.isinf(b[-1][0]), (fam, base, "no +Inf bucket")
            assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), (fam, base, b)
            assert s["count"] == b[-1][1] and s["sum"] is not None, (fam, base, s)
    flat = {}
    for (name, labels, _), v in samples.items():
        flat[(name, labels)] = v
    return families, flat


def scrape(addr):
    status, ctype, body = get_metrics(addr, "Bearer " + TOKEN)
    assert status == 200, (status, body[:200])
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return parse_exposition(body.decode())


def select(samples, name, **labels):
    """{labels dict: value} of the samples of `name` matching labels."""
    want = {(k, str(v)) for k, v in labels.items()}
    return {labels_: v for (n, labels_), v in samples.items()
            if n == name and want <= labels_}


def one(samples, name, **labels):
    got = select(samples, name, **labels)
    assert len(got) == 1, (name, labels, got)
    return next(iter(got.values()))


def scrape_all():
    return {node: scrape(gw)[1] for node, gw in zip(cluster.node_ids(), GW)}


def setup():
    global cluster

    def tweak(conf):
        conf["admin"] = {"token": TOKEN}
        conf["gateway"] = {"rate": {"login_per_s": 1000, "login_burst": 1000}}
        conf["auth"]["scrypt_log2_n"] = 10
        # nodes 1 and 2 serve the admin API on an address of their own; node 3 on
        # its gateway address
        for i, n in enumerate(conf["nodes"][:2]):
            n["admin"] = "127.0.0.1:%d" % (17401 + i)

    cluster = Cluster("metrics", offset=10000, tweak=tweak)
    cluster.up()
    cluster.wait_all_leaders()
    GW[:] = [n["gateway"] for n in cluster.conf["nodes"]]
    for gw in GW:
        cluster.wait("gateway %s" % gw, lambda gw=gw: rest(gw, "GET", "/healthz")[0] == 200)


def test_admin_token_required():
    for gw in GW:
        for auth in (None, "Bearer wrong-token-wrong-token-xx", "Bearer " + TOKEN + "x",
                     "Bearer " + TOKEN[:-1], TOKEN, "Basic " + TOKEN, "Bearer "):
            status, ctype, body = get_metrics(gw, auth)
            assert status == 401, (gw, auth, status)
            assert ctype.startswith("application/json"), ctype
            assert json.loads(body)["error"]["code"] == "unauthorized", body
        status, _, _ = get_metrics(gw, "Bearer " + TOKEN)
        assert status == 200
        status, _ = rest(gw, "POST", "/metrics", body={}, token=TOKEN)
        assert status in (404, 405), status


def admin_addr(n):
    return n.get("admin", n["gateway"])


def get_json(addr, path, auth="Bearer " + TOKEN):
    status, ctype, body = get_metrics(addr, auth, path)
    assert ctype.startswith("application/json"), (addr, path, ctype)
    return status, json.loads(body)


def test_admin_api():
    nodes = cluster.conf["nodes"]
    for n in nodes:
        addr = admin_addr(n)
        for auth in (None, "Bearer wrong-token-wrong-token-xx", "Bearer " + TOKEN[:-1]):
            status, body = get_json(addr, "/admin/v1/status", auth)
            assert status == 401 and body["error"]["code"] == "unauthorized", (addr, body)
        # a node adopts the map a few hundred ms after the meta group has it
        st = cluster.wait("node %d to know the placement map" % n["id"], lambda: (
            lambda r: r[0] == 200 and r[1]["placement_version"] >= 1 and r[1])(
                get_json(addr, "/admin/v1/status")))
        assert st["node"] == n["id"] and st["cluster"] == cluster.conf["name"], st
        assert 0 < st["disk_free_bytes"] <= st["disk_total_bytes"], st
        assert len(st["shards"]) == 16 and all(len(s["replicas"]) == 3 for s in st["shards"])
        assert all(r["raft_role"] == "voter" for s in st["shards"] for r in s["replicas"])
        leaders = [s for s in st["shards"] if s["role"] == "leader"]
        assert all("match_index" in r for s in leaders for r in s["replicas"]), leaders
        status, d = get_json(addr, "/admin/v1/status?digest=1")
        assert status == 200 and all(len(s["digest"]) == 16 for s in d["shards"]), d
        status, p = get_json(addr, "/admin/v1/placement")
        assert status == 200 and p["version"] >= 1 and p["meta"] == [1, 2, 3], p
        assert [x["id"] for x in p["nodes"]] == [1, 2, 3] and len(p["shards"]) == 16, p
        status, body = get_json(addr, "/admin/v1/nothing-here")
        assert status == 404 and body["error"]["code"] == "not_found", body
        status, _, _ = get_metrics(addr, "Bearer " + TOKEN)
        assert status == 200, (addr, status)
    for n in nodes[:2]:  # an admin address serves the admin API only ...
        status, _, _ = get_metrics(n["admin"], "Bearer " + TOKEN, "/api/v1/conversations")
        assert status == 404, status
        assert rest(n["admin"], "GET", "/healthz")[0] == 200
        # ... and the gateway then does not
        status, _, _ = get_metrics(n["gateway"], "Bearer " + TOKEN, "/admin/v1/status")
        assert status == 404, status
    # chorusctl status reads every node through it, with the admin token
    st = cluster.status()
    assert [x["admin"] for x in st["nodes"]] == [admin_addr(n) for n in nodes], st["nodes"]
    assert all(x["up"] for x in st["nodes"]), st["nodes"]
    p = cluster.ctl("--token", "not-the-admin-token-at-all", "status", check=False)
    assert p.returncode == 1 and p.stderr.count("unauthorized: wrong admin token") == 3, (
        p.returncode, p.stderr)


def check_shards(per_node, n_shards):
    leaders = {s: 0 for s in range(n_shards)}
    hosts = {s: [] for s in range(n_shards)}
    for node, samples in per_node.items():
        for labels, v in select(samples, "chorus_raft_state", state="leader").items():
            shard = int(dict(labels)["shard"])
            leaders[shard] += v
            hosts[shard].append(node)
            states = select(samples, "chorus_raft_state", shard=shard)
            assert sum(states.values()) == 1 and len(states) == 4, (node, shard, states)
        assert one(samples, "chorus_build_info") == 1
        assert one(samples, "chorus_uptime_seconds") > 0
        free, total = (one(samples, "chorus_data_disk_free_bytes"),
                       one(samples, "chorus_data_disk_total_bytes"))
        assert 0 < free <= total, (node, free, total)
    st = cluster.status()
    for n in st["nodes"]:
        assert 0 < n["disk_free_bytes"] <= n["disk_total_bytes"], n
    assert all(v == 1 for v in leaders.values()), "leaders per shard: %r" % leaders
    for s in range(n_shards):
        assert len(hosts[s]) == cluster.conf.get("replication", 3), (s, hosts[s])


def indexes(per_node, name):
    out = {}
    for node, samples in per_node.items():
        for labels, v in select(samples, name).items():
            out[(node, int(dict(labels)["shard"]))] = v
    return out


def test_metrics_follow_traffic():
    n_shards = cluster.conf["shards"]
    cluster.wait("leaders visible in metrics", lambda: check_shards(scrape_all(), n_shards) or True)
    before = scrape_all()
    check_shards(before, n_shards)
    commit0 = indexes(before, "chorus_raft_commit_index")
    applied0 = indexes(before, "chorus_raft_applied_index")
    assert commit0 and all(v >= 0 for v in commit0.values())

    # chat traffic across gateways: every send is acked, every member gets it
    alice = login(GW[0], "m-alice")
    bob = login(GW[1], "m-bob")
    try:
        convs = []
        for i in range(8):
            peer = "m-peer%d" % i
            login(GW[2], peer).close()
            convs.append(alice.request("create", kind="group", members=["m-bob", peer])["conv"])
        sends = 0
        for conv in convs:
            for k in range(5):
                alice.request("send", conv=conv, client_msg_id="c%d-%d" % (conv, k),
                              body="hello %d" % k)
                sends += 1
        for conv in convs:
            bob.wait_seq(conv, 6)
        try:
            alice.request("send", conv=1, client_msg_id="x", body="no such conversation")
        except ApiError as e:
            assert e.code in ("not_found", "forbidden"), e.code
        else:
            raise AssertionError("a send to a conversation that does not exist succeeded")
    finally:
        alice.close()
        bob.close()

    def moved():
        after = scrape_all()
        check_shards(after, n_shards)
        commit1 = indexes(after, "chorus_raft_commit_index")
        applied1 = indexes(after, "chorus_raft_applied_index")
        assert set(commit1) == set(commit0), "replicas changed"
        assert all(commit1[k] >= commit0[k] and applied1[k] >= applied0[k] for k in commit1)
        assert all(applied1[k] <= commit1[k] for k in commit1), "applied beyond commit"
        rose = [k for k in commit1 if applied1[k] > applied0[k]]
        assert len(rose) >= 3, "applied indexes that rose: %r" % rose  # >= one shard's replicas
        return after
    after = cluster.wait("indexes to rise", moved, timeout=30)

    total = lambda name, **kw: sum(sum(select(s, name, **kw).values()) for s in after.values())
    was = lambda name, **kw: sum(sum(select(s, name, **kw).values()) for s in before.values())
    assert total("chorus_gateway_sends_total") - was("chorus_gateway_sends_total") >= sends + 1
    assert total("chorus_gateway_acks_total") - was("chorus_gateway_acks_total") >= sends + 8
    assert total("chorus_gateway_requests_total") > was("chorus_gateway_requests_total") + sends
    assert total("chorus_gateway_replies_total") > was("chorus_gateway_replies_total") + sends
    errs = total("chorus_gateway_errors_total", code="not_found") + \
        total("chorus_gateway_errors_total", code="forbidden")
    assert errs >= 1, "error by code not counted"
    assert total("chorus_gateway_pushes_total") >= sends * 2  # alice's and bob's devices
    assert total("chorus_fanout_events_total") > was("chorus_fanout_events_total")
    assert total("chorus_rpc_calls_total") > was("chorus_rpc_calls_total") + sends
    assert total("chorus_rpc_connects_total") >= 3
    assert total("chorus_shard_batches_proposed_total") >= sends
    assert total("chorus_shard_entries_applied_total") > was("chorus_shard_entries_applied_total")
    assert total("chorus_shard_applied_bytes_total") > was("chorus_shard_applied_bytes_total")
    assert total("chorus_shard_apply_latency_seconds_count") >= sends
    assert total("chorus_shard_batch_commands_count") >= sends
    assert total("chorus_gateway_connections") >= 0
    for node, s in after.items():
        assert one(s, "chorus_gateway_queued_bytes") >= 0
        assert one(s, "chorus_uptime_seconds") > one(before[node], "chorus_uptime_seconds") - 1e-9


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_admin_token_required, test_admin_api, test_metrics_follow_traffic)
    finally:
        cluster.down()
