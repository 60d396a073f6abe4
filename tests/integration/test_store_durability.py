"""Durability under kill -9: every acknowledged message survives, exactly once,
in order, on every replica, across a leader crash and whole-cluster restarts.

10,000 messages over 100 conversations are appended with 32 in flight while the
leader of one shard is killed with SIGKILL and restarted.  Then every
conversation is read from every replica (stale reads, so each replica answers
from its own state) and checked against the acks.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import CHORUSCTL, Cluster, run_tests  # noqa: E402

CONVS = 100
MESSAGES = 10000


def read_acks(path):
    acks = {}
    with open(path) as f:
        for line in f:
            a = json.loads(line)
            key = (a["conv"], a["cmid"])
            assert key not in acks, "message acked twice: %r" % (key,)
            acks[key] = a
    return acks


def read_all(cluster, node=None):
    """{conv: [events]} for every conversation in the acks, from one replica."""
    out = {}
    for conv in cluster.convs:
        args = ["history", conv, "--limit", 1000000]
        if node is not None:
            args += ["--node", node, "--stale"]
        out[conv] = cluster.ctl_jsonl(*args)
    return out


def check_histories(hist, acks, where):
    seen = set()
    for conv, events in hist.items():
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(events) + 1)), \
            "%s: conv %d seqs not contiguous from 1: %r" % (where, conv, seqs[:20])
        assert events[0]["type"] == "created", "%s: conv %d does not start with created" % (
            where, conv)
        for e in events[1:]:
            assert e["type"] == "message", "%s: unexpected event %r" % (where, e)
            key = (conv, e["client_msg_id"])
            assert key not in seen, "%s: duplicate message %r" % (where, key)
            seen.add(key)
            a = acks.get(key)
            assert a is not None, "%s: message never acked (allowed only for in-doubt " \
                                  "sends, and the load retries until acked): %r" % (where, key)
            assert a["seq"] == e["seq"], "%s: %r acked as seq %d but stored as %d" % (
                where, key, a["seq"], e["seq"])
            assert e["body"].startswith(a["body"]), "%s: body differs for %r" % (where, key)
    missing = set(acks) - seen
    assert not missing, "%s: %d acked messages lost, e.g. %r" % (
        where, len(missing), sorted(missing)[:3])


def test_kill_leader_under_load():
    c = Cluster("durability", offset=2000)
    c.up()
    acks_path = os.path.join(c.dir, "acks.jsonl")
    load = subprocess.Popen(
        [str(x) for x in [CHORUSCTL, "--dir", c.dir, "debug", "load", "--convs", CONVS,
                          "--messages", MESSAGES, "--window", 32, "--members", 4,
                          "--size", 100, "--seed", 7, "--out", acks_path]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # kill -9 the leader of shard 0 once the load is well under way
        c.wait("load progress", lambda: os.path.exists(acks_path)
               and sum(1 for _ in open(acks_path)) >= MESSAGES // 5, timeout=120,
               interval=0.05)
        victim = c.wait("a leader of shard 0", lambda: c.leader_of(0), timeout=30)
        c.kill9(victim)
        time.sleep(1.0)
        c.start(victim)
        out, err = load.communicate(timeout=300)
    finally:
        if load.poll() is None:  # never leave a load running against the next test
            load.kill()
            load.wait()
    print(out.strip())
    assert load.returncode == 0, "load failed: %s %s" % (out, err)
    acks = read_acks(acks_path)
    assert len(acks) == MESSAGES, "only %d of %d acked" % (len(acks), MESSAGES)
    c.convs = sorted({k[0] for k in acks})
    assert len(c.convs) == CONVS
    # after the crash, another node led shard 0 at some point
    c.wait_converged(timeout=90)
    per_node = {}
    for node in c.node_ids():
        per_node[node] = read_all(c, node)
        check_histories(per_node[node], acks, "node %d" % node)
    nodes = c.node_ids()
    for node in nodes[1:]:
        assert per_node[node] == per_node[nodes[0]], "replicas %d and %d differ" % (
            nodes[0], node)
    c.ctl("debug", "digest")
    baseline = per_node[nodes[0]]

    # clean stop and start of the whole cluster: everything reads back unchanged
    c.down()
    c.up()
    c.wait_all_leaders()
    assert read_all(c) == baseline, "history changed across a clean restart"

    # kill -9 every node, start again: still unchanged, on every replica
    for node in nodes:
        c.kill9(node)
    c.up()
    c.wait_converged(timeout=90)
    assert read_all(c) == baseline, "history changed across kill -9 of the whole cluster"
    for node in nodes:
        assert read_all(c, node) == baseline, "replica %d differs after restart" % node
    c.ctl("debug", "digest")
    c.down()


if __name__ == "__main__":
    run_tests(test_kill_leader_under_load)
