#!/usr/bin/env python3
"""Unit tests of the chorus Jepsen checker, EDN writer and plots (stdlib only).

Run: python3 jepsen/tests/test_checker.py   (exit status 1 on failure)
"""
import os
import random
import shutil
import sys
import tempfile
import unittest
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from chorus_jepsen import checker, edn, plots  # noqa: E402


# --------------------------------------------------------------------------
# history builder

class Hist:
    """Ops given as (invoke time, completion time); build() sorts the records
    into completion order and numbers them like history.jsonl."""

    def __init__(self):
        self.evs = []
        self.n = 0

    def _add(self, t, rec):
        self.evs.append((t, self.n, rec))
        self.n += 1

    def append(self, p, k, v, t0, t1, typ="ok"):
        self._add(t0, {"type": "invoke", "process": p, "f": "append", "key": k,
                       "value": v, "node": 1})
        if t1 is not None:
            rec = {"type": typ, "process": p, "f": "append", "key": k, "value": v,
                   "node": 1}
            if typ != "ok":
                rec["error"] = "timeout" if typ == "info" else "unavailable: no leader"
            self._add(t1, rec)
        return self

    def read(self, p, k, t0, t1, value, typ="ok", final=False):
        inv = {"type": "invoke", "process": p, "f": "read", "key": k, "value": None,
               "node": 2}
        if final:
            inv["final"] = True
        self._add(t0, inv)
        if t1 is not None:
            rec = {"type": typ, "process": p, "f": "read", "key": k,
                   "value": value if typ == "ok" else None, "node": 2}
            if final:
                rec["final"] = True
            self._add(t1, rec)
        return self

    def nemesis(self, t, f, value):
        self._add(t, {"type": "info", "process": "nemesis", "f": f, "value": value})
        return self

    def build(self):
        out = []
        for i, (t, _, rec) in enumerate(sorted(self.evs, key=lambda e: (e[0], e[1]))):
            r = dict(rec, time=t, index=i)
            out.append(r)
        return out


def kinds(res):
    return set(res["anomalies"])


class AppendAnomalies(unittest.TestCase):
    """Each crafted history shows exactly one kind of anomaly."""

    def only(self, hist, kind):
        res = checker.check_append(hist.build())
        self.assertFalse(res["valid"], res)
        self.assertEqual(kinds(res), {kind}, res["anomalies"])
        return res["anomalies"][kind]

    def test_phantom(self):
        h = (Hist().append(1, 0, 1, 0, 10)
             .read(2, 0, 20, 30, [1, 99])
             .read(3, 0, 40, 50, [1, 99], final=True))
        ex = self.only(h, "phantom")
        self.assertEqual({e["value"] for e in ex}, {99})
        self.assertEqual(len(ex), 2)
        self.assertIsNone(ex[0]["appended-to-key"])

    def test_phantom_from_other_key(self):
        h = (Hist().append(1, 0, 1, 0, 10)
             .append(2, 1, 7, 0, 10, typ="info")     # appended to key 1, unknown
             .read(3, 0, 20, 30, [1, 7], final=True)
             .read(4, 1, 20, 30, [], final=True))
        ex = self.only(h, "phantom")
        self.assertEqual(ex[0]["value"], 7)
        self.assertEqual(ex[0]["appended-to-key"], 1)

    def test_duplicate(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 0, 10)
             .read(3, 0, 40, 50, [1, 2, 2], final=True))
        ex = self.only(h, "duplicate")
        self.assertEqual(ex[0]["value"], 2)
        self.assertEqual(ex[0]["times"], 2)

    def test_failed_read(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 0, 10, typ="fail")
             .read(3, 0, 20, 30, [1, 2])
             .read(3, 0, 40, 50, [1, 2], final=True))
        ex = self.only(h, "failed-read")
        self.assertEqual({e["value"] for e in ex}, {2})
        self.assertEqual(ex[0]["error"], "unavailable: no leader")

    def test_incompatible_order(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 0, 10)
             .read(3, 0, 20, 30, [1, 2])
             .read(4, 0, 20, 30, [2, 1])
             .read(3, 0, 40, 50, [1, 2], final=True))
        ex = self.only(h, "incompatible-order")
        self.assertEqual(len(ex), 1)
        self.assertEqual(ex[0]["diverge-at"], 0)
        self.assertEqual(ex[0]["read-around"], [2, 1])

    def test_incompatible_divergent_tails(self):
        # neither [1,2,3] nor [1,2,4] is a prefix of the other
        h = Hist()
        for v in (1, 2, 3, 4):
            h.append(v, 0, v, 0, 10 if v < 3 else 35)   # 3, 4 acked after the reads
        h.read(5, 0, 20, 30, [1, 2, 3, 4]).read(6, 0, 20, 30, [1, 2, 4])
        h.read(5, 0, 40, 50, [1, 2, 3, 4], final=True)
        ex = self.only(h, "incompatible-order")
        self.assertEqual(ex[0]["diverge-at"], 2)

    def test_lost(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 5, 15)
             .append(3, 0, 3, 5, 15, typ="info")
             .read(4, 0, 20, 30, [1], final=True))
        ex = self.only(h, "lost")
        self.assertEqual([e["value"] for e in ex], [2])
        self.assertEqual(ex[0]["ok-reads-containing-it"], 0)

    def test_no_final_read(self):
        h = Hist().append(1, 0, 1, 0, 10).read(2, 0, 20, 30, [1])
        ex = self.only(h, "no-final-read")
        self.assertEqual(ex[0]["key"], 0)

    def test_no_final_read_when_final_failed(self):
        h = (Hist().append(1, 0, 1, 0, 10)
             .read(2, 0, 20, 30, None, typ="fail", final=True))
        ex = self.only(h, "no-final-read")
        self.assertEqual(len(ex[0]["final-read-attempts"]), 1)

    def test_stale_read(self):
        # append 2 is acked only after the second read started, so the second
        # read may not miss it for being after the ack: it is stale because the
        # first read, which completed before it began, already saw 2.
        h = (Hist().append(1, 0, 1, 0, 5).append(2, 0, 2, 6, 50)
             .read(3, 0, 10, 20, [1, 2])
             .read(4, 0, 30, 40, [1])
             .read(3, 0, 60, 70, [1, 2], final=True))
        ex = self.only(h, "stale-read")
        self.assertEqual(len(ex), 1)
        self.assertEqual((ex[0]["length"], ex[0]["earlier-length"]), (1, 2))
        self.assertEqual(ex[0]["missing"], [2])

    def test_stale_after_ack(self):
        h = (Hist().append(1, 0, 1, 0, 10)
             .read(2, 0, 20, 30, [])
             .read(2, 0, 40, 50, [1], final=True))
        ex = self.only(h, "stale-after-ack")
        self.assertEqual(ex[0]["missing"][0]["value"], 1)

    def test_real_time_order(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 20, 30)
             .read(3, 0, 40, 50, [2, 1], final=True))
        ex = self.only(h, "real-time-order")
        self.assertEqual((ex[0]["acked-value"], ex[0]["later-value"]), (1, 2))

    def test_real_time_order_info_later(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 20, 30, typ="info")
             .read(3, 0, 40, 50, [2, 1], final=True))
        ex = self.only(h, "real-time-order")
        self.assertEqual(ex[0]["later-type"], "info")

    def test_examples_are_capped(self):
        h = Hist().append(1, 0, 1, 0, 10)
        for i in range(50):
            h.read(2, 0, 20 + 2 * i, 21 + 2 * i, [1, 1000 + i])
        h.read(2, 0, 500, 510, [1], final=True)
        res = checker.check_append(h.build())
        self.assertEqual(len(res["anomalies"]["phantom"]), checker.EXAMPLE_CAP)
        self.assertEqual(res["stats"]["anomaly-counts"]["phantom"], 50)


class AppendValid(unittest.TestCase):
    def valid(self, hist):
        res = checker.check_append(hist.build())
        self.assertTrue(res["valid"], res["anomalies"])
        return res

    def test_sequential(self):
        h = Hist()
        for v in range(1, 6):
            h.append(1, 0, v, 100 * v, 100 * v + 10)
            h.read(2, 0, 100 * v + 20, 100 * v + 30, list(range(1, v + 1)))
        h.read(2, 0, 1000, 1010, [1, 2, 3, 4, 5], final=True)
        res = self.valid(h)
        self.assertEqual(res["stats"]["keys"]["0"]["final-length"], 5)
        self.assertEqual(res["stats"]["ops"]["append"], {"invoke": 5, "ok": 5})

    def test_info_append_present(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 5, 15, typ="info")
             .append(3, 0, 3, 20, 30)
             .read(4, 0, 40, 50, [1, 2, 3], final=True))
        res = self.valid(h)
        self.assertEqual(res["stats"]["info-committed"], 1)

    def test_info_append_absent(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 5, 15, typ="info")
             .append(3, 0, 3, 20, 30)
             .read(4, 0, 40, 50, [1, 3], final=True))
        res = self.valid(h)
        self.assertEqual(res["stats"]["info-committed"], 0)
        self.assertEqual(res["stats"]["keys"]["0"]["info-not-seen"], 1)

    def test_never_completed_append_either_way(self):
        for final in ([1, 2], [1]):
            h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 5, None)
                 .read(3, 0, 40, 50, final, final=True))
            self.valid(h)

    def test_concurrent_appends_either_order(self):
        for order in ([1, 2], [2, 1]):
            h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 5, 15)
                 .read(3, 0, 12, 14, [1] if order[0] == 1 else [2, 1])
                 .read(3, 0, 20, 30, order, final=True))
            self.valid(h)

    def test_concurrent_read_may_miss_or_see_append(self):
        for seen in ([], [1]):
            h = (Hist().append(1, 0, 1, 0, 10)
                 .read(2, 0, 5, 15, seen)
                 .read(2, 0, 20, 30, [1], final=True))
            self.valid(h)

    def test_stale_looking_concurrent_read(self):
        # R2 started before R1 completed: R2 may linearize before R1
        h = (Hist().append(1, 0, 1, 0, 5).append(2, 0, 2, 6, 50)
             .read(3, 0, 10, 20, [1, 2])
             .read(4, 0, 15, 40, [1])
             .read(3, 0, 60, 70, [1, 2], final=True))
        self.valid(h)

    def test_failed_append_absent(self):
        h = (Hist().append(1, 0, 1, 0, 10).append(2, 0, 2, 0, 10, typ="fail")
             .read(3, 0, 20, 30, [1], final=True))
        res = self.valid(h)
        self.assertEqual(res["stats"]["keys"]["0"]["append-types"], {"ok": 1, "fail": 1})

    def test_nemesis_ops_ignored_and_counted(self):
        h = (Hist().nemesis(1, "start", "partition majorities-ring {1:[2,3]}")
             .append(1, 0, 1, 2, 10).nemesis(20, "stop", "heal")
             .read(2, 0, 30, 40, [1], final=True))
        res = self.valid(h)
        self.assertEqual(res["stats"]["nemesis-ops"], 2)
        self.assertEqual(res["stats"]["fault-windows"], 1)

    def test_several_keys_and_final_reads(self):
        h = Hist()
        h.append(1, 0, 1, 0, 10).append(2, 1, 2, 0, 10).append(3, 1, 3, 20, 30)
        h.read(4, 0, 40, 50, [1], final=True).read(5, 1, 40, 50, [2, 3], final=True)
        h.read(6, 1, 40, 55, [2, 3], final=True)
        self.valid(h)
        self.assertEqual(checker.final_reads(h.build()), {0: [1], 1: [2, 3]})

    def test_empty_history(self):
        res = checker.check_append([])
        self.assertTrue(res["valid"])


def simulate_linearizable(seed, n_proc=6, n_keys=3, n_ops=400):
    """A history of a correct system: every op takes effect atomically at a
    random point inside its [invoke, completion] interval; info appends take
    effect or not; fail appends never do."""
    rnd = random.Random(seed)
    events, procs = [], []          # (linearization time, op dict)
    nextv = [1]
    for p in range(n_proc):
        t, pid = rnd.randint(0, 5), p
        for _ in range(n_ops // n_proc):
            t0 = t
            t1 = t0 + rnd.randint(1, 40)
            tl = rnd.uniform(t0 + 0.01, t1 - 0.01)
            k = rnd.randrange(n_keys)
            if rnd.random() < 0.5:
                v = nextv[0]
                nextv[0] += 1
                typ = rnd.choices(["ok", "fail", "info"], [8, 1, 1])[0]
                applied = typ == "ok" or (typ == "info" and rnd.random() < 0.5)
                events.append((tl, {"f": "append", "p": pid, "k": k, "v": v,
                                    "t0": t0, "t1": t1, "typ": typ,
                                    "applied": applied}))
            else:
                typ = rnd.choices(["ok", "fail", "info"], [8, 1, 1])[0]
                events.append((tl, {"f": "read", "p": pid, "k": k, "t0": t0,
                                    "t1": t1, "typ": typ}))
            if typ == "info":
                pid += 100          # a new process after an info
            t = t1 + rnd.randint(1, 10)
        procs.append(t)
    lists = {k: [] for k in range(n_keys)}
    h = Hist()
    for tl, op in sorted(events, key=lambda e: e[0]):
        if op["f"] == "append":
            if op["applied"]:
                lists[op["k"]].append(op["v"])
            h.append(op["p"], op["k"], op["v"], op["t0"], op["t1"], typ=op["typ"])
        else:
            h.read(op["p"], op["k"], op["t0"], op["t1"], list(lists[op["k"]]),
                   typ=op["typ"])
    t_end = max(procs) + 100
    for k in range(n_keys):
        h.read(1000 + k, k, t_end, t_end + 5, list(lists[k]), final=True)
    return h


def mutate(h, rnd, n=4):
    """Records of h with n random faults injected into ok reads and appends."""
    hist = h.build()
    reads = [r for r in hist if r["f"] == "read" and r["type"] == "ok"]
    appends = [r for r in hist if r["f"] == "append" and r["type"] == "ok"]
    for _ in range(n):
        what = rnd.choice(["drop", "swap", "phantom", "dup", "truncate", "fail",
                           "foreign", "swap-final", "final-fails"])
        if what == "fail":                  # an acked append reported failed
            a = rnd.choice(appends)
            a["type"] = "fail"
            continue
        finals = [x for x in reads if x.get("final")]
        if what == "final-fails":
            f = rnd.choice(finals)
            f["type"], f["value"] = "info", None
            reads.remove(f)
            continue
        if what == "swap-final":
            r = rnd.choice(finals)
            v = list(r["value"])
            if len(v) > 1:
                i = rnd.randrange(len(v) - 1)
                v[i], v[i + 1] = v[i + 1], v[i]
            r["value"] = v
            continue
        r = rnd.choice([x for x in reads if x["value"]] or reads)
        v = list(r["value"])
        if not v:
            continue
        i = rnd.randrange(len(v))
        if what == "drop":
            del v[i]
        elif what == "swap":
            j = rnd.randrange(len(v))
            v[i], v[j] = v[j], v[i]
        elif what == "phantom":
            v.insert(i, 10 ** 6 + rnd.randrange(100))
        elif what == "dup":
            v.insert(rnd.randrange(i, len(v) + 1), v[i])
        elif what == "truncate":
            v = v[:i]
        elif what == "foreign":             # a value of another key
            others = [a["value"] for a in appends if a["key"] != r["key"]]
            if others:
                v.append(rnd.choice(others))
        r["value"] = v
    return hist


def naive_counts(hist):
    """The anomaly counts straight from the definitions, quadratically."""
    ops, _ = checker.pair_ops(hist)
    counts = {}

    def add(kind, n=1):
        if n:
            counts[kind] = counts.get(kind, 0) + n
    keys = {o.key for o in ops}
    for k in keys:
        aps = [o for o in ops if o.f == "append" and o.key == k]
        rds = [o for o in ops if o.f == "read" and o.key == k and o.type == "ok"]
        kind_of = {a.value: a.type for a in aps}
        longest = max(rds, key=lambda r: len(r.value), default=None)
        order = longest.value if longest else []
        for r in rds:
            for v in set(r.value):
                add("phantom", v not in kind_of)
                add("failed-read", kind_of.get(v) == "fail")
                add("duplicate", r.value.count(v) > 1)
            add("incompatible-order", r.value != order[:len(r.value)])
        finals = [r for r in rds if r.final]
        if not finals:
            add("no-final-read")
        for a in aps:
            add("lost", bool(finals) and a.type == "ok"
                and any(a.value not in f.value for f in finals))
        for r2 in rds:
            add("stale-read", any(r1.t_complete < r2.t_invoke
                                  and len(r1.value) > len(r2.value) for r1 in rds))
            add("stale-after-ack", not r2.final and any(
                a.type == "ok" and a.t_complete < r2.t_invoke
                and a.value not in r2.value for a in aps))
        pos = {}
        for i, v in enumerate(order):
            pos.setdefault(v, i)
        for b in aps:
            add("real-time-order", b.type in ("ok", "info") and b.value in pos and any(
                a.type == "ok" and a.value in pos and a.t_complete < b.t_invoke
                and pos[a.value] > pos[b.value] for a in aps))
    return dict(sorted(counts.items()))


class AppendRandomized(unittest.TestCase):
    def test_linearizable_histories_are_valid(self):
        for seed in range(30):
            res = checker.check_append(simulate_linearizable(seed).build())
            self.assertTrue(res["valid"], (seed, res["anomalies"]))
            self.assertGreater(res["stats"]["client-ops"], 300)

    def test_counts_match_a_naive_checker_on_mutated_histories(self):
        for seed in range(60):
            rnd = random.Random(seed)
            hist = mutate(simulate_linearizable(seed, n_ops=120), rnd)
            res = checker.check_append(hist)
            self.assertEqual(res["stats"]["anomaly-counts"], naive_counts(hist),
                             (seed, res["anomalies"]))

    def test_mutations_are_caught(self):
        for seed in range(10):
            hist = simulate_linearizable(seed).build()
            finals = [r for r in hist if r.get("final") and r["type"] == "ok"
                      and len(r["value"]) >= 2]
            f = finals[0]
            # drop an acked value from a final read: lost (or more)
            acked = {r["value"] for r in hist if r["f"] == "append" and r["type"] == "ok"
                     and r["key"] == f["key"]}
            v = next(x for x in f["value"] if x in acked)
            mutated = [dict(r, value=[x for x in r["value"] if x != v]) if r is f else r
                       for r in hist]
            self.assertIn("lost", kinds(checker.check_append(mutated)), seed)
            # swap two values in the final read
            sw = list(f["value"])
            sw[0], sw[-1] = sw[-1], sw[0]
            mutated = [dict(r, value=sw) if r is f else r for r in hist]
            self.assertFalse(checker.check_append(mutated)["valid"], seed)


# --------------------------------------------------------------------------
# fanout

class Fan:
    def __init__(self):
        self.recs = []
        self.t = 0

    def _add(self, sub, conn, kind, **kw):
        self.t += 1
        self.recs.append(dict(time=self.t, subscriber=sub, conn=conn, kind=kind, **kw))
        return self

    def connect(self, sub, conn):
        return self._add(sub, conn, "connect")

    def disconnect(self, sub, conn):
        return self._add(sub, conn, "disconnect")

    def sync(self, sub, conn, cursors):
        return self._add(sub, conn, "sync-start",
                         cursors={str(k): c for k, c in cursors.items()})

    def synced(self, sub, conn):
        return self._add(sub, conn, "sync-done")

    def ev(self, sub, conn, seq, value=None, key=0):
        if value is None:
            value = VAL[seq]
        return self._add(sub, conn, "event", key=key, conv=100 + key, seq=seq,
                         value=value, node=1)


# seq 1 is the conversation's "created" event; messages are seqs 2..9
VAL = {s: 1000 + s for s in range(2, 10)}
FINAL = {0: [VAL[s] for s in range(2, 10)]}


class FanoutAnomalies(unittest.TestCase):
    def check(self, fan, final=FINAL):
        return checker.check_fanout(fan.recs, final)

    def only(self, fan, kind, final=FINAL):
        res = self.check(fan, final)
        self.assertFalse(res["valid"], res)
        self.assertEqual(kinds(res), {kind}, res["anomalies"])
        return res["anomalies"][kind]

    def test_dup(self):
        f = Fan().connect(1, 1)
        for s in (2, 3, 3, 4):
            f.ev(1, 1, s)
        ex = self.only(f, "dup")
        self.assertEqual(ex[0]["seq"], 3)

    def test_dup_after_sync_replay(self):
        # the one replay after the sync is fine, a second copy of 6 is not
        f = Fan().connect(1, 1).ev(1, 1, 5).sync(1, 1, {0: 4}).ev(1, 1, 5).ev(1, 1, 6)
        f.ev(1, 1, 6).synced(1, 1)
        ex = self.only(f, "dup")
        self.assertEqual(ex[0]["seq"], 6)

    def test_out_of_order(self):
        f = Fan().connect(1, 1).ev(1, 1, 3).ev(1, 1, 2)
        ex = self.only(f, "out-of-order")
        self.assertEqual(ex[0]["seq"], 2)

    def test_gap_within_connection(self):
        # conn 2 skips 4; the subscriber had 4 from conn 1, so it is no hole
        f = Fan().connect(1, 1)
        for s in (2, 3, 4, 5):
            f.ev(1, 1, s)
        f.disconnect(1, 1).connect(1, 2).sync(1, 2, {0: 1})
        for s in (2, 3, 5):
            f.ev(1, 2, s)
        f.synced(1, 2)
        ex = self.only(f, "gap")
        self.assertEqual((ex[0]["expected"], ex[0]["seq"], ex[0]["missing"]), (4, 5, [4]))

    def test_gap_detected_from_final_even_if_nobody_got_it(self):
        # strict seq model: messages are seqs 2..9 (offset 1), so 4 is a message
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).ev(1, 1, 5)
        res = self.check(f)
        self.assertEqual(kinds(res), {"gap", "hole"}, res["anomalies"])
        self.assertEqual(res["stats"]["keys"]["0"]["seq-model"], "strict")

    def test_hole_after_sync(self):
        # conn 2 syncs from a cursor past what the subscriber got (5 instead of
        # 3): the connection's stream is consistent, the subscriber has a hole
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).disconnect(1, 1)
        f.connect(1, 2).sync(1, 2, {0: 5}).ev(1, 2, 6).ev(1, 2, 7).synced(1, 2)
        ex = self.only(f, "hole")
        self.assertEqual(ex[0]["missing-seqs"], [4, 5])
        self.assertEqual(ex[0]["missing-values"], [VAL[4], VAL[5]])

    def test_sync_that_replays_nothing(self):
        # the server answers the sync from cursor 3 without pushing 4, 5
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).disconnect(1, 1)
        f.connect(1, 2).sync(1, 2, {0: 3}).synced(1, 2).ev(1, 2, 6).ev(1, 2, 7)
        res = self.check(f)
        self.assertEqual(kinds(res), {"gap", "hole"}, res["anomalies"])

    def test_sync_replay_skipped_while_live_events_came(self):
        # live 6 arrived, the sync from 3 completed without replaying 4, 5
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).disconnect(1, 1)
        f.connect(1, 2).ev(1, 2, 6).sync(1, 2, {0: 3}).synced(1, 2).ev(1, 2, 7)
        res = self.check(f)
        self.assertEqual(kinds(res), {"gap", "hole"}, res["anomalies"])
        self.assertEqual(res["anomalies"]["gap"][0]["reason"], "sync did not replay")

    def test_delivered_uncommitted(self):
        f = Fan().connect(1, 1)
        for s in range(2, 10):
            f.ev(1, 1, s)
        f.ev(1, 1, 10, value=4242)
        ex = self.only(f, "delivered-uncommitted")
        self.assertEqual((ex[0]["seq"], ex[0]["value"]), (10, 4242))

    def test_delivered_order(self):
        f = Fan().connect(1, 1).ev(1, 1, 2, value=VAL[3]).ev(1, 1, 3, value=VAL[2])
        ex = self.only(f, "delivered-order")
        self.assertEqual((ex[0]["seq-a"], ex[0]["seq-b"]), (2, 3))

    def test_seq_conflict(self):
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3)
        f.connect(2, 1).ev(2, 1, 2, value=VAL[3])
        ex = self.only(f, "seq-conflict")
        self.assertEqual(len(ex), 2)

    def test_no_final_read(self):
        f = Fan().connect(1, 1).ev(1, 1, 2, key=5)
        self.only(f, "no-final-read")


class FanoutValid(unittest.TestCase):
    def valid(self, fan, final=FINAL):
        res = checker.check_fanout(fan.recs, final)
        self.assertTrue(res["valid"], res["anomalies"])
        return res

    def test_reconnect_and_sync(self):
        f = Fan().connect(1, 1).sync(1, 1, {0: 0})
        for s in (2, 3, 4):
            f.ev(1, 1, s)
        f.synced(1, 1).disconnect(1, 1)
        # conn 2: live 6 (session start at 5) before and 7 after sync-start, then
        # the replay from cursor 4 repeats 5.. 7 once, then live 8, 9
        f.connect(1, 2).ev(1, 2, 6).sync(1, 2, {0: 4}).ev(1, 2, 7)
        for s in (5, 6, 7):
            f.ev(1, 2, s)
        f.synced(1, 2).ev(1, 2, 8).ev(1, 2, 9)
        # another subscriber: everything on one connection
        f.connect(2, 1)
        for s in range(2, 10):
            f.ev(2, 1, s)
        res = self.valid(f)
        self.assertEqual(res["stats"]["coverage"]["1"]["0"]["got"], 8)

    def test_live_event_equal_to_cursor_successor_then_replay(self):
        # cursor 4, live 5 arrives after the sync-start and the replay repeats it
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).ev(1, 1, 4).disconnect(1, 1)
        f.connect(1, 2).sync(1, 2, {0: 4}).ev(1, 2, 5).ev(1, 2, 5).ev(1, 2, 6)
        f.synced(1, 2).ev(1, 2, 7)
        self.valid(f)
        # ... or the server handled the sync first and pushed 5 once
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).ev(1, 1, 4).disconnect(1, 1)
        f.connect(1, 2).sync(1, 2, {0: 4}).ev(1, 2, 5).ev(1, 2, 6).synced(1, 2)
        f.ev(1, 2, 7)
        self.valid(f)

    def test_sync_with_nothing_missed(self):
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).disconnect(1, 1)
        f.connect(1, 2).sync(1, 2, {0: 3}).synced(1, 2).ev(1, 2, 4).ev(1, 2, 5)
        self.valid(f)

    def test_non_message_events_are_not_gaps(self):
        # seq 1 created, 4 and 6 are edits/reactions (not recorded as events)
        val = {2: 10, 3: 11, 5: 12, 7: 13}
        final = {0: [10, 11, 12, 13]}
        f = Fan().connect(1, 1)
        for s in (2, 3, 5, 7):
            f.ev(1, 1, s, value=val[s])
        f.connect(2, 1).ev(2, 1, 2, value=10).ev(2, 1, 3, value=11).disconnect(2, 1)
        f.connect(2, 2).sync(2, 2, {0: 3}).ev(2, 2, 5, value=12).synced(2, 2)
        f.ev(2, 2, 7, value=13)
        res = self.valid(f, final)
        self.assertEqual(res["stats"]["keys"]["0"]["seq-model"], "observed")

    def test_unfinished_sync_owes_its_replay(self):
        # conn 2 got live 6 ahead of its sync from 3, then dropped before the
        # replay: 4, 5 are owed, not a hole (the run may end here) ...
        f = Fan().connect(1, 1).ev(1, 1, 2).ev(1, 1, 3).disconnect(1, 1)
        f.connect(1, 2).sync(1, 2, {0: 3}).ev(1, 2, 6).disconnect(1, 2)
        res = self.valid(f)
        self.assertEqual(res["stats"]["unanchored-events"], 1)
        # ... and the next sync from the same cursor delivers them
        f.connect(1, 3).sync(1, 3, {0: 3})
        for s in (4, 5, 6, 7):
            f.ev(1, 3, s)
        f.synced(1, 3)
        self.valid(f)

    def test_late_subscriber_starts_anywhere(self):
        f = Fan().connect(1, 1).ev(1, 1, 6).ev(1, 1, 7)
        self.valid(f)


def simulate_fanout(seed, n_events=60, nonmsg_every=0, n_subs=3):
    """Records of subscribers of a server that keeps the protocol's promises:
    per connection, live pushes from the session start's last seq; a sync
    (processed some time after the client's sync-start) resets the cursor and
    replays; disconnects cut the stream; the next connection syncs from the
    end of the contiguous run of seqs it received."""
    rnd = random.Random(seed)
    ct = {s: 10.0 * s for s in range(1, n_events + 1)}   # commit times
    is_msg = {s: s > 1 and not (nonmsg_every and s % nonmsg_every == 0)
              for s in ct}
    value = {s: 5000 + s for s in ct if is_msg[s]}
    final = {0: [value[s] for s in sorted(value)]}
    t_end = 10.0 * n_events + 50

    def last_at(t):
        return max([s for s in ct if ct[s] <= t], default=0)

    recs = []
    for sub in range(1, n_subs + 1):
        t, conn, cursor = rnd.uniform(0, 40), 0, None
        while t < t_end:
            conn += 1
            tc = t
            td = min(t_end + 100, tc + rnd.choice([rnd.uniform(1, 20), rnd.uniform(30, 250)]))
            out = [(tc, "connect", {})]
            c0 = last_at(tc)
            do_sync = cursor is not None or rnd.random() < 0.5
            ccur = cursor if cursor is not None else rnd.choice([0, c0])
            ts = tc + rnd.uniform(0.1, 5)
            tp = ts + rnd.uniform(0.1, 15)
            pushes, cur, last_t = [], c0, tc
            nxt = c0 + 1
            if do_sync:
                out.append((ts, "sync-start", {"cursors": {"0": ccur}}))
                while nxt in ct and ct[nxt] < tp:          # live before the sync
                    last_t = max(last_t, ct[nxt])
                    pushes.append((last_t, nxt))
                    nxt += 1
                lp = last_at(tp)
                nxt = min(ccur, lp) + 1
                last_t = max(last_t, tp)
                while nxt in ct and nxt <= lp:              # the replay
                    last_t += 0.01
                    pushes.append((last_t, nxt))
                    nxt += 1
                out.append((last_t + 0.005, "sync-done", {}))
            while nxt in ct:                                # live
                last_t = max(last_t + 0.01, ct[nxt])
                pushes.append((last_t, nxt))
                nxt += 1
            for tp_, s in pushes:
                if is_msg[s]:
                    out.append((tp_, "event", {"key": 0, "conv": 100, "seq": s,
                                               "value": value[s]}))
            out = [o for o in out if o[0] <= td]
            out.append((td, "disconnect", {}))
            # the client's cursor: the end of the contiguous run it has from its
            # sync cursor (or from its first push), not the highest seq it saw:
            # live pushes ahead of an unfinished replay do not move it
            cur = ccur if do_sync else None
            for tp_, s in pushes:
                if tp_ > td:
                    break
                if cur is None or s == cur + 1:
                    cur = s
            if cur is not None:
                cursor = cur
            out.sort(key=lambda o: o[0])                    # stable: push order kept
            for tt, kind, extra in out:
                recs.append(dict(time=tt, subscriber=sub, conn=conn, kind=kind, **extra))
            cursor = cursor if cursor is not None else 0
            t = td + rnd.uniform(0.5, 30)
    recs.sort(key=lambda r: r["time"])
    return recs, final


class FanoutRandomized(unittest.TestCase):
    def test_protocol_abiding_server_is_valid(self):
        for seed in range(40):
            for every in (0, 4):
                recs, final = simulate_fanout(seed, nonmsg_every=every)
                res = checker.check_fanout(recs, final)
                self.assertTrue(res["valid"], (seed, every, res["anomalies"]))
                self.assertGreater(res["stats"]["syncs"], 0)

    def test_dropped_or_duplicated_push_is_caught(self):
        for seed in range(20):
            recs, final = simulate_fanout(seed)
            evs = [i for i, r in enumerate(recs) if r["kind"] == "event"]
            # drop an event that has a successor on the same connection and is
            # its seq's only push there (a live push that a sync replays again
            # may go missing unnoticed: the subscriber still got it)
            def same_conn(j, r):
                return (recs[j]["subscriber"], recs[j]["conn"]) == (r["subscriber"],
                                                                    r["conn"])
            for i in evs[len(evs) // 2:]:
                r = recs[i]
                later = [j for j in evs if j > i and same_conn(j, r)]
                copies = [j for j in evs if same_conn(j, r) and recs[j]["seq"] == r["seq"]]
                if later and len(copies) == 1:
                    break
            dropped = recs[:i] + recs[i + 1:]
            res = checker.check_fanout(dropped, final)
            self.assertFalse(res["valid"], seed)
            duped = recs[:i + 1] + [dict(recs[i])] + recs[i + 1:]
            res = checker.check_fanout(duped, final)
            self.assertIn("dup", kinds(res), seed)


# --------------------------------------------------------------------------
# EDN

class Edn(unittest.TestCase):
    def hist(self):
        h = (Hist().nemesis(1, "start", 'partition majorities-ring {1:[2,3], "x"}')
             .append(1, 3, 17, 2, 10).append(2, 3, 18, 3, 11, typ="fail")
             .append(3, 3, 19, 4, 12, typ="info")
             .read(4, 3, 5, 13, [17, 19]).read(5, 3, 6, 14, None, typ="fail")
             .nemesis(20, "stop", "heal")
             .read(4, 3, 30, 40, [17, 19], final=True)
             .append(6, 3, 20, 50, None))
        return h.build()

    def test_round_trip(self):
        hist = self.hist()
        d = tempfile.mkdtemp()
        try:
            path = os.path.join(d, "history.edn")
            n = edn.write_edn(hist, path)
            self.assertEqual(n, len(hist))
            with open(path) as f:
                lines = f.read().splitlines()
            self.assertEqual(len(lines), len(hist))
            for line in lines:                      # balanced, one map per line
                depth, in_str, esc = 0, False, False
                for ch in line:
                    if in_str:
                        esc, in_str = (not esc and ch == "\\"), in_str and not (
                            ch == '"' and not esc)
                        continue
                    if ch == '"':
                        in_str = True
                    elif ch in "[{(":
                        depth += 1
                    elif ch in "]})":
                        depth -= 1
                        self.assertGreaterEqual(depth, 0, line)
                self.assertEqual(depth, 0, line)
                self.assertTrue(line.startswith("{") and line.endswith("}"), line)
            ops = edn.read_edn(path)
            self.assertEqual([o["index"] for o in ops], list(range(len(hist))))
            for rec, op in zip(hist, ops):
                self.assertEqual(op["time"], rec["time"])
                if rec["process"] == "nemesis":
                    self.assertEqual(op["process"], "nemesis")
                    self.assertIsInstance(op["process"], edn.Keyword)
                    self.assertEqual(op["type"], "info")
                    self.assertEqual(op["value"], rec["value"])
                    self.assertIn(op["f"], ("start-partition", "stop-partition"))
                    continue
                self.assertEqual(op["f"], "txn")
                self.assertEqual(op["type"], rec["type"])
                self.assertEqual(op["process"], rec["process"])
                [mop] = op["value"]
                if rec["f"] == "append":
                    self.assertEqual(mop, ["append", 3, rec["value"]])
                elif rec["type"] == "ok":
                    self.assertEqual(mop, ["r", 3, rec["value"]])
                else:
                    self.assertEqual(mop, ["r", 3, None])
            self.assertIn('{:type :invoke, :f :txn, :value [[:append 3 17]], '
                          ':process 1, :time 2, :index 1', lines[1])
            self.assertIn(':value [[:r 3 [17 19]]]', "\n".join(lines))
            self.assertIn(':value [[:r 3 nil]]', "\n".join(lines))
        finally:
            shutil.rmtree(d)

    def test_reader_rejects_unbalanced(self):
        with self.assertRaises(edn.EdnError):
            edn.parse_edn("{:a [1 2}")
        with self.assertRaises(edn.EdnError):
            edn.parse_edn("{:a 1")


# --------------------------------------------------------------------------
# plots

def synthetic_for_plots():
    h = simulate_linearizable(3, n_ops=600)
    hist = h.build()
    scale = 10 ** 7           # the simulation's time units -> ns (10 ms)
    for r in hist:
        r["time"] *= scale
    t_end = max(r["time"] for r in hist)
    nem = [{"type": "info", "process": "nemesis", "f": "start", "value": "partition x",
            "time": t_end // 5}, {"type": "info", "process": "nemesis", "f": "stop",
                                   "value": "heal", "time": t_end // 3},
           {"type": "info", "process": "nemesis", "f": "start", "value": "kill n2",
            "time": t_end // 2}]
    out = sorted(hist + nem, key=lambda r: r["time"])
    for i, r in enumerate(out):
        r["index"] = i
    return out


class Plots(unittest.TestCase):
    def test_write_plots(self):
        d = tempfile.mkdtemp()
        try:
            res = plots.write_plots(synthetic_for_plots(), d)
            for name in ("rate.dat", "nemesis.dat", "latency-append-ok.dat"):
                self.assertTrue(os.path.exists(os.path.join(d, name)), res)
            with open(os.path.join(d, "nemesis.dat")) as f:
                self.assertEqual(len(f.read().splitlines()), 3)   # header + 2 windows
            if shutil.which("gnuplot"):
                self.assertTrue(res["ok"], res["notes"])
                for name in ("latency.png", "rate.png"):
                    with open(os.path.join(d, name), "rb") as f:
                        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            else:
                self.assertTrue(res["notes"])
        finally:
            shutil.rmtree(d)

    def test_missing_gnuplot_is_a_note(self):
        d = tempfile.mkdtemp()
        try:
            with mock.patch.object(plots.shutil, "which", return_value=None):
                res = plots.write_plots(synthetic_for_plots(), d)
            self.assertFalse(res["ok"])
            self.assertIn("gnuplot not found", res["notes"][0])
            self.assertFalse(os.path.exists(os.path.join(d, "latency.png")))
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main(verbosity=1)
