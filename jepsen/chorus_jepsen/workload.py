"""The chorus Jepsen workload: appends and reads on per-key group conversations,
plus fanout subscribers (see /tmp/jepsen-interface.md for the history format).

    wl = Workload(["10.77.0.11:7300", ...], keys=8, concurrency=10, rate=50,
                  history=HistoryWriter(".../history.jsonl"),
                  fanout_log=FanoutLog(".../fanout.jsonl", t0_ns=hist.t0_ns))
    wl.setup()          # users, one group conversation per key, keys.json
    wl.start()          # subscribers, then workers
    ...                 # nemeses write hist.nemesis("start"/"stop", ...)
    wl.stop()
    final = wl.final_reads(timeout=30)   # {key: [values...]}

Each key k is the group conversation "jepsen-key-<k>".  An append of value v is
a `send` with client_msg_id "v<v>" and body str(v); a read pages through
`history` after=0 (limit 200) and returns the message bodies as ints in seq
order.  Python 3 standard library only; the client is tests/integration/wsclient.py.
"""
import json
import logging
import os
import random
import socket
import sys
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
_WSCLIENT_DIR = os.path.join(_REPO, "tests", "integration")
if _WSCLIENT_DIR not in sys.path:
    sys.path.insert(0, _WSCLIENT_DIR)

import wsclient  # noqa: E402
from wsclient import ApiError, Closed, WsClient  # noqa: E402

try:
    from .history import FanoutLog, HistoryWriter
except ImportError:  # loaded as a plain module (sys.path has this directory)
    from history import FanoutLog, HistoryWriter

log = logging.getLogger("chorus_jepsen.workload")

DEFAULT_PASSWORD = "jepsen-password-1"
GROUP_PREFIX = "jepsen-key-"
HISTORY_LIMIT = 200

# ---------------------------------------------------------------------------------
# Completion classification.
#
# Why `unavailable` proves that an append did NOT happen (checked in the source,
# src/gateway/ops_uv.c and src/gateway/rpc_uv.c):
#
#  * Every `send` is one store RPC: gw_handle_request -> (rate bucket: rate_limited,
#    answered before anything is sent) -> op_write -> submit -> gw_call -> rpc_call;
#    write_done answers the client with whatever error rpc_uv hands back
#    (submit_result: the rpc error, else a PROTO_ERROR code, else the command's
#    result code).  gw_call refuses with CH_ESHUTDOWN (wire code "unavailable")
#    before anything is sent when the gateway is stopping.
#  * rpc_uv.c: a call's `delivered` flag is set in call_send as soon as the frame is
#    queued on a node connection (and again in on_call_reply on any answer).  The
#    tick finishes a call at its deadline with CH_ETIMEOUT if delivered, else
#    CH_EUNAVAILABLE.  A store answer of unavailable / not_leader / no-shard /
#    shutdown (PROTO_ERROR or the command's result) is `retryable()`: it is never
#    passed to the gateway, the call is retried, and since it was delivered its
#    deadline gives timeout.  So CH_EUNAVAILABLE reaches the client only for a call
#    that was never queued to any store node: the write did not happen.
#  * The one path that answers "unavailable" for a delivered call is rpc_close
#    (CH_ESHUTDOWN, message "node is shutting down") when the gateway stops with
#    calls in flight.  gw_stop destroys the lws context (closing every client
#    connection) before gw_core_stop -> rpc_close, so that reply should never
#    reach a client; still, an "unavailable" whose message says "shutting down" is
#    classified info here, which is always sound.
#  * Store-side: raft errors map to not_leader / shutdown / unavailable (retryable,
#    see raft_to_ch in src/raft-log/shard_uv.c), too_large (raft refused the entry
#    synchronously) or internal (info here).  Definitive state-machine refusals
#    (forbidden, not_found, limit_exceeded, bad_request, too_large) leave the log's
#    state untouched (src/raft-log/clog.c header: "every failure leaves the state
#    untouched") and, because idempotency is checked right after membership, a
#    gateway retry of an append that did commit answers ok/dup, not an error.
#  * Caveat found in rpc_uv.c call_send: if node_write queues the frame but the
#    pending-map insert then fails (out of memory), `delivered` stays 0 although the
#    frame will be flushed to the store; an OOM-only window where "unavailable"
#    could follow a delivered write.
#
# docs/protocol.md's error table calls `unavailable` "safe to retry" and lists it
# with `timeout` as the codes after which "a write's outcome is unknown"; the code
# above is stricter (never delivered), which is what this classification relies on.
#
# Reads have no side effects: any failure, including a timeout or a lost
# connection, is `fail` (Jepsen convention).

APPEND_FAIL_CODES = frozenset([
    "bad_request", "unknown_op", "unauthorized", "forbidden", "not_found",
    "too_large", "limit_exceeded", "rate_limited", "unavailable",
])
# Everything else for a write is `info`: "timeout" and "internal" explicitly, and
# any code this table does not know (conflict, not_leader, corrupt, io_error, ...).


def reply_error(x):
    """(code, message) of a failed reply dict or ApiError; None otherwise."""
    if isinstance(x, ApiError):
        return x.code, x.message or ""
    if isinstance(x, dict) and not x.get("ok"):
        e = x.get("error") or {}
        return e.get("code"), e.get("message") or ""
    return None


def classify(f, reply_or_exception):
    """Jepsen completion type of an op: "ok" | "fail" | "info".

    f: "read", or "append" (any other f is treated as a write, like append).
    reply_or_exception: the reply dict ({"type":"reply","ok":...}), an ApiError,
    or the exception that ended the wait (lost connection, client-side timeout,
    garbage from the server) -- i.e. no reply at all.
    """
    x = reply_or_exception
    if isinstance(x, dict) and x.get("ok"):
        return "ok"
    err = reply_error(x)
    if err is None:
        if isinstance(x, BaseException):
            return "fail" if f == "read" else "info"
        raise TypeError("classify: not a reply or exception: %r" % (x,))
    if f == "read":
        return "fail"
    code, message = err
    if code == "unavailable" and "shutting down" in message:
        return "info"  # rpc_close: may have been delivered (see above)
    return "fail" if code in APPEND_FAIL_CODES else "info"


def error_string(x):
    """The history's "error" field for a reply or exception."""
    err = reply_error(x)
    if err is not None:
        code, message = err
        return "%s: %s" % (code, message) if message else str(code)
    if isinstance(x, TimeoutError):
        return "client-timeout: %s" % (x,)
    if isinstance(x, (Closed, OSError)):
        return "connection-lost: %s: %s" % (type(x).__name__, x)
    return "%s: %s" % (type(x).__name__, x)


# ---------------------------------------------------------------------------------

class _Lost(Exception):
    """The connection must be abandoned (no reply in time, ping unanswered...)."""


def _norm_gateways(gateways):
    """[(node, "host:port")] from a list of addresses (node = position + 1), a list
    of (node, addr) pairs or {"node":..,"addr":..} dicts, or a {node: addr} dict."""
    if isinstance(gateways, dict):
        items = sorted(gateways.items())
    else:
        items = []
        for i, g in enumerate(gateways):
            if isinstance(g, str):
                items.append((i + 1, g))
            elif isinstance(g, dict):
                items.append((g.get("node", i + 1), g.get("addr") or g.get("gateway")))
            else:
                items.append((g[0], g[1]))
    out = []
    for node, addr in items:
        addr = str(addr)
        for scheme in ("http://", "ws://"):
            if addr.startswith(scheme):
                addr = addr[len(scheme):]
        out.append((int(node) if str(node).isdigit() else node, addr.rstrip("/")))
    if not out:
        raise ValueError("Workload: no gateways")
    return out


def _shutdown(c):
    """Unblocks a thread reading c (from another thread) and closes c."""
    if c is None:
        return
    try:
        c.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        c.sock.close()
    except OSError:
        pass


def _close(c):
    if c is None:
        return
    try:
        c.sock.settimeout(0.5)
        c.close()
    except Exception:
        _shutdown(c)


def _retry_after(x, default_ms=100):
    try:
        ms = x.reply["error"].get("retry_after_ms") if isinstance(x, ApiError) else \
            x["error"].get("retry_after_ms")
    except (AttributeError, KeyError, TypeError):
        ms = None
    return min(max(ms or default_ms, 10), 5000) / 1000.0


class _Session:
    """An authenticated WebSocket of one user to one gateway."""

    def __init__(self, client, node, addr, user):
        self.c = client
        self.node = node
        self.addr = addr
        self.user = user

    def alive(self):
        """Drains what the server sent (1 ms); False if the connection ended."""
        try:
            self.c.poll(0.001)
        except (Closed, OSError, ValueError):
            return False
        gone = any(m.get("type") == "goodbye" for m in self.c.pushes)
        self.c.pushes.clear()
        return not gone

    def close(self):
        _close(self.c)


class Workload:
    def __init__(self, gateways, keys=8, concurrency=10, rate=50.0, subscribers=3,
                 history=None, fanout_log=None, seed=0, password=DEFAULT_PASSWORD,
                 timeout_s=5.0):
        self.gateways = _norm_gateways(gateways)
        self.n_keys = int(keys)
        self.concurrency = int(concurrency)
        self.rate = float(rate) if rate else 0.0
        self.n_subscribers = int(subscribers)
        if history is None or isinstance(history, str):
            history = HistoryWriter(history)
        if fanout_log is None or isinstance(fanout_log, str):
            fanout_log = FanoutLog(fanout_log, t0_ns=history.t0_ns)
        self.history = history
        self.fanout = fanout_log
        self.seed = seed
        self.password = password
        self.timeout_s = float(timeout_s)

        self.worker_users = ["jw-%d" % i for i in range(self.concurrency)]
        self.sub_users = ["js-%d" % i for i in range(self.n_subscribers)]
        self.tokens = {}
        self.key_conv = {}   # key -> conv
        self.conv_key = {}   # conv -> key
        self.conv_seq0 = {}  # conv -> its last seq after setup (the `created` event)
        self.keys_path = None

        self._lock = threading.Lock()
        self._next_value = 1
        self._next_process = self.concurrency
        self._next_t = 0.0
        self._pace_rng = random.Random(seed)
        self._stop = threading.Event()      # workers
        self._sub_stop = threading.Event()  # subscribers (they outlive the workers)
        self._max_acked = {}                # key -> highest acknowledged seq
        self._workers = []
        self._subs = []
        self.workers_started = False
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.counts_by_f = {}

    # ---- small helpers ---------------------------------------------------------

    def _new_process(self):
        with self._lock:
            p = self._next_process
            self._next_process += 1
            return p

    def _count(self, f, t):
        with self._lock:
            self.counts[t] = self.counts.get(t, 0) + 1
            d = self.counts_by_f.setdefault(f, {"ok": 0, "fail": 0, "info": 0})
            d[t] = d.get(t, 0) + 1

    def progress(self):
        """A one-line progress summary."""
        with self._lock:
            c = dict(self.counts)
            by = {f: dict(d) for f, d in self.counts_by_f.items()}
        parts = ["ok=%d fail=%d info=%d" % (c["ok"], c["fail"], c["info"])]
        for f in sorted(by):
            d = by[f]
            parts.append("%s %d/%d/%d" % (f, d["ok"], d["fail"], d["info"]))
        subs = sum(s.events for s in self._subs)
        parts.append("fanout events=%d reconnects=%d"
                     % (subs, sum(max(s.conn - 1, 0) for s in self._subs)))
        return "  ".join(parts)

    def _gw(self, i):
        return self.gateways[i % len(self.gateways)]

    def _sleep(self, seconds):
        """Sleeps unless stopping; True if stopping."""
        return self._stop.wait(max(seconds, 0))

    def _sub_sleep(self, seconds):
        return self._sub_stop.wait(max(seconds, 0))

    # ---- accounts ----------------------------------------------------------------

    def _account(self, user, deadline, start=0):
        """Registers user (or logs in when it exists); returns its token."""
        i = start
        backoff = 0.1
        last = None
        while time.monotonic() < deadline:
            node, addr = self._gw(i)
            c = None
            try:
                c = WsClient(addr, timeout=max(self.timeout_s, 10.0))
                try:
                    r = c.request("register", user=user, password=self.password)
                except ApiError as e:
                    if e.code != "conflict":
                        raise
                    r = c.request("login", user=user, password=self.password)
                return r["token"]
            except ApiError as e:
                last = e
                if e.code == "rate_limited":
                    time.sleep(_retry_after(e))
                    continue
                if e.code in ("bad_request", "forbidden") or \
                        (e.code == "unauthorized" and "password" in (e.message or "")):
                    raise  # wrong password etc.: retrying cannot help
                # unavailable (right after start), timeout, internal: retry; a
                # register that did happen makes the retry a conflict -> login
            except (OSError, Closed, TimeoutError, ValueError) as e:
                last = e
            finally:
                _close(c)
            i += 1
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)
        raise RuntimeError("cannot register or log in %s: %s" % (user, last))

    def _session(self, user, i, timeout=None, auth_timeout=None):
        """An authenticated connection of user to gateway i (auth with its token,
        or a fresh login when the token is refused).  Raises on failure.  The auth
        reply waits until the gateway has read the user's conversations on every
        shard: auth_timeout defaults to max(timeout, 10 s)."""
        node, addr = self._gw(i)
        t = timeout or self.timeout_s
        c = WsClient(addr, timeout=t)
        try:
            try:
                c.request("auth", timeout=auth_timeout or max(t, 10.0),
                          token=self.tokens[user])
            except ApiError as e:
                if e.code != "unauthorized":
                    raise
                _close(c)
                c = WsClient(addr, timeout=t)
                r = wsclient.request_retrying(c, "login", attempts=20, user=user,
                                              password=self.password)
                self.tokens[user] = r["token"]
            c.pushes.clear()
            return _Session(c, node, addr, user)
        except BaseException:
            _close(c)
            raise

    # ---- setup ---------------------------------------------------------------------

    def setup(self, deadline_s=180.0):
        """Users and one group conversation per key; writes keys.json."""
        deadline = time.monotonic() + deadline_s
        users = self.worker_users + self.sub_users
        for n, u in enumerate(users):
            self.tokens[u] = self._account(u, deadline, start=n)
        creator = self.worker_users[0]
        members = [u for u in users if u != creator]
        s = None
        i = 0
        preexisting = None
        while preexisting is None:
            try:
                s = s or self._session(creator, i, timeout=max(self.timeout_s, 10.0))
                preexisting = self._groups(s)
            except (ApiError, OSError, Closed, TimeoutError, ValueError) as e:
                self._setup_retry(deadline, "list conversations", e)
                if s is not None:
                    s.close()
                s = None
                i += 1
        if preexisting:
            log.warning("groups from an earlier run exist on this cluster (ignored): %s",
                        sorted(preexisting.items()))
        ignore = set(preexisting)
        for k in range(self.n_keys):
            name = GROUP_PREFIX + str(k)
            uncertain = False
            conv = None
            while conv is None:
                try:
                    s = s or self._session(creator, i, timeout=max(self.timeout_s, 10.0))
                    if uncertain:
                        found = sorted(c for c, nm in self._groups(s).items()
                                       if nm == name and c not in ignore)
                        if found:
                            conv = found[0]
                            seq0 = 1
                            break
                    r = s.c.request("create", timeout=max(self.timeout_s, 15.0),
                                    kind="group", name=name, members=members)
                    conv = r["conv"]
                    seq0 = r.get("seq") or 1
                except ApiError as e:
                    if e.code == "rate_limited":
                        time.sleep(_retry_after(e))
                        continue
                    if e.code in ("bad_request", "forbidden", "not_found",
                                  "limit_exceeded", "unauthorized"):
                        raise RuntimeError("create %s: %s" % (name, e))
                    # timeout / internal / unavailable: maybe created: look first
                    uncertain = True
                    self._setup_retry(deadline, "create " + name, e)
                except (OSError, Closed, TimeoutError, ValueError) as e:
                    uncertain = True
                    self._setup_retry(deadline, "create " + name, e)
                    if s is not None:
                        s.close()
                    s = None
                    i += 1
            self.key_conv[k] = conv
            self.conv_key[conv] = k
            self.conv_seq0[conv] = seq0
        if s is not None:
            s.close()
        path = getattr(self.history, "path", None) or getattr(self.fanout, "path", None)
        if path:
            self.keys_path = os.path.join(os.path.dirname(os.path.abspath(path)), "keys.json")
            tmp = self.keys_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump({str(k): c for k, c in sorted(self.key_conv.items())}, f,
                          indent=1, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.keys_path)
        log.info("setup: %d users, keys %s", len(users), self.key_conv)
        return dict(self.key_conv)

    def _setup_retry(self, deadline, what, e):
        if time.monotonic() >= deadline:
            raise RuntimeError("setup: %s: %s" % (what, e))
        log.info("setup: %s: %s (retrying)", what, e)
        time.sleep(0.2 + 0.3 * random.random())

    @staticmethod
    def _groups(s):
        """{conv: name} of the group conversations named jepsen-key-* of s.user."""
        r = s.c.request("conversations")
        return {c["conv"]: c.get("name") for c in r.get("conversations", [])
                if c.get("kind") == "group" and str(c.get("name", "")).startswith(GROUP_PREFIX)}

    # ---- operations ---------------------------------------------------------------

    def _complete(self, inv, x, value=None, **extra):
        """Writes the completion of invocation inv from reply/exception x (value:
        the completion's value when it differs from the invocation's, e.g. a read's
        result)."""
        t = classify(inv["f"], x)
        rec = {"type": t, "process": inv["process"], "f": inv["f"], "key": inv["key"],
               "value": inv["value"] if value is None else value, "node": inv.get("node")}
        if t != "ok":
            rec["error"] = error_string(x)
        if inv.get("final"):
            rec["final"] = True
        rec.update(extra)
        self._count(inv["f"], t)
        return self.history.op(rec)

    def _append(self, s, process, key, timeout):
        """One append on session s; returns (type, session_usable)."""
        conv = self.key_conv[key]
        with self._lock:
            value = self._next_value
            self._next_value += 1
            inv = self.history.op({"type": "invoke", "process": process, "f": "append",
                                   "key": key, "value": value, "node": s.node})
        try:
            rid = s.c.send_request("send", conv=conv, client_msg_id="v%d" % value,
                                   body=str(value))
            reply = s.c.wait_reply(rid, timeout)
        except (OSError, Closed, TimeoutError, ValueError) as e:
            # lost connection / no reply in time / garbage: outcome unknown
            self._complete(inv, e)
            return "info", False
        s.c.pushes.clear()
        extra = {}
        if reply.get("ok"):
            seq = (reply.get("result") or {}).get("seq")
            extra["seq"] = seq
            if isinstance(seq, int):
                with self._lock:
                    if seq > self._max_acked.get(key, 0):
                        self._max_acked[key] = seq
        rec = self._complete(inv, reply, **extra)
        err = reply_error(reply)
        if err and err[0] == "rate_limited":
            self._sleep(_retry_after(reply))
        return rec["type"], not (err and err[0] == "unauthorized")

    def _read(self, s, process, key, timeout, final=False, deadline=None):
        """One read (all history pages) on session s; returns (type, values,
        session_usable)."""
        conv = self.key_conv[key]
        inv = {"type": "invoke", "process": process, "f": "read", "key": key,
               "value": None, "node": s.node}
        if final:
            inv["final"] = True
        inv = self.history.op(inv)
        values = []
        seqs = []
        foreign = 0
        after = 0
        last_seq = None
        try:
            while True:
                t = timeout
                if deadline is not None:
                    t = min(t, deadline - time.monotonic())
                    if t <= 0:
                        raise TimeoutError("final-read deadline")
                rid = s.c.send_request("history", conv=conv, after=after,
                                       limit=HISTORY_LIMIT)
                reply = s.c.wait_reply(rid, t)
                s.c.pushes.clear()
                if not reply.get("ok"):
                    self._complete(inv, reply)
                    err = reply_error(reply)
                    return "fail", None, not (err and err[0] == "unauthorized")
                res = reply.get("result") or {}
                evs = res.get("events") or []
                last_seq = res.get("last_seq", last_seq)
                for e in evs:
                    seq = e.get("seq", 0)
                    seqs.append(seq)
                    if e.get("event") != "message":
                        continue
                    try:
                        values.append(int(e.get("body")))
                    except (TypeError, ValueError):
                        foreign += 1
                if not res.get("has_more"):
                    break
                if not evs:
                    self._complete(inv, ValueError("history: has_more with an empty page "
                                                   "after %d" % after))
                    return "fail", None, True
                after = max(after, max(e.get("seq", 0) for e in evs))
        except (OSError, Closed, TimeoutError, ValueError) as e:
            self._complete(inv, e)
            return "fail", None, False
        extra = {"last_seq": last_seq}
        if seqs != list(range(1, len(seqs) + 1)):
            extra["seq_anomaly"] = "history seqs are not 1..n: %s" % _summarize(seqs)
        if foreign:
            extra["foreign"] = foreign
        self._complete(inv, {"type": "reply", "ok": True}, value=values, **extra)
        return "ok", values, True

    # ---- workers and subscribers ---------------------------------------------------

    def _pace(self):
        """Waits for this worker's next op slot (about `rate` ops/s in total);
        False when stopping."""
        if self.rate <= 0:
            return not self._stop.is_set()
        with self._lock:
            now = time.monotonic()
            t = max(now, self._next_t)
            self._next_t = t + self._pace_rng.uniform(0.5, 1.5) / self.rate
        return not self._sleep(t - time.monotonic())

    def start(self, subscriber_wait_s=15.0):
        """Starts the subscribers, waits (bounded) until each is connected and
        synced, then starts the workers."""
        if not self.key_conv:
            raise RuntimeError("Workload.start: call setup() first")
        self._stop.clear()
        self._sub_stop.clear()
        for n in range(self.n_subscribers):
            sub = _Subscriber(self, n)
            self._subs.append(sub)
            sub.start()
        deadline = time.monotonic() + subscriber_wait_s
        for sub in self._subs:
            sub.ready.wait(max(deadline - time.monotonic(), 0))
        not_ready = [s.n for s in self._subs if not s.ready.is_set()]
        if not_ready:
            log.warning("subscribers %s not connected yet: starting workers anyway",
                        not_ready)
        self.workers_started = True
        for slot in range(self.concurrency):
            w = _Worker(self, slot)
            self._workers.append(w)
            w.start()

    def stop(self, timeout=None, drain_s=5.0, subscribers=True):
        """Stops the workers (each finishes its op in flight, bounded by `timeout`,
        default 2 * timeout_s + 2), then -- unless subscribers=False, for a caller
        that wants them running through the final reads and calls
        stop_subscribers() itself -- the subscribers once they have caught up (see
        stop_subscribers).  Returns True if every thread ended."""
        ok = self.stop_workers(timeout)
        if subscribers:
            ok = self.stop_subscribers(drain_s) and ok
        return ok

    def stop_workers(self, timeout=None):
        """Stops the workers; True if they all ended."""
        self._stop.set()
        grace = timeout if timeout is not None else self.timeout_s * 2 + 2
        deadline = time.monotonic() + grace
        for w in self._workers:
            w.join(max(deadline - time.monotonic(), 0))
        for w in self._workers:
            if w.is_alive():  # stuck waiting for a reply: cut its connection
                s = w.session
                _shutdown(s.c if s else None)
        for w in self._workers:
            w.join(2.0)
        alive = [t.name for t in self._workers if t.is_alive()]
        if alive:
            log.warning("workers still running after stop: %s", alive)
        return not alive

    def subscribers_caught_up(self):
        """Has every subscriber seen, without a gap, every acknowledged append?"""
        with self._lock:
            acked = dict(self._max_acked)
        for sub in self._subs:
            for k, seq in acked.items():
                if sub.cursors.get(self.key_conv[k], 0) < seq:
                    return False
        return True

    def stop_subscribers(self, drain_s=5.0):
        """Stops the subscribers: first waits (at most drain_s) until each has seen
        every acknowledged append, so that the tail of the run is in the fanout
        log, then closes their connections.  True if they all ended."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and not self.subscribers_caught_up():
            time.sleep(0.05)
        if not self.subscribers_caught_up():
            log.warning("stopping subscribers that have not seen every acknowledged "
                        "append (drain %.1f s)", drain_s)
        self._sub_stop.set()
        for s in self._subs:
            _shutdown(s.client)
        for s in self._subs:
            s.join(3.0)
        alive = [t.name for t in self._subs if t.is_alive()]
        if alive:
            log.warning("subscribers still running after stop: %s", alive)
        return not alive

    def final_reads(self, timeout=30.0):
        """Reads every key through any gateway that answers (recorded as read ops
        with "final": true); returns {key: values} (keys that could not be read
        before the deadline are missing)."""
        deadline = time.monotonic() + timeout
        user = self.worker_users[0] if self.worker_users else self.sub_users[0]
        out = {}
        process = self._new_process()
        s = None
        i = 0
        for k in range(self.n_keys):
            while time.monotonic() < deadline:
                if s is None:
                    try:
                        left = max(deadline - time.monotonic(), 0.1)
                        s = self._session(user, i, timeout=min(self.timeout_s, left),
                                          auth_timeout=min(10.0, left))
                    except (ApiError, OSError, Closed, TimeoutError, ValueError) as e:
                        log.info("final read: gateway %s: %s", self._gw(i)[1], e)
                        i += 1
                        time.sleep(0.2)
                        continue
                t, values, usable = self._read(s, process, k, self.timeout_s, final=True,
                                               deadline=deadline)
                if t == "ok":
                    out[k] = values
                    break
                # try another gateway
                s.close()
                s = None
                i += 1
                time.sleep(0.2)
        if s is not None:
            s.close()
        missing = [k for k in range(self.n_keys) if k not in out]
        if missing:
            log.warning("final reads: keys %s could not be read within %.0f s",
                        missing, timeout)
        return out


def _summarize(seqs, n=12):
    if len(seqs) <= n:
        return str(seqs)
    return "%s ... %s (%d)" % (seqs[:n // 2], seqs[-n // 2:], len(seqs))


class _Worker(threading.Thread):
    def __init__(self, wl, slot):
        super().__init__(name="jw-%d" % slot, daemon=True)
        self.wl = wl
        self.slot = slot
        self.user = wl.worker_users[slot]
        self.process = slot
        self.rng = random.Random(wl.seed * 1000003 + slot)
        self.gw_i = slot
        self.session = None

    def run(self):
        try:
            self._run()
        except Exception:
            log.exception("worker %d died", self.slot)
        finally:
            if self.session is not None:
                self.session.close()

    def _connect(self):
        backoff = 0.1
        while not self.wl._stop.is_set():
            try:
                self.session = self.wl._session(self.user, self.gw_i)
                return True
            except (ApiError, OSError, Closed, TimeoutError, ValueError) as e:
                log.debug("worker %d: gateway %s: %s", self.slot, self.wl._gw(self.gw_i)[1], e)
                self.gw_i += 1
                if self.wl._sleep(backoff * (0.5 + self.rng.random())):
                    return False
                backoff = min(backoff * 2, 1.0)
        return False

    def _run(self):
        wl = self.wl
        while not wl._stop.is_set():
            if not wl._pace():
                return
            if self.session is not None and not self.session.alive():
                self._drop()
            if self.session is None and not self._connect():
                return
            key = self.rng.randrange(wl.n_keys)
            if self.rng.random() < 0.8:
                t, usable = wl._append(self.session, self.process, key, wl.timeout_s)
                if t == "info":
                    self.process = wl._new_process()
            else:
                t, _, usable = wl._read(self.session, self.process, key, wl.timeout_s)
            if not usable:
                self._drop()

    def _drop(self):
        if self.session is not None:
            self.session.close()
        self.session = None
        self.gw_i += 1


class _Subscriber(threading.Thread):
    """Keeps a WebSocket of user js-<n>, records every message event of the
    workload's conversations, resyncs with its cursors after a reconnect."""

    PING_IDLE_S = 2.0

    def __init__(self, wl, n):
        super().__init__(name="js-%d" % n, daemon=True)
        self.wl = wl
        self.n = n
        self.user = wl.sub_users[n]
        self.gw_i = n
        self.conn = 0
        self.client = None
        self.node = None
        self.events = 0
        # Per conv: the last seq this subscriber has with no gap before it (over all
        # its connections), and the seqs seen beyond it.  The sync after a reconnect
        # sends these cursors as they were when the connection opened: events pushed
        # live before the sync is answered must not move them past a gap.
        self.cursors = {conv: wl.conv_seq0.get(conv, 1) for conv in wl.conv_key}
        self.beyond = {conv: set() for conv in wl.conv_key}
        self.ready = threading.Event()
        self.rng = random.Random(wl.seed * 7919 + n)
        self._goodbye = None

    def _rec(self, kind, **fields):
        r = {"subscriber": self.n, "conn": self.conn, "kind": kind, "node": self.node}
        r.update(fields)
        try:
            self.wl.fanout.record(r)
        except ValueError:
            pass  # the log was closed under us (stop after close)

    def run(self):
        try:
            self._run()
        except Exception:
            log.exception("subscriber %d died", self.n)

    def _run(self):
        wl = self.wl
        connected_before = False
        while not wl._sub_stop.is_set():
            node, addr = wl._gw(self.gw_i)
            try:
                c = WsClient(addr, timeout=wl.timeout_s)
            except (OSError, Closed, TimeoutError, ValueError) as e:
                log.debug("subscriber %d: %s: %s", self.n, addr, e)
                self.gw_i += 1
                if wl._sub_sleep(self.rng.uniform(0.1, 0.5)):
                    return
                continue
            self.client = c
            self.node = node
            self.conn += 1
            self._goodbye = None
            snap = dict(self.cursors)
            self._rec("connect", addr=addr)
            reason = "stop"
            try:
                self._request(c, "auth", max(wl.timeout_s, 10.0), token=wl.tokens[self.user])
                if connected_before or wl.workers_started:
                    cur = {str(wl.conv_key[conv]): seq for conv, seq in snap.items()}
                    self._rec("sync-start", cursors=cur)
                    r = self._request(c, "sync", max(wl.timeout_s, 30.0),
                                      cursors={str(conv): seq for conv, seq in snap.items()})
                    self._rec("sync-done", synced=(r.get("result") or {}).get("synced"))
                connected_before = True
                self.ready.set()
                self._listen(c)
            except ApiError as e:
                reason = "%s: %s" % (e.code, e.message)
                if e.code == "unauthorized":
                    try:
                        wl.tokens[self.user] = wl._account(self.user, time.monotonic() + 30,
                                                           self.gw_i)
                    except Exception as e2:
                        log.warning("subscriber %d: login: %s", self.n, e2)
            except (OSError, Closed, TimeoutError, ValueError, _Lost) as e:
                reason = error_string(e)
            if wl._sub_stop.is_set():
                reason = "stop"
            elif self._goodbye:
                reason = "goodbye %s: %s" % self._goodbye
            self._rec("disconnect", reason=reason)
            _close(c)
            self.client = None
            self.gw_i += 1
            if wl._sub_sleep(self.rng.uniform(0.1, 0.5)):
                return

    def _handle(self, m):
        t = m.get("type")
        if t == "event":
            conv = m.get("conv")
            key = self.wl.conv_key.get(conv)
            if key is None:
                return
            seq = m.get("seq") or 0
            have = self.cursors.get(conv, 0)
            if seq == have + 1:
                have += 1
                beyond = self.beyond[conv]
                while have + 1 in beyond:
                    have += 1
                    beyond.discard(have)
                self.cursors[conv] = have
            elif seq > have + 1:
                self.beyond[conv].add(seq)
            if m.get("event") == "message":
                try:
                    value = int(m.get("body"))
                except (TypeError, ValueError):
                    value = m.get("body")
                self.events += 1
                self._rec("event", key=key, conv=conv, seq=seq, value=value)
        elif t == "goodbye":
            self._goodbye = (m.get("code"), m.get("message"))

    def _request(self, c, op, timeout, **fields):
        """Sends op and reads (recording pushes) until its reply; raises ApiError on
        an error reply, _Lost when nothing at all arrives for `timeout`."""
        rid = c.send_request(op, **fields)
        idle_deadline = time.monotonic() + timeout
        while True:
            if self.wl._sub_stop.is_set():
                raise _Lost("stop")
            try:
                m = c.read_message(timeout=0.5)
            except TimeoutError:
                if time.monotonic() >= idle_deadline:
                    raise _Lost("no reply to %s within %.1f s" % (op, timeout))
                continue
            idle_deadline = time.monotonic() + timeout
            if m.get("type") == "reply" and m.get("id") == rid:
                if not m.get("ok"):
                    e = m.get("error") or {}
                    raise ApiError(e.get("code"), e.get("message"), m)
                return m
            self._handle(m)

    def _listen(self, c):
        wl = self.wl
        last_rx = time.monotonic()
        ping_id = None
        ping_deadline = None
        while not wl._sub_stop.is_set():
            try:
                m = c.read_message(timeout=0.5)
            except TimeoutError:
                now = time.monotonic()
                if ping_id is None and now - last_rx >= self.PING_IDLE_S:
                    ping_id = c.send_request("ping")
                    ping_deadline = now + wl.timeout_s
                elif ping_id is not None and now >= ping_deadline:
                    raise _Lost("ping unanswered for %.1f s" % wl.timeout_s)
                continue
            last_rx = time.monotonic()
            if m.get("type") == "reply":
                if m.get("id") == ping_id:
                    ping_id = None
                continue
            self._handle(m)
