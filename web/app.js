// chorus web client.  Plain ES2020 module, no framework.  Protocol: docs/protocol.md.
//
// Every piece of user data reaches the DOM through textContent / setAttribute
// (the h() helper below); innerHTML is never used.

import { ChorusSocket, ChorusError, RETRYABLE, retryDelay, newClientMsgId } from './protocol.js';

const USER_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
const HISTORY_PAGE = 50;
const PREFETCH_LIMIT = 200;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉'];

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- state

const S = {
  session: 0, // bumped on login/logout: stale async work checks it
  me: null,
  token: null,
  sock: null,
  convs: new Map(), // conv id -> Conv
  openConv: null, // conv id of the open conversation
  presence: new Map(), // user -> {online, last_seen}
  presenceSubs: new Set(), // users subscribed on the current connection
  lastTypingSent: 0,
  typingConv: null,
  editing: null, // {conv, seq} while the composer edits a message
};

function newConv(id) {
  return {
    conv: id,
    kind: null,
    name: '',
    members: new Map(), // user -> {role}
    memberCount: 0,
    memberSeq: -1, // seq up to which `members` is known
    metaKnown: false,
    metaPromise: null,
    lastSeq: 0, // highest seq known to exist
    cursor: 0, // highest seq accounted for (sent to `sync`)
    read: 0, // own cursors
    delivered: 0,
    sentRead: 0,
    sentDelivered: 0,
    deliverDue: false,
    others: new Map(), // user -> {delivered, read}
    events: new Map(), // seq -> event (dedupe by (conv, seq))
    viewMin: null, // lowest seq of the pane's contiguous window
    hasMore: false,
    historyLoaded: false,
    historyLoading: null,
    loadingOlder: false,
    olderFailedAt: 0,
    unreadOverflow: false,
    prefetching: false,
    pending: [], // own sends not yet seen as events
    typing: new Map(), // user -> timer
    activity: 0, // latest event ts
    touched: Date.now(), // local time of creation / of the last live event
    gapTimer: null,
    filling: false,
    left: false,
    marker: null, // {read, upto} when opened with unread messages: the "new messages" divider
    newWhileAway: 0, // messages that arrived while the pane was scrolled up
    tailLoading: false,
  };
}

function getConv(id, create = true) {
  id = Number(id);
  let c = S.convs.get(id);
  if (!c && create) {
    c = newConv(id);
    S.convs.set(id, c);
  }
  return c;
}

// ---------------------------------------------------------------- DOM helpers

/** h('div', {class: 'x', dataset: {seq: 3}, onclick}, child…) — text children only as text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = String(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const ch of children.flat()) {
    if (ch === null || ch === undefined || ch === false) continue;
    el.append(ch instanceof Node ? ch : document.createTextNode(String(ch)));
  }
  return el;
}

function fmtTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  const opts = { month: 'short', day: 'numeric' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return `${d.toLocaleDateString([], opts)} ${time}`;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** Conversation list: "14:05", "Yesterday", "Mon", "Mar 3", "Mar 3, 2024". */
function fmtListTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const now = new Date();
  if (sameDay(d, now)) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  if (now - d < 6 * 86400000) return d.toLocaleDateString([], { weekday: 'short' });
  const opts = { month: 'short', day: 'numeric' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}

function fmtClock(ts) {
  return ts ? new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
}

function dayKey(ts) {
  const d = new Date(ts || 0);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

function dayLabel(ts) {
  const d = new Date(ts || 0);
  const now = new Date();
  if (sameDay(d, now)) return 'Today';
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  const opts = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}

function fmtLastSeen(p) {
  if (!p) return '';
  if (p.online) return 'online';
  if (!p.last_seen) return 'offline';
  const ago = Date.now() - p.last_seen;
  if (ago < 60000) return 'last seen just now';
  if (ago < 3600000) return `last seen ${Math.round(ago / 60000)} min ago`;
  return `last seen ${fmtTime(p.last_seen)}`;
}

function initial(name) {
  return (name || '?').slice(0, 1).toUpperCase();
}

/** Deterministic hue per user id, for avatars. */
function hue(s) {
  let x = 0;
  for (const ch of s || '') x = (x * 31 + ch.charCodeAt(0)) % 360;
  return x;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------- rendering scheduler

const dirty = { list: false, pane: false, typing: false, scrollBottom: false, scrollMarker: false, prepend: null };
let flushTimer = null;

function invalidate(what) {
  dirty[what] = true;
  if (!flushTimer) flushTimer = setTimeout(flush, 0);
}

function flush() {
  flushTimer = null;
  if (!S.me) return;
  if (dirty.list) { dirty.list = false; renderList(); }
  if (dirty.pane) { dirty.pane = false; renderPane(); renderInfo(); }
  if (dirty.typing) { dirty.typing = false; renderTyping(); }
}

// ---------------------------------------------------------------- conversation model

function normalizeMembers(list) {
  const m = new Map();
  for (const x of list || []) {
    if (typeof x === 'string') m.set(x, { role: 'member' });
    else if (x && typeof x.user === 'string') m.set(x.user, { role: x.role || 'member' });
  }
  return m;
}

function otherMembers(c) {
  return [...c.members.keys()].filter((u) => u !== S.me);
}

function convTitle(c) {
  if (c.kind === 'direct') {
    const o = otherMembers(c);
    if (o.length) return o[0];
    return c.name || 'Direct chat';
  }
  if (c.name) return c.name;
  const o = otherMembers(c);
  return o.length ? o.join(', ') : `Conversation ${c.conv}`;
}

function directPeer(c) {
  return c.kind === 'direct' ? otherMembers(c)[0] || null : null;
}

function deletedSet(c) {
  const d = new Set();
  for (const ev of c.events.values()) if (ev.event === 'deleted') d.add(ev.ref);
  return d;
}

function unreadCount(c) {
  let n = 0;
  let del = null;
  for (const [seq, ev] of c.events) {
    if (seq > c.read && ev.event === 'message' && ev.from !== S.me) {
      del = del || deletedSet(c);
      if (!del.has(seq)) n++;
    }
  }
  return n;
}

function lastMessage(c) {
  let best = null;
  for (const ev of c.events.values()) if (ev.event === 'message' && (!best || ev.seq > best.seq)) best = ev;
  return best;
}

function advanceCursor(c) {
  while (c.events.has(c.cursor + 1)) c.cursor++;
  if (c.cursor > c.lastSeq) c.lastSeq = c.cursor;
  if (c.lastSeq > c.cursor) scheduleGapFill(c);
}

/** Applies one committed event (from a push or a history page). Returns false for duplicates. */
function applyEvent(ev, live) {
  const c = getConv(ev.conv);
  if (ev.event === 'receipt' || !(ev.seq > 0)) {
    if (ev.event === 'receipt') applyReceipt(c, ev);
    return true;
  }
  if (c.events.has(ev.seq)) return false;
  const wasUnknown = c.events.size === 0 && c.cursor === 0 && !c.metaKnown && c.kind === null;
  c.events.set(ev.seq, ev);
  if (ev.seq > c.lastSeq) c.lastSeq = ev.seq;
  if (ev.ts > c.activity) c.activity = ev.ts;
  if (live) c.touched = Date.now();
  if (wasUnknown && live) {
    // A conversation we learn about from a push: it starts here (we were just added).
    c.cursor = ev.seq - 1;
  }

  // Membership, applied in seq order only (`get` repairs anything skipped).
  if (ev.seq > c.memberSeq) {
    applyMembership(c, ev);
    c.memberSeq = ev.seq;
  } else if (ev.event === 'created' && c.kind === null) {
    c.kind = ev.kind || c.kind;
    c.name = ev.name || c.name;
  }

  if (ev.event === 'message') {
    clearTyping(c, ev.from);
    if (live && ev.from !== S.me && S.openConv === c.conv && !paneAtBottom()) c.newWhileAway++;
    if (ev.from === S.me) {
      const i = c.pending.findIndex((p) => p.client_msg_id === ev.client_msg_id || p.seq === ev.seq);
      if (i >= 0) c.pending.splice(i, 1);
    }
  }
  advanceCursor(c);
  if (live) {
    c.deliverDue = true;
    scheduleReceipts();
  }
  if (wasUnknown || !c.metaKnown) ensureMeta(c);
  invalidate('list');
  if (S.openConv === c.conv) invalidate('pane');
  return true;
}

function applyMembership(c, ev) {
  switch (ev.event) {
    case 'created':
      c.kind = ev.kind || c.kind;
      c.name = ev.name || c.name;
      if (Array.isArray(ev.members)) {
        c.members = normalizeMembers(ev.members);
        if (ev.from && !c.members.has(ev.from)) c.members.set(ev.from, { role: 'owner' });
      }
      break;
    case 'member_added':
      if (ev.user) c.members.set(ev.user, { role: ev.role || 'member' });
      if (ev.user === S.me) c.left = false;
      break;
    case 'member_removed':
      if (ev.user) c.members.delete(ev.user);
      if (ev.user === S.me) c.left = true;
      break;
    case 'member_left':
      c.members.delete(ev.from);
      if (ev.from === S.me) c.left = true;
      if (ev.new_owner && c.members.has(ev.new_owner)) c.members.get(ev.new_owner).role = 'owner';
      break;
    default:
      return;
  }
  c.memberCount = c.members.size;
  if (S.openConv === c.conv || c.kind === 'direct') subscribePresence(otherMembers(c));
}

function applyReceipt(c, ev) {
  const upto = Number(ev.upto) || 0;
  if (ev.from === S.me) {
    if (ev.kind === 'read') c.read = Math.max(c.read, upto);
    c.delivered = Math.max(c.delivered, upto);
  } else if (ev.from) {
    const o = c.others.get(ev.from) || { delivered: 0, read: 0 };
    if (ev.kind === 'read') o.read = Math.max(o.read, upto);
    o.delivered = Math.max(o.delivered, upto);
    c.others.set(ev.from, o);
  }
  invalidate('list');
  if (S.openConv === c.conv) invalidate('pane');
}

/** Status of an own message: read / delivered by every other member, else sent. */
function ownStatus(c, seq) {
  const others = otherMembers(c);
  if (others.length === 0) return 'sent';
  let read = true;
  let delivered = true;
  for (const u of others) {
    const o = c.others.get(u) || { delivered: 0, read: 0 };
    if (o.read < seq) read = false;
    if (Math.max(o.delivered, o.read) < seq) delivered = false;
  }
  return read ? 'read' : delivered ? 'delivered' : 'sent';
}

// ---------------------------------------------------------------- server requests

function req(op, fields, opts) {
  if (!S.sock) return Promise.reject(new ChorusError('closed', 'not logged in'));
  return S.sock.request(op, fields, opts);
}

/** A write retried with the same fields (same client_msg_id) while the outcome is unknown. */
async function writeWithRetry(op, fields, onRetry) {
  const session = S.session;
  for (let attempt = 0; ; attempt++) {
    try {
      return await req(op, fields);
    } catch (e) {
      if (session !== S.session || !RETRYABLE.has(e.code)) throw e;
      if (onRetry) onRetry(e, attempt);
      await sleep(retryDelay(attempt, e));
      if (session !== S.session) throw new ChorusError('closed', 'logged out');
    }
  }
}

function ensureMeta(c) {
  if (c.metaPromise) return c.metaPromise;
  const session = S.session;
  c.metaPromise = req('get', { conv: c.conv })
    .then((r) => {
      if (session !== S.session) return;
      c.kind = r.kind || c.kind;
      c.name = r.name || c.name;
      const last = Number(r.last_seq) || 0;
      if (Array.isArray(r.members) && last >= c.memberSeq) {
        c.members = normalizeMembers(r.members);
        c.memberSeq = last;
      }
      for (const m of r.members || []) {
        if (!m || typeof m.user !== 'string') continue;
        const d = Number(m.delivered) || 0;
        const rd = Number(m.read) || 0;
        if (m.user === S.me) {
          c.read = Math.max(c.read, rd);
          c.delivered = Math.max(c.delivered, d, rd);
        } else {
          const o = c.others.get(m.user) || { delivered: 0, read: 0 };
          o.read = Math.max(o.read, rd);
          o.delivered = Math.max(o.delivered, d, rd);
          c.others.set(m.user, o);
        }
      }
      c.memberCount = c.members.size;
      c.metaKnown = true;
      if (c.cursor === 0 && c.events.size === 0) c.cursor = last; // history loads on demand
      if (last > c.lastSeq) {
        c.lastSeq = last;
        if (c.lastSeq > c.cursor) scheduleGapFill(c);
      }
      if (c.kind === 'direct' || S.openConv === c.conv) subscribePresence(otherMembers(c));
      invalidate('list');
      if (S.openConv === c.conv) invalidate('pane');
    })
    .catch((e) => {
      c.metaPromise = null;
      if (session !== S.session) return;
      if (e.code === 'forbidden' || e.code === 'not_found') {
        c.left = true;
        invalidate('pane');
      } else if (RETRYABLE.has(e.code)) {
        setTimeout(() => { if (session === S.session && !c.metaKnown) ensureMeta(c); }, retryDelay(1, e));
      }
    });
  return c.metaPromise;
}

async function loadConversations() {
  const session = S.session;
  const started = Date.now();
  let r;
  try {
    r = await req('conversations', {});
  } catch (e) {
    if (session === S.session && RETRYABLE.has(e.code)) {
      setTimeout(() => { if (session === S.session) loadConversations(); }, retryDelay(1, e));
    }
    return;
  }
  if (session !== S.session) return;
  const listed = new Set();
  for (const entry of r.conversations || []) {
    const id = Number(entry.conv);
    listed.add(id);
    const known = S.convs.has(id);
    const c = getConv(id);
    if (entry.kind) c.kind = entry.kind;
    if (entry.name) c.name = entry.name;
    if (Array.isArray(entry.members)) {
      if (c.memberSeq < 0) c.members = normalizeMembers(entry.members);
      c.memberCount = c.members.size;
    } else if (typeof entry.members === 'number') {
      c.memberCount = entry.members;
    }
    const last = Number(entry.last_seq) || 0;
    c.read = Math.max(c.read, Number(entry.read) || 0);
    c.delivered = Math.max(c.delivered, Number(entry.delivered) || 0, c.read);
    c.sentRead = Math.max(c.sentRead, c.read);
    c.sentDelivered = Math.max(c.sentDelivered, c.delivered);
    if (!known || (c.cursor === 0 && c.events.size === 0)) {
      c.cursor = Math.max(c.cursor, last); // accounted for; history loads on demand
      c.lastSeq = Math.max(c.lastSeq, last);
    } else if (last > c.lastSeq) {
      c.lastSeq = last;
      scheduleGapFill(c);
    }
    c.left = false;
    if (!c.metaKnown && (c.kind === 'direct' || !c.name || !Array.isArray(entry.members))) ensureMeta(c);
    if (last > c.read) prefetchUnread(c);
    else if (last > 0 && !lastMessage(c)) prefetchTail(c);
  }
  // Conversations we no longer belong to (removed while disconnected).
  for (const [id, c] of S.convs) {
    if (!listed.has(id) && c.touched < started && id !== S.openConv) S.convs.delete(id);
  }
  invalidate('list');
  if (S.openConv) invalidate('pane');
}

/** Loads the unread tail of a conversation so the badge counts messages only. */
async function prefetchUnread(c) {
  if (c.prefetching) return;
  c.prefetching = true;
  const session = S.session;
  try {
    const r = await req('history', { conv: c.conv, after: c.read, limit: PREFETCH_LIMIT });
    if (session !== S.session) return;
    for (const ev of r.events || []) applyEvent({ ...ev, conv: c.conv }, false);
    c.unreadOverflow = !!r.has_more;
    invalidate('list');
  } catch (e) {
    /* the badge stays approximate */
  } finally {
    c.prefetching = false;
  }
}

/** Loads the last few events, so the conversation list can show a preview. */
async function prefetchTail(c) {
  if (c.tailLoading) return;
  c.tailLoading = true;
  const session = S.session;
  try {
    const r = await req('history', { conv: c.conv, limit: 20 });
    if (session !== S.session) return;
    for (const ev of r.events || []) applyEvent({ ...ev, conv: c.conv }, false);
    invalidate('list');
  } catch (e) {
    /* no preview */
  } finally {
    c.tailLoading = false;
  }
}

function scheduleGapFill(c) {
  if (c.gapTimer || c.filling) return;
  c.gapTimer = setTimeout(() => {
    c.gapTimer = null;
    fillGap(c);
  }, 1000);
}

/** Reads missed events after the cursor (pushes normally make this a no-op). */
async function fillGap(c) {
  const session = S.session;
  if (c.filling || !S.sock || !S.sock.ready) {
    if (c.lastSeq > c.cursor && S.sock) scheduleGapFill(c);
    return;
  }
  c.filling = true;
  try {
    while (session === S.session && c.lastSeq > c.cursor) {
      const before = c.cursor;
      const r = await req('history', { conv: c.conv, after: c.cursor, limit: PREFETCH_LIMIT });
      if (session !== S.session) return;
      for (const ev of r.events || []) applyEvent({ ...ev, conv: c.conv }, true);
      if (Number(r.last_seq) > c.lastSeq) c.lastSeq = Number(r.last_seq);
      if (!r.has_more || c.cursor === before) break;
    }
  } catch (e) {
    if (session === S.session && RETRYABLE.has(e.code)) scheduleGapFill(c);
  } finally {
    c.filling = false;
  }
}

async function loadInitialHistory(c) {
  if (c.historyLoaded) return;
  if (c.historyLoading) return c.historyLoading;
  const session = S.session;
  c.historyLoading = (async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await req('history', { conv: c.conv, limit: HISTORY_PAGE });
        if (session !== S.session) return;
        const evs = r.events || [];
        for (const ev of evs) applyEvent({ ...ev, conv: c.conv }, false);
        const last = Number(r.last_seq) || 0;
        if (last > c.lastSeq) c.lastSeq = last;
        if (c.lastSeq > c.cursor) scheduleGapFill(c);
        c.viewMin = evs.length ? evs[0].seq : last + 1;
        // Unread events prefetched earlier extend the window downwards (contiguously).
        while (c.viewMin > 1 && c.events.has(c.viewMin - 1)) c.viewMin--;
        c.hasMore = !!r.has_more && c.viewMin > 1;
        c.historyLoaded = true;
        dirty.scrollBottom = true;
        invalidate('pane');
        scheduleReceipts();
        return;
      } catch (e) {
        if (session !== S.session || !RETRYABLE.has(e.code) || S.openConv !== c.conv) {
          if (e.code === 'forbidden' || e.code === 'not_found') c.left = true;
          invalidate('pane');
          return;
        }
        await sleep(retryDelay(attempt, e));
      }
    }
  })();
  try {
    await c.historyLoading;
  } finally {
    c.historyLoading = null;
  }
}

async function loadOlder(c) {
  if (!c.historyLoaded || !c.hasMore || c.loadingOlder || !c.viewMin) return;
  c.loadingOlder = true;
  invalidate('pane');
  const session = S.session;
  try {
    const r = await req('history', { conv: c.conv, before: c.viewMin, limit: HISTORY_PAGE });
    if (session !== S.session) return;
    const evs = r.events || [];
    for (const ev of evs) applyEvent({ ...ev, conv: c.conv }, false);
    if (evs.length) c.viewMin = Math.min(c.viewMin, evs[0].seq);
    c.hasMore = !!r.has_more && evs.length > 0;
    const el = $('messages');
    dirty.prepend = el.scrollHeight - el.scrollTop;
  } catch (e) {
    c.olderFailedAt = Date.now(); // the user can scroll again
  } finally {
    c.loadingOlder = false;
    invalidate('pane');
  }
}

// ---------------------------------------------------------------- receipts, typing, presence

let receiptTimer = null;

function scheduleReceipts() {
  if (receiptTimer) return;
  receiptTimer = setTimeout(() => {
    receiptTimer = null;
    sendReceipts();
  }, 200);
}

function convVisible(c) {
  return S.openConv === c.conv && document.visibilityState === 'visible' && c.historyLoaded;
}

function sendReceipts() {
  if (!S.sock) return;
  const session = S.session;
  for (const c of S.convs.values()) {
    const upto = c.cursor;
    if (upto <= 0 || c.left) continue;
    let kind = null;
    if (convVisible(c) && upto > c.read && upto > c.sentRead) kind = 'read';
    else if (c.deliverDue && upto > c.delivered && upto > c.sentDelivered) kind = 'delivered';
    c.deliverDue = false;
    if (!kind) continue;
    const prevRead = c.sentRead;
    const prevDelivered = c.sentDelivered;
    c.sentDelivered = Math.max(c.sentDelivered, upto);
    if (kind === 'read') {
      c.sentRead = upto;
      c.read = Math.max(c.read, upto); // optimistic: the badge clears at once
      invalidate('list');
    }
    req('receipt', { conv: c.conv, kind, seq: upto }).then(
      () => {
        if (session !== S.session) return;
        c.delivered = Math.max(c.delivered, upto);
      },
      (e) => {
        if (session !== S.session) return;
        c.sentRead = prevRead;
        c.sentDelivered = prevDelivered;
        if (RETRYABLE.has(e.code)) {
          c.deliverDue = true;
          setTimeout(scheduleReceipts, retryDelay(1, e));
        }
      },
    );
  }
}

function noteTyping() {
  const c = S.openConv && getConv(S.openConv, false);
  if (!c || c.left || !S.sock || !S.sock.ready) return;
  const now = Date.now();
  if ($('message-input').value.length === 0) {
    stopTyping();
    return;
  }
  if (S.typingConv === c.conv && now - S.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  S.lastTypingSent = now;
  S.typingConv = c.conv;
  req('typing', { conv: c.conv, state: true }).catch(() => {});
}

function stopTyping() {
  if (S.typingConv && Date.now() - S.lastTypingSent < TYPING_SHOW_MS && S.sock && S.sock.ready) {
    req('typing', { conv: S.typingConv, state: false }).catch(() => {});
  }
  S.typingConv = null;
  S.lastTypingSent = 0;
}

function clearTyping(c, user) {
  const t = c.typing.get(user);
  if (t) {
    clearTimeout(t);
    c.typing.delete(user);
    invalidate('typing');
    invalidate('list');
  }
}

function onTypingPush(m) {
  if (!m.user || m.user === S.me) return;
  const c = getConv(m.conv, false);
  if (!c) return;
  clearTyping(c, m.user);
  if (m.state !== false) {
    c.typing.set(m.user, setTimeout(() => clearTyping(c, m.user), TYPING_SHOW_MS));
  }
  invalidate('typing');
  invalidate('list');
}

function typingText(c) {
  const users = [...c.typing.keys()];
  if (users.length === 0) return '';
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}

function subscribePresence(users) {
  const fresh = [...new Set(users)].filter((u) => u && u !== S.me && !S.presenceSubs.has(u));
  if (fresh.length === 0 || !S.sock) return;
  for (const u of fresh) S.presenceSubs.add(u);
  const session = S.session;
  for (let i = 0; i < fresh.length; i += 1000) {
    const chunk = fresh.slice(i, i + 1000);
    req('presence', { users: chunk }).then(
      (r) => {
        if (session !== S.session) return;
        for (const p of r.presence || []) S.presence.set(p.user, { online: !!p.online, last_seen: p.last_seen || 0 });
        invalidate('list');
        invalidate('pane');
      },
      () => {
        for (const u of chunk) S.presenceSubs.delete(u);
      },
    );
  }
}

// ---------------------------------------------------------------- pushes

function onPush(m) {
  switch (m.type) {
    case 'event':
      applyEvent(m, true);
      break;
    case 'typing':
      onTypingPush(m);
      break;
    case 'presence':
      if (m.user) {
        S.presence.set(m.user, { online: !!m.online, last_seen: m.last_seen || 0 });
        invalidate('list');
        invalidate('pane');
      }
      break;
    case 'goodbye':
      if (m.code === 'token_expired') logout('Your session expired; please log in again.');
      break;
    default:
      break;
  }
}

async function onSocketOpen(sock) {
  const session = S.session;
  try {
    await sock.request('auth', { token: S.token }, { early: true });
  } catch (e) {
    if (e.code === 'unauthorized' || e.code === 'forbidden') {
      logout(e.code === 'forbidden' ? 'This account is disabled.' : 'Your session expired; please log in again.');
      return;
    }
    throw e;
  }
  if (session !== S.session) return;
  const cursors = {};
  for (const c of S.convs.values()) if (c.cursor > 0 && !c.left) cursors[c.conv] = c.cursor;
  if (Object.keys(cursors).length) {
    try {
      await sock.request('sync', { cursors }, { early: true, timeout: 60000 });
    } catch (e) {
      if (RETRYABLE.has(e.code) || e.code === 'closed') throw e;
      // e.g. a conversation we were removed from: fall back to history reads
      console.warn('chorus: sync failed, reading history instead', e);
      for (const c of S.convs.values()) scheduleGapFill(c);
    }
  }
  if (session !== S.session) return;
  S.presenceSubs.clear();
  sock.markReady();
  loadConversations();
  const users = new Set();
  for (const c of S.convs.values()) {
    if (c.kind === 'direct' || c.conv === S.openConv) for (const u of otherMembers(c)) users.add(u);
  }
  subscribePresence([...users]);
  const open = S.openConv && getConv(S.openConv, false);
  if (open && !open.historyLoaded) loadInitialHistory(open);
  scheduleReceipts();
}

// ---------------------------------------------------------------- connection state

let bannerTimer = null;
let bannerTick = null;

function onSocketState(state, extra) {
  S.connState = state;
  if (extra && extra.retryAt) S.retryAt = extra.retryAt;
  else if (state !== 'reconnecting') S.retryAt = 0;
  if (state === 'connected') S.everConnected = true;
  const el = $('conn-status');
  el.dataset.state = state;
  el.textContent = state === 'connected' ? 'connected'
    : state === 'connecting' ? 'connecting…'
      : state === 'reconnecting' ? 'reconnecting…'
        : 'offline';
  el.title = state === 'reconnecting' ? 'Connection lost — click to retry now' : '';
  if (state !== 'connected') {
    // typing indicators are ephemeral: nothing will clear them while offline
    for (const c of S.convs.values()) for (const u of [...c.typing.keys()]) clearTyping(c, u);
  }
  for (const c of S.convs.values()) if (c.pending.length) invalidate('pane');
  // The banner appears only when the connection stays down for a moment (no flash
  // on a quick reconnect), and counts down to the next attempt.
  clearTimeout(bannerTimer);
  if (state === 'connected' || state === 'idle') {
    clearInterval(bannerTick);
    bannerTick = null;
    $('conn-banner').hidden = true;
  } else {
    bannerTimer = setTimeout(() => {
      renderBanner();
      if (!bannerTick) bannerTick = setInterval(renderBanner, 1000);
    }, S.everConnected ? 400 : 1500);
  }
}

function renderBanner() {
  const banner = $('conn-banner');
  const state = S.connState;
  if (!S.me || state === 'connected' || state === 'idle') {
    banner.hidden = true;
    return;
  }
  const wait = Math.ceil((S.retryAt - Date.now()) / 1000);
  let text;
  if (state === 'reconnecting' && wait > 0) text = `Connection lost. Reconnecting in ${wait} s…`;
  else if (S.everConnected) text = 'Reconnecting…';
  else text = 'Connecting to the server…';
  $('conn-banner-text').textContent = text;
  $('conn-retry').hidden = !(state === 'reconnecting' && wait > 0);
  banner.dataset.state = state;
  banner.hidden = false;
}

// ---------------------------------------------------------------- sending

function sendMessage(c, body) {
  const p = { client_msg_id: newClientMsgId(), body, state: 'pending', seq: null, ts: Date.now(), error: null };
  c.pending.push(p);
  c.marker = null; // replying dismisses the "new messages" divider
  dirty.scrollBottom = true;
  invalidate('pane');
  trySend(c, p);
}

async function trySend(c, p) {
  const session = S.session;
  p.state = 'pending';
  p.error = null;
  invalidate('pane');
  try {
    const r = await writeWithRetry('send', { conv: c.conv, client_msg_id: p.client_msg_id, body: p.body }, (e) => {
      p.state = 'retrying';
      p.error = e.code;
      invalidate('pane');
    });
    if (session !== S.session) return;
    p.seq = r.seq;
    p.ts = r.ts || p.ts;
    p.state = 'sent';
    if (c.events.has(r.seq)) c.pending.splice(c.pending.indexOf(p), 1);
    else if (r.seq > c.lastSeq) {
      c.lastSeq = r.seq;
      scheduleGapFill(c); // the push normally arrives first; this is a safety net
    }
  } catch (e) {
    if (session !== S.session) return;
    p.state = 'failed';
    p.error = e.message || e.code;
  }
  invalidate('pane');
}

async function otherWrite(c, op, fields) {
  try {
    await writeWithRetry(op, { conv: c.conv, client_msg_id: newClientMsgId(), ...fields });
  } catch (e) {
    if (e.code !== 'closed') flashError(`${op} failed: ${e.message || e.code}`);
  }
}

let toastTimer = null;

function flashError(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

// ---------------------------------------------------------------- rendering helpers

/**
 * Keyed update of parent's children: rows are {key, sig, render}; an element is
 * rebuilt only when its signature changed, and moved only when out of place (so
 * a click in progress is not lost to a re-render).
 */
const rowKeys = new WeakMap();
const rowSigs = new WeakMap();

function reconcile(parent, rows) {
  const existing = new Map();
  for (const el of parent.children) existing.set(rowKeys.get(el), el);
  let prev = null;
  for (const row of rows) {
    let el = existing.get(row.key);
    existing.delete(row.key);
    if (!el || rowSigs.get(el) !== row.sig) {
      const fresh = row.render();
      rowKeys.set(fresh, row.key);
      rowSigs.set(fresh, row.sig);
      if (el) el.replaceWith(fresh);
      el = fresh;
    }
    const want = prev ? prev.nextSibling : parent.firstChild;
    if (want !== el) parent.insertBefore(el, want);
    prev = el;
  }
  for (const el of existing.values()) el.remove();
}

function avatar(name, { group = false, small = false, presence } = {}) {
  return h('span', {
    class: `avatar${group ? ' group' : ''}${small ? ' small' : ''}`,
    style: `--h:${hue(name)}`,
    'aria-hidden': 'true',
  },
    initial(name),
    presence !== undefined ? h('span', {
      class: `dot${presence && presence.online ? ' online' : ''}`,
      'data-testid': 'presence-dot',
      'data-online': presence && presence.online ? 'true' : 'false',
      title: fmtLastSeen(presence),
    }) : null);
}

function setAvatar(el, name, { group = false, presence } = {}) {
  const fresh = avatar(name, { group, presence });
  fresh.id = el.id;
  el.replaceWith(fresh);
}

// ---------------------------------------------------------------- rendering: sidebar

/** The last message with its edits and deletion applied, for the list preview. */
function lastPreview(c) {
  const lm = lastMessage(c);
  if (!lm) return null;
  let body = lm.body;
  let deleted = false;
  for (const ev of c.events.values()) {
    if (ev.seq <= lm.seq || ev.ref !== lm.seq) continue;
    if (ev.event === 'deleted') deleted = true;
    else if (ev.event === 'edited' && ev.seq > lm.seq) body = ev.body;
  }
  return { from: lm.from, body: deleted ? 'message deleted' : body, ts: lm.ts, deleted };
}

function renderList() {
  const ul = $('conv-list');
  const q = S.search.trim().toLowerCase();
  const convs = [...S.convs.values()]
    .filter((c) => !c.left || c.conv === S.openConv)
    .sort((a, b) => (b.activity - a.activity) || (b.lastSeq - a.lastSeq) || (b.conv - a.conv));
  const rows = [];
  let total = 0;
  let shown = 0;
  for (const c of convs) {
    const title = convTitle(c);
    const unread = S.openConv === c.conv && convVisible(c) ? 0 : unreadCount(c);
    total += unread;
    if (q && !title.toLowerCase().includes(q) && !String(c.name || '').toLowerCase().includes(q)) continue;
    shown++;
    const peer = directPeer(c);
    const pres = peer ? S.presence.get(peer) || null : undefined;
    const typing = typingText(c);
    const lp = lastPreview(c);
    let who = null;
    let text;
    if (typing) text = typing;
    else if (lp) {
      if (lp.from === S.me) who = 'You: ';
      else if (c.kind === 'group') who = `${lp.from}: `;
      text = lp.body;
    } else {
      text = c.kind === 'group' ? `${c.memberCount || c.members.size || ''} members`.trim() : 'No messages yet';
    }
    if (text.length > 90) text = `${text.slice(0, 90)}…`;
    const time = fmtListTime(lp ? lp.ts : c.activity);
    const active = S.openConv === c.conv;
    const sig = JSON.stringify([title, unread, c.unreadOverflow, active, c.kind, peer, pres, who, text, !!typing, time]);
    rows.push({
      key: `c${c.conv}`,
      sig,
      render: () => h('li', {
        class: `conv-item${active ? ' active' : ''}${unread ? ' has-unread' : ''}`,
        'data-testid': 'conv-item',
        'data-conv': c.conv,
        'data-name': title,
        'aria-current': active ? 'true' : null,
        role: 'button',
        tabindex: 0,
      },
        avatar(title, { group: c.kind === 'group', presence: peer ? pres : undefined }),
        h('span', { class: 'conv-text' },
          h('span', { class: 'conv-line' },
            h('span', { class: 'conv-name', 'data-testid': 'conv-name' }, title),
            h('span', { class: 'conv-time' }, time)),
          h('span', { class: 'conv-line' },
            h('span', { class: `conv-sub${typing ? ' typing-sub' : ''}` },
              who ? h('span', { class: 'you' }, who) : null, text),
            h('span', { class: 'badge', 'data-testid': 'unread', hidden: unread === 0 },
              `${unread > 99 ? '99+' : unread}${c.unreadOverflow && unread && unread <= 99 ? '+' : ''}`)))),
    });
  }
  reconcile(ul, rows);
  $('conv-empty').hidden = convs.length > 0;
  $('conv-nomatch').hidden = !(convs.length > 0 && shown === 0);
  document.title = total ? `(${total}) chorus` : 'chorus';
}

// ---------------------------------------------------------------- rendering: conversation pane

function systemText(ev) {
  const who = (u) => (u === S.me ? 'You' : u);
  const whom = (u) => (u === S.me ? 'you' : u);
  switch (ev.event) {
    case 'created':
      return ev.kind === 'group' || ev.name
        ? `${who(ev.from)} created the group “${ev.name || ''}”`
        : `${who(ev.from)} started the conversation`;
    case 'member_added':
      return ev.from === ev.user ? `${who(ev.user)} joined` : `${who(ev.from)} added ${whom(ev.user)}`;
    case 'member_removed':
      return `${who(ev.from)} removed ${whom(ev.user)}`;
    case 'member_left':
      return ev.new_owner ? `${who(ev.from)} left; ${ev.new_owner === S.me ? 'you are' : `${ev.new_owner} is`} now the owner` : `${who(ev.from)} left`;
    default:
      return null;
  }
}

/** Folds edits, deletes and reactions into the messages they refer to. */
function buildView(c) {
  const evs = [...c.events.values()].filter((e) => c.viewMin !== null && e.seq >= c.viewMin).sort((a, b) => a.seq - b.seq);
  const items = [];
  const bySeq = new Map();
  for (const ev of evs) {
    switch (ev.event) {
      case 'message': {
        const it = { type: 'message', ev, body: ev.body, edited: false, deleted: false, reactions: new Map() };
        bySeq.set(ev.seq, it);
        items.push(it);
        break;
      }
      case 'edited': {
        const it = bySeq.get(ev.ref);
        if (it && !it.deleted) { it.body = ev.body; it.edited = true; }
        break;
      }
      case 'deleted': {
        const it = bySeq.get(ev.ref);
        if (it) it.deleted = true;
        break;
      }
      case 'reaction': {
        const it = bySeq.get(ev.ref);
        if (!it) break;
        let set = it.reactions.get(ev.emoji);
        if (!set) it.reactions.set(ev.emoji, (set = new Set()));
        if (ev.action === 'remove') set.delete(ev.from);
        else set.add(ev.from);
        if (set.size === 0) it.reactions.delete(ev.emoji);
        break;
      }
      default: {
        const text = systemText(ev);
        if (text) items.push({ type: 'system', ev, text });
      }
    }
  }
  return items;
}

const STATUS_TEXT = { sent: 'Sent', delivered: 'Delivered', read: 'Read', pending: 'Sending…' };

function statusMark(status, title) {
  return h('span', {
    class: 'status',
    'data-testid': 'msg-status',
    'data-status': status,
    title: title || STATUS_TEXT[status] || status,
    'aria-label': title || STATUS_TEXT[status] || status,
  }, status === 'pending' ? h('span', { class: 'clock' }) : icon(status === 'sent' ? 'i-check' : 'i-check2'));
}

const SVG_NS = 'http://www.w3.org/2000/svg';

function icon(id) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', id);
  const use = document.createElementNS(SVG_NS, 'use');
  use.setAttribute('href', `#${id}`);
  svg.append(use);
  return svg;
}

function readersTitle(c, seq, status) {
  if (c.kind !== 'group') return STATUS_TEXT[status];
  const readers = otherMembers(c).filter((u) => (c.others.get(u)?.read || 0) >= seq);
  if (status === 'read') return 'Read by everyone';
  return readers.length ? `Read by ${readers.join(', ')}` : STATUS_TEXT[status];
}

const FOOT_TEXT = { sent: 'Sent', delivered: 'Delivered', read: 'Read' };

function renderMessage(c, it, pos, foot) {
  const ev = it.ev;
  const own = ev.from === S.me;
  const status = own ? ownStatus(c, ev.seq) : null;
  const group = c.kind === 'group';
  const reactions = [...it.reactions.entries()].map(([emoji, users]) => h('button', {
    type: 'button',
    class: `chip${users.has(S.me) ? ' mine' : ''}`,
    'data-testid': 'reaction',
    'data-emoji': emoji,
    title: [...users].join(', '),
    disabled: it.deleted || c.left,
    onclick: () => otherWrite(c, 'react', { seq: ev.seq, emoji, remove: users.has(S.me) }),
  }, h('span', { class: 'emoji' }, emoji), ` ${users.size}`));
  const actions = it.deleted || c.left ? null : h('div', { class: 'actions' },
    QUICK_REACTIONS.map((emoji) => h('button', {
      type: 'button',
      class: 'icon emoji',
      title: `React ${emoji}`,
      'aria-label': `React ${emoji}`,
      onclick: () => {
        const set = it.reactions.get(emoji);
        otherWrite(c, 'react', { seq: ev.seq, emoji, remove: !!(set && set.has(S.me)) });
      },
    }, emoji)),
    own ? h('button', { type: 'button', class: 'icon text', onclick: () => startEdit(c, ev.seq, it.body) }, 'Edit') : null,
    own ? h('button', { type: 'button', class: 'icon text', onclick: () => otherWrite(c, 'delete', { seq: ev.seq }) }, 'Delete') : null);
  const when = new Date(ev.ts || 0);
  return h('li', {
    class: `msg${own ? ' own' : ''}${it.deleted ? ' deleted' : ''}${it.edited ? ' is-edited' : ''}${pos.first ? ' first' : ''}${pos.last ? ' last' : ''}`,
    'data-testid': 'message',
    'data-seq': ev.seq,
    'data-from': ev.from,
    'data-state': 'sent',
    tabindex: -1,
  },
    !own && group ? avatar(ev.from, { small: true }) : null,
    h('div', { class: 'msg-main' },
      h('div', { class: 'bubble' },
        !own && group && pos.first ? h('span', { class: 'from', style: `--h:${hue(ev.from)}` }, ev.from) : null,
        h('div', { class: 'text' },
          h('span', { class: 'body', 'data-testid': 'message-body' }, it.deleted ? 'message deleted' : it.body),
          h('span', { class: 'meta' },
            it.edited && !it.deleted ? h('span', { class: 'edited', 'data-testid': 'edited' }, 'edited') : null,
            h('time', { datetime: when.toISOString(), title: when.toLocaleString() }, fmtClock(ev.ts)),
            own && !it.deleted ? statusMark(status, readersTitle(c, ev.seq, status)) : null)),
        reactions.length ? h('div', { class: 'reactions' }, reactions) : null),
      foot && own && !it.deleted ? h('div', { class: 'msg-foot', 'data-status': status }, readersTitle(c, ev.seq, status) || FOOT_TEXT[status]) : null),
    actions);
}

function renderPending(c, p, pos) {
  const state = p.state === 'sent' ? 'sent' : 'pending';
  return h('li', {
    class: `msg own pending ${p.state}${pos.first ? ' first' : ''}${pos.last ? ' last' : ''}`,
    'data-testid': 'message',
    'data-seq': p.seq || '',
    'data-from': S.me,
    'data-state': state,
    'data-client-msg-id': p.client_msg_id,
  },
    h('div', { class: 'bubble' },
      h('div', { class: 'text' },
        h('span', { class: 'body', 'data-testid': 'message-body' }, p.body),
        h('span', { class: 'meta' },
          h('time', {}, fmtClock(p.ts)),
          p.state === 'failed' ? null : statusMark(state, p.state === 'retrying' ? `Retrying (${p.error})…` : null)))),
    p.state === 'failed' ? h('div', { class: 'send-failed', role: 'alert' },
      `Not sent: ${p.error} `,
      h('button', { type: 'button', class: 'link', onclick: () => trySend(c, p) }, 'Retry'),
      h('button', {
        type: 'button',
        class: 'link',
        onclick: () => { c.pending.splice(c.pending.indexOf(p), 1); invalidate('pane'); },
      }, 'Discard')) : null);
}

function paneAtBottom() {
  const el = $('messages');
  return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
}

const RUN_GAP_MS = 5 * 60000;

function renderPane() {
  const c = S.openConv && getConv(S.openConv, false);
  $('chat-view').classList.toggle('has-open', !!c);
  $('pane-empty').hidden = !!c;
  $('pane-conv').hidden = !c;
  if (!c) return;
  const title = convTitle(c);
  $('pane-name').textContent = title;
  const peer = directPeer(c);
  const sub = $('pane-sub');
  if (peer) {
    const p = S.presence.get(peer);
    sub.textContent = fmtLastSeen(p);
    sub.dataset.online = p && p.online ? 'true' : 'false';
  } else {
    const members = otherMembers(c);
    const online = members.filter((u) => S.presence.get(u)?.online).length;
    sub.textContent = c.members.size ? `${c.members.size} members${online ? `, ${online} online` : ''}` : '';
    sub.dataset.online = 'false';
  }
  const avSig = JSON.stringify([title, c.kind, peer ? S.presence.get(peer) || null : undefined]);
  if ($('pane-avatar').dataset.sig !== avSig) {
    setAvatar($('pane-avatar'), title, { group: c.kind === 'group', presence: peer ? S.presence.get(peer) || null : undefined });
    $('pane-avatar').dataset.sig = avSig;
  }

  const top = $('history-top');
  const topState = !c.historyLoaded ? (c.left ? 'left' : 'loading') : c.loadingOlder ? 'older' : c.hasMore ? 'more' : 'start';
  if (top.dataset.state !== topState) {
    top.dataset.state = topState;
    top.replaceChildren(
      topState === 'left' ? h('span', { class: 'muted' }, 'You are not a member of this conversation.')
        : topState === 'loading' ? h('span', { class: 'muted' }, h('span', { class: 'spinner' }), 'Loading messages…')
          : topState === 'older' ? h('span', { class: 'muted' }, h('span', { class: 'spinner' }), 'Loading older messages…')
            : topState === 'more' ? h('button', { type: 'button', class: 'ghost small', 'data-testid': 'load-older', onclick: () => loadOlder(c) }, 'Load older messages')
              : h('span', { class: 'muted small-text', 'data-testid': 'history-start' }, 'This is the beginning of the conversation'));
  }

  const el = $('messages');
  const atBottom = paneAtBottom();
  const rows = [];
  // Consecutive messages of one sender (same day, a few minutes apart) form a run.
  let prevDay = null;
  let prevMsg = null; // {from, ts, row}
  const pushMessageRow = (from, ts, row) => {
    const first = !(prevMsg && prevMsg.from === from && ts - prevMsg.ts < RUN_GAP_MS);
    if (!first) prevMsg.pos.last = false;
    row.pos = { first, last: true };
    rows.push(row);
    prevMsg = { from, ts, pos: row.pos };
  };
  const dayRow = (ts) => {
    const k = dayKey(ts);
    if (k === prevDay) return;
    prevDay = k;
    prevMsg = null;
    const label = dayLabel(ts);
    rows.push({ key: `d${k}`, sig: label, render: () => h('li', { class: 'day', 'data-testid': 'day' }, label) });
  };
  let dividerShown = false;
  if (c.historyLoaded) {
    for (const it of buildView(c)) {
      dayRow(it.ev.ts);
      if (it.type === 'message') {
        const own = it.ev.from === S.me;
        if (!dividerShown && c.marker && !own && it.ev.seq > c.marker.read && it.ev.seq <= c.marker.upto) {
          dividerShown = true;
          prevMsg = null;
          rows.push({ key: 'new', sig: 'new', render: () => h('li', { class: 'new-divider', 'data-testid': 'new-divider' }, 'New messages') });
        }
        const status = own ? ownStatus(c, it.ev.seq) : null;
        const row = { key: `m${it.ev.seq}`, own: own && !it.deleted };
        pushMessageRow(it.ev.from, it.ev.ts, row);
        row.sig = JSON.stringify([it.body, it.edited, it.deleted, [...it.reactions].map(([e, u]) => [e, [...u]]),
          status, own ? readersTitle(c, it.ev.seq, status) : null, c.left, fmtClock(it.ev.ts), c.kind]);
        row.render = () => renderMessage(c, it, row.pos, row.foot);
      } else {
        prevMsg = null;
        rows.push({
          key: `m${it.ev.seq}`,
          sig: it.text + fmtClock(it.ev.ts),
          render: () => h('li', { class: 'system', 'data-testid': 'system', 'data-seq': it.ev.seq }, it.text, ' · ', fmtClock(it.ev.ts)),
        });
      }
    }
  }
  for (const p of c.pending) {
    if (p.seq && c.events.has(p.seq)) continue;
    dayRow(p.ts);
    const row = { key: `p${p.client_msg_id}` };
    pushMessageRow(S.me, p.ts, row);
    row.sig = JSON.stringify([p.state, p.seq, p.error]);
    row.render = () => renderPending(c, p, row.pos);
  }
  // The last own message (with nothing pending after it) gets a "Read"/"Delivered" line.
  const lastRow = rows[rows.length - 1];
  if (lastRow && lastRow.own) lastRow.foot = true;
  // Positions (first/last of a run) are final only now: fold them into the signatures.
  for (const r of rows) if (r.pos) r.sig += JSON.stringify([r.pos, !!r.foot]);
  reconcile($('message-list'), rows);

  if (dirty.prepend !== null) {
    el.scrollTop = el.scrollHeight - dirty.prepend;
    dirty.prepend = null;
  } else if (dirty.scrollMarker && c.historyLoaded) {
    const div = $('message-list').querySelector('.new-divider');
    if (div) el.scrollTop += div.getBoundingClientRect().top - el.getBoundingClientRect().top - 48;
    else el.scrollTop = el.scrollHeight;
    dirty.scrollMarker = false;
  } else if (dirty.scrollBottom || atBottom) {
    el.scrollTop = el.scrollHeight;
  }
  dirty.scrollBottom = false;
  updateJump(c);

  const input = $('message-input');
  input.disabled = c.left;
  $('send-button').disabled = c.left;
  $('info-button').hidden = c.left && c.kind !== 'group';
  input.placeholder = c.left ? 'You are no longer a member of this conversation'
    : c.kind === 'group' ? `Message ${title}…` : `Message ${title}…`;
  renderTyping();
  // The window is not full yet: fetch more so scrolling up is possible.
  if (c.historyLoaded && c.hasMore && !c.loadingOlder && el.scrollHeight <= el.clientHeight + 10 &&
      Date.now() - c.olderFailedAt > 3000) loadOlder(c);
}

function updateJump(c) {
  const el = $('messages');
  const away = el.scrollHeight - el.scrollTop - el.clientHeight > 240;
  if (!away) c.newWhileAway = 0;
  $('jump-bottom').hidden = !away;
  const count = $('jump-count');
  count.hidden = c.newWhileAway === 0;
  count.textContent = c.newWhileAway > 99 ? '99+' : String(c.newWhileAway);
}

function renderTyping() {
  const el = $('typing-indicator');
  const c = S.openConv && getConv(S.openConv, false);
  const text = c ? typingText(c) : '';
  if (el.dataset.text === text) return;
  el.dataset.text = text;
  el.replaceChildren(...(text ? [h('span', { class: 'typing-dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), text] : []));
}

// ---------------------------------------------------------------- UI actions

function openConversation(id) {
  const c = getConv(id);
  if (S.openConv !== c.conv) {
    stopTyping();
    cancelEdit();
    const prev = S.openConv && getConv(S.openConv, false);
    if (prev) prev.marker = null;
    // "New messages" divider: what was unread when the conversation was opened.
    c.marker = c.lastSeq > c.read ? { read: c.read, upto: c.lastSeq } : null;
    c.newWhileAway = 0;
    $('typing-indicator').dataset.text = '';
  }
  S.openConv = c.conv;
  dirty.scrollBottom = true;
  dirty.scrollMarker = true;
  invalidate('pane');
  invalidate('list');
  ensureMeta(c);
  subscribePresence(otherMembers(c));
  if (!c.historyLoaded) loadInitialHistory(c);
  else scheduleReceipts();
  if (window.matchMedia('(min-width: 721px)').matches) $('message-input').focus();
}

function closeConversation() {
  stopTyping();
  cancelEdit();
  const c = S.openConv && getConv(S.openConv, false);
  if (c) c.marker = null;
  S.openConv = null;
  invalidate('pane');
  invalidate('list');
}

function startEdit(c, seq, body) {
  S.editing = { conv: c.conv, seq };
  const input = $('message-input');
  input.value = body;
  $('edit-banner').hidden = false;
  input.focus();
  autoGrow();
}

function cancelEdit() {
  if (!S.editing) return;
  S.editing = null;
  $('edit-banner').hidden = true;
  $('message-input').value = '';
  autoGrow();
}

function submitComposer() {
  const c = S.openConv && getConv(S.openConv, false);
  const input = $('message-input');
  const body = input.value;
  if (!c || c.left || body.trim() === '') return;
  if (S.editing && S.editing.conv === c.conv) {
    const seq = S.editing.seq;
    S.editing = null;
    $('edit-banner').hidden = true;
    otherWrite(c, 'edit', { seq, body });
  } else {
    sendMessage(c, body);
  }
  input.value = '';
  autoGrow();
  stopTyping();
}

function autoGrow() {
  const input = $('message-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

function showFormError(form, text) {
  const el = form.querySelector('[data-error]');
  el.textContent = text || '';
  el.hidden = !text;
}

function openDialog(id) {
  const dlg = $(id);
  const form = dlg.querySelector('form');
  showFormError(form, '');
  if (!dlg.open) dlg.showModal();
  const input = form.querySelector('input:not([hidden])');
  if (input) input.focus();
}

function closeDialog(id) {
  const dlg = $(id);
  if (dlg.open) dlg.close();
}

function parseUser(s) {
  return s.trim().toLowerCase();
}

/**
 * The user ids that do not exist (`profile` answers not_found).  The server itself
 * accepts unknown members in `create`, so a typo would make a conversation with
 * nobody; any other error lets the create go ahead.
 */
async function unknownUsers(users) {
  const results = await Promise.all(users.map((user) => req('profile', { user }).then(
    () => null,
    (e) => (e.code === 'not_found' ? user : null))));
  return results.filter(Boolean);
}

async function createDirect(ev) {
  ev.preventDefault();
  const form = $('new-direct-form');
  const user = parseUser($('new-direct-user').value);
  if (!USER_RE.test(user)) return showFormError(form, 'User ids are 1–32 of a-z 0-9 _ . - (starting with a letter or digit).');
  if (user === S.me) return showFormError(form, 'That is you.');
  const button = $('new-direct-submit');
  button.disabled = true;
  try {
    if ((await unknownUsers([user])).length) return showFormError(form, `There is no user “${user}”.`);
    // A direct conversation's id is derived from the two users: retrying is safe.
    const r = await writeWithRetry('create', { kind: 'direct', members: [user] });
    const c = getConv(r.conv);
    c.kind = 'direct';
    if (c.members.size === 0) {
      c.members.set(S.me, { role: 'member' });
      c.members.set(user, { role: 'member' });
    }
    c.left = false;
    $('new-direct-user').value = '';
    closeDialog('new-direct-dialog');
    invalidate('list');
    openConversation(c.conv);
  } catch (e) {
    showFormError(form, e.code === 'not_found' ? `No user “${user}”.` : e.message || e.code);
  } finally {
    button.disabled = false;
  }
}

async function createGroup(ev) {
  ev.preventDefault();
  const form = $('new-group-form');
  const name = $('new-group-name').value.trim();
  const members = [...new Set($('new-group-members').value.split(/[\s,;]+/).map(parseUser).filter((u) => u && u !== S.me))];
  if (!name) return showFormError(form, 'Give the group a name.');
  const bad = members.find((u) => !USER_RE.test(u));
  if (bad) return showFormError(form, `“${bad}” is not a valid user id.`);
  const button = $('new-group-submit');
  button.disabled = true;
  try {
    const unknown = await unknownUsers(members);
    if (unknown.length) return showFormError(form, `No such user: ${unknown.join(', ')}`);
    // No idempotency key for `create`: not retried automatically (it could make two groups).
    const r = await req('create', { kind: 'group', name, members });
    const c = getConv(r.conv);
    c.kind = 'group';
    c.name = c.name || name;
    if (c.members.size === 0) {
      c.members.set(S.me, { role: 'owner' });
      for (const u of members) c.members.set(u, { role: 'member' });
      c.memberCount = c.members.size;
    }
    $('new-group-name').value = '';
    $('new-group-members').value = '';
    closeDialog('new-group-dialog');
    invalidate('list');
    openConversation(c.conv);
  } catch (e) {
    showFormError(form, e.code === 'not_found' ? `Unknown user: ${e.message}` : e.message || e.code);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- conversation details dialog

function myRole(c) {
  return c.members.get(S.me)?.role || 'member';
}

function renderInfo() {
  const dlg = $('info-dialog');
  const c = S.openConv && getConv(S.openConv, false);
  if (!dlg.open || !c) return;
  const group = c.kind === 'group';
  $('info-title').textContent = convTitle(c);
  $('info-sub').textContent = group ? `Group · ${c.members.size} members` : 'Direct conversation';
  const role = myRole(c);
  const canManage = group && !c.left && (role === 'owner' || role === 'admin');
  const order = { owner: 0, admin: 1, member: 2 };
  const members = [...c.members.entries()].sort((a, b) => (order[a[1].role] ?? 3) - (order[b[1].role] ?? 3) || a[0].localeCompare(b[0]));
  $('info-members').replaceChildren(...members.map(([u, m]) => {
    const pres = u === S.me ? { online: S.connState === 'connected' } : S.presence.get(u) || null;
    const removable = canManage && u !== S.me && (role === 'owner' ? m.role !== 'owner' : m.role === 'member');
    return h('li', { class: 'member', 'data-testid': 'member', 'data-user': u },
      avatar(u, { presence: pres }),
      h('span', { class: 'member-text' },
        h('strong', {}, u === S.me ? `${u} (you)` : u),
        h('span', { class: 'muted small-text' }, u === S.me ? 'online' : fmtLastSeen(pres) || ' ')),
      m.role !== 'member' && group ? h('span', { class: 'role' }, m.role) : null,
      removable ? h('button', {
        type: 'button',
        class: 'ghost small danger',
        onclick: () => memberOp(c, 'remove_member', { user: u }),
      }, 'Remove') : null);
  }));
  $('info-add').hidden = !canManage;
  $('info-leave').hidden = !group || c.left;
}

function openInfo() {
  const c = S.openConv && getConv(S.openConv, false);
  if (!c) return;
  subscribePresence(otherMembers(c));
  openDialog('info-dialog');
  renderInfo();
  ensureMeta(c);
}

async function memberOp(c, op, fields) {
  const form = $('info-form');
  showFormError(form, '');
  try {
    await req(op, { conv: c.conv, ...fields });
    if (op === 'add_member') $('info-add-user').value = '';
    if (op === 'leave') {
      c.left = true;
      closeDialog('info-dialog');
      closeConversation();
      S.convs.delete(c.conv);
      invalidate('list');
      return;
    }
    // the member event is pushed and applied; `get` also refreshes the roles
    c.metaPromise = null;
    ensureMeta(c).then(renderInfo);
  } catch (e) {
    showFormError(form, e.code === 'not_found' ? `No user “${fields.user}”.` : e.message || e.code);
  }
}

// ---------------------------------------------------------------- login / session

async function rest(path, body) {
  let res;
  try {
    res = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new ChorusError('unavailable', 'cannot reach the server');
  }
  let data = null;
  try {
    data = await res.json();
  } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ChorusError(err.code || `http_${res.status}`, err.message || `${res.status} ${res.statusText}`);
  }
  return (data && data.result) || data || {};
}

function loginError(text) {
  const el = $('login-error');
  el.textContent = text || '';
  el.hidden = !text;
}

async function doLogin(register) {
  const user = parseUser($('login-user').value);
  const password = $('login-password').value;
  if (!USER_RE.test(user)) return loginError('User ids are 1–32 of a-z 0-9 _ . - (starting with a letter or digit).');
  if (password.length < 8) return loginError('Passwords have at least 8 characters.');
  loginError('');
  const buttons = [$('login-button'), $('register-button')];
  for (const b of buttons) b.disabled = true;
  try {
    const r = await rest(register ? '/api/v1/register' : '/api/v1/login', { user, password });
    if (!r.token) throw new ChorusError('internal', 'the server sent no token');
    sessionStorage.setItem('chorus.token', r.token);
    sessionStorage.setItem('chorus.user', r.user || user);
    $('login-password').value = '';
    startSession(r.user || user, r.token);
  } catch (e) {
    const msg = {
      conflict: 'That user id is taken.',
      unauthorized: 'Wrong user id or password.',
      rate_limited: 'Too many attempts; wait a moment.',
      unavailable: 'The server is not reachable right now; try again.',
    }[e.code];
    loginError(msg || e.message || e.code);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function startSession(user, token) {
  S.session++;
  S.me = user;
  S.token = token;
  S.convs = new Map();
  S.openConv = null;
  S.presence = new Map();
  S.presenceSubs = new Set();
  S.everConnected = false;
  S.search = '';
  $('conv-search').value = '';
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  $('me-name').textContent = user;
  setAvatar($('me-avatar'), user);
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  S.sock = new ChorusSocket(`${proto}//${location.host}/ws?batch=1`, {
    onOpen: onSocketOpen,
    onPush,
    onState: onSocketState,
  });
  S.sock.start();
  invalidate('list');
  invalidate('pane');
}

function logout(message) {
  S.session++;
  if (S.sock) S.sock.stop();
  S.sock = null;
  for (const c of S.convs.values()) {
    for (const t of c.typing.values()) clearTimeout(t);
    clearTimeout(c.gapTimer);
  }
  for (const id of ['new-direct-dialog', 'new-group-dialog', 'info-dialog']) closeDialog(id);
  S.me = null;
  S.token = null;
  S.convs = new Map();
  S.openConv = null;
  S.editing = null;
  sessionStorage.removeItem('chorus.token');
  sessionStorage.removeItem('chorus.user');
  $('chat-view').hidden = true;
  $('login-view').hidden = false;
  $('conn-banner').hidden = true;
  $('message-list').replaceChildren();
  $('conv-list').replaceChildren();
  $('message-input').value = '';
  document.title = 'chorus';
  loginError(message || '');
  $('login-user').focus();
}

// ---------------------------------------------------------------- wiring

function init() {
  S.search = '';
  S.connState = 'idle';
  S.retryAt = 0;
  S.everConnected = false;
  $('login-server').textContent = location.host || 'this page';
  $('login-form').addEventListener('submit', (e) => { e.preventDefault(); doLogin(false); });
  $('register-button').addEventListener('click', () => doLogin(true));
  $('logout-button').addEventListener('click', () => logout());
  $('conn-status').addEventListener('click', () => S.sock && S.sock.reconnectNow());
  $('conn-retry').addEventListener('click', () => S.sock && S.sock.reconnectNow());

  $('new-direct').addEventListener('click', () => openDialog('new-direct-dialog'));
  $('new-group').addEventListener('click', () => openDialog('new-group-dialog'));
  for (const b of document.querySelectorAll('[data-open]')) {
    b.addEventListener('click', () => openDialog(`${b.dataset.open}-dialog`));
  }
  $('new-direct-form').addEventListener('submit', createDirect);
  $('new-group-form').addEventListener('submit', createGroup);
  $('info-button').addEventListener('click', openInfo);
  $('info-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const c = S.openConv && getConv(S.openConv, false);
    const user = parseUser($('info-add-user').value);
    if (!c || !user) return;
    if (!USER_RE.test(user)) return showFormError($('info-form'), `“${user}” is not a valid user id.`);
    if (c.members.has(user)) return showFormError($('info-form'), `${user} is already a member.`);
    unknownUsers([user]).then((unknown) => {
      if (unknown.length) showFormError($('info-form'), `There is no user “${user}”.`);
      else memberOp(c, 'add_member', { user });
    });
  });
  $('info-leave').addEventListener('click', () => {
    const c = S.openConv && getConv(S.openConv, false);
    if (c && window.confirm(`Leave “${convTitle(c)}”?`)) memberOp(c, 'leave', {});
  });
  for (const b of document.querySelectorAll('[data-cancel]')) {
    b.addEventListener('click', () => b.closest('dialog').close());
  }
  // an error in a dialog goes away as soon as the user edits the form
  for (const form of document.querySelectorAll('dialog form')) {
    form.addEventListener('input', () => showFormError(form, ''));
  }
  // a click on the backdrop closes a dialog
  for (const dlg of document.querySelectorAll('dialog')) {
    dlg.addEventListener('mousedown', (e) => { if (e.target === dlg) dlg.close(); });
  }

  $('conv-search').addEventListener('input', (e) => { S.search = e.target.value; invalidate('list'); });
  $('conv-search').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.target.value = ''; S.search = ''; invalidate('list'); }
    if (e.key === 'Enter') {
      const first = $('conv-list').querySelector('[data-conv]');
      if (first) openConversation(Number(first.dataset.conv));
    }
  });

  const list = $('conv-list');
  list.addEventListener('click', (e) => {
    const li = e.target.closest('[data-conv]');
    if (li) openConversation(Number(li.dataset.conv));
  });
  list.addEventListener('keydown', (e) => {
    const li = e.target.closest('[data-conv]');
    if (li && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      openConversation(Number(li.dataset.conv));
    }
  });
  $('back-button').addEventListener('click', closeConversation);

  const input = $('message-input');
  $('send-form').addEventListener('submit', (e) => { e.preventDefault(); submitComposer(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitComposer();
    } else if (e.key === 'Escape') {
      cancelEdit();
    }
  });
  input.addEventListener('input', () => { autoGrow(); noteTyping(); });
  input.addEventListener('blur', () => { if (!input.value) stopTyping(); });
  $('edit-cancel').addEventListener('click', cancelEdit);

  $('messages').addEventListener('scroll', () => {
    const c = S.openConv && getConv(S.openConv, false);
    if (!c) return;
    if ($('messages').scrollTop < 80) loadOlder(c);
    updateJump(c);
  }, { passive: true });
  $('jump-bottom').addEventListener('click', () => {
    const el = $('messages');
    el.scrollTo({ top: el.scrollHeight, behavior: 'smooth' });
  });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') scheduleReceipts();
    invalidate('list');
  });
  window.addEventListener('online', () => S.sock && S.sock.reconnectNow());
  // "last seen 3 min ago" ages
  setInterval(() => { if (S.me) { invalidate('list'); invalidate('pane'); renderInfo(); } }, 60000);

  const token = sessionStorage.getItem('chorus.token');
  const user = sessionStorage.getItem('chorus.user');
  if (token && user) startSession(user, token);
  else $('login-user').focus();
}

init();

// for debugging from the console (and the browser test)
window.chorus = {
  state: S,
  /** Drops the WebSocket as a network failure would; it reconnects and syncs. */
  drop: () => S.sock && S.sock.drop('dropped by user'),
};
