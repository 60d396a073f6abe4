"""Leadership transfer on a real 3-node cluster (replication 2, so a node is not a
replica of every shard): `chorusctl leader transfer` moves a shard's leader while a
writer keeps going and loses or repeats nothing; a non-replica target is refused;
`leader balance` spreads the leaders as evenly as the placement allows."""
import itertools
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402

c = None


def setup():
    global c

    def tweak(conf):
        conf["replication"] = 2  # round-robin placement: shard s on nodes s, s+1 (mod 3)

    c = Cluster("leaders", offset=11000, tweak=tweak)
    c.up()


def placement():
    return {s["id"]: s["placement"] for s in c.status()["shards"]}


def leader_counts(st):
    counts = {n["id"]: 0 for n in st["nodes"] if n["up"]}
    for s in st["shards"]:
        if s["leader"] is not None:
            counts[s["leader"]] += 1
    return counts


def best_spread(place, up_nodes):
    """The smallest max-min of leader counts any placement-respecting assignment
    reaches: over every set T of up nodes, the busiest node has at least
    ceil(#shards confined to T / |T|) and the idlest at most
    floor(#shards touching T / |T|); the optimum meets both bounds."""
    hi, lo = 0, None
    for k in range(1, len(up_nodes) + 1):
        for T in itertools.combinations(up_nodes, k):
            T = set(T)
            reps = [set(r) & set(up_nodes) for r in place.values()]
            inside = sum(1 for r in reps if r and r <= T)
            touching = sum(1 for r in reps if r & T)
            hi = max(hi, -(-inside // len(T)))
            lo = touching // len(T) if lo is None else min(lo, touching // len(T))
    return hi - lo


def test_every_shard_has_one_leader():
    st = c.wait_all_leaders()
    for s in st["shards"]:
        leaders = [r["node"] for r in s["replicas"] if r["role"] == "leader"]
        assert leaders == [s["leader"]], "shard %d leaders %r" % (s["id"], leaders)
        assert len(s["placement"]) == 2 and s["leader"] in s["placement"]


def test_transfer_under_writes_loses_nothing():
    conv = 500
    c.ctl("conv", "create", conv, "--actor", "alice", "--group", "moving", "--members",
          "alice,bob")
    shard = c.ctl_json("conv", "get", conv)["shard"]
    st = c.wait_all_leaders()
    s = [x for x in st["shards"] if x["id"] == shard][0]
    old = s["leader"]
    target = [n for n in s["placement"] if n != old][0]

    acked, failed = [], []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            mid = "w-%d" % i
            p = c.ctl("--json", "send", conv, "--actor", "alice", "--id", mid, "m %d" % i,
                      check=False)
            if p.returncode == 0:
                import json
                acked.append((time.time(), mid, json.loads(p.stdout)["seq"]))
            else:
                failed.append((mid, p.stderr))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(1.0)
        t_before = time.time()
        out = c.ctl_json("leader", "transfer", shard, "--to", target)
        t_after = time.time()
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(timeout=60)
    assert out["shard"] == shard and out["from"] == old and out["to"] == target, out
    assert out["requested"] == target and out["ms"] > 0, out
    print("    transfer of shard %d %d -> %d took %.1f ms; %d sends acked around it"
          % (shard, old, target, out["ms"], len(acked)))
    assert c.leader_of(shard) == target, "status does not show node %d leading" % target
    assert not failed, "sends failed during the transfer: %r" % failed[:3]
    assert any(ts < t_before for ts, _, _ in acked), "no acks before the transfer"
    assert any(ts > t_after for ts, _, _ in acked), "no acks after the transfer"
    history = c.ctl_jsonl("history", conv, "--limit", 100000)
    ids = [e.get("client_msg_id") for e in history if e["type"] == "message"]
    for _, mid, seq in acked:
        assert ids.count(mid) == 1, "%s appears %d times in history" % (mid, ids.count(mid))
    by_id = {e.get("client_msg_id"): e["seq"] for e in history}
    assert all(by_id[mid] == seq for _, mid, seq in acked), "acked seq differs from history"
    assert len(set(ids)) == len(ids), "a message is in history twice"

    # Raft's choice (with two replicas: back to the other one), and a no-op to itself.
    out = c.ctl_json("leader", "transfer", shard)
    assert out["from"] == target and out["to"] == old and out["requested"] is None, out
    out = c.ctl_json("leader", "transfer", shard, "--to", old)
    assert out["from"] == old and out["to"] == old, out
    text = c.ctl("leader", "transfer", shard, "--to", target).stdout
    assert text.startswith("shard %d: leader %d -> %d (" % (shard, old, target)), text


def test_transfer_to_non_replica_is_refused():
    place = placement()
    shard, reps = sorted(place.items())[0]
    outsider = [n for n in c.node_ids() if n not in reps][0]
    before = c.leader_of(shard)
    p = c.ctl("leader", "transfer", shard, "--to", outsider, check=False)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "bad_request" in p.stderr and "not a voting replica" in p.stderr, p.stderr
    assert c.leader_of(shard) == before
    # usage errors: exit 2
    for args in (("leader", "transfer", 999), ("leader", "transfer", shard, "--to", 99),
                 ("leader", "transfer"), ("leader", "transfer", shard, "--to"),
                 ("leader", "balance", "--bogus"), ("leader",)):
        p = c.ctl(*args, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stderr)


def test_balance_spreads_leaders():
    place = placement()
    # Skew: node 1 takes every shard it holds a replica of.
    for shard, reps in sorted(place.items()):
        if 1 in reps and c.leader_of(shard) != 1:
            c.ctl("leader", "transfer", shard, "--to", 1)
    st = c.wait_all_leaders()
    skewed = leader_counts(st)
    bound = best_spread(place, sorted(skewed))
    assert max(skewed.values()) - min(skewed.values()) > bound, skewed

    plan = c.ctl_json("leader", "balance", "--dry-run")
    assert plan["dry_run"] and plan["moves"] and plan["spread"] <= bound, plan
    assert leader_counts(c.status()) == skewed, "a dry run moved leaders"
    for m in plan["moves"]:
        assert m["to"] in place[m["shard"]], "move off the placement: %r" % m

    out = c.ctl_json("leader", "balance")
    assert out["ok"] and not out["dry_run"], out
    assert all(m["ok"] for m in out["moves"]), out
    counts = leader_counts(c.wait_all_leaders())
    spread = max(counts.values()) - min(counts.values())
    assert spread <= bound, (counts, bound)
    assert out["spread"] == spread, (out, counts)
    print("    balance: %s -> %s in %d moves (best spread %d)"
          % (skewed, counts, len(out["moves"]), bound))

    # Balanced already: nothing to do.
    again = c.ctl("leader", "balance")
    assert again.stdout.startswith("0 moves planned"), again.stdout


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_every_shard_has_one_leader,
                  test_transfer_under_writes_loses_nothing,
                  test_transfer_to_non_replica_is_refused,
                  test_balance_spreads_leaders)
    finally:
        teardown()
