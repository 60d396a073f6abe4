"""Checkers of the chorus Jepsen suite (Python 3 standard library only).

check_append(ops)            the list-append workload's history (history.jsonl)
check_fanout(records, final) the subscribers' push records (fanout.jsonl)

Both return {"valid": bool, "anomalies": {kind: [example, ...]}, "stats": {...}}.
`anomalies` holds only the kinds that were found; each list is capped at
EXAMPLE_CAP examples (stats["anomaly-counts"] has the uncapped counts). An example
names the ops by their history `index` ("index" = the completion record, "invoke"
= the invoke record) so they can be looked up in history.jsonl.

The model of the append workload: each key is a list; an append adds its (unique)
value at the end; a read returns the whole list. The kinds, as implemented:

  phantom             an ok read holds a value that no append of that key ever
                      invoked (the example says if it was appended to another key).
  duplicate           an ok read holds the same value twice.
  failed-read         an ok read holds the value of an append that completed fail.
  incompatible-order  an ok read is not a prefix of the key's total order, the
                      longest ok read of the key (equivalently: there are two reads
                      of which neither is a prefix of the other).
  lost                an append that completed ok is missing from a final ok read
                      ("final": true) of its key.
  no-final-read       a key with appends or reads has no final ok read, so nothing
                      about it can be verified.
  stale-read          an ok read R2 invoked strictly after an ok read R1 completed
                      (R2.invoke.time > R1.complete.time) is shorter than R1.
  stale-after-ack     a non-final ok read invoked strictly after an append of the
                      same key completed ok lacks that value (for final reads the
                      same fact is reported as `lost`).
  real-time-order     append A completed ok strictly before append B (same key,
                      B ok or info) was invoked, both values are in the total order,
                      and B's value comes before A's.

Info appends (and invokes that never completed) may or may not have happened and
are never an anomaly; stats["info-committed"] counts those whose value is in some
ok read of their key.
"""
import bisect
import json
import sys

EXAMPLE_CAP = 20

APPEND_KINDS = ("phantom", "duplicate", "failed-read", "incompatible-order", "lost",
                "no-final-read", "stale-read", "stale-after-ack", "real-time-order")
FANOUT_KINDS = ("dup", "out-of-order", "gap", "hole", "delivered-uncommitted",
                "delivered-order", "seq-conflict", "no-final-read")


class _Anomalies:
    def __init__(self, cap=EXAMPLE_CAP):
        self.cap = cap
        self.examples = {}
        self.counts = {}

    def add(self, kind, example):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        lst = self.examples.setdefault(kind, [])
        if len(lst) < self.cap:
            lst.append(example)

    def result(self, stats):
        stats["anomaly-counts"] = dict(sorted(self.counts.items()))
        return {"valid": not self.counts,
                "anomalies": dict(sorted(self.examples.items())),
                "stats": stats}


def _trunc(values, n=16):
    """A list shortened for an example: first n-4 and last 4 elements."""
    if not isinstance(values, list) or len(values) <= n:
        return values
    return values[:n - 4] + ["...(%d more)..." % (len(values) - n)] + values[-4:]


def _window(values, i, before=3, after=3):
    return values[max(0, i - before):i + after]


def _percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def is_nemesis(rec):
    return rec.get("process") == "nemesis"


class Op:
    """One client operation: its invoke record and its completion (or None)."""
    __slots__ = ("f", "key", "value", "process", "node", "invoke", "complete",
                 "type", "final")

    def __init__(self, invoke):
        self.invoke = invoke
        self.complete = None
        self.f = invoke.get("f")
        self.key = invoke.get("key")
        self.value = invoke.get("value")
        self.process = invoke.get("process")
        self.node = invoke.get("node")
        self.type = "info"            # until completed; never completed = info
        self.final = bool(invoke.get("final"))

    def finish(self, rec):
        self.complete = rec
        self.type = rec.get("type")
        if rec.get("final"):
            self.final = True
        if self.f == "read" or self.value is None:
            self.value = rec.get("value")
        if rec.get("node") is not None:
            self.node = rec.get("node")

    @property
    def t_invoke(self):
        return self.invoke.get("time")

    @property
    def t_complete(self):
        return None if self.complete is None else self.complete.get("time")

    @property
    def latency(self):
        t0, t1 = self.t_invoke, self.t_complete
        if t0 is None or t1 is None:
            return None
        return t1 - t0

    def ref(self):
        r = {"index": (self.complete or self.invoke).get("index"),
             "invoke": self.invoke.get("index"), "process": self.process}
        if self.node is not None:
            r["node"] = self.node
        return r


def _ordered(records):
    """The records in history order (by index when every record has one)."""
    if all(isinstance(r.get("index"), int) for r in records):
        return sorted(records, key=lambda r: r["index"])
    return list(records)


def pair_ops(records):
    """Client records -> (list of Op in invoke order, notes).

    A completion pairs with the pending invoke of its process. Invokes left
    pending at the end stay type "info" (unknown outcome)."""
    ops, notes, pending = [], [], {}
    for rec in _ordered(records):
        if is_nemesis(rec):
            continue
        t, p = rec.get("type"), rec.get("process")
        if t == "invoke":
            if p in pending:
                notes.append("process %r invoked index %r while index %r was pending"
                             % (p, rec.get("index"), pending[p].invoke.get("index")))
            op = Op(rec)
            pending[p] = op
            ops.append(op)
        elif t in ("ok", "fail", "info"):
            op = pending.pop(p, None)
            if op is None:
                notes.append("completion index %r of process %r has no invoke"
                             % (rec.get("index"), p))
                continue
            if rec.get("f") not in (None, op.f) or rec.get("key", op.key) != op.key:
                notes.append("completion index %r does not match its invoke index %r"
                             % (rec.get("index"), op.invoke.get("index")))
            op.finish(rec)
        else:
            notes.append("record index %r has unknown type %r" % (rec.get("index"), t))
    return ops, notes


def nemesis_windows(records):
    """[(start_time, stop_time_or_None, label)]: from a nemesis "start" to the next
    "stop" (starts while a window is open extend its label)."""
    wins, cur = [], None
    for rec in sorted((r for r in records if is_nemesis(r)),
                      key=lambda r: (r.get("time") or 0)):
        f, t = rec.get("f"), rec.get("time")
        if f == "start":
            label = str(rec.get("value") or "fault")
            if cur is None:
                cur = [t, None, label]
            else:
                cur[2] += "; " + label
        elif f == "stop" and cur is not None:
            cur[1] = t
            wins.append(tuple(cur))
            cur = None
    if cur is not None:
        wins.append(tuple(cur))
    return wins


def final_reads(records):
    """key -> the values of the key's final ok read (the longest one when there
    are several), from history records: the `final` argument of check_fanout."""
    ops, _ = pair_ops(records)
    out = {}
    for op in ops:
        if op.f == "read" and op.final and op.type == "ok" and isinstance(op.value, list):
            if op.key not in out or len(op.value) >= len(out[op.key]):
                out[op.key] = list(op.value)
    return out


# --------------------------------------------------------------------------
# list-append

def check_append(records):
    anoms = _Anomalies()
    ops, notes = pair_ops(records)

    counts = {}
    for rec in records:
        if is_nemesis(rec):
            continue
        c = counts.setdefault(str(rec.get("f")), {})
        c[rec.get("type")] = c.get(rec.get("type"), 0) + 1
    nem = [r for r in records if is_nemesis(r)]

    appends, reads = {}, {}            # key -> [Op]
    value_key = {}                     # value -> key it was appended to
    for op in ops:
        if op.f == "append":
            appends.setdefault(op.key, []).append(op)
            if op.value in value_key:
                notes.append("value %r appended twice (indexes %r)"
                             % (op.value, op.invoke.get("index")))
            value_key.setdefault(op.value, op.key)
        elif op.f == "read":
            reads.setdefault(op.key, []).append(op)
        else:
            notes.append("op index %r has unknown f %r" % (op.invoke.get("index"), op.f))

    key_stats = {}
    info_committed_total = 0
    for key in sorted(set(appends) | set(reads), key=lambda k: (str(type(k)), k)):
        ks = _check_key(key, appends.get(key, []), reads.get(key, []), value_key,
                        anoms, notes)
        info_committed_total += ks["info-committed"]
        key_stats[str(key)] = ks

    lat = {}
    for op in ops:
        if op.latency is not None:
            lat.setdefault("%s-%s" % (op.f, op.type), []).append(op.latency)
    lat_ms = {}
    for name, v in sorted(lat.items()):
        v.sort()
        lat_ms[name] = {q: round(_percentile(v, p) / 1e6, 3) for q, p in
                        (("p50", .5), ("p90", .9), ("p99", .99), ("max", 1.0))}
    stats = {
        "ops": counts,
        "client-ops": len(ops),
        "nemesis-ops": len(nem),
        "fault-windows": len(nemesis_windows(records)),
        "keys": key_stats,
        "info-committed": info_committed_total,
        "info-appends": sum(1 for o in ops if o.f == "append" and o.type == "info"),
        "latency-ms": lat_ms,
        "notes": notes[:50],
    }
    return anoms.result(stats)


def _check_key(key, appends, reads, value_key, anoms, notes):
    by_value = {}
    for a in appends:
        by_value.setdefault(a.value, a)
    ok_reads = []
    for r in reads:
        if r.type != "ok":
            continue
        if not isinstance(r.value, list):
            notes.append("ok read index %r has a non-list value" % r.ref()["index"])
            continue
        ok_reads.append(r)

    # The total order: the longest ok read. Most reads are its prefixes; their
    # contents are decided from positions in it (fast), the others element by
    # element.
    order, order_op = [], None
    for r in ok_reads:
        if order_op is None or len(r.value) > len(order):
            order, order_op = r.value, r
    pos, occurrences = {}, {}
    for i, v in enumerate(order):
        pos.setdefault(v, i)
        occurrences.setdefault(v, []).append(i)
    prefix = {id(r): (r is order_op or r.value == order[:len(r.value)])
              for r in ok_reads}
    sets = {}

    def rset(r):
        s = sets.get(id(r))
        if s is None:
            s = sets[id(r)] = set(r.value)
        return s

    def contains(r, v):
        if prefix[id(r)]:
            return pos.get(v, len(order)) < len(r.value)
        return v in rset(r)

    # incompatible-order: every ok read must be a prefix of the total order
    for r in ok_reads:
        if prefix[id(r)]:
            continue
        v = r.value
        i = next(i for i in range(len(v)) if v[i] != order[i])
        anoms.add("incompatible-order", {
            "key": key, "read": r.ref(), "other": order_op.ref(),
            "diverge-at": i, "read-around": _window(v, i),
            "other-around": _window(order, i),
            "read-length": len(v), "other-length": len(order)})

    # phantom, duplicate, failed-read: found in the total order once, then
    # reported for each read that holds them
    def bad_values(values):
        """[(position of first occurrence, value, kind)] in `values`."""
        out, firsts = [], {}
        for i, v in enumerate(values):
            if v in firsts:
                continue
            firsts[v] = i
            a = by_value.get(v)
            if a is None:
                out.append((i, v, "phantom"))
            elif a.type == "fail":
                out.append((i, v, "failed-read"))
        return out
    order_bad = bad_values(order)
    order_dups = sorted((occ[1], v) for v, occ in occurrences.items() if len(occ) > 1)

    def report(r, bad, dups):
        for i, v, kind in bad:
            if kind == "phantom":
                anoms.add("phantom", {"key": key, "value": v, "read": r.ref(),
                                      "position": i, "appended-to-key": value_key.get(v)})
            else:
                a = by_value[v]
                anoms.add("failed-read", {"key": key, "value": v, "read": r.ref(),
                                          "append": a.ref(),
                                          "error": (a.complete or {}).get("error")})
        for v, ps in dups:
            anoms.add("duplicate", {"key": key, "value": v, "times": len(ps),
                                    "read": r.ref(), "positions": ps[:10]})

    for r in ok_reads:
        n = len(r.value)
        if prefix[id(r)]:
            bad = [b for b in order_bad if b[0] < n]
            dups = [(v, [p for p in occurrences[v] if p < n])
                    for second, v in order_dups if second < n]
        else:
            bad = bad_values(r.value)
            dups = []
            if len(rset(r)) != n:
                occ = {}
                for i, v in enumerate(r.value):
                    occ.setdefault(v, []).append(i)
                dups = [(v, ps) for v, ps in occ.items() if len(ps) > 1]
        report(r, bad, dups)

    seen = set(order)
    for r in ok_reads:
        if not prefix[id(r)]:
            seen |= rset(r)
    prefix_lengths = sorted(len(r.value) for r in ok_reads if prefix[id(r)])
    others = [r for r in ok_reads if not prefix[id(r)]]

    def reads_containing(v):
        n = 0
        if v in pos:
            n = len(prefix_lengths) - bisect.bisect_right(prefix_lengths, pos[v])
        return n + sum(1 for r in others if v in rset(r))

    # final reads: lost, no-final-read
    finals = [r for r in ok_reads if r.final]
    if not finals:
        anoms.add("no-final-read", {
            "key": key, "appends": len(appends),
            "final-read-attempts": [dict(r.ref(), type=r.type) for r in reads
                                    if r.final][:5]})
    else:
        for a in appends:
            if a.type != "ok":
                continue
            missing_in = [f.ref()["index"] for f in finals if not contains(f, a.value)]
            if missing_in:
                anoms.add("lost", {
                    "key": key, "value": a.value, "append": a.ref(),
                    "ack-time": a.t_complete, "final-reads-missing-it": missing_in,
                    "ok-reads-containing-it": reads_containing(a.value)})

    # stale-read: sweep reads by invoke time over reads completed before
    by_complete = sorted(ok_reads, key=lambda r: r.t_complete)
    j, best = 0, None
    for r2 in sorted(ok_reads, key=lambda r: r.t_invoke):
        while j < len(by_complete) and by_complete[j].t_complete < r2.t_invoke:
            r1 = by_complete[j]
            if best is None or len(r1.value) > len(best.value):
                best = r1
            j += 1
        if best is not None and len(r2.value) < len(best.value):
            anoms.add("stale-read", {
                "key": key, "read": r2.ref(), "length": len(r2.value),
                "earlier-read": best.ref(), "earlier-length": len(best.value),
                "invoke-time": r2.t_invoke, "earlier-complete-time": best.t_complete,
                "missing": _trunc(best.value[len(r2.value):], 8)})

    # stale-after-ack: non-final reads must hold every append acked before them
    acked = sorted((a for a in appends if a.type == "ok" and a.t_complete is not None),
                   key=lambda a: a.t_complete)
    j, acked_before, max_pos, absent = 0, [], -1, 0
    for r in sorted((r for r in ok_reads if not r.final), key=lambda r: r.t_invoke):
        while j < len(acked) and acked[j].t_complete < r.t_invoke:
            a = acked[j]
            acked_before.append(a)
            if a.value in pos:
                max_pos = max(max_pos, pos[a.value])
            else:
                absent += 1
            j += 1
        if prefix[id(r)] and not absent and max_pos < len(r.value):
            continue                                   # holds them all
        missing = [a for a in acked_before if not contains(r, a.value)]
        if missing:
            anoms.add("stale-after-ack", {
                "key": key, "read": r.ref(), "invoke-time": r.t_invoke,
                "missing-count": len(missing),
                "missing": [{"value": a.value, "append": a.ref(),
                             "ack-time": a.t_complete} for a in missing[:5]]})

    # real-time-order: an append acked before another was invoked precedes it
    placed = [a for a in appends if a.value in pos and a.type in ("ok", "info")]
    acked_placed = sorted((a for a in placed if a.type == "ok"
                           and a.t_complete is not None), key=lambda a: a.t_complete)
    j, latest = 0, None               # the acked append with the largest position
    for b in sorted(placed, key=lambda a: a.t_invoke):
        while j < len(acked_placed) and acked_placed[j].t_complete < b.t_invoke:
            a = acked_placed[j]
            if latest is None or pos[a.value] > pos[latest.value]:
                latest = a
            j += 1
        if latest is not None and pos[latest.value] > pos[b.value]:
            anoms.add("real-time-order", {
                "key": key, "acked": latest.ref(), "acked-value": latest.value,
                "acked-time": latest.t_complete, "acked-position": pos[latest.value],
                "later": b.ref(), "later-value": b.value, "later-type": b.type,
                "later-invoke-time": b.t_invoke, "later-position": pos[b.value]})

    types = {}
    for a in appends:
        types[a.type] = types.get(a.type, 0) + 1
    info_committed = sum(1 for a in appends if a.type == "info" and a.value in seen)
    return {
        "appends": len(appends), "append-types": types,
        "reads": len(reads), "ok-reads": len(ok_reads),
        "final-reads": len(finals),
        "final-length": max((len(f.value) for f in finals), default=None),
        "longest-read": len(order),
        "info-committed": info_committed,
        "info-not-seen": types.get("info", 0) - info_committed,
    }


# --------------------------------------------------------------------------
# fanout

def _int_key(k):
    try:
        return int(k)
    except (TypeError, ValueError):
        return k


class _MsgSeqs:
    """The seqs of a conversation known to be message events.

    Only message events are recorded, so a seq missing from a connection's
    stream may be a non-message event (created, member_added, ...), which is not
    a gap. When every delivered value that is in the final read sits at seq =
    offset + its position (one offset for the conversation: messages contiguous
    after the setup events), the message seqs are offset+1 .. offset+len(final)
    ("strict"); otherwise only the seqs that some subscriber received as a message
    are known ("observed")."""

    def __init__(self, observed, final_values):
        self.mode = "observed"
        self.offset = None
        seqs = set(observed)
        if final_values:
            fpos = {}
            for i, v in enumerate(final_values):
                fpos.setdefault(v, i)
            offs = {s - (fpos[v] + 1) for s, v in observed.items() if v in fpos}
            if len(offs) == 1:
                self.offset = offs.pop()
                self.mode = "strict"
                seqs.update(range(self.offset + 1, self.offset + len(final_values) + 1))
        self.sorted = sorted(seqs)

    def between(self, a, b):
        """Known message seqs in [a, b)."""
        lo = bisect.bisect_left(self.sorted, a)
        hi = bisect.bisect_left(self.sorted, b)
        return self.sorted[lo:hi]

    def none_between(self, a, b):
        return bisect.bisect_left(self.sorted, a) == bisect.bisect_left(self.sorted, b)


class _ConnConv:
    __slots__ = ("expected", "pending", "segment", "all_seen", "anchored")

    def __init__(self):
        self.expected = None   # next seq due on this connection (None: any start)
        self.pending = None    # cursor+1 of a sync in progress, until its replay
        self.segment = set()   # seqs since the stream's last (re)start
        self.all_seen = set()
        # the stream continues from what the subscriber had: it began with the
        # subscriber's first event of the key, or with a sync (from its cursor).
        # Live pushes ahead of an unfinished sync, or after a reconnect without
        # one, are not anchored: the seqs before them are still owed.
        self.anchored = False


def check_fanout(records, final):
    """Check the subscribers' records against the server's promises (docs/
    protocol.md "Delivery and sync"); `final` maps key -> final read values.

    Kinds, as implemented (per subscriber, connection and conversation/key):
      dup          a seq already pushed on this connection since its stream
                   (re)started comes again, other than the one replay a sync
                   allows;
      out-of-order a seq lower than the stream's start comes (not a sync replay);
      gap          the next event skips a seq known to be a message (see _MsgSeqs),
                   or a sync ends without replaying message seqs after its
                   cursor that the connection never got;
      hole         a subscriber (all its connections together) never got a message
                   seq, or a final-read value, that lies between the first it got of
                   that key and the last it got on an anchored stream (one that
                   began with the subscriber's first event of the key, or with a
                   sync from its cursor; pushes ahead of a sync that never finished
                   are not anchored, the seqs before them are still owed);
      delivered-uncommitted  a delivered value is not in final[key];
      delivered-order  two values a subscriber got with seq a < seq b are in the
                   opposite order in final[key];
      seq-conflict one (key, seq) delivered with two values, or one value at two
                   seqs;
      no-final-read  events were delivered for a key that `final` lacks.
    A sync (sync-start with cursor c) allows the stream to restart once at the
    first message seq >= c+1 before sync-done; live events that were in flight
    may still continue the old stream until then (the replay repeats them)."""
    anoms = _Anomalies()
    final = {_int_key(k): list(v) for k, v in (final or {}).items()}
    fpos = {k: {} for k in final}
    for k, vals in final.items():
        for i, v in enumerate(vals):
            fpos[k].setdefault(v, i)

    # pass 1: every delivered (key, seq, value); conflicts
    seq_value, value_seq = {}, {}
    key_conv, notes = {}, []
    n_events = 0
    for rec in records:
        if rec.get("kind") != "event":
            continue
        n_events += 1
        k, s, v = _int_key(rec.get("key")), rec.get("seq"), rec.get("value")
        if k is None and rec.get("conv") is not None:
            k = rec.get("conv")
        if k not in key_conv and rec.get("conv") is not None:
            key_conv[k] = rec.get("conv")
        sv = seq_value.setdefault(k, {})
        vs = value_seq.setdefault(k, {})
        if s in sv and sv[s] != v:
            anoms.add("seq-conflict", {"key": k, "seq": s, "values": [sv[s], v],
                                       "subscriber": rec.get("subscriber"),
                                       "conn": rec.get("conn"), "time": rec.get("time")})
        sv.setdefault(s, v)
        if v in vs and vs[v] != s:
            anoms.add("seq-conflict", {"key": k, "value": v, "seqs": [vs[v], s],
                                       "subscriber": rec.get("subscriber"),
                                       "conn": rec.get("conn"), "time": rec.get("time")})
        vs.setdefault(v, s)
    msgs = {k: _MsgSeqs(sv, final.get(k)) for k, sv in seq_value.items()}
    for k in seq_value:
        if k not in final:
            anoms.add("no-final-read", {"key": k, "conv": key_conv.get(k),
                                        "delivered": len(seq_value[k])})

    # pass 2: per connection streams
    conns = {}                      # (sub, conn) -> {key: _ConnConv}
    closed = set()
    sub_seen = {}                   # sub -> key -> {seq: value}
    sub_anchored = {}               # sub -> key -> {seq: value} of anchored events
    n_unanchored = 0
    n_syncs = n_connects = 0
    uncommitted_seen = set()
    for rec in records:
        kind = rec.get("kind")
        sub, conn = rec.get("subscriber"), rec.get("conn")
        cid = (sub, conn)
        streams = conns.setdefault(cid, {})
        where = {"subscriber": sub, "conn": conn, "time": rec.get("time")}
        if kind == "connect":
            n_connects += 1
        elif kind == "disconnect":
            closed.add(cid)
        elif kind == "sync-start":
            n_syncs += 1
            for ks, c in (rec.get("cursors") or {}).items():
                k = _int_key(ks)
                st = streams.setdefault(k, _ConnConv())
                st.pending = (c or 0) + 1
        elif kind == "sync-done":
            for k, st in streams.items():
                if st.pending is None:
                    continue
                m = msgs.get(k)
                st.anchored = True
                if st.expected is None:
                    st.expected = st.pending
                elif m is not None and st.expected > st.pending:
                    missed = [s for s in m.between(st.pending, st.expected)
                              if s not in st.all_seen]
                    if missed:
                        anoms.add("gap", dict(where, key=k, cursor=st.pending - 1,
                                              reason="sync did not replay",
                                              missing=_trunc(missed, 10)))
                st.pending = None
        elif kind == "event":
            k, s, v = _int_key(rec.get("key")), rec.get("seq"), rec.get("value")
            if k is None:
                k = rec.get("conv")
            if not isinstance(s, int):
                notes.append("event without an int seq: %r" % (rec,))
                continue
            if cid in closed:
                notes.append("event after disconnect on subscriber %r conn %r"
                             % (sub, conn))
            m = msgs[k]
            st = streams.setdefault(k, _ConnConv())
            cont = st.expected is None or (s >= st.expected
                                           and m.none_between(st.expected, s))
            replay = (st.pending is not None and s >= st.pending
                      and m.none_between(st.pending, s))
            if replay and not cont:
                st.pending = None
                st.segment = set()
                st.anchored = True
            elif cont:
                if replay:                  # maybe live, maybe the replay: keep
                    st.anchored = True      # the sync pending for a replay
                elif st.expected is None:
                    st.anchored = k not in sub_seen.get(sub, {})
            elif s < (st.expected or 0):
                ex = dict(where, key=k, seq=s, value=v, expected=st.expected)
                if s in st.segment:
                    anoms.add("dup", ex)
                else:
                    anoms.add("out-of-order", ex)
                _record_sub(sub_seen, sub, k, s, v)
                continue
            else:
                anoms.add("gap", dict(where, key=k, seq=s, value=v,
                                      expected=st.expected,
                                      missing=_trunc(m.between(st.expected, s), 10)))
            st.expected = s + 1
            st.segment.add(s)
            st.all_seen.add(s)
            _record_sub(sub_seen, sub, k, s, v)
            if st.anchored:
                _record_sub(sub_anchored, sub, k, s, v)
            else:
                n_unanchored += 1
            if k in final and v not in fpos[k] and (k, s, v) not in uncommitted_seen:
                uncommitted_seen.add((k, s, v))
                anoms.add("delivered-uncommitted", dict(where, key=k, seq=s, value=v))

    # per subscriber: holes and order against the final read
    coverage = {}
    for sub, per_key in sub_seen.items():
        for k, seen in per_key.items():
            m = msgs[k]
            anchored = sub_anchored.get(sub, {}).get(k, {})
            first, last = min(seen), max(anchored, default=None)
            miss_seqs = miss_vals = []
            if last is not None:
                miss_seqs = [s for s in m.between(first, last + 1) if s not in seen]
            if k in final:
                ps = sorted(fpos[k][v] for v in seen.values() if v in fpos[k])
                pa = [fpos[k][v] for v in anchored.values() if v in fpos[k]]
                got = set(seen.values())
                if ps and pa:
                    miss_vals = [v for v in final[k][ps[0]:max(pa) + 1] if v not in got]
                if ps:
                    coverage.setdefault(str(sub), {})[str(k)] = {
                        "got": len(got), "final": len(final[k]),
                        "first-pos": ps[0], "last-pos": ps[-1]}
            if miss_seqs or miss_vals:
                anoms.add("hole", {"subscriber": sub, "key": k, "first-seq": first,
                                   "last-seq": last, "missing-seqs": _trunc(miss_seqs, 10),
                                   "missing-values": _trunc(miss_vals, 10),
                                   "n-missing": max(len(miss_seqs), len(miss_vals))})
            if k in final:
                pairs = sorted((s, v) for s, v in seen.items() if v in fpos[k])
                for (s1, v1), (s2, v2) in zip(pairs, pairs[1:]):
                    if fpos[k][v1] > fpos[k][v2]:
                        anoms.add("delivered-order", {
                            "subscriber": sub, "key": k, "seq-a": s1, "value-a": v1,
                            "final-pos-a": fpos[k][v1], "seq-b": s2, "value-b": v2,
                            "final-pos-b": fpos[k][v2]})

    stats = {
        "records": len(records), "events": n_events, "connects": n_connects,
        "syncs": n_syncs, "subscribers": len(sub_seen),
        "unanchored-events": n_unanchored,
        "connections": len({c for c in conns if c[1] is not None}),
        "keys": {str(k): {"conv": key_conv.get(k), "delivered-seqs": len(sv),
                          "final-length": len(final[k]) if k in final else None,
                          "seq-model": msgs[k].mode, "seq-offset": msgs[k].offset}
                 for k, sv in sorted(seq_value.items(), key=lambda kv: str(kv[0]))},
        "coverage": coverage,
        "notes": notes[:50],
    }
    return anoms.result(stats)


def _record_sub(sub_seen, sub, k, s, v):
    sub_seen.setdefault(sub, {}).setdefault(k, {}).setdefault(s, v)


# --------------------------------------------------------------------------

def load_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def main(argv):
    """checker.py history.jsonl [fanout.jsonl]: print the results as JSON;
    exit 0 if valid, 1 if not."""
    if len(argv) < 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    hist = load_jsonl(argv[1])
    res = {"append": check_append(hist)}
    if len(argv) > 2:
        res["fanout"] = check_fanout(load_jsonl(argv[2]), final_reads(hist))
    print(json.dumps(res, indent=1, default=str))
    return 0 if all(r["valid"] for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
