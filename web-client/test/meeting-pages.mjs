// Meeting pages for the browser tests (meeting.test.mjs, simulcast.test.mjs): Debian's Chromium
// with its fake camera and microphone, and the meeting demo page (meeting.html) served by the hub,
// one browser context per participant. Every wait awaits recorded state (page.waitForFunction);
// the timeouts only turn a hang into a failure.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';

import { launchChromium } from './chromium.mjs';
import { startHub, stopHub } from './hub-process.mjs';

/** Failure guard for one wait; generous for a loaded 2-core machine running several browsers. */
export const GUARD_MS = 45_000;
export const TEST_TIMEOUT_MS = 300_000;
/** How often the pages sample their receivers' statistics. */
const STATS_EVERY_MS = 200;

/** Headless Chromium whose getUserMedia and getDisplayMedia get fake devices without asking. */
export function launchMeetingBrowser() {
  return launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
}

/**
 * A test file's hub and browser: registers `before` (a hub on a SQLite store in a temporary folder
 * named after `name`, and a meeting browser) and `after` (both stopped, the folder removed).
 * Returns the suite, whose `hub`, `base` (the hub's HTTP origin) and `browser` are set once
 * `before` has run.
 */
export function meetingSuite(name) {
  const suite = { tmp: null, hub: null, base: null, browser: null };
  before(async () => {
    suite.tmp = mkdtempSync(join(tmpdir(), `hub-${name}-test-`));
    suite.hub = await startHub(suite.tmp, GUARD_MS);
    suite.base = `http://${suite.hub.addr}`;
    suite.browser = await launchMeetingBrowser();
  });
  after(async () => {
    await suite.browser?.close();
    await stopHub(suite.hub, GUARD_MS);
    if (suite.tmp) rmSync(suite.tmp, { recursive: true, force: true });
  });
  return suite;
}

/**
 * A user's browser (its own context of `browser`) on the meeting page of the hub at `base`,
 * joined to `room`, with what it publishes announced and answered. In the page, `window.rec`
 * records the meeting's events, its two peer connections, and (every STATS_EVERY_MS) the
 * inbound-rtp statistics of every track it receives, by room track id. `beforeJoin(page)` runs
 * on the loaded page before it joins.
 */
export async function openMeeting(browser, base, user, room, { role = 'participant', camera = true, mic = true, beforeJoin } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(GUARD_MS);
  page.user = user;
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(`${base}/meeting.html`);
  await beforeJoin?.(page);
  await page.fill('#me', user);
  await page.fill('#room', room);
  await page.selectOption('#role', role);
  await page.setChecked('#with-camera', camera);
  await page.setChecked('#with-mic', mic);
  await page.click('#join');
  await until(page, () => document.getElementById('meeting-state').dataset.state === 'joined');
  const kinds = [...(camera ? ['video'] : []), ...(mic ? ['audio'] : [])];
  if (role !== 'viewer') {
    // Published: announced (a room track id) and the offer carrying it answered (stable).
    await until(page, (ks) => {
      const m = window.meetingDemo.meeting;
      return ks.every((k) => m.localTrack(k)?.id) && (ks.length === 0 || m.publisher?.signalingState === 'stable');
    }, kinds);
  }
  await page.evaluate((every) => {
    const { meeting } = window.meetingDemo;
    const rec = { events: [], stats: {}, pcs: [meeting.publisher, meeting.subscriber].filter(Boolean) };
    window.rec = rec;
    for (const type of ['state', 'track_muted', 'active_speaker', 'chat', 'hand', 'error', 'ended', 'removed']) {
      meeting.on(type, (e) => rec.events.push({ type, ...(e instanceof Error ? { code: e.code, message: e.message } : e) }));
    }
    // The publisher connection may come later (a viewer has none; a page may publish later).
    meeting.on('local', () => meeting.publisher && !rec.pcs.includes(meeting.publisher) && rec.pcs.push(meeting.publisher));
    const sample = async () => {
      for (const t of meeting.remoteTracks()) {
        const s = await meeting.trackStats(t.id);
        if (s) rec.stats[t.id] = { kind: t.kind, user: t.user, framesDecoded: s.framesDecoded ?? 0, packetsReceived: s.packetsReceived ?? 0 };
      }
    };
    rec.timer = setInterval(() => sample().catch(() => {}), every);
  }, STATS_EVERY_MS);
  return page;
}

/** Waits until `fn(arg)`, evaluated in the page, is truthy. */
export function until(page, fn, arg) {
  return page.waitForFunction(fn, arg);
}

/** The room track id of `user`'s track of `kind` as `page` shows it (waits until it is there). */
export async function trackOf(page, user, kind) {
  const attr = `${kind}Track`;
  await until(page, ([u, a]) => document.querySelector(`.tile[data-user="${u}"]`)?.dataset[a], [user, attr]);
  return page.$eval(`.tile[data-user="${user}"]`, (el, a) => el.dataset[a], attr);
}

/**
 * Waits until `page` decodes `user`'s camera now: the frames its current receiver of that track
 * decoded grow between two reads (read afresh, not from the sampled `rec.stats`, so a track of an
 * earlier session cannot stand in). Returns the room track id.
 */
export async function decodingNow(page, user) {
  const id = await trackOf(page, user, 'video');
  // Evaluated in the page.
  const decoded = async (t) => (await window.meetingDemo.meeting.trackStats(t))?.framesDecoded ?? 0;
  const above = async ([t, n]) => ((await window.meetingDemo.meeting.trackStats(t))?.framesDecoded ?? 0) > n;
  await until(page, above, [id, 0]);
  await until(page, above, [id, await page.evaluate(decoded, id)]);
  return id;
}

export async function closeAll(pages) {
  for (const p of pages) {
    await p.evaluate(() => clearInterval(window.rec?.timer)).catch(() => {});
    await p.context().close();
  }
}

export function assertNoPageErrors(pages) {
  for (const p of pages) assert.deepEqual(p.errors, [], `page errors on ${p.user}`);
}
