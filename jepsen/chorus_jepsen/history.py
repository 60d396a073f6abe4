"""Writing and reading the suite's two logs (see /tmp/jepsen-interface.md):

  history.jsonl  client and nemesis operations, one JSON object per line, in the
                 order they were written (completion order), with "index" 0,1,2,...
                 and "time" (integer ns since the run's start, time.monotonic_ns).
  fanout.jsonl   the subscribers' records (connect/event/sync-start/sync-done/
                 disconnect), with "time" on the same clock.

Every line is flushed as it is written, so a crash of the runner keeps the history
up to the last completed write.  Python 3 standard library only.
"""
import json
import os
import threading
import time

# Keys written first, in this order (the rest follow in the record's own order):
# histories stay readable with `less` and diffable.
_OP_KEYS = ("index", "time", "type", "process", "f", "key", "value", "node", "error",
            "final")
_FANOUT_KEYS = ("time", "subscriber", "conn", "kind", "key", "conv", "seq", "value",
                "node")


def _ordered(record, keys):
    out = {}
    for k in keys:
        if k in record:
            out[k] = record[k]
    for k, v in record.items():
        if k not in out:
            out[k] = v
    return out


class _JsonlWriter:
    """A thread-safe, line-flushed JSON-lines file (path None: in memory only)."""

    def __init__(self, path, t0_ns=None, keep=False):
        self.path = path
        self.t0_ns = time.monotonic_ns() if t0_ns is None else int(t0_ns)
        self._lock = threading.Lock()
        self._f = None
        if path is not None:
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            self._f = open(path, "a", encoding="utf-8", buffering=1)
        self.records = [] if keep or path is None else None
        self.closed = False

    def now(self):
        """Nanoseconds since this writer's origin (t0_ns)."""
        return time.monotonic_ns() - self.t0_ns

    def _write(self, rec):
        # Called with the lock held.
        if self.closed:
            raise ValueError("%s: write after close" % (self.path or "history"))
        line = json.dumps(rec, separators=(",", ":"))
        if self._f is not None:
            self._f.write(line + "\n")
            self._f.flush()
        if self.records is not None:
            self.records.append(rec)

    def close(self):
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._f is not None:
                try:
                    self._f.flush()
                    os.fsync(self._f.fileno())
                except OSError:
                    pass
                self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HistoryWriter(_JsonlWriter):
    """history.jsonl.  `op(record)` assigns "index" (write order) and "time" (unless
    the record has one), writes one line and returns the record as written.

    HistoryWriter(path, t0_ns=None, keep=False): path None keeps the records in
    memory only (`.records`); keep=True keeps them in memory as well as on disk.
    t0_ns: the run's origin on the time.monotonic_ns clock (default: now), so that
    other logs (FanoutLog) can share it.
    """

    def __init__(self, path, t0_ns=None, keep=False):
        super().__init__(path, t0_ns, keep)
        self._next_index = 0

    def op(self, record):
        with self._lock:
            rec = dict(record)
            rec["index"] = self._next_index
            if rec.get("time") is None:
                rec["time"] = self.now()
            rec = _ordered(rec, _OP_KEYS)
            self._write(rec)
            self._next_index += 1
            return rec

    def nemesis(self, f, value, **extra):
        """A nemesis op: {"type":"info","process":"nemesis","f":f,"value":value}."""
        rec = {"type": "info", "process": "nemesis", "f": f, "value": value}
        rec.update(extra)
        return self.op(rec)

    @property
    def count(self):
        return self._next_index


class FanoutLog(_JsonlWriter):
    """fanout.jsonl.  `record(dict)` adds "time" (unless given) and writes a line.
    FanoutLog(path, t0_ns=None, keep=False): pass the history's t0_ns
    (history.t0_ns) so both logs share one clock."""

    def record(self, record):
        with self._lock:
            rec = dict(record)
            if rec.get("time") is None:
                rec["time"] = self.now()
            rec = _ordered(rec, _FANOUT_KEYS)
            self._write(rec)
            return rec


def _read_jsonl(path, strict=False):
    """The records of a JSON-lines file.  A torn last line (the writer crashed in
    the middle of it) is skipped unless strict; a bad line elsewhere raises."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1 and not strict:
                break
            raise ValueError("%s:%d: not JSON: %.80r" % (path, i + 1, line))
    return out


def read_history(path, strict=False):
    """history.jsonl -> list of op dicts (in file order)."""
    return _read_jsonl(path, strict)


def read_fanout(path, strict=False):
    """fanout.jsonl -> list of record dicts (in file order)."""
    return _read_jsonl(path, strict)


def pair_ops(ops):
    """Matches client invocations with their completions, per process.
    Returns (pairs, problems): pairs = [(invoke, completion or None)] in invoke
    order; problems = human strings (a completion without an invoke, a process
    invoking twice, a process id reused after an info)."""
    pending = {}
    pairs = []
    problems = []
    crashed = set()
    for op in ops:
        p = op.get("process")
        if p == "nemesis":
            continue
        t = op.get("type")
        if t == "invoke":
            if p in crashed:
                problems.append("process %r reused after an info (index %s)"
                                % (p, op.get("index")))
            if p in pending:
                problems.append("process %r invoked again while index %s is open "
                                "(index %s)" % (p, pending[p][0].get("index"), op.get("index")))
            pair = [op, None]
            pending[p] = pair
            pairs.append(pair)
        elif t in ("ok", "fail", "info"):
            pair = pending.pop(p, None)
            if pair is None:
                problems.append("completion without invoke: index %s" % op.get("index"))
                continue
            inv = pair[0]
            if inv.get("f") != op.get("f") or inv.get("key") != op.get("key"):
                problems.append("completion index %s does not match invoke index %s"
                                % (op.get("index"), inv.get("index")))
            if op.get("f") == "append" and inv.get("value") != op.get("value"):
                problems.append("append completion index %s has another value than its "
                                "invoke" % op.get("index"))
            pair[1] = op
            if t == "info":
                crashed.add(p)
    return [tuple(p) for p in pairs], problems
