"""Slow consumers: a client that stops reading gets a bounded output queue on its
gateway, then a `goodbye` with code `slow_consumer` and a closed connection —
never a silent drop.  It reconnects, syncs from the last seq it has and receives
exactly the rest: every message once, in order.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402
from wsclient import Closed, WsClient, login  # noqa: E402

# More than the kernel's socket buffers on loopback hold (the server's send buffer
# grows to a few MiB), so the gateway's own queue has to take the rest.
MESSAGES = 200
BODY = "x" * 60000
QUEUE = 256 * 1024  # gateway.max_queue_bytes: a few events

cluster = None
GW = []


def setup():
    global cluster

    def tweak(conf):
        conf["gateway"] = {"max_queue_bytes": QUEUE,
                           "rate": {"send_per_s": 10000, "send_burst": 10000,
                                    "login_per_s": 1000, "login_burst": 1000}}

    cluster = Cluster("gwslow", offset=9000, tweak=tweak)
    cluster.up()
    cluster.wait_all_leaders()
    GW[:] = [n["gateway"] for n in cluster.conf["nodes"]]


def test_slow_consumer_is_told_and_resumes_by_sync():
    sender = login(GW[0], "slow-sender", "password-slow")
    first = WsClient(GW[1])
    token = first.request("register", user="slow-reader", password="password-slow")["token"]
    first.close()
    reader = WsClient(GW[1], rcvbuf=4096)
    reader.request("auth", token=token)
    conv = sender.request("create", kind="group", members=["slow-reader"])["conv"]
    reader.wait_events(conv, 1, kind="created")
    # the reader stops reading; the sender keeps going (acks only: its own events
    # are read as they come so that the sender is not the slow one)
    for i in range(MESSAGES):
        sender.request("send", conv=conv, client_msg_id="s%d" % i, body=BODY)
    # now read what the reader's socket holds: events in order, then the goodbye
    seqs, goodbye = [], None
    try:
        while True:
            m = reader.read_message(30)
            if m.get("type") == "event" and m.get("conv") == conv and m.get("seq"):
                seqs.append(m["seq"])
            elif m.get("type") == "goodbye":
                goodbye = m
    except (Closed, OSError, TimeoutError) as e:
        closed = e
    assert goodbye is not None and goodbye["code"] == "slow_consumer", \
        (goodbye, closed, len(seqs))
    assert len(seqs) < MESSAGES, "the reader was never cut off (%d events)" % len(seqs)
    assert seqs == list(range(2, 2 + len(seqs))), "pushes before the goodbye: %r" % seqs[:20]
    # reconnect elsewhere and sync from the last seq the reader has
    have = seqs[-1] if seqs else 1
    again = WsClient(GW[2])
    again.request("auth", token=token)
    rid = again.send_request("sync", cursors={str(conv): have})
    got = []
    while True:
        m = again.read_message(30)
        if m.get("type") == "reply" and m.get("id") == rid:
            assert m["ok"], m
            break
        if m.get("type") == "event" and m.get("conv") == conv and m.get("seq"):
            got.append(m["seq"])
    last = 1 + MESSAGES
    assert got == list(range(have + 1, last + 1)), \
        "after sync from %d: %d events, first %r last %r" % (
            have, len(got), got[:3], got[-3:])
    # and the gateway that cut the reader off is healthy
    assert sender.request("ping") == {}
    for c in (sender, again):
        c.close()


if __name__ == "__main__":
    setup()
    run_tests(test_slow_consumer_is_told_and_resumes_by_sync)
