"""The chorus "DB" of the Jepsen suite: five chorusd processes, one per node
namespace, with their data, logs and clocks under the run directory.

    RUN/cluster.json        the run's copy of cluster-conf/netns-5.json (gateway
                            rate limits raised so the workload is never throttled)
    RUN/data/nN/            node N's data dir (kept across kill -9 and restart)
    RUN/nodes/nN.log        node N's stdout and stderr (appended across restarts)
    RUN/nodes/nN.faketime   node N's clock offset for libfaketime ("+0", "-12.5")
    RUN/pids                "N PID" per running node: `jepsen/run cleanup` reads it

Processes are started as `ip netns exec chj-nN [env LD_PRELOAD=...] chorusd ...`:
both `ip netns exec` and `env` exec in place, so the PID we get is chorusd's
own, and every signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) goes to it directly.

Clocks: with clock faults enabled every node runs under libfaketime with
FAKETIME_TIMESTAMP_FILE = its own offset file and FAKETIME_NO_CACHE=1, so a new
offset takes effect on the next clock read.  FAKETIME_DONT_FAKE_MONOTONIC=1
keeps CLOCK_MONOTONIC real: a real clock step moves only the wall clock, and
libuv / Raft timers run on the monotonic clock (libfaketime would otherwise
also shift CLOCK_MONOTONIC, to values near the wall clock, which no real
machine does).
"""
import http.client
import json
import os
import signal
import subprocess
import threading
import time

from . import net

FAKETIME_LIB_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
GATEWAY_PORT = 7300

RATE = {"send_per_s": 100000, "send_burst": 100000,
        "login_per_s": 1000, "login_burst": 1000}


def faketime_lib():
    for p in FAKETIME_LIB_CANDIDATES:
        if os.path.exists(p):
            return p
    return None


def write_config(source, path, tweak=None):
    with open(source) as f:
        conf = json.load(f)
    conf["name"] = "chj-" + conf.get("name", "netns-5")
    gw = conf.setdefault("gateway", {})
    rate = gw.setdefault("rate", {})
    rate.update(RATE)
    if tweak:
        tweak(conf)
    with open(path, "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    return conf


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Node:
    def __init__(self, db, node_id):
        self.db = db
        self.id = node_id
        self.ns = net.node_ns(node_id)
        self.ip = net.node_ip(node_id)
        self.gateway = "%s:%d" % (self.ip, GATEWAY_PORT)
        self.data = os.path.join(db.run_dir, "data", "n%d" % node_id)
        self.log_path = os.path.join(db.run_dir, "nodes", "n%d.log" % node_id)
        self.clock_path = os.path.join(db.run_dir, "nodes", "n%d.faketime" % node_id)
        self.proc = None
        self.paused = False
        self.offset = 0.0
        self.starts = 0
        self.expected_down = False   # killed by the nemesis (not a crash)
        self.crashes = []            # (elapsed, rc) of exits nobody asked for

    # ---- process --------------------------------------------------------------
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid if self.running() else None

    def start(self):
        if self.running():
            return
        os.makedirs(self.data, exist_ok=True)
        cmd = ["ip", "netns", "exec", self.ns]
        env = []
        if self.db.faketime:
            env += ["LD_PRELOAD=" + self.db.faketime,
                    "FAKETIME_TIMESTAMP_FILE=" + self.clock_path,
                    "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"]
        if self.db.bug:
            env += ["CHORUS_BUG=" + self.db.bug]
        if env:
            cmd += ["env"] + env
        cmd += [self.db.chorusd, "--config", self.db.conf_path, "--node", str(self.id),
                "--data", self.data]
        log = open(self.log_path, "ab")
        self.starts += 1
        log.write(("==== jepsen: start #%d at +%.3fs: %s\n"
                   % (self.starts, self.db.elapsed(), " ".join(cmd))).encode())
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.paused = False
        self.expected_down = False
        self.db.save_pids()

    def check_crash(self):
        """Records and returns the exit code when the process died on its own."""
        if self.proc is not None and self.proc.poll() is not None and \
                not self.expected_down:
            rc = self.proc.returncode
            self.crashes.append((round(self.db.elapsed(), 3), rc))
            self._mark("exited on its own, rc %s" % rc)
            self.expected_down = True      # recorded once
            return rc
        return None

    def _mark(self, what):
        with open(self.log_path, "ab") as log:
            log.write(("==== jepsen: %s at +%.3fs\n" % (what, self.db.elapsed())).encode())

    def kill(self):
        """kill -9; the data dir stays."""
        if not self.running():
            return False
        self._mark("kill -9")
        self.expected_down = True
        self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.paused = False
        self.db.save_pids()
        return True

    def pause(self):
        if self.running() and not self.paused:
            self._mark("SIGSTOP")
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True
            return True
        return False

    def resume(self):
        if self.running() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self._mark("SIGCONT")
        self.paused = False

    def stop(self, timeout=10):
        """SIGTERM (after SIGCONT if paused), SIGKILL after the timeout."""
        if not self.running():
            return None
        self.resume()
        self.expected_down = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            rc = self.proc.wait(5)
        self.db.save_pids()
        return rc

    # ---- clock ----------------------------------------------------------------
    def set_offset(self, seconds):
        self.offset = float(seconds)
        _atomic_write(self.clock_path, "%+.3f\n" % self.offset)

    # ---- health ---------------------------------------------------------------
    def healthy(self, timeout=1.0):
        """GET /healthz on the node's gateway (from the client namespace)."""
        try:
            c = http.client.HTTPConnection(self.ip, GATEWAY_PORT, timeout=timeout)
            c.request("GET", "/healthz")
            r = c.getresponse()
            body = r.read()
            c.close()
            return r.status == 200 and json.loads(body).get("status") == "ok"
        except (OSError, ValueError, http.client.HTTPException):
            return False


class DB:
    def __init__(self, run_dir, build_dir, conf_source, clock=False, t0=None, bug=None):
        self.run_dir = run_dir
        self.bug = bug
        self.chorusd = os.path.join(build_dir, "chorusd")
        self.chorusctl = os.path.join(build_dir, "chorusctl")
        self.conf_path = os.path.join(run_dir, "cluster.json")
        self.t0 = t0 if t0 is not None else time.monotonic()
        os.makedirs(os.path.join(run_dir, "nodes"), exist_ok=True)
        os.makedirs(os.path.join(run_dir, "data"), exist_ok=True)
        self.conf = write_config(conf_source, self.conf_path)
        self.faketime = None
        if clock:
            self.faketime = faketime_lib()
            if self.faketime is None:
                raise RuntimeError("clock faults need libfaketime (Debian package "
                                   "faketime; scripts/install-deps.sh installs it)")
        self.lock = threading.RLock()
        self.nodes = {n["id"]: Node(self, n["id"]) for n in self.conf["nodes"]}
        for node in self.nodes.values():
            node.set_offset(0)

    def elapsed(self):
        return time.monotonic() - self.t0

    def ids(self):
        return sorted(self.nodes)

    def gateways(self):
        return [self.nodes[n].gateway for n in self.ids()]

    def save_pids(self):
        with self.lock:
            lines = ["%d %d\n" % (n.id, n.proc.pid) for n in self.nodes.values()
                     if n.running()]
            _atomic_write(os.path.join(self.run_dir, "pids"), "".join(lines))

    def start_all(self):
        for n in self.ids():
            self.nodes[n].start()

    def wait_healthy(self, ids=None, timeout=30):
        ids = list(ids or self.ids())
        end = time.monotonic() + timeout
        pending = set(ids)
        while pending:
            for n in sorted(pending):
                node = self.nodes[n]
                if not node.running():
                    raise RuntimeError("node %d exited (rc %s); see %s"
                                       % (n, node.proc.returncode if node.proc else None,
                                          node.log_path))
                if node.healthy():
                    pending.discard(n)
            if pending and time.monotonic() > end:
                raise RuntimeError("nodes %s not healthy after %ds"
                                   % (sorted(pending), timeout))
            if pending:
                time.sleep(0.1)

    def check_bug_active(self, timeout=5):
        """With --bug: every node's log must say the bug is active (a chorusd built
        without -DCHORUS_BUGS=ON ignores CHORUS_BUG and would run correctly)."""
        if not self.bug:
            return
        end = time.monotonic() + timeout
        missing = self.ids()
        while missing:
            still = []
            for n in missing:
                try:
                    with open(self.nodes[n].log_path, errors="replace") as f:
                        text = f.read()
                except OSError:
                    text = ""
                if "DELIBERATE BUG ACTIVE: CHORUS_BUG=%s " % self.bug not in text:
                    still.append(n)
            missing = still
            if missing and time.monotonic() > end:
                raise RuntimeError("--bug %s: nodes %s do not report the bug active; "
                                   "build chorusd with -DCHORUS_BUGS=ON" % (self.bug, missing))
            if missing:
                time.sleep(0.2)

    def status(self, timeout=20):
        """`chorusctl --config RUN/cluster.json --json status`, or None.  (It exits 1
        when a node is down or a shard has no leader: the JSON is still there.)"""
        try:
            p = subprocess.run([self.chorusctl, "--config", self.conf_path, "--json",
                                "status"], capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if p.returncode not in (0, 1):
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    def leaders(self):
        """{shard: leader node or None}, or {} when no node answers."""
        st = self.status()
        if not st:
            return {}
        return {s["id"]: s["leader"] for s in st["shards"]}

    def wait_leaders(self, timeout=30):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            last = self.leaders()
            if last and all(v is not None for v in last.values()):
                return last
            time.sleep(0.3)
        raise RuntimeError("no leader for every shard after %ds (last: %r)"
                           % (timeout, last))

    def wait_converged(self, timeout=10):
        """Every replica of every shard up, one leader each, and all replicas at
        the same commit and applied index; returns True, or False at timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.status()
            if st and self._converged(st):
                return True
            time.sleep(0.3)
        return False

    @staticmethod
    def _converged(st):
        for s in st["shards"]:
            reps = s["replicas"]
            if s["leader"] is None or len(reps) != len(s["placement"]):
                return False
            if len({r["applied_index"] for r in reps}) != 1 or \
               len({r["commit_index"] for r in reps}) != 1:
                return False
        return True

    def ctl_lines(self, *args, timeout=30):
        """chorusctl --json ARGS: (rc, [json objects, one a line])."""
        p = subprocess.run([self.chorusctl, "--config", self.conf_path, "--json"]
                           + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout)
        out = []
        for line in p.stdout.splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return p.returncode, out, p.stderr.strip()

    def check_replicas(self):
        """`chorusctl debug digest`: every replica of every shard at the same
        applied index must hold the same state digest."""
        rc, lines, err = self.ctl_lines("debug", "digest")
        res = {"valid": True, "anomalies": {}, "stats": {"shards": 0, "compared": 0}}
        shards = []
        for x in lines:
            shards += x if isinstance(x, list) else [x]
        if not shards:
            return {"valid": None, "error": "debug digest: rc %d %s" % (rc, err)}
        for s in shards:
            res["stats"]["shards"] += 1
            reps = s.get("replicas") or []
            applied = {r.get("applied_index") for r in reps}
            if len(reps) < 2 or len(applied) != 1:
                res["anomalies"].setdefault("not-compared", []).append(
                    {"shard": s.get("shard"),
                     "replicas": {r.get("node"): r.get("applied_index") for r in reps}})
                continue
            res["stats"]["compared"] += 1
            if not s.get("agree"):
                res["valid"] = False
                res["anomalies"].setdefault("digest-mismatch", []).append(
                    {"shard": s.get("shard"),
                     "replicas": {r.get("node"): "%s@%s" % (r.get("digest"),
                                                          r.get("applied_index"))
                                  for r in reps}})
        return res

    def check_timestamps(self, convs):
        """Each conversation's whole history (linearizable read through chorusctl):
        seqs 1, 2, 3, ... with no gap, and ts never decreasing (docs/protocol.md:
        the shard leader's clock, never decreasing within a conversation)."""
        res = {"valid": True, "anomalies": {}, "stats": {"convs": 0, "events": 0,
                                                         "max-ts-step-back-ms": 0}}
        for key, conv in sorted(convs.items()):
            rc, evs, err = self.ctl_lines("history", conv, "--limit", 10000000)
            if rc != 0:
                res["anomalies"].setdefault("unreadable", []).append(
                    {"key": key, "conv": conv, "error": err[:200]})
                res["valid"] = None if res["valid"] is not False else False
                continue
            res["stats"]["convs"] += 1
            res["stats"]["events"] += len(evs)
            prev = None
            for i, ev in enumerate(evs):
                if ev.get("seq") != i + 1:
                    res["valid"] = False
                    res["anomalies"].setdefault("seq-gap", []).append(
                        {"key": key, "conv": conv, "expected": i + 1, "got": ev.get("seq")})
                    break
                if prev is not None and ev.get("ts", 0) < prev.get("ts", 0):
                    res["valid"] = False
                    back = prev["ts"] - ev["ts"]
                    res["stats"]["max-ts-step-back-ms"] = max(
                        res["stats"]["max-ts-step-back-ms"], back)
                    lst = res["anomalies"].setdefault("ts-decreasing", [])
                    if len(lst) < 20:
                        lst.append({"key": key, "conv": conv, "seq": ev["seq"],
                                    "ts": ev["ts"], "prev-ts": prev["ts"]})
                prev = ev
        return res

    def stop_all(self):
        rcs = {}
        for n in self.ids():
            rcs[n] = self.nodes[n].stop()
        return rcs

    def check_crashes(self):
        """{node: rc} of nodes that exited without being killed or stopped."""
        out = {}
        for node in self.nodes.values():
            rc = node.check_crash()
            if rc is not None:
                out[node.id] = rc
        return out

    def kill_all(self):
        for node in self.nodes.values():
            if node.running():
                node.expected_down = True
                try:
                    node.proc.send_signal(signal.SIGCONT)
                    node.proc.send_signal(signal.SIGKILL)
                    node.proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        self.save_pids()
