"""Nemeses: the faults of a run, and the schedule that starts and stops them.

`--nemesis` names one or more (comma-separated) of:

    none        no faults
    partition   network partitions between node namespaces (client traffic is
                never cut); shapes: one (a random node isolated), halves (a
                random minority of 2 vs a majority of 3), majorities-ring (each
                node sees only its two ring neighbours: every node sees a
                majority, no two the same one), bridge (two halves joined by
                one node that sees both), leader (the leader of a random shard
                isolated)
    kill        kill -9 of one random node, a random minority (2 nodes), or the
                leader of a random shard; stop restarts them on their data
    pause       SIGSTOP of a random node or of a shard leader; stop is SIGCONT
    clock       libfaketime offsets: bump (1-2 random nodes jump by ±0.2-300 s)
                or strobe (one node's clock flips between two offsets every
                10-200 ms); stop resets every offset to 0
    membership  `chorusctl shard move` of a random shard's replica (its leader
                half of the time) to a node that holds none, while the load
                runs; a third of the moves are interrupted (SIGINT) after
                0-1.5 s, which aborts them when they have not removed the old
                replica yet; stop waits for the move to end
    all         partition,kill,pause,clock,membership

Not supported: `lost-writes` (see docs/jepsen.md, "Limitations").

The schedule: every `interval` seconds with no fault, one fault is started
(chosen at random among the named nemeses) and held `hold` seconds, then
stopped.  Each start and stop is recorded through the callback
`record(f, value)` ("start"/"stop", a human string) once the fault is in place
or healed, so a fault's window in history.jsonl covers the whole time it was
active.
"""
import json
import random
import signal
import subprocess
import threading
import time

from . import net

SUPPORTED = ("none", "partition", "kill", "pause", "clock", "membership")
UNSUPPORTED = {
    "lost-writes": "lost un-fsynced writes are not feasible on this machine "
                   "(no device-mapper, no lazyfs; see docs/jepsen.md, Limitations)",
}


def parse(spec):
    """'partition,kill' -> ['partition', 'kill']; raises ValueError."""
    names = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if part == "all":
            names += ["partition", "kill", "pause", "clock", "membership"]
        elif part in UNSUPPORTED:
            raise ValueError("--nemesis %s: %s" % (part, UNSUPPORTED[part]))
        elif part not in SUPPORTED:
            raise ValueError("--nemesis %s: unknown (one of %s, all)"
                             % (part, ", ".join(SUPPORTED)))
        elif part not in names:
            names.append(part)
    if len(names) > 1 and "none" in names:
        names.remove("none")
    return names or ["none"]


class Fault:
    """One nemesis kind.  start() installs a fault and returns its description
    (or None when it could not); stop() removes it and returns a description."""
    name = "?"

    def __init__(self, db, rng):
        self.db = db
        self.rng = rng

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def _random_leader(self):
        """(shard, node) of a random shard's current leader, or (None, None)."""
        leaders = {s: l for s, l in self.db.leaders().items() if l is not None}
        if not leaders:
            return None, None
        shard = self.rng.choice(sorted(leaders))
        return shard, leaders[shard]


class Partition(Fault):
    name = "partition"
    SHAPES = ("one", "halves", "majorities-ring", "bridge", "leader")

    def __init__(self, db, rng, shapes=None):
        super().__init__(db, rng)
        self.shapes = list(shapes or self.SHAPES)

    def start(self):
        ids = self.db.ids()
        shape = self.rng.choice(self.shapes)
        extra = ""
        if shape == "leader":
            shard, leader = self._random_leader()
            if leader is None:
                shape = "one"
            else:
                extra = " shard %d leader n%d" % (shard, leader)
                grudge = net.grudge_from_groups([[leader],
                                                 [n for n in ids if n != leader]])
        if shape == "one":
            n = self.rng.choice(ids)
            grudge = net.grudge_from_groups([[n], [m for m in ids if m != n]])
        elif shape == "halves":
            order = ids[:]
            self.rng.shuffle(order)
            k = len(order) // 2
            grudge = net.grudge_from_groups([order[:k], order[k:]])
        elif shape == "majorities-ring":
            order = ids[:]
            self.rng.shuffle(order)
            L = len(order)
            grudge = {}
            for i, n in enumerate(order):
                near = {order[(i - 1) % L], order[(i + 1) % L], n}
                grudge[n] = {m for m in ids if m not in near}
        elif shape == "bridge":
            order = ids[:]
            self.rng.shuffle(order)
            k = len(order) // 2
            a, b = order[:k], order[k + 1:]
            grudge = {n: set() for n in ids}
            for n in a:
                grudge[n] |= set(b)
            for n in b:
                grudge[n] |= set(a)
            extra = " via n%d" % order[k]
        sym = net.partition(grudge)
        return "partition %s%s cut %s" % (shape, extra, net.describe_grudge(sym))

    def stop(self):
        net.heal()
        return "partition healed"


class Kill(Fault):
    name = "kill"
    MODES = ("one", "minority", "leader")

    def __init__(self, db, rng):
        super().__init__(db, rng)
        self.killed = []

    def start(self):
        ids = [n for n in self.db.ids() if self.db.nodes[n].running()]
        mode = self.rng.choice(self.MODES)
        victims = []
        extra = ""
        if mode == "leader":
            shard, leader = self._random_leader()
            if leader is None:
                mode = "one"
            else:
                victims = [leader]
                extra = " shard %d leader" % shard
        if mode == "one":
            victims = [self.rng.choice(ids)]
        elif mode == "minority":
            victims = self.rng.sample(ids, (len(self.db.ids()) - 1) // 2)
        victims = sorted(victims)
        for n in victims:
            self.db.nodes[n].kill()
        self.killed = victims
        return "kill %s%s %s" % (mode, extra, " ".join("n%d" % n for n in victims))

    def stop(self):
        victims, self.killed = self.killed, []
        for n in victims:
            self.db.nodes[n].start()
        note = ""
        try:
            self.db.wait_healthy(victims, timeout=8)
        except RuntimeError as e:
            note = " (%s)" % e
        return "restart %s%s" % (" ".join("n%d" % n for n in victims), note)


class Pause(Fault):
    name = "pause"
    MODES = ("one", "leader")

    def __init__(self, db, rng):
        super().__init__(db, rng)
        self.paused = []

    def start(self):
        mode = self.rng.choice(self.MODES)
        extra = ""
        victim = None
        if mode == "leader":
            shard, victim = self._random_leader()
            if victim is None:
                mode = "one"
            else:
                extra = " shard %d leader" % shard
        if victim is None:
            victim = self.rng.choice([n for n in self.db.ids()
                                      if self.db.nodes[n].running()])
        self.db.nodes[victim].pause()
        self.paused = [victim]
        return "pause %s%s n%d" % (mode, extra, victim)

    def stop(self):
        victims, self.paused = self.paused, []
        for n in victims:
            self.db.nodes[n].resume()
        return "resume %s" % " ".join("n%d" % n for n in victims)


class Clock(Fault):
    name = "clock"
    BUMPS = (0.2, 1, 5, 30, 120, 300)

    def __init__(self, db, rng):
        super().__init__(db, rng)
        self.strober = None
        self.halt = threading.Event()

    def start(self):
        if self.db.faketime is None:
            raise RuntimeError("clock nemesis without libfaketime")
        ids = self.db.ids()
        if self.rng.random() < 0.6:
            victims = sorted(self.rng.sample(ids, self.rng.choice((1, 2))))
            parts = []
            for n in victims:
                off = self.rng.choice(self.BUMPS) * self.rng.choice((-1, 1))
                off = round(off * self.rng.uniform(0.5, 1.0), 3)
                self.db.nodes[n].set_offset(off)
                parts.append("n%d %+.3fs" % (n, off))
            return "clock bump " + ", ".join(parts)
        n = self.rng.choice(ids)
        delta = round(self.rng.choice(self.BUMPS) * self.rng.choice((-1, 1)), 3)
        period = self.rng.choice((0.01, 0.05, 0.2))
        node = self.db.nodes[n]
        self.halt.clear()

        def strobe():
            flip = False
            while not self.halt.wait(period):
                flip = not flip
                node.set_offset(delta if flip else 0)

        self.strober = threading.Thread(target=strobe, name="clock-strobe", daemon=True)
        self.strober.start()
        return "clock strobe n%d 0<->%+.3fs every %dms" % (n, delta, period * 1000)

    def stop(self):
        self.halt.set()
        if self.strober is not None:
            self.strober.join(5)
            self.strober = None
        for node in self.db.nodes.values():
            node.set_offset(0)
        return "clock reset"


class Membership(Fault):
    """Moves one shard replica with chorusctl (add as standby, catch up,
    promote, transfer leadership if needed, remove, commit the map): the
    protocol of docs/architecture.md, "Placement and membership"."""
    name = "membership"
    MOVE_TIMEOUT = 90

    def __init__(self, db, rng):
        super().__init__(db, rng)
        self.proc = None
        self.desc = None
        self.interrupt_at = None

    def start(self):
        st = self.db.status()
        if not st:
            raise RuntimeError("no status: cannot pick a move")
        shards = [s for s in st["shards"] if s.get("leader") is not None
                  and not s.get("moving")]
        if not shards:
            raise RuntimeError("no shard with a leader to move")
        sh = self.rng.choice(shards)
        place = sh["placement"]
        outside = [n for n in self.db.ids() if n not in place]
        if not outside:
            raise RuntimeError("every node holds shard %d" % sh["id"])
        src = sh["leader"] if self.rng.random() < 0.5 else self.rng.choice(place)
        dst = self.rng.choice(outside)
        self.proc = subprocess.Popen(
            [self.db.chorusctl, "--config", self.db.conf_path, "--json", "shard", "move",
             str(sh["id"]), "--from", str(src), "--to", str(dst)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.interrupt_at = None
        mode = "move"
        if self.rng.random() < 1 / 3:
            self.interrupt_at = time.monotonic() + self.rng.uniform(0, 1.5)
            mode = "move+interrupt"
            threading.Thread(target=self._interrupt, args=(self.proc, self.interrupt_at),
                             daemon=True).start()
        self.desc = "%s shard %d n%d->n%d%s" % (
            mode, sh["id"], src, dst, " (leader)" if src == sh["leader"] else "")
        self.move = (sh["id"], src, dst)
        return self.desc

    @staticmethod
    def _interrupt(proc, when):
        time.sleep(max(0.0, when - time.monotonic()))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return "no move"
        try:
            out, err = proc.communicate(timeout=self.MOVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return "%s: chorusctl still running after %d s, killed" % (
                self.desc, self.MOVE_TIMEOUT)
        res = None
        for line in out.splitlines():
            try:
                res = json.loads(line)
            except ValueError:
                pass
        if res and res.get("ok"):
            return "%s done in %.0f ms" % (self.desc, res.get("total_ms", 0))
        if res and res.get("aborted"):
            return "%s aborted: %s" % (self.desc, res.get("message", ""))
        why = (res or {}).get("message") or err.strip()[-200:]
        return "%s failed (rc %d): %s; %s" % (self.desc, proc.returncode, why,
                                              self._settle())

    def _settle(self):
        """A move that neither finished nor aborted (a fault in the way) is left
        half done in the map: abort it, or, once the old replica is out of the
        group (abort refuses), run it again to finish it."""
        shard, src, dst = self.move
        for args in (("shard", "move", shard, "--abort"),
                     ("shard", "move", shard, "--from", src, "--to", dst)):
            try:
                rc, _, err = self.db.ctl_lines(*args, timeout=self.MOVE_TIMEOUT)
            except subprocess.TimeoutExpired:
                continue
            if rc == 0:
                return "settled with `%s`" % " ".join(str(a) for a in args)
        return "left unsettled: %s" % err[-200:]


FAULTS = {"partition": Partition, "kill": Kill, "pause": Pause, "clock": Clock,
          "membership": Membership}


class Schedule:
    """Runs the faults: `interval` s quiet, one fault for `hold` s, and again."""

    def __init__(self, db, names, record, rng=None, interval=5.0, hold=None, log=None):
        self.db = db
        self.rng = rng or random.Random()
        self.faults = [FAULTS[n](db, self.rng) for n in names if n in FAULTS]
        self.record = record
        self.interval = interval
        self.hold = interval if hold is None else hold
        self.log = log or (lambda msg: None)
        self.halt = threading.Event()
        self.thread = None
        self.current = None           # description of the fault in place
        self.active = None            # the Fault object whose fault is in place
        self.count = 0
        self.errors = []
        self.lock = threading.Lock()

    def start(self):
        if not self.faults:
            return
        self.thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.halt.wait(self.interval):
            fault = self.rng.choice(self.faults)
            with self.lock:
                if self.halt.is_set():
                    break
                try:
                    desc = fault.start()
                except Exception as e:          # a harness problem: record it, go on
                    self.errors.append("%s start: %r" % (fault.name, e))
                    self.log("nemesis %s start failed: %r" % (fault.name, e))
                    try:
                        fault.stop()
                    except Exception:
                        pass
                    continue
                self.active, self.current = fault, desc
                self.count += 1
                self.record("start", desc)
            if self.halt.wait(self.hold):
                break
            self._stop_active()

    def _stop_active(self):
        with self.lock:
            fault, self.active = self.active, None
            if fault is None:
                return
            try:
                desc = fault.stop()
            except Exception as e:
                self.errors.append("%s stop: %r" % (fault.name, e))
                desc = "%s stop failed: %r" % (fault.name, e)
            self.current = None
            self.record("stop", desc)

    def finish(self):
        """Stops scheduling, stops the fault in place (recorded), then makes sure
        everything is healed: network, paused and killed nodes, clocks."""
        self.halt.set()
        if self.thread is not None:
            self.thread.join(30)
        self._stop_active()
        heal_everything(self.db)


def heal_everything(db):
    """Idempotent: heal the network, SIGCONT, restart dead nodes, reset clocks."""
    problems = []
    try:
        net.heal()
    except Exception as e:
        problems.append("heal: %r" % e)
    db.check_crashes()
    for node in db.nodes.values():
        try:
            node.set_offset(0)
            node.resume()
            if not node.running():
                node.start()
        except Exception as e:
            problems.append("n%d: %r" % (node.id, e))
    return problems
