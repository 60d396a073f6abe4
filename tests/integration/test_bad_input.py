"""Bad input never crashes a node: malformed frames, unknown ops, oversize
frames, garbage commands, broken configs and a corrupted snapshot on disk each
get a typed error or a clear refusal, and the node keeps serving."""
import glob
import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import CHORUSD, Cluster, run_tests  # noqa: E402

# error codes (src/common/error.h order)
ERRORS = ["ok", "no_memory", "malformed", "invalid", "unknown_op", "too_large"]
CH_EMALFORMED, CH_EUNKNOWN_OP, CH_ETOOLARGE = 2, 4, 5
PING, PONG, SUBMIT, ERROR = 1, 101, 2, 100

c = None


def setup():
    global c

    def tweak(conf):
        conf["raft"]["snapshot_threshold"] = 64
        conf["raft"]["snapshot_trailing"] = 32
    c = Cluster("badinput", offset=3000, tweak=tweak)
    c.up()


def frame(ftype, req_id, body=b"", flags=0, reserved=0, length=None):
    n = 12 + len(body) if length is None else length
    return struct.pack("<IBBHQ", n, ftype, flags, reserved, req_id) + body


def connect(node=1):
    addr = [n for n in c.conf["nodes"] if n["id"] == node][0]["client"]
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def read_frame(s):
    head = b""
    while len(head) < 16:
        chunk = s.recv(16 - len(head))
        if not chunk:
            return None
        head += chunk
    n, ftype, flags, _, req_id = struct.unpack("<IBBHQ", head)
    body = b""
    while len(body) < n - 12:
        chunk = s.recv(n - 12 - len(body))
        if not chunk:
            return None
        body += chunk
    return ftype, req_id, body


def error_code(body):
    return struct.unpack("<H", body[:2])[0]


def ping_ok(node=1):
    s = connect(node)
    s.sendall(frame(PING, 77, struct.pack("<Q", 12345)))
    f = read_frame(s)
    s.close()
    return f is not None and f[0] == PONG and f[1] == 77 and f[2] == struct.pack("<Q", 12345)


def is_closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_unknown_type_is_a_typed_error_and_the_connection_stays():
    s = connect()
    s.sendall(frame(77, 5, b"whatever"))
    ftype, req_id, body = read_frame(s)
    assert (ftype, req_id, error_code(body)) == (ERROR, 5, CH_EUNKNOWN_OP)
    s.sendall(frame(PING, 6, struct.pack("<Q", 1)))
    assert read_frame(s)[0] == PONG
    s.close()


def test_reserved_bits_close_the_connection_with_an_error():
    s = connect()
    s.sendall(frame(PING, 1, struct.pack("<Q", 1), reserved=1))
    ftype, _, body = read_frame(s)
    assert ftype == ERROR and error_code(body) == CH_EMALFORMED
    assert is_closed(s)
    assert ping_ok()


def test_oversize_frame_is_refused_before_it_is_read():
    s = connect()
    s.sendall(frame(SUBMIT, 1, b"", length=1 << 30))
    ftype, _, body = read_frame(s)
    assert ftype == ERROR and error_code(body) == CH_ETOOLARGE
    assert is_closed(s)
    assert ping_ok()


def test_short_length_is_malformed():
    s = connect()
    s.sendall(struct.pack("<I", 3) + b"abc")
    ftype, _, body = read_frame(s)
    assert ftype == ERROR and error_code(body) == CH_EMALFORMED
    assert ping_ok()


def test_garbage_submit_is_refused_whole():
    s = connect()
    # declares 3 commands but carries garbage
    body = struct.pack("<I", 3) + struct.pack("<I", 10) + b"\xff" * 10
    s.sendall(frame(SUBMIT, 9, body))
    ftype, req_id, body = read_frame(s)
    assert (ftype, req_id, error_code(body)) == (ERROR, 9, CH_EMALFORMED)
    # truncated fixed fields
    s.sendall(frame(SUBMIT, 10, b"\x01"))
    ftype, req_id, body = read_frame(s)
    assert (ftype, req_id, error_code(body)) == (ERROR, 10, CH_EMALFORMED)
    s.close()


def test_truncated_frame_then_hangup_leaves_the_node_up():
    for i in range(20):
        s = connect()
        s.sendall(frame(SUBMIT, i, b"\x00" * 100)[: 10 + i])
        s.close()
    assert ping_ok()


def test_random_bytes_never_crash_a_node():
    import random
    rnd = random.Random(42)
    for i in range(200):
        s = connect(1 + i % 3)
        s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))))
        s.close()
    for node in c.node_ids():
        assert ping_ok(node), "node %d stopped answering" % node


def run_chorusd(conf_text, name):
    path = os.path.join(c.dir, name)
    with open(path, "w") as f:
        f.write(conf_text)
    p = subprocess.run([CHORUSD, "--config", path, "--node", "1", "--data",
                        os.path.join(c.dir, "unused-" + name)],
                       capture_output=True, text=True, timeout=30)
    return p


def test_broken_configs_are_refused_with_a_clear_line():
    good = json.dumps(c.conf)
    cases = [
        ("{not json", "invalid JSON"),
        (good.replace('"shards"', '"shardz"'), 'unknown field "shardz"'),
        (good.replace(c.conf["nodes"][0]["client"], "localhost:1"), "nodes[0].client"),
        (good.replace('"replication": 3', '"replication": 9'), "replication"),
        ("", "invalid JSON"),
    ]
    for i, (text, needle) in enumerate(cases):
        p = run_chorusd(text, "bad-%d.json" % i)
        assert p.returncode == 2, "case %d: exit %d" % (i, p.returncode)
        assert "ERROR" in p.stderr and needle in p.stderr, "case %d: %s" % (i, p.stderr)


def test_taken_gateway_port_is_refused():
    conf = json.loads(json.dumps(c.conf))
    conf["name"] = "portclash"
    for n in conf["nodes"]:
        for k in ("raft", "client", "gateway"):
            host, port = n[k].rsplit(":", 1)
            n[k] = "%s:%d" % (host, int(port) + 500)
    host, port = conf["nodes"][0]["gateway"].rsplit(":", 1)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((host, int(port)))
    squatter.listen(1)
    try:
        p = run_chorusd(json.dumps(conf), "portclash.json")
    finally:
        squatter.close()
    assert p.returncode == 2, p.returncode
    assert "gateway on %s:%s" % (host, port) in p.stderr, p.stderr


def test_foreign_data_dir_is_refused():
    p = subprocess.run([CHORUSD, "--config", os.path.join(c.dir, "cluster.json"), "--node",
                        "2", "--data", os.path.join(c.dir, "node-1")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "locked" in p.stderr or "another node" in p.stderr, p.stderr


def test_corrupt_snapshot_is_detected_and_refused():
    # enough entries on every shard for snapshots (threshold 64)
    c.ctl("debug", "load", "--convs", 32, "--messages", 1500, "--window", 16, "--seed", 3)
    node = 1
    snaps = []
    c.wait("snapshots on node 1", lambda: [
        p for p in glob.glob(os.path.join(c.dir, "node-%d" % node, "shard-*", "snapshot-*"))
        if not p.endswith(".meta")], timeout=30)
    c.ctl("local", "stop", node)
    snaps = [p for p in glob.glob(os.path.join(c.dir, "node-%d" % node, "shard-*",
                                               "snapshot-*")) if not p.endswith(".meta")]
    assert snaps
    # corrupt the newest snapshot of one shard, in the middle of our payload
    victim = sorted(snaps, key=os.path.getmtime)[-1]
    with open(victim, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x5A
        f.seek(0)
        f.write(data)
    p = subprocess.run([CHORUSD, "--config", os.path.join(c.dir, "cluster.json"), "--node",
                        str(node), "--data", os.path.join(c.dir, "node-%d" % node)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, "a node with a corrupt snapshot must refuse to start: %d" % (
        p.returncode)
    shard = os.path.basename(os.path.dirname(victim)).split("-")[1]
    assert "ERROR" in p.stderr and ("shard %s" % shard) in p.stderr, p.stderr[-2000:]
    assert "corrupt" in p.stderr or "checksum" in p.stderr, p.stderr[-2000:]
    # the other two replicas keep the shard available
    c.ctl("send", 100 + int(shard), "--actor", "x", "y", check=False)
    assert ping_ok(2) and ping_ok(3)


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_unknown_type_is_a_typed_error_and_the_connection_stays,
                  test_reserved_bits_close_the_connection_with_an_error,
                  test_oversize_frame_is_refused_before_it_is_read,
                  test_short_length_is_malformed,
                  test_garbage_submit_is_refused_whole,
                  test_truncated_frame_then_hangup_leaves_the_node_up,
                  test_random_bytes_never_crash_a_node,
                  test_broken_configs_are_refused_with_a_clear_line,
                  test_taken_gateway_port_is_refused,
                  test_foreign_data_dir_is_refused,
                  test_corrupt_snapshot_is_detected_and_refused)
    finally:
        teardown()
