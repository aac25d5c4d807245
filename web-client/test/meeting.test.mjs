// Browser tests of meetings: the real hub binary (signaling and its media plane on one loopback
// UDP port), Debian's Chromium with its fake camera and microphone, and the meeting demo page
// (meeting.html) served by the hub. Each participant is a page in its own browser context. The
// tests act through the page and check what it shows and what its peer connections report
// (getStats). Every wait awaits recorded state (page.waitForFunction); the timeouts only turn a
// hang into a failure.
//
// The hub binary is not built here: `cargo build` first (HUB_BIN overrides the path).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  TEST_TIMEOUT_MS,
  assertNoPageErrors,
  closeAll,
  meetingSuite,
  openMeeting as openPage,
  trackOf,
  until,
} from './meeting-pages.mjs';

const suite = meetingSuite('meeting');

/** A user's page on the meeting demo, joined to `room` (see meeting-pages.mjs). */
function openMeeting(user, room, options) {
  return openPage(suite.browser, suite.base, user, room, options);
}

/** The latest sampled statistic `field` of track `id` on `page` (0 before any sample). */
function stat(page, id, field) {
  return page.evaluate(([t, f]) => window.rec.stats[t]?.[f] ?? 0, [id, field]);
}

/** Waits until the sampled `field` of track `id` on `page` is above `than`; returns it. */
async function statAbove(page, id, field, than) {
  await until(page, ([t, f, n]) => (window.rec.stats[t]?.[f] ?? 0) > n, [id, field, than]);
  return stat(page, id, field);
}

/**
 * Checks that `page` plays `user`'s camera: the tile's video has a size, and the receiver's
 * framesDecoded grows between two reads.
 */
async function assertPlaying(page, user) {
  const video = await trackOf(page, user, 'video');
  await until(page, (u) => document.querySelector(`.tile[data-user="${u}"] video.camera`).videoWidth > 0, user);
  const first = await statAbove(page, video, 'framesDecoded', 0);
  await statAbove(page, video, 'framesDecoded', first);
  return video;
}

/** Checks that `page` receives `user`'s microphone (its packets keep coming). */
async function assertHearing(page, user) {
  const audio = await trackOf(page, user, 'audio');
  const first = await statAbove(page, audio, 'packetsReceived', 0);
  await statAbove(page, audio, 'packetsReceived', first);
  return audio;
}

function meetingState(page) {
  return page.$eval('#meeting-state', (el) => el.dataset.state);
}

test('two participants see and hear each other; chat, hands, mute, host mute, active speaker, screen share', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'pair';
  const alice = await openMeeting('alice', room, { role: 'host' });
  const bob = await openMeeting('bob', room);
  const pages = [alice, bob];

  // One tile each, labelled, on both pages.
  for (const p of pages) {
    await until(p, () => [...document.querySelectorAll('#grid .tile')].map((t) => t.dataset.user).sort().join() === 'alice,bob');
    assert.equal(await p.$eval('.tile[data-user="alice"] .name', (el) => el.textContent), 'alice');
  }
  // Each plays the other's camera and receives the other's microphone.
  const aliceVideo = await assertPlaying(bob, 'alice');
  const aliceAudio = await assertHearing(bob, 'alice');
  await assertPlaying(alice, 'bob');
  await assertHearing(alice, 'bob');

  // In-meeting chat, both ways.
  await alice.fill('#chat-text', 'hello from alice');
  await alice.click('#chat-send');
  await until(bob, () => [...document.querySelectorAll('#chat-log li[data-from="alice"] .text')].some((el) => el.textContent === 'hello from alice'));
  await bob.fill('#chat-text', 'hi alice');
  await bob.click('#chat-send');
  await until(alice, () => [...document.querySelectorAll('#chat-log li[data-from="bob"] .text')].some((el) => el.textContent === 'hi alice'));

  // bob raises his hand; alice (host) sees it and lowers it from his tile.
  await bob.click('#hand');
  await until(alice, () => document.querySelector('.tile[data-user="bob"]').dataset.hand === 'true');
  await alice.click('.tile[data-user="bob"] [data-action="lower-hand"]');
  await until(bob, () => document.getElementById('hand').dataset.raised === 'false');
  assert.ok(await bob.evaluate(() => window.rec.events.some((e) => e.type === 'hand' && !e.raised && e.by === 'alice')));

  // alice mutes her camera: bob is told, and the hub stops forwarding it while her microphone
  // keeps coming. Her audio packets are the clock: the video count must not move while bob
  // receives a hundred more of them (two seconds of Opus).
  await alice.click('#camera-mute');
  await until(bob, () => document.querySelector('.tile[data-user="alice"]').dataset.video === 'muted');
  assert.ok(await bob.evaluate((t) => window.rec.events.some((e) => e.type === 'track_muted' && e.track === t && e.muted && !e.forced), aliceVideo));
  let audioMark = await stat(bob, aliceAudio, 'packetsReceived');
  await statAbove(bob, aliceAudio, 'packetsReceived', audioMark + 50);
  const videoWhileMuted = await stat(bob, aliceVideo, 'packetsReceived');
  const framesWhileMuted = await stat(bob, aliceVideo, 'framesDecoded');
  audioMark = await stat(bob, aliceAudio, 'packetsReceived');
  await statAbove(bob, aliceAudio, 'packetsReceived', audioMark + 100);
  assert.equal(await stat(bob, aliceVideo, 'packetsReceived'), videoWhileMuted, 'muted video still forwarded');
  // Unmuted, her camera plays again.
  await alice.click('#camera-mute');
  await until(bob, () => document.querySelector('.tile[data-user="alice"]').dataset.video === 'on');
  await statAbove(bob, aliceVideo, 'framesDecoded', framesWhileMuted);

  // The host mutes bob's microphone: bob's page shows it muted (forced), alice sees it too.
  await alice.click('.tile[data-user="bob"] [data-action="mute-audio"]');
  await until(bob, () => document.getElementById('mic-mute').dataset.muted === 'true');
  await until(alice, () => document.querySelector('.tile[data-user="bob"]').dataset.audio === 'muted');
  assert.ok(await bob.evaluate(() => window.rec.events.some((e) => e.type === 'track_muted' && e.forced && e.by === 'alice')));
  assert.equal(await bob.evaluate(() => window.meetingDemo.meeting.localTrack('audio').track.enabled), false);

  // Active speaker. Both fake microphones beep alike, and bob's is muted now: alice is the
  // loudest. Bob's page lights her tile, whether the hub chose her before he joined (his join
  // reply carries the speaker) or after (an active_speaker event).
  await until(bob, () => document.querySelector('.tile[data-user="alice"]').dataset.speaking === 'true');
  // She mutes her microphone and he unmutes his: the hub moves the speaker to him, and her page
  // hears of it by an event.
  await alice.click('#mic-mute');
  await until(alice, () => document.getElementById('mic-mute').dataset.muted === 'true');
  await bob.click('#mic-mute');
  await until(bob, () => document.getElementById('mic-mute').dataset.muted === 'false');
  await until(alice, () => document.querySelector('.tile[data-user="bob"]').dataset.speaking === 'true');
  assert.ok(await alice.evaluate(() => window.rec.events.some((e) => e.type === 'active_speaker' && e.user === 'bob')));
  assert.equal(await alice.$eval('.tile[data-user="alice"]', (el) => el.dataset.speaking), 'false');

  // alice shares her screen: a track added on her publisher connection, and on bob's subscriber
  // connection by the hub's next offer; bob plays it beside her camera. She stops: it goes.
  await alice.click('#screen');
  const screen = await trackOf(bob, 'alice', 'screen');
  await until(bob, () => document.querySelector('.tile[data-user="alice"] video.screen').videoWidth > 0);
  await statAbove(bob, screen, 'framesDecoded', await statAbove(bob, screen, 'framesDecoded', 0));
  await alice.click('#screen');
  await until(bob, () => document.querySelector('.tile[data-user="alice"]').dataset.screen === 'off');
  await until(alice, () => window.meetingDemo.meeting.publisher.signalingState === 'stable' && document.getElementById('screen').dataset.on === 'false');
  await statAbove(bob, aliceVideo, 'framesDecoded', await stat(bob, aliceVideo, 'framesDecoded'));

  // bob leaves: alice's grid loses his tile.
  await bob.click('#leave');
  await until(bob, () => document.getElementById('meeting-state').dataset.state === 'left');
  await until(alice, () => document.querySelector('.tile[data-user="bob"]') === null);
  assertNoPageErrors(pages);
  await closeAll(pages);
});

test('three participants: everyone plays everyone; the host removes one, then ends the meeting', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'trio';
  const host = await openMeeting('hana', room, { role: 'host' });
  const ivan = await openMeeting('ivan', room);
  const jo = await openMeeting('jo', room);
  const pages = [host, ivan, jo];
  for (const p of pages) {
    for (const other of pages) if (other !== p) await assertPlaying(p, other.user);
  }
  // A participant has no host controls; the host has them on the others' tiles only.
  assert.equal(await ivan.$eval('.tile[data-user="jo"] .controls', (el) => el.hidden), true);
  assert.equal(await host.$eval('.tile[data-user="jo"] .controls', (el) => el.hidden), false);
  assert.equal(await host.$eval('.tile[data-user="hana"] .controls', (el) => el.hidden), true);

  // The host removes jo: jo's page says so and its connections are closed; the others lose
  // jo's tile and keep playing each other.
  await host.click('.tile[data-user="jo"] [data-action="remove"]');
  await until(jo, () => document.getElementById('meeting-state').dataset.state === 'removed');
  assert.match(await jo.$eval('#meeting-state', (el) => el.textContent), /removed/);
  await until(jo, () => window.rec.pcs.every((pc) => pc.signalingState === 'closed'));
  for (const p of [host, ivan]) await until(p, () => document.querySelector('.tile[data-user="jo"]') === null);
  await assertPlaying(ivan, 'hana');

  // The host ends the meeting: every page still in it sees it ended, its peer connections closed.
  const pcs = await Promise.all([host, ivan].map((p) => p.evaluate(() => window.rec.pcs.length)));
  assert.ok(pcs.every((n) => n === 2), `publisher and subscriber on each page: ${pcs}`);
  await host.click('#end');
  for (const p of [host, ivan]) {
    await until(p, () => document.getElementById('meeting-state').dataset.state === 'ended');
    await until(p, () => window.rec.pcs.every((pc) => pc.signalingState === 'closed' && pc.connectionState === 'closed'));
    assert.equal(await p.$$eval('#grid .tile', (t) => t.length), 0);
  }
  assert.ok(await ivan.evaluate(() => window.rec.events.some((e) => e.type === 'ended' && e.reason === 'host' && e.by === 'hana')));
  assert.equal(await meetingState(jo), 'removed');
  assertNoPageErrors(pages);
  await closeAll(pages);
});

test('a viewer watches but cannot publish', { timeout: TEST_TIMEOUT_MS }, async () => {
  const room = 'webinar';
  const host = await openMeeting('kim', room, { role: 'host' });
  const viewer = await openMeeting('lee', room, { role: 'viewer', camera: false, mic: false });
  const pages = [host, viewer];
  await assertPlaying(viewer, 'kim');
  await viewer.click('#camera');
  await until(viewer, () => document.getElementById('error').dataset.code === 'viewer_cannot_publish');
  // Nothing was added: no local track, no publisher connection, and the host sees no track of lee's.
  assert.equal(await viewer.evaluate(() => window.meetingDemo.meeting.localTracks().length), 0);
  assert.equal(await viewer.evaluate(() => window.meetingDemo.meeting.publisher), null);
  assert.equal(await host.$eval('.tile[data-user="lee"]', (el) => el.dataset.video), 'off');
  assert.equal(await meetingState(viewer), 'joined');
  assertNoPageErrors(pages);
  await closeAll(pages);
});
