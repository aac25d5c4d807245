// Unit tests of the chat SDK (lib/chat.js) in Node, against the scripted fake socket: the test
// plays the hub, answers each request the SDK makes, and checks what the SDK holds and announces.
// No server, no browser, no timed assertions: every step awaits the next frame or an event.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HubClient } from '../hub.js';
import { ChatClient } from '../lib/chat.js';
import { HubError } from '../lib/util.js';
import { FakeSocket, sockets } from './fake-socket.mjs';

/** Every test: a hang is a failure, not a stuck run. */
const GUARD = { timeout: 10_000 };

/** Resolves with the next `event` the emitter fires that `pred` accepts. */
function once(emitter, event, pred = () => true) {
  return new Promise((resolve) => {
    const off = emitter.on(event, (arg) => {
      if (!pred(arg)) return;
      off();
      resolve(arg);
    });
  });
}

/** Records every event of `names` the chat client emits, in order. */
function record(chat, names) {
  const log = [];
  for (const name of names) chat.on(name, (arg) => log.push([name, arg]));
  return log;
}

/** The next frame the SDK sent, checked to be `op`. */
async function expectOp(sock, op) {
  const frame = await sock.next();
  assert.equal(frame.op, op, `expected ${op}, got ${JSON.stringify(frame)}`);
  return frame;
}

let clock = 1_767_225_600_000;
const msg = (conversation, seq, from, text = `m${seq}`) => ({
  id: `${conversation}:${seq}`,
  conversation,
  seq,
  from,
  client_id: `cid-${from}-${seq}`,
  text,
  ts: clock + seq * 1000,
});

const conv = (id, peer, fields = {}) => ({
  id,
  peer,
  state: 'active',
  created_at: clock,
  last_seq: 0,
  last_message: null,
  read: 0,
  unread: 0,
  peer_delivered: 0,
  peer_read: 0,
  presence: { user: peer, status: 'online', last_seen: clock },
  ...fields,
});

const push = (user, event, data, offset) => ({ type: 'push', channel: `user:${user}`, offset, event, data });

/**
 * A chat client for `user` on a fake hub, connected and subscribed to user:{user}. Returns the
 * socket with the `chat.conversations` request read but not answered.
 */
async function start(t, user = 'alice', options = {}) {
  const hub = new HubClient('ws://hub.test/ws', {
    token: 't',
    WebSocket: FakeSocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
    timeout: 2000,
  });
  const chat = new ChatClient(hub, { user, ...options });
  t.after(() => hub.disconnect());
  hub.connect();
  const sock = await sockets.next();
  await sock.accept({ user });
  const sub = await expectOp(sock, 'subscribe');
  assert.equal(sub.channel, `user:${user}`);
  assert.equal(sub.since, undefined);
  sock.reply(sub.id, { position: { offset: 10, epoch: 'E' }, recovered: false });
  const list = await expectOp(sock, 'chat.conversations');
  return { hub, chat, sock, list };
}

/** Answers a history request with the given messages. */
function page(sock, frame, messages, more = false, positions = {}) {
  sock.reply(frame.id, { messages, more, read: 0, peer_delivered: 0, peer_read: 0, ...positions });
}

test('the first sync lists conversations, pages history after what is held, acks delivery', GUARD, async (t) => {
  const { chat, sock, list } = await start(t, 'alice', { pageSize: 2 });
  const events = record(chat, ['match', 'message', 'conversations']);
  const synced = chat.whenSynced();
  sock.reply(list.id, {
    conversations: [
      conv(3, 'bob', { last_seq: 3, last_message: msg(3, 3, 'bob'), unread: 2, read: 1 }),
      conv(4, 'carol'),
    ],
    total_unread: 2,
  });
  // Conversation 3 has three messages; none is held (its last_message is above the gap).
  let h = await expectOp(sock, 'chat.history');
  assert.deepEqual({ ...h, id: 0 }, { id: 0, op: 'chat.history', conversation: 3, after: 0, limit: 2 });
  page(sock, h, [msg(3, 1, 'alice'), msg(3, 2, 'bob')], true);
  h = await expectOp(sock, 'chat.history');
  assert.equal(h.after, 2);
  page(sock, h, [msg(3, 3, 'bob')], false, { read: 1, peer_delivered: 1, peer_read: 1 });
  // The peer's newest message held reached this device.
  const ack = await expectOp(sock, 'chat.delivered');
  assert.deepEqual({ conversation: ack.conversation, seq: ack.seq }, { conversation: 3, seq: 3 });
  await synced;
  sock.reply(ack.id, { conversation: 3, user: 'alice', delivered: 3, read: 1, unread: 2 });

  assert.deepEqual(chat.messages(3).map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(chat.messages(4), []);
  assert.deepEqual(chat.conversations().map((c) => c.id), [3, 4], 'newest activity first');
  const c3 = chat.conversation(3);
  assert.equal(c3.unread, 2, 'history of already counted messages does not add to unread');
  assert.equal(c3.peer, 'bob');
  assert.equal(c3.presence.status, 'online');
  assert.equal(chat.totalUnread, 2);
  assert.equal(chat.messageStatus(chat.messages(3)[0]), 'read');
  assert.equal(chat.messageStatus(chat.messages(3)[1]), undefined, "the peer's message has no tick");
  assert.equal(events.filter(([e]) => e === 'match').length, 0, 'the first list is no news');
  assert.deepEqual(events.filter(([e]) => e === 'message').map(([, m]) => [m.message.seq, m.source]), [
    [1, 'history'],
    [2, 'history'],
    [3, 'history'],
  ]);
});

test('pushes: each message once, unread, typing, presence, receipts, closed', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [conv(3, 'bob')], total_unread: 0 });
  await chat.whenSynced();
  const events = record(chat, ['message', 'typing', 'presence', 'receipt', 'closed']);

  sock.push(push('alice', 'typing', { conversation: 3, user: 'bob', typing: true }, 11));
  assert.equal(chat.conversation(3).typing, true);
  sock.push(push('alice', 'message', msg(3, 1, 'bob'), 12));
  assert.equal(chat.conversation(3).typing, false, "the peer's message ends typing");
  // The same message again (a second path), and a stale offset: nothing new.
  sock.push(push('alice', 'message', msg(3, 1, 'bob'), 13));
  sock.push(push('alice', 'message', msg(3, 1, 'bob'), 12));
  const ack = await expectOp(sock, 'chat.delivered');
  assert.equal(ack.seq, 1);
  // More arrive while the first ack is out: one more ack, for the highest, once it is answered.
  sock.push(push('alice', 'message', msg(3, 2, 'bob'), 14));
  sock.push(push('alice', 'message', msg(3, 3, 'bob'), 15));
  sock.reply(ack.id, { conversation: 3, user: 'alice', delivered: 1, read: 0, unread: 3 });
  const ack2 = await expectOp(sock, 'chat.delivered');
  assert.equal(ack2.seq, 3);
  sock.reply(ack2.id, { conversation: 3, user: 'alice', delivered: 3, read: 0, unread: 3 });

  assert.deepEqual(chat.messages(3).map((m) => m.seq), [1, 2, 3]);
  assert.equal(chat.conversation(3).unread, 3);
  assert.equal(chat.conversation(3).last_message.seq, 3);

  sock.push(push('alice', 'presence', { user: 'bob', status: 'offline', last_seen: clock + 5 }, 16));
  assert.deepEqual(chat.conversation(3).presence, { user: 'bob', status: 'offline', last_seen: clock + 5 });
  sock.push(push('alice', 'receipt', { conversation: 3, user: 'bob', delivered: 2, read: 1 }, 17));
  assert.equal(chat.conversation(3).peer_delivered, 2);
  assert.equal(chat.conversation(3).peer_read, 1);
  // This user read on another device: the unread count follows.
  sock.push(push('alice', 'receipt', { conversation: 3, user: 'alice', delivered: 3, read: 2 }, 18));
  assert.equal(chat.conversation(3).read, 2);
  assert.equal(chat.conversation(3).unread, 1);

  sock.push(push('alice', 'closed', { conversation: 3, state: 'closed' }, 19));
  sock.push(push('alice', 'closed', { conversation: 3, state: 'closed' }, 20));
  assert.equal(chat.conversation(3).state, 'closed');
  assert.equal(chat.conversation(3).presence, undefined);

  const summary = events.map(([e, a]) => [e, a.message?.seq ?? a.typing ?? a.status ?? a.user ?? a.conversation]);
  assert.deepEqual(summary, [
    ['typing', true],
    ['typing', false],
    ['message', 1],
    ['message', 2],
    ['message', 3],
    ['receipt', 'alice'], // own delivered moved to 3
    ['presence', 'offline'],
    ['receipt', 'bob'],
    ['receipt', 'alice'],
    ['closed', 3],
  ]);
});

test('a peer typing indicator lapses after typingTimeout without news', GUARD, async (t) => {
  const { chat, sock, list } = await start(t, 'alice', { typingTimeout: 20 });
  sock.reply(list.id, { conversations: [conv(3, 'bob')], total_unread: 0 });
  await chat.whenSynced();
  const stopped = once(chat, 'typing', (e) => e.typing === false);
  sock.push(push('alice', 'typing', { conversation: 3, user: 'bob', typing: true }, 11));
  assert.equal(chat.conversation(3).typing, true);
  assert.deepEqual(await stopped, { conversation: 3, user: 'bob', typing: false });
  assert.equal(chat.conversation(3).typing, false);
});

test('after a reconnect: resume, then list, then history after the contiguous top; no duplicates', GUARD, async (t) => {
  const { hub, chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [conv(3, 'bob', { last_seq: 2, last_message: msg(3, 2, 'bob') })], total_unread: 2 });
  let h = await expectOp(sock, 'chat.history');
  page(sock, h, [msg(3, 1, 'bob'), msg(3, 2, 'bob')]);
  let ack = await expectOp(sock, 'chat.delivered');
  sock.reply(ack.id, { conversation: 3, user: 'alice', delivered: 2, read: 0, unread: 2 });
  await chat.whenSynced();
  sock.push(push('alice', 'message', msg(3, 3, 'bob'), 11));
  ack = await expectOp(sock, 'chat.delivered');
  sock.reply(ack.id, { conversation: 3, user: 'alice', delivered: 3, read: 0, unread: 3 });

  const seen = [];
  chat.on('message', (e) => seen.push([e.message.seq, e.source]));
  hub._testDropSocket();
  assert.equal(chat.synced, false);
  const next = await sockets.next();
  await next.accept({ user: 'alice', client: 'c2' });
  const sub = await expectOp(next, 'subscribe');
  assert.deepEqual(sub.since, { offset: 11, epoch: 'E' });
  // The resume brings message 4 (missed push); 5 and 6 were made meanwhile too, but the resume
  // was cut short (say): the list and history fill them in.
  next.reply(sub.id, {
    position: { offset: 12, epoch: 'E' },
    recovered: true,
    publications: [{ offset: 12, event: 'message', data: msg(3, 4, 'bob') }],
  });
  const l2 = await expectOp(next, 'chat.conversations');
  // Live pushes between the list request and its reply: 4 again (dropped), and 8 above a gap.
  next.push(push('alice', 'message', msg(3, 4, 'bob'), 12));
  next.push(push('alice', 'message', msg(3, 8, 'bob'), 13));
  next.reply(l2.id, { conversations: [conv(3, 'bob', { last_seq: 8, last_message: msg(3, 8, 'bob'), unread: 8 })], total_unread: 8 });
  h = await expectOp(next, 'chat.history');
  assert.equal(h.after, 4, 'history resumes from the last contiguous seq held, not the newest');
  page(next, h, [5, 6, 7, 8].map((s) => msg(3, s, 'bob')));
  ack = await expectOp(next, 'chat.delivered');
  assert.equal(ack.seq, 8);
  next.reply(ack.id, { conversation: 3, user: 'alice', delivered: 8, read: 0, unread: 8 });
  await chat.whenSynced();

  assert.deepEqual(chat.messages(3).map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(seen, [
    [4, 'push'],
    [8, 'push'],
    [5, 'history'],
    [6, 'history'],
    [7, 'history'],
  ]);
  assert.equal(chat.conversation(3).unread, 8);
});

test('a send keeps its client_id across a reconnect and is held once', GUARD, async (t) => {
  const { hub, chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [conv(3, 'bob')], total_unread: 0 });
  await chat.whenSynced();
  const outbox = [];
  chat.on('outbox', () => outbox.push(chat.pending(3).map((p) => p.state)));

  const sent = chat.send(3, 'hello');
  const first = await expectOp(sock, 'chat.send');
  assert.equal(first.text, 'hello');
  assert.match(first.client_id, /^c-[0-9a-f]{24}$/);
  assert.deepEqual(chat.pending(3).map((p) => [p.client_id, p.state]), [[first.client_id, 'sending']]);
  // The link drops before the reply: the send waits for the next connection and goes again.
  hub._testDropSocket();
  const next = await sockets.next();
  await next.accept({ user: 'alice' });
  const frames = [await next.next(), await next.next()];
  const sub = frames.find((f) => f.op === 'subscribe');
  const retry = frames.find((f) => f.op === 'chat.send');
  assert.ok(sub && retry, JSON.stringify(frames));
  assert.equal(retry.client_id, first.client_id, 'the same client_id');
  assert.equal(retry.text, 'hello');
  next.reply(sub.id, { position: { offset: 11, epoch: 'E' }, recovered: true });
  // Its own push (other devices see it too) may come before the reply.
  const stored = { ...msg(3, 1, 'alice', 'hello'), client_id: first.client_id };
  next.push(push('alice', 'message', stored, 11));
  next.reply(retry.id, stored);
  const l2 = await expectOp(next, 'chat.conversations');
  next.reply(l2.id, { conversations: [conv(3, 'bob', { last_seq: 1, last_message: stored })], total_unread: 0 });
  assert.deepEqual(await sent, stored);
  await chat.whenSynced();
  assert.deepEqual(chat.messages(3), [stored]);
  assert.deepEqual(chat.pending(3), []);
  assert.equal(chat.messageStatus(stored), 'sent');
  assert.deepEqual(outbox, [['sending'], []]);
});

test('a refused send fails, stays pending, and retry() sends it with the same client_id', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [conv(3, 'bob')], total_unread: 0 });
  await chat.whenSynced();
  const sent = chat.send(3, 'hi', { attachment: { url: 'https://cdn.example/p.jpg', type: 'image/jpeg' } });
  const f1 = await expectOp(sock, 'chat.send');
  assert.deepEqual(f1.attachment, { url: 'https://cdn.example/p.jpg', type: 'image/jpeg' });
  // rate_limited is waited out as told, then the same send goes again.
  sock.push({ type: 'error', id: f1.id, code: 'rate_limited', message: 'slow down', retry_after_ms: 5 });
  const f2 = await expectOp(sock, 'chat.send');
  assert.equal(f2.client_id, f1.client_id);
  sock.error(f2.id, 'conversation_closed', 'closed');
  await assert.rejects(sent, (e) => e instanceof HubError && e.code === 'conversation_closed');
  assert.deepEqual(chat.pending(3).map((p) => [p.state, p.error.code]), [['failed', 'conversation_closed']]);

  const again = chat.retry(3, f1.client_id);
  const f3 = await expectOp(sock, 'chat.send');
  assert.equal(f3.client_id, f1.client_id);
  sock.reply(f3.id, { ...msg(3, 1, 'alice', 'hi'), client_id: f1.client_id });
  assert.equal((await again).seq, 1);
  assert.deepEqual(chat.pending(3), []);

  // A failed one can be dropped too.
  const doomed = chat.send(3, 'x');
  const f4 = await expectOp(sock, 'chat.send');
  sock.error(f4.id, 'blocked', 'blocked');
  await assert.rejects(doomed, (e) => e.code === 'blocked');
  chat.discard(3, f4.client_id);
  assert.deepEqual(chat.pending(3), []);
});

test('error frames carry retry_after_ms as retryAfterMs', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [], total_unread: 0 });
  const swiped = chat.swipe('bob');
  const f = await expectOp(sock, 'chat.swipe');
  sock.push({ type: 'error', id: f.id, code: 'swipe_limit', message: '200 swipes per 12h window', retry_after_ms: 3_600_000 });
  await assert.rejects(swiped, (e) => e.code === 'swipe_limit' && e.retryAfterMs === 3_600_000);
});

test('typing is throttled to the server interval; a stop goes out after it; a send settles it', GUARD, async (t) => {
  const { chat, sock, list } = await start(t, 'alice', { typingInterval: 30, typingRefresh: 10_000 });
  sock.reply(list.id, { conversations: [conv(3, 'bob')], total_unread: 0 });
  await chat.whenSynced();
  const ok = (f) => sock.reply(f.id, {});

  chat.typing(3);
  chat.typing(3);
  chat.typing(3, true);
  let f = await expectOp(sock, 'chat.typing');
  assert.deepEqual({ conversation: f.conversation, typing: f.typing }, { conversation: 3, typing: true });
  ok(f);
  chat.typing(3, false); // too soon after the true: sent once the interval has passed
  const status = chat.setStatus('away');
  f = await expectOp(sock, 'chat.status');
  assert.equal(f.status, 'away');
  sock.reply(f.id, { status: 'away' });
  assert.equal(await status, 'away');
  f = await expectOp(sock, 'chat.typing');
  assert.equal(f.typing, false);
  // Refused all the same (the server's clock disagrees): tried again when it says.
  sock.push({ type: 'error', id: f.id, code: 'rate_limited', message: 'typing', retry_after_ms: 5 });
  f = await expectOp(sock, 'chat.typing');
  assert.equal(f.typing, false);
  ok(f);
  chat.typing(3, false); // already stopped: nothing

  // Typing, then sending: the message ends "typing" for the peer, so no false follows.
  chat.typing(3, true);
  chat.send(3, 'done');
  f = await sock.next();
  if (f.op === 'chat.typing') {
    assert.equal(f.typing, true);
    ok(f);
    f = await sock.next();
  }
  assert.equal(f.op, 'chat.send');
  sock.reply(f.id, { ...msg(3, 1, 'alice', 'done'), client_id: f.client_id });
  chat.typing(3, false);
  const p = chat.presence(['bob']);
  f = await sock.next();
  assert.equal(f.op, 'chat.presence', 'no typing:false after a send');
  sock.reply(f.id, { presence: [{ user: 'bob', status: 'away', last_seen: clock }] });
  assert.deepEqual(await p, [{ user: 'bob', status: 'away', last_seen: clock }]);
  assert.equal(chat.conversation(3).presence.status, 'away');
});

test('markRead sends the newest held seq once; the reply sets unread', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [conv(3, 'bob', { last_seq: 2, unread: 2 })], total_unread: 2 });
  const h = await expectOp(sock, 'chat.history');
  page(sock, h, [msg(3, 1, 'bob'), msg(3, 2, 'bob')]);
  const ack = await expectOp(sock, 'chat.delivered');
  sock.reply(ack.id, { conversation: 3, user: 'alice', delivered: 2, read: 0, unread: 2 });
  await chat.whenSynced();

  const read = chat.markRead(3);
  const f = await expectOp(sock, 'chat.read');
  assert.deepEqual({ conversation: f.conversation, seq: f.seq }, { conversation: 3, seq: 2 });
  sock.reply(f.id, { conversation: 3, user: 'alice', delivered: 2, read: 2, unread: 0 });
  assert.deepEqual(await read, { read: 2, unread: 0 });
  assert.equal(chat.totalUnread, 0);
  // Nothing new: nothing sent.
  assert.deepEqual(await chat.markRead(3), { read: 2, unread: 0 });
  const status = chat.setStatus('online');
  const st = await expectOp(sock, 'chat.status');
  assert.equal(st.status, 'online', 'the next frame: no second chat.read');
  sock.reply(st.id, { status: 'online' });
  assert.equal(await status, 'online');
});

test('swipe, match push, unmatch, block and report', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [conv(9, 'dave')], total_unread: 0 });
  await chat.whenSynced();
  const events = record(chat, ['match', 'closed', 'super_like']);

  const swiped = chat.swipe('bob', 'like');
  let f = await expectOp(sock, 'chat.swipe');
  assert.deepEqual({ user: f.user, kind: f.kind }, { user: 'bob', kind: 'like' });
  // The match push can come before the reply: one match all the same.
  sock.push(push('alice', 'match', { conversation: conv(3, 'bob') }, 11));
  sock.reply(f.id, { matched: true, conversation: conv(3, 'bob'), remaining: 199 });
  assert.equal((await swiped).remaining, 199);
  sock.push(push('alice', 'super_like', { from: 'erin' }, 12));

  const unmatched = chat.unmatch(3);
  f = await expectOp(sock, 'chat.unmatch');
  assert.equal(f.conversation, 3);
  sock.push(push('alice', 'closed', { conversation: 3, state: 'closed' }, 13));
  sock.reply(f.id, { conversation: 3 });
  await unmatched;
  assert.equal(chat.conversation(3).state, 'closed');

  const blocked = chat.block('dave');
  f = await expectOp(sock, 'chat.block');
  assert.equal(f.user, 'dave');
  sock.reply(f.id, {});
  await blocked;
  assert.equal(chat.conversation(9).state, 'closed');
  sock.push(push('alice', 'closed', { conversation: 9, state: 'closed' }, 14));

  const reported = chat.report('dave', 'spam', { conversation: 9, details: 'links' });
  f = await expectOp(sock, 'chat.report');
  assert.deepEqual({ ...f, id: 0 }, { id: 0, op: 'chat.report', user: 'dave', reason: 'spam', conversation: 9, details: 'links' });
  sock.reply(f.id, { report: 17 });
  assert.equal(await reported, 17);

  // The server API matches bob and alice again: the same conversation reopens.
  sock.push(push('alice', 'match', { conversation: conv(3, 'bob') }, 15));
  assert.equal(chat.conversation(3).state, 'active');
  sock.push(push('alice', 'closed', { conversation: 3, state: 'closed' }, 16));

  assert.deepEqual(events.map(([e, a]) => [e, a.id ?? a.conversation ?? a.from]), [
    ['match', 3],
    ['super_like', 'erin'],
    ['closed', 3],
    ['closed', 9],
    ['match', 3],
    ['closed', 3],
  ]);
});

test('a message for a conversation not listed yet: the list is asked again and the gap filled', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  sock.reply(list.id, { conversations: [], total_unread: 0 });
  await chat.whenSynced();
  sock.push(push('alice', 'message', msg(5, 2, 'erin'), 11));
  const frames = [await sock.next(), await sock.next()];
  const l = frames.find((f) => f.op === 'chat.conversations');
  const ack = frames.find((f) => f.op === 'chat.delivered');
  assert.ok(l && ack, JSON.stringify(frames));
  sock.reply(ack.id, { conversation: 5, user: 'alice', delivered: 2, read: 0, unread: 2 });
  const matched = [];
  chat.on('match', (c) => matched.push(c.id));
  sock.reply(l.id, { conversations: [conv(5, 'erin', { last_seq: 2, last_message: msg(5, 2, 'erin'), unread: 2 })], total_unread: 2 });
  const h = await expectOp(sock, 'chat.history');
  assert.deepEqual({ conversation: h.conversation, after: h.after }, { conversation: 5, after: 0 });
  page(sock, h, [msg(5, 1, 'erin'), msg(5, 2, 'erin')]);
  await once(chat, 'conversations', () => chat.messages(5).length === 2);
  assert.deepEqual(chat.messages(5).map((m) => m.seq), [1, 2]);
  assert.equal(chat.conversation(5).peer, 'erin');
  assert.deepEqual(matched, [5], 'a match made while this client did not know it');
});

test('initialPage loads the newest page only; loadOlder pages back', GUARD, async (t) => {
  const { chat, sock, list } = await start(t, 'alice', { initialPage: 2, pageSize: 2 });
  sock.reply(list.id, { conversations: [conv(3, 'bob', { last_seq: 5, last_message: msg(3, 5, 'bob') })], total_unread: 0 });
  let h = await expectOp(sock, 'chat.history');
  assert.deepEqual({ before: h.before, after: h.after, limit: h.limit }, { before: 6, after: undefined, limit: 2 });
  page(sock, h, [msg(3, 4, 'alice'), msg(3, 5, 'bob')], true);
  const ack = await expectOp(sock, 'chat.delivered');
  sock.reply(ack.id, { conversation: 3, user: 'alice', delivered: 5, read: 0, unread: 1 });
  await chat.whenSynced();
  assert.deepEqual(chat.messages(3).map((m) => m.seq), [4, 5]);

  const older = chat.loadOlder(3);
  h = await expectOp(sock, 'chat.history');
  assert.equal(h.before, 4);
  page(sock, h, [msg(3, 2, 'bob'), msg(3, 3, 'bob')], true);
  assert.equal(await older, true);
  const oldest = chat.loadOlder(3);
  h = await expectOp(sock, 'chat.history');
  assert.equal(h.before, 2);
  page(sock, h, [msg(3, 1, 'bob')], false);
  assert.equal(await oldest, false);
  assert.equal(await chat.loadOlder(3), false, 'nothing more to ask');
  assert.deepEqual(chat.messages(3).map((m) => m.seq), [1, 2, 3, 4, 5]);
});

test('a ChatClient needs its user; a connection for another user is reported', GUARD, async (t) => {
  const hub = new HubClient('ws://hub.test/ws', { token: 't', WebSocket: FakeSocket });
  t.after(() => hub.disconnect());
  assert.throws(() => new ChatClient(hub, {}), (e) => e.code === 'bad_request');
  const chat = new ChatClient(hub, { user: 'alice' });
  const err = once(chat, 'error');
  hub.connect();
  const sock = await sockets.next();
  await sock.accept({ user: 'mallory' });
  assert.equal((await err).code, 'unauthorized');
  // A refused subscription (another user's channel) is reported and fails whenSynced.
  const synced = chat.whenSynced();
  const sub = await expectOp(sock, 'subscribe');
  sock.error(sub.id, 'forbidden', 'may not subscribe to user:alice');
  await assert.rejects(synced, (e) => e.code === 'forbidden');
});

test('a sync that fails for a passing reason is tried again; whenSynced waits for it', GUARD, async (t) => {
  const { chat, sock, list } = await start(t);
  const errors = [];
  chat.on('error', (e) => errors.push(e.code));
  const synced = chat.whenSynced();
  sock.error(list.id, 'unavailable', 'database unreachable');
  const again = await expectOp(sock, 'chat.conversations');
  sock.reply(again.id, { conversations: [conv(3, 'bob')], total_unread: 0 });
  await synced;
  assert.deepEqual(errors, ['unavailable']);
  assert.deepEqual(chat.conversations().map((c) => c.id), [3]);
});
