"""Bad client input at the gateways: every malformed, oversize, unauthorised or
abusive request is answered with its typed error code from docs/protocol.md (or
the documented close), and the connection and the node stay healthy -- a ping
still works on the same connection, /healthz answers, no node crashes or logs
an ERROR.

The cluster runs with small limits so that each one is cheap to hit:
limits.max_body 1024, limits.max_members 8, gateway.max_frame 16 KiB, writes
1/s with a burst of 5, typing 1/s burst 2, login 1/s burst 3.
"""
import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import Cluster, run_tests  # noqa: E402
from wsclient import ApiError, Closed, WsClient, hs256_token, rest  # noqa: E402

MAX_BODY = 1024
MAX_MEMBERS = 8
MAX_FRAME = 16384
SEND_BURST = 5
TYPING_BURST = 2
LOGIN_BURST = 3
MAX_SAFE = (1 << 53) - 1
PASSWORD = "password-bad-input"
USERS = ["alice", "bob", "carol", "mallory", "rl-send", "rl-typing", "rl-rest", "rl-evade",
         "rl-login", "lim", "big"]

c = None
TOK = {}
G = None        # group: alice (owner), bob and the rl-* users; not carol
M1 = None       # alice's first message in G
UNKNOWN = 4242424242  # a conversation nobody created


def setup():
    global c, G, M1

    def tweak(conf):
        conf["auth"]["scrypt_log2_n"] = 10
        conf["limits"] = {"max_body": MAX_BODY, "max_members": MAX_MEMBERS}
        conf["gateway"] = {"max_frame": MAX_FRAME,
                           "rate": {"send_per_s": 1, "send_burst": SEND_BURST,
                                    "typing_per_s": 1, "typing_burst": TYPING_BURST,
                                    "login_per_s": 1, "login_burst": LOGIN_BURST}}
    c = Cluster("gwbad", offset=7000, tweak=tweak)
    c.up()
    c.wait_all_leaders()
    for i, u in enumerate(USERS):
        # (with a display_name: a register without one trips UBSan in a
        # sanitizer build; test_register_without_display_name has that case)
        for _ in range(100):  # one source address: its login bucket paces this
            st, body = rest(gw(1 + i % 3), "POST", "/api/v1/register",
                            {"user": u, "password": PASSWORD, "display_name": u.upper()})
            if st != 429:
                break
            time.sleep(body["error"]["retry_after_ms"] / 1000.0)
        assert st == 201, (u, st, body)
        TOK[u] = body["token"]
    w = ws("alice")
    G = w.request("create", kind="group", name="bad-input",
                  members=["bob", "rl-send", "rl-typing", "rl-rest", "rl-evade"])["conv"]
    M1 = w.request("send", conv=G, client_msg_id="m1", body="hello")["seq"]
    w.close()


def gw(node=1):
    return [n["gateway"] for n in c.conf["nodes"] if n["id"] == node][0]


def ws(user=None, node=1):
    w = WsClient(gw(node), timeout=30)
    if user:
        w.request("auth", token=TOK[user])
    return w


def healthy(w):
    """The connection still answers a ping, and so does the node's /healthz."""
    assert w.request("ping") == {}, "ping on the same connection failed"
    node = [n["id"] for n in c.conf["nodes"] if n["gateway"] == w.addr][0]
    st, body = rest(w.addr, "GET", "/healthz")
    assert st == 200 and body == {"status": "ok", "node": node}, (st, body)


def expect(w, code, op, **fields):
    """op must fail with `code`, in a reply carrying the request's id."""
    rid = w.send_request(op, **fields)
    r = w.wait_reply(rid)
    assert r.get("ok") is False and r["id"] == rid, "%s %r: %r" % (op, fields, r)
    got = r["error"]["code"]
    want = (code,) if isinstance(code, str) else code
    assert got in want, "%s %s: expected %s, got %s (%s)" % (
        op, short(fields), "/".join(want), got, r["error"].get("message"))
    assert isinstance(r["error"].get("message"), str)
    return r["error"]


def short(v):
    t = json.dumps(v)
    return t if len(t) < 120 else t[:100] + "...(%d bytes)" % len(t)


def expect_raw(w, payload, code="bad_request", rid=None, opcode=0x1):
    """Sends one raw frame; its one reply must be the error `code` with id `rid`."""
    w.send_frame(opcode, payload.encode() if isinstance(payload, str) else payload)
    m = w.read_message()
    while m.get("type") != "reply":
        m = w.read_message()
    assert m.get("ok") is False and m["error"]["code"] == code and m["id"] == rid, \
        "frame %s: expected %s with id %r, got %r" % (short(repr(payload)), code, rid, m)
    return m


def wait_close(w):
    try:
        return w.wait_closed(15)
    except TimeoutError:
        raise AssertionError("the server kept the connection open")


# ---- framing and JSON ----------------------------------------------------------------

def test_malformed_and_non_object_json_get_bad_request_with_null_id():
    w = ws("alice")
    for text in ["{", "not json", '{"id":1,"op":"ping"', "", " ", "\x00", "{}}",
                 '{"id":1,"op":"ping"} {"id":2}', '{"id":1,"op":"ping",}', "{'id':1}",
                 '{"id":1,"id":2,"op":"ping"}',  # duplicate keys
                 '{"id":1,"op":"ping","x":NaN}', '{"id":1,"op":"ping","x":"\\ud800"}',
                 '{"id":1,"op":"ping","x":"a\\u0000b"}', '{"id":1,"op":"ping","x":"\x01"}',
                 '{"id":1,"op":"ping","x":1e999999}']:
        expect_raw(w, text)
    for text in ["[]", '[{"id":1,"op":"ping"}]', '"ping"', "42", "null", "true", "-1.5"]:
        expect_raw(w, text)
    healthy(w)
    w.close()


def test_ids_echo_or_null():
    w = ws()
    for rid in [7, -3, 0, (1 << 63) - 1, "abc", "", 'q"uo\\te', "\u00e9\u4e2d", "x" * 64]:
        w.send_text(json.dumps({"id": rid, "op": "ping"}))
        m = w.read_message()
        assert m == {"type": "reply", "id": rid, "ok": True, "result": {}}, (rid, m)
    # no usable id: null, even when the rest is fine
    for rid in [None, 1.5, True, [1], {"a": 1}, "x" * 65]:
        msg = {"op": "ping"} if rid is None else {"id": rid, "op": "ping"}
        expect_raw(w, json.dumps(msg))
    expect_raw(w, '{"op":"ping","id":1e2}')
    healthy(w)
    w.close()


def test_missing_bad_and_unknown_ops():
    w = ws("alice")
    expect_raw(w, '{"id":5}', "bad_request", 5)
    expect_raw(w, '{"id":6,"op":7}', "bad_request", 6)
    expect_raw(w, '{"id":7,"op":null}', "bad_request", 7)
    expect_raw(w, '{"id":8,"op":["send"]}', "bad_request", 8)
    for op in ["fly", "PING", "Send", "", " ping", "ping ", "ping\u00e9", "reply", "event",
               "x" * 5000]:
        expect(w, "unknown_op", op)
    healthy(w)
    w.close()


def test_binary_frames_are_refused():
    w = ws("alice")
    expect_raw(w, b'{"id":1,"op":"ping"}', "bad_request", None, opcode=0x2)
    expect_raw(w, bytes(range(256)), "bad_request", None, opcode=0x2)
    expect_raw(w, b"", "bad_request", None, opcode=0x2)
    healthy(w)
    w.close()


def test_invalid_utf8_in_a_text_frame():
    w = ws("alice")
    for bad in [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xe2\x82"]:
        expect_raw(w, b'{"id":1,"op":"send","conv":%d,"client_msg_id":"u","body":"a%sb"}'
                   % (G, bad), "bad_request", None)
    expect_raw(w, b'\xfe\xff{"id":1,"op":"ping"}', "bad_request", None)
    healthy(w)
    # nothing of it reached the log
    r = w.request("history", conv=G, limit=200)
    assert not [e for e in r["events"] if e.get("client_msg_id") == "u"], r
    w.close()


def test_deeply_nested_json():
    w = ws("alice")
    expect_raw(w, "[" * (MAX_FRAME - 100))
    expect_raw(w, "[" * 3000 + "]" * 3000)
    expect_raw(w, '{"id":1,"op":"ping","x":' + "[" * 2500 + "]" * 2500 + "}")
    expect_raw(w, '{"a":' * 2500 + "1" + "}" * 2500)
    healthy(w)
    w.close()
    # the REST body takes up to 1 MiB: 100k levels
    for body in ["[" * 100000, '{"a":' * 100000, "[" * 50000 + "]" * 50000]:
        st, r = rest(gw(2), "POST", "/api/v1/login", raw_body=body)
        assert st == 400 and r["error"]["code"] == "bad_request", (st, r)
    healthy(ws(None, node=2))


def test_frame_over_max_frame_closes_with_1009():
    # exactly max_frame is still a request
    w = ws("alice")
    text = '{"id":1,"op":"ping"}'
    w.send_text(text + " " * (MAX_FRAME - len(text)))
    assert w.read_message() == {"type": "reply", "id": 1, "ok": True, "result": {}}
    w.send_text("x" * (MAX_FRAME + 1))
    st = wait_close(w)
    assert st[0] == 1009, "closed with %r" % (st,)
    # fragmented: every fragment small, the message too big
    w = ws("alice")
    w.send_frame(0x1, b"[" * 9000, fin=False)
    w.send_frame(0x0, b"]" * 9000, fin=True)
    st = wait_close(w)
    assert st[0] == 1009, "closed with %r" % (st,)
    # a fragmented request under the limit is reassembled
    w = ws("alice")
    w.send_frame(0x1, b'{"id":3,', fin=False)
    w.send_frame(0x0, b'"op":', fin=False)
    w.send_frame(0x0, b'"ping"}', fin=True)
    assert w.read_message() == {"type": "reply", "id": 3, "ok": True, "result": {}}
    # a huge declared length: refused once max_frame bytes of it arrived
    w.sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack(">Q", 1 << 40) + os.urandom(4)
                   + b"[" * (MAX_FRAME + 4096))
    st = wait_close(w)
    assert st[0] == 1009, "closed with %r" % (st,)
    healthy(ws("alice"))


def test_protocol_violations_close_the_connection_only():
    """Frames RFC 6455 forbids: the server closes that connection (1002), nothing
    else is affected."""
    cases = {
        "reserved opcode": bytes([0x83, 0x80]) + os.urandom(4),
        "rsv1 without extension": bytes([0xC1, 0x80 | 2]) + b"\x00" * 4 + b"{}",
        "fragmented ping": bytes([0x09, 0x80]) + os.urandom(4),
        "continuation first": bytes([0x80, 0x82]) + b"\x00" * 4 + b"{}",
        "oversize control": bytes([0x89, 0x80 | 126]) + struct.pack(">H", 200) + b"\0" * 204,
        "text inside a fragmented text": bytes([0x01, 0x82]) + b"\0" * 4 + b"[1"
                                         + bytes([0x81, 0x82]) + b"\0" * 4 + b"{}",
        "close with an invalid code": bytes([0x88, 0x82]) + b"\0" * 4 + struct.pack(">H", 999),
    }
    for what, raw in cases.items():
        w = ws("alice")
        w.sock.sendall(raw)
        try:
            st = w.wait_closed(15)
        except TimeoutError:
            raise AssertionError("%s: the connection stayed open" % what)
        assert st[0] in (1002, 1006), "%s: closed with %r" % (what, st)
    # An unmasked client frame must be refused too (RFC 6455 5.1), but the
    # libwebsockets in use accepts it; either way nothing else may break.
    w = ws("alice")
    w.sock.sendall(bytes([0x81, 2]) + b"{}")
    try:
        w.wait_closed(2)
    except TimeoutError:
        healthy(w)
    healthy(ws("alice"))


def test_garbage_flood():
    rnd = random.Random(7)
    w = ws("alice")
    n = 400
    for i in range(n):
        kind = i % 4
        if kind == 0:
            payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))
            w.send_frame(0x2, payload)
        elif kind == 1:
            payload = "".join(rnd.choice('{}[]":,0123456789abc \\') for _ in range(
                rnd.randint(1, 300)))
            w.send_text(payload if not payload.startswith("{") else "!" + payload)
        elif kind == 2:
            w.send_text(json.dumps({"id": None, "op": "send", "conv": rnd.random()}))
        else:
            w.send_text(bytes(rnd.getrandbits(8) | 0x80 for _ in range(rnd.randint(1, 50))))
    w.send_text(json.dumps({"id": "last", "op": "ping"}))
    replies = []
    while True:
        m = w.read_message()
        if m.get("type") != "reply":
            continue
        if m["id"] == "last":
            break
        replies.append(m)
    assert len(replies) == n, "%d garbage frames, %d replies" % (n, len(replies))
    assert all(m["id"] is None and m["error"]["code"] == "bad_request" for m in replies), \
        [m for m in replies if m["id"] is not None or m["error"]["code"] != "bad_request"][:3]
    healthy(w)
    w.close()


# ---- field validation -----------------------------------------------------------------

def test_missing_fields():
    w = ws("alice")
    cases = [
        ("send", {"client_msg_id": "a", "body": "b"}),
        ("send", {"conv": G, "body": "b"}),
        ("send", {"conv": G, "client_msg_id": "a"}),
        ("edit", {"conv": G, "client_msg_id": "a", "body": "b"}),
        ("delete", {"conv": G, "client_msg_id": "a"}),
        ("react", {"conv": G, "client_msg_id": "a", "seq": M1}),
        ("history", {}),
        ("get", {}),
        ("create", {"members": ["bob"]}),
        ("create", {"kind": "group"}),
        ("add_member", {"conv": G}),
        ("remove_member", {"conv": G}),
        ("leave", {}),
        ("receipt", {"conv": G, "seq": 1}),
        ("receipt", {"conv": G, "kind": "read"}),
        ("typing", {}),
        ("sync", {}),
        ("presence", {}),
        ("set_profile", {}),
        ("set_settings", {}),
        ("send", {"conv": None, "client_msg_id": "a", "body": "b"}),
    ]
    for op, fields in cases:
        expect(w, "bad_request", op, **fields)
    a = ws()
    expect(a, "bad_request", "auth")
    expect(a, "bad_request", "login", user="alice")
    expect(a, "bad_request", "login", password=PASSWORD)
    expect(a, "bad_request", "register", password=PASSWORD)
    expect(a, "bad_request", "register", user="newbie")
    healthy(a)
    healthy(w)
    w.close()


def test_wrong_types():
    w = ws("alice")
    cases = [
        ("send", {"conv": str(G), "client_msg_id": "a", "body": "b"}),
        ("send", {"conv": G + 0.5, "client_msg_id": "a", "body": "b"}),
        ("send", {"conv": float(1), "client_msg_id": "a", "body": "b"}),
        ("send", {"conv": True, "client_msg_id": "a", "body": "b"}),
        ("send", {"conv": [G], "client_msg_id": "a", "body": "b"}),
        ("send", {"conv": G, "client_msg_id": 7, "body": "b"}),
        ("send", {"conv": G, "client_msg_id": "a", "body": 5}),
        ("send", {"conv": G, "client_msg_id": "a", "body": ["x"]}),
        ("send", {"conv": G, "client_msg_id": "a", "body": {"text": "x"}}),
        ("edit", {"conv": G, "client_msg_id": "a", "seq": str(M1), "body": "b"}),
        ("react", {"conv": G, "client_msg_id": "a", "seq": M1, "emoji": 1}),
        ("react", {"conv": G, "client_msg_id": "a", "seq": M1, "emoji": "x", "remove": "no"}),
        ("history", {"conv": G, "limit": "10"}),
        ("history", {"conv": G, "after": "1"}),
        ("history", {"conv": G, "before": 2.5}),
        ("create", {"kind": 2, "members": ["bob"]}),
        ("create", {"kind": "channel", "members": ["bob"]}),
        ("create", {"kind": "group", "members": "bob"}),
        ("create", {"kind": "group", "members": [1, 2]}),
        ("create", {"kind": "group", "members": ["bob"], "name": 5}),
        ("add_member", {"conv": G, "user": "carol", "role": "owner"}),
        ("add_member", {"conv": G, "user": "carol", "role": 1}),
        ("add_member", {"conv": G, "user": ["carol"]}),
        ("receipt", {"conv": G, "kind": "seen", "seq": 1}),
        ("receipt", {"conv": G, "kind": "read", "seq": "1"}),
        ("typing", {"conv": G, "state": "yes"}),
        ("typing", {"conv": G, "state": 1}),
        ("sync", {"cursors": []}),
        ("sync", {"cursors": {"x": 1}}),
        ("sync", {"cursors": {str(G): "5"}}),
        ("sync", {"cursors": {str(G): 1.5}}),
        ("presence", {"users": "bob"}),
        ("presence", {"users": [None]}),
        ("set_settings", {"settings": "dark"}),
        ("set_settings", {"settings": ["dark"]}),
        ("set_profile", {"display_name": 5}),
        ("profile", {"user": 5}),
    ]
    for op, fields in cases:
        expect(w, "bad_request", op, **fields)
    a = ws()
    expect(a, "bad_request", "auth", token=5)
    expect(a, "bad_request", "login", user="alice", password=12345678)
    expect(a, "bad_request", "register", user=["x"], password=PASSWORD)
    healthy(a)
    healthy(w)
    w.close()


def test_out_of_range_values():
    w = ws("alice")
    for conv in [0, -1, -(1 << 63), MAX_SAFE + 1, (1 << 63) - 1]:
        expect(w, "bad_request", "send", conv=conv, client_msg_id="r", body="x")
        expect(w, "bad_request", "history", conv=conv)
        expect(w, "bad_request", "get", conv=conv)
    # 2^64 does not even fit an integer: still a bad request (id unusable or not)
    w.send_text('{"id":9,"op":"get","conv":18446744073709551616}')
    m = w.read_message()
    assert m["ok"] is False and m["error"]["code"] == "bad_request" and m["id"] in (9, None), m
    # the boundary itself is a valid id (just not a conversation)
    expect(w, "not_found", "get", conv=MAX_SAFE)
    for limit in [0, 201, -1, 1 << 40]:
        expect(w, "bad_request", "history", conv=G, limit=limit)
    assert w.request("history", conv=G, limit=200)["conv"] == G
    assert len(w.request("history", conv=G, limit=1)["events"]) == 1
    expect(w, "bad_request", "history", conv=G, before=0)
    expect(w, "bad_request", "history", conv=G, after=-1)
    expect(w, "bad_request", "history", conv=G, after=5, before=6)
    expect(w, "bad_request", "history", conv=G, after=5, before=3)
    for seq in [0, -1, MAX_SAFE + 1]:
        expect(w, "bad_request", "edit", conv=G, client_msg_id="e", seq=seq, body="x")
        expect(w, "bad_request", "delete", conv=G, client_msg_id="e", seq=seq)
        expect(w, "bad_request", "react", conv=G, client_msg_id="e", seq=seq, emoji="+1")
        expect(w, "bad_request", "receipt", conv=G, kind="read", seq=seq)
    for cursors in [{"0": 1}, {"-1": 1}, {"01": 1}, {str(MAX_SAFE + 1): 1}, {" 5": 1},
                    {"5x": 1}, {"": 1}, {str(G): -1}]:
        expect(w, "bad_request", "sync", cursors=cursors)
    expect(w, "bad_request", "send", conv=G, client_msg_id="", body="x")
    expect(w, "bad_request", "send", conv=G, client_msg_id="e", body="")
    expect(w, "bad_request", "react", conv=G, client_msg_id="e", seq=M1, emoji="")
    a = ws()
    expect(a, "bad_request", "register", user="shortpw", password="1234567")
    expect(a, "bad_request", "register", user="nopw", password="")
    healthy(a)
    healthy(w)
    w.close()


def test_bad_user_ids():
    bad = ["Alice", "", "-bob", "_bob", ".bob", "b ob", "bob!", "b\u00f6b", "bob\n", "a" * 33,
           "b@b", "BOB", "bob/1", "\u00e9"]
    a = ws()
    for u in bad:
        want = ("bad_request", "too_large") if len(u) > 32 else "bad_request"
        expect(a, want, "register", user=u, password=PASSWORD)
        expect(a, want, "login", user=u, password=PASSWORD)
    expect(a, ("bad_request", "too_large"), "register", user="a" * 300, password=PASSWORD)
    healthy(a)
    w = ws("alice")
    for u in bad:
        want = ("bad_request", "too_large") if len(u) > 32 else "bad_request"
        expect(w, want, "create", kind="direct", members=[u])
        expect(w, want, "create", kind="group", members=["bob", u])
        expect(w, want, "add_member", conv=G, user=u)
        expect(w, want, "remove_member", conv=G, user=u)
        expect(w, want, "presence", users=["bob", u])
        if u:
            expect(w, want, "profile", user=u)
    expect(w, "bad_request", "create", kind="direct", members=["alice"])     # with oneself
    expect(w, "bad_request", "create", kind="direct", members=["bob", "carol"])
    expect(w, "bad_request", "create", kind="direct", members=[])
    expect(w, "not_found", "profile", user="nobody-here")
    healthy(w)
    # REST paths carry user ids too
    st, r = rest(gw(1), "DELETE", "/api/v1/conversations/%d/members/BOB" % G, token=TOK["alice"])
    assert st == 400 and r["error"]["code"] == "bad_request", (st, r)
    w.close()


def test_oversize_fields_are_too_large():
    w = ws("big")
    conv = w.request("create", kind="group", name="big", members=["alice"])["conv"]
    expect(w, "too_large", "send", conv=conv, client_msg_id="b1", body="x" * (MAX_BODY + 1))
    expect(w, "too_large", "send", conv=conv, client_msg_id="b2", body="\u00e9" * 513)  # bytes
    expect(w, "too_large", "send", conv=conv, client_msg_id="x" * 65, body="x")
    expect(w, "too_large", "edit", conv=conv, client_msg_id="b3", seq=1,
           body="x" * (MAX_BODY + 1))
    expect(w, "too_large", "react", conv=conv, client_msg_id="b4", seq=1, emoji="x" * 65)
    expect(w, "too_large", "create", kind="group", name="n" * 257, members=["alice"])
    expect(w, "too_large", "set_settings", settings={"k": "v" * 5000})
    expect(w, "too_large", "set_profile", display_name="d" * 65)
    expect(w, "too_large", "set_profile", status="s" * 257)
    expect(w, "too_large", "presence", users=["u%d" % i for i in range(1001)])
    expect(w, "too_large", "create", kind="group", members=["u%d" % i for i in range(1001)])
    expect(w, ("too_large", "unauthorized"), "auth", token="e" * 600)
    a = ws()
    expect(a, "too_large", "register", user="longpw", password="p" * 257)
    healthy(a)
    # exactly at the limits is fine (max_body counts bytes)
    r1 = w.request("send", conv=conv, client_msg_id="x" * 64, body="x" * MAX_BODY)
    r2 = w.request("send", conv=conv, client_msg_id="b6", body="\u00e9" * (MAX_BODY // 2))
    h = w.request("history", conv=conv, after=1)["events"]
    assert [(e["seq"], len(e["body"].encode())) for e in h] == [
        (r1["seq"], MAX_BODY), (r2["seq"], MAX_BODY)], h
    healthy(w)
    w.close()


def test_member_limit_is_limit_exceeded():
    w = ws("lim")
    expect(w, "limit_exceeded", "create", kind="group",
           members=["alice", "bob", "carol", "mallory", "rl-send", "rl-typing", "rl-rest",
                    "rl-evade"])  # 9 with the creator
    conv = w.request("create", kind="group",
                     members=["alice", "bob", "carol", "mallory", "rl-send", "rl-typing",
                              "rl-rest"])["conv"]  # 8 with the creator
    expect(w, "limit_exceeded", "add_member", conv=conv, user="rl-evade")
    healthy(w)
    w.close()
    st, r = rest(gw(2), "POST", "/api/v1/conversations/%d/members" % conv,
                 {"user": "rl-login"}, token=TOK["lim"])
    assert st == 422 and r["error"]["code"] == "limit_exceeded", (st, r)


# ---- authentication -------------------------------------------------------------------

def test_every_op_before_auth_is_unauthorized():
    w = ws()
    ops = [("send", dict(conv=G, client_msg_id="pre", body="x")),
           ("edit", dict(conv=G, client_msg_id="pre", seq=M1, body="x")),
           ("delete", dict(conv=G, client_msg_id="pre", seq=M1)),
           ("react", dict(conv=G, client_msg_id="pre", seq=M1, emoji="x")),
           ("history", dict(conv=G)), ("get", dict(conv=G)), ("conversations", {}),
           ("create", dict(kind="group", members=["bob"])),
           ("add_member", dict(conv=G, user="carol")),
           ("remove_member", dict(conv=G, user="bob")), ("leave", dict(conv=G)),
           ("receipt", dict(conv=G, kind="read", seq=1)), ("typing", dict(conv=G)),
           ("presence", dict(users=["bob"])), ("profile", {}), ("settings", {}),
           ("set_profile", dict(status="x")), ("set_settings", dict(settings={})),
           ("sync", dict(cursors={str(G): 0}))]
    for op, fields in ops:
        expect(w, "unauthorized", op, **fields)
    healthy(w)
    # nothing arrives on an unauthenticated connection, and the message was not written
    w.poll(0.3)
    assert not w.pushes, w.pushes
    a = ws("alice")
    assert not [e for e in a.request("history", conv=G)["events"]
                if e.get("client_msg_id") == "pre"]
    a.close()
    # and it can still authenticate afterwards
    assert w.request("auth", token=TOK["bob"])["user"] == "bob"
    healthy(w)
    w.close()


def now_s():
    return int(time.time())


def test_bad_tokens_are_unauthorized():
    secret = c.conf["auth"]["secret"]
    good = {"sub": "alice", "iat": now_s(), "exp": now_s() + 3600}
    real = TOK["alice"]
    h, p, s = real.split(".")
    forged = {
        "garbage": "garbage",
        "empty-ish": "a.b.c",
        "other secret": hs256_token("another-secret-of-enough-length", good),
        "expired": hs256_token(secret, dict(good, exp=now_s() - 10)),
        "expired at 0": hs256_token(secret, dict(good, exp=0)),
        "no exp": hs256_token(secret, {"sub": "alice"}),
        "exp a string": hs256_token(secret, dict(good, exp=str(now_s() + 3600))),
        "exp negative": hs256_token(secret, dict(good, exp=-5)),
        "exp float": hs256_token(secret, dict(good, exp=now_s() + 3600.5)),
        "no sub": hs256_token(secret, {"exp": now_s() + 3600}),
        "sub not a user id": hs256_token(secret, dict(good, sub="Alice Smith")),
        "sub empty": hs256_token(secret, dict(good, sub="")),
        "sub a number": hs256_token(secret, dict(good, sub=5)),
        "claims not JSON": hs256_token(secret, b"not json"),
        "claims an array": hs256_token(secret, b'["alice"]'),
        "alg none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + p + ".",
        "alg none no sig": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + p,
        "tampered payload": h + "." + hs256_token(secret, dict(good, sub="bob")).split(".")[1]
                            + "." + s,
        "truncated signature": real[:-2],
        "signature of another": h + "." + p + "." + TOK["bob"].split(".")[2],
        "padding": real + "==",
        "whitespace": " " + real,
        "two dots": h + "." + p + "." + s + ".x",
        "non-canonical base64": real[:-1] + chr(ord(real[-1]) ^ 1),
    }
    w = ws()
    for what, tok in forged.items():
        e = expect(w, "unauthorized", "auth", token=tok)
        assert e["message"], what
        expect(w, "unauthorized", "history", conv=G)  # still not authenticated
    healthy(w)
    # sanity: the same recipe with the right secret is accepted
    assert w.request("auth", token=hs256_token(secret, good))["user"] == "alice"
    healthy(w)
    w.close()
    # REST takes the same tokens as a bearer
    for what, tok in forged.items():
        st, r = rest(gw(2), "GET", "/api/v1/conversations", token=tok)
        assert st == 401 and r["error"]["code"] == "unauthorized", (what, st, r)


def let_login_buckets_refill():
    """Every case logs in from 127.0.0.1, so they share the per-address bucket:
    wait until it is full again (login_per_s is 1)."""
    time.sleep(LOGIN_BURST + 0.5)


def test_wrong_password_taken_name_and_login_limit():
    let_login_buckets_refill()
    w = ws()
    expect(w, "unauthorized", "login", user="alice", password="wrong-password")
    expect(w, "unauthorized", "login", user="nobody-at-all", password=PASSWORD)  # no leak
    expect(w, "conflict", "register", user="alice", password="another-password",
           display_name="Alice 2")
    healthy(w)
    w.close()
    # per connection: a burst of logins, then rate_limited with retry_after_ms
    let_login_buckets_refill()
    w = ws()
    rids = [w.send_request("login", user="rl-login", password="wrong-%d" % i)
            for i in range(LOGIN_BURST + 5)]
    codes = [w.wait_reply(r)["error"] for r in rids]
    assert codes[0]["code"] == "unauthorized", codes
    limited = [e for e in codes if e["code"] == "rate_limited"]
    assert limited and all(e.get("retry_after_ms", 0) > 0 for e in limited), codes
    assert {e["code"] for e in codes} <= {"unauthorized", "rate_limited"}, codes
    healthy(w)
    w.close()
    # the right password still works (on a fresh connection)
    let_login_buckets_refill()
    w = ws()
    assert w.request("login", user="rl-login", password=PASSWORD)["user"] == "rl-login"
    healthy(w)
    w.close()
    st, r = rest(gw(1), "POST", "/api/v1/register", {"user": "alice", "password": PASSWORD,
                                                      "display_name": "A"})
    assert st == 409 and r["error"]["code"] == "conflict", (st, r)
    st, r = rest(gw(1), "POST", "/api/v1/login", {"user": "alice", "password": "nope-nope"})
    assert st == 401 and r["error"]["code"] == "unauthorized", (st, r)


def test_login_rate_limit_per_source_address():
    """docs: register/login 5/s per connection AND per source address -- a new
    connection per attempt must not reset the budget."""
    rest_codes = []
    for i in range(LOGIN_BURST + 8):
        st, r = rest(gw(3), "POST", "/api/v1/login",
                     {"user": "rl-login", "password": "guess-%d" % i})
        rest_codes.append((st, r["error"]["code"] if isinstance(r, dict) and "error" in r
                           else r))
    ws_codes = []
    for i in range(LOGIN_BURST + 8):
        w = ws(None, node=2)
        try:
            w.request("login", user="rl-login", password="guess-%d" % i)
            ws_codes.append("ok")
        except ApiError as e:
            ws_codes.append(e.code)
        w.close()
    problems = []
    if (429, "rate_limited") not in rest_codes:
        problems.append("%d REST logins from one address, none rate limited: %r" % (
            len(rest_codes), rest_codes))
    if "rate_limited" not in ws_codes:
        problems.append("%d WebSocket logins from one address, one fresh connection each, "
                        "none rate limited: %r" % (len(ws_codes), ws_codes))
    assert not problems, "\n".join(problems)


# ---- authorization ---------------------------------------------------------------------

def test_membership_and_roles():
    # (writes are rate limited before they are authorised: at most SEND_BURST
    # writes per user and gateway here)
    w = ws("carol")  # not a member of G
    expect(w, "forbidden", "send", conv=G, client_msg_id="c1", body="let me in")
    expect(w, "forbidden", "history", conv=G)
    expect(w, "forbidden", "get", conv=G)
    expect(w, "forbidden", "edit", conv=G, client_msg_id="c2", seq=M1, body="x")
    expect(w, "forbidden", "delete", conv=G, client_msg_id="c3", seq=M1)
    expect(w, "forbidden", "react", conv=G, client_msg_id="c4", seq=M1, emoji="x")
    expect(w, "forbidden", "receipt", conv=G, kind="read", seq=M1)
    expect(w, "forbidden", "typing", conv=G)
    expect(w, "forbidden", "add_member", conv=G, user="carol")
    healthy(w)
    w.close()
    w = ws("carol", node=2)
    expect(w, "forbidden", "remove_member", conv=G, user="bob")
    expect(w, "forbidden", "leave", conv=G)
    assert w.request("sync", cursors={str(G): 0}) == {"synced": 0}
    w.poll(0.3)
    assert not [m for m in w.pushes if m.get("conv") == G], w.pushes
    for op, fields in [("get", {}), ("history", {}),
                       ("send", dict(client_msg_id="u1", body="x")),
                       ("receipt", dict(kind="read", seq=1)),
                       ("add_member", dict(user="bob")), ("leave", {})]:
        expect(w, "not_found", op, conv=UNKNOWN, **fields)
    healthy(w)
    w.close()
    b = ws("bob")  # a plain member
    expect(b, "forbidden", "edit", conv=G, client_msg_id="b1", seq=M1, body="not yours")
    expect(b, "forbidden", "delete", conv=G, client_msg_id="b2", seq=M1)
    expect(b, "forbidden", "add_member", conv=G, user="carol")
    expect(b, "forbidden", "remove_member", conv=G, user="rl-send")
    expect(b, "not_found", "edit", conv=G, client_msg_id="b3", seq=999999, body="x")
    healthy(b)
    b.close()
    b = ws("bob", node=2)
    expect(b, "not_found", "react", conv=G, client_msg_id="b4", seq=999999, emoji="x")
    healthy(b)
    b.close()
    a = ws("alice")
    events = a.request("history", conv=G, limit=200)["events"]
    assert [e for e in events if e["seq"] == M1][0]["body"] == "hello"
    assert not [e for e in events if e["event"] in ("edited", "deleted", "member_added",
                                                    "member_removed")], events
    a.close()
    # REST: the same answers as HTTP statuses
    for path, want in [("/api/v1/conversations/%d" % G, 403),
                       ("/api/v1/conversations/%d/messages" % G, 403),
                       ("/api/v1/conversations/%d" % UNKNOWN, 404),
                       ("/api/v1/conversations/%d/messages" % UNKNOWN, 404)]:
        st, r = rest(gw(3), "GET", path, token=TOK["carol"])
        code = {403: "forbidden", 404: "not_found"}[want]
        assert st == want and r["error"]["code"] == code, (path, st, r)
    st, r = rest(gw(3), "POST", "/api/v1/conversations/%d/messages" % G,
                 {"client_msg_id": "c5", "body": "x"}, token=TOK["carol"])
    assert st == 403 and r["error"]["code"] == "forbidden", (st, r)


# ---- rate limits -----------------------------------------------------------------------

def burst(w, n, op, fields_of):
    """n pipelined requests; fields_of(i) gives each one's fields; the replies."""
    rids = [w.send_request(op, **fields_of(i)) for i in range(n)]
    return [w.wait_reply(r) for r in rids]


def test_send_and_typing_rate_limits():
    w = ws("rl-send", node=2)
    replies = burst(w, SEND_BURST + 10, "send",
                    lambda i: dict(conv=G, client_msg_id="rl-%d" % i, body="x%d" % i))
    ok = [i for i, r in enumerate(replies) if r["ok"]]
    limited = [(i, r["error"]) for i, r in enumerate(replies) if not r["ok"]]
    assert ok and ok[0] == 0, replies[:3]
    assert limited, "%d sends at once, none rate limited" % len(replies)
    assert all(e["code"] == "rate_limited" and e.get("retry_after_ms", 0) > 0
               for _, e in limited), limited
    # a refused write is not written; retried later with its key, it is
    hist = w.request("history", conv=G, limit=200)["events"]
    have = {e.get("client_msg_id") for e in hist}
    assert all("rl-%d" % i in have for i in ok)
    assert not any("rl-%d" % i in have for i, _ in limited), "a rate-limited send was written"
    i, e = limited[0]
    for _ in range(10):
        time.sleep(e["retry_after_ms"] / 1000.0)
        r = w.request_raw("send", conv=G, client_msg_id="rl-%d" % i, body="x%d" % i)
        if r["ok"]:
            break
        e = r["error"]
        assert e["code"] == "rate_limited" and e.get("retry_after_ms", 0) > 0, r
    assert r["ok"] and r["result"]["dup"] is False, r
    healthy(w)
    w.close()

    t = ws("rl-typing", node=3)
    peer = ws("bob", node=1)
    replies = burst(t, TYPING_BURST + 10, "typing", lambda i: dict(conv=G, state=i % 2 == 0))
    ok = [r for r in replies if r["ok"]]
    limited = [r["error"] for r in replies if not r["ok"]]
    assert replies[0]["ok"] and ok, replies[:3]
    assert limited and all(e["code"] == "rate_limited" and e.get("retry_after_ms", 0) > 0
                           for e in limited), limited
    # the typing that passed reaches a member on another gateway
    p = peer.next_push(lambda m: m.get("type") == "typing" and m.get("user") == "rl-typing",
                       timeout=15)
    assert p["conv"] == G and p["state"] is True, p
    healthy(t)
    healthy(peer)
    t.close()
    peer.close()


def test_send_rate_limit_survives_a_reconnect():
    """docs: buckets are per user and gateway -- closing the connection and opening
    a new one must not refill them."""
    w = ws("rl-evade", node=1)
    replies = burst(w, SEND_BURST + 5, "send",
                    lambda i: dict(conv=G, client_msg_id="ev-%d" % i, body="x"))
    assert any(not r["ok"] and r["error"]["code"] == "rate_limited" for r in replies)
    t_empty = time.monotonic()
    w.close()
    w = ws("rl-evade", node=1)
    replies = burst(w, SEND_BURST, "send",
                    lambda i: dict(conv=G, client_msg_id="ev2-%d" % i, body="x"))
    elapsed = time.monotonic() - t_empty
    accepted = sum(1 for r in replies if r["ok"])
    allowed = int(elapsed * 1) + 1  # send_per_s = 1: what can have refilled since
    assert accepted <= allowed, \
        "the bucket refilled on reconnect: %d sends accepted %.2fs after it was empty " \
        "(at 1/s at most %d)" % (accepted, elapsed, allowed)
    healthy(w)
    w.close()


def test_rest_writes_are_rate_limited():
    """docs: writes are limited per user and gateway; REST is the same operations."""
    statuses = []
    for i in range(SEND_BURST + 8):
        st, r = rest(gw(1), "POST", "/api/v1/conversations/%d/messages" % G,
                     {"client_msg_id": "rest-%d" % i, "body": "x"}, token=TOK["rl-rest"])
        statuses.append(st)
    assert statuses[0] == 201, statuses
    assert 429 in statuses, "%d REST sends at once, none rate limited: %r" % (
        len(statuses), statuses)


# ---- REST ------------------------------------------------------------------------------

def test_rest_errors_and_statuses():
    a1 = gw(1)
    tok = TOK["alice"]
    # 401 without, or with a broken, bearer
    for hdrs in [None, {"Authorization": "Basic YWxpY2U6eA=="}, {"Authorization": "Bearer"},
                 {"Authorization": "Bearer "}, {"Authorization": tok},
                 {"Authorization": "Bearer " + "x" * 2000}]:
        st, r = rest(a1, "GET", "/api/v1/conversations", headers=hdrs)
        assert st == 401 and r["error"]["code"] == "unauthorized", (hdrs and
                                                                    short(hdrs), st, r)
    st, r = rest(a1, "POST", "/api/v1/conversations/%d/messages" % G,
                 {"client_msg_id": "r0", "body": "x"})
    assert st == 401, (st, r)
    # 400 for bodies that are not a JSON object, or bad fields
    for body in ["{", "[]", '"x"', "42", "null", '{"user":"alice","user":"bob"}', "\xff"]:
        st, r = rest(a1, "POST", "/api/v1/login", raw_body=body.encode("latin-1"))
        assert st == 400 and r["error"]["code"] == "bad_request", (body, st, r)
    for path, body in [("/api/v1/conversations/%d/messages" % G,
                        {"client_msg_id": 5, "body": "x"}),
                       ("/api/v1/conversations/%d/messages" % G, {"client_msg_id": "r1"}),
                       ("/api/v1/conversations/%d/receipts" % G, {"kind": "seen", "seq": 1}),
                       ("/api/v1/conversations", {"kind": "group", "members": "bob"}),
                       ("/api/v1/register", {"user": "Bad Name", "password": PASSWORD})]:
        st, r = rest(a1, "POST", path, body, token=tok)
        assert st == 400 and r["error"]["code"] == "bad_request", (path, body, st, r)
    for q in ["limit=0", "limit=201", "limit=abc", "limit=-1", "after=x", "before=0",
              "limit=1.5"]:
        st, r = rest(a1, "GET", "/api/v1/conversations/%d/messages?%s" % (G, q), token=tok)
        assert st == 400 and r["error"]["code"] == "bad_request", (q, st, r)
    for conv in ["0", str(MAX_SAFE + 1), str((1 << 63) - 1), str(1 << 63)]:
        st, r = rest(a1, "GET", "/api/v1/conversations/" + conv, token=tok)
        assert st == 400 and r["error"]["code"] == "bad_request", (conv, st, r)
    # 404 for what is not an endpoint
    for method, path in [("GET", "/api/v1/nope"), ("GET", "/api/v1/"), ("GET", "/api/v2/x"),
                         ("GET", "/api/v1/conversations/abc"),
                         ("GET", "/api/v1/conversations/%d/nope" % G),
                         ("DELETE", "/api/v1/login"), ("GET", "/api/v1/register"),
                         ("DELETE", "/api/v1/conversations/%d" % G),
                         ("GET", "/api/v1/conversations/%d/members/x/y" % G),
                         ("GET", "/api/v1/" + "a/" * 40)]:
        st, r = rest(a1, method, path, token=tok)
        assert st == 404 and r["error"]["code"] == "not_found", (method, path, st, r)
    # a conversation id too big for 64 bits: not an endpoint, or a bad request
    st, r = rest(a1, "GET", "/api/v1/conversations/" + "9" * 30, token=tok)
    assert (st, r["error"]["code"]) in ((404, "not_found"), (400, "bad_request")), (st, r)
    # 413 for a request body over the limit
    st, r = rest(a1, "POST", "/api/v1/login", raw_body=b'{"user":"' + b"a" * (2 << 20) + b'"}')
    assert st == 413 and r["error"]["code"] == "too_large", (st, r)
    st, r = rest(a1, "POST", "/api/v1/conversations/%d/messages" % G,
                 {"client_msg_id": "r2", "body": "x" * (MAX_BODY + 1)}, token=tok)
    assert st in (400, 413) and r["error"]["code"] == "too_large", (st, r)
    # the successes have their statuses, too
    st, r = rest(a1, "GET", "/api/v1/conversations/%d/messages?limit=1" % G, token=tok)
    assert st == 200 and len(r["events"]) == 1, (st, r)
    st, r = rest(a1, "GET", "/healthz")
    assert st == 200 and r["status"] == "ok", (st, r)


def test_rest_conv_ids_beyond_2_63_do_not_alias():
    """A conv id in the path above 2^63 is out of range (bad_request), not read
    modulo 2^63 as another conversation."""
    tok = TOK["alice"]
    alias = (1 << 63) + G
    st, r = rest(gw(1), "GET", "/api/v1/conversations/%d" % alias, token=tok)
    assert st == 400 and r["error"]["code"] == "bad_request", \
        "GET /api/v1/conversations/%d (= 2^63 + %d) answered %d %s" % (
            alias, G, st, short(r))
    st, r = rest(gw(1), "GET", "/api/v1/conversations/%d/messages?limit=%d" % (
        G, (1 << 63) + 50), token=tok)
    assert st == 400 and r["error"]["code"] == "bad_request", \
        "limit=2^63+50 answered %d %s" % (st, short(r))


def test_register_without_display_name():
    """display_name is optional."""
    let_login_buckets_refill()
    w = ws(None, node=2)
    r = w.request("register", user="plain-user", password=PASSWORD)
    assert r["user"] == "plain-user" and r["token"], r
    healthy(w)
    w.close()
    st, r = rest(gw(2), "POST", "/api/v1/register", {"user": "plain-user", "password": PASSWORD})
    assert st == 409 and r["error"]["code"] == "conflict", (st, r)
    assert node_alive(2)


def node_alive(node):
    pid = c.pid(node)
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, TypeError):
        return False


def test_raw_tcp_garbage_on_the_gateway_port():
    """Whatever arrives on the gateway's TCP port -- nothing at all, a line that is
    not HTTP, random bytes before or after a WebSocket handshake -- costs at most
    that connection."""
    rnd = random.Random(11)
    node = 3
    host, port = gw(node).rsplit(":", 1)
    handshake = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
                 b"Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    cases = [("connect and close, sending nothing", b""),
             ("a line that is not HTTP", b"hello\r\n\r\n"),
             ("a truncated request line", b"GET /api/v1/conv"),
             ("a truncated header block", b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\n"),
             ("a body shorter than its Content-Length",
              b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"),
             ("a TLS client hello", bytes.fromhex("16030100a5010000a10303") + os.urandom(64)),
             ("a huge header", b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n"),
             ("a handshake, then a truncated frame", handshake + b"\x81\xfe\x10"),
             ("a handshake, then random bytes", handshake + os.urandom(300))]
    for i in range(40):
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 500)))
        cases.append(("random bytes #%d (%s...)" % (i, junk[:8].hex()),
                      (handshake if i % 2 else b"") + junk))
    for what, data in cases:
        s = socket.create_connection((host, int(port)), timeout=5)
        try:
            if data:
                s.sendall(data)
        except OSError:
            pass
        s.close()
        # the next client is served (a full request/response round trip)
        try:
            st, _ = rest(gw(node), "GET", "/healthz", timeout=10)
        except OSError as e:
            st = repr(e)
        assert st == 200 and node_alive(node), \
            "node %d died (or stopped answering: %r) after %s on its gateway port %s" % (
                node, st, what, port)
    healthy(ws("bob", node=node))


# ---- afterwards ------------------------------------------------------------------------

def test_nodes_alive_and_logs_clean():
    problems = []
    for node in c.node_ids():
        if not node_alive(node):
            problems.append("node %d (pid %r) is gone" % (node, c.pid(node)))
            continue
        try:
            st, r = rest(gw(node), "GET", "/healthz")
            assert st == 200 and r == {"status": "ok", "node": node}, (st, r)
            w = ws("alice", node=node)
            healthy(w)
            assert w.request("history", conv=G, limit=1)["conv"] == G
            w.close()
        except (AssertionError, OSError, Closed, ApiError, TimeoutError) as e:
            problems.append("node %d is up but unhealthy: %r" % (node, e))
    for node in c.node_ids():
        for line in c.log(node).splitlines():
            if (" ERROR " in line or "AddressSanitizer" in line or "runtime error:" in line
                    or "LeakSanitizer" in line or "Assertion" in line or "SUMMARY:" in line):
                problems.append("node %d log: %s" % (node, line))
    assert not problems, "\n".join(problems[:40])


def teardown():
    c.down()


if __name__ == "__main__":
    setup()
    try:
        run_tests(test_malformed_and_non_object_json_get_bad_request_with_null_id,
                  test_ids_echo_or_null,
                  test_missing_bad_and_unknown_ops,
                  test_binary_frames_are_refused,
                  test_invalid_utf8_in_a_text_frame,
                  test_deeply_nested_json,
                  test_frame_over_max_frame_closes_with_1009,
                  test_protocol_violations_close_the_connection_only,
                  test_garbage_flood,
                  test_missing_fields,
                  test_wrong_types,
                  test_out_of_range_values,
                  test_bad_user_ids,
                  test_oversize_fields_are_too_large,
                  test_member_limit_is_limit_exceeded,
                  test_every_op_before_auth_is_unauthorized,
                  test_bad_tokens_are_unauthorized,
                  test_wrong_password_taken_name_and_login_limit,
                  test_login_rate_limit_per_source_address,
                  test_membership_and_roles,
                  test_send_and_typing_rate_limits,
                  test_send_rate_limit_survives_a_reconnect,
                  test_rest_writes_are_rate_limited,
                  test_rest_errors_and_statuses,
                  test_rest_conv_ids_beyond_2_63_do_not_alias,
                  test_register_without_display_name,
                  test_raw_tcp_garbage_on_the_gateway_port,
                  test_nodes_alive_and_logs_clean)
    finally:
        teardown()
