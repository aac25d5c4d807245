// Browser tests of the chat: the real hub binary on an ephemeral loopback port with a temporary
// SQLite store, Debian's Chromium driven by playwright-core, and the chat demo page (chat.html)
// served by the hub. Each user is a page in its own browser context. The tests act through the
// page (sign in, like, type, send, unmatch, block, report) and read what it shows; every wait
// awaits recorded state (page.waitForFunction), the timeouts only turn a hang into a failure.
//
// The hub binary is not built here: `cargo build` first (HUB_BIN overrides the path).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium } from './chromium.mjs';

import { callApi, startHub, stopHub } from './hub-process.mjs';

/** Failure guard for one wait; generous for a loaded 2-core machine. */
const GUARD_MS = 30_000;
const TEST_TIMEOUT_MS = 180_000;

let tmp;
let hub;
let base;
let browser;

/** Calls the server API. */
function api(method, path, body) {
  return callApi(base, method, path, body);
}

/**
 * A user's browser (its own context) on the chat page, signed in and synced. `page.rec` records,
 * in the page, every message the SDK announces and every connection event.
 */
async function openChat(user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(GUARD_MS);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(`${base}/chat.html`);
  await page.fill('#me', user);
  await page.click('#sign-in');
  await page.waitForFunction(() => window.chatDemo?.chat.synced === true);
  await page.evaluate(() => {
    const rec = { messages: [], events: [] };
    window.rec = rec;
    const { chat, hub } = window.chatDemo;
    chat.on('message', ({ conversation, message, source }) => {
      rec.messages.push({ conversation, seq: message.seq, text: message.text, source });
    });
    for (const type of ['connected', 'disconnected']) hub.on(type, (e) => rec.events.push({ type, ...e }));
  });
  return page;
}

/** Waits until `fn(arg)`, evaluated in the page, is truthy. */
function until(page, fn, arg) {
  return page.waitForFunction(fn, arg);
}

/** What the open conversation shows: one entry per message, in display order. */
function shown(page) {
  return page.$$eval('#messages li', (lis) =>
    lis.map((li) => ({
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
      from: li.dataset.from,
      tick: li.dataset.tick ?? null,
      text: li.querySelector('.text').textContent,
    })),
  );
}

/** Waits until `page` has conversation `id` open (the page opens a new match by itself). */
function waitForOpen(page, id) {
  return until(page, (c) => Number(document.getElementById('conversation').dataset.conversation) === c, id);
}

/** The open conversation's id on `page`. */
function openConversation(page) {
  return page.evaluate(() => Number(document.getElementById('conversation').dataset.conversation));
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'hub-chat-test-'));
  hub = await startHub(tmp, GUARD_MS);
  base = `http://${hub.addr}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopHub(hub, GUARD_MS);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('two users like each other on the page, chat, see receipts, typing and presence', { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await openChat('alice');
  const bob = await openChat('bob');

  // alice likes bob: no match yet.
  await alice.fill('#like-user', 'bob');
  await alice.click('#like');
  await until(alice, () => /Liked bob/.test(document.getElementById('like-result').textContent));
  assert.equal(await alice.$$eval('#matches li', (l) => l.length), 0);
  // bob likes alice back: a match on both pages, and both open it.
  await bob.fill('#like-user', 'alice');
  await bob.click('#like');
  for (const [page, peer] of [[alice, 'bob'], [bob, 'alice']]) {
    await until(page, (p) => document.querySelector(`#matches li[data-peer="${p}"]`) !== null, peer);
    await until(page, (p) => document.getElementById('peer-name').textContent === p, peer);
    await until(page, () => /match/.test(document.getElementById('like-result').textContent));
  }
  const id = await openConversation(alice);
  assert.equal(await openConversation(bob), id);
  // Each sees the other online (the dot in the list and in the conversation's head).
  await until(alice, () => document.querySelector('#matches li[data-peer="bob"] .dot').dataset.status === 'online');
  await until(bob, () => document.getElementById('peer-dot').dataset.status === 'online');

  // alice writes; bob, who has the conversation open, sees it and reads it: alice's tick turns read.
  await send(alice, 'hi bob!');
  await until(bob, () => document.querySelector('#messages li[data-seq="1"]')?.dataset.from === 'peer');
  await until(alice, () => document.querySelector('#messages li[data-seq="1"]')?.dataset.tick === 'read');
  assert.deepEqual(await shown(bob), [{ seq: 1, from: 'peer', tick: null, text: 'hi bob!' }]);
  assert.deepEqual(await shown(alice), [{ seq: 1, from: 'me', tick: 'read', text: 'hi bob!' }]);
  const positions = await alice.evaluate((c) => window.chatDemo.chat.conversation(c), id);
  assert.equal(positions.peer_delivered, 1);
  assert.equal(positions.peer_read, 1);
  assert.equal(await bob.evaluate((c) => window.chatDemo.chat.conversation(c).unread, id), 0);

  // bob types: alice sees it in the conversation and in her list; his message ends it.
  await bob.fill('#text', 'hey al');
  await until(alice, () => !document.getElementById('typing').hidden);
  await until(alice, () => document.querySelector('#matches li[data-peer="bob"] .last').textContent === 'typing…');
  await bob.fill('#text', 'hey alice');
  await bob.click('#send');
  await until(alice, () => document.querySelector('#messages li[data-seq="2"]')?.textContent.includes('hey alice'));
  await until(alice, () => document.getElementById('typing').hidden);
  await until(bob, () => document.querySelector('#messages li[data-seq="2"]')?.dataset.tick === 'read');

  // A third user matches alice through the server API while she talks to bob: her list shows
  // the new conversation with its last message and an unread badge; carol's tick says delivered
  // (alice's device has it) but not read, until alice opens the conversation.
  const carol = await openChat('carol');
  const match = await api('POST', '/matches', { users: ['alice', 'carol'] });
  assert.equal(match.created, true);
  await waitForOpen(carol, match.id);
  await send(carol, 'hello alice, carol here');
  await until(alice, () => document.querySelector('#matches li[data-peer="carol"] .badge')?.dataset.count === '1');
  assert.equal(await alice.$eval('#matches li[data-peer="carol"] .last', (e) => e.textContent), 'hello alice, carol here');
  assert.equal(await alice.$eval('#total-unread', (e) => e.textContent), '1');
  await until(carol, () => document.querySelector('#messages li[data-seq="1"]')?.dataset.tick === 'delivered');
  assert.equal(await openConversation(alice), id, 'alice still has bob open');
  await alice.click('#matches li[data-peer="carol"]');
  await until(carol, () => document.querySelector('#messages li[data-seq="1"]')?.dataset.tick === 'read');
  await until(alice, () => document.querySelector('#matches li[data-peer="carol"] .badge').dataset.count === '0');
  assert.deepEqual(await alice.$$eval('#matches li', (l) => l.map((li) => li.dataset.peer)), ['carol', 'bob'], 'newest activity first');

  // bob's browser closes: alice sees him go offline, in the list and the conversation's head.
  await alice.click('#matches li[data-peer="bob"]');
  await bob.context().close();
  await until(alice, () => document.querySelector('#matches li[data-peer="bob"] .dot').dataset.status === 'offline');
  await until(alice, () => document.getElementById('peer-dot').dataset.status === 'offline');
  assert.match(await alice.$eval('#peer-status', (e) => e.textContent), /last seen/);

  assert.deepEqual([...alice.errors, ...bob.errors, ...carol.errors], []);
  await alice.context().close();
  await carol.context().close();
});

test('a dropped network: what was sent meanwhile shows once, in order, and an offline send goes once', { timeout: TEST_TIMEOUT_MS }, async () => {
  const dan = await openChat('dan');
  const erin = await openChat('erin');
  const { id } = await api('POST', '/matches', { users: ['dan', 'erin'] });
  for (const page of [dan, erin]) await waitForOpen(page, id);
  await send(dan, 'before the drop');
  await until(erin, () => document.querySelector('#messages li[data-seq="1"]') !== null);
  await until(erin, () => document.getElementById('peer-dot').dataset.status === 'online');

  // erin's network goes: her socket dies and no new one can open. dan sees her go offline, which
  // shows the hub noticed too.
  await erin.context().setOffline(true);
  await erin.evaluate(() => window.chatDemo.hub._testDropSocket());
  await until(erin, () => window.rec.events.some((e) => e.type === 'disconnected' && e.reconnect));
  await until(dan, () => document.getElementById('peer-dot').dataset.status === 'offline');

  // Sent while she is away: five by dan through his page, one by erin (it waits in her outbox).
  const texts = ['one', 'two', 'three', 'four', 'five'];
  for (const [i, text] of texts.entries()) {
    await send(dan, text);
    await until(dan, (s) => document.querySelector(`#messages li[data-seq="${s}"]`) !== null, i + 2);
  }
  await send(erin, 'typed offline');
  await until(erin, () => document.querySelector('#messages li[data-tick="sending"]') !== null);
  assert.equal(await erin.$$eval('#messages li[data-seq]', (l) => l.length), 1, 'nothing reached erin while away');

  // The network is back: the SDK reconnects by itself, resumes, syncs, and sends the pending one.
  await erin.context().setOffline(false);
  await until(erin, () => window.rec.events.filter((e) => e.type === 'connected').length >= 1);
  await until(erin, () => document.querySelectorAll('#messages li[data-seq]').length === 7);
  await until(erin, () => window.chatDemo.chat.synced);
  await until(erin, () => document.querySelector('#messages li[data-tick="sending"]') === null);
  await until(dan, () => document.querySelector('#messages li[data-seq="7"]') !== null);
  await until(dan, () => document.getElementById('peer-dot').dataset.status === 'online');

  const expected = ['before the drop', ...texts, 'typed offline'];
  const onErin = await shown(erin);
  assert.deepEqual(onErin.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7], 'every message once, in seq order');
  assert.deepEqual(onErin.map((m) => m.text), expected);
  assert.deepEqual((await shown(dan)).map((m) => m.text), expected);
  // Each (conversation, seq) was announced once, whichever path brought it (push, resume, history).
  const announced = await erin.evaluate(() => window.rec.messages.map((m) => `${m.conversation}:${m.seq}`));
  assert.deepEqual(
    [...announced].sort(),
    [1, 2, 3, 4, 5, 6, 7].map((seq) => `${id}:${seq}`).sort(),
    'each message announced once',
  );
  // The server stored erin's offline message once (its retry reused the client_id).
  const stored = await api('GET', `/matches/${id}/messages?after=0`);
  assert.deepEqual(stored.messages.map((m) => m.text), expected);
  const missedBy = await erin.evaluate(() => window.rec.messages.filter((m) => m.seq >= 2 && m.seq <= 6).map((m) => m.source));
  assert.deepEqual(missedBy, ['push', 'push', 'push', 'push', 'push'], 'the missed ones came with the resume of user:erin');
  // Her read of the conversation reached dan once she was back.
  await until(dan, () => document.querySelector('#messages li[data-seq="6"]')?.dataset.tick === 'read');

  // Again, but the resume cannot recover (her position names another epoch, as after a hub
  // restart): the sync's history pages must bring what she missed.
  await erin.context().setOffline(true);
  await erin.evaluate(() => {
    window.chatDemo.hub._testDropSocket();
    window.chatDemo.chat.sub.epoch = 'gone';
  });
  await until(dan, () => document.getElementById('peer-dot').dataset.status === 'offline');
  for (const [i, text] of ['six', 'seven'].entries()) {
    await send(dan, text);
    await until(dan, (s) => document.querySelector(`#messages li[data-seq="${s}"]`) !== null, i + 8);
  }
  await erin.context().setOffline(false);
  await until(erin, () => document.querySelectorAll('#messages li[data-seq]').length === 9);
  await until(erin, () => window.chatDemo.chat.synced);
  const late = await shown(erin);
  assert.deepEqual(late.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(late.map((m) => m.text), [...expected, 'six', 'seven']);
  const bySync = await erin.evaluate(() => window.rec.messages.filter((m) => m.seq >= 8).map((m) => [m.seq, m.source]));
  assert.deepEqual(bySync, [[8, 'history'], [9, 'history']]);

  assert.deepEqual([...dan.errors, ...erin.errors], []);
  await dan.context().close();
  await erin.context().close();
});

test('unmatch closes the conversation on both pages; sending then fails with conversation_closed; a new match reopens it', { timeout: TEST_TIMEOUT_MS }, async () => {
  const frank = await openChat('frank');
  const gina = await openChat('gina');
  const { id } = await api('POST', '/matches', { users: ['frank', 'gina'] });
  for (const page of [frank, gina]) await waitForOpen(page, id);
  await send(gina, 'hi frank');
  await until(frank, () => document.querySelector('#messages li[data-seq="1"]') !== null);

  await frank.click('#unmatch');
  for (const page of [frank, gina]) {
    await until(page, () => document.getElementById('conversation').dataset.state === 'closed');
    await until(page, () => !document.getElementById('closed-banner').hidden);
    assert.equal(await page.$eval('#matches li', (li) => li.dataset.state), 'closed');
    assert.equal(await page.$eval('#send', (b) => b.disabled), true, 'the composer is off');
    const code = await page.evaluate((c) => window.chatDemo.chat.send(c, 'still there?').then(() => 'sent', (e) => e.code), id);
    assert.equal(code, 'conversation_closed');
  }
  const closed = await api('GET', `/matches/${id}`);
  assert.equal(closed.state, 'closed');

  // The server API matches them again: the same conversation reopens on both pages.
  const again = await api('POST', '/matches', { users: ['frank', 'gina'] });
  assert.equal(again.id, id);
  for (const page of [frank, gina]) {
    await until(page, () => document.getElementById('conversation').dataset.state === 'active');
    assert.equal(await page.$eval('#closed-banner', (e) => e.hidden), true);
  }
  await send(frank, 'hello again');
  await until(gina, () => document.querySelector('#messages li[data-seq="2"]')?.textContent.includes('hello again'));
  assert.deepEqual([...frank.errors, ...gina.errors], []);
  await frank.context().close();
  await gina.context().close();
});

test('report and block from the page: the report is stored, the conversation closes for both', { timeout: TEST_TIMEOUT_MS }, async () => {
  const hank = await openChat('hank');
  const ivy = await openChat('ivy');
  const { id } = await api('POST', '/matches', { users: ['hank', 'ivy'] });
  for (const page of [hank, ivy]) await waitForOpen(page, id);

  await ivy.selectOption('#report-reason', 'spam');
  await ivy.click('#report');
  await until(ivy, () => /Reported hank/.test(document.getElementById('chat-error').textContent));
  const { reports } = await api('GET', '/reports');
  const report = reports.find((r) => r.reporter === 'ivy');
  assert.ok(report, JSON.stringify(reports));
  assert.equal(report.reported, 'hank');
  assert.equal(report.reason, 'spam');
  assert.equal(report.conversation, id);

  await ivy.click('#block');
  for (const page of [hank, ivy]) {
    await until(page, () => document.getElementById('conversation').dataset.state === 'closed');
  }
  const code = await hank.evaluate((c) => window.chatDemo.chat.send(c, 'why?').then(() => 'sent', (e) => e.code), id);
  assert.equal(code, 'blocked');
  // Neither can like the other again.
  await hank.fill('#like-user', 'ivy');
  await hank.click('#like');
  await until(hank, () => /^blocked:/.test(document.getElementById('like-result').textContent));
  assert.deepEqual([...hank.errors, ...ivy.errors], []);
  await hank.context().close();
  await ivy.context().close();
});
