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
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium } from './chromium.mjs';

const WEB_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const HUB_BIN = process.env.HUB_BIN ? resolve(process.env.HUB_BIN) : resolve(WEB_ROOT, '../target/debug/hub');
const REDIS_SERVER = process.env.REDIS_SERVER_BIN || 'redis-server';
const CONFIG = resolve(WEB_ROOT, '../config/default.toml');
const API_KEY = 'dev-api-key-change-me-0123456789';
/** Failure guard for one wait; generous for a loaded 2-core machine. */
const GUARD_MS = 30_000;
const TEST_TIMEOUT_MS = 180_000;

/** Every process this file starts, so that they are all ended, even if the test run dies. */
const children = new Set();
let tmp;
let redis;
let nodeA;
let nodeB;
let browser;

process.on('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
});

/**
 * Spawns `cmd` and resolves with `{child, match}` once a stdout line matches `pattern`. stdout is
 * read to the end, so the child never blocks on a full pipe.
 */
function startProcess(name, cmd, args, pattern, env = process.env) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return new Promise((resolveStart, reject) => {
    const guard = setTimeout(() => reject(new Error(`${name} did not get ready in time`)), GUARD_MS);
    child.once('error', (e) => {
      clearTimeout(guard);
      reject(e.code === 'ENOENT' ? new Error(`${name}: ${cmd} not found: ${e.message}`) : e);
    });
    const early = (code, signal) => (clearTimeout(guard), reject(new Error(`${name} exited early (${code ?? signal})`)));
    child.once('exit', early);
    let started = false;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = started ? null : pattern.exec(line);
      if (match) {
        started = true;
        clearTimeout(guard);
        child.off('exit', early);
        resolveStart({ child, match });
      }
    });
  });
}

/** Ends a child by its PID (`signal`, then SIGKILL after the guard time) and waits for it. */
async function stopProcess(child, signal = 'SIGTERM') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, signal);
  const guard = setTimeout(() => child.exitCode === null && process.kill(child.pid, 'SIGKILL'), GUARD_MS);
  await exited;
  clearTimeout(guard);
}

/** A loopback port nothing listens on now (the Rust tests' harness does the same). */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--logfile', ''];
  try {
    const { child } = await startProcess('redis-server', REDIS_SERVER, args, /Ready to accept connections/);
    return { child, url: `redis://127.0.0.1:${port}` };
  } catch (e) {
    throw new Error(
      `cannot start redis-server (${e.message}). This test needs a real Redis: install it ` +
        '(apt-get install redis-server; .ci/run does) or set REDIS_SERVER_BIN.',
    );
  }
}

/** The hub reads HUB_* variables as config keys and refuses unknown ones such as HUB_BIN. */
function hubEnv() {
  const env = { ...process.env, HUB_LOG: process.env.HUB_LOG ?? 'warn' };
  delete env.HUB_BIN;
  return env;
}

/** Starts a cluster node named `id` on the test's Redis, with its own SQLite store. */
async function startNode(id) {
  if (!existsSync(HUB_BIN)) {
    throw new Error(`hub binary not found at ${HUB_BIN}: run \`cargo build\` in the repository root or set HUB_BIN`);
  }
  const set = [
    `web_root=${JSON.stringify(WEB_ROOT)}`,
    `node_id=${JSON.stringify(id)}`,
    'cluster.mode="redis"',
    `cluster.redis_urls=[${JSON.stringify(redis.url)}]`,
    `store.url=${JSON.stringify(`sqlite://${join(tmp, `${id}.db`)}`)}`,
  ];
  const args = ['--config', CONFIG, '--listen', '127.0.0.1:0', ...set.flatMap((s) => ['--set', s])];
  const { child, match } = await startProcess(`hub ${id}`, HUB_BIN, args, /^hub listening on (\S+)/, hubEnv());
  const addr = match[1];
  return { id, child, base: `http://${addr}`, ws: `ws://${addr}/ws` };
}

/** Publishes through `node`'s server API. */
async function publish(node, channel, data) {
  const res = await fetch(`${node.base}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const json = await res.json();
  assert.ok(res.ok, `publish through ${node.id}: HTTP ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function waitForPubs(page, channel, n) {
  await page.waitForFunction(([c, k]) => (window.rec.pubs[c]?.length ?? 0) >= k, [channel, n]);
  return page.evaluate((c) => window.rec.pubs[c], channel);
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'hub-failover-'));
  redis = await startRedis();
  nodeA = await startNode('node-a');
  nodeB = await startNode('node-b');
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopProcess(nodeA?.child);
  await stopProcess(nodeB?.child);
  await stopProcess(redis?.child);
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
  const aGone = new Promise((r) => nodeA.child.once('exit', r));
  nodeA.child.kill('SIGKILL');
  await aGone;
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
  const res = await fetch(`${nodeB.base}/api/v1/channels/${channel}/presence`, {
    headers: { authorization: `Bearer ${API_KEY}` },
  });
  const { members } = await res.json();
  assert.ok(members.some((m) => m.client === connects.at(-1).client), JSON.stringify(members));

  const recovered = pubs.filter((p) => p.recovered).length;
  t.diagnostic(`${connects.length} connects, ${events.filter((e) => e.type === 'connecting').length} attempts; ` +
    `${recovered} of ${pubs.length} publications came with the resume on B`);
  assert.deepEqual(errors, []);
  await context.close();
});
