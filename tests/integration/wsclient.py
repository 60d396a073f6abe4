"""A small blocking WebSocket (RFC 6455) and REST client for chorus gateways.
Python 3 standard library only, so tests need nothing beyond Debian's python3.

    c = WsClient("127.0.0.1:7301")
    c.request("login", user="alice", password="...")   # -> result dict, or raises ApiError
    c.next_push(lambda m: m["type"] == "event")        # the next matching server push

Replies are matched by request id; pushes (events, typing, presence, goodbye)
that arrive meanwhile are kept in order in `self.pushes` for the test to read.
"""
import base64
import hashlib
import http.client
import json
import os
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ApiError(Exception):
    def __init__(self, code, message, reply=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.reply = reply


class Closed(Exception):
    """The server closed the connection (status and reason in args)."""


class WsClient:
    def __init__(self, addr, path="/ws", timeout=30.0, max_frame=None, rcvbuf=None):
        host, port = addr.rsplit(":", 1)
        self.addr = addr
        self.path = path
        self.timeout = timeout
        if rcvbuf:
            # a small receive buffer set before connecting (so the window is small
            # too): a client that stops reading backs up into the server quickly
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, int(port)))
        else:
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pushes = []
        self.replies = {}
        self.next_id = 1
        self.closed = None  # (status, reason) once the server closed
        # Set to a list to record every received message (replies and pushes) in
        # arrival order, e.g. to check that a reply came after some pushes.
        self.trace = None
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, addr, key))
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0]:
            raise Closed("handshake refused: %s" % lines[0])
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                   for l in lines[1:] if ":" in l}
        if headers.get("sec-websocket-accept") != want:
            raise Closed("bad Sec-WebSocket-Accept")

    # ---- framing ----
    def _fill(self, deadline=None):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no data from %s" % self.addr)
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(self.timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from %s" % self.addr)
        if not data:
            self.closed = self.closed or (1006, "connection lost")
            raise Closed(*self.closed)
        self.buf += data

    def send_frame(self, opcode, payload, fin=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload)) if n < 4096 else \
            _mask_fast(payload, mask)
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode() if isinstance(text, str) else text)

    def _read_frame(self, deadline):
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                n = b1 & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) >= 4:
                        n = struct.unpack(">H", self.buf[2:4])[0]
                        off = 4
                    else:
                        n = None
                elif n == 127:
                    if len(self.buf) >= 10:
                        n = struct.unpack(">Q", self.buf[2:10])[0]
                        off = 10
                    else:
                        n = None
                if n is not None and len(self.buf) >= off + n:
                    payload = self.buf[off:off + n]
                    self.buf = self.buf[off + n:]
                    return b0 & 0x80, b0 & 0x0F, payload
            self._fill(deadline)

    def _read_message(self, deadline):
        """The next text message (reassembling fragments); answers pings.  Fragments
        read before a TimeoutError are kept for the next call (self._frag), so a
        reader polling with short timeouts never loses part of a message."""
        parts = self.__dict__.setdefault("_frag", [])
        lines = self.__dict__.setdefault("_lines", [])
        if lines:
            return lines.pop(0)
        while True:
            fin, opcode, payload = self._read_frame(deadline)
            if opcode == 0x8:
                status = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = (status, payload[2:].decode("utf-8", "replace"))
                try:
                    self.send_frame(0x8, payload[:2])
                except OSError:
                    pass
                raise Closed(*self.closed)
            if opcode == 0x9:
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                del parts[:]
                if "batch=1" not in self.path:
                    return json.loads(data.decode())
                # /ws?batch=1: one or more JSON objects per frame, one per line
                lines.extend(json.loads(x) for x in data.decode().split("\n") if x.strip())
                if lines:
                    return lines.pop(0)

    def _pump(self, deadline):
        m = self._read_message(deadline)
        if self.trace is not None:
            self.trace.append(m)
        if m.get("type") == "reply":
            self.replies[m.get("id")] = m
        else:
            self.pushes.append(m)

    # ---- requests ----
    def send_request(self, op, **fields):
        """Sends a request, returns its id (read the reply with wait_reply)."""
        rid = self.next_id
        self.next_id += 1
        msg = {"id": rid, "op": op}
        msg.update(fields)
        self.send_text(json.dumps(msg))
        return rid

    def wait_reply(self, rid, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while rid not in self.replies:
            self._pump(deadline)
        return self.replies.pop(rid)

    def request_raw(self, op, timeout=None, **fields):
        return self.wait_reply(self.send_request(op, **fields), timeout)

    def request(self, op, timeout=None, **fields):
        """The result of op; raises ApiError with the error code when it fails."""
        r = self.request_raw(op, timeout, **fields)
        if not r.get("ok"):
            e = r.get("error", {})
            raise ApiError(e.get("code"), e.get("message"), r)
        return r["result"]

    def next_push(self, match=None, timeout=None):
        """Removes and returns the first push matching `match` (oldest first)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, m in enumerate(self.pushes):
                if match is None or match(m):
                    return self.pushes.pop(i)
            self._pump(deadline)

    def drain(self, seconds):
        """Reads everything the server sends for `seconds` (into pushes/replies)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._pump(deadline)
        except TimeoutError:
            pass

    def events(self, conv=None):
        """Removes and returns the event pushes received so far (of one conv)."""
        out = [m for m in self.pushes if m.get("type") == "event" and
               (conv is None or m.get("conv") == conv)]
        self.pushes = [m for m in self.pushes if m not in out]
        return out

    def wait_events(self, conv, n, timeout=None, kind="message"):
        """Waits until n events of `kind` of conv arrived; returns all of that kind."""
        deadline = time.monotonic() + (timeout or self.timeout)
        got = []
        while True:
            keep = []
            for m in self.pushes:
                if m.get("type") == "event" and m.get("conv") == conv and \
                        (kind is None or m.get("event") == kind):
                    got.append(m)
                else:
                    keep.append(m)
            self.pushes = keep
            if len(got) >= n:
                return got
            self._pump(deadline)

    def read_message(self, timeout=None):
        """The next message from the server in arrival order, reply or push, without
        filing it (for tests that count replies with the same id, e.g. null)."""
        return self._read_message(time.monotonic() + (timeout or self.timeout))

    def poll(self, seconds):
        """Reads whatever the server sends for up to `seconds` (into pushes and
        replies); returns early once nothing arrives before the deadline.  Raises
        Closed when the connection ends."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._pump(deadline)
        except TimeoutError:
            pass

    def wait_closed(self, timeout=None):
        """Reads (and keeps) everything until the server closes the connection;
        returns (status, reason).  TimeoutError if it stays open."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                self._pump(deadline)
            except Closed:
                return self.closed
            except (ConnectionResetError, BrokenPipeError):
                self.closed = self.closed or (1006, "connection reset")
                return self.closed

    def wait_seq(self, conv, seq, timeout=None):
        """Waits until an event of conv with seq >= `seq` arrived; removes and
        returns every sequenced event (seq > 0, any kind) of conv received so
        far, in arrival order.  Receipts (seq 0) and other pushes stay queued."""
        deadline = time.monotonic() + (timeout or self.timeout)
        got = []
        while True:
            keep = []
            for m in self.pushes:
                if m.get("type") == "event" and m.get("conv") == conv and m.get("seq", 0) > 0:
                    got.append(m)
                else:
                    keep.append(m)
            self.pushes = keep
            if any(m["seq"] >= seq for m in got):
                return got
            try:
                self._pump(deadline)
            except TimeoutError:
                raise TimeoutError("%s: no event of conv %d with seq >= %d (got seqs %s)"
                                   % (self.addr, conv, seq, [m["seq"] for m in got]))

    def close(self):
        try:
            self.send_frame(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


def _mask_fast(payload, mask):
    n = len(payload)
    m = int.from_bytes((mask * ((n + 3) // 4))[:n], "big")
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def request_retrying(c, op, attempts=50, **fields):
    """c.request(op), retried after `rate_limited` (honouring retry_after_ms, at
    most `attempts` times)."""
    for i in range(attempts):
        try:
            return c.request(op, **fields)
        except ApiError as e:
            if e.code != "rate_limited" or i == attempts - 1:
                raise
            wait_ms = (e.reply or {}).get("error", {}).get("retry_after_ms") or 100
            time.sleep(min(wait_ms, 2000) / 1000.0)


def login(addr, user, password="password-" + "x" * 4, register=True, **kw):
    """A WsClient authenticated as user (registered first when register=True and
    the user does not exist yet).  Retries after `rate_limited`."""
    c = WsClient(addr, **kw)
    if register:
        try:
            request_retrying(c, "register", user=user, password=password)
            return c
        except ApiError as e:
            if e.code != "conflict":
                raise
    request_retrying(c, "login", user=user, password=password)
    return c


def rest(addr, method, path, body=None, token=None, timeout=30, raw_body=None, headers=None):
    """One REST call: returns (status, parsed JSON or None)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    if headers:
        h.update(headers)
    data = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(text) if text else None
    except ValueError:
        return resp.status, text


# ---- tokens and placement (for tests that forge tokens or pick shards) ----

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret, claims, header=None):
    """An HS256 JWT over `claims` (a dict, or raw bytes for the payload) signed with
    `secret` -- the shape the gateways issue (src/gateway/auth.c)."""
    import hmac
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"},
                             separators=(",", ":")).encode())
    payload = claims if isinstance(claims, bytes) else \
        json.dumps(claims, separators=(",", ":")).encode()
    signing = head + "." + b64url(payload)
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(mac)


_M64 = (1 << 64) - 1


def mix64(x):
    """splitmix64's finaliser, as ch_mix64 in src/common/hash.h."""
    x &= _M64
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & _M64
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & _M64
    x ^= x >> 31
    return x


def fnv64(h, data):
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & _M64
    return h


FNV64_INIT = 0xcbf29ce484222325


def shard_of_conv(conv, n_shards):
    """The shard holding a conversation (cluster_shard_of_conv)."""
    return mix64(conv) % n_shards


def shard_of_user(user, n_shards):
    """The shard holding a user's record (cluster_shard_of_user)."""
    return mix64(fnv64(FNV64_INIT, user.encode())) % n_shards
