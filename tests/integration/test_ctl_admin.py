"""chorusctl's administration commands against a real 3-node cluster ("ctladmin",
ports shifted by 12000): `config validate`, `conv inspect`, `user add|disable|enable`.

Checked:
 - config validate accepts every shipped cluster-conf/*.json (text and --json, no
   cluster needed) and refuses crafted bad ones with exit 1 and a message naming
   the offending key; a missing FILE is a usage error (exit 2);
 - conv inspect of a conversation created with chorusctl: the shard placement
   computes (cluster_shard_of_conv), the leader the status sweep sees, the
   placement's replicas, kind/name/creator, last seq, members with roles and
   cursors; the table names the same; a missing conversation is `not_found`;
 - user add hashes a record the gateway's login verifies (so it went to the user's
   shard), from --password-stdin and --password; a second add (or a WebSocket
   register of the name) is a conflict; bad ids / short passwords are usage errors;
 - user disable closes the user's open WebSockets (goodbye `forbidden`) and makes
   login answer `forbidden`, user enable lets it in again; both
   are idempotent (dup reported), and an unknown user is `not_found`.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import CHORUSCTL, SOURCE, Cluster, run_tests  # noqa: E402
from wsclient import ApiError, WsClient, request_retrying, rest, shard_of_conv  # noqa: E402

WAIT = 30.0
cluster = None
GW = []


def ctl_raw(*args, stdin=None):
    """chorusctl without a cluster directory (config validate needs none)."""
    return subprocess.run([CHORUSCTL] + [str(a) for a in args], capture_output=True,
                          text=True, input=stdin, timeout=60)


def login(addr, user, password):
    """The login result, retrying while the gateway is still connecting to the
    shards (`unavailable`) or rate limited; raises ApiError otherwise."""
    end = time.monotonic() + WAIT
    while True:
        w = WsClient(addr)
        try:
            return request_retrying(w, "login", user=user, password=password)
        except ApiError as e:
            if e.code != "unavailable" or time.monotonic() > end:
                raise
        finally:
            w.close()
        time.sleep(0.2)


def login_error(addr, user, password):
    try:
        login(addr, user, password)
    except ApiError as e:
        return e.code
    raise AssertionError("login of %s succeeded" % user)


# ---- config validate (no cluster) --------------------------------------------------

def test_config_validate_shipped():
    files = sorted(glob.glob(os.path.join(SOURCE, "cluster-conf", "*.json")))
    assert len(files) >= 3, files
    for path in files:
        with open(path) as f:
            conf = json.load(f)
        p = ctl_raw("config", "validate", path)
        assert p.returncode == 0, (path, p.stdout, p.stderr)
        want = "%s: valid: %d nodes, %d shards x %d replicas" % (
            path, len(conf["nodes"]), conf["shards"], conf.get("replication", 1))
        assert p.stdout.strip() == want, (p.stdout, want)
        p = ctl_raw("--json", "config", "validate", path)
        assert p.returncode == 0, (path, p.stderr)
        j = json.loads(p.stdout)
        assert j == {"file": path, "valid": True, "nodes": len(conf["nodes"]),
                     "shards": conf["shards"],
                     "replication": conf.get("replication", 1)}, j


def test_config_validate_bad():
    with open(os.path.join(SOURCE, "cluster-conf", "local-3.json")) as f:
        base = f.read()

    def variant(change):
        conf = json.loads(base)
        change(conf)
        return json.dumps(conf)

    cases = [
        ("replication", variant(lambda c: c.update(replication=4))),
        ("nodes[1].id", variant(lambda c: c["nodes"][1].update(id=1))),
        ("nodes[2].raft", variant(lambda c: c["nodes"][2].update(raft="localhost:7000"))),
        ("raft.heartbeat_timeout_ms",
         variant(lambda c: c.update(raft={"election_timeout_ms": 100,
                                          "heartbeat_timeout_ms": 200}))),
        ("auth.secret", variant(lambda c: c["auth"].pop("secret"))),
        ("auth.scrypt_log2_n", variant(lambda c: c["auth"].update(scrypt_log2_n=30))),
        ("shardz", variant(lambda c: c.update(shardz=3))),
        ("placement.0", variant(lambda c: c.update(placement={"0": [1, 1, 2]}))),
        ("invalid JSON", base[:40]),
    ]
    d = tempfile.mkdtemp(prefix="chorus-ctladmin-conf-")
    for i, (key, text) in enumerate(cases):
        path = os.path.join(d, "bad-%d.json" % i)
        with open(path, "w") as f:
            f.write(text)
        p = ctl_raw("config", "validate", path)
        assert p.returncode == 1, (key, p.returncode, p.stdout, p.stderr)
        assert key in p.stderr and path in p.stderr and "invalid" in p.stderr, \
            (key, p.stderr)
        p = ctl_raw("--json", "config", "validate", path)
        assert p.returncode == 1, (key, p.returncode)
        j = json.loads(p.stdout)
        assert j["file"] == path and j["valid"] is False and key in j["error"], j
        os.unlink(path)
    p = ctl_raw("config", "validate", os.path.join(d, "missing.json"))
    assert p.returncode == 1 and "missing.json" in p.stderr, p.stderr
    os.rmdir(d)
    assert ctl_raw("config", "validate").returncode == 2
    assert ctl_raw("config", "frobnicate", "x").returncode == 2


# ---- with a cluster ----------------------------------------------------------------

def setup():
    global cluster

    def tweak(conf):
        conf["auth"]["scrypt_log2_n"] = 10  # cheap hashes (chorusctl must use it too)
        conf["gateway"] = {"rate": {"login_per_s": 1000, "login_burst": 1000}}

    cluster = Cluster("ctladmin", offset=12000, tweak=tweak)
    cluster.up()
    cluster.wait_all_leaders()
    GW[:] = [n["gateway"] for n in cluster.conf["nodes"]]


def test_conv_inspect():
    c = cluster
    conv = 4242
    c.ctl("conv", "create", conv, "--actor", "alice", "--group", "team",
          "--members", "alice,bob,carol")
    c.ctl("send", conv, "--actor", "alice", "--id", "m1", "hello")
    c.ctl("send", conv, "--actor", "bob", "--id", "m2", "hi")
    c.ctl("receipt", conv, 2, "--actor", "bob", "--read")
    shard = shard_of_conv(conv, c.conf["shards"])
    leader = c.leader_of(shard)
    j = c.ctl_json("conv", "inspect", conv)
    assert j["conv"] == conv and j["shard"] == shard, j
    assert j["leader"] == leader and j["answered_by"] == leader, (j, leader)
    assert j["kind"] == "group" and j["name"] == "team" and j["created_by"] == "alice", j
    assert j["created_ts"] > 1_600_000_000_000, j  # wall-clock ms
    assert j["last_seq"] >= 3, j  # created + 2 messages
    st = c.status()
    placement = st["shards"][shard]["placement"]
    assert [r["node"] for r in j["replicas"]] == placement, (j["replicas"], placement)
    assert all(r["up"] for r in j["replicas"]), j["replicas"]
    assert [r["role"] for r in j["replicas"]].count("leader") == 1, j["replicas"]
    members = {m["user"]: m for m in j["members"]}
    assert j["member_count"] == 3 and set(members) == {"alice", "bob", "carol"}, j
    assert members["alice"]["role"] == "owner", members
    assert members["bob"]["role"] == "member" and members["bob"]["read"] == 2, members
    assert members["carol"]["read"] == 0, members

    table = c.ctl("conv", "inspect", conv).stdout
    assert "shard       %d, leader node %d" % (shard, leader) in table, table
    for user in ("alice", "bob", "carol"):
        assert user in table, table
    assert '"team"' in table and "group" in table, table

    p = c.ctl("conv", "inspect", 987654321, check=False)
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    assert c.ctl("conv", "inspect", "abc", check=False).returncode == 2
    assert c.ctl("conv", "inspect", check=False).returncode == 2


def test_user_add_login():
    c = cluster
    cmd = [CHORUSCTL, "--dir", c.dir, "user", "add", "dave", "--password-stdin",
           "--display-name", "Dave D"]
    p = subprocess.run(cmd, input="dave-secret-1\n", capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.startswith("user dave created"), p.stdout
    r = login(GW[0], "dave", "dave-secret-1")
    assert r.get("token") and r.get("user", "dave") == "dave", r
    assert login_error(GW[1], "dave", "wrong-password") == "unauthorized"

    j = c.ctl_json("user", "add", "erin", "--password", "erin-secret-2")
    assert j["user"] == "erin" and j["created"] is True and isinstance(j["shard"], int), j
    login(GW[2], "erin", "erin-secret-2")

    # the user exists: chorusctl and the gateway both say conflict
    p = c.ctl("user", "add", "dave", "--password", "another-pass", check=False)
    assert p.returncode == 1 and "conflict" in p.stderr, (p.returncode, p.stderr)
    w = WsClient(GW[1])
    try:
        request_retrying(w, "register", user="erin", password="whatever-123")
        raise AssertionError("register of an existing user succeeded")
    except ApiError as e:
        assert e.code == "conflict", e
    finally:
        w.close()
    login(GW[1], "dave", "dave-secret-1")  # the failed add changed nothing

    # usage errors: nothing is submitted
    for args in (("user", "add", "Bad!", "--password", "long-enough"),
                 ("user", "add", "frank", "--password", "short"),
                 ("user", "add", "frank"),
                 ("user", "add", "frank", "--password", "long-enough",
                  "--password-stdin"),
                 ("user", "disable", "-x"), ("user", "enable"), ("user", "frob", "x")):
        p = c.ctl(*args, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert login_error(GW[0], "frank", "long-enough") == "unauthorized"


def test_user_disable_enable():
    c = cluster
    c.ctl("user", "add", "gina", "--password", "gina-secret-3")
    token = login(GW[0], "gina", "gina-secret-3")["token"]
    # sessions open on every gateway when the account gets disabled
    open_ws = []
    for gw in GW:
        w = WsClient(gw)
        assert w.request("auth", token=token)["user"] == "gina"
        open_ws.append(w)

    p = c.ctl("user", "disable", "gina")
    assert p.stdout.strip() == "user gina disabled", p.stdout
    for w in open_ws:  # each gateway learns it from the committed stream
        status = w.wait_closed(timeout=10)
        byes = [m for m in w.pushes if m.get("type") == "goodbye"]
        assert byes and byes[0]["code"] == "forbidden", (byes, status, w.pushes)
        w.close()
    for gw in GW:
        assert login_error(gw, "gina", "gina-secret-3") == "forbidden"
        # a token issued before the disable no longer opens a session either
        w = WsClient(gw)
        try:
            w.request("auth", token=token)
            raise AssertionError("auth of a disabled user succeeded on %s" % gw)
        except ApiError as e:
            assert e.code == "forbidden", e
            assert w.request_raw("conversations")["error"]["code"] == "unauthorized"
        finally:
            w.close()
        st, r = rest(gw, "GET", "/api/v1/conversations", token=token)
        assert st == 403 and r["error"]["code"] == "forbidden", (gw, st, r)
    j = c.ctl_json("user", "disable", "gina")
    assert j == {"user": "gina", "shard": j["shard"], "disabled": True,
                 "changed": False}, j
    assert "already" in c.ctl("user", "disable", "gina").stdout

    j = c.ctl_json("user", "enable", "gina")
    assert j["disabled"] is False and j["changed"] is True, j
    for gw in GW:
        login(gw, "gina", "gina-secret-3")
        w = WsClient(gw)
        assert w.request("auth", token=token)["user"] == "gina"
        w.close()
        st, r = rest(gw, "GET", "/api/v1/conversations", token=token)
        assert st == 200 and "conversations" in r, (gw, st, r)

    p = c.ctl("user", "disable", "nobody-here", check=False)
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)


if __name__ == "__main__":
    run_tests(test_config_validate_shipped, test_config_validate_bad, setup,
              test_conv_inspect, test_user_add_login, test_user_disable_enable)
