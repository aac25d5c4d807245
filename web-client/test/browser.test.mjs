// Browser tests: the real hub binary on an ephemeral loopback port, Debian's Chromium driven by
// playwright-core, pages served by the hub itself. Every wait awaits recorded state
// (page.waitForFunction); the timeouts only turn a hang into a failure.
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
 * A fresh browser context (its own cookies and storage: another user's browser) on the harness
 * page. Uncaught page errors are collected and checked by the caller.
 */
async function openHarness() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(GUARD_MS);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(`${base}/test/harness.html`);
  await page.waitForFunction(() => window.harness !== undefined);
  return page;
}

/** Waits until `channel` on `page` has delivered at least `n` publications; returns them. */
async function waitForPubs(page, channel, n) {
  await page.waitForFunction(([c, k]) => (window.rec.pubs[c]?.length ?? 0) >= k, [channel, n]);
  return page.evaluate((c) => window.rec.pubs[c], channel);
}

/** Waits for a connection event of `type` whose fields include `fields`. */
function waitForEvent(page, type, fields = {}) {
  return page.waitForFunction(
    ([t, f]) => window.rec.events.some((e) => e.type === t && Object.entries(f).every(([k, v]) => e[k] === v)),
    [type, fields],
  );
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'hub-browser-test-'));
  hub = await startHub(tmp, GUARD_MS);
  base = hub.base;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopHub(hub, GUARD_MS);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('two users on the lobby: publications reach both, presence and join show both', { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await openHarness();
  const bob = await openHarness();
  await alice.evaluate(() => harness.connect('alice'));
  await alice.evaluate(() => harness.subscribe('lobby'));
  await bob.evaluate(() => harness.connect('bob'));
  await bob.evaluate(() => harness.subscribe('lobby'));

  // alice was there first, so she sees bob join.
  await alice.waitForFunction(() => window.rec.presence.lobby.some((e) => e.type === 'join' && e.user === 'bob'));
  const members = await bob.evaluate(() => harness.presence('lobby'));
  assert.deepEqual(members.map((m) => m.user).sort(), ['alice', 'bob']);

  const reply = await alice.evaluate(() => harness.publish('lobby', { text: 'hello bob', seq: 1 }));
  assert.ok(reply.position.offset > 0, 'lobby keeps history, so a publish has an offset');
  for (const page of [bob, alice]) {
    const [pub] = await waitForPubs(page, 'lobby', 1);
    assert.deepEqual(pub.data, { text: 'hello bob', seq: 1 });
    assert.equal(pub.from, 'alice');
    assert.equal(pub.event, 'message');
    assert.equal(pub.offset, reply.position.offset);
  }

  await bob.context().close();
  await alice.waitForFunction(() => window.rec.presence.lobby.some((e) => e.type === 'leave' && e.user === 'bob'));
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context().close();
});

test('after a network drop the SDK reconnects by itself and delivers everything once, in order', { timeout: TEST_TIMEOUT_MS }, async () => {
  const channel = 'resume-lobby';
  const alice = await openHarness();
  const bob = await openHarness();
  await alice.evaluate(() => harness.connect('alice'));
  await alice.evaluate((c) => harness.subscribe(c), channel);
  await bob.evaluate(() => harness.connect('bob'));
  await bob.evaluate((c) => harness.subscribe(c), channel);
  const publish = (seq) => api('POST', '/publish', { channel, data: { seq } });

  for (let seq = 1; seq <= 3; seq++) await publish(seq);
  await waitForPubs(bob, channel, 3);

  // The link goes; alice seeing bob leave proves the hub noticed it too.
  await bob.evaluate(() => harness.cutNetwork());
  await waitForEvent(bob, 'disconnected', { reconnect: true });
  await alice.waitForFunction((c) => window.rec.presence[c].some((e) => e.type === 'leave' && e.user === 'bob'), channel);

  // Published while bob is away: through the server API and by alice over her socket.
  for (let seq = 4; seq <= 6; seq++) await publish(seq);
  for (let seq = 7; seq <= 8; seq++) await alice.evaluate(([c, s]) => harness.publish(c, { seq: s }), [channel, seq]);
  await waitForPubs(alice, channel, 8);
  assert.equal((await bob.evaluate((c) => window.rec.pubs[c].length, channel)), 3, 'nothing reached bob while away');

  await bob.evaluate(() => harness.restoreNetwork());
  await bob.waitForFunction(() => window.rec.events.filter((e) => e.type === 'connected').length >= 2);
  await waitForPubs(bob, channel, 8);

  // And live again.
  for (let seq = 9; seq <= 10; seq++) await publish(seq);
  const pubs = await waitForPubs(bob, channel, 10);

  assert.deepEqual(pubs.map((p) => p.data.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'every message exactly once, in order');
  for (let i = 1; i < pubs.length; i++) assert.ok(pubs[i].offset > pubs[i - 1].offset, 'offsets increase');
  assert.deepEqual(pubs.map((p) => Boolean(p.recovered)), [false, false, false, true, true, true, true, true, false, false],
    'the missed ones came with the resume, the others live');
  assert.equal(await bob.evaluate(() => window.rec.refetches), 0, 'nothing had to be refetched');
  const connects = await bob.evaluate(() => window.rec.events.filter((e) => e.type === 'connected').map((e) => e.client));
  assert.equal(connects.length, 2);
  assert.notEqual(connects[0], connects[1], 'a new connection');
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context().close();
  await bob.context().close();
});

test('a 41xx close (disconnected through the server API) is final: no reconnect', { timeout: TEST_TIMEOUT_MS }, async () => {
  const bob = await openHarness();
  await bob.evaluate(() => harness.connect('bob-41xx'));
  await bob.evaluate(() => harness.subscribe('lobby'));
  const { closed_here: closed } = await api('POST', '/users/bob-41xx/disconnect');
  assert.equal(closed, 1);
  await waitForEvent(bob, 'disconnected', { code: 4103 });
  const { events, state, reconnectPending } = await bob.evaluate(() => ({
    events: window.rec.events,
    state: harness.state(),
    reconnectPending: client._timers.reconnect !== null,
  }));
  const gone = events.find((e) => e.type === 'disconnected');
  assert.equal(gone.reconnect, false);
  assert.equal(state, 'disconnected');
  assert.equal(reconnectPending, false);
  assert.equal(events.filter((e) => e.type === 'connecting').length, 1, 'only the first connect');
  const { members } = await api('GET', '/channels/lobby/presence');
  assert.ok(!members.some((m) => m.user === 'bob-41xx'));
  assert.deepEqual(bob.errors, []);
  await bob.context().close();
});

test('a short-lived token is refreshed on the live connection', { timeout: TEST_TIMEOUT_MS }, async () => {
  const page = await openHarness();
  await page.evaluate(() => harness.connect('carol', { ttl: 2 }));
  // Each token lives 2 s (plus the hub's 5 s leeway); two refreshes in a row on one socket.
  await page.waitForFunction(() => window.rec.events.filter((e) => e.type === 'refreshed').length >= 2);
  const events = await page.evaluate(() => window.rec.events);
  assert.deepEqual(events.filter((e) => e.type === 'disconnected' || e.type === 'error'), []);
  assert.equal(events.filter((e) => e.type === 'connected').length, 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the playground page connects, subscribes, publishes and lists presence', { timeout: TEST_TIMEOUT_MS }, async () => {
  const open = async (user) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(GUARD_MS);
    page.errors = [];
    page.on('pageerror', (e) => page.errors.push(String(e)));
    await page.goto(`${base}/`);
    await page.fill('#user', user);
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]');
    await page.fill('#channel', 'playground');
    await page.click('#subscribe');
    await page.waitForSelector(`#presence li[data-user="${user}"]`);
    return page;
  };
  const alice = await open('alice');
  const bob = await open('bob');
  await alice.waitForSelector('#presence li[data-user="bob"]');
  await bob.waitForSelector('#presence li[data-user="alice"]');

  await alice.fill('#data', '{"text": "hi from the playground"}');
  await alice.click('#publish');
  for (const page of [alice, bob]) {
    const entry = await page.waitForSelector('#log [data-kind="publication"]');
    assert.match(await entry.textContent(), /hi from the playground/);
  }
  await bob.click('#disconnect');
  await bob.waitForSelector('#status[data-state="disconnected"]');
  await alice.waitForSelector('#presence li[data-user="bob"]', { state: 'detached' });
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context().close();
  await bob.context().close();
});
