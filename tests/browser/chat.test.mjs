// End-to-end browser test of the chorus web client (web/) against a running cluster.
//
//   CHORUS_GW1=http://127.0.0.1:7301 CHORUS_GW2=http://127.0.0.1:7302 node chat.test.mjs
//
// Two users in two browser contexts, each on a different gateway, driving the real UI:
//   - both register; A opens a direct chat with B (dialog) and writes; B sees it arrive
//     (unread 1, A's presence dot), opens it and answers; A sees "read" and the answer;
//     B sees A's typing indicator;
//   - A creates a group with B (dialog) and writes: A's message turns "delivered" while B
//     has another conversation open, and B's badge counts it;
//   - 70 more group messages; B reloads the page, opens the group and scrolls back: the
//     older half arrives through `history` with `before`, every message exactly once,
//     in order;
//   - A's WebSocket is cut (through a Playwright WebSocket route) and kept down while B
//     writes three messages; A shows the reconnect banner, reconnects, sends `sync` with
//     its cursors and shows the missed messages exactly once, in order.
// Exits 0 on success; otherwise prints the failed step, the pages' console logs and
// screenshot paths.  CHORUS_SCREENSHOTS=DIR saves screenshots of the main views there
// (CHORUS_DPR=2 for sharper ones, CHORUS_COLOR_SCHEME=dark for the dark theme).
// Needs Debian's chromium (CHROMIUM overrides the path); starts no cluster itself.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

const TIMEOUT = Number(process.env.CHORUS_BROWSER_TIMEOUT_MS || 20000);
const OVERALL_TIMEOUT = Number(process.env.CHORUS_BROWSER_OVERALL_MS || 150000);
const GW1 = trimUrl(process.env.CHORUS_GW1);
const GW2 = trimUrl(process.env.CHORUS_GW2 || process.env.CHORUS_GW1);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HEADED = process.env.HEADED === '1';
const SHOTS = process.env.CHORUS_SCREENSHOTS || '';
const BULK = 70; // group messages for the history test (> one 50-event page)

// Chromium on a machine without outside network: no background connections, no
// first-run work, no GPU.  Playwright gives every launch a fresh --user-data-dir
// (a new temporary profile, removed when the browser closes).
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

function trimUrl(u) {
  return u ? u.replace(/\/+$/, '') : u;
}

function log(...a) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
}

if (!GW1) {
  console.error('chat.test: set CHORUS_GW1 (and CHORUS_GW2) to gateway base URLs, e.g. http://127.0.0.1:7301');
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) {
  console.error(`chat.test: no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(2);
}
if (SHOTS) fs.mkdirSync(SHOTS, { recursive: true });

const suffix = crypto.randomBytes(4).toString('hex');
const userA = `a_${suffix}`;
const userB = `b_${suffix}`;
const groupName = `Launch crew ${suffix}`;
const password = `pw-${crypto.randomBytes(6).toString('hex')}`;
const pages = {}; // label -> {page, logs}
const pageErrors = []; // uncaught exceptions in the pages: each one fails the test
let step = 'start';

const sel = (id) => `[data-testid="${id}"]`;

function setStep(s) {
  step = s;
  log(s);
}

async function shot(page, name) {
  if (!SHOTS) return;
  const file = path.join(SHOTS, `${name}.png`);
  await page.waitForTimeout(250); // let transitions (dialogs, bubbles) finish
  await page.screenshot({ path: file });
  log(`  screenshot ${file}`);
}

async function newUserPage(browser, label, baseUrl, setup) {
  const context = await browser.newContext({
    viewport: { width: 1100, height: 760 },
    deviceScaleFactor: Number(process.env.CHORUS_DPR || 1),
    colorScheme: process.env.CHORUS_COLOR_SCHEME || 'light',
  });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`[${label} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => {
    logs.push(`[${label} pageerror] ${e.stack || e}`);
    pageErrors.push(`${label}: ${String(e.message || e).split('\n')[0]}`);
  });
  page.on('requestfailed', (r) => logs.push(`[${label} requestfailed] ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('websocket', (ws) => {
    logs.push(`[${label} websocket] open ${ws.url()}`);
    ws.on('close', () => logs.push(`[${label} websocket] closed`));
  });
  pages[label] = { page, logs };
  page.setDefaultTimeout(TIMEOUT);
  if (setup) await setup(page);
  await page.goto(`${baseUrl}/`, { waitUntil: 'domcontentloaded' });
  return page;
}

/**
 * Routes a page's WebSocket through the test so it can be cut like a network failure:
 * frames are forwarded both ways and the page's frames recorded; while `blocked`, new
 * connections are refused (closed at once).
 */
function wsTap() {
  const tap = { frames: [], blocked: false, live: new Set() };
  tap.install = (page) => page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    if (tap.blocked) {
      ws.close({ code: 4001, reason: 'network down (test)' });
      return;
    }
    const server = ws.connectToServer();
    const conn = { ws, server };
    tap.live.add(conn);
    ws.onMessage((m) => {
      tap.frames.push({ t: Date.now(), text: String(m) });
      server.send(m);
    });
    server.onMessage((m) => ws.send(m));
    ws.onClose(() => { tap.live.delete(conn); server.close().catch(() => {}); });
    server.onClose(() => { tap.live.delete(conn); ws.close().catch(() => {}); });
  });
  tap.cut = async () => {
    tap.blocked = true;
    const conns = [...tap.live];
    tap.live.clear();
    for (const { ws, server } of conns) {
      await server.close().catch(() => {});
      await ws.close({ code: 4002, reason: 'network cut (test)' }).catch(() => {});
    }
  };
  tap.requests = (op, since = 0) => tap.frames
    .filter((f) => f.t >= since)
    .flatMap((f) => f.text.split('\n')) // ?batch=1: a frame may hold several requests
    .map((l) => { try { return JSON.parse(l); } catch (_) { return null; } })
    .filter((m) => m && m.op === op);
  return tap;
}

async function register(page, user) {
  await page.locator(sel('login-user')).fill(user);
  await page.locator(sel('login-password')).fill(password);
  await page.locator(sel('register-button')).click();
  // either the chat view with a live connection, or an error to report
  const status = page.locator(`${sel('conn-status')}[data-state="connected"]`);
  const error = page.locator(`${sel('login-error')}:not([hidden])`);
  await Promise.race([
    status.waitFor({ state: 'visible' }),
    error.waitFor({ state: 'visible' }).then(async () => {
      throw new Error(`registration of ${user} failed: ${await error.textContent()}`);
    }),
  ]);
}

function convItem(page, name) {
  return page.locator(sel('conv-item'), { has: page.locator(sel('conv-name'), { hasText: name }) });
}

/** A string matches a message body exactly; a RegExp is used as it is. */
function bodyMatch(text) {
  return text instanceof RegExp ? text : new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
}

function message(page, from, text) {
  return page.locator(`${sel('message')}[data-from="${from}"]`, { has: page.locator(sel('message-body'), { hasText: bodyMatch(text) }) });
}

function committed(page, from, text) {
  return page.locator(`${sel('message')}[data-from="${from}"][data-state="sent"]:not([data-seq=""])`,
    { has: page.locator(sel('message-body'), { hasText: bodyMatch(text) }) });
}

async function send(page, text, { button = false } = {}) {
  const input = page.locator(sel('message-input'));
  await input.fill(text);
  if (button) await page.locator(sel('send-button')).click();
  else await input.press('Enter');
}

/** [{seq, from, body}] of the messages shown in the open conversation, in DOM order. */
function shownMessages(page) {
  return page.locator(sel('message')).evaluateAll((els) => els.map((el) => ({
    seq: Number(el.dataset.seq),
    from: el.dataset.from,
    body: el.querySelector('[data-testid="message-body"]')?.textContent || '',
  })));
}

async function expectOnceEach(page, label, texts) {
  for (const text of texts) {
    const n = await page.locator(sel('message'), { has: page.locator(sel('message-body'), { hasText: bodyMatch(text) }) }).count();
    if (n !== 1) throw new Error(`page ${label} shows "${text}" ${n} times`);
  }
}

function expectAscending(list, what) {
  for (let i = 1; i < list.length; i++) {
    if (!(list[i].seq > list[i - 1].seq)) {
      throw new Error(`${what}: seq ${list[i].seq} ("${list[i].body}") follows seq ${list[i - 1].seq} ("${list[i - 1].body}")`);
    }
  }
}

async function restSend(baseUrl, token, conv, body) {
  const res = await fetch(`${baseUrl}/api/v1/conversations/${conv}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ client_msg_id: crypto.randomUUID(), body }),
  });
  const text = await res.text();
  if (res.status !== 200 && res.status !== 201) throw new Error(`REST send: HTTP ${res.status} ${text}`);
  return JSON.parse(text);
}

async function run() {
  setStep('launch chromium');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: !HEADED,
    args: HEADED ? CHROMIUM_ARGS.filter((a) => a !== '--headless') : CHROMIUM_ARGS,
  });
  try {
    setStep(`open the web client (A on ${GW1}, B on ${GW2})`);
    const tapA = wsTap();
    const a = await newUserPage(browser, 'A', GW1, tapA.install);
    const b = await newUserPage(browser, 'B', GW2);
    await b.locator(sel('login-user')).waitFor();
    await shot(b, 'login');

    setStep(`register ${userB} on GW2`);
    await register(b, userB);
    setStep(`register ${userA} on GW1`);
    await register(a, userA);

    // ------------------------------------------------------------ direct chat
    setStep(`A starts a direct chat with ${userB} (dialog)`);
    await a.locator(sel('new-direct')).click();
    await a.locator(sel('new-direct-user')).fill(`nobody_${suffix}`);
    await a.locator(sel('new-direct-submit')).click();
    await a.locator('#new-direct-form [data-error]:not([hidden])', { hasText: `nobody_${suffix}` }).waitFor();
    if (await a.locator(sel('conv-item')).count()) throw new Error('a conversation with a user that does not exist was created');
    await a.locator(sel('new-direct-user')).fill(userB);
    await shot(a, 'dialog-direct');
    await a.locator(sel('new-direct-submit')).click();
    await convItem(a, userB).waitFor();
    await a.locator(sel('pane-name'), { hasText: userB }).waitFor();
    await a.locator(sel('message-input')).waitFor();

    setStep('A sends "hello from A"');
    await send(a, 'hello from A');
    await message(a, userA, 'hello from A').waitFor();
    const msgA = committed(a, userA, 'hello from A');
    await msgA.waitFor();
    const seqA = Number(await msgA.getAttribute('data-seq'));
    log(`  committed as seq ${seqA}`);

    setStep('A sees B online (presence dot)');
    await convItem(a, userB).locator(`${sel('presence-dot')}[data-online="true"]`).waitFor();

    setStep('B sees the conversation appear with unread 1');
    const itemB = convItem(b, userA);
    await itemB.waitFor();
    await itemB.locator(`${sel('unread')}:not([hidden])`, { hasText: /^1$/ }).waitFor();
    await itemB.locator(`${sel('presence-dot')}[data-online="true"]`).waitFor();
    await shot(b, 'unread');

    setStep('B opens the conversation and sees the message');
    await itemB.click();
    await message(b, userA, 'hello from A').waitFor();
    await itemB.locator(`${sel('unread')}[hidden]`).waitFor({ state: 'attached' });

    setStep('A\'s message is marked read (B has it open)');
    await message(a, userA, 'hello from A').locator(`${sel('msg-status')}[data-status="read"]`).waitFor();

    setStep('B sees the typing indicator while A types');
    await a.locator(sel('message-input')).click();
    await a.locator(sel('message-input')).pressSequentially('typing', { delay: 40 });
    await b.locator(sel('typing-indicator'), { hasText: `${userA} is typing` }).waitFor();
    await shot(b, 'typing');
    await a.locator(sel('message-input')).fill('');

    setStep('B replies "hello from B"');
    await send(b, 'hello from B', { button: true });
    await committed(b, userB, 'hello from B').waitFor();

    setStep('A sees the reply');
    const replyOnA = message(a, userB, 'hello from B');
    await replyOnA.waitFor();
    const seqB = Number(await replyOnA.getAttribute('data-seq'));
    if (!(seqB > seqA)) throw new Error(`reply has seq ${seqB}, not after ${seqA}`);
    await send(a, 'Nice, it works across gateways!');
    await committed(a, userA, /across gateways/).waitFor();
    await send(b, 'Every message is committed on a majority of replicas before we see it.\nMulti-line too.');
    await message(a, userB, /Multi-line too\.$/).waitFor();
    await message(b, userA, /across gateways/).waitFor();
    await a.waitForTimeout(300); // let the read marks settle for the screenshot
    await shot(a, 'conversation');

    setStep('each side shows each message exactly once');
    for (const [label, page] of [['A', a], ['B', b]]) {
      await expectOnceEach(page, label, ['hello from A', 'hello from B']);
    }
    const directConv = Number(await convItem(a, userB).getAttribute('data-conv'));

    // ------------------------------------------------------------ group
    setStep(`A creates the group "${groupName}" with ${userB} (dialog)`);
    await a.locator(sel('new-group')).click();
    await a.locator(sel('new-group-name')).fill(groupName);
    await a.locator(sel('new-group-members')).fill(userB);
    await shot(a, 'dialog-group');
    await a.locator(sel('new-group-submit')).click();
    await a.locator(sel('pane-name'), { hasText: groupName }).waitFor();
    const groupConv = Number(await convItem(a, groupName).getAttribute('data-conv'));
    log(`  group conv ${groupConv}`);

    setStep('A writes in the group; it turns "delivered" while B has the direct chat open');
    await send(a, 'group hello');
    await committed(a, userA, 'group hello').waitFor();
    await message(a, userA, 'group hello').locator(`${sel('msg-status')}[data-status="delivered"]`).waitFor();
    const groupItemB = convItem(b, groupName);
    await groupItemB.locator(`${sel('unread')}:not([hidden])`, { hasText: /^1$/ }).waitFor();

    setStep(`${BULK} more group messages (REST, as A); B's badge counts them`);
    const tokenA = await a.evaluate(() => sessionStorage.getItem('chorus.token'));
    for (let i = 1; i <= BULK; i++) await restSend(GW1, tokenA, groupConv, `bulk ${i}`);
    await groupItemB.locator(`${sel('unread')}:not([hidden])`, { hasText: new RegExp(`^${BULK + 1}$`) }).waitFor();

    setStep('B opens the group: a "new messages" divider, all of them shown');
    await groupItemB.click();
    await b.locator(sel('new-divider')).waitFor();
    await message(b, userA, `bulk ${BULK}`).waitFor();
    await groupItemB.locator(`${sel('unread')}[hidden]`).waitFor({ state: 'attached' });
    await message(a, userA, `bulk ${BULK}`).locator(`${sel('msg-status')}[data-status="read"]`).waitFor();
    await shot(b, 'group');

    setStep('B opens the group details: both members, A is the owner');
    await b.locator(sel('conv-info')).click();
    await b.locator(`${sel('member')}[data-user="${userA}"]`, { hasText: 'owner' }).waitFor();
    await b.locator(`${sel('member')}[data-user="${userB}"]`).waitFor();
    await shot(b, 'dialog-details');
    await b.keyboard.press('Escape');
    await b.locator(sel('member-list')).waitFor({ state: 'hidden' });

    setStep('B reloads the page and reopens the group: only the latest page is loaded');
    await b.reload({ waitUntil: 'domcontentloaded' });
    await b.locator(`${sel('conn-status')}[data-state="connected"]`).waitFor();
    await convItem(b, groupName).click();
    await message(b, userA, `bulk ${BULK}`).waitFor();
    const firstPage = await shownMessages(b);
    if (firstPage.some((m) => m.body === 'bulk 1')) throw new Error('the whole group history was loaded at once (expected one page)');
    log(`  ${firstPage.length} messages on the first page`);

    setStep('B scrolls back: older messages arrive via history "before"');
    const oldest = message(b, userA, 'bulk 1');
    for (let i = 0; i < 20 && !(await oldest.count()); i++) {
      await b.locator(sel('messages')).evaluate((el) => { el.scrollTop = 0; });
      await b.waitForTimeout(400);
    }
    await oldest.waitFor();
    await b.locator(sel('history-start')).waitFor();
    const all = await shownMessages(b);
    expectAscending(all, 'group history on B');
    await expectOnceEach(b, 'B', ['group hello', ...Array.from({ length: BULK }, (_, i) => `bulk ${i + 1}`)]);
    log(`  ${all.length} messages after scrolling back`);

    // ------------------------------------------------------------ reconnect + sync
    setStep('A opens the direct chat again; its connection is cut');
    await convItem(a, userB).click();
    await message(a, userB, 'hello from B').waitFor();
    await convItem(b, userA).click();
    await message(b, userA, 'hello from A').waitFor();
    const cutAt = Date.now();
    await tapA.cut();
    await a.locator(`${sel('conn-status')}:not([data-state="connected"])`).waitFor();
    await a.locator(`${sel('conn-banner')}:not([hidden])`).waitFor();

    setStep('B writes three messages while A is offline');
    for (const t of ['missed 1', 'missed 2', 'missed 3']) {
      await send(b, t);
      await committed(b, userB, t).waitFor();
    }
    if (await message(a, userB, 'missed 1').count()) throw new Error('A got a message while its connection was cut');
    await shot(a, 'reconnecting');

    setStep('A reconnects, syncs from its cursors and shows the missed messages once, in order');
    tapA.blocked = false;
    await a.locator(`${sel('conn-status')}[data-state="connected"]`).waitFor({ timeout: 30000 });
    await message(a, userB, 'missed 3').waitFor();
    const syncs = tapA.requests('sync', cutAt);
    if (syncs.length === 0) throw new Error('A did not send `sync` after reconnecting');
    const cursors = syncs[0].cursors || {};
    if (!(Number(cursors[directConv]) >= seqB)) {
      throw new Error(`sync cursors ${JSON.stringify(cursors)} lack the direct chat ${directConv} at seq >= ${seqB}`);
    }
    if (!(Number(cursors[groupConv]) >= BULK + 2)) {
      throw new Error(`sync cursors ${JSON.stringify(cursors)} lack the group ${groupConv} at seq >= ${BULK + 2}`);
    }
    await expectOnceEach(a, 'A', ['hello from A', 'hello from B', 'missed 1', 'missed 2', 'missed 3']);
    const afterSync = await shownMessages(a);
    expectAscending(afterSync, 'direct chat on A after sync');
    const missed = afterSync.filter((m) => m.body.startsWith('missed ')).map((m) => m.body);
    if (missed.join() !== 'missed 1,missed 2,missed 3') throw new Error(`A shows the missed messages as ${missed.join(', ')}`);
    await a.locator(`${sel('conn-banner')}`).waitFor({ state: 'hidden' });

    setStep('live delivery continues after the sync');
    await send(b, 'back online?');
    await message(a, userB, 'back online?').waitFor();
    await send(a, 'yes — nothing lost');
    await message(b, userA, 'yes — nothing lost').waitFor();
    await expectOnceEach(a, 'A', ['missed 1', 'missed 2', 'missed 3', 'back online?']);

    setStep('no uncaught errors in the pages');
    if (pageErrors.length) throw new Error(`uncaught page errors: ${pageErrors.join('; ')}`);

    log(`PASS: ${userA} (GW1) and ${userB} (GW2) chatted through the web client`);
  } catch (e) {
    console.error(`FAIL at step "${step}": ${String(e.message || e).split('\n')[0]}`);
    if (process.env.VERBOSE) console.error(e.stack);
    await captureFailure();
    throw e;
  } finally {
    await browser.close().catch(() => {});
  }
}

async function captureFailure() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-browser-failure-'));
  for (const [label, { page, logs }] of Object.entries(pages)) {
    const file = path.join(dir, `page-${label}.png`);
    try {
      await page.screenshot({ path: file, fullPage: true, timeout: 5000 });
      console.error(`screenshot of page ${label}: ${file}`);
    } catch (e) {
      console.error(`screenshot of page ${label} failed: ${e.message}`);
    }
    try {
      fs.writeFileSync(path.join(dir, `page-${label}.html`), await page.content());
    } catch (_) { /* ignore */ }
    if (logs.length) {
      console.error(`--- page ${label} log (last 40 of ${logs.length}) ---`);
      for (const l of logs.slice(-40)) console.error(l);
    }
  }
  console.error(`failure artifacts in ${dir}`);
}

const guard = setTimeout(() => {
  console.error(`FAIL: the test did not finish within ${OVERALL_TIMEOUT} ms (step: ${step})`);
  process.exit(1);
}, OVERALL_TIMEOUT);

try {
  await run();
  process.exitCode = 0;
} catch (e) {
  if (step === 'launch chromium') console.error(`FAIL: cannot launch ${CHROMIUM}: ${e.message}`);
  process.exitCode = 1;
} finally {
  clearTimeout(guard);
}
