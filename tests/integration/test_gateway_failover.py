"""Gateway failover: clients on all three gateways keep chatting while the leader
node of the busiest conversation's shard is killed with SIGKILL (taking its
gateway with it) and restarted, and then while the whole cluster is killed.

Senders retry after `unavailable`, `timeout` or a lost connection with the SAME
client_msg_id (on another gateway when theirs died).  Receivers that lose their
gateway reconnect elsewhere, `auth` with their token and `sync` their cursors.
Checked afterwards (docs/protocol.md):

  - every acked message is in the final history exactly once, at its acked seq;
    history seqs are contiguous from 1 and ts never decreases;
  - a receiver connection that stayed up saw, per conversation, seqs 1, 2, 3 ...
    with no gap and no duplicate; a reconnected one, from its sync on, gets
    exactly cursor+1, cursor+2, ... (what it missed, then live events);
  - every delivered event is in the final history, identical (delivered implies
    committed);
  - the replicas agree, and a kill -9 of every node loses no acked message.

No timing assertions: every wait is bounded and only fails on a timeout far
beyond what the work needs.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402
from wsclient import ApiError, Closed, WsClient, shard_of_conv  # noqa: E402

PASSWORD = "password-failover"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
RETRY_CODES = ("unavailable", "timeout")
REQ_TIMEOUT = 20.0   # a write answers within gateway.deadline_ms (10 s) plus slack
GIVE_UP_S = 90.0     # one message still unacked after this long is a failure

c = None
state = {}
MEMBER_OF = {}  # conv -> a member who reads it


def gateways():
    return [n["gateway"] for n in c.conf["nodes"]]


def gw_of(node):
    return [n["gateway"] for n in c.conf["nodes"] if n["id"] == node][0]


def node_of_gw(addr):
    return [n["id"] for n in c.conf["nodes"] if n["gateway"] == addr][0]


def setup():
    global c

    def tweak(conf):
        conf["auth"]["scrypt_log2_n"] = 10  # cheap registrations
        # rate limits are not under test here: keep them out of the way
        conf["gateway"] = {"rate": {"send_per_s": 100000, "send_burst": 100000,
                                    "login_per_s": 1000, "login_burst": 1000}}
    c = Cluster("gwfail", offset=6000, tweak=tweak)
    c.up()
    c.wait_all_leaders()
    tokens = {}
    for i, u in enumerate(USERS):
        w = WsClient(gateways()[i % 3])
        tokens[u] = w.request("register", user=u, password=PASSWORD)["token"]
        w.close()
    state["tokens"] = tokens


def connect(addr, user, timeout=REQ_TIMEOUT):
    """A WebSocket on addr authenticated with the user's token.  Raises ApiError /
    Closed / OSError / TimeoutError; a failed auth closes the socket."""
    w = WsClient(addr, timeout=timeout)
    try:
        w.request("auth", token=state["tokens"][user], timeout=timeout)
    except BaseException:
        w.sock.close()
        raise
    return w


def connect_somewhere(user, prefer, deadline, avoid=None):
    """Tries the gateways starting at `prefer` until one authenticates user."""
    addrs = gateways()
    i = addrs.index(prefer)
    last = None
    while time.monotonic() < deadline:
        addr = addrs[i % len(addrs)]
        i += 1
        if avoid is not None and addr == avoid():
            continue
        try:
            return connect(addr, user), addr
        except ApiError as e:
            if e.code not in RETRY_CODES:
                raise
            last = e
        except (Closed, OSError, TimeoutError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError("%s could not connect to any gateway: %r" % (user, last))


# ---- senders ---------------------------------------------------------------------------

class Sender(threading.Thread):
    """Sends messages to one conversation as one user until told to stop; every
    message is retried with its client_msg_id until acked."""

    def __init__(self, name, user, conv, addr):
        super().__init__(daemon=True)
        self.tag, self.user, self.conv, self.addr = name, user, conv, addr
        self.acks = {}        # cmid -> (seq, ts, body)
        self.acks_order = []  # cmids in ack order
        self.retries = 0
        self.reconnects = 0
        self.errors = []      # definitive errors that should not happen
        self.stop = threading.Event()
        self.n = 0
        self.w = None

    def _ensure(self, deadline):
        if self.w is None:
            self.w, self.addr = connect_somewhere(self.user, self.addr, deadline)
            self.reconnects += 1

    def _drop(self):
        if self.w is not None:
            try:
                self.w.sock.close()
            except OSError:
                pass
        self.w = None
        # next time start with the following gateway (ours may be dead)
        addrs = gateways()
        self.addr = addrs[(addrs.index(self.addr) + 1) % len(addrs)]

    def send_one(self, cmid, body):
        deadline = time.monotonic() + GIVE_UP_S
        first = True
        while time.monotonic() < deadline:
            if not first:
                self.retries += 1
            first = False
            try:
                self._ensure(deadline)
                r = self.w.request("send", timeout=REQ_TIMEOUT, conv=self.conv,
                                   client_msg_id=cmid, body=body)
                self.w.pushes.clear()  # senders do not check their own pushes
                return r
            except ApiError as e:
                if e.code in RETRY_CODES:
                    time.sleep(0.2)
                    continue
                if e.code == "rate_limited":
                    time.sleep(e.reply["error"].get("retry_after_ms", 100) / 1000.0)
                    continue
                self.errors.append("%s: send %s -> %s" % (self.tag, cmid, e))
                return None
            except (Closed, OSError, TimeoutError):
                self._drop()
                time.sleep(0.2)
        self.errors.append("%s: %s never acked within %ds" % (self.tag, cmid, GIVE_UP_S))
        return None

    def run(self):
        try:
            while not self.stop.is_set():
                self.n += 1
                cmid = "%s-%d" % (self.tag, self.n)
                body = "m %s %d" % (self.tag, self.n)
                r = self.send_one(cmid, body)
                if r is None:
                    if self.errors:
                        return
                    continue
                if r["conv"] != self.conv:
                    self.errors.append("%s: ack for conv %r" % (self.tag, r["conv"]))
                self.acks[cmid] = (r["seq"], r["ts"], body)
                self.acks_order.append(cmid)
        except Exception as e:  # noqa: BLE001 -- reported by the test
            self.errors.append("%s: %r" % (self.tag, e))
        finally:
            if self.w is not None:
                self.w.close()


# ---- receivers -------------------------------------------------------------------------

class Receiver(threading.Thread):
    """One device of a user that only listens.  Every push is logged with the
    connection epoch it arrived on; after a reconnect it syncs its cursors."""

    def __init__(self, name, user, addr, convs):
        super().__init__(daemon=True)
        self.tag, self.user, self.addr, self.convs = name, user, addr, list(convs)
        self.epochs = []   # [{"addr", "cursors", "events": [(conv, seq, ev, after_reply)]}]
        self.errors = []
        self.closes = []   # why connections ended
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.w = None

    def have(self, conv):
        """The last seq of conv this device holds without a hole."""
        return contiguous_prefix(self, conv)

    def _open_epoch(self, deadline):
        self.w, self.addr = connect_somewhere(self.user, self.addr, deadline)
        cursors = {str(cv): self.have(cv) for cv in self.convs}
        ep = {"addr": self.addr, "cursors": dict((int(k), v) for k, v in cursors.items()),
              "events": [], "synced": False}
        self.epochs.append(ep)
        rid = self.w.send_request("sync", cursors=cursors)
        reply = self.w.wait_reply(rid, timeout=60)
        self._take(ep, after_reply=False)
        if not reply.get("ok"):
            raise ApiError(reply["error"]["code"], reply["error"].get("message"), reply)
        ep["synced"] = True
        return ep

    def _take(self, ep, after_reply):
        for m in self.w.pushes:
            if m.get("type") == "event" and m.get("seq", 0) > 0:
                ep["events"].append((m["conv"], m["seq"], m, after_reply))
            elif m.get("type") == "goodbye":
                self.closes.append("goodbye %s" % m.get("code"))
        self.w.pushes.clear()

    def run(self):
        deadline_total = time.monotonic() + 600
        ep = None
        while not self.stop.is_set() and time.monotonic() < deadline_total:
            try:
                if self.w is None:
                    ep = self._open_epoch(time.monotonic() + GIVE_UP_S)
                    self.ready.set()
                self.w.poll(0.3)
                self._take(ep, after_reply=True)
            except ApiError as e:
                if e.code not in RETRY_CODES:
                    self.errors.append("%s: %s" % (self.tag, e))
                    return
                self._lost("sync: %s" % e.code, ep)
            except (Closed, OSError, TimeoutError) as e:
                self._lost(repr(e), ep)
            except AssertionError as e:
                self.errors.append("%s: %s" % (self.tag, e))
                return
        if self.w is not None:
            self._take(ep, after_reply=True)
            self.w.close()

    def _lost(self, why, ep):
        if self.w is not None:
            if ep is not None:
                self._take(ep, after_reply=ep.get("synced", False))
            try:
                self.w.sock.close()
            except OSError:
                pass
        self.closes.append("%s on %s" % (why, self.addr))
        self.w = None
        addrs = gateways()
        self.addr = addrs[(addrs.index(self.addr) + 1) % len(addrs)]
        time.sleep(0.2)


def runs(evs):
    """[(seq, after_reply)] as compact runs "a-b" ('*' marks after the sync reply)."""
    out = []
    for seq, after in evs:
        if out and out[-1][1] + 1 == seq and out[-1][2] == after:
            out[-1][1] = seq
        else:
            out.append([seq, seq, after])
    return " ".join("%d-%d%s" % (a, b, "*" if f else "") for a, b, f in out)


def split_epoch(ep, conv):
    """An epoch's pushes of conv as (A, B): A = live events pushed between auth
    and the server handling the sync (the sync then starts over from the
    cursor), B = the stream from the cursor on.  Raises AssertionError on any
    gap, duplicate or reordering outside that one documented restart.  An epoch
    whose connection died before the sync reply is not judged (which of its
    pushes were live and which replayed is unknowable); the next epoch syncs
    from what the earlier ones proved."""
    if not ep["synced"]:
        return [], []
    cur = ep["cursors"].get(conv, 0)
    evs = [(s, after) for cv, s, _, after in ep["events"] if cv == conv]
    seqs = [s for s, _ in evs]
    split = 0
    for i in range(1, len(seqs)):
        if seqs[i] <= seqs[i - 1]:
            split = i
            break
    a, b = evs[:split], evs[split:]
    if a:
        aseq = [s for s, _ in a]
        assert aseq == list(range(aseq[0], aseq[0] + len(aseq))), \
            "live pushes before the sync are not contiguous: %r" % aseq[:30]
        assert aseq[0] > cur, "a live push at or below the cursor %d: %r" % (cur, aseq[:30])
        assert not any(after for _, after in a), \
            "the sync's restart from the cursor came after its reply"
    bseq = [s for s, _ in b]
    if bseq:
        assert bseq == list(range(cur + 1, cur + 1 + len(bseq))), \
            "from cursor %d the pushes are not %d, %d, ...: %r" % (
                cur, cur + 1, cur + 2, bseq[:40])
    return [s for s, _ in a], bseq


def contiguous_prefix(rx, conv):
    """The highest seq such that rx's accepted streams hold 1..seq."""
    have = 0
    for ep in rx.epochs:
        try:
            a, b = split_epoch(ep, conv)
        except AssertionError:
            return have  # reported by the checker
        if b:
            have = max(have, b[-1])
        elif a and a[0] == have + 1:
            have = max(have, a[-1])
    return have


# ---- reading the truth -----------------------------------------------------------------

def full_history(w, conv):
    """Every event of conv through the WebSocket history op (ascending pages)."""
    events, after = [], 0
    while True:
        r = w.request("history", conv=conv, after=after, limit=200, timeout=60)
        events += r["events"]
        if not r["has_more"] or not r["events"]:
            return events, r["last_seq"]
        after = r["events"][-1]["seq"]


def read_truth(convs):
    """{conv: (events, last_seq)}, each read as one of its members."""
    out = {}
    deadline = time.monotonic() + 60
    for user in sorted({MEMBER_OF[cv] for cv in convs}):
        w, _ = connect_somewhere(user, gateways()[0], deadline)
        try:
            for cv in convs:
                if MEMBER_OF[cv] == user:
                    out[cv] = full_history(w, cv)
        finally:
            w.close()
    return out


def check_history(conv, events, last_seq, acks):
    """acks: {cmid: (seq, ts, body)} for this conversation."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), \
        "conv %d: history seqs not contiguous from 1: %r" % (conv, seqs[:40])
    assert last_seq == len(events), "conv %d: last_seq %d but %d events" % (
        conv, last_seq, len(events))
    assert events[0]["event"] == "created", "conv %d starts with %r" % (conv, events[0])
    ts = [e["ts"] for e in events]
    assert all(x <= y for x, y in zip(ts, ts[1:])), "conv %d: ts decreases" % conv
    seen = {}
    for e in events[1:]:
        assert e["event"] == "message", "conv %d: unexpected event %r" % (conv, e)
        key = (e["from"], e["client_msg_id"])
        assert key not in seen, "conv %d: %r stored twice, at seq %d and %d" % (
            conv, key, seen[key], e["seq"])
        seen[key] = e["seq"]
    by_cmid = {e["client_msg_id"]: e for e in events[1:]}
    lost = [k for k in acks if k not in by_cmid]
    assert not lost, "conv %d: %d acked messages missing from history, e.g. %r" % (
        conv, len(lost), lost[:5])
    for cmid, (seq, ts_, body) in acks.items():
        e = by_cmid[cmid]
        assert e["seq"] == seq, "conv %d: %s acked at seq %d, stored at %d" % (
            conv, cmid, seq, e["seq"])
        assert e["body"] == body and e["ts"] == ts_, \
            "conv %d: %s stored as %r, acked as %r" % (conv, cmid, e, (seq, ts_, body))


def same_event(pushed, stored):
    p = dict(pushed)
    p.pop("type", None)
    return p == stored


def check_receivers(receivers, truth, killed_gw):
    stayed_up = 0
    for rx in receivers:
        assert not rx.errors, rx.errors
        for conv in rx.convs:
            events, last_seq = truth[conv]
            for i, ep in enumerate(rx.epochs):
                try:
                    split_epoch(ep, conv)
                except AssertionError as e:
                    raise AssertionError("%s (%s) epoch %d on %s, conv %d: %s" % (
                        rx.tag, rx.user, i, ep["addr"], conv, e))
                for cv, seq, m, _ in ep["events"]:
                    if cv != conv:
                        continue
                    assert seq <= last_seq and same_event(m, events[seq - 1]), \
                        "%s got %r, which is not the committed event %r" % (
                            rx.tag, m, events[seq - 1] if seq <= last_seq else None)
            have = contiguous_prefix(rx, conv)
            assert have == last_seq, "%s (%s): holds conv %d up to %d of %d (closes: %r)" % (
                rx.tag, rx.user, conv, have, last_seq, rx.closes)
        if len(rx.epochs) == 1:
            stayed_up += 1
    return stayed_up


# ---- the scenario ----------------------------------------------------------------------

def build_world(prefix):
    """Conversations and the senders and receivers for them."""
    gws = gateways()
    owner = WsClient(gws[0])
    owner.request("auth", token=state["tokens"]["alice"])
    group = owner.request("create", kind="group", name=prefix + "-room",
                          members=USERS[1:])["conv"]
    directs = {}
    for a, b in (("alice", "bob"), ("carol", "dave"), ("erin", "frank")):
        w = WsClient(gws[USERS.index(a) % 3])
        w.request("auth", token=state["tokens"][a])
        directs[(a, b)] = w.request("create", kind="direct", members=[b])["conv"]
        w.close()
    owner.close()
    MEMBER_OF[group] = "alice"
    for (a, b), cv in directs.items():
        MEMBER_OF[cv] = a
    convs_of = {u: [group] + [cv for pair, cv in directs.items() if u in pair] for u in USERS}
    receivers = []
    for i, u in enumerate(USERS):
        for k in (0, 1):  # two devices per user on different gateways
            receivers.append(Receiver("%s-rx%d-%s" % (prefix, k, u), u, gws[(i + k) % 3],
                                      convs_of[u]))
    senders = [Sender("%s-g-%s" % (prefix, u), u, group, gws[i % 3])
               for i, u in enumerate(("alice", "bob", "carol"))]
    senders += [Sender("%s-d-%s" % (prefix, a), a, cv, gws[(USERS.index(a) + 1) % 3])
                for (a, b), cv in directs.items()]
    return group, [group] + list(directs.values()), senders, receivers


def start_all(senders, receivers):
    for rx in receivers:
        rx.start()
    for rx in receivers:
        assert rx.ready.wait(60), "%s never connected: %r %r" % (rx.tag, rx.errors, rx.closes)
    for s in senders:
        s.start()


def total_acks(senders):
    return sum(len(s.acks) for s in senders)


def wait_progress(senders, more_each, what, timeout=90):
    base = [len(s.acks) for s in senders]
    c.wait(what, lambda: all(len(s.acks) >= b + more_each or s.errors
                             for s, b in zip(senders, base)), timeout=timeout, interval=0.1)
    for s in senders:
        assert not s.errors, s.errors


def stop_senders(senders):
    for s in senders:
        s.stop.set()
    for s in senders:
        s.join(GIVE_UP_S + 30)
        assert not s.is_alive(), "%s still sending" % s.tag
        assert not s.errors, s.errors


def check_acked(convs, senders):
    """The final history (read as members over the WebSocket) against the acks."""
    truth = read_truth(convs)
    for cv in convs:
        acks = {}
        for s in senders:
            if s.conv == cv:
                acks.update(s.acks)
        check_history(cv, truth[cv][0], truth[cv][1], acks)
    return truth


def settle_receivers(receivers, truth):
    """Waits (bounded) until every receiver holds every conversation to its end;
    a broken stream fails at once rather than after the wait."""
    last = {cv: h[1] for cv, h in truth.items()}
    deadline = time.monotonic() + 60
    try:
        while True:
            behind = []
            for rx in receivers:
                assert not rx.errors, rx.errors
                for cv in rx.convs:
                    for i, ep in enumerate(list(rx.epochs)):
                        try:
                            split_epoch(ep, cv)
                        except AssertionError as e:
                            raise AssertionError(
                                "%s (%s) epoch %d on %s (cursor %d), conv %d: %s\n"
                                "    pushes: %s\n    earlier epochs: %s" % (
                                    rx.tag, rx.user, i, ep["addr"], ep["cursors"].get(cv, 0),
                                    cv, e, runs([(s, a) for v, s, _, a in ep["events"]
                                                 if v == cv]),
                                    [runs([(s, a) for v, s, _, a in p["events"] if v == cv])
                                     for p in rx.epochs[:i]]))
                    if rx.have(cv) < last[cv]:
                        behind.append("%s conv %d holds %d of %d (epochs %d, closes %r)" % (
                            rx.tag, cv, rx.have(cv), last[cv], len(rx.epochs),
                            rx.closes[-3:]))
            if not behind:
                break
            if time.monotonic() > deadline:
                raise AssertionError("receivers did not catch up:\n  " + "\n  ".join(behind))
            time.sleep(0.2)
    finally:
        for rx in receivers:
            rx.stop.set()
        for rx in receivers:
            rx.join(30)


def test_kill_leader_of_busiest_shard_under_chat_load():
    group, convs, senders, receivers = build_world("f1")
    shard = shard_of_conv(group, c.conf["shards"])
    start_all(senders, receivers)
    wait_progress(senders, 200, "load before the crash")
    victim = c.wait("a leader of shard %d" % shard, lambda: c.leader_of(shard), timeout=30)
    killed_gw = gw_of(victim)
    acked_before = total_acks(senders)
    c.kill9(victim)
    # keep chatting without the node: every sender makes progress, also those
    # whose gateway died
    wait_progress(senders, 200, "load with node %d down" % victim)
    c.start(victim)
    c.wait_all_leaders(timeout=60)
    wait_progress(senders, 100, "load after the restart")
    stop_senders(senders)
    truth = check_acked(convs, senders)
    settle_receivers(receivers, truth)
    stayed_up = check_receivers(receivers, truth, killed_gw)
    moved = [rx for rx in receivers if rx.epochs[0]["addr"] == killed_gw]
    assert moved and all(len(rx.epochs) >= 2 for rx in moved), \
        "receivers on the killed gateway did not reconnect: %r" % [
            (rx.tag, rx.closes) for rx in moved]
    dropped = [(rx.tag, rx.epochs[0]["addr"], rx.closes) for rx in receivers
               if rx.epochs[0]["addr"] != killed_gw and len(rx.epochs) > 1]
    assert not dropped, "connections to surviving gateways were dropped: %r" % dropped
    assert stayed_up == len(receivers) - len(moved)
    # the replicas agree with what clients read
    c.wait_converged(timeout=90)
    for cv in convs:
        want = [(e["seq"], e.get("client_msg_id")) for e in truth[cv][0]]
        for node in c.node_ids():
            got = [(e["seq"], e.get("client_msg_id")) for e in
                   c.ctl_jsonl("history", cv, "--limit", 1000000, "--node", node, "--stale")]
            assert got == want, "node %d's replica of conv %d differs" % (node, cv)
    print("    acked %d (%d before the kill of node %d, leader of shard %d), "
          "sender retries %d, reconnected receivers %d" % (
              total_acks(senders), acked_before, victim, shard,
              sum(s.retries for s in senders), len(moved)))
    state["f1"] = (convs, senders, truth)


def test_whole_cluster_kill9_keeps_every_acked_message():
    group, convs, senders, receivers = build_world("f2")
    start_all(senders, receivers)
    wait_progress(senders, 100, "load before the crash")
    acked_before = total_acks(senders)
    for node in c.node_ids():
        c.kill9(node)
    time.sleep(0.5)  # let the senders notice; not a measurement
    c.up()
    c.wait_all_leaders(timeout=60)
    wait_progress(senders, 50, "load after the restart")
    stop_senders(senders)
    truth = check_acked(convs, senders)
    # the first scenario's conversations survived the crash unchanged
    if "f1" in state:
        convs1, _, truth1 = state["f1"]
        now = read_truth(convs1)
        for cv in convs1:  # (the direct conversations carried on in this test)
            assert now[cv][0][:len(truth1[cv][0])] == truth1[cv][0], \
                "conv %d changed across kill -9 of every node" % cv
    # and the devices, which all lost their gateway, resynced without gap or
    # duplicate
    settle_receivers(receivers, truth)
    check_receivers(receivers, truth, killed_gw=None)
    print("    acked %d (%d before the kill -9 of every node), sender retries %d" % (
        total_acks(senders), acked_before, sum(s.retries for s in senders)))


def test_login_then_sync_delivers_what_was_missed():
    """A device that reconnects with `login` (which also authenticates the
    connection) and then syncs gets the events after its cursor, like after
    `auth`."""
    gws = gateways()
    a = WsClient(gws[0])
    a.request("auth", token=state["tokens"]["alice"])
    conv = a.request("create", kind="group", name="quiet", members=["bob"])["conv"]
    for i in range(5):
        a.request("send", conv=conv, client_msg_id="q-%d" % i, body="quiet %d" % i)
    a.close()
    for how in ("auth", "login"):
        w = WsClient(gws[1])
        if how == "auth":
            w.request("auth", token=state["tokens"]["bob"])
        else:
            w.request("login", user="bob", password=PASSWORD)
        r = w.request("sync", cursors={str(conv): 2})
        got = [m["seq"] for m in w.pushes if m.get("type") == "event" and m["conv"] == conv]
        w.close()
        assert r == {"synced": 1} and got == [3, 4, 5, 6], \
            "after %s, sync from cursor 2 answered %r and pushed seqs %r before its " \
            "reply (want synced 1 and [3, 4, 5, 6])" % (how, r, got)


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_kill_leader_of_busiest_shard_under_chat_load,
                  test_whole_cluster_kill9_keeps_every_acked_message,
                  test_login_then_sync_delivers_what_was_missed)
    finally:
        teardown()
