"""A replica that was down while its shards moved on catches up by snapshot
(InstallSnapshot) and ends with exactly the leader's state.

Small snapshot thresholds make the leaders compact their logs while node 3 is
down, so node 3 cannot catch up from the log alone."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402


def tweak(conf):
    conf["raft"]["snapshot_threshold"] = 64
    conf["raft"]["snapshot_trailing"] = 32


def test_down_replica_catches_up_by_snapshot():
    c = Cluster("catchup", offset=4000, tweak=tweak)
    c.up()
    c.ctl("debug", "load", "--convs", 16, "--messages", 200, "--window", 8, "--seed", 1)
    c.kill9(3)
    # well past threshold + trailing on every shard while node 3 is away
    c.ctl("debug", "load", "--convs", 32, "--messages", 4000, "--window", 16, "--seed", 2)
    c.start(3)
    c.wait_converged(timeout=120)
    # only what node 3 logged after its restart counts (it also restores its own
    # snapshot while starting, before the "up" line)
    after_start = c.log(3).rsplit(" up: ", 1)[1]
    assert "snapshot restored" in after_start, "node 3 caught up without InstallSnapshot"
    c.ctl("debug", "digest")
    st = c.status()
    for s in st["shards"]:
        node3 = [r for r in s["replicas"] if r["node"] == 3][0]
        lead = [r for r in s["replicas"] if r["node"] == s["leader"]][0]
        assert node3["events"] == lead["events"], "shard %d: %d vs %d events" % (
            s["id"], node3["events"], lead["events"])
    c.down()


if __name__ == "__main__":
    run_tests(test_down_replica_catches_up_by_snapshot)
