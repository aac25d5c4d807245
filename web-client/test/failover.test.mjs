// Failover between cluster nodes, in a real browser: a real `redis-server` on a free loopback
// port, two hub nodes linked by it (cluster.mode = "redis", each with its own SQLite store), and a
// page whose SDK is given both nodes' endpoints. The node under the page is killed (SIGKILL) while
// publications keep coming through the other node's server API; the SDK must move to the other
// node by itself and resume from its offset there (history lives in Redis), so the page ends with
// every publication exactly once, in order.
//
// Needs `redis-server` on the PATH (REDIS_SERVER_BIN overrides it): without it this test fails,
// it does not skip. The hub binary is not built here: `cargo build` first (HUB_BIN overrides it).
// Every wait awaits recorded state (page.waitForFunction); the timeouts only turn a hang into a
// failure.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium } from './chromium.mjs';
import { callApi, killProcess, startNode, startRedis, stopProcess } from './hub-process.mjs';

/** Failure guard for one wait; generous for a loaded 2-core machine. */
const GUARD_MS = 30_000;
const TEST_TIMEOUT_MS = 180_000;

let tmp;
let redis;
let nodeA;
let nodeB;
let browser;

/** Publishes through `node`'s server API. */
function publish(node, channel, data) {
  return callApi(node.base, 'POST', '/publish', { channel, data });
}

async function waitForPubs(page, channel, n) {
  await page.waitForFunction(([c, k]) => (window.rec.pubs[c]?.length ?? 0) >= k, [channel, n]);
  return page.evaluate((c) => window.rec.pubs[c], channel);
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'hub-failover-'));
  redis = await startRedis(GUARD_MS);
  nodeA = await startNode(tmp, GUARD_MS, 'node-a', redis.url);
  nodeB = await startNode(tmp, GUARD_MS, 'node-b', redis.url);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopProcess(nodeA?.child, GUARD_MS);
  await stopProcess(nodeB?.child, GUARD_MS);
  await stopProcess(redis?.child, GUARD_MS);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the node under a page dies: the SDK fails over to the other node and resumes, nothing lost or twice', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const channel = 'failover-lobby';
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(GUARD_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Served by node A; once A is dead the loaded page keeps running.
  await page.goto(`${nodeA.base}/test/harness.html`);
  await page.waitForFunction(() => window.harness !== undefined);

  const first = await page.evaluate((urls) => harness.connect('fay', { urls }), [nodeA.ws, nodeB.ws]);
  assert.equal(first.node, nodeA.id, 'the first endpoint is tried first');
  await page.evaluate((c) => harness.subscribe(c), channel);

  // Live through A, published on A and on B (B's reach A through Redis).
  let seq = 0;
  for (; seq < 3; ) await publish(nodeA, channel, { seq: ++seq });
  for (; seq < 6; ) await publish(nodeB, channel, { seq: ++seq });
  await waitForPubs(page, channel, 6);

  // B's API keeps publishing while A is killed under the page.
  const streamEnd = 40;
  const stream = (async () => {
    for (; seq < streamEnd; ) await publish(nodeB, channel, { seq: ++seq });
  })();
  await waitForPubs(page, channel, 8);
  await killProcess(nodeA.child);
  await stream;
  // And right after A's death, before the page can be back (usually: nothing asserts on it).
  for (; seq < 50; ) await publish(nodeB, channel, { seq: ++seq });

  // The SDK moves to B by itself and resumes there.
  await page.waitForFunction((id) => window.rec.events.some((e) => e.type === 'connected' && e.node === id), nodeB.id);
  for (; seq < 55; ) await publish(nodeB, channel, { seq: ++seq });
  const pubs = await waitForPubs(page, channel, seq);

  assert.deepEqual(
    pubs.map((p) => p.data.seq),
    Array.from({ length: seq }, (_, i) => i + 1),
    'every publication exactly once, in order',
  );
  for (let i = 1; i < pubs.length; i++) assert.ok(pubs[i].offset > pubs[i - 1].offset, 'offsets increase');
  assert.equal(await page.evaluate(() => window.rec.refetches), 0, 'nothing had to be refetched');

  const { events, subscribed, state, url } = await page.evaluate((c) => ({
    events: window.rec.events,
    subscribed: window.rec.subscribed[c],
    state: harness.state(),
    url: client.url,
  }), channel);
  const connects = events.filter((e) => e.type === 'connected');
  assert.equal(connects[0].node, nodeA.id);
  assert.equal(connects[0].url, nodeA.ws);
  assert.equal(connects.at(-1).node, nodeB.id, 'the connection is now on node B');
  assert.equal(connects.at(-1).url, nodeB.ws);
  assert.notEqual(connects.at(-1).client, connects[0].client);
  assert.equal(state, 'connected');
  assert.equal(url, nodeB.ws);
  const drop = events.find((e) => e.type === 'disconnected');
  assert.equal(drop.reconnect, true, `A's death is a drop to recover from: ${JSON.stringify(drop)}`);
  // The first subscribe was a fresh start; the one on B resumed from the offset reached on A.
  assert.equal(subscribed[0].recovered, false);
  assert.equal(subscribed.at(-1).recovered, true, `resumed on B: ${JSON.stringify(subscribed)}`);
  assert.equal(subscribed.at(-1).position.epoch, subscribed[0].position.epoch, 'one stream on both nodes');

  // B's presence has the page's new connection.
  const { members } = await callApi(nodeB.base, 'GET', `/channels/${channel}/presence`);
  assert.ok(members.some((m) => m.client === connects.at(-1).client), JSON.stringify(members));

  const recovered = pubs.filter((p) => p.recovered).length;
  t.diagnostic(`${connects.length} connects, ${events.filter((e) => e.type === 'connecting').length} attempts; ` +
    `${recovered} of ${pubs.length} publications came with the resume on B`);
  assert.deepEqual(errors, []);
  await context.close();
});
