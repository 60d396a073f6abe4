#!/usr/bin/env python3
"""Self-test of chorus_jepsen.history and of the workload's op classification.
Pure: no cluster, no network.  Run: python3 jepsen/tests/test_workload.py"""
import json
import os
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # jepsen/

from chorus_jepsen import workload as wl  # noqa: E402
from chorus_jepsen.history import (FanoutLog, HistoryWriter, pair_ops,  # noqa: E402
                                   read_fanout, read_history)
from chorus_jepsen.workload import ApiError, Closed, classify, error_string  # noqa: E402


def reply_ok(result=None):
    return {"type": "reply", "id": 1, "ok": True, "result": result or {}}


def reply_err(code, message="x"):
    return {"type": "reply", "id": 1, "ok": False,
            "error": {"code": code, "message": message}}


class HistoryWriterTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "sub", "history.jsonl")

    def tearDown(self):
        self.dir.cleanup()

    def test_indexes_times_and_lines(self):
        h = HistoryWriter(self.path)
        recs = [h.op({"type": "invoke", "process": 0, "f": "append", "key": 1, "value": 5}),
                h.op({"type": "ok", "process": 0, "f": "append", "key": 1, "value": 5}),
                h.nemesis("start", "kill node 2"),
                h.op({"type": "invoke", "process": 1, "f": "read", "key": 0, "value": None})]
        self.assertEqual([r["index"] for r in recs], [0, 1, 2, 3])
        # each line is on disk as soon as it is written (flushed), before close
        on_disk = read_history(self.path, strict=True)
        self.assertEqual(len(on_disk), 4)
        h.close()
        ops = read_history(self.path, strict=True)
        self.assertEqual(ops, recs)
        times = [o["time"] for o in ops]
        self.assertTrue(all(isinstance(t, int) and t >= 0 for t in times))
        self.assertEqual(times, sorted(times))
        self.assertEqual(ops[2], {"index": 2, "time": ops[2]["time"], "type": "info",
                                  "process": "nemesis", "f": "start",
                                  "value": "kill node 2"})
        self.assertIsNone(ops[3]["value"])
        with open(self.path) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 4)
        for line in lines:
            self.assertIsInstance(json.loads(line), dict)
        # index and time come first in every line
        self.assertTrue(lines[0].startswith('{"index":0,"time":'))

    def test_given_time_is_kept_and_input_not_mutated(self):
        h = HistoryWriter(None)
        rec = {"type": "invoke", "process": 0, "f": "read", "key": 0, "value": None,
               "time": 42}
        out = h.op(rec)
        self.assertEqual(out["time"], 42)
        self.assertNotIn("index", rec)
        self.assertEqual(h.records, [out])
        h.close()

    def test_threads(self):
        h = HistoryWriter(self.path)
        n_threads, per = 8, 250

        def work(p):
            for i in range(per):
                h.op({"type": "invoke", "process": p, "f": "append", "key": 0,
                      "value": p * per + i})

        ts = [threading.Thread(target=work, args=(p,)) for p in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        h.close()
        ops = read_history(self.path, strict=True)
        self.assertEqual(len(ops), n_threads * per)
        self.assertEqual([o["index"] for o in ops], list(range(n_threads * per)))
        times = [o["time"] for o in ops]
        self.assertEqual(times, sorted(times))
        self.assertEqual(sorted(o["value"] for o in ops), list(range(n_threads * per)))

    def test_write_after_close_raises(self):
        h = HistoryWriter(self.path)
        h.close()
        h.close()  # idempotent
        with self.assertRaises(ValueError):
            h.op({"type": "invoke"})

    def test_torn_last_line(self):
        h = HistoryWriter(self.path)
        h.op({"type": "invoke", "process": 0, "f": "read", "key": 0, "value": None})
        h.close()
        with open(self.path, "a") as f:
            f.write('{"index": 1, "ti')  # a crash in the middle of a line
        self.assertEqual(len(read_history(self.path)), 1)
        with self.assertRaises(ValueError):
            read_history(self.path, strict=True)

    def test_fanout_log_shares_the_clock(self):
        h = HistoryWriter(None)
        path = os.path.join(self.dir.name, "fanout.jsonl")
        fl = FanoutLog(path, t0_ns=h.t0_ns)
        a = h.op({"type": "invoke"})
        r = fl.record({"subscriber": 0, "conn": 1, "kind": "event", "key": 3,
                       "conv": 77, "seq": 4, "value": 9, "node": 2})
        b = h.op({"type": "ok"})
        fl.close()
        self.assertLessEqual(a["time"], r["time"])
        self.assertLessEqual(r["time"], b["time"])
        recs = read_fanout(path, strict=True)
        self.assertEqual(recs, [r])
        self.assertEqual(list(recs[0])[:4], ["time", "subscriber", "conn", "kind"])


class ClassifyTest(unittest.TestCase):
    FAIL = ["bad_request", "unknown_op", "unauthorized", "forbidden", "not_found",
            "too_large", "limit_exceeded", "rate_limited", "unavailable"]
    INFO = ["timeout", "internal", "conflict", "not_leader", "corrupt", "io_error",
            "something_new", None]

    def test_ok(self):
        self.assertEqual(classify("append", reply_ok({"seq": 3})), "ok")
        self.assertEqual(classify("read", reply_ok({"events": []})), "ok")

    def test_append_errors(self):
        for code in self.FAIL:
            self.assertEqual(classify("append", reply_err(code)), "fail", code)
            self.assertEqual(classify("append", ApiError(code, "m")), "fail", code)
        for code in self.INFO:
            self.assertEqual(classify("append", reply_err(code)), "info", code)

    def test_unavailable_while_shutting_down_is_info(self):
        # rpc_close fails in-flight (maybe delivered) calls with CH_ESHUTDOWN,
        # wire code "unavailable", message "node is shutting down"
        self.assertEqual(classify("append", reply_err("unavailable", "node is shutting down")),
                         "info")
        self.assertEqual(classify("append", reply_err(
            "unavailable", "shard has no leader or quorum right now")), "fail")
        self.assertEqual(classify("append", {"type": "reply", "ok": False,
                                             "error": {"code": "unavailable"}}), "fail")

    def test_append_without_reply_is_info(self):
        for e in (TimeoutError("no data"), Closed(1006, "connection lost"),
                  ConnectionResetError(104, "reset"), BrokenPipeError(),
                  OSError("x"), ValueError("bad json")):
            self.assertEqual(classify("append", e), "info", repr(e))

    def test_reads_never_info(self):
        for code in self.FAIL + self.INFO:
            self.assertEqual(classify("read", reply_err(code)), "fail", code)
        for e in (TimeoutError(), Closed(1006, "lost"), ConnectionResetError()):
            self.assertEqual(classify("read", e), "fail")

    def test_other_writes_like_append(self):
        self.assertEqual(classify("create", reply_err("timeout")), "info")
        self.assertEqual(classify("create", reply_err("forbidden")), "fail")

    def test_garbage(self):
        with self.assertRaises(TypeError):
            classify("append", "not a reply")

    def test_error_string(self):
        self.assertEqual(error_string(reply_err("timeout", "gave up")), "timeout: gave up")
        self.assertEqual(error_string(reply_err("timeout", "")), "timeout")
        self.assertTrue(error_string(TimeoutError("no data")).startswith("client-timeout"))
        self.assertTrue(error_string(Closed(1006, "lost")).startswith("connection-lost"))


class PairOpsTest(unittest.TestCase):
    def test_problems(self):
        h = HistoryWriter(None)
        for r in [
            {"type": "invoke", "process": 0, "f": "append", "key": 0, "value": 1},
            {"type": "info", "process": 0, "f": "append", "key": 0, "value": 1},
            {"type": "invoke", "process": 0, "f": "append", "key": 0, "value": 2},  # reuse
            {"type": "invoke", "process": 1, "f": "read", "key": 0, "value": None},
            {"type": "invoke", "process": 1, "f": "read", "key": 1, "value": None},  # twice
            {"type": "ok", "process": 2, "f": "read", "key": 0, "value": []},  # orphan
        ]:
            h.op(r)
        h.nemesis("start", "x")
        pairs, problems = pair_ops(h.records)
        self.assertEqual(len(pairs), 4)
        self.assertEqual(len(problems), 3, problems)
        self.assertTrue(any("reused" in p for p in problems))
        self.assertTrue(any("invoked again" in p for p in problems))
        self.assertTrue(any("without invoke" in p for p in problems))

    def test_clean(self):
        h = HistoryWriter(None)
        h.op({"type": "invoke", "process": 0, "f": "append", "key": 0, "value": 1})
        h.op({"type": "invoke", "process": 1, "f": "read", "key": 0, "value": None})
        h.op({"type": "ok", "process": 1, "f": "read", "key": 0, "value": [1]})
        h.op({"type": "ok", "process": 0, "f": "append", "key": 0, "value": 1})
        pairs, problems = pair_ops(h.records)
        self.assertEqual(problems, [])
        self.assertEqual([(a["index"], b["index"]) for a, b in pairs], [(0, 3), (1, 2)])


class WorkloadPureTest(unittest.TestCase):
    def test_gateways(self):
        self.assertEqual(wl._norm_gateways(["10.77.0.11:7300", "http://10.77.0.12:7300/"]),
                         [(1, "10.77.0.11:7300"), (2, "10.77.0.12:7300")])
        self.assertEqual(wl._norm_gateways({3: "a:1", 1: "b:2"}), [(1, "b:2"), (3, "a:1")])
        self.assertEqual(wl._norm_gateways([(5, "a:1"), {"node": 2, "addr": "b:2"}]),
                         [(5, "a:1"), (2, "b:2")])

    def test_subscriber_cursor_is_gap_free(self):
        w = wl.Workload(["127.0.0.1:1"], keys=1, concurrency=1, subscribers=1)
        w.key_conv = {0: 77}
        w.conv_key = {77: 0}
        w.conv_seq0 = {77: 1}
        s = wl._Subscriber(w, 0)
        self.assertEqual(s.cursors, {77: 1})
        for seq in (2, 3, 5, 6):
            s._handle({"type": "event", "conv": 77, "seq": seq, "event": "message",
                       "body": str(seq * 10)})
        self.assertEqual(s.cursors[77], 3)  # 4 is missing: the next sync asks from 3
        s._handle({"type": "event", "conv": 77, "seq": 4, "event": "message", "body": "40"})
        self.assertEqual(s.cursors[77], 6)
        s._handle({"type": "event", "conv": 99, "seq": 1, "event": "message", "body": "1"})
        s._handle({"type": "event", "conv": 77, "seq": 0, "event": "receipt"})
        evs = [r for r in w.fanout.records if r["kind"] == "event"]
        self.assertEqual([(r["seq"], r["value"], r["key"]) for r in evs],
                         [(2, 20, 0), (3, 30, 0), (5, 50, 0), (6, 60, 0), (4, 40, 0)])
        s._handle({"type": "goodbye", "code": "slow_consumer", "message": "m"})
        self.assertEqual(s._goodbye, ("slow_consumer", "m"))


if __name__ == "__main__":
    unittest.main(verbosity=1)
