// The playground: connect as a user, subscribe to one channel, publish JSON, watch the log and
// the presence list. Everything shown comes from the SDK's events.

import { HubClient } from './hub.js';

const $ = (id) => document.getElementById(id);

/** @type {HubClient | null} */
let hub = null;
/** @type {import('./hub.js').Subscription | null} */
let sub = null;
/** client id -> user id, for the subscribed channel */
const members = new Map();

// ---- log and presence rendering (textContent only: data is never markup) ----

function log(kind, text, data) {
  const li = document.createElement('li');
  li.dataset.kind = kind;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  const label = document.createElement('b');
  label.textContent = kind;
  li.append(time, ' ', label, ' ', text);
  if (data !== undefined) {
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(data, null, 2);
    li.append(pre);
  }
  const list = $('log');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderPresence() {
  const ul = $('presence');
  ul.replaceChildren();
  const me = hub?.info?.client;
  for (const [client, user] of [...members].sort((a, b) => a[1].localeCompare(b[1]))) {
    const li = document.createElement('li');
    li.dataset.user = user;
    li.dataset.client = client;
    li.textContent = client === me ? `${user} (you)` : user;
    li.title = `connection ${client}`;
    ul.append(li);
  }
  $('presence-channel').textContent = sub ? `in ${sub.channel}` : '';
}

async function loadPresence() {
  if (!sub) return;
  const channel = sub.channel;
  try {
    const list = await sub.presence();
    if (sub?.channel !== channel) return;
    members.clear();
    for (const m of list) members.set(m.client, m.user);
    renderPresence();
  } catch (e) {
    log('error', `presence: ${e.code}: ${e.message}`);
  }
}

function setStatus(state) {
  $('status').dataset.state = state;
  $('status').textContent = state;
  const connected = state === 'connected';
  $('disconnect').disabled = state === 'disconnected';
  $('subscribe').disabled = !hub;
  $('unsubscribe').disabled = !sub;
  $('history').disabled = !sub || !connected;
  $('publish').disabled = !connected;
}

// ---- actions ----

function connect(user, role) {
  hub?.disconnect();
  sub = null;
  members.clear();
  renderPresence();
  const getToken = async () => {
    const res = await fetch(`/dev/token?${new URLSearchParams({ sub: user, role })}`);
    if (!res.ok) throw new Error(`/dev/token answered HTTP ${res.status} (is dev_mode on?)`);
    return (await res.json()).token;
  };
  const client = new HubClient('/ws', { getToken });
  hub = client;
  // Events of a client replaced by a newer Connect are ignored.
  const on = (event, fn) => client.on(event, (arg) => client === hub && fn(arg));
  on('connecting', (e) => {
    setStatus('connecting');
    const why = e.code ? ` after close ${e.code}${e.reason ? ` (${e.reason})` : ''}` : '';
    log('state', `connecting (attempt ${e.attempt}${e.delay ? `, in ${e.delay} ms` : ''})${why}`);
  });
  on('connected', (info) => {
    setStatus('connected');
    log('state', `connected as ${info.user}`, info);
    renderPresence();
  });
  on('disconnected', (e) => {
    setStatus(client.state);
    log('state', `disconnected: ${e.code} ${e.reason || ''}${e.reconnect ? ' (will reconnect)' : ''}`);
    if (!e.reconnect) {
      members.clear();
      renderPresence();
    }
  });
  on('refreshed', (e) => log('state', `token refreshed, expires ${new Date(e.expires_at * 1000).toLocaleTimeString()}`));
  on('error', (e) => log('error', `${e.code}: ${e.message}`));
  setStatus('connecting');
  client.connect();
}

async function subscribe(channel) {
  if (sub) await unsubscribe();
  const s = hub.subscribe(channel, {
    onPublication: (p) => log('publication', `${p.channel} #${p.offset ?? '-'} ${p.event} from ${p.from ?? 'server'}${p.recovered ? ' (recovered)' : ''}`, p.data),
    onJoin: (info) => {
      log('join', `${info.user} joined ${channel}`);
      members.set(info.client, info.user);
      renderPresence();
    },
    onLeave: (info) => {
      log('leave', `${info.user} left ${channel}`);
      members.delete(info.client);
      renderPresence();
    },
    onRefetch: () => log('info', `missed publications on ${channel} could not be recovered: reload the state`),
    // Presence may have changed while away: reload it on every (re)subscribe.
    onSubscribed: () => loadPresence(),
    onError: (e) => {
      log('error', `subscription ${channel}: ${e.code}: ${e.message}`);
      if (sub === s) sub = null;
      members.clear();
      renderPresence();
      setStatus(hub.state);
    },
  });
  sub = s;
  setStatus(hub.state);
  try {
    const reply = await s.ready;
    log('info', `subscribed to ${channel}`, reply);
  } catch {
    // Reported by onError.
  }
}

async function unsubscribe() {
  const s = sub;
  sub = null;
  members.clear();
  renderPresence();
  setStatus(hub.state);
  try {
    await s.unsubscribe();
    log('info', `unsubscribed from ${s.channel}`);
  } catch (e) {
    log('error', `unsubscribe: ${e.code}: ${e.message}`);
  }
}

// ---- wiring ----

$('connect-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  connect($('user').value.trim(), $('role').value);
});

$('disconnect').addEventListener('click', () => hub?.disconnect());

$('subscribe-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (hub) subscribe($('channel').value.trim());
});

$('unsubscribe').addEventListener('click', () => sub && unsubscribe());

$('history').addEventListener('click', async () => {
  try {
    const h = await sub.history({ limit: 20 });
    log('info', `history of ${sub.channel}: ${h.publications.length} publication(s)`, h);
  } catch (e) {
    log('error', `history: ${e.code}: ${e.message}`);
  }
});

$('publish-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  let data;
  try {
    data = JSON.parse($('data').value);
  } catch (e) {
    log('error', `data is not valid JSON: ${e.message}`);
    return;
  }
  const channel = sub?.channel ?? $('channel').value.trim();
  try {
    const reply = await hub.publish(channel, data, $('event').value.trim() || undefined);
    log('info', `published to ${channel}${reply.position ? ` at #${reply.position.offset}` : ''}`);
  } catch (e) {
    log('error', `publish: ${e.code}: ${e.message}`);
  }
});

$('clear-log').addEventListener('click', () => $('log').replaceChildren());

setStatus('disconnected');
