// The real processes of the browser tests: the hub binary on an ephemeral loopback port with a
// SQLite store in a test's folder (and its media on an ephemeral UDP port), and `redis-server` for
// the cluster tests. Every process started here is ended by PID when the test run exits. The hub
// binary is not built here (`cargo build` first; HUB_BIN overrides the path); REDIS_SERVER_BIN
// overrides `redis-server`.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const WEB_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const HUB_BIN = process.env.HUB_BIN ? resolve(process.env.HUB_BIN) : resolve(WEB_ROOT, '../target/debug/hub');
const REDIS_SERVER = process.env.REDIS_SERVER_BIN || 'redis-server';
const CONFIG = resolve(WEB_ROOT, '../config/default.toml');
export const API_KEY = 'dev-api-key-change-me-0123456789';

/** Every process started here, so that they are all ended, even if the test run dies. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  }
});

/**
 * Spawns `cmd` and resolves with `{child, match}` once a stdout line matches `pattern` (within
 * `guardMs`). stdout is read to the end, so the child never blocks on a full pipe.
 */
export function startProcess(name, cmd, args, pattern, { env = process.env, guardMs }) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return new Promise((resolveStart, reject) => {
    const guard = setTimeout(() => reject(new Error(`${name} did not get ready in time`)), guardMs);
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

/** Ends a child by its PID (`signal`, then SIGKILL after `guardMs`) and waits for it. */
export async function stopProcess(child, guardMs, signal = 'SIGTERM') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, signal);
  const guard = setTimeout(() => child.exitCode === null && process.kill(child.pid, 'SIGKILL'), guardMs);
  await exited;
  clearTimeout(guard);
}

/** A loopback port nothing listens on now (the Rust tests' harness does the same). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** A `redis-server` without persistence on a free port: `{child, url}`. */
export async function startRedis(guardMs) {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--logfile', ''];
  try {
    const { child } = await startProcess('redis-server', REDIS_SERVER, args, /Ready to accept connections/, { guardMs });
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

/**
 * Starts the hub with its store at `dir/{name}.db` and `set` as extra `--set` overrides; resolves
 * with `{child, addr, base, ws}` once it prints `hub listening on ADDR`.
 */
export async function startHub(dir, guardMs, { name = 'hub', set = [] } = {}) {
  if (!existsSync(HUB_BIN)) {
    throw new Error(`hub binary not found at ${HUB_BIN}: run \`cargo build\` in the repository root or set HUB_BIN`);
  }
  const all = [
    `web_root=${JSON.stringify(WEB_ROOT)}`,
    `store.url=${JSON.stringify(`sqlite://${join(dir, `${name}.db`)}`)}`,
    'media.bind="127.0.0.1:0"',
    ...set,
  ];
  const args = ['--config', CONFIG, '--listen', '127.0.0.1:0', ...all.flatMap((s) => ['--set', s])];
  const { child, match } = await startProcess(name, HUB_BIN, args, /^hub listening on (\S+)/, { env: hubEnv(), guardMs });
  const addr = match[1];
  return { child, addr, base: `http://${addr}`, ws: `ws://${addr}/ws` };
}

/** A cluster node `id` of the hub on the Redis at `redisUrl`. */
export function startNode(dir, guardMs, id, redisUrl, set = []) {
  const cluster = [`node_id=${JSON.stringify(id)}`, 'cluster.mode="redis"', `cluster.redis_urls=[${JSON.stringify(redisUrl)}]`];
  return startHub(dir, guardMs, { name: id, set: [...cluster, ...set] }).then((hub) => ({ id, ...hub }));
}

/** Stops a hub from `startHub` (SIGTERM, SIGKILL after `guardMs`). */
export function stopHub(hub, guardMs) {
  return stopProcess(hub?.child, guardMs);
}

/** Kills a process at once (SIGKILL: no goodbye to anyone) and waits for it to go. */
export async function killProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/** Calls the server API of the hub at `base` (its HTTP origin); fails unless it answers 2xx. */
export async function callApi(base, method, path, body) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${method} ${base}${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
  return json;
}
