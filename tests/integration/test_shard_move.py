"""Membership on a real cluster: the placement map lives in the meta group, a node
is added to a running 3-node cluster (replication 2) and started with --join,
shard replicas move to it under continuous writes without losing or repeating a
message (the old replica's data is deleted), an interrupted move aborts safely,
the new placement survives a restart of every node, `node remove` drains a node
and then removes it, and admin commands with a wrong token are refused."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import CHORUSCTL, CHORUSD, Cluster, run_tests, shift_port  # noqa: E402

OFFSET = 13000
c = None


def setup():
    global c

    def tweak(conf):
        conf["shards"] = 8
        conf["replication"] = 2  # round-robin: shard s on nodes s, s+1 (mod 3)

    c = Cluster("move", offset=OFFSET, tweak=tweak)
    c.up()  # returns once every shard has a leader and the meta group its map
    c.wait_all_leaders()


def placement():
    return {s["id"]: sorted(s["placement"]) for s in c.status()["shards"]}


def node_list():
    return {n["id"]: n for n in c.ctl_json("node", "list")["nodes"]}


def shard_dirs(node):
    d = os.path.join(c.dir, "node-%d" % node)
    return sorted(int(x[6:]) for x in os.listdir(d) if x.startswith("shard-"))


def wait_dirs(node, want, timeout=30):
    return c.wait("node %d to hold exactly shards %r" % (node, want),
                  lambda: shard_dirs(node) == sorted(want) or None, timeout)


class Writer:
    """Sends messages to one conversation with chorusctl until stopped."""

    def __init__(self, conv, prefix):
        self.conv, self.prefix = conv, prefix
        self.acked, self.failed = [], []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run)

    def run(self):
        i = 0
        while not self.stop.is_set():
            mid = "%s-%d" % (self.prefix, i)
            p = c.ctl("--json", "send", self.conv, "--actor", "alice", "--id", mid,
                      "m %d" % i, check=False)
            if p.returncode == 0:
                self.acked.append((time.time(), mid, json.loads(p.stdout)["seq"]))
            else:
                self.failed.append((mid, p.stderr))
            i += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(timeout=60)

    def check(self):
        assert not self.failed, "sends failed: %r" % self.failed[:3]
        assert len(self.acked) > 5, "too few sends acked: %d" % len(self.acked)
        history = c.ctl_jsonl("history", self.conv, "--limit", 100000)
        ids = [e.get("client_msg_id") for e in history if e["type"] == "message"]
        seqs = [e["seq"] for e in history]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "history out of order"
        by_id = {e.get("client_msg_id"): e["seq"] for e in history}
        for _, mid, seq in self.acked:
            assert ids.count(mid) == 1, "%s appears %d times" % (mid, ids.count(mid))
            assert by_id[mid] == seq, "acked seq of %s differs from history" % mid


def test_meta_group_seeded_from_config():
    nodes = node_list()
    assert sorted(nodes) == [1, 2, 3], nodes
    assert all(n["state"] == "active" and n["meta"] for n in nodes.values()), nodes
    assert all(n["replicas"] == 8 * 2 // 3 or n["replicas"] == 8 * 2 // 3 + 1
               for n in nodes.values()), nodes
    st = c.wait_all_leaders()
    for s in st["shards"]:
        leaders = [r["node"] for r in s["replicas"] if r["role"] == "leader"]
        assert leaders == [s["leader"]], s


def test_node_add_and_join():
    node4 = {"id": 4, "raft": shift_port("127.0.0.1:7170", OFFSET),
             "client": shift_port("127.0.0.1:7204", OFFSET),
             "gateway": shift_port("127.0.0.1:7304", OFFSET)}
    # The operator adds the node to the config file every host uses ...
    c.conf["nodes"].append(node4)
    with open(os.path.join(c.dir, "cluster.json"), "w") as f:
        json.dump(c.conf, f, indent=2)
    # ... registers it in the placement map, and starts it with --join.
    out = c.ctl_json("node", "add", 4)
    assert out["node"] == 4 and out["state"] == "active", out
    again = c.ctl_json("node", "add", 4)  # idempotent
    assert again["node"] == 4, again
    c.ctl("local", "start", 4, "--join", "--bin", CHORUSD)
    nodes = c.wait("node 4 in the map", lambda: (lambda n: 4 in n and n)(node_list()))
    assert nodes[4]["state"] == "active" and nodes[4]["replicas"] == 0, nodes
    time.sleep(1.0)
    assert shard_dirs(4) == [], "a joining node bootstrapped shards: %r" % shard_dirs(4)
    assert "nothing is bootstrapped here" in c.log(4)
    st = c.status()
    assert [n["up"] for n in st["nodes"]] == [True] * 4, st["nodes"]


def test_move_under_writes():
    conv = 700
    c.ctl("conv", "create", conv, "--actor", "alice", "--group", "moving", "--members",
          "alice,bob")
    shard = c.ctl_json("conv", "get", conv)["shard"]
    c.ctl("debug", "load", "--convs", 8, "--messages", 4000, "--window", 32)
    before = placement()[shard]
    st = c.wait_all_leaders()
    leader = [s for s in st["shards"] if s["id"] == shard][0]["leader"]
    src = leader  # the harder case: the leader itself moves away
    with Writer(conv, "mv") as w:
        time.sleep(1.0)
        t0 = time.time()
        out = c.ctl_json("shard", "move", shard, "--from", src, "--to", 4)
        t1 = time.time()
        time.sleep(1.0)
    assert out["ok"] and out["shard"] == shard and out["from"] == src and out["to"] == 4, out
    print("    shard %d moved %d -> 4 in %.0f ms (%d entries caught up in %.0f ms), %d "
          "sends acked around it" % (shard, src, out["total_ms"], out["entries"],
                                     out["catchup_ms"], len(w.acked)))
    w.check()
    assert any(ts < t0 for ts, _, _ in w.acked) and any(ts > t1 for ts, _, _ in w.acked)
    after = placement()[shard]
    assert after == sorted([n for n in before if n != src] + [4]), (before, after)
    wait_dirs(src, [s for s, reps in placement().items() if src in reps])
    assert shard in shard_dirs(4)
    st = c.wait_converged()
    s = [x for x in st["shards"] if x["id"] == shard][0]
    assert sorted(r["node"] for r in s["replicas"]) == after, s
    for r in s["replicas"]:
        assert sorted(r["members"]) == after and r["standbys"] == [], r
    dg = c.ctl("debug", "digest")
    assert "DIFFER" not in dg.stdout, dg.stdout
    # a second move to node 4, from a follower this time
    shard2 = [s for s, reps in sorted(placement().items()) if 4 not in reps][0]
    reps = placement()[shard2]
    follower = [n for n in reps if n != c.leader_of(shard2)][0]
    out = c.ctl_json("shard", "move", shard2, "--from", follower, "--to", 4)
    assert out["ok"], out
    assert 4 in placement()[shard2] and follower not in placement()[shard2]


def test_move_errors():
    place = placement()
    shard, reps = sorted(place.items())[0]
    outsider = [n for n in (1, 2, 3, 4) if n not in reps][0]
    for args, code, text in (
            (("shard", "move", shard, "--from", outsider, "--to", reps[0]), 1, "bad_request"),
            (("shard", "move", shard, "--from", reps[0], "--to", 9), 1, "bad_request"),
            (("shard", "move", 99, "--from", 1, "--to", 2), 2, "no shard"),
            (("shard", "move", shard), 2, "usage"),
            (("node", "remove", 1), 1, "meta group")):
        p = c.ctl(*args, check=False)
        assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
        assert text in p.stderr, (args, p.stderr)
    assert placement() == place, "a refused command changed the placement"


def test_interrupted_move_aborts():
    place = placement()
    shard = [s for s, reps in sorted(place.items()) if 4 not in reps][0]
    src = place[shard][0]
    c.ctl("local", "stop", 4)  # the target cannot open its replica: the move waits
    cmd = [CHORUSCTL, "--dir", c.dir, "shard", "move", str(shard), "--from", str(src),
           "--to", "4"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, (p.returncode, out, err)
    assert "interrupted" in err and "aborted" in err, err
    assert placement() == place, "an aborted move changed the placement"
    c.ctl("local", "start", 4, "--bin", CHORUSD)
    wait_dirs(4, [s for s, reps in place.items() if 4 in reps])
    p = c.ctl("shard", "move", shard, "--abort")
    assert "no move in progress" in p.stdout, p.stdout


def test_restart_keeps_placement():
    place = placement()
    dirs = {n: shard_dirs(n) for n in (1, 2, 3, 4)}
    count = len(c.ctl_jsonl("history", 700, "--limit", 100000))
    c.down()
    c.ctl("local", "up", "--bin", CHORUSD,
          timeout=60)
    c.wait_all_leaders()
    assert placement() == place, (place, placement())
    assert {n: shard_dirs(n) for n in (1, 2, 3, 4)} == dirs
    assert len(c.ctl_jsonl("history", 700, "--limit", 100000)) == count
    for n in (1, 2, 3, 4):
        assert "bootstrapped new replica" not in c.log(n).split("received SIGTERM")[-1], n


def test_node_remove_drains_then_removes():
    held = [s for s, reps in placement().items() if 4 in reps]
    assert held, "node 4 holds nothing to drain"
    with Writer(700, "rm") as w:
        out = c.ctl_json("node", "remove", 4)
    assert out["removed"] and len(out["moves"]) == len(held), out
    assert all(m["ok"] and m["from"] == 4 for m in out["moves"]), out
    w.check()
    assert all(4 not in reps for reps in placement().values()), placement()
    nodes = node_list()
    assert nodes[4]["state"] == "removed" and nodes[4]["replicas"] == 0, nodes
    wait_dirs(4, [])
    c.wait_converged()
    # a removed node can be added again (and would then receive replicas)
    assert c.ctl_json("node", "add", 4)["state"] == "active"
    # drain and activate: state only, replicas stay
    assert c.ctl_json("node", "drain", 2)["state"] == "draining"
    assert node_list()[2]["state"] == "draining"
    st = c.wait("node 2 to lead nothing",
                lambda: (lambda st: all(s["leader"] != 2 for s in st["shards"]) and st)(
                    c.status()))
    assert [n["state"] for n in st["nodes"] if n["id"] == 2] == ["draining"]
    assert c.ctl_json("node", "activate", 2)["state"] == "active"


def test_wrong_admin_token_is_refused():
    place = placement()
    shard, reps = sorted(place.items())[0]
    target = [n for n in (1, 2, 3) if n not in reps][0]
    for args in (("shard", "move", shard, "--from", reps[0], "--to", target),
                 ("leader", "transfer", shard),
                 ("node", "drain", 2),
                 ("node", "add", 5, "--raft", "127.0.0.1:1", "--client", "127.0.0.1:2",
                  "--gateway", "127.0.0.1:3")):
        p = c.ctl("--token", "not-the-admin-token", *args, check=False)
        assert p.returncode == 1, (args, p.returncode, p.stdout, p.stderr)
        assert "unauthorized" in p.stderr and "wrong admin token" in p.stderr, p.stderr
    assert placement() == place
    assert node_list()[2]["state"] == "active"


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_meta_group_seeded_from_config,
                  test_node_add_and_join,
                  test_move_under_writes,
                  test_move_errors,
                  test_interrupted_move_aborts,
                  test_restart_keeps_placement,
                  test_node_remove_drains_then_removes,
                  test_wrong_admin_token_is_refused)
    finally:
        teardown()
