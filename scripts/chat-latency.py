#!/usr/bin/env python3
"""Measures send->ack and send->delivered latency through the gateways of a running
cluster (default: the `make run` cluster), with the tests' stdlib WebSocket client.

    scripts/chat-latency.py [--gw1 127.0.0.1:7301] [--gw2 127.0.0.1:7302] [-n 2000]

One sender on gw1 sends sequentially (one message in flight, paced under the
per-user send rate limit) to a direct conversation; the receiver is connected to gw2.  send->ack is measured at the
sender; send->delivered is the time from the send until the receiver's socket has
the event (both clients are in this process, on one clock).  Figures include this
Python client's own overhead (tens of microseconds); the C benchmark tool
(chorus-bench) is the precise instrument.
"""
import argparse
import os
import select
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/integration"))
from wsclient import login  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gw1", default="127.0.0.1:7301")
    ap.add_argument("--gw2", default="127.0.0.1:7302")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--body", type=int, default=200, help="message body bytes")
    ap.add_argument("--rate", type=float, default=40,
                    help="messages per second at most (the gateway's default send limit "
                         "is 50/s per user; 0 = no pacing)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every 50th sample")
    a = ap.parse_args()
    tag = "%x" % (int(time.time() * 1000) & 0xFFFFFF)
    s = login(a.gw1, "lat-s-" + tag, "latency-password")
    r = login(a.gw2, "lat-r-" + tag, "latency-password")
    conv = s.request("create", kind="direct", members=["lat-r-" + tag])["conv"]
    r.wait_events(conv, 1, kind="created")
    s.wait_events(conv, 1, kind="created")
    body = "x" * a.body
    acks, deliv = [], []
    gap = 1.0 / a.rate if a.rate > 0 else 0
    for i in range(a.n):
        if gap:
            time.sleep(max(0.0, gap - (time.perf_counter() - t0)) if i else 0)
        t0 = time.perf_counter()
        rid = s.send_request("send", conv=conv, client_msg_id="m%d" % i, body=body)
        got_ack = got_ev = None
        while got_ack is None or got_ev is None:
            if got_ack is None and rid in s.replies:
                rep = s.replies.pop(rid)
                assert rep["ok"], rep
                got_ack = time.perf_counter()
            if got_ev is None and any(m.get("type") == "event" for m in r.pushes):
                r.pushes.clear()
                got_ev = time.perf_counter()
            if got_ack is not None and got_ev is not None:
                break
            ready, _, _ = select.select([s.sock, r.sock], [], [], 10)
            if not ready:
                raise SystemExit("no answer within 10 s")
            if s.sock in ready or s.buf:
                s._pump(time.monotonic() + 10)
            if r.sock in ready or r.buf:
                r._pump(time.monotonic() + 10)
        s.pushes.clear()
        acks.append((got_ack - t0) * 1e6)
        deliv.append((got_ev - t0) * 1e6)
        if a.verbose and i % 50 == 0:
            print("%5d ack %8.0f us  delivered %8.0f us" % (i, acks[-1], deliv[-1]))
    print("messages %d, body %d bytes, sender on %s, receiver on %s" %
          (a.n, a.body, a.gw1, a.gw2))
    for name, v in (("send->ack", acks), ("send->delivered", deliv)):
        print("%-16s p50 %7.0f us  p99 %7.0f us  p999 %7.0f us" %
              (name, pct(v, 0.5), pct(v, 0.99), pct(v, 0.999)))


if __name__ == "__main__":
    main()
