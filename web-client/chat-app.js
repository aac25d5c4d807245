// The chat demo: sign in as a user (tokens from /dev/token), like other users, chat with matches.
// Everything shown is rendered from the ChatClient's state (lib/chat.js) when it announces a
// change; nothing here talks to the socket directly. `window.chatDemo` exposes the clients for
// debugging and for the browser test (test/chat.test.mjs).

import { HubClient } from './hub.js';
import { ChatClient } from './lib/chat.js';

const $ = (id) => document.getElementById(id);

/** @type {{hub: HubClient, chat: ChatClient, me: string} | null} */
let session = null;
/** The open conversation's id, or null. */
let selected = null;
window.chatDemo = null;

// ---- rendering (textContent only: names and messages are never markup) ----

/** Several changes in one task render once. */
let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    renderMatches();
    renderConversation();
  });
}

function renderStatus(state) {
  $('status').dataset.state = state;
  $('status').textContent = state;
  const signedIn = session !== null;
  $('sign-in').disabled = signedIn;
  $('sign-out').disabled = !signedIn;
  $('me').disabled = signedIn;
  $('my-status').disabled = state !== 'connected';
  for (const id of ['like', 'super-like', 'pass']) $(id).disabled = !signedIn;
}

function presenceText(p) {
  if (!p) return '';
  if (p.status === 'offline' && p.last_seen) return `last seen ${new Date(p.last_seen).toLocaleString()}`;
  return p.status;
}

function renderMatches() {
  const ul = $('matches');
  ul.replaceChildren();
  const list = session ? session.chat.conversations() : [];
  for (const c of list) {
    const li = document.createElement('li');
    li.dataset.conversation = String(c.id);
    li.dataset.peer = c.peer;
    li.dataset.state = c.state;
    li.setAttribute('aria-selected', String(c.id === selected));
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.dataset.status = c.presence?.status ?? 'offline';
    dot.title = presenceText(c.presence) || c.state;
    const name = document.createElement('span');
    name.className = 'peer';
    name.textContent = c.peer;
    const badge = document.createElement('span');
    badge.className = 'badge unread';
    badge.dataset.count = String(c.unread);
    badge.textContent = String(c.unread);
    const last = document.createElement('span');
    last.className = 'last';
    if (c.typing) last.textContent = 'typing…';
    else if (c.state === 'closed') last.textContent = 'conversation closed';
    else if (c.last_message) last.textContent = `${c.last_message.from === session.me ? 'You: ' : ''}${c.last_message.text}`;
    else last.textContent = 'New match: say hi!';
    li.append(dot, name, badge, last);
    li.addEventListener('click', () => open(c.id));
    ul.append(li);
  }
  $('no-matches').hidden = list.length > 0;
  const total = session ? session.chat.totalUnread : 0;
  $('total-unread').hidden = total === 0;
  $('total-unread').textContent = String(total);
}

const TICKS = { sending: '…', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

function messageItem(m, tick) {
  const li = document.createElement('li');
  li.dataset.from = m.from === session.me ? 'me' : 'peer';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.text;
  li.append(text);
  if (m.attachment) {
    const a = document.createElement('a');
    a.href = m.attachment.url;
    a.textContent = ` [${m.attachment.type}]`;
    a.rel = 'noopener noreferrer';
    a.target = '_blank';
    li.append(a);
  }
  const meta = document.createElement('span');
  meta.className = 'meta';
  if (m.ts) meta.textContent = new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (tick) {
    li.dataset.tick = tick;
    const t = document.createElement('span');
    t.className = 'tick';
    t.textContent = TICKS[tick];
    t.title = tick;
    meta.append(t);
  }
  li.append(meta);
  return li;
}

function renderConversation() {
  const c = session && selected !== null ? session.chat.conversation(selected) : undefined;
  $('conversation').dataset.open = String(Boolean(c));
  $('conversation-view').hidden = !c;
  $('pick').hidden = Boolean(c);
  if (!c) return;
  const { chat } = session;
  $('conversation').dataset.conversation = String(c.id);
  $('conversation').dataset.state = c.state;
  $('peer-name').textContent = c.peer;
  $('peer-dot').dataset.status = c.presence?.status ?? 'offline';
  $('peer-status').textContent = presenceText(c.presence);
  $('typing').hidden = !c.typing;
  const closed = c.state === 'closed';
  $('closed-banner').hidden = !closed;
  for (const id of ['unmatch', 'block', 'text', 'send']) $(id).disabled = closed;

  const list = $('messages');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.replaceChildren();
  for (const m of chat.messages(c.id)) {
    const li = messageItem(m, chat.messageStatus(m));
    li.dataset.seq = String(m.seq);
    list.append(li);
  }
  for (const p of chat.pending(c.id)) {
    const li = messageItem({ ...p, from: session.me }, p.state);
    li.dataset.clientId = p.client_id;
    if (p.state === 'failed') {
      li.title = `${p.error?.code}: ${p.error?.message}`;
      const retry = document.createElement('button');
      retry.type = 'button';
      retry.textContent = 'retry';
      retry.addEventListener('click', () => chat.retry(c.id, p.client_id).catch(showError));
      const drop = document.createElement('button');
      drop.type = 'button';
      drop.textContent = 'discard';
      drop.addEventListener('click', () => chat.discard(c.id, p.client_id));
      li.append(retry, drop);
    }
    list.append(li);
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function showError(e) {
  const el = $('chat-error');
  el.dataset.code = e?.code ?? 'error';
  el.textContent = e ? `${e.code ?? 'error'}: ${e.message}` : '';
  if (!e) delete el.dataset.code;
}

// ---- actions ----

function open(id) {
  selected = id;
  showError(null);
  $('text').value = '';
  render();
  readIfVisible();
}

/** The open conversation is read while the page is visible. */
function readIfVisible() {
  if (!session || selected === null || document.visibilityState !== 'visible') return;
  const c = session.chat.conversation(selected);
  if (!c || c.state === 'closed') return;
  session.chat.markRead(selected).catch((e) => e.code !== 'disconnected' && showError(e));
}

function signIn(me) {
  const getToken = async () => {
    const res = await fetch(`/dev/token?${new URLSearchParams({ sub: me, role: 'user' })}`);
    if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
    return (await res.json()).token;
  };
  const hub = new HubClient('/ws', { getToken, minReconnectDelay: 200, maxReconnectDelay: 5000 });
  const chat = new ChatClient(hub, { user: me });
  session = { hub, chat, me };
  window.chatDemo = session;
  selected = null;

  hub.on('connecting', () => renderStatus('connecting'));
  hub.on('connected', () => renderStatus('connected'));
  hub.on('disconnected', ({ reconnect, code, reason }) => {
    renderStatus(reconnect ? 'connecting' : 'disconnected');
    if (!reconnect) showError({ code: `closed ${code}`, message: reason || 'connection closed' });
  });
  for (const event of ['conversations', 'outbox', 'typing', 'presence', 'receipt', 'closed']) chat.on(event, render);
  chat.on('message', ({ conversation, message }) => {
    if (conversation === selected && message.from !== me) readIfVisible();
  });
  chat.on('match', (c) => {
    $('like-result').textContent = `It's a match with ${c.peer}!`;
    if (selected === null) open(c.id);
  });
  chat.on('super_like', ({ from }) => {
    $('like-result').textContent = `${from} super-liked you.`;
  });
  chat.on('sync', ({ state }) => {
    document.body.dataset.sync = state;
    if (state === 'done') readIfVisible();
  });
  chat.on('error', showError);
  renderStatus('connecting');
  hub.connect();
  render();
}

function signOut() {
  if (!session) return;
  const { hub, chat } = session;
  session = null;
  window.chatDemo = null;
  selected = null;
  chat.close().catch(() => {});
  hub.disconnect();
  renderStatus('disconnected');
  render();
}

async function swipe(kind) {
  if (!session) return;
  const user = $('like-user').value.trim();
  if (!user) return;
  const out = $('like-result');
  try {
    const r = await session.chat.swipe(user, kind);
    if (!r.matched) out.textContent = `${kind === 'pass' ? 'Passed on' : 'Liked'} ${user} (${r.remaining} swipes left).`;
    $('like-user').value = '';
  } catch (e) {
    out.textContent = `${e.code}: ${e.message}`;
  }
}

/** Runs an action on the open conversation, showing its error. */
async function act(fn) {
  if (!session || selected === null) return;
  showError(null);
  try {
    await fn(session.chat, session.chat.conversation(selected));
  } catch (e) {
    showError(e);
  }
}

// ---- wiring ----

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const me = $('me').value.trim();
  if (me) signIn(me);
});
$('sign-out').addEventListener('click', signOut);
$('my-status').addEventListener('change', () => act((chat) => chat.setStatus($('my-status').value)));

$('like-form').addEventListener('submit', (e) => {
  e.preventDefault();
  swipe('like');
});
$('super-like').addEventListener('click', () => swipe('super_like'));
$('pass').addEventListener('click', () => swipe('pass'));

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (!text.trim() || !session || selected === null) return;
  $('text').value = '';
  showError(null);
  session.chat.send(selected, text).catch(showError);
});
$('text').addEventListener('input', () => {
  if (session && selected !== null) session.chat.typing(selected, $('text').value !== '');
});
$('text').addEventListener('blur', () => {
  if (session && selected !== null) session.chat.typing(selected, false);
});

$('unmatch').addEventListener('click', () => act((chat, c) => chat.unmatch(c.id)));
$('block').addEventListener('click', () => act((chat, c) => chat.block(c.peer)));
$('report').addEventListener('click', () =>
  act(async (chat, c) => {
    const reason = $('report-reason').value;
    await chat.report(c.peer, reason, { conversation: c.id });
    $('chat-error').textContent = `Reported ${c.peer} (${reason}).`;
  }),
);

document.addEventListener('visibilitychange', readIfVisible);

renderStatus('disconnected');
render();
