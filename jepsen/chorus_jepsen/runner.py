"""`jepsen/run`: one Jepsen-style run of chorus, or `jepsen/run cleanup`.

Two processes:

  outer (root namespace)  checks the build, makes the run directory, creates
                          the topology (net.create), runs the inner process in
                          the client namespace and waits for it; then, whatever
                          happened, kills every chorusd it knows of (RUN/pids and
                          `ip netns pids`) and deletes the namespaces and the
                          bridge.  It forwards SIGINT/SIGTERM/SIGHUP to the inner
                          process and kills it if it does not end in time.
  inner (chj-client)      `ip netns exec chj-client python3 jepsen/run --_inner
                          RUN ...`: starts the nodes (each in its own namespace),
                          runs workload + nemesis, heals, does the final reads,
                          stops the nodes and runs the checkers.  Being inside
                          chj-client, its sockets, http.client and chorusctl reach
                          10.77.0.11-15 directly, with the client's source address.

The state file /run/chorus-jepsen/current names the active run (its directory
and the outer PID), so `jepsen/run cleanup` finds what a crashed harness left.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import db as dbmod
from . import nemesis as nemmod
from . import net

JEPSEN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(JEPSEN_DIR)
RUN_SCRIPT = os.path.join(JEPSEN_DIR, "run")
STATE_DIR = "/run/chorus-jepsen"
STATE_FILE = os.path.join(STATE_DIR, "current")
CONF_SOURCE = os.path.join(REPO, "cluster-conf", "netns-5.json")

EXIT_VALID, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


class HarnessError(Exception):
    pass


class Interrupted(BaseException):
    pass


def log(msg):
    sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "")
    sys.stderr.write("jepsen: %s\n" % msg)
    sys.stderr.flush()


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="jepsen/run",
        description="Jepsen-style consistency run of chorus on 5 network namespaces. "
                    "`jepsen/run cleanup` removes what a crashed run left behind.")
    p.add_argument("--nemesis", default="partition",
                   help="comma-separated: none, partition, kill, pause, clock, all "
                        "(default partition)")
    p.add_argument("--time", type=float, default=60, help="workload seconds (default 60)")
    p.add_argument("--rate", type=float, default=50,
                   help="client operations per second, all workers together (default 50)")
    p.add_argument("--concurrency", type=int, default=10, help="client workers (default 10)")
    p.add_argument("--keys", type=int, default=8, help="keys (conversations), default 8")
    p.add_argument("--subscribers", type=int, default=3,
                   help="fanout subscribers (default 3)")
    p.add_argument("--interval", type=float, default=5,
                   help="seconds without a fault between faults (default 5)")
    p.add_argument("--hold", type=float, default=None,
                   help="seconds each fault is held (default: --interval)")
    p.add_argument("--settle", type=float, default=10,
                   help="after healing, wait at most this long for every replica to "
                        "converge before the final reads (default 10)")
    p.add_argument("--final-timeout", type=float, default=20,
                   help="time allowed for the final reads (default 20)")
    p.add_argument("--out", default=None,
                   help="run directory (default jepsen/store/<time>-<nemesis>)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--build", default=None,
                   help="directory with chorusd and chorusctl (default build/)")
    p.add_argument("--bug", default=None,
                   help="run every chorusd with CHORUS_BUG=NAME (needs a build "
                        "configured with -DCHORUS_BUGS=ON): the run should be INVALID")
    p.add_argument("--keep-data", action="store_true",
                   help="keep the nodes' data dirs of a valid run (always kept when "
                        "invalid)")
    p.add_argument("--_inner", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time <= 0 or args.rate <= 0 or args.concurrency < 1 or args.keys < 1 \
            or args.subscribers < 0 or args.interval <= 0:
        p.error("--time, --rate, --interval must be > 0, --concurrency and --keys >= 1, "
                "--subscribers >= 0")
    try:
        args.nemeses = nemmod.parse(args.nemesis)
    except ValueError as e:
        p.error(str(e))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


def resolve_build(given):
    cands = [given] if given else [os.path.join(REPO, "build")]
    if given and not os.path.isabs(given):
        cands.append(os.path.join(REPO, given))
    for c in cands:
        if all(os.access(os.path.join(c, b), os.X_OK) for b in ("chorusd", "chorusctl")):
            return os.path.abspath(c)
    raise HarnessError("no executable chorusd and chorusctl in %s: build them first "
                       "(make build, or cmake --build DIR --target chorusd chorusctl) "
                       "or pass --build DIR" % " or ".join(cands))


# ---- state file and cleanup -----------------------------------------------------

def _read_state():
    try:
        with open(STATE_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_state(st):
    os.makedirs(STATE_DIR, exist_ok=True)
    tmp = STATE_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    os.replace(tmp, STATE_FILE)


def _clear_state():
    try:
        os.unlink(STATE_FILE)
    except OSError:
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def _kill9(pid):
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
        return True
    except OSError:
        return False


def kill_everything(run_dir, exclude=()):
    """SIGKILL the chorusd PIDs recorded in RUN/pids, then every process still in
    one of our namespaces.  Returns the PIDs signalled."""
    killed = []
    if run_dir:
        try:
            with open(os.path.join(run_dir, "pids")) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        pid = int(parts[1])
                        if _comm(pid) == "chorusd" and _kill9(pid):
                            killed.append(pid)
        except OSError:
            pass
    have = net.existing_namespaces()
    for _ in range(3):
        left = []
        for ns in net.all_namespaces():
            if ns in have:
                left += [p for p in net.ns_pids(ns) if p not in exclude and p != os.getpid()]
        if not left:
            break
        for pid in left:
            if _kill9(pid):
                killed.append(pid)
        time.sleep(0.3)
    return killed


def teardown(run_dir, exclude=()):
    killed = kill_everything(run_dir, exclude)
    net.destroy()
    _clear_state()
    return killed


def cleanup():
    st = _read_state()
    run_dir = st.get("run_dir") if st else None
    if st and st.get("pid") and st["pid"] != os.getpid() and _alive(st["pid"]):
        log("run %s (pid %d) is still active: sending it SIGTERM" % (run_dir, st["pid"]))
        try:
            os.kill(st["pid"], signal.SIGTERM)
        except OSError:
            pass
        for _ in range(300):
            if not _alive(st["pid"]):
                break
            time.sleep(0.1)
        if _alive(st["pid"]):
            _kill9(st["pid"])
    killed = teardown(run_dir)
    left = net.existing_namespaces() & set(net.all_namespaces())
    log("cleanup: killed %d processes%s; namespaces left: %s"
        % (len(killed), " (run %s)" % run_dir if run_dir else "",
           ", ".join(sorted(left)) or "none"))
    return EXIT_ERROR if left else EXIT_VALID


# ---- outer process ----------------------------------------------------------------

def default_run_dir(nemeses, bug=None):
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = "%s-%s%s" % (stamp, "+".join(nemeses), "-bug-" + bug if bug else "")
    return os.path.join(JEPSEN_DIR, "store", name)


def outer(argv, args):
    if os.geteuid() != 0:
        log("must run as root (network namespaces, nft)")
        return EXIT_ERROR
    try:
        build = resolve_build(args.build)
    except HarnessError as e:
        log(str(e))
        return EXIT_ERROR
    st = _read_state()
    if st and st.get("pid") and _alive(st["pid"]):
        log("another run is active (pid %d, %s): wait for it or `jepsen/run cleanup`"
            % (st["pid"], st.get("run_dir")))
        return EXIT_ERROR
    if st or net.existing_namespaces() & set(net.all_namespaces()):
        log("removing what an earlier run left behind")
        teardown(st.get("run_dir") if st else None)
    run_dir = os.path.abspath(args.out or default_run_dir(args.nemeses, args.bug))
    if os.path.exists(os.path.join(run_dir, "history.jsonl")):
        log("%s already holds a run; choose another --out" % run_dir)
        return EXIT_ERROR
    os.makedirs(run_dir, exist_ok=True)
    _write_state({"run_dir": run_dir, "pid": os.getpid(), "started": time.time()})
    t_start = time.monotonic()
    child = None
    signals = []

    def on_signal(signum, frame):
        signals.append(signum)
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signal.SIGKILL if len(signals) >= 3 else signal.SIGTERM)
            except OSError:
                pass

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM,
                                                      signal.SIGHUP)}
    rc = EXIT_ERROR
    try:
        t = time.monotonic()
        net.create()
        log("topology up in %.1fs (chj-n1..5, chj-client on %s); run dir %s"
            % (time.monotonic() - t, net.BRIDGE, run_dir))
        inner_argv = [a for a in argv]
        child = subprocess.Popen(
            net.in_ns(net.CLIENT_NS, [sys.executable, RUN_SCRIPT] + inner_argv +
                      ["--_inner", run_dir, "--build", build, "--seed", str(args.seed)]))
        _write_state({"run_dir": run_dir, "pid": os.getpid(), "inner": child.pid,
                      "started": time.time()})
        deadline = None
        while True:
            try:
                rc = child.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                pass
            if signals and deadline is None:
                deadline = time.monotonic() + 60
            if deadline is not None and time.monotonic() > deadline:
                log("inner process did not stop within 60s of the signal: killing it")
                child.kill()
        if rc < 0:
            log("inner process died of signal %d" % -rc)
            rc = EXIT_ERROR
    except Exception as e:
        log("harness error: %r" % e)
        rc = EXIT_ERROR
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        t = time.monotonic()
        killed = teardown(run_dir)
        for s, h in old.items():
            signal.signal(s, h)
        log("teardown in %.1fs (%d leftover processes killed); wall clock %.1fs"
            % (time.monotonic() - t, len(killed), time.monotonic() - t_start))
    if signals and rc == EXIT_VALID:
        rc = EXIT_ERROR
    return rc


# ---- inner process ----------------------------------------------------------------

class Progress:
    """A live line on stderr: elapsed, ops ok/fail/info, the fault in place."""

    def __init__(self, history, schedule, total, phase):
        self.history = history
        self.schedule = schedule
        self.total = total
        self.phase = phase
        self.t0 = time.monotonic()
        self.halt = threading.Event()
        self.tty = sys.stderr.isatty()
        self.thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def line(self):
        c = self.history.counts
        fault = self.schedule.current if self.schedule else None
        return ("[%5.1fs/%ds %s] ok %d fail %d info %d | %s"
                % (time.monotonic() - self.t0, self.total, self.phase(), c["ok"], c["fail"],
                   c["info"], fault or "no fault"))

    def _run(self):
        period = 0.5 if self.tty else 10
        while not self.halt.wait(period):
            if self.tty:
                sys.stderr.write("\r\033[K" + self.line()[:200])
            else:
                sys.stderr.write("jepsen: " + self.line() + "\n")
            sys.stderr.flush()

    def start(self):
        self.thread.start()

    def stop(self):
        self.halt.set()
        self.thread.join(2)
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _make_history(run_dir, t0):
    from .history import HistoryWriter, FanoutLog

    class CountingHistory(HistoryWriter):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}

        def op(self, record):
            rec = super().op(record)
            if rec.get("process") != "nemesis" and rec.get("type") in self.counts:
                self.counts[rec["type"]] += 1
            return rec

    hist = CountingHistory(os.path.join(run_dir, "history.jsonl"), t0_ns=t0, keep=True)
    fan = FanoutLog(os.path.join(run_dir, "fanout.jsonl"), t0_ns=t0, keep=True)
    return hist, fan


def _final_map(final):
    """final_reads' answer -> {key: [values]} for check_fanout."""
    out = {}
    if isinstance(final, dict):
        for k, v in final.items():
            if isinstance(v, list):
                out[int(k)] = v
            elif isinstance(v, dict) and isinstance(v.get("value"), list):
                out[int(k)] = v["value"]
    elif isinstance(final, list):
        for op in final:
            if isinstance(op, dict) and op.get("type") == "ok" and \
                    isinstance(op.get("value"), list):
                out[int(op["key"])] = op["value"]
    return out


def _finals_from_history(records):
    out = {}
    for r in records:
        if r.get("final") and r.get("type") == "ok" and r.get("f") == "read":
            out[int(r["key"])] = r["value"]
    return out


def inner(args):
    run_dir = args._inner
    t0 = time.monotonic_ns()
    t_start = time.monotonic()
    interrupted = []

    def on_signal(signum, frame):
        if interrupted:
            return                      # already unwinding
        interrupted.append(signum)
        raise Interrupted("signal %d" % signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    import logging
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fh = logging.FileHandler(os.path.join(run_dir, "jepsen.log"))
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.WARNING)
    sh.setFormatter(logging.Formatter("jepsen: %(name)s: %(message)s"))
    root.addHandler(sh)

    from .workload import Workload
    from . import checker

    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump({k: v for k, v in vars(args).items() if k != "_inner"}, f, indent=2)
        f.write("\n")

    db = dbmod.DB(run_dir, args.build, CONF_SOURCE, clock="clock" in args.nemeses,
                  t0=t0 / 1e9, bug=args.bug)
    history, fanout = _make_history(run_dir, t0)
    rng = random.Random(args.seed)
    schedule = None
    workload = None
    progress = None
    phase = ["setup"]
    timings = {}
    result = {"nemesis": args.nemeses, "seed": args.seed, "run_dir": run_dir,
              "bug": args.bug}
    verdict = None
    try:
        t = time.monotonic()
        db.start_all()
        db.wait_healthy(timeout=30)
        db.check_bug_active()
        db.wait_leaders(timeout=30)
        timings["cluster-up"] = round(time.monotonic() - t, 2)
        log("5 nodes up, every shard has a leader (%.1fs); nemesis %s, seed %d"
            % (timings["cluster-up"], ",".join(args.nemeses), args.seed))

        t = time.monotonic()
        workload = Workload(gateways=db.gateways(), keys=args.keys,
                            concurrency=args.concurrency, rate=args.rate,
                            subscribers=args.subscribers, history=history,
                            fanout_log=fanout, seed=args.seed)
        workload.setup()
        timings["workload-setup"] = round(time.monotonic() - t, 2)

        schedule = nemmod.Schedule(db, args.nemeses, record=history.nemesis, rng=rng,
                                   interval=args.interval, hold=args.hold, log=log)
        progress = Progress(history, schedule, int(args.time), lambda: phase[0])
        phase[0] = "run"
        t = time.monotonic()
        workload.start()
        schedule.start()
        progress.start()
        end = time.monotonic() + args.time
        while time.monotonic() < end:
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            crashed = db.check_crashes()
            for n, rc in crashed.items():
                log("node %d exited on its own (rc %s): see %s"
                    % (n, rc, db.nodes[n].log_path))
        phase[0] = "heal"
        schedule.finish()
        problems = nemmod.heal_everything(db)
        if problems:
            log("heal problems: %s" % "; ".join(problems))
        phase[0] = "drain"
        # workers stop now; the subscribers keep running through the settle and the
        # final reads, so they can catch up with everything that was committed
        workload.stop(subscribers=False)
        timings["workload"] = round(time.monotonic() - t, 2)

        phase[0] = "settle"
        t = time.monotonic()
        db.wait_healthy(timeout=30)
        converged = db.wait_converged(timeout=args.settle)
        timings["settle"] = round(time.monotonic() - t, 2)
        if not converged:
            log("replicas had not converged after %.0fs; final reads anyway" % args.settle)

        phase[0] = "final reads"
        t = time.monotonic()
        final = workload.final_reads(args.final_timeout)
        timings["final-reads"] = round(time.monotonic() - t, 2)
        progress.stop()
        progress = None

        phase[0] = "fanout drain"
        t = time.monotonic()
        workload.stop_subscribers()
        timings["fanout-drain"] = round(time.monotonic() - t, 2)

        # server-side checks while the nodes still run (docs/jepsen.md)
        phase[0] = "replica checks"
        t = time.monotonic()
        db.wait_converged(timeout=5)
        replicas = db.check_replicas()
        convs = dict(getattr(workload, "key_conv", {}) or {})
        stamps = db.check_timestamps(convs) if convs else {"valid": None,
                                                            "error": "no key_conv"}
        timings["replica-checks"] = round(time.monotonic() - t, 2)
        db.check_crashes()
        rcs = db.stop_all()
        unclean = {n: rc for n, rc in rcs.items() if rc not in (0, None)}
        history.close()
        fanout.close()

        t = time.monotonic()
        ops = history.records
        finals = _final_map(final) or _finals_from_history(ops)
        append = checker.check_append(ops)
        fan = checker.check_fanout(fanout.records, finals)
        timings["check"] = round(time.monotonic() - t, 2)
        crashes = {n: node.crashes for n, node in db.nodes.items() if node.crashes}
        valid = bool(append.get("valid")) and bool(fan.get("valid")) and not crashes \
            and not unclean and replicas.get("valid") is not False \
            and stamps.get("valid") is not False
        result.update({
            "valid": valid,
            "append": append,
            "fanout": fan,
            "replicas": replicas,
            "timestamps": stamps,
            "crashes": {str(n): c for n, c in crashes.items()},
            "unclean-shutdown": {str(n): rc for n, rc in unclean.items()},
            "nemesis-faults": schedule.count,
            "nemesis-errors": schedule.errors,
            "converged-before-final-reads": converged,
            "ops": dict(history.counts),
            "timings": timings,
        })
        _write_outputs(run_dir, result, ops, fanout.records)
        verdict = valid
    except Interrupted as e:
        log("interrupted (%s): tearing down" % e)
        result.update({"valid": None, "error": "interrupted"})
    except Exception as e:
        import traceback
        traceback.print_exc()
        result.update({"valid": None, "error": repr(e)})
        log("harness error: %r" % e)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if progress is not None:
            progress.stop()
        if schedule is not None:
            schedule.halt.set()
        db.kill_all()
        if workload is not None and verdict is None:
            try:     # the nodes are gone: connections fail fast, nothing to drain
                workload.stop(timeout=2, drain_s=0)
            except Exception:
                pass
        for w in (history, fanout):
            try:
                w.close()
            except Exception:
                pass
        result.setdefault("timings", timings)["total"] = round(time.monotonic() - t_start, 2)
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump(result, f, indent=2, default=str)
            f.write("\n")
    if verdict and not args.keep_data:
        shutil.rmtree(os.path.join(run_dir, "data"), ignore_errors=True)
    _print_verdict(result)
    if verdict is None:
        return EXIT_ERROR
    return EXIT_VALID if verdict else EXIT_INVALID


def _write_outputs(run_dir, result, ops, fanout_records):
    from . import edn, plots
    edn.write_edn(ops, os.path.join(run_dir, "history.edn"))
    try:
        result["plots"] = plots.write_plots(ops, os.path.join(run_dir, "plots"),
                                            title="chorus " + "+".join(result["nemesis"]))
    except Exception as e:          # plots are a convenience: never fail the run
        result["plots-error"] = repr(e)
        log("plots failed: %r" % e)


def _print_verdict(result):
    v = result.get("valid")
    out = sys.stdout
    out.write("\n")
    if v is None:
        out.write("== chorus jepsen: HARNESS ERROR (%s); run dir %s\n"
                  % (result.get("error"), result.get("run_dir")))
        out.flush()
        return
    ops = result.get("ops", {})
    out.write("== chorus jepsen: nemesis %s%s, seed %s: %d ok, %d fail, %d info; "
              "%d faults\n" % (",".join(result["nemesis"]),
                                " (CHORUS_BUG=%s)" % result["bug"] if result.get("bug") else "",
                                result["seed"],
                                ops.get("ok", 0), ops.get("fail", 0), ops.get("info", 0),
                                result.get("nemesis-faults", 0)))
    for name in ("append", "fanout", "replicas", "timestamps"):
        r = result.get(name) or {}
        an = r.get("anomalies") or {}
        counts = (r.get("stats") or {}).get("anomaly-counts") or \
            {k: len(x) for k, x in an.items()}
        word = {True: "valid", False: "INVALID", None: "unknown"}[r.get("valid")
                                                                 if r.get("valid") in
                                                                 (True, False) else None]
        out.write("   %-10s %s%s%s\n" % (name, word,
                                        "" if not counts else "  " + ", ".join(
                                            "%s x%d" % kv for kv in sorted(counts.items())),
                                        "  (%s)" % r["error"] if r.get("error") else ""))
    if result.get("crashes"):
        out.write("   crashes: %s\n" % result["crashes"])
    if result.get("unclean-shutdown"):
        out.write("   unclean shutdown (exit codes): %s\n" % result["unclean-shutdown"])
    if result.get("nemesis-errors"):
        out.write("   nemesis errors: %s\n" % "; ".join(result["nemesis-errors"]))
    out.write("   timings: %s\n" % result.get("timings"))
    out.write("== %s  (%s/results.json)\n" % ("VALID" if v else "INVALID",
                                             result.get("run_dir")))
    out.flush()


def main(argv):
    if argv[:1] == ["cleanup"]:
        if os.geteuid() != 0:
            log("cleanup must run as root")
            return EXIT_ERROR
        return cleanup()
    args = parse_args(argv)
    if args._inner:
        return inner(args)
    return outer(argv, args)
