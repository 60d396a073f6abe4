"""A smoke test of chorus-bench ("bench-smoke", ports +15000).

Checked, on structure and sanity only -- never on timing thresholds (this runs on
shared CI machines):
 - `floor --json`: the keys, the sample counts, 0 < p50 <= p99 <= p999;
 - `latency --json` against a real 3-node cluster (sender and receiver on different
   gateways): the keys, count, no errors, every send acked and delivered,
   0 < p50 <= p99 <= p999, and floor_ratio when --floor-data is given;
 - `throughput --json` (8 connections over 4 conversations, spread over the three
   gateways, 3 s): the keys, acked > 0, delivered > 0, no errors (the fixture raises
   the gateway's rate limits), 0 < p50 <= p99 <= p999 of the acks;
 - `fanout --json` (50 members over the three gateways, 3 repeats): the keys, every
   message reached every member, no errors, 0 < p50 <= p99 of the last member's time;
 - `connections --json` (200 sessions on one gateway, 2 s of traffic): the keys,
   every session opened, no errors, something delivered, the gateway's process found
   by its port and a memory figure reported (never a size threshold);
 - the human table and exit statuses: 2 for usage errors, 1 for an unreachable
   gateway (with the reason in the JSON);
 - a fake gateway that answers sends with malformed JSON: the tool counts
   `malformed` errors and exits 1, it does not crash.

The harness finds chorusd/chorusctl via CHORUS_BUILD; chorus-bench is
$CHORUS_BENCH, else chorus-bench in CHORUS_BUILD.
"""
import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import BUILD, Cluster, run_tests  # noqa: E402

BENCH = os.environ.get("CHORUS_BENCH", os.path.join(BUILD, "chorus-bench"))
cluster = None
GW = []
TMP = tempfile.mkdtemp(prefix="chorus-bench-smoke-")


def bench(*args, timeout=300):
    p = subprocess.run([BENCH] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode >= 0, "chorus-bench died of signal %d\nstderr: %s" % (
        -p.returncode, p.stderr)
    return p


def bench_json(*args, expect_rc=0, timeout=300):
    p = bench(*args, "--json", timeout=timeout)
    assert p.returncode == expect_rc, "chorus-bench %s -> %d (want %d)\nstdout: %s\nstderr: %s" % (
        " ".join(map(str, args)), p.returncode, expect_rc, p.stdout, p.stderr)
    return json.loads(p.stdout)


def check_percentiles(out, name, samples, with_p999=True):
    keys = ["p50", "p99"] + (["p999"] if with_p999 else [])
    for k in keys + ["min", "max", "mean"]:
        key = "%s_%s_us" % (name, k)
        assert key in out, "missing %s in %r" % (key, sorted(out))
        assert isinstance(out[key], (int, float)), (key, out[key])
        assert out[key] > 0, (key, out[key])
    assert out["%s_samples" % name] == samples, (name, out["%s_samples" % name], samples)
    vals = [out["%s_%s_us" % (name, k)] for k in keys]
    assert vals == sorted(vals), "%s percentiles out of order: %r" % (name, vals)
    assert out["%s_min_us" % name] <= vals[0] and vals[-1] <= out["%s_max_us" % name]


def tweak(conf):
    # throughput keeps many sends in flight per user and registers its users from
    # one address: the default limits (50 sends/s, 5 logins/s) would throttle it
    conf.setdefault("gateway", {})["rate"] = {
        "send_per_s": 100000, "send_burst": 100000,
        "login_per_s": 100000, "login_burst": 100000}


def setup():
    global cluster
    cluster = Cluster("bench-smoke", 15000, tweak=tweak)
    cluster.up()
    cluster.wait_all_leaders()
    GW[:] = [n["gateway"] for n in cluster.conf["nodes"]]


def test_floor_json():
    out = bench_json("floor", "--data", TMP, "--samples", 50)
    assert out["mode"] == "floor"
    assert out["samples"] == 50
    for name in ("fsync", "rtt"):
        check_percentiles(out, name, 50)
    assert out["fsync_writers"] == 1
    assert not [f for f in os.listdir(TMP) if f.startswith(".chorus-bench")], \
        "the fsync temp file was left behind"
    # three writers syncing at once: every writer's samples count, no file left
    out = bench_json("floor", "--data", TMP, "--samples", 20, "--fsync-writers", 3)
    assert out["fsync_writers"] == 3
    check_percentiles(out, "fsync", 60)
    check_percentiles(out, "rtt", 20)
    assert not [f for f in os.listdir(TMP) if f.startswith(".chorus-bench")], \
        "a writer's temp file was left behind"


def test_latency_json():
    out = bench_json("latency", "--gateway", GW[0], "--gateway2", GW[1], "--count", 50)
    assert out["mode"] == "latency" and out["ok"] is True, out
    assert out["count"] == 50, out["count"]
    assert out["errors"] == 0, out
    assert out["error_codes"] == {}, out["error_codes"]
    assert out["conv"] > 0
    assert out["kind"] == "direct" and out["size"] == 200
    assert out["gateway"] == GW[0] and out["gateway2"] == GW[1]
    check_percentiles(out, "ack", 50)
    check_percentiles(out, "delivered", 50)
    assert "floor_ratio" not in out


def test_latency_group_with_floor():
    out = bench_json("latency", "--gateway", GW[2], "--count", 20, "--kind", "group",
                     "--size", 1000, "--rate", 0, "--floor-data", TMP, "--floor-samples", 30)
    assert out["ok"] is True and out["errors"] == 0, out
    assert out["count"] == 20 and out["kind"] == "group" and out["size"] == 1000
    assert out["gateway2"] == GW[2], "the receiver's gateway defaults to the sender's"
    check_percentiles(out, "ack", 20)
    check_percentiles(out, "delivered", 20)
    check_percentiles(out, "fsync", 30)
    check_percentiles(out, "rtt", 30)
    assert out["fsync_writers"] == 1
    assert isinstance(out["floor_ratio"], float) and out["floor_ratio"] > 0
    want = out["ack_p99_us"] / (out["fsync_p99_us"] + 2 * out["rtt_p99_us"])
    assert abs(out["floor_ratio"] - want) <= 1e-6 * want, (out["floor_ratio"], want)


def test_throughput_json():
    gws = []
    for gw in GW:
        gws += ["--gateway", gw]
    out = bench_json("throughput", *gws, "--connections", 8, "--convs", 4, "--window", 2,
                     "--duration", 3, timeout=120)
    assert out["mode"] == "throughput" and out["ok"] is True, out
    assert out["gateways"] == GW, out["gateways"]
    assert out["connections"] == 8 and out["convs"] == 4 and out["window"] == 2
    assert out["size"] == 200
    assert out["memberships"] >= 8, out["memberships"]
    assert out["errors"] == 0 and out["error_codes"] == {}, out
    assert out["rate_limited"] == 0 and "warning" not in out, out
    assert out["acked"] > 0 and out["count"] == out["acked"], out
    assert out["sent"] >= out["acked"], out
    assert out["delivered"] > 0, out
    assert out["duration_s"] > 0
    for key in ("acked_per_s", "delivered_per_s"):
        assert isinstance(out[key], float) and out[key] > 0, (key, out[key])
    want = out["acked"] / out["duration_s"]
    assert abs(out["acked_per_s"] - want) <= 1e-6 * want, (out["acked_per_s"], want)
    check_percentiles(out, "ack", out["acked"])


def test_fanout_json():
    gws = []
    for gw in GW:
        gws += ["--gateway", gw]
    out = bench_json("fanout", *gws, "--members", 50, "--repeats", 3, timeout=180)
    assert out["mode"] == "fanout" and out["ok"] is True, out
    assert out["gateways"] == GW, out["gateways"]
    assert out["members"] == 50 and out["repeats"] == 3 and out["size"] == 200, out
    assert out["completed"] == 3, out
    assert out["errors"] == 0 and out["error_codes"] == {}, out
    assert out["conv"] > 0 and out["setup_s"] > 0, out
    check_percentiles(out, "fanout", 3)
    check_percentiles(out, "member_p50", 3)
    check_percentiles(out, "ack", 3)
    # the median member never gets a message after the last one
    assert out["member_p50_max_us"] <= out["fanout_max_us"], out


def test_connections_json():
    out = bench_json("connections", "--gateway", GW[0], "--connections", 200,
                     "--duration", 2, "--rate", 20, timeout=180)
    assert out["mode"] == "connections" and out["ok"] is True, out
    assert out["gateway"] == GW[0], out["gateway"]
    assert out["connections"] == 200 and out["connections_open"] == 200, out
    assert out["users"] >= 2 and 1 <= out["senders"] <= out["users"], out
    assert out["errors"] == 0 and out["error_codes"] == {}, out
    assert out["open_s"] > 0 and out["duration_s"] > 0, out
    assert out["sent"] >= out["acked"] > 0, out
    assert out["delivered"] > 0, out
    want = out["delivered"] / out["duration_s"]
    assert abs(out["delivered_per_s"] - want) <= 1e-6 * want, (out["delivered_per_s"], want)
    assert out["pid"] == cluster.pid(1), (out["pid"], cluster.pid(1))
    for key in ("rss_before_bytes", "rss_after_bytes"):
        assert isinstance(out[key], int) and out[key] > 0, (key, out[key])
    assert isinstance(out["mem_per_conn_bytes"], float), out["mem_per_conn_bytes"]
    assert "warning" not in out, out
    check_percentiles(out, "ack", out["acked"], with_p999=False)


def test_crowd_table_and_usage():
    p = bench("fanout", "--gateway", GW[1], "--members", 3, "--repeats", 2)
    assert p.returncode == 0, p.stderr
    assert "send->last member" in p.stdout and "errors: 0" in p.stdout, p.stdout
    p = bench("connections", "--gateway", GW[1], "--connections", 10, "--duration", 1)
    assert p.returncode == 0, p.stderr
    assert "sessions open" in p.stdout and "errors: 0" in p.stdout, p.stdout
    for args in (["fanout"], ["fanout", "--gateway", GW[0]],
                 ["fanout", "--gateway", GW[0], "--members", "0"],
                 ["fanout", "--gateway", GW[0], "--members", "5", "--window", "2"],
                 ["connections", "--gateway", GW[0]],
                 ["connections", "--gateway", GW[0], "--connections", "1"],
                 ["connections", "--gateway", GW[0], "--gateway", GW[1],
                  "--connections", "5"],
                 ["connections", "--gateway", GW[0], "--connections", "5", "--members", "2"]):
        p = bench(*args)
        assert p.returncode == 2, "%r -> %d (want 2)\n%s" % (args, p.returncode, p.stderr)
        assert p.stderr, args


def test_table_output():
    p = bench("latency", "--gateway", GW[1], "--count", 5)
    assert p.returncode == 0, p.stderr
    assert "send->ack" in p.stdout and "send->delivered" in p.stdout, p.stdout
    assert "errors: 0" in p.stdout, p.stdout
    p = bench("floor", "--data", TMP, "--samples", 10)
    assert p.returncode == 0, p.stderr
    assert "fsync" in p.stdout and "loopback rtt" in p.stdout, p.stdout
    if shutil.which("gnuplot"):
        png = os.path.join(TMP, "floor.png")
        p = bench("floor", "--data", TMP, "--samples", 10, "--plot", png)
        assert p.returncode == 0, p.stderr
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", "not a PNG"


def test_exit_statuses():
    for args in ([], ["nosuchmode"], ["latency"], ["latency", "--gateway", "nohostport"],
                 ["floor"], ["floor", "--data", TMP, "--samples", "0"],
                 ["latency", "--gateway", GW[0], "--kind", "triangle"],
                 ["latency", "--gateway", GW[0], "--bogus"],
                 ["throughput"], ["throughput", "--gateway", GW[0], "--connections", "1"],
                 ["throughput", "--gateway", GW[0], "--count", "5"],
                 ["latency", "--gateway", GW[0], "--window", "2"]):
        p = bench(*args)
        assert p.returncode == 2, "%r -> %d (want 2)\n%s" % (args, p.returncode, p.stderr)
        assert p.stderr, args
    # a port nothing listens on: the run fails (1) and says why
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    out = bench_json("latency", "--gateway", dead, "--count", 3, expect_rc=1)
    assert out["ok"] is False and "failure" in out and dead in out["failure"], out
    assert out["count"] == 0 and out["ack_samples"] == 0 and out["ack_p50_us"] is None


# ---- a fake gateway that misbehaves ---------------------------------------------------

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeGateway:
    """Speaks just enough of the protocol (register, create, send) over WebSocket;
    the replies to sends alternate between malformed and correct ones."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = {}  # user -> socket
        self.lock = threading.Lock()
        self.sends = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(c,), daemon=True).start()

    @staticmethod
    def send(c, text):
        data = text.encode()
        n = len(data)
        head = bytes([0x81]) + (bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n))
        c.sendall(head + data)

    @staticmethod
    def read_frame(c, buf):
        def need(k):
            while len(buf) < k:
                d = c.recv(65536)
                if not d:
                    raise EOFError
                buf.extend(d)
        need(2)
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            need(4)
            n, off = struct.unpack(">H", bytes(buf[2:4]))[0], 4
        elif n == 127:
            need(10)
            n, off = struct.unpack(">Q", bytes(buf[2:10]))[0], 10
        need(off + 4 + n)
        mask, payload = buf[off:off + 4], buf[off + 4:off + 4 + n]
        opcode = buf[0] & 0x0F
        del buf[:off + 4 + n]
        return opcode, bytes(b ^ mask[i & 3] for i, b in enumerate(payload))

    def session(self, c):
        buf = bytearray()
        try:
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf.extend(d)
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf = bytearray(rest)
            key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
                   if l.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest()).decode()
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                       % accept).encode())
            while True:
                opcode, payload = self.read_frame(c, buf)
                if opcode == 0x8:
                    return
                if opcode != 0x1:
                    continue
                self.handle(c, json.loads(payload))
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def reply(self, c, rid, result):
        self.send(c, json.dumps({"type": "reply", "id": rid, "ok": True, "result": result}))

    def handle(self, c, req):
        rid, op = req["id"], req["op"]
        if op == "register":
            with self.lock:
                self.conns[req["user"]] = c
            self.reply(c, rid, {"user": req["user"], "token": "t", "expires": 1})
        elif op == "create":
            self.reply(c, rid, {"conv": 42, "seq": 1, "ts": 1, "dup": False})
            ev = json.dumps({"type": "event", "conv": 42, "seq": 1, "ts": 1,
                             "event": "created", "from": "x", "kind": req["kind"]})
            with self.lock:
                for conn in self.conns.values():
                    self.send(conn, ev)
        elif op == "send":
            with self.lock:
                self.sends += 1
                k = self.sends
                receivers = [conn for conn in self.conns.values() if conn is not c]
            bad = ['{"type":"reply","id":%d,"ok":tru' % rid,            # not JSON
                   '{"type":"reply","id":%d,"ok":"yes"}' % rid,          # wrong type
                   '[1,2,3]',                                            # not an object
                   '{"type":"event","conv":"42","seq":1,"event":"message"}']
            if k % 2 == 1:
                self.send(c, bad[(k // 2) % len(bad)])
                return  # the send is never acked: a timeout follows
            self.reply(c, rid, {"conv": 42, "seq": k + 1, "ts": 1, "dup": False})
            ev = json.dumps({"type": "event", "conv": 42, "seq": k + 1, "ts": 1,
                             "event": "message", "from": "x",
                             "client_msg_id": req["client_msg_id"], "body": req["body"]})
            for conn in receivers:
                self.send(conn, ev)


def test_malformed_messages_are_errors():
    fake = FakeGateway()
    out = bench_json("latency", "--gateway", fake.addr, "--count", 8, "--rate", 0,
                     "--timeout-ms", 300, expect_rc=1, timeout=60)
    assert out["count"] == 8, out
    codes = out["error_codes"]
    assert codes.get("malformed") == 4, codes
    assert codes.get("timeout") == 4, codes
    assert out["errors"] == 8, out
    # the well-formed half was measured as usual
    assert out["ack_samples"] == 4 and out["delivered_samples"] == 4, out
    check_percentiles(out, "ack", 4)


if __name__ == "__main__":
    try:
        setup()
        run_tests(test_floor_json, test_latency_json, test_latency_group_with_floor,
                  test_throughput_json, test_fanout_json, test_connections_json,
                  test_crowd_table_and_usage, test_table_output, test_exit_statuses, test_malformed_messages_are_errors)
    finally:
        if cluster is not None:
            cluster.down()
        shutil.rmtree(TMP, ignore_errors=True)
