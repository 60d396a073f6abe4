"""The store through chorusctl on a real 3-node cluster: conversations, messages,
edits, receipts, history paging, idempotent retries, typed errors, status."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402

c = None


def setup():
    global c
    c = Cluster("basic", offset=1000)
    c.up()


def expect_error(code, *args):
    p = c.ctl(*args, check=False)
    assert p.returncode == 1, "expected failure, got %d: %s" % (p.returncode, p.stdout)
    assert (": %s (" % code) in p.stderr, "expected %s, got: %s" % (code, p.stderr)


def test_status_every_shard_has_one_leader():
    st = c.wait_all_leaders()
    assert len(st["nodes"]) == 3 and all(n["up"] for n in st["nodes"])
    assert len(st["shards"]) == c.conf["shards"]
    for s in st["shards"]:
        leaders = [r["node"] for r in s["replicas"] if r["role"] == "leader"]
        assert leaders == [s["leader"]], "shard %d leaders %r" % (s["id"], leaders)
        assert sorted(r["node"] for r in s["replicas"]) == sorted(s["placement"])
        assert isinstance(s["term"], int) and s["term"] >= 1


def test_group_conversation_send_and_history():
    c.ctl("conv", "create", 100, "--actor", "alice", "--group", "team", "--members",
          "alice,bob,carol")
    seqs = [c.ctl_json("send", 100, "--actor", "bob", "--id", "b%d" % i, "msg %d" % i)["seq"]
            for i in range(25)]
    assert seqs == list(range(2, 27)), seqs
    events = c.ctl_jsonl("history", 100, "--limit", 1000)
    assert [e["seq"] for e in events] == list(range(1, 27))
    assert events[0]["type"] == "created" and events[0]["body"] == "team"
    assert events[5]["body"] == "msg 4" and events[5]["actor"] == "bob"
    info = c.ctl_json("conv", "get", 100)
    assert info["last_seq"] == 26 and info["kind"] == "group"
    assert [(m["user"], m["role"]) for m in info["members"]] == [
        ("alice", "owner"), ("bob", "member"), ("carol", "member")]


def test_history_paging():
    page = c.ctl_jsonl("history", 100, "--after", 10, "--limit", 5)
    assert [e["seq"] for e in page] == [11, 12, 13, 14, 15]
    page = c.ctl_jsonl("history", 100, "--before", 10, "--limit", 3)
    assert [e["seq"] for e in page] == [7, 8, 9]
    page = c.ctl_jsonl("history", 100, "--after", 26)
    assert page == []


def test_idempotent_retry_returns_first_seq():
    first = c.ctl_json("send", 100, "--actor", "carol", "--id", "retry-1", "once")
    again = c.ctl_json("send", 100, "--actor", "carol", "--id", "retry-1", "once")
    assert again["seq"] == first["seq"] and again["dup"] and not first["dup"]
    events = c.ctl_jsonl("history", 100, "--after", first["seq"] - 1)
    assert [e.get("client_msg_id") for e in events].count("retry-1") == 1


def test_edit_delete_react_receipts():
    seq = c.ctl_json("send", 100, "--actor", "alice", "original")["seq"]
    edited = c.ctl_json("edit", 100, seq, "--actor", "alice", "changed")["seq"]
    reacted = c.ctl_json("react", 100, seq, "--actor", "bob", "+1")["seq"]
    expect_error("forbidden", "edit", 100, seq, "--actor", "bob", "not mine")
    deleted = c.ctl_json("delete", 100, seq, "--actor", "alice")["seq"]
    expect_error("not_found", "edit", 100, seq, "--actor", "alice", "gone")
    events = c.ctl_jsonl("history", 100, "--after", seq - 1)
    kinds = [(e["seq"], e["type"], e.get("ref_seq")) for e in events]
    assert kinds == [(seq, "message", None), (edited, "edited", seq),
                     (reacted, "reaction", seq), (deleted, "deleted", seq)], kinds
    c.ctl("receipt", 100, deleted, "--actor", "bob", "--read")
    c.ctl("receipt", 100, 3, "--actor", "bob")  # lower: cursors never go back
    bob = [m for m in c.ctl_json("conv", "get", 100)["members"] if m["user"] == "bob"][0]
    assert bob["read"] == deleted and bob["delivered"] == deleted


def test_typed_errors():
    expect_error("forbidden", "send", 100, "--actor", "mallory", "let me in")
    expect_error("not_found", "send", 999999, "--actor", "alice", "anyone?")
    expect_error("too_large", "send", 100, "--actor", "alice", "x" * 70000)
    expect_error("conflict", "conv", "create", 100, "--actor", "bob", "--group", "again",
                 "--members", "bob")
    expect_error("forbidden", "conv", "add", 100, "--actor", "bob", "--user", "dave")
    expect_error("not_found", "history", 424242)
    p = c.ctl("send", "not-a-number", "--actor", "a", "x", check=False)
    assert p.returncode == 2


def test_direct_and_membership():
    c.ctl("conv", "create", 200, "--actor", "alice", "--direct", "--members", "alice,dave")
    c.ctl("send", 200, "--actor", "dave", "hi alice")
    expect_error("forbidden", "conv", "add", 200, "--actor", "alice", "--user", "erin")
    c.ctl("conv", "add", 100, "--actor", "alice", "--user", "erin", "--role", "admin")
    c.ctl("send", 100, "--actor", "erin", "hello all")
    c.ctl("conv", "remove", 100, "--actor", "erin", "--user", "carol")
    expect_error("forbidden", "send", 100, "--actor", "carol", "still here?")
    c.ctl("conv", "leave", 100, "--actor", "alice")
    owner = [m for m in c.ctl_json("conv", "get", 100)["members"] if m["role"] == "owner"]
    assert [m["user"] for m in owner] == ["erin"], owner


def test_stale_reads_match_leader_after_convergence():
    c.wait_converged()
    lead = c.ctl_jsonl("history", 100, "--limit", 1000)
    for node in c.node_ids():
        assert c.ctl_jsonl("history", 100, "--limit", 1000, "--node", node, "--stale") == lead


def shard_of(conv):
    """The shard a conversation lives on, as chorusctl reports it."""
    return c.ctl_json("conv", "get", conv)["shard"]


def test_committed_stream_replays_and_follows():
    shard = shard_of(100)
    history = [e for e in c.ctl_jsonl("history", 100, "--limit", 1000)]
    c.wait_converged()
    for node in c.node_ids():
        lines = c.ctl_jsonl("debug", "subscribe", shard, "--node", node, "--from", 1,
                            "--timeout", 500)
        indexes = [l["index"] for l in lines]
        assert indexes == sorted(set(indexes)), "stream indexes not increasing: %r" % indexes
        events = [e for l in lines for e in l["events"] if e["conv"] == 100 and e["seq"] > 0]
        assert events == history, "node %d streamed something else than the log" % node
        receipts = [e for l in lines for e in l["events"] if e["type"] == "receipt"]
        assert receipts and all(e["seq"] == 0 for e in receipts)
    # a live subscriber sees new commits, in order, and only committed ones
    import subprocess
    from chorus_cluster import CHORUSCTL
    live = subprocess.Popen([CHORUSCTL, "--dir", c.dir, "--json", "debug", "subscribe",
                             str(shard), "--node", str(c.node_ids()[1]), "--entries", "5",
                             "--timeout", "10000"], stdout=subprocess.PIPE, text=True)
    import time
    time.sleep(0.3)
    sent = [c.ctl_json("send", 100, "--actor", "bob", "live %d" % i)["seq"] for i in range(5)]
    out, _ = live.communicate(timeout=30)
    got = [e["seq"] for line in out.splitlines() for e in __import__("json").loads(line)["events"]
           if e["conv"] == 100]
    assert got == sent, (got, sent)


def test_gateway_health():
    import json
    import urllib.error
    import urllib.request
    for n in c.conf["nodes"]:
        with urllib.request.urlopen("http://%s/healthz" % n["gateway"], timeout=5) as r:
            assert r.status == 200
            assert json.loads(r.read()) == {"status": "ok", "node": n["id"]}
        try:
            urllib.request.urlopen("http://%s/no/such/thing" % n["gateway"], timeout=5)
            assert False, "expected 404"
        except urllib.error.HTTPError as e:
            assert e.code == 404
            assert json.loads(e.read())["error"]["code"] == "not_found"


def test_subscribe_errors():
    p = c.ctl("debug", "subscribe", 999, check=False)
    assert p.returncode == 2


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_status_every_shard_has_one_leader,
                  test_group_conversation_send_and_history,
                  test_history_paging,
                  test_idempotent_retry_returns_first_seq,
                  test_edit_delete_react_receipts,
                  test_typed_errors,
                  test_direct_and_membership,
                  test_stale_reads_match_leader_after_convergence,
                  test_committed_stream_replays_and_follows,
                  test_subscribe_errors,
                  test_gateway_health)
    finally:
        teardown()
