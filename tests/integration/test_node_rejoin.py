"""A node loses its data (disk replaced, directory wiped) on a 3-node cluster with
3 replicas per shard.  Started again with --join on the empty directory it
follows the placement map and opens empty replicas, but Raft's leaders still
count it as a voter with the log it had; `chorusctl node rejoin` takes each of
its replicas (and its meta replica) out of the group and adds it back as a new
one, after which every replica converges to the same state, under writes."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import CHORUSD, Cluster, run_tests  # noqa: E402

c = None


def setup():
    global c

    def tweak(conf):
        conf["shards"] = 4

    c = Cluster("rejoin", offset=14000, tweak=tweak)
    c.up()
    c.wait_all_leaders()


def test_wiped_node_rejoins():
    c.ctl("conv", "create", 900, "--actor", "alice", "--group", "g", "--members", "alice,bob")
    c.ctl("debug", "load", "--convs", 4, "--messages", 3000, "--window", 32)
    for i in range(20):
        c.ctl("send", 900, "--actor", "alice", "--id", "before-%d" % i, "hello %d" % i)
    c.ctl("local", "stop", 3, "--kill")
    shutil.rmtree(os.path.join(c.dir, "node-3"))
    c.ctl("local", "start", 3, "--join", "--bin", CHORUSD)
    def second_run():
        parts = c.log(3).split("nothing is bootstrapped here")
        return len(parts) == 2 and parts[1].count("opened a new replica") >= 4 and parts[1]
    log = c.wait("node 3 to open its replicas", second_run)
    assert "bootstrapped new replica" not in log, log
    for i in range(20):  # writes go on while it rejoins (2 of 3 replicas suffice)
        c.ctl("send", 900, "--actor", "alice", "--id", "during-%d" % i, "hi %d" % i)
    out = c.ctl_json("node", "rejoin", 3)
    assert out["ok"], out
    groups = sorted(str(g["shard"]) for g in out["groups"])
    assert groups == ["0", "1", "2", "3", "meta"], out
    st = c.wait_converged()
    for s in st["shards"]:
        for r in s["replicas"]:
            assert sorted(r["members"]) == [1, 2, 3] and r["standbys"] == [], r
    dg = c.ctl("debug", "digest")
    assert "DIFFER" not in dg.stdout, dg.stdout
    ids = [e.get("client_msg_id") for e in c.ctl_jsonl("history", 900, "--stale", "--node", 3,
                                                       "--limit", 1000)]
    for i in range(20):
        assert ids.count("before-%d" % i) == 1 and ids.count("during-%d" % i) == 1, ids
    # node 3 can lead again: its replicas are real voters
    shard = st["shards"][0]["id"]
    out = c.ctl_json("leader", "transfer", shard, "--to", 3)
    assert out["to"] == 3, out


def test_snapshot_all():
    st = c.wait_converged()
    out = c.ctl_json("snapshot", "--all")
    assert len(out) == 4 * 3 and all(r["ok"] for r in out), out
    applied = {(s["id"], r["node"]): r["applied_index"] for s in st["shards"]
               for r in s["replicas"]}
    for r in out:
        assert r["index"] >= applied[(r["shard"], r["node"])] - 1, (r, applied)
    text = c.ctl("snapshot", 2).stdout
    assert text.count("snapshot at index") == 3, text
    for args, code in ((("snapshot",), 2), (("snapshot", 9), 2), (("snapshot", "x"), 2)):
        p = c.ctl(*args, check=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
    p = c.ctl("--token", "wrong-token-for-this", "snapshot", 1, check=False)
    assert p.returncode == 1 and "unauthorized" in p.stdout, (p.returncode, p.stdout)
    for n in (1, 2, 3):
        assert "snapshot requested by an operator" in c.log(n)


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_wiped_node_rejoins, test_snapshot_all)
    finally:
        teardown()
