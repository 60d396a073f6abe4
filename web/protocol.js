// chorus web client: a reconnecting WebSocket client for the JSON protocol
// (docs/protocol.md).  No framework, no dependencies.
//
//   const sock = new ChorusSocket(url, { onOpen, onPush, onState });
//   sock.start();
//   const result = await sock.request('send', { conv, client_msg_id, body });
//
// onOpen(sock) runs after every (re)connection; it must authenticate (and sync)
// with request(op, fields, { early: true }) and then call sock.markReady().
// Ordinary requests made while the socket is not ready wait until it is.
// Requests in flight when the connection drops reject with code "disconnected";
// a write's caller retries it with the same client_msg_id.

export class ChorusError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.code = code;
    Object.assign(this, extra);
  }
}

/** Error codes after which a write's outcome is unknown and a retry is safe. */
export const RETRYABLE = new Set(['unavailable', 'timeout', 'disconnected', 'rate_limited']);

export class ChorusSocket {
  constructor(url, opts = {}) {
    this.url = url;
    this.onOpen = opts.onOpen || (async (s) => s.markReady());
    this.onPush = opts.onPush || (() => {});
    this.onState = opts.onState || (() => {});
    this.minDelay = opts.minDelay ?? 500;
    this.maxDelay = opts.maxDelay ?? 10000;
    this.requestTimeout = opts.requestTimeout ?? 30000;
    this.pingInterval = opts.pingInterval ?? 20000;
    this.ws = null;
    this.nextId = 1;
    this.inflight = new Map(); // id -> {resolve, reject, timer, op}
    this.waiting = []; // requests queued until ready: {op, fields, opts, resolve, reject}
    this.ready = false;
    this.running = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.state = 'idle';
    this.retryAt = 0;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this._connect();
  }

  /** Closes for good: no reconnection; every pending request rejects with "closed". */
  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      try { ws.close(1000, 'logout'); } catch (_) { /* ignore */ }
    }
    this._failInflight('closed', 'client stopped');
    for (const w of this.waiting.splice(0)) w.reject(new ChorusError('closed', 'client stopped'));
    this._setState('idle');
  }

  /** Drops the current connection (it reconnects with backoff). */
  drop(reason = 'dropped') {
    if (this.ws) {
      try { this.ws.close(4000, reason); } catch (_) { /* ignore */ }
      this._onClose(this.ws);
    }
  }

  /** Called by onOpen once the connection is authenticated: releases queued requests. */
  markReady() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ready = true;
    this.attempt = 0;
    this._setState('connected');
    for (const w of this.waiting.splice(0)) this._send(w);
  }

  /**
   * Sends a request and resolves with its result, or rejects with a ChorusError.
   * opts.early: send even before markReady() (auth, sync, ping); fails when not open.
   * opts.timeout: client-side timeout in ms (rejects with code "timeout").
   */
  request(op, fields = {}, opts = {}) {
    return new Promise((resolve, reject) => {
      const w = { op, fields, opts, resolve, reject };
      if (!this.running) {
        reject(new ChorusError('closed', 'client stopped'));
      } else if (this.ready || (opts.early && this.ws && this.ws.readyState === WebSocket.OPEN)) {
        this._send(w);
      } else if (opts.early) {
        reject(new ChorusError('disconnected', 'not connected'));
      } else {
        this.waiting.push(w);
      }
    });
  }

  _send(w) {
    const id = this.nextId++;
    const frame = JSON.stringify({ id, op: w.op, ...w.fields });
    const timeout = w.opts.timeout ?? this.requestTimeout;
    const timer = setTimeout(() => {
      if (this.inflight.delete(id)) w.reject(new ChorusError('timeout', `no reply to ${w.op} within ${timeout} ms`));
    }, timeout);
    this.inflight.set(id, { resolve: w.resolve, reject: w.reject, timer, op: w.op });
    try {
      this.ws.send(frame);
    } catch (e) {
      clearTimeout(timer);
      this.inflight.delete(id);
      w.reject(new ChorusError('disconnected', String(e)));
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.onState(state, extra);
  }

  _connect() {
    if (!this.running) return;
    this._setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this._ping(ws), this.pingInterval);
      Promise.resolve()
        .then(() => this.onOpen(this))
        .catch((e) => {
          if (this.ws !== ws) return;
          console.warn('chorus: connection setup failed:', e);
          if (this.running && e && e.code !== 'closed') this.drop('setup failed');
        });
    };
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = () => this._onClose(ws);
  }

  _ping(ws) {
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
    // A connection that cannot answer a ping within 10 s is considered dead.
    this.request('ping', {}, { early: true, timeout: 10000 }).catch((e) => {
      if (this.ws === ws && e.code === 'timeout') this.drop('ping timeout');
    });
  }

  _onClose(ws) {
    if (this.ws !== ws) return;
    ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
    this.ws = null;
    this.ready = false;
    clearInterval(this.pingTimer);
    this._failInflight('disconnected', 'connection lost');
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (!this.running) return;
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2); // jitter: 50–100 %
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this._setState('reconnecting', { delay, retryAt: this.retryAt });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  /** Reconnects now instead of waiting for the backoff timer. */
  reconnectNow() {
    if (!this.running || this.ws) return;
    clearTimeout(this.retryTimer);
    this._connect();
  }

  _failInflight(code, message) {
    const all = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new ChorusError(code, message));
    }
  }

  _onMessage(ev) {
    if (typeof ev.data !== 'string') return;
    // the socket is opened with ?batch=1: a frame holds one or more messages, one
    // per line (compact JSON never contains a raw newline)
    for (const line of ev.data.split('\n')) {
      if (line.trim() !== '') this._onLine(line);
    }
  }

  _onLine(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      console.warn('chorus: bad message from server', text);
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'reply') {
      const p = this.inflight.get(msg.id);
      if (!p) {
        if (msg.id === null) console.warn('chorus: server could not parse a request', msg.error);
        return;
      }
      this.inflight.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) {
        p.resolve(msg.result || {});
      } else {
        const err = msg.error || {};
        p.reject(new ChorusError(err.code || 'internal', err.message || '', {
          retry_after_ms: err.retry_after_ms ?? msg.retry_after_ms,
          op: p.op,
        }));
      }
      return;
    }
    try {
      this.onPush(msg);
    } catch (e) {
      console.error('chorus: push handler failed', e, msg);
    }
  }
}

/** Backoff for retrying a write after a retryable error (ms), with jitter. */
export function retryDelay(attempt, err) {
  if (err && err.code === 'rate_limited' && err.retry_after_ms > 0) return err.retry_after_ms + 50;
  const base = Math.min(10000, 500 * 2 ** Math.min(attempt, 10));
  return Math.round(base / 2 + Math.random() * base / 2);
}

/** A fresh idempotency key; crypto.randomUUID needs a secure context, so fall back. */
export function newClientMsgId() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') {
    try { return crypto.randomUUID(); } catch (_) { /* insecure context */ }
  }
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
