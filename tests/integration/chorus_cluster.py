"""Helpers for integration tests: a real chorus cluster of chorusd processes on
loopback, driven through chorusctl.  Python 3 standard library only.

Every test gets its own temporary directory and its own ports (the shipped
local-3 config shifted by a per-test offset), so tests can run side by side and
next to a `make run` cluster.  Processes are always stopped by PID at exit.
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

BUILD = os.environ.get("CHORUS_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
SOURCE = os.environ.get("CHORUS_SOURCE", os.path.join(os.path.dirname(__file__), "../.."))
CHORUSCTL = os.path.join(BUILD, "chorusctl")
CHORUSD = os.path.join(BUILD, "chorusd")


def shift_port(addr, offset):
    host, port = addr.rsplit(":", 1)
    return "%s:%d" % (host, int(port) + offset)


CLUSTERS = []


class Cluster:
    """A local cluster in a temp dir.  `offset` shifts every port."""

    def __init__(self, name, offset, base="local-3.json", tweak=None):
        CLUSTERS.append(self)
        self.dir = tempfile.mkdtemp(prefix="chorus-%s-" % name)
        with open(os.path.join(SOURCE, "cluster-conf", base)) as f:
            conf = json.load(f)
        conf["name"] = "test-" + name
        for n in conf["nodes"]:
            for k in ("raft", "client", "gateway"):
                n[k] = shift_port(n[k], offset)
        if tweak:
            tweak(conf)
        self.conf = conf
        self.conf_path = os.path.join(self.dir, "test-cluster.json")
        with open(self.conf_path, "w") as f:
            json.dump(conf, f, indent=2)
        atexit.register(self.destroy)

    # ---- running chorusctl ----
    def ctl(self, *args, check=True, timeout=120):
        cmd = [CHORUSCTL, "--dir", self.dir] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s -> %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def ctl_json(self, *args):
        return json.loads(self.ctl("--json", *args).stdout)

    def ctl_jsonl(self, *args):
        out = self.ctl("--json", *args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    # ---- lifecycle ----
    def up(self):
        self.ctl("local", "up", "--config", self.conf_path, "--bin", CHORUSD, timeout=60)

    def down(self):
        self.ctl("local", "down", check=False, timeout=60)

    def node_ids(self):
        return [n["id"] for n in self.conf["nodes"]]

    def pid(self, node):
        try:
            with open(os.path.join(self.dir, "node-%d.pid" % node)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill9(self, node):
        self.ctl("local", "stop", node, "--kill")

    def start(self, node):
        self.ctl("local", "start", node, "--bin", CHORUSD)

    def log(self, node):
        with open(os.path.join(self.dir, "node-%d.log" % node)) as f:
            return f.read()

    def destroy(self):
        for node in self.node_ids():
            pid = self.pid(node)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if os.environ.get("CHORUS_KEEP_TEST_DIRS"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- cluster state ----
    def status(self):
        """`status --json` (exit 1 = a node down or a shard without leader)."""
        p = self.ctl("--json", "status", check=False)
        if p.returncode not in (0, 1):
            raise AssertionError("status -> %d: %s" % (p.returncode, p.stderr))
        return json.loads(p.stdout)

    def leader_of(self, shard):
        for s in self.status()["shards"]:
            if s["id"] == shard:
                return s["leader"]
        return None

    def wait(self, what, predicate, timeout=60, interval=0.2):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                last = predicate()
                if last:
                    return last
            except AssertionError as e:
                last = e
            time.sleep(interval)
        raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))

    def wait_all_leaders(self, timeout=60):
        def ok():
            st = self.status()
            return all(s["leader"] is not None for s in st["shards"]) and st
        return self.wait("a leader for every shard", ok, timeout)

    def wait_converged(self, timeout=60):
        """Every replica of every shard up and applied up to the same index."""
        def ok():
            st = self.status()
            for s in st["shards"]:
                reps = s["replicas"]
                if s["leader"] is None or len(reps) != len(s["placement"]):
                    return False
                applied = {r["applied_index"] for r in reps}
                commits = {r["commit_index"] for r in reps}
                if len(applied) != 1 or len(commits) != 1:
                    return False
            return st
        return self.wait("replicas to converge", ok, timeout)


def print_node_logs(lines=20):
    """The end of every node's log, so that a failure in CI can be diagnosed."""
    for c in CLUSTERS:
        for node in c.node_ids():
            path = os.path.join(c.dir, "node-%d.log" % node)
            if not os.path.exists(path):
                continue
            with open(path, errors="replace") as f:
                tail = f.readlines()[-lines:]
            print("---- %s node %d (last %d lines) ----" % (c.conf["name"], node, len(tail)))
            sys.stdout.write("".join(tail))


def run_tests(*tests):
    """Runs test functions; prints one line each and the closing summary."""
    passed = failed = 0
    for t in tests:
        start = time.time()
        try:
            t()
            passed += 1
            print("ok   %s (%.1fs)" % (t.__name__, time.time() - start), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
            print_node_logs()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
