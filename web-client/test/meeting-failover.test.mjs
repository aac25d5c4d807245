// Meetings that outlive a lost connection or a lost node, in real browsers: a real `redis-server`,
// two hub nodes linked by it (each with its media on its own loopback UDP port), Debian's Chromium
// with fake devices, the meeting demo page. The SDK's MeetingClient rejoins by itself: after the
// node holding the room is killed (SIGKILL) the room starts again on the live node, and after a
// page's socket drops the page takes its own place in the room again; either way both pages end
// up decoding each other's camera anew. Every wait awaits recorded state (page.waitForFunction);
// the timeouts only turn a hang into a failure.
//
// Needs `redis-server` (REDIS_SERVER_BIN overrides it); the hub binary is not built here.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { callApi, killProcess, startNode, startRedis, stopProcess } from './hub-process.mjs';
import {
  GUARD_MS,
  TEST_TIMEOUT_MS,
  assertNoPageErrors,
  closeAll,
  decodingNow,
  launchMeetingBrowser,
  openMeeting,
  until,
} from './meeting-pages.mjs';

let tmp;
let redis;
let nodeA;
let nodeB;
let browser;

/** A short node ttl: a killed node is known to be gone within about 2 s. */
const FAST_TTL = 'cluster.node_ttl="2s"';

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'hub-meeting-failover-'));
  redis = await startRedis(GUARD_MS);
  nodeA = await startNode(tmp, GUARD_MS, 'meet-a', redis.url, [FAST_TTL]);
  nodeB = await startNode(tmp, GUARD_MS, 'meet-b', redis.url, [FAST_TTL]);
  browser = await launchMeetingBrowser();
});

after(async () => {
  await browser?.close();
  for (const child of [nodeA?.child, nodeB?.child, redis?.child]) await stopProcess(child, GUARD_MS);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function api(node, method, path, body) {
  return callApi(node.base, method, path, body);
}

/**
 * Waits until `page` went through `rejoining` (for `reason`) and is joined again, publishing its
 * camera and microphone anew (announced and answered).
 */
async function rejoined(page, reason) {
  await until(page, (why) => {
    const states = window.rec.events.filter((e) => e.type === 'state');
    const at = states.findLastIndex((e) => e.state === 'rejoining' && e.reason === why);
    const m = window.meetingDemo.meeting;
    return at >= 0 && states.at(-1).state === 'joined' && m.localTrack('video')?.id && m.localTrack('audio')?.id &&
      m.publisher?.signalingState === 'stable';
  }, reason);
}

function usersIn(room) {
  return room.participants.map((p) => p.user).sort();
}

test('the node holding the room dies: both pages rejoin, the room starts on the live node as it was', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const room = 'survivor';
  // Made on A, so A holds it; both pages are served by (and connected to) B.
  await api(nodeA, 'POST', '/rooms', { id: room, name: 'Survivor', max_participants: 4 });
  const alice = await openMeeting(browser, nodeB.base, 'alice', room);
  const bob = await openMeeting(browser, nodeB.base, 'bob', room);
  await decodingNow(bob, 'alice');
  await decodingNow(alice, 'bob');
  assert.deepEqual(usersIn(await api(nodeA, 'GET', `/rooms/${room}`)), ['alice', 'bob'], 'the room is on A');

  const killedAt = Date.now();
  await killProcess(nodeA.child);
  for (const page of [alice, bob]) await rejoined(page, 'node_lost');
  const rejoinedAt = Date.now();
  await decodingNow(bob, 'alice');
  await decodingNow(alice, 'bob');
  // A figure for the notes, not a check: node_ttl 2 s bounds most of it.
  t.diagnostic(`kill to both rejoined: ${rejoinedAt - killedAt} ms; to both decoding again: ${Date.now() - killedAt} ms`);

  const moved = await api(nodeB, 'GET', `/rooms/${room}`);
  assert.deepEqual(usersIn(moved), ['alice', 'bob']);
  assert.equal(moved.name, 'Survivor', 'started again with the options it was created with');
  assert.equal(moved.max_participants, 4);
  for (const page of [alice, bob]) {
    const states = await page.evaluate(() => window.rec.events.filter((e) => e.type === 'state').map((e) => e.state));
    assert.ok(!states.includes('ended') && !states.includes('left'), `${page.user}: ${states}`);
    assert.equal(await page.$eval('#meeting-state', (el) => el.dataset.state), 'joined');
  }
  assertNoPageErrors([alice, bob]);
  await closeAll([alice, bob]);
});

test('the node holding the room shuts down (SIGTERM): both pages rejoin on the live node at once', { timeout: TEST_TIMEOUT_MS }, async () => {
  // A long node ttl: the others would not miss it within the test; only its own shutdown tells.
  const nodeC = await startNode(tmp, GUARD_MS, 'meet-c', redis.url, ['cluster.node_ttl="120s"']);
  const room = 'deploy';
  await api(nodeC, 'POST', '/rooms', { id: room, name: 'Deploy' });
  const alice = await openMeeting(browser, nodeB.base, 'alice', room);
  const bob = await openMeeting(browser, nodeB.base, 'bob', room);
  await decodingNow(bob, 'alice');
  assert.deepEqual(usersIn(await api(nodeC, 'GET', `/rooms/${room}`)), ['alice', 'bob'], 'the room is on C');

  await stopProcess(nodeC.child, GUARD_MS);
  for (const page of [alice, bob]) await rejoined(page, 'node_lost');
  await decodingNow(bob, 'alice');
  await decodingNow(alice, 'bob');
  const moved = await api(nodeB, 'GET', `/rooms/${room}`);
  assert.deepEqual(usersIn(moved), ['alice', 'bob']);
  assert.equal(moved.name, 'Deploy');
  assertNoPageErrors([alice, bob]);
  await closeAll([alice, bob]);
});

test('a page whose socket drops takes its own place in the room again; a second tab takes it over', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'steady';
  const alice = await openMeeting(browser, nodeB.base, 'alice', room);
  const bob = await openMeeting(browser, nodeB.base, 'bob', room);
  await decodingNow(bob, 'alice');

  await alice.evaluate(() => window.meetingDemo.hub._testDropSocket());
  await rejoined(alice, 'disconnected');
  await decodingNow(bob, 'alice');
  await decodingNow(alice, 'bob');
  assert.deepEqual(usersIn(await api(nodeB, 'GET', `/rooms/${room}`)), ['alice', 'bob'], 'alice is in once');
  const bobStates = await bob.evaluate(() => window.rec.events.filter((e) => e.type === 'state').map((e) => e.state));
  assert.deepEqual(bobStates, [], 'bob stayed joined throughout (no state change after he joined)');

  // Alice opens the meeting in a second tab: it takes her place, the first tab's meeting ends.
  const second = await openMeeting(browser, nodeB.base, 'alice', room);
  await until(alice, () => window.rec.events.some((e) => e.type === 'state' && e.state === 'left' && e.reason === 'replaced'));
  await decodingNow(bob, 'alice');
  await decodingNow(second, 'bob');
  assert.deepEqual(usersIn(await api(nodeB, 'GET', `/rooms/${room}`)), ['alice', 'bob'], 'alice is in once');
  const firstTab = await alice.evaluate(() => window.rec.events.filter((e) => e.type === 'state').map((e) => e.state));
  assert.equal(firstTab.at(-1), 'left', `the first tab does not rejoin: ${firstTab}`);
  assertNoPageErrors([alice, bob, second]);
  await closeAll([alice, bob, second]);
});
