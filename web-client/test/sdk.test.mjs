// Unit tests of the SDK's logic (requests, reconnect policy, resume, dedupe, token refresh) in
// Node, against a scripted stand-in for the browser's WebSocket: the test plays the server, reading
// the frames the SDK sends and answering them. No server, no browser.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HubClient } from '../hub.js';
import { FakeSocket, sockets } from './fake-socket.mjs';

/** Turns a hang (a socket that never comes) into a failure. */
const GUARD = { timeout: 10_000 };

/** Resolves with the next `event` the emitter fires. */
function once(emitter, event) {
  return new Promise((resolve) => {
    const off = emitter.on(event, (arg) => {
      off();
      resolve(arg);
    });
  });
}

function client(options = {}) {
  return new HubClient('ws://hub.test/ws', {
    token: 't1',
    WebSocket: FakeSocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
    ...options,
  });
}

test('connects with the hub.json subprotocol and a connect frame', async () => {
  const hub = client();
  const connected = hub.connect();
  const sock = await sockets.next();
  assert.deepEqual(sock.protocols, ['hub.json']);
  const frame = await sock.accept({ user: 'alice' });
  assert.equal(frame.token, 't1');
  assert.equal(typeof frame.id, 'number');
  const info = await connected;
  assert.equal(info.user, 'alice');
  assert.equal(hub.state, 'connected');
  hub.disconnect();
});

test('requests get their reply or an error with its code, or time out', async () => {
  const hub = client({ timeout: 1000 });
  hub.connect();
  const sock = await sockets.next();
  await sock.accept();

  const published = hub.publish('news', { a: 1 }, 'note');
  const pub = await sock.next();
  assert.deepEqual({ ...pub, id: 0 }, { id: 0, op: 'publish', channel: 'news', data: { a: 1 }, event: 'note' });

  const presence = hub.presence('news');
  const pres = await sock.next();
  assert.ok(pres.id > pub.id, 'ids increase');
  // Replies may come in any order; each settles its own request.
  sock.error(pres.id, 'forbidden', 'may not');
  sock.reply(pub.id, { position: { offset: 1, epoch: 'e' } });
  assert.deepEqual(await published, { position: { offset: 1, epoch: 'e' } });
  await assert.rejects(presence, (e) => e.code === 'forbidden' && e.message === 'may not');

  const timedOut = hub.ping();
  await sock.next();
  await assert.rejects(timedOut, (e) => e.code === 'timeout');
  hub.disconnect();
});

test('resume delivers missed publications once, in order, then live ones', async () => {
  const hub = client();
  const got = [];
  let refetches = 0;
  hub.connect();
  let sock = await sockets.next();
  await sock.accept();
  const sub = hub.subscribe('news', {
    onPublication: (p) => got.push(p.offset),
    onRefetch: () => refetches++,
  });
  let req = await sock.next();
  assert.equal(req.since, undefined);
  sock.reply(req.id, { position: { offset: 5, epoch: 'E' }, recovered: false });
  await sub.ready;
  for (const offset of [6, 7, 7, 5]) sock.push({ type: 'push', channel: 'news', offset, event: 'message', data: {} });
  assert.deepEqual(got, [6, 7]);

  sock.serverClose(4001, 'slow consumer');
  sock = await sockets.next();
  await sock.accept({ client: 'c2' });
  req = await sock.next();
  assert.deepEqual(req.since, { offset: 7, epoch: 'E' });
  const pubs = [7, 8, 9].map((offset) => ({ offset, event: 'message', data: {} }));
  sock.reply(req.id, { position: { offset: 9, epoch: 'E' }, recovered: true, publications: pubs });
  for (const offset of [9, 10]) sock.push({ type: 'push', channel: 'news', offset, event: 'message', data: {} });
  assert.deepEqual(got, [6, 7, 8, 9, 10]);
  assert.equal(refetches, 0);
  hub.disconnect();
});

test('after a reconnect, subscriptions are sent once, those made by a connected listener too', GUARD, async () => {
  const hub = client();
  hub.connect();
  let sock = await sockets.next();
  await sock.accept();
  hub.subscribe('news');
  let req = await sock.next();
  sock.reply(req.id, { recovered: false });

  // A listener that subscribes on every connect (as the meeting client does when it rejoins).
  let joined = null;
  hub.on('connected', () => {
    if (!joined) joined = hub.subscribe('room:r');
  });
  hub._testDropSocket();
  sock = await sockets.next();
  await sock.accept();
  const sent = [await sock.next(), await sock.next()];
  assert.deepEqual(sent.map((f) => `${f.op} ${f.channel}`).sort(), ['subscribe news', 'subscribe room:r']);
  for (const f of sent) sock.reply(f.id, { recovered: false });
  await joined.ready;
  // Nothing more was sent: a ping is the next frame.
  const ping = hub.ping();
  const next = await sock.next();
  assert.equal(next.op, 'ping');
  sock.reply(next.id, {});
  await ping;
  hub.disconnect();
});

test('an unrecoverable gap calls onRefetch and restarts from the new position', async () => {
  const hub = client();
  const got = [];
  let refetches = 0;
  hub.connect();
  let sock = await sockets.next();
  await sock.accept();
  hub.subscribe('news', { onPublication: (p) => got.push(p.offset), onRefetch: () => refetches++ });
  let req = await sock.next();
  sock.reply(req.id, { position: { offset: 50, epoch: 'A' }, recovered: false });

  hub._testDropSocket();
  sock = await sockets.next();
  await sock.accept();
  req = await sock.next();
  assert.deepEqual(req.since, { offset: 50, epoch: 'A' });
  sock.reply(req.id, { position: { offset: 3, epoch: 'B' }, recovered: false });
  assert.equal(refetches, 1);
  sock.push({ type: 'push', channel: 'news', offset: 4, event: 'message', data: {} });
  assert.deepEqual(got, [4]);
  assert.deepEqual(hub.getSubscription('news')._since(), { offset: 4, epoch: 'B' });
  hub.disconnect();
});

test('channels without history deliver every push and resubscribe without since', async () => {
  const hub = client();
  const got = [];
  hub.connect();
  let sock = await sockets.next();
  await sock.accept();
  hub.subscribe('public:x', { onPublication: (p) => got.push(p.data) });
  let req = await sock.next();
  sock.reply(req.id, { recovered: false });
  sock.push({ type: 'push', channel: 'public:x', event: 'message', data: 1 });
  sock.push({ type: 'push', channel: 'public:x', event: 'message', data: 1 });
  assert.deepEqual(got, [1, 1]);
  hub._testDropSocket();
  sock = await sockets.next();
  await sock.accept();
  req = await sock.next();
  assert.equal(req.since, undefined);
  hub.disconnect();
});

test('41xx closes are final, except 4102 with getToken', async () => {
  const hub = client();
  const connected = hub.connect();
  const sock = await sockets.next();
  await sock.accept();
  await connected;
  const gone = once(hub, 'disconnected');
  sock.serverClose(4103, 'disconnected');
  assert.deepEqual(await gone, { code: 4103, reason: 'disconnected', reconnect: false });
  assert.equal(hub.state, 'disconnected');
  await assert.rejects(hub.publish('news', 1), (e) => e.code === 'not_connected');

  // A fixed token cannot be renewed: 4102 is final too.
  const fixed = client();
  fixed.connect();
  const s2 = await sockets.next();
  await s2.accept();
  const gone2 = once(fixed, 'disconnected');
  s2.serverClose(4102, 'token expired');
  assert.equal((await gone2).reconnect, false);

  // With getToken, a fresh token is fetched and the client reconnects.
  let n = 0;
  const renewing = client({ token: undefined, getToken: async () => `tok${++n}` });
  renewing.connect();
  const s3 = await sockets.next();
  assert.equal((await s3.accept()).token, 'tok1');
  s3.serverClose(4102, 'token expired');
  const s4 = await sockets.next();
  assert.equal((await s4.accept()).token, 'tok2');
  renewing.disconnect();
});

test('4000-range and abnormal closes reconnect with the cached token', async () => {
  let n = 0;
  const hub = client({ token: undefined, getToken: async () => `tok${++n}` });
  hub.connect();
  for (const code of [4000, 1006, 1009, 1011]) {
    const sock = await sockets.next();
    assert.equal((await sock.accept()).token, 'tok1');
    const gone = once(hub, 'disconnected');
    sock.serverClose(code);
    assert.equal((await gone).reconnect, true);
  }
  const last = await sockets.next();
  await last.accept();
  hub.disconnect();
  assert.equal(last.closedByClient, 1000);
});

test('the token is refreshed on the live connection before it expires', async () => {
  let n = 0;
  const hub = client({ token: undefined, getToken: async () => `tok${++n}` });
  hub.connect();
  const sock = await sockets.next();
  // Expires in one second: the refresh is due 200 ms before.
  await sock.accept({ expires_at: Math.floor(Date.now() / 1000) + 1 });
  const refresh = await sock.next();
  assert.equal(refresh.op, 'refresh');
  assert.equal(refresh.token, 'tok2');
  const later = Math.floor(Date.now() / 1000) + 3600;
  const refreshed = once(hub, 'refreshed');
  sock.reply(refresh.id, { expires_at: later });
  assert.deepEqual(await refreshed, { expires_at: later });
  assert.equal(hub.info.expires_at, later);
  hub.disconnect();
});

test('a subscription made before connect is sent once connected; unsubscribe stops delivery', async () => {
  const hub = client();
  const got = [];
  const sub = hub.subscribe('lobby', { onPublication: (p) => got.push(p.offset) });
  hub.connect();
  const sock = await sockets.next();
  await sock.accept();
  const req = await sock.next();
  assert.equal(req.op, 'subscribe');
  sock.reply(req.id, { position: { offset: 0, epoch: 'E' }, recovered: false });
  await sub.ready;
  sock.push({ type: 'push', channel: 'lobby', offset: 1, event: 'message', data: {} });
  const done = sub.unsubscribe();
  const unsub = await sock.next();
  assert.deepEqual({ ...unsub, id: 0 }, { id: 0, op: 'unsubscribe', channel: 'lobby' });
  sock.reply(unsub.id, {});
  await done;
  sock.push({ type: 'push', channel: 'lobby', offset: 2, event: 'message', data: {} });
  assert.deepEqual(got, [1]);
  assert.equal(hub.getSubscription('lobby'), undefined);
  hub.disconnect();
});

test('a refused subscribe rejects ready and drops the subscription', async () => {
  const hub = client();
  hub.connect();
  const sock = await sockets.next();
  await sock.accept();
  let reported = null;
  const sub = hub.subscribe('user:bob', { onError: (e) => (reported = e) });
  const req = await sock.next();
  sock.error(req.id, 'forbidden', 'may not subscribe to user:bob');
  await assert.rejects(sub.ready, (e) => e.code === 'forbidden');
  assert.equal(reported.code, 'forbidden');
  assert.equal(hub.getSubscription('user:bob'), undefined);
  hub.disconnect();
});

test('several endpoints: each reconnect moves to the next, round robin, and resumes there', GUARD, async (t) => {
  const hub = new HubClient(['ws://a.test/ws', 'http://b.test/ws', 'ws://c.test/ws'], {
    token: 't1',
    WebSocket: FakeSocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
  });
  // A failed assertion must not leave a client reconnecting (the run would never end).
  t.after(() => hub.disconnect());
  assert.deepEqual(hub.urls, ['ws://a.test/ws', 'ws://b.test/ws', 'ws://c.test/ws']);
  const connecting = [];
  hub.on('connecting', (e) => connecting.push([e.attempt, e.url]));
  const got = [];
  hub.connect();
  let sock = await sockets.next();
  assert.equal(sock.url, 'ws://a.test/ws');
  assert.equal(hub.url, 'ws://a.test/ws');
  await sock.accept({ node: 'A' });
  hub.subscribe('news', { onPublication: (p) => got.push(p.offset) });
  let req = await sock.next();
  sock.reply(req.id, { position: { offset: 5, epoch: 'E' }, recovered: false });
  sock.push({ type: 'push', channel: 'news', offset: 6, event: 'message', data: {} });

  // Node A shuts down: the next attempt goes to B, which cannot be reached (no open, 1006).
  sock.serverClose(4000, 'shutdown');
  sock = await sockets.next();
  assert.equal(sock.url, 'ws://b.test/ws');
  assert.equal(hub.url, 'ws://b.test/ws');
  sock.serverClose(1006);
  // Then C, which takes the client and resumes the channel from where A left it.
  sock = await sockets.next();
  assert.equal(sock.url, 'ws://c.test/ws');
  const frame = await sock.accept({ node: 'C' });
  assert.equal(frame.token, 't1');
  assert.equal(hub.info.node, 'C');
  req = await sock.next();
  assert.equal(req.op, 'subscribe');
  assert.deepEqual(req.since, { offset: 6, epoch: 'E' });
  const missed = [6, 7, 8].map((offset) => ({ offset, event: 'message', data: {} }));
  sock.reply(req.id, { position: { offset: 8, epoch: 'E' }, recovered: true, publications: missed });
  sock.push({ type: 'push', channel: 'news', offset: 9, event: 'message', data: {} });
  assert.deepEqual(got, [6, 7, 8, 9]);

  // A drop on C wraps around to A; the backoff restarted with the successful connect.
  hub._testDropSocket();
  sock = await sockets.next();
  assert.equal(sock.url, 'ws://a.test/ws');
  await sock.accept({ node: 'A' });
  assert.deepEqual(connecting, [
    [0, 'ws://a.test/ws'],
    [1, 'ws://b.test/ws'],
    [2, 'ws://c.test/ws'],
    [1, 'ws://a.test/ws'],
  ]);

  // connect() after disconnect() starts where the client was.
  hub.disconnect();
  hub.connect();
  sock = await sockets.next();
  assert.equal(sock.url, 'ws://a.test/ws');
  await sock.accept();
  hub.disconnect();
});

test('one endpoint: every reconnect goes back to it', GUARD, async (t) => {
  const hub = client();
  t.after(() => hub.disconnect());
  assert.deepEqual(hub.urls, ['ws://hub.test/ws']);
  hub.connect();
  for (const code of [4000, 1006]) {
    const sock = await sockets.next();
    assert.equal(sock.url, 'ws://hub.test/ws');
    await sock.accept();
    sock.serverClose(code);
  }
  const last = await sockets.next();
  assert.equal(last.url, 'ws://hub.test/ws');
  await last.accept();
  hub.disconnect();
});

test('an endpoint that never answers is given up after the connect timeout; the next is tried', GUARD, async (t) => {
  const hub = new HubClient(['ws://silent.test/ws', 'ws://live.test/ws'], {
    token: 't1',
    WebSocket: FakeSocket,
    timeout: 50,
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
  });
  t.after(() => hub.disconnect());
  const gone = once(hub, 'disconnected');
  hub.connect();
  const silent = await sockets.next();
  assert.equal(silent.url, 'ws://silent.test/ws');
  // Never opens.
  assert.deepEqual(await gone, { code: 1006, reason: 'connect timeout', reconnect: true });
  assert.equal(silent.closedByClient, 1000);
  const live = await sockets.next();
  assert.equal(live.url, 'ws://live.test/ws');
  await live.accept();
  assert.equal(hub.state, 'connected');
  hub.disconnect();
});

test('an endpoint the WebSocket constructor refuses is reported and skipped', GUARD, async (t) => {
  class PickySocket extends FakeSocket {
    constructor(url, protocols) {
      if (url.startsWith('ws://bad.test')) throw new SyntaxError('refused URL');
      super(url, protocols);
    }
  }
  const hub = new HubClient(['ws://bad.test/ws', 'ws://good.test/ws'], {
    token: 't1',
    WebSocket: PickySocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
  });
  t.after(() => hub.disconnect());
  const reported = once(hub, 'error');
  const connected = hub.connect();
  const err = await reported;
  assert.equal(err.code, 'bad_url');
  assert.match(err.message, /bad\.test/);
  const sock = await sockets.next();
  assert.equal(sock.url, 'ws://good.test/ws');
  await sock.accept({ node: 'G' });
  assert.equal((await connected).node, 'G');
  hub.disconnect();
});

test('an empty endpoint list is refused', () => {
  assert.throws(() => new HubClient([], { token: 't' }), (e) => e.code === 'bad_request');
  assert.throws(() => new HubClient(['ws://a.test/ws', ''], { token: 't' }), (e) => e.code === 'bad_request');
});
