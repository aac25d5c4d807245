// Browser tests of simulcast layer switching: a publisher page sends its camera as three layers
// (q/h/f, lib/meeting.js; Chromium's fake camera captures 1280x720, so q is 320x180), a
// subscriber page shows it at a size the test sets by styling its tile, the page tells the hub
// that size (meeting.subscribe max_width/max_height, from its ResizeObserver), and the test reads
// which layer arrives from the subscriber's inbound-rtp frameWidth. A switch must keep the
// decoder going: one SSRC, framesDecoded still growing (the hub rewrites SSRC, sequence numbers
// and timestamps, and starts the new layer on a keyframe).
//
// Chromium starts with the layers its bandwidth estimate allows and adds the others as it ramps
// up (seconds on an idle machine, half a minute on a loaded one), so the publisher's outbound-rtp
// must show every layer moving before a subscriber comes. The hub picks the layer at once going
// down and when it has no estimate of the subscriber's downlink yet; going up it waits for the
// subscriber's REMB to carry the next layer, or probes it (signaling/src/simulcast.rs,
// src/meetings/media.rs).
//
// The hub binary is not built here: `cargo build` first (HUB_BIN overrides the path).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { GUARD_MS, TEST_TIMEOUT_MS, assertNoPageErrors, closeAll, meetingSuite, openMeeting, until } from './meeting-pages.mjs';

/** Chromium adds its upper layers as its estimate ramps up: longer than one ordinary wait. */
const LAYERS_MS = 120_000;
const SAMPLE_EVERY_MS = 200;
/** Frames decoded on a layer before it counts as playing (one second of the fake camera's 20 fps). */
const PLAYING_FRAMES = 20;
/** The camera as the lowest layer carries it (1280x720 / 4), and as the whole capture. */
const SMALL = { width: 320, height: 180 };
const LARGE = { width: 1280, height: 720 };

const suite = meetingSuite('simulcast');

/**
 * Records, in `page`, what its publisher connection sends of the camera: per rid, the latest
 * outbound-rtp frame size and framesSent and whether framesSent grew since the sample before.
 */
function recordLayers(page) {
  return page.evaluate((every) => {
    const rids = {};
    window.layers = rids;
    const sample = async () => {
      const pc = window.meetingDemo.meeting.publisher;
      if (!pc) return;
      for (const s of (await pc.getStats()).values()) {
        if (s.type !== 'outbound-rtp' || s.kind !== 'video' || !s.rid) continue;
        const before = rids[s.rid]?.framesSent ?? 0;
        rids[s.rid] = {
          width: s.frameWidth ?? 0,
          height: s.frameHeight ?? 0,
          framesSent: s.framesSent ?? 0,
          sending: (s.framesSent ?? 0) > before,
          limitation: s.qualityLimitationReason,
        };
      }
    };
    window.layersTimer = setInterval(() => sample().catch(() => {}), every);
  }, SAMPLE_EVERY_MS);
}

/**
 * Records, in `page`, how `user`'s camera arrives: the receiver's latest inbound-rtp (frame size,
 * framesDecoded, SSRC) and Chromium's estimate of the connection's downlink (the REMB it sends),
 * plus `widths`, each change of the decoded frame size with framesDecoded when it was seen.
 */
function recordVideo(page, user) {
  return page.evaluate(([u, every]) => {
    const { meeting } = window.meetingDemo;
    const video = { widths: [] };
    window.video = video;
    const sample = async () => {
      const t = meeting.remoteTracks().find((r) => r.user === u && r.kind === 'video');
      const s = t && (await meeting.trackStats(t.id));
      if (!s || !s.frameWidth) return;
      for (const c of (await meeting.subscriber.getStats()).values()) {
        if (c.type === 'candidate-pair' && c.nominated) video.estimate = c.availableIncomingBitrate;
      }
      Object.assign(video, { width: s.frameWidth, height: s.frameHeight, framesDecoded: s.framesDecoded ?? 0, ssrc: s.ssrc });
      const last = video.widths.at(-1);
      if (last?.width !== s.frameWidth || last?.height !== s.frameHeight) {
        video.widths.push({ width: s.frameWidth, height: s.frameHeight, framesDecoded: video.framesDecoded });
      }
    };
    window.videoTimer = setInterval(() => sample().catch(() => {}), every);
  }, [user, SAMPLE_EVERY_MS]);
}

/**
 * Keeps, on `page.hints`, the size hints the page sends (meeting.subscribe with max_width), each
 * marked `acked` when the hub's reply comes. Must be called before the page connects.
 */
function watchHints(page) {
  page.hints = [];
  page.hintWaiters = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => {
      const m = parse(payload);
      if (m?.op === 'meeting.subscribe' && m.max_width) page.hints.push({ id: m.id, width: m.max_width, height: m.max_height, acked: false });
    });
    ws.on('framereceived', ({ payload }) => {
      const m = parse(payload);
      const hint = m?.type === 'reply' && page.hints.find((h) => h.id === m.id);
      if (!hint) return;
      hint.acked = true;
      for (const w of page.hintWaiters.splice(0)) w();
    });
  });
}

function parse(payload) {
  try {
    return JSON.parse(String(payload));
  } catch {
    return null;
  }
}

/**
 * Resolves once the hub has replied to a hint of `size` that `page` sent after its first `from`
 * hints (fails after GUARD_MS).
 */
function hintAcked(page, { width, height }, from = 0) {
  const acked = () => page.hints.slice(from).some((h) => h.acked && h.width === width && h.height === height);
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`no reply to a size hint ${width}x${height}; hints: ${JSON.stringify(page.hints)}`)), GUARD_MS);
    const check = () => {
      if (!acked()) return page.hintWaiters.push(check);
      clearTimeout(guard);
      resolve();
    };
    check();
  });
}

/** Shows `user`'s camera tile on `page` at `size` CSS pixels (the page's ResizeObserver tells the hub). */
function showCameraAt(page, user, { width, height }) {
  const css = `#grid { display: block; } .tile[data-user="${user}"] { width: ${width}px; height: ${height}px; aspect-ratio: auto; }`;
  return page.evaluate((text) => {
    let style = document.getElementById('test-size');
    if (!style) {
      style = document.createElement('style');
      style.id = 'test-size';
      document.head.append(style);
    }
    style.textContent = text;
  }, css);
}

/** Shows `user`'s camera on subscriber `page` at `size`; resolves once the hub has the new hint. */
async function resize(page, user, size) {
  const from = page.hints.length;
  await showCameraAt(page, user, size);
  await hintAcked(page, size, from);
}

/** A publisher page whose camera is sent on all three layers. */
async function openPublisher(user, room) {
  const page = await openMeeting(suite.browser, suite.base, user, room, { camera: true, mic: false });
  await recordLayers(page);
  await page.waitForFunction(() => ['q', 'h', 'f'].every((r) => window.layers[r]?.sending), null, { timeout: LAYERS_MS })
    .catch(async (e) => assert.fail(`the publisher does not send all three layers: ${JSON.stringify(await layersOf(page))} (${e.message})`));
  return page;
}

/** A subscriber page (publishing nothing) showing `publisher`'s camera at `size` from the start. */
async function openSubscriber(user, room, publisher, size) {
  const page = await openMeeting(suite.browser, suite.base, user, room, {
    camera: false,
    mic: false,
    beforeJoin: (p) => {
      watchHints(p);
      return showCameraAt(p, publisher, size);
    },
  });
  await recordVideo(page, publisher);
  return page;
}

function layersOf(page) {
  return page.evaluate(() => window.layers).catch(() => null);
}

function videoOf(page) {
  return page.evaluate(() => window.video).catch(() => null);
}

/**
 * Waits until subscriber `sub` decodes frames of a width that `fits` (`{max}` or `{above}`) and
 * has decoded PLAYING_FRAMES more since that width first appeared; returns the recorded video. A
 * failure tells what the subscriber got, the hints it sent, and what publisher `pub` sends.
 */
async function playsLayer(sub, pub, fits, what) {
  try {
    await until(sub, ([f, n]) => {
      const v = window.video;
      const last = v?.widths.at(-1);
      const ok = f.max !== undefined ? last?.width <= f.max : last?.width > f.above;
      return ok && v.framesDecoded >= last.framesDecoded + n;
    }, [fits, PLAYING_FRAMES]);
  } catch (e) {
    const v = await videoOf(sub);
    assert.fail(`${what}: ${e.message}\nsubscriber: ${JSON.stringify(v)}\nhints: ${JSON.stringify(sub.hints)}\npublisher layers: ${JSON.stringify(await layersOf(pub))}`);
  }
  return videoOf(sub);
}

async function stopRecording(pages) {
  for (const p of pages) {
    await p.evaluate(() => {
      clearInterval(window.layersTimer);
      clearInterval(window.videoTimer);
    }).catch(() => {});
  }
}

test('shown large a subscriber gets an upper layer; shown small it switches down to the lowest and keeps decoding', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const pages = [];
  try {
    const pub = await openPublisher('pia', 'down');
    pages.push(pub);
    t.diagnostic(`publisher layers: ${JSON.stringify(await layersOf(pub))}`);
    // Large from the first hint on: with no estimate of its downlink yet, the hub gives the
    // subscriber the layer covering the size at once (REMB comes about 5 s after its first packet).
    const sub = await openSubscriber('sol', 'down', 'pia', LARGE);
    pages.push(sub);
    await hintAcked(sub, LARGE);
    assert.deepEqual([sub.hints[0].width, sub.hints[0].height], [LARGE.width, LARGE.height], 'the first size hint is the large one');
    const large = await playsLayer(sub, pub, { above: SMALL.width }, `shown at ${LARGE.width}x${LARGE.height}`);

    await resize(sub, 'pia', SMALL);
    const small = await playsLayer(sub, pub, { max: SMALL.width }, `shown at ${SMALL.width}x${SMALL.height} after ${large.width}x${large.height}`);
    t.diagnostic(`widths decoded: ${JSON.stringify(small.widths)}; downlink estimate ${small.estimate ?? 'none yet'} bps`);
    // One stream across the switch, decoded on (playsLayer saw framesDecoded grow on the new layer).
    assert.equal(small.ssrc, large.ssrc, 'the SSRC changed with the layer');
    assert.ok(small.framesDecoded > large.framesDecoded);
    assert.deepEqual(await sub.evaluate(() => window.rec.events.filter((e) => e.type === 'error')), []);
    assertNoPageErrors(pages);
  } finally {
    await stopRecording(pages);
    await closeAll(pages);
  }
});

// The subscriber's REMB never shows room for the next layer by itself (Chromium keeps it within
// 1.5x what it receives plus 10 kbps, about 240 kbps on q): the hub steps up by probing, trying
// the next layer once the estimate has held 1.3x the current layer's measured rate for 3 s.
test('shown small, then large, then small, a subscriber switches up and back down', {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  const pages = [];
  try {
    const pub = await openPublisher('pim', 'updown');
    pages.push(pub);
    const sub = await openSubscriber('sid', 'updown', 'pim', SMALL);
    pages.push(sub);
    await hintAcked(sub, SMALL);
    const small = await playsLayer(sub, pub, { max: SMALL.width }, `shown at ${SMALL.width}x${SMALL.height}`);

    await resize(sub, 'pim', LARGE);
    const large = await playsLayer(sub, pub, { above: SMALL.width }, `shown at ${LARGE.width}x${LARGE.height} after ${small.width}x${small.height}`);
    assert.equal(large.ssrc, small.ssrc, 'the SSRC changed with the layer');

    await resize(sub, 'pim', SMALL);
    const again = await playsLayer(sub, pub, { max: SMALL.width }, `shown at ${SMALL.width}x${SMALL.height} again after ${large.width}x${large.height}`);
    t.diagnostic(`widths decoded: ${JSON.stringify(again.widths)}; downlink estimate ${again.estimate ?? 'none yet'} bps`);
    assert.equal(again.ssrc, small.ssrc, 'the SSRC changed with the layer');
    assertNoPageErrors(pages);
  } finally {
    await stopRecording(pages);
    await closeAll(pages);
  }
});
