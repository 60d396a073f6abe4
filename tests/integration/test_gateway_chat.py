"""End-to-end chat through the gateways of a real 3-node cluster (docs/protocol.md).

One cluster ("gwchat", ports shifted by 5000) serves every case; each case uses
its own fresh user names, so the cases are independent of each other.  Clients
connect to different gateways on purpose: every delivery below crosses nodes.

Checked:
 - direct chat both ways: acks carry seq/ts, both members and the sender's other
   devices get every event in seq order, a retried client_msg_id answers the first
   seq with dup and pushes nothing;
 - a 50-member group over 3 gateways, several concurrent senders: every member gets
   every event exactly once, in order, seqs contiguous; created/member_added;
 - offline sync: exactly the missed events, pushed before the sync reply, then
   live events; also a sync racing with concurrent sends (no gap, no duplicate);
 - register/login as a WebSocket's first op: a sync, a create or a send right
   after the answer loses nothing;
 - multi-device delivery and receipts seen by the other device and members;
 - receipts and unread counts (conversations/get cursors, dup for lower seqs);
 - typing across gateways (never in history), its rate limit;
 - presence across gateways (online/offline pushes, last_seen, several devices);
 - edit/delete/react events and their permissions;
 - history pagination backwards and forwards over 120 messages;
 - group member management (roles, remove, leave, owner hand-over, what a
   removed member still receives);
 - profiles and settings round trips;
 - a direct conversation's second `create` (dup) answering the first ts;
 - the REST API (status codes, bearer auth, REST writes seen on a WebSocket),
   /healthz, ops before auth; then 70 concurrent REST requests (all answered,
   every gateway still up).  The REST cases run last: a gateway crash there
   must not hide the other results.

Every wait is bounded (default 30 s); nothing asserts that anything is fast.
"""
import functools
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402
from wsclient import ApiError, WsClient, login, request_retrying, rest  # noqa: E402

PASSWORD = "password-xxxx"
WAIT = 30.0  # seconds: upper bound of every wait

cluster = None
GW = []        # gateway addresses, node order
OPEN = []      # clients of the running case, closed when it ends


# ---- helpers -------------------------------------------------------------------------------

def case(fn):
    """Closes every client the case opened, whatever its outcome."""
    @functools.wraps(fn)
    def run():
        try:
            fn()
        finally:
            while OPEN:
                OPEN.pop().close()
    return run


TOKENS = {}    # user -> token
TOKENS_LOCK = threading.Lock()


def token_of(user):
    """A token for user, registered on first use (scrypt is slow: once per user).

    Over a short-lived WebSocket, not REST: REST requests can crash the gateway
    (see test_rest_api and test_concurrent_rest_requests, run last), which would
    take every other case down with it."""
    with TOKENS_LOCK:
        if user in TOKENS:
            return TOKENS[user]
    c = WsClient(GW[sum(user.encode()) % len(GW)], timeout=WAIT)
    try:
        try:
            r = request_retrying(c, "register", user=user, password=PASSWORD)
        except ApiError as e:
            if e.code != "conflict":
                raise
            r = request_retrying(c, "login", user=user, password=PASSWORD)
    finally:
        c.close()
    with TOKENS_LOCK:
        TOKENS[user] = r["token"]
    return r["token"]


def connect(gw, user):
    """A WebSocket client on gateway index gw, authenticated as user with `auth`
    (register/login as a connection's first op are tested on their own, in
    test_sync_right_after_a_websocket_login and test_events_right_after_...)."""
    c = WsClient(GW[gw % len(GW)], timeout=WAIT)
    OPEN.append(c)
    r = c.request("auth", token=token_of(user))
    assert r["user"] == user and r["expires"] > time.time(), r
    return c


def connect_many(specs):
    """[(gw, user), ...] -> authenticated clients (registered and connected in parallel)."""
    out = [None] * len(specs)
    errors = []

    def one(i, gw, user):
        try:
            token_of(user)
            c = WsClient(GW[gw % len(GW)], timeout=WAIT)
            r = c.request("auth", token=token_of(user))
            assert r["user"] == user, r
            out[i] = c
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((user, e))

    threads = [threading.Thread(target=one, args=(i, gw, u)) for i, (gw, u) in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    OPEN.extend(c for c in out if c is not None)
    assert not errors, "logins failed: %r" % errors
    assert all(out), "a login did not finish"
    return out


def register(gw, user, **fields):
    """(client, token) of a freshly registered user."""
    c = WsClient(GW[gw % len(GW)], timeout=WAIT)
    OPEN.append(c)
    r = request_retrying(c, "register", user=user, password=PASSWORD, **fields)
    assert r["user"] == user and isinstance(r["token"], str) and r["expires"] > 0, r
    with TOKENS_LOCK:
        TOKENS[user] = r["token"]
    return c, r["token"]


def error_of(fn):
    """The error code fn raises (None if it succeeds)."""
    try:
        fn()
    except ApiError as e:
        return e.code
    return None


def seqs(events):
    return [e["seq"] for e in events]


def check_run(events, first, last, who=""):
    """events are exactly seqs first..last, each once, in order."""
    got = seqs(events)
    assert got == list(range(first, last + 1)), "%s: expected seqs %d..%d, got %s" % (
        who, first, last, got)


def receipts(c, conv, until_upto, frm=None):
    """Receipt pushes of conv (from `frm`) up to one with upto >= until_upto."""
    out = []

    def match(m):
        return (m.get("type") == "event" and m.get("event") == "receipt" and
                m.get("conv") == conv and (frm is None or m.get("from") == frm))
    while not out or out[-1]["upto"] < until_upto:
        out.append(c.next_push(match, timeout=WAIT))
    return out


def pipeline(c, op, items, **common):
    """Sends one request per item (dict of fields) without waiting, then collects
    the results in order (raises on the first error)."""
    rids = []
    for it in items:
        f = dict(common)
        f.update(it)
        rids.append(c.send_request(op, **f))
    out = []
    for rid in rids:
        r = c.wait_reply(rid, WAIT)
        assert r.get("ok"), "%s failed: %r" % (op, r)
        out.append(r["result"])
    return out


def setup():
    global cluster

    def tweak(conf):
        # many users register from one address here: the per-address login limit
        # is test_gateway_bad_input's business
        conf["gateway"] = {"rate": {"login_per_s": 1000, "login_burst": 1000},
                           # a small receive buffer: every request over 512 bytes
                           # (batched frames, long bodies) arrives in pieces and is
                           # reassembled (other suites run the default, whole frames)
                           "rx_buffer": 512}

    cluster = Cluster("gwchat", offset=5000, tweak=tweak)
    cluster.up()
    cluster.wait_all_leaders()
    GW[:] = [n["gateway"] for n in cluster.conf["nodes"]]
    # every gateway answers
    for gw in GW:
        cluster.wait("gateway %s" % gw, lambda gw=gw: rest(gw, "GET", "/healthz")[0] == 200,
                     timeout=WAIT)


# ---- 1. direct chat --------------------------------------------------------------------------

@case
def test_direct_chat_both_ways_across_gateways():
    alice, bob, alice2 = connect_many([(0, "c1alice"), (1, "c1bob"), (2, "c1alice")])
    created = alice.request("create", kind="direct", members=["c1bob"])
    conv = created["conv"]
    assert created["seq"] == 1 and created["dup"] is False and created["ts"] > 0, created
    again = bob.request("create", kind="direct", members=["c1alice"])
    assert again["conv"] == conv and again["dup"] is True and again["seq"] == 1, again

    # interleaved sends from both sides, each waiting for its ack
    sent = []  # (seq, ts, from, client_msg_id, body)
    for i in range(6):
        who, name = (alice, "c1alice") if i % 2 == 0 else (bob, "c1bob")
        body = "hello %d from %s" % (i, name)
        r = who.request("send", conv=conv, client_msg_id="m%d" % i, body=body)
        assert r["conv"] == conv and r["dup"] is False and r["ts"] > 0, r
        sent.append((r["seq"], r["ts"], name, "m%d" % i, body))
    assert [s[0] for s in sent] == list(range(2, 8)), sent
    assert all(sent[i][1] <= sent[i + 1][1] for i in range(len(sent) - 1)), \
        "ts decreased within a conversation: %r" % sent

    for c, who in ((alice, "alice@gw1"), (bob, "bob@gw2"), (alice2, "alice@gw3")):
        evs = c.wait_seq(conv, 7)
        check_run(evs, 1, 7, who)
        assert evs[0]["event"] == "created" and evs[0]["kind"] == "direct", evs[0]
        assert {m["user"] for m in evs[0]["members"]} == {"c1alice", "c1bob"}, evs[0]
        for e, (seq, ts, frm, cmid, body) in zip(evs[1:], sent):
            assert (e["event"], e["seq"], e["ts"], e["from"], e["client_msg_id"], e["body"]) == \
                ("message", seq, ts, frm, cmid, body), (who, e)

    # a retried client_msg_id: the first seq and ts, dup, nothing new pushed
    retry = alice.request("send", conv=conv, client_msg_id="m0", body="something else")
    assert (retry["seq"], retry["ts"], retry["dup"]) == (sent[0][0], sent[0][1], True), retry
    retry = bob.request("send", conv=conv, client_msg_id="m1", body="x")
    assert (retry["seq"], retry["ts"], retry["dup"]) == (sent[1][0], sent[1][1], True), retry
    marker = bob.request("send", conv=conv, client_msg_id="marker", body="after the retry")
    assert marker["seq"] == 8 and marker["dup"] is False, marker
    for c, who in ((alice, "alice@gw1"), (bob, "bob@gw2"), (alice2, "alice@gw3")):
        evs = c.wait_seq(conv, 8)
        check_run(evs, 8, 8, who)  # the dups pushed nothing before the marker
        assert evs[0]["client_msg_id"] == "marker", evs
    h = bob.request("history", conv=conv)
    assert h["last_seq"] == 8 and seqs(h["events"]) == list(range(1, 9)), h
    assert h["events"][1]["body"] == sent[0][4], "a dup changed the message: %r" % h["events"][1]


# ---- 2. a 50-member group --------------------------------------------------------------------

@case
def test_group_of_50_over_three_gateways():
    names = ["c2u%02d" % i for i in range(50)]
    cl = connect_many([(i, n) for i, n in enumerate(names)])
    owner = cl[0]
    first = names[1:30]   # members at creation (30 with the owner)
    later = names[30:]    # 20 added afterwards
    r = owner.request("create", kind="group", members=first, name="fifty")
    conv = r["conv"]
    assert r["seq"] == 1, r
    adds = pipeline(owner, "add_member", [{"user": u} for u in later], conv=conv)
    added_at = {u: a["seq"] for u, a in zip(later, adds)}
    assert sorted(added_at.values()) == list(range(2, 22)), added_at

    # three senders on three gateways (one of them added later), concurrently
    senders = [(cl[0], names[0]), (cl[10], names[10]), (cl[35], names[35])]
    rids = []
    for k in range(10):
        for c, n in senders:
            rids.append((c, c.send_request("send", conv=conv, client_msg_id="%s-%d" % (n, k),
                                           body="msg %d of %s" % (k, n))))
    acked = []
    for c, rid in rids:
        rep = c.wait_reply(rid, WAIT)
        assert rep["ok"], rep
        acked.append(rep["result"]["seq"])
    assert sorted(acked) == list(range(22, 52)), sorted(acked)
    want_ids = {"%s-%d" % (n, k) for _, n in senders for k in range(10)}

    for c, n in zip(cl, names):
        evs = c.wait_seq(conv, 51)
        start = 1 if n == names[0] or n in first else added_at[n]
        check_run(evs, start, 51, n)
        if start == 1:
            e = evs[0]
            assert e["event"] == "created" and e["kind"] == "group" and e["name"] == "fifty", e
            roles = {m["user"]: m["role"] for m in e["members"]}
            assert len(roles) == 30 and roles[names[0]] == "owner", roles
            assert all(roles[u] == "member" for u in first), roles
        else:
            e = evs[0]
            assert (e["event"], e["user"], e["role"], e["from"]) == \
                ("member_added", n, "member", names[0]), (n, e)
        for e in evs:
            if e["seq"] >= 2 and e["seq"] <= 21:
                assert e["event"] == "member_added" and added_at[e["user"]] == e["seq"], e
        msgs = [e["client_msg_id"] for e in evs if e["event"] == "message"]
        assert len(msgs) == 30 and set(msgs) == want_ids, (n, msgs)
    g = cl[49].request("get", conv=conv)
    assert g["last_seq"] == 51 and len(g["members"]) == 50, g
    assert {m["user"] for m in g["members"]} == set(names)


# ---- 3. offline sync -------------------------------------------------------------------------

@case
def test_offline_sync_gets_exactly_the_missed_events():
    alice, bob = connect_many([(0, "c3alice"), (1, "c3bob")])
    token = token_of("c3bob")
    d = alice.request("create", kind="direct", members=["c3bob"])["conv"]
    g = alice.request("create", kind="group", members=["c3bob"], name="g")["conv"]
    for i in range(3):
        alice.request("send", conv=d, client_msg_id="d%d" % i, body="d %d" % i)
    for i in range(2):
        alice.request("send", conv=g, client_msg_id="g%d" % i, body="g %d" % i)
    check_run(bob.wait_seq(d, 4), 1, 4, "bob d")
    check_run(bob.wait_seq(g, 3), 1, 3, "bob g")
    bob.close()
    OPEN.remove(bob)

    # while bob is away: d 5..9, g 4..7 and a new group h 1..3
    for i in range(3, 8):
        alice.request("send", conv=d, client_msg_id="d%d" % i, body="d %d" % i)
    for i in range(2, 6):
        alice.request("send", conv=g, client_msg_id="g%d" % i, body="g %d" % i)
    h = alice.request("create", kind="group", members=["c3bob"], name="h")["conv"]
    for i in range(2):
        alice.request("send", conv=h, client_msg_id="h%d" % i, body="h %d" % i)

    # back on another gateway, with the token
    bob = WsClient(GW[2], timeout=WAIT)
    OPEN.append(bob)
    bob.trace = []
    assert bob.request("auth", token=token)["user"] == "c3bob"
    listed = {x["conv"]: x for x in bob.request("conversations")["conversations"]}
    assert set(listed) == {d, g, h}, listed
    assert (listed[d]["last_seq"], listed[g]["last_seq"], listed[h]["last_seq"]) == (9, 7, 3)
    sync_id = bob.send_request("sync", cursors={str(d): 4, str(g): 3, str(h): 0})
    rep = bob.wait_reply(sync_id, WAIT)
    assert rep["ok"] and rep["result"]["synced"] == 3, rep  # n: the conversations synced
    pos = next(i for i, m in enumerate(bob.trace) if m.get("type") == "reply" and
               m.get("id") == sync_id)
    before = [m for m in bob.trace[:pos] if m.get("type") == "event" and m.get("seq", 0) > 0]
    for conv, first, last in ((d, 5, 9), (g, 4, 7), (h, 1, 3)):
        check_run([m for m in before if m["conv"] == conv], first, last,
                  "pushed before the sync reply, conv %d" % conv)
    assert len(before) == 5 + 4 + 3, [(m["conv"], m["seq"]) for m in before]
    assert [m["body"] for m in before if m["conv"] == d] == ["d %d" % i for i in range(3, 8)]
    assert before[[m["conv"] for m in before].index(h)]["event"] == "created"

    # live events continue from there: the very next events are the new ones
    ld = alice.request("send", conv=d, client_msg_id="live-d", body="live")["seq"]
    lg = alice.request("send", conv=g, client_msg_id="live-g", body="live")["seq"]
    assert (ld, lg) == (10, 8)
    bob.wait_seq(d, 10)
    bob.wait_seq(g, 8)
    after = [m for m in bob.trace[pos + 1:] if m.get("type") == "event" and m.get("seq", 0) > 0]
    assert [(m["conv"], m["seq"]) for m in after if m["conv"] == d] == [(d, 10)], after
    assert [(m["conv"], m["seq"]) for m in after if m["conv"] == g] == [(g, 8)], after
    assert not [m for m in after if m["conv"] == h], after
    bob.close()
    OPEN.remove(bob)

    # again, now with alice sending while bob's sync is being served
    for i in range(5):
        alice.request("send", conv=d, client_msg_id="e%d" % i, body="e %d" % i)  # 11..15
    bob = WsClient(GW[0], timeout=WAIT)
    OPEN.append(bob)
    bob.trace = []
    bob.request("auth", token=token)
    sync_id = bob.send_request("sync", cursors={str(d): 10})
    bob.request("ping")  # the gateway has read the sync before alice sends more
    rids = [alice.send_request("send", conv=d, client_msg_id="f%d" % i, body="f %d" % i)
            for i in range(10)]
    last = max(alice.wait_reply(r, WAIT)["result"]["seq"] for r in rids)
    assert last == 25, last
    evs = bob.wait_seq(d, 25)
    check_run(evs, 11, 25, "bob d during a racing sync")
    rep = bob.wait_reply(sync_id, WAIT)
    assert rep["ok"] and rep["result"]["synced"] == 1, rep
    order = []
    for m in bob.trace:
        if m.get("type") == "reply" and m.get("id") == sync_id:
            order.append("reply")
        elif m.get("type") == "event" and m.get("conv") == d:
            order.append(m["seq"])
    assert "reply" not in order[:5] and order[:5] == [11, 12, 13, 14, 15], \
        "the sync reply came before the missed events 11..15: %s" % order


@case
def test_sync_right_after_a_websocket_login():
    """The reconnect of protocol.md: `login` on the WebSocket (which authenticates
    it), then `sync` with the cursors.  The missed events must be pushed before
    the sync reply.  Repeated: the server bug this catches is a race."""
    alice = connect(0, "c3balice")
    bob = connect(1, "c3bbob")
    d = alice.request("create", kind="direct", members=["c3bbob"])["conv"]
    check_run(bob.wait_seq(d, 1), 1, 1, "bob")
    last = 1
    for rnd in range(5):
        bob.close()
        OPEN.remove(bob)
        for i in range(3):
            last = alice.request("send", conv=d, client_msg_id="r%d-%d" % (rnd, i),
                                 body="missed %d" % i)["seq"]
        bob = login(GW[(rnd + 2) % 3], "c3bbob", PASSWORD, register=False, timeout=WAIT)
        OPEN.append(bob)
        bob.trace = []
        sync_id = bob.send_request("sync", cursors={str(d): last - 3})
        rep = bob.wait_reply(sync_id, WAIT)
        pushed = [m["seq"] for m in bob.trace if m.get("type") == "event" and
                  m.get("conv") == d]
        assert rep["ok"] and rep["result"]["synced"] == 1 and \
            pushed == [last - 2, last - 1, last], \
            ("round %d: sync {%d: %d} right after login on %s answered %r; events pushed "
             "before the reply: %s (want %s)" % (rnd, d, last - 3, bob.addr, rep, pushed,
                                                 [last - 2, last - 1, last]))
        bob.events(d)  # seen in the trace: drop them from the queue
        live = alice.request("send", conv=d, client_msg_id="live%d" % rnd, body="live")["seq"]
        check_run(bob.wait_seq(d, live), live, live, "bob live after sync, round %d" % rnd)
        last = live


@case
def test_events_right_after_a_websocket_login():
    """protocol.md: after authentication (register/login also authenticate) the
    connection receives every new event of the user's conversations, including
    the `created` of one it joins later.  Here the client acts as soon as its
    register/login is answered.  Repeated: the server bug this catches is a race."""
    problems = []
    for rnd in range(5):
        xn, yn = "c3cx%d" % rnd, "c3cy%d" % rnd
        x = login(GW[rnd % 3], xn, PASSWORD, timeout=WAIT)           # WS register
        y = login(GW[(rnd + 1) % 3], yn, PASSWORD, timeout=WAIT)
        OPEN.extend([x, y])
        conv = x.request("create", kind="direct", members=[yn])["conv"]
        x.request("send", conv=conv, client_msg_id="a", body="first")
        for c, who in ((x, xn), (y, yn)):
            try:
                got = seqs(c.wait_seq(conv, 2, timeout=10))
            except TimeoutError as e:
                got = str(e)
            if got != [1, 2]:
                problems.append("round %d: %s (registered on %s just before the create) got "
                                "%s, want [1, 2]" % (rnd, who, c.addr, got))
        # an existing user logs in on a new device and sends at once
        x2 = login(GW[(rnd + 2) % 3], xn, PASSWORD, register=False, timeout=WAIT)
        OPEN.append(x2)
        s = x2.request("send", conv=conv, client_msg_id="b", body="from the new device")
        try:
            got = seqs(x2.wait_seq(conv, s["seq"], timeout=10))
        except TimeoutError as e:
            got = str(e)
        if got != [s["seq"]]:
            problems.append("round %d: %s's device that logged in on %s and sent seq %d at "
                            "once got %s, want [%d]" % (rnd, xn, x2.addr, s["seq"], got,
                                                        s["seq"]))
    assert not problems, "events lost right after a WebSocket login:\n  " + \
        "\n  ".join(problems)


# ---- 4. multi-device -------------------------------------------------------------------------

@case
def test_multi_device_delivery_and_receipts():
    c1, c2, c3, dave, erin = connect_many([(0, "c4carol"), (1, "c4carol"), (0, "c4carol"),
                                           (2, "c4dave"), (1, "c4erin")])
    conv = dave.request("create", kind="group", members=["c4carol", "c4erin"])["conv"]
    for i in range(3):
        dave.request("send", conv=conv, client_msg_id="m%d" % i, body="hi %d" % i)
    for c, who in ((c1, "carol@gw1"), (c2, "carol@gw2"), (c3, "carol@gw1 #2"),
                   (erin, "erin"), (dave, "dave")):
        check_run(c.wait_seq(conv, 4), 1, 4, who)

    # a receipt from one of carol's devices reaches her other devices and the members
    assert c1.request("receipt", conv=conv, kind="read", seq=4)["dup"] is False
    for c in (c1, c2, c3, dave, erin):
        r = receipts(c, conv, 4, frm="c4carol")
        assert [(x["kind"], x["upto"], x["seq"]) for x in r] == [("read", 4, 0)], r

    # a message from one device reaches the others
    s = c2.request("send", conv=conv, client_msg_id="from-c2", body="typed on device 2")
    assert s["seq"] == 5
    for c, who in ((c1, "carol@gw1"), (c2, "carol@gw2"), (c3, "carol@gw1 #2"),
                   (erin, "erin"), (dave, "dave")):
        evs = c.wait_seq(conv, 5)
        check_run(evs, 5, 5, who)
        assert evs[0]["from"] == "c4carol" and evs[0]["client_msg_id"] == "from-c2"

    # device 2 is behind (its view): the server's cursor is carol's, so dup
    assert c2.request("receipt", conv=conv, kind="delivered", seq=2)["dup"] is True
    assert c3.request("receipt", conv=conv, kind="read", seq=5)["dup"] is False
    for c in (c1, c2, dave, erin):
        r = receipts(c, conv, 5, frm="c4carol")
        assert [(x["kind"], x["upto"]) for x in r] == [("read", 5)], \
            "the dup receipt was pushed, or the new one lost: %r" % r
    m = {x["user"]: x for x in dave.request("get", conv=conv)["members"]}
    assert (m["c4carol"]["delivered"], m["c4carol"]["read"]) == (5, 5), m


# ---- 5. receipts and unread ------------------------------------------------------------------

@case
def test_receipts_and_unread_counts():
    f, g = connect_many([(0, "c5frank"), (1, "c5grace")])
    conv = f.request("create", kind="group", members=["c5grace"], name="r")["conv"]
    for i in range(5):
        f.request("send", conv=conv, client_msg_id="m%d" % i, body="m %d" % i)

    def entry():
        es = [x for x in g.request("conversations")["conversations"] if x["conv"] == conv]
        assert len(es) == 1, es
        e = es[0]
        assert e["unread"] == e["last_seq"] - e["read"], e
        return (e["last_seq"], e["delivered"], e["read"], e["unread"])

    assert entry() == (6, 0, 0, 6)
    assert g.request("receipt", conv=conv, kind="delivered", seq=4)["dup"] is False
    assert entry() == (6, 4, 0, 6)
    assert g.request("receipt", conv=conv, kind="read", seq=3)["dup"] is False
    assert entry() == (6, 4, 3, 3), "read must not move delivered backwards"
    assert g.request("receipt", conv=conv, kind="read", seq=6)["dup"] is False
    assert entry() == (6, 6, 6, 0), "read moves delivered too"
    assert g.request("receipt", conv=conv, kind="read", seq=5)["dup"] is True
    assert g.request("receipt", conv=conv, kind="delivered", seq=2)["dup"] is True
    assert g.request("receipt", conv=conv, kind="read", seq=6)["dup"] is True
    assert entry() == (6, 6, 6, 0)

    f.request("send", conv=conv, client_msg_id="m7", body="one more")
    assert entry() == (7, 6, 6, 1)
    members = {m["user"]: m for m in f.request("get", conv=conv)["members"]}
    assert (members["c5grace"]["delivered"], members["c5grace"]["read"]) == (6, 6), members
    assert (members["c5frank"]["delivered"], members["c5frank"]["read"]) == (0, 0), members
    assert members["c5frank"]["role"] == "owner" and members["c5grace"]["role"] == "member"

    assert g.request("receipt", conv=conv, kind="read", seq=7)["dup"] is False
    # frank saw each effective receipt once, in order, and none of the dups
    r = receipts(f, conv, 7, frm="c5grace")
    assert [(x["kind"], x["upto"]) for x in r] == \
        [("delivered", 4), ("read", 3), ("read", 6), ("read", 7)], r

    # conversations spans every shard
    more = [f.request("create", kind="group", members=["c5grace"], name="x%d" % i)["conv"]
            for i in range(6)]
    listed = {x["conv"]: x for x in g.request("conversations")["conversations"]}
    assert set(listed) == set(more) | {conv}, sorted(listed)
    assert all(listed[c]["last_seq"] == 1 and listed[c]["unread"] == 1 for c in more), listed


# ---- 6. typing -------------------------------------------------------------------------------

@case
def test_typing_across_gateways():
    hal, ivy, jon, out = connect_many([(0, "c6hal"), (1, "c6ivy"), (2, "c6jon"), (1, "c6out")])
    conv = hal.request("create", kind="group", members=["c6ivy", "c6jon"])["conv"]
    for c in (ivy, jon):
        c.wait_seq(conv, 1)

    def typing(c, state):
        return c.next_push(lambda m: m.get("type") == "typing" and m.get("conv") == conv and
                           m.get("user") == "c6hal" and m.get("state") == state, timeout=WAIT)

    assert hal.request("typing", conv=conv) == {}
    for c in (ivy, jon):
        t = typing(c, True)
        assert t == {"type": "typing", "conv": conv, "user": "c6hal", "state": True}, t
    assert hal.request("typing", conv=conv, state=False) == {}
    for c in (ivy, jon):
        typing(c, False)
    assert error_of(lambda: out.request("typing", conv=conv)) == "forbidden"

    s = hal.request("send", conv=conv, client_msg_id="after-typing", body="done")
    evs = ivy.wait_seq(conv, s["seq"])
    check_run(evs, 2, 2, "ivy")
    assert evs[0]["event"] == "message"
    h = jon.request("history", conv=conv)
    assert [e["event"] for e in h["events"]] == ["created", "message"], h

    # rate limit: 40 at once is well past the burst of 10 at 5/s
    rids = [jon.send_request("typing", conv=conv) for _ in range(40)]
    reps = [jon.wait_reply(r, WAIT) for r in rids]
    limited = [r for r in reps if not r["ok"]]
    assert limited and all(r["error"]["code"] == "rate_limited" and
                           r["error"].get("retry_after_ms", 0) > 0 for r in limited), reps
    assert any(r["ok"] for r in reps)


# ---- 7. presence -----------------------------------------------------------------------------

@case
def test_presence_across_gateways():
    t0 = int(time.time() * 1000)
    a, _ = register(0, "c7amy")  # her only connection: no earlier one to go offline
    b = connect(1, "c7ben")
    r = b.request("presence", users=["c7amy", "c7nobody"])["presence"]
    by = {x["user"]: x for x in r}
    assert by["c7amy"]["online"] is True, r
    assert by["c7nobody"]["online"] is False, r

    def pres(online):
        return b.next_push(lambda m: m.get("type") == "presence" and m.get("user") == "c7amy"
                           and m.get("online") is online, timeout=WAIT)

    a.close()
    OPEN.remove(a)
    off = pres(False)
    assert off["last_seen"] >= t0 - 60000, off  # a real time (same host clock)
    a = connect(2, "c7amy")
    on = pres(True)
    assert on["online"] is True, on
    r = b.request("presence", users=["c7amy"])["presence"]
    assert r[0]["online"] is True and r[0]["last_seen"] >= off["last_seen"], r

    # two devices: closing one keeps amy online; closing both makes her offline
    a2 = connect(0, "c7amy")
    a2.close()
    OPEN.remove(a2)
    b.drain(1.0)
    bad = [m for m in b.pushes if m.get("type") == "presence" and m.get("online") is False]
    assert not bad, "offline push while another device is connected: %r" % bad
    assert b.request("presence", users=["c7amy"])["presence"][0]["online"] is True
    a.close()
    OPEN.remove(a)
    off2 = pres(False)
    assert off2["last_seen"] >= off["last_seen"], (off, off2)

    # last_seen reaches the profile too
    cluster.wait("last_seen in c7amy's profile",
                 lambda: b.request("profile", user="c7amy")["last_seen"] > 0, timeout=WAIT)


# ---- 8. edit, delete, react ------------------------------------------------------------------

@case
def test_edit_delete_react_and_permissions():
    o, ad, m, n, out = connect_many([(0, "c8owner"), (1, "c8admin"), (2, "c8mem"),
                                     (1, "c8nina"), (0, "c8out")])
    conv = o.request("create", kind="group", members=["c8mem", "c8nina"])["conv"]
    o.request("add_member", conv=conv, user="c8admin", role="admin")  # 2
    s1 = m.request("send", conv=conv, client_msg_id="s1", body="original")["seq"]  # 3
    s2 = m.request("send", conv=conv, client_msg_id="s2", body="second")["seq"]    # 4
    s3 = m.request("send", conv=conv, client_msg_id="s3", body="third")["seq"]     # 5

    for c in (n, o, ad):
        assert error_of(lambda c=c: c.request("edit", conv=conv, client_msg_id="e",
                                              seq=s1, body="x")) == "forbidden"
    assert error_of(lambda: out.request("edit", conv=conv, client_msg_id="e", seq=s1,
                                        body="x")) == "forbidden"
    assert error_of(lambda: m.request("edit", conv=conv, client_msg_id="e9", seq=999,
                                      body="x")) == "not_found"
    e = m.request("edit", conv=conv, client_msg_id="e1", seq=s1, body="edited")
    assert e["seq"] == 6 and e["dup"] is False, e
    assert m.request("edit", conv=conv, client_msg_id="e1", seq=s1, body="again") == \
        dict(e, dup=True)
    ra = n.request("react", conv=conv, client_msg_id="r1", seq=s1, emoji="\U0001f44d")
    rr = n.request("react", conv=conv, client_msg_id="r2", seq=s1, emoji="\U0001f44d",
                   remove=True)
    assert (ra["seq"], rr["seq"]) == (7, 8)
    assert error_of(lambda: out.request("react", conv=conv, client_msg_id="r", seq=s1,
                                        emoji="x")) == "forbidden"
    assert error_of(lambda: n.request("delete", conv=conv, client_msg_id="d",
                                      seq=s1)) == "forbidden"
    assert o.request("delete", conv=conv, client_msg_id="d1", seq=s1)["seq"] == 9   # owner
    assert ad.request("delete", conv=conv, client_msg_id="d2", seq=s2)["seq"] == 10  # admin
    assert m.request("delete", conv=conv, client_msg_id="d3", seq=s3)["seq"] == 11   # sender

    want = [(6, "edited", "c8mem", s1), (7, "reaction", "c8nina", s1),
            (8, "reaction", "c8nina", s1), (9, "deleted", "c8owner", s1),
            (10, "deleted", "c8admin", s2), (11, "deleted", "c8mem", s3)]
    h = o.request("history", conv=conv, after=5)["events"]
    for evs, who in ((n.wait_seq(conv, 11), "nina"), (ad.wait_seq(conv, 11), "admin"),
                     (h, "history")):
        evs = [x for x in evs if x["seq"] >= 6]
        assert [(x["seq"], x["event"], x["from"], x["ref"]) for x in evs] == want, (who, evs)
        assert evs[0]["body"] == "edited" and evs[0]["client_msg_id"] == "e1", evs[0]
        assert (evs[1]["emoji"], evs[1]["action"]) == ("\U0001f44d", "add"), evs[1]
        assert (evs[2]["emoji"], evs[2]["action"]) == ("\U0001f44d", "remove"), evs[2]
        assert evs[3]["client_msg_id"] == "d1", evs[3]


# ---- 9. history pagination -------------------------------------------------------------------

@case
def test_history_pagination_120_messages():
    a, b = connect_many([(0, "c9ann"), (2, "c9bo")])
    conv = a.request("create", kind="direct", members=["c9bo"])["conv"]
    acks = pipeline(a, "send", [{"client_msg_id": "h%d" % i, "body": "msg %d" % i}
                                for i in range(120)], conv=conv)
    assert sorted(x["seq"] for x in acks) == list(range(2, 122))
    body_of = {x["seq"]: "msg %d" % i for i, x in enumerate(acks)}
    last = 121

    r = b.request("history", conv=conv)
    assert seqs(r["events"]) == list(range(72, 122)) and r["has_more"] is True, seqs(r["events"])
    assert r["last_seq"] == last and r["conv"] == conv

    # backwards
    got, before, pages = [], None, 0
    while True:
        kw = {"limit": 25} if before is None else {"limit": 25, "before": before}
        r = b.request("history", conv=conv, **kw)
        s = seqs(r["events"])
        assert s == sorted(s) and len(s) <= 25 and r["last_seq"] == last, r
        got = s + got
        pages += 1
        assert pages < 20
        if not r["has_more"]:
            break
        before = s[0]
    assert got == list(range(1, last + 1)), got

    # forwards
    fwd, after, pages = [], 0, 0
    while True:
        r = b.request("history", conv=conv, after=after, limit=17)
        s = seqs(r["events"])
        assert s == sorted(s) and len(s) <= 17 and r["last_seq"] == last, r
        assert all(e["body"] == body_of[e["seq"]] for e in r["events"] if e["seq"] > 1)
        fwd += s
        pages += 1
        assert pages < 20
        if not r["has_more"]:
            break
        after = s[-1]
    assert fwd == list(range(1, last + 1)), fwd

    # edges
    r = b.request("history", conv=conv, before=11, limit=10)
    assert seqs(r["events"]) == list(range(1, 11)) and r["has_more"] is False, r
    r = b.request("history", conv=conv, after=111, limit=10)
    assert seqs(r["events"]) == list(range(112, 122)) and r["has_more"] is False, r
    r = b.request("history", conv=conv, after=110, limit=10)
    assert seqs(r["events"]) == list(range(111, 121)) and r["has_more"] is True, r
    r = b.request("history", conv=conv, after=last)
    assert r["events"] == [] and r["has_more"] is False, r
    r = b.request("history", conv=conv, after=0, limit=200)
    assert seqs(r["events"]) == list(range(1, 122)) and r["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 201}):
        assert error_of(lambda bad=bad: b.request("history", conv=conv, **bad)) == "bad_request"

    # linearizable reads: an acked send is in a history read on another gateway
    for i in range(5):
        s = a.request("send", conv=conv, client_msg_id="lin%d" % i, body="lin")["seq"]
        r = b.request("history", conv=conv, after=s - 1, limit=5)
        assert seqs(r["events"])[:1] == [s] and r["last_seq"] >= s, (s, r)


# ---- 10. group member management -------------------------------------------------------------

@case
def test_group_member_management():
    own, adm, mem, x, y, z = connect_many([(0, "c10own"), (1, "c10adm"), (2, "c10mem"),
                                           (0, "c10x"), (1, "c10y"), (2, "c10z")])
    conv = own.request("create", kind="group", members=["c10mem"], name="team")["conv"]
    a = own.request("add_member", conv=conv, user="c10adm", role="admin")
    assert a["seq"] == 2 and a["dup"] is False, a
    first = adm.wait_seq(conv, 2)
    assert [(e["seq"], e["event"], e["user"], e["role"]) for e in first] == \
        [(2, "member_added", "c10adm", "admin")], first
    assert adm.request("add_member", conv=conv, user="c10x")["seq"] == 3
    assert error_of(lambda: mem.request("add_member", conv=conv, user="c10y")) == "forbidden"
    assert error_of(lambda: adm.request("add_member", conv=conv, user="c10y",
                                        role="admin")) == "forbidden"
    assert error_of(lambda: y.request("add_member", conv=conv, user="c10y")) == "forbidden"
    assert error_of(lambda: mem.request("remove_member", conv=conv, user="c10x")) == "forbidden"
    assert error_of(lambda: adm.request("remove_member", conv=conv,
                                        user="c10own")) == "forbidden"
    roles = {m["user"]: m["role"] for m in own.request("get", conv=conv)["members"]}
    assert roles == {"c10own": "owner", "c10mem": "member", "c10adm": "admin",
                     "c10x": "member"}, roles
    evs = x.wait_seq(conv, 3)
    assert [(e["seq"], e["event"], e["user"], e["from"]) for e in evs] == \
        [(3, "member_added", "c10x", "c10adm")], evs

    # x is removed: member_removed is the last thing it gets from this conversation
    assert adm.request("remove_member", conv=conv, user="c10x")["seq"] == 4
    for i in range(3):
        own.request("send", conv=conv, client_msg_id="m%d" % i, body="without x")  # 5..7
    assert error_of(lambda: x.request("send", conv=conv, client_msg_id="n", body="n")) == \
        "forbidden"
    assert error_of(lambda: x.request("history", conv=conv)) == "forbidden"
    assert conv not in [c["conv"] for c in x.request("conversations")["conversations"]]
    # added back: its next event is that member_added, so it got nothing in between
    assert own.request("add_member", conv=conv, user="c10x")["seq"] == 8
    evs = x.wait_seq(conv, 8)
    assert [(e["seq"], e["event"]) for e in evs] == [(4, "member_removed"), (8, "member_added")], \
        [(e["seq"], e["event"]) for e in evs]
    assert evs[0]["user"] == "c10x" and evs[1]["user"] == "c10x"

    # mem leaves: member_left, then nothing until it is added back
    assert mem.request("leave", conv=conv)["seq"] == 9
    own.request("send", conv=conv, client_msg_id="m9", body="without mem")  # 10
    assert own.request("add_member", conv=conv, user="c10mem")["seq"] == 11
    evs = mem.wait_seq(conv, 11)
    assert seqs(evs) == list(range(1, 10)) + [11], seqs(evs)
    assert [(e["seq"], e["event"], e["from"]) for e in evs[-2:]] == \
        [(9, "member_left", "c10mem"), (11, "member_added", "c10own")], evs[-2:]

    # z joins late: member_added naming it is its first event
    assert adm.request("add_member", conv=conv, user="c10z")["seq"] == 12
    evs = z.wait_seq(conv, 12)
    assert [(e["seq"], e["event"], e["user"]) for e in evs] == [(12, "member_added", "c10z")]

    # the owner leaves: the earliest-joined admin becomes owner
    lv = own.request("leave", conv=conv)
    assert lv["seq"] == 13
    e = adm.wait_seq(conv, 13)[-1]
    assert (e["event"], e["from"], e.get("new_owner")) == ("member_left", "c10own", "c10adm"), e
    roles = {m["user"]: m["role"] for m in adm.request("get", conv=conv)["members"]}
    assert roles == {"c10adm": "owner", "c10mem": "member", "c10x": "member",
                     "c10z": "member"}, roles
    assert adm.request("add_member", conv=conv, user="c10y", role="admin")["seq"] == 14
    # everyone still in saw every event 1..14 without a gap (from when they joined)
    check_run(adm.wait_seq(conv, 14), 14, 14, "adm")
    check_run(z.wait_seq(conv, 14), 13, 14, "z")


# ---- 11. REST --------------------------------------------------------------------------------

@case
def test_rest_api():
    gw = GW[1]
    st, r = rest(gw, "POST", "/api/v1/register", {"user": "c11rita", "password": PASSWORD,
                                                  "display_name": "Rita"})
    assert st == 201 and r["user"] == "c11rita" and r["token"], (st, r)
    st, r = rest(gw, "POST", "/api/v1/register", {"user": "c11rita", "password": PASSWORD})
    assert st == 409 and r["error"]["code"] == "conflict", (st, r)
    st, r = rest(GW[2], "POST", "/api/v1/login", {"user": "c11rita", "password": "wrong-pass"})
    assert st == 401 and r["error"]["code"] == "unauthorized", (st, r)
    st, r = rest(GW[2], "POST", "/api/v1/login", {"user": "c11rita", "password": PASSWORD})
    assert st == 200 and r["user"] == "c11rita", (st, r)
    tok = r["token"]
    st, r = rest(gw, "POST", "/api/v1/register", {"user": "c11bad", "password": "short"})
    assert st == 400 and r["error"]["code"] == "bad_request", (st, r)

    walt = connect(0, "c11walt")
    walt.request("profile")  # authenticated and following
    # no or a bad Authorization header
    for method, path, body in (("GET", "/api/v1/conversations", None),
                               ("POST", "/api/v1/conversations", {"kind": "direct",
                                                                  "members": ["c11walt"]})):
        for t in (None, "not-a-token", tok[:-3] + ("AAA" if not tok.endswith("AAA") else "BBB")):
            st, r = rest(gw, method, path, body, token=t)
            assert st == 401 and r["error"]["code"] == "unauthorized", (method, path, t, st, r)

    st, r = rest(gw, "POST", "/api/v1/conversations", {"kind": "direct",
                                                      "members": ["c11walt"]}, token=tok)
    assert st == 201 and r["seq"] == 1 and r["dup"] is False, (st, r)
    conv = r["conv"]
    path = "/api/v1/conversations/%d" % conv
    st, r = rest(gw, "POST", path + "/messages", {"client_msg_id": "q1", "body": "via rest"},
                 token=tok)
    assert st == 201 and r["seq"] == 2 and r["dup"] is False and r["ts"] > 0, (st, r)
    first_ts = r["ts"]
    st, r = rest(GW[0], "POST", path + "/messages", {"client_msg_id": "q1", "body": "again"},
                 token=tok)
    assert st in (200, 201) and (r["seq"], r["ts"], r["dup"]) == (2, first_ts, True), (st, r)
    for i in range(3):
        st, r = rest(gw, "POST", path + "/messages", {"client_msg_id": "q%d" % (i + 2),
                                                     "body": "more %d" % i}, token=tok)
        assert st == 201 and r["seq"] == 3 + i, (st, r)

    # the WebSocket client on another gateway sees the REST writes as events
    evs = walt.wait_seq(conv, 5)
    check_run(evs, 1, 5, "walt")
    assert (evs[1]["from"], evs[1]["body"], evs[1]["client_msg_id"]) == \
        ("c11rita", "via rest", "q1"), evs[1]
    w = walt.request("send", conv=conv, client_msg_id="ws1", body="from ws")
    assert w["seq"] == 6

    st, r = rest(gw, "GET", path + "/messages?after=2&limit=2", token=tok)
    assert st == 200 and seqs(r["events"]) == [3, 4] and r["has_more"] is True, (st, r)
    assert r["last_seq"] == 6
    st, r = rest(gw, "GET", path + "/messages?after=4&limit=10", token=tok)
    assert st == 200 and seqs(r["events"]) == [5, 6] and r["has_more"] is False, (st, r)
    assert r["events"][1]["body"] == "from ws"
    st, r = rest(gw, "GET", path + "/messages?before=3", token=tok)
    assert st == 200 and seqs(r["events"]) == [1, 2] and r["has_more"] is False, (st, r)
    st, r = rest(gw, "GET", path + "/messages?limit=500", token=tok)
    assert st == 400 and r["error"]["code"] == "bad_request", (st, r)
    st, r = rest(gw, "GET", path + "/messages", None)
    assert st == 401, (st, r)

    st, r = rest(gw, "POST", path + "/receipts", {"kind": "read", "seq": 4}, token=tok)
    assert st == 200 and r == {"dup": False}, (st, r)
    st, r = rest(gw, "POST", path + "/receipts", {"kind": "read", "seq": 3}, token=tok)
    assert st == 200 and r == {"dup": True}, (st, r)
    rc = walt.next_push(lambda m: m.get("event") == "receipt" and m.get("conv") == conv,
                        timeout=WAIT)
    assert (rc["from"], rc["kind"], rc["upto"]) == ("c11rita", "read", 4), rc
    st, r = rest(gw, "GET", "/api/v1/conversations", token=tok)
    assert st == 200, (st, r)
    e = [x for x in r["conversations"] if x["conv"] == conv]
    assert len(e) == 1 and (e[0]["last_seq"], e[0]["delivered"], e[0]["read"], e[0]["unread"],
                            e[0]["members"], e[0]["kind"]) == (6, 4, 4, 2, 2, "direct"), r
    st, r = rest(gw, "GET", path, token=tok)
    assert st == 200 and r["conv"] == conv and r["last_seq"] == 6, (st, r)
    assert {m["user"]: m["read"] for m in r["members"]} == {"c11rita": 4, "c11walt": 0}, r

    # groups and members over REST
    st, r = rest(gw, "POST", "/api/v1/conversations", {"kind": "group", "name": "rest group",
                                                      "members": []}, token=tok)
    assert st == 201, (st, r)
    g = r["conv"]
    gpath = "/api/v1/conversations/%d" % g
    st, r = rest(gw, "POST", gpath + "/members", {"user": "c11walt"}, token=tok)
    assert st in (200, 201) and r["seq"] == 2, (st, r)
    added = walt.wait_seq(g, 2)
    assert [(e["event"], e["user"]) for e in added] == [("member_added", "c11walt")], added
    st, r = rest(gw, "DELETE", gpath + "/members/c11walt", token=tok)
    assert st == 200 and r["seq"] == 3, (st, r)
    assert walt.wait_seq(g, 3)[-1]["event"] == "member_removed"
    st, r = rest(gw, "GET", "/api/v1/conversations/%d" % (g ^ 1), token=tok)
    assert st == 404 and r["error"]["code"] == "not_found", (st, r)
    _, other = register(2, "c11other")
    st, r = rest(gw, "GET", path, token=other)
    assert st == 403 and r["error"]["code"] == "forbidden", (st, r)
    st, r = rest(gw, "POST", path + "/messages", {"client_msg_id": "x", "body": "x"}, token=other)
    assert st == 403 and r["error"]["code"] == "forbidden", (st, r)

    for i, addr in enumerate(GW):
        st, r = rest(addr, "GET", "/healthz")
        assert st == 200 and r == {"status": "ok", "node": cluster.conf["nodes"][i]["id"]}, r

    # a WebSocket: only ping before auth
    c = WsClient(GW[2], timeout=WAIT)
    OPEN.append(c)
    assert c.request("ping") == {}
    for op, f in (("send", {"conv": conv, "client_msg_id": "z", "body": "z"}),
                  ("conversations", {}), ("history", {"conv": conv})):
        assert error_of(lambda op=op, f=f: c.request(op, **f)) == "unauthorized", op
    assert error_of(lambda: c.request("auth", token="x.y.z")) == "unauthorized"
    assert c.request("auth", token=tok)["user"] == "c11rita"
    assert c.request("history", conv=conv, after=5)["events"][0]["body"] == "from ws"


# ---- 12. profiles and settings ---------------------------------------------------------------

@case
def test_profiles_and_settings():
    p, tok = register(0, "c12pat", display_name="Pat P.")
    q = connect(1, "c12quin")
    r = q.request("profile", user="c12pat")
    assert r["user"] == "c12pat" and r["display_name"] == "Pat P." and r["created_ts"] > 0, r
    assert p.request("set_profile", display_name="Patricia", status="at lunch") == {}
    for c in (p, q):
        r = c.request("profile", user="c12pat")
        assert (r["display_name"], r["status"]) == ("Patricia", "at lunch"), r
    assert p.request("profile")["user"] == "c12pat"
    assert p.request("set_profile", status="back") == {}
    r = q.request("profile", user="c12pat")
    assert (r["display_name"], r["status"]) == ("Patricia", "back"), r
    assert error_of(lambda: q.request("profile", user="c12nobody")) == "not_found"

    assert p.request("settings") == {"settings": {}}
    s = {"theme": "dark", "notify": {"sound": False, "muted": [1, 2, 3]}, "lang": "fr",
         "n": 12.5, "unicode": "h\u00e9llo \u2603"}
    assert p.request("set_settings", settings=s) == {}
    p2 = connect(2, "c12pat")
    assert p2.request("settings") == {"settings": s}
    s2 = {"theme": "light"}
    assert p2.request("set_settings", settings=s2) == {}
    assert p.request("settings") == {"settings": s2}, "set_settings replaces the object"
    assert q.request("settings") == {"settings": {}}, "settings are per user"
    assert error_of(lambda: p.request("set_settings", settings={"k": "v" * 5000})) == "too_large"
    assert error_of(lambda: p.request("set_settings", settings=[1, 2])) == "bad_request"
    assert p.request("settings") == {"settings": s2}


# ---- 13. a direct conversation created twice -------------------------------------------------

@case
def test_second_direct_create_answers_the_first_ts():
    """protocol.md: the second `create` of a direct conversation answers dup, and a
    repeated write returns the first write's seq and ts; `ts` is a timestamp."""
    a, b = connect_many([(0, "c13ada"), (1, "c13bea")])
    first = a.request("create", kind="direct", members=["c13bea"])
    assert first["ts"] > 0, first
    for c, other in ((b, "c13ada"), (a, "c13bea")):
        again = c.request("create", kind="direct", members=[other])
        assert (again["conv"], again["seq"], again["dup"]) == (first["conv"], 1, True), again
        assert again["ts"] == first["ts"], \
            "dup create answered ts %r, the conversation was created at ts %r" % (
                again["ts"], first["ts"])


# ---- 14. concurrent REST requests (last: a crash here must not hide other results) ----------

@case
def test_concurrent_rest_requests():
    """Several REST clients at once, as any web deployment has: every request is
    answered and every gateway stays up."""
    tok = token_of("c14rest")
    watcher = connect(0, "c14watch")
    st, r = rest(GW[1], "POST", "/api/v1/conversations", {"kind": "direct",
                                                         "members": ["c14watch"]}, token=tok)
    assert st == 201, (st, r)
    conv = r["conv"]
    results = {}

    def call(key, gw, method, path, body, token=None):
        try:
            results[key] = rest(gw, method, path, body, token=token, timeout=WAIT)[0]
        except Exception as e:  # noqa: BLE001 - reported below
            results[key] = repr(e)

    calls = [("send-%d" % i, GW[i % 3], "POST", "/api/v1/conversations/%d/messages" % conv,
              {"client_msg_id": "p%d" % i, "body": "parallel %d" % i}, tok) for i in range(30)]
    calls += [("register-%d" % i, GW[i % 3], "POST", "/api/v1/register",
               {"user": "c14u%d" % i, "password": PASSWORD}, None) for i in range(40)]
    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    bad = {k: v for k, v in sorted(results.items()) if v != 201}
    down = []
    for i, gw in enumerate(GW):
        try:
            rest(gw, "GET", "/healthz", timeout=5)
        except OSError as e:
            node = cluster.conf["nodes"][i]["id"]
            down.append("node %d (%s): %r, pid %s %s" % (
                node, gw, e, cluster.pid(node),
                "alive" if _alive(cluster.pid(node)) else "gone"))
    assert len(results) == len(calls) and not bad and not down, \
        "%d concurrent REST requests: %d not answered 201: %s; gateways down: %s" % (
            len(calls), len(bad), bad, down)
    evs = watcher.wait_seq(conv, 31)
    check_run(evs, 1, 31, "watcher")


# ---- batched frames (/ws?batch=1) ------------------------------------------------------------

@case
def test_batched_frames_carry_many_requests_and_replies():
    """A client that connects with ?batch=1 may put one request per line in a frame
    and reads one or more messages per frame (wsclient splits them); every line gets
    its reply, a bad line a bad_request with id null, and members without batching
    see the same events one per frame."""
    bob = connect(1, "bfbob")
    alice = WsClient(GW[0], path="/ws?batch=1", timeout=WAIT)
    OPEN.append(alice)
    assert alice.request("auth", token=token_of("bfalice"))["user"] == "bfalice"
    conv = alice.request("create", kind="group", title="batched",
                         members=["bfbob"])["conv"]
    lines = [json.dumps({"id": 1000 + i, "op": "send", "conv": conv,
                         "client_msg_id": "bf-%d" % i, "body": "line %d" % i},
                        separators=(",", ":")) for i in range(20)]
    lines.insert(10, "this is not json")
    lines.insert(5, "   ")  # blank lines are skipped
    alice.send_text("\n".join(lines) + "\n")
    seqs_seen = []
    for i in range(20):
        r = alice.wait_reply(1000 + i)
        assert r["ok"], r
        seqs_seen.append(r["result"]["seq"])
    assert seqs_seen == list(range(2, 22)), seqs_seen  # in order: one connection, one conv
    bad = alice.wait_reply(None)
    assert bad["ok"] is False and bad["error"]["code"] == "bad_request", bad
    evs = bob.wait_events(conv, 20)
    check_run(evs, 2, 21, "bob")
    assert [e["body"] for e in evs] == ["line %d" % i for i in range(20)]
    check_run(alice.wait_events(conv, 20), 2, 21, "alice")
    # without ?batch=1 a frame is one JSON object: two lines are a bad request
    bob.send_text('{"id":1,"op":"ping"}\n{"id":2,"op":"ping"}')
    r = bob.wait_reply(None)
    assert r["error"]["code"] == "bad_request", r
    # and a pretty-printed object (newlines inside) still is one request
    bob.send_text('{\n  "id": 3,\n  "op": "ping"\n}')
    assert bob.wait_reply(3)["ok"]


def _alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def teardown():
    if cluster is not None:
        cluster.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_direct_chat_both_ways_across_gateways,
                  test_group_of_50_over_three_gateways,
                  test_offline_sync_gets_exactly_the_missed_events,
                  test_sync_right_after_a_websocket_login,
                  test_events_right_after_a_websocket_login,
                  test_multi_device_delivery_and_receipts,
                  test_receipts_and_unread_counts,
                  test_typing_across_gateways,
                  test_presence_across_gateways,
                  test_edit_delete_react_and_permissions,
                  test_history_pagination_120_messages,
                  test_group_member_management,
                  test_profiles_and_settings,
                  test_second_direct_create_answers_the_first_ts,
                  test_batched_frames_carry_many_requests_and_replies,
                  # REST last: a gateway crash there must not hide the other results
                  test_rest_api,
                  test_concurrent_rest_requests)
    finally:
        teardown()
