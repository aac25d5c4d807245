// The real hub binary for browser tests: started on an ephemeral loopback port with a SQLite store
// in `dir` (and its media on an ephemeral UDP port), stopped by SIGTERM. Shared by the test files
// that drive pages; the binary is not built here (`cargo build` first; HUB_BIN overrides the path).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const WEB_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const HUB_BIN = process.env.HUB_BIN ? resolve(process.env.HUB_BIN) : resolve(WEB_ROOT, '../target/debug/hub');
const CONFIG = resolve(WEB_ROOT, '../config/default.toml');

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  }
});

/** The hub reads HUB_* variables as config keys and refuses unknown ones such as HUB_BIN. */
function hubEnv() {
  const env = { ...process.env, HUB_LOG: process.env.HUB_LOG ?? 'warn' };
  delete env.HUB_BIN;
  return env;
}

/** Starts the hub; resolves with `{child, addr}` once it prints `hub listening on ADDR`. */
export function startHub(dir, guardMs) {
  if (!existsSync(HUB_BIN)) {
    throw new Error(`hub binary not found at ${HUB_BIN}: run \`cargo build\` in the repository root or set HUB_BIN`);
  }
  const args = [
    '--config', CONFIG,
    '--listen', '127.0.0.1:0',
    '--set', `web_root=${JSON.stringify(WEB_ROOT)}`,
    '--set', `store.url=sqlite://${join(dir, 'hub.db')}`,
    '--set', 'media.bind="127.0.0.1:0"',
  ];
  const child = spawn(HUB_BIN, args, { stdio: ['ignore', 'pipe', 'inherit'], env: hubEnv() });
  running.add(child);
  return new Promise((resolveAddr, reject) => {
    const guard = setTimeout(() => reject(new Error('hub did not report its address in time')), guardMs);
    child.once('error', (e) => (clearTimeout(guard), reject(e)));
    child.once('exit', (code) => (clearTimeout(guard), reject(new Error(`hub exited early with ${code}`))));
    // Reading every line also keeps the pipe drained, so the hub never blocks on stdout.
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^hub listening on (\S+)/.exec(line);
      if (m) {
        clearTimeout(guard);
        child.removeAllListeners('exit');
        resolveAddr({ child, addr: m[1] });
      }
    });
  });
}

/** Stops a hub from `startHub` (SIGTERM, SIGKILL after `guardMs`). */
export async function stopHub(hub, guardMs) {
  if (!hub || hub.child.exitCode !== null) return;
  const exited = new Promise((r) => hub.child.once('exit', r));
  process.kill(hub.child.pid, 'SIGTERM');
  const guard = setTimeout(() => hub.child.exitCode === null && process.kill(hub.child.pid, 'SIGKILL'), guardMs);
  await exited;
  clearTimeout(guard);
  running.delete(hub.child);
}
