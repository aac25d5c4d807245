// The meeting demo: join a room (tokens from /dev/token, with a grant for the room), publish a
// camera, a microphone and a screen, see everyone else in a grid, raise a hand, chat, and (as a
// host) mute, remove, lock and end. Everything shown comes from the MeetingClient's state
// (lib/meeting.js) when it announces a change. `window.meetingDemo` exposes the clients for
// debugging and for the browser test (test/meeting.test.mjs).

import { HubClient } from './hub.js';
import { MeetingClient } from './lib/meeting.js';

const $ = (id) => document.getElementById(id);

/** @type {{hub: HubClient, meeting: MeetingClient, me: string, room: string} | null} */
let session = null;
window.meetingDemo = null;

/** One tile per participant, kept across renders so that its media elements keep playing. */
const tiles = new Map();

// ---- rendering (textContent only: names and messages are never markup) ----

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    renderToolbar();
    renderGrid();
    renderPeople();
  });
}

function renderStatus(state) {
  $('status').dataset.state = state;
  $('status').textContent = state;
}

const STATE_TEXT = {
  idle: 'not in a meeting',
  joining: 'joining…',
  joined: 'in the meeting',
  rejoining: 'reconnecting to the meeting…',
  left: 'you left the meeting',
  ended: 'the meeting has ended',
  removed: 'you were removed from the meeting',
};

function renderMeetingState({ state, reason, by }) {
  const el = $('meeting-state');
  el.dataset.state = state;
  let text = STATE_TEXT[state] ?? state;
  if (by) text += ` by ${by}`;
  else if (state === 'left' && reason === 'disconnected') text += ' (connection lost)';
  el.textContent = text;
  const inMeeting = state === 'joining' || state === 'joined' || state === 'rejoining';
  $('stage').hidden = !inMeeting;
  $('side').hidden = !inMeeting;
  for (const el of $('join-form').elements) el.disabled = inMeeting;
}

function renderToolbar() {
  const m = session?.meeting;
  if (!m) return;
  const cam = m.localTrack('video');
  const mic = m.localTrack('audio');
  const screen = m.localTrack('screen');
  setToggle('camera', Boolean(cam), 'Stop camera', 'Start camera');
  setToggle('mic', Boolean(mic), 'Stop microphone', 'Start microphone');
  setToggle('screen', Boolean(screen), 'Stop sharing', 'Share screen');
  muteButton('camera-mute', cam, 'camera');
  muteButton('mic-mute', mic, 'microphone');
  const me = m.participant(m.user);
  $('hand').dataset.raised = String(Boolean(me?.hand_raised));
  $('hand').textContent = me?.hand_raised ? 'Lower hand' : 'Raise hand';
  document.body.dataset.host = String(m.isHost);
  document.body.dataset.role = m.role ?? '';
  $('lock').dataset.locked = String(m.locked);
  $('lock').textContent = m.locked ? 'Unlock room' : 'Lock room';
}

function setToggle(id, on, onText, offText) {
  $(id).dataset.on = String(on);
  $(id).textContent = on ? onText : offText;
}

function muteButton(id, local, what) {
  const b = $(id);
  b.disabled = !local?.id;
  b.dataset.muted = String(Boolean(local?.muted));
  b.textContent = local?.muted ? `Unmute ${what}` : `Mute ${what}`;
  b.title = local?.forced ? 'muted by a host' : '';
}

function renderGrid() {
  const m = session?.meeting;
  const people = m && (m.state === 'joined' || m.state === 'joining') ? m.participants() : [];
  const seen = new Set();
  for (const p of people) {
    seen.add(p.user);
    let tile = tiles.get(p.user);
    if (!tile) {
      tile = makeTile(p.user);
      tiles.set(p.user, tile);
      $('grid').append(tile.el);
    }
    updateTile(tile, p, m);
  }
  for (const [user, tile] of tiles) {
    if (seen.has(user)) continue;
    tile.resize?.disconnect();
    tile.el.remove();
    tiles.delete(user);
  }
  $('grid').dataset.count = String(people.length);
}

function makeTile(user) {
  const el = document.createElement('div');
  el.className = 'tile';
  el.dataset.user = user;
  const camera = document.createElement('video');
  camera.className = 'camera';
  const screen = document.createElement('video');
  screen.className = 'screen';
  for (const v of [camera, screen]) {
    // Sound plays through the audio element: a muted video may autoplay anywhere.
    v.muted = true;
    v.autoplay = true;
    v.playsInline = true;
  }
  const audio = document.createElement('audio');
  audio.autoplay = true;
  const label = document.createElement('div');
  label.className = 'label';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = user;
  const role = document.createElement('span');
  role.className = 'role';
  const flags = document.createElement('span');
  flags.className = 'flags';
  label.append(name, role, flags);
  const controls = document.createElement('div');
  controls.className = 'controls';
  const tile = { el, camera, screen, audio, role, flags, controls, user, videoTrack: null, resize: null };
  for (const [action, text] of [
    ['mute-audio', 'Mute mic'],
    ['mute-video', 'Mute camera'],
    ['mute-all', 'Mute all'],
    ['lower-hand', 'Lower hand'],
    ['remove', 'Remove'],
  ]) {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.action = action;
    b.textContent = text;
    b.addEventListener('click', () => hostAction(action, tile));
    controls.append(b);
  }
  el.append(camera, screen, audio, label, controls);
  return tile;
}

function updateTile(tile, p, m) {
  const { el } = tile;
  el.dataset.me = String(p.me);
  el.dataset.role = p.role;
  el.dataset.hand = String(p.hand_raised);
  el.dataset.speaking = String(p.speaking);
  tile.role.textContent = p.role === 'participant' ? '' : p.role;
  const byKind = new Map(p.tracks.map((t) => [t.kind, t]));
  const video = byKind.get('video');
  const audio = byKind.get('audio');
  const screen = byKind.get('screen');
  el.dataset.video = video ? (video.muted ? 'muted' : 'on') : 'off';
  el.dataset.audio = audio ? (audio.muted ? 'muted' : 'on') : 'off';
  el.dataset.screen = screen ? 'on' : 'off';
  if (video) el.dataset.videoTrack = video.id;
  else delete el.dataset.videoTrack;
  if (audio) el.dataset.audioTrack = audio.id;
  else delete el.dataset.audioTrack;
  if (screen) el.dataset.screenTrack = screen.id;
  else delete el.dataset.screenTrack;
  const flags = [];
  if (p.hand_raised) flags.push('✋');
  if (audio?.muted) flags.push('mic off');
  if (video?.muted) flags.push('camera off');
  tile.flags.textContent = flags.join(' · ');
  attach(tile.camera, video?.stream ?? null);
  attach(tile.screen, screen?.stream ?? null);
  if (!p.me) attach(tile.audio, audio?.stream ?? null);
  tile.screen.hidden = !screen;
  // The hub forwards the simulcast layer that covers the size the camera is shown at.
  if (!p.me && video?.stream && tile.videoTrack !== video.id) {
    tile.videoTrack = video.id;
    watchSize(tile, m);
  }
  const host = m.isHost && !p.me;
  tile.controls.hidden = !host;
  for (const b of tile.controls.children) {
    if (b.dataset.action === 'mute-audio') b.disabled = !audio || audio.muted;
    if (b.dataset.action === 'mute-video') b.disabled = !video || video.muted;
    if (b.dataset.action === 'lower-hand') b.hidden = !p.hand_raised;
  }
}

/** Sets a media element's stream, leaving it alone (and playing) when it is the same one. */
function attach(el, stream) {
  if (el.srcObject === stream) return;
  el.srcObject = stream;
  if (stream) el.play().catch(() => {});
}

function watchSize(tile, m) {
  tile.resize?.disconnect();
  let timer = null;
  let last = '';
  const send = () => {
    const track = tile.videoTrack;
    const dpr = globalThis.devicePixelRatio || 1;
    const w = Math.round(tile.camera.clientWidth * dpr);
    const h = Math.round(tile.camera.clientHeight * dpr);
    const key = `${track}:${w}x${h}`;
    if (!track || w === 0 || h === 0 || key === last || m.state !== 'joined') return;
    last = key;
    m.setVideoSize(track, w, h).catch((e) => console.warn('meeting: size hint refused', e));
  };
  tile.resize = new ResizeObserver(() => {
    clearTimeout(timer);
    timer = setTimeout(send, 300);
  });
  tile.resize.observe(tile.camera);
}

function renderPeople() {
  const m = session?.meeting;
  const people = m && m.state === 'joined' ? m.participants() : [];
  const ul = $('people');
  ul.replaceChildren();
  for (const p of people) {
    const li = document.createElement('li');
    li.dataset.user = p.user;
    li.dataset.hand = String(p.hand_raised);
    li.textContent = `${p.user}${p.me ? ' (you)' : ''}${p.role !== 'participant' ? ` · ${p.role}` : ''}${p.hand_raised ? ' ✋' : ''}`;
    ul.append(li);
  }
  $('count').textContent = people.length ? String(people.length) : '';
}

function addChat({ from, text }) {
  const li = document.createElement('li');
  li.dataset.from = from ?? '';
  li.dataset.me = String(from === session?.me);
  const who = document.createElement('b');
  who.textContent = from ?? '?';
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(who, body);
  const log = $('chat-log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

function showError(e) {
  const el = $('error');
  if (!e) {
    el.textContent = '';
    delete el.dataset.code;
    return;
  }
  el.dataset.code = e.code ?? e.name ?? 'error';
  el.textContent = `${e.code ?? e.name ?? 'error'}: ${e.message}`;
}

// ---- actions ----

async function join(me, room, role, withCamera, withMic) {
  showError(null);
  $('chat-log').replaceChildren();
  const getToken = async () => {
    const res = await fetch(`/dev/token?${new URLSearchParams({ sub: me, rooms: `${room}:${role}` })}`);
    if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
    return (await res.json()).token;
  };
  const hub = new HubClient('/ws', { getToken });
  const meeting = new MeetingClient(hub);
  session = { hub, meeting, me, room };
  window.meetingDemo = session;

  hub.on('connecting', () => renderStatus('connecting'));
  hub.on('connected', () => renderStatus('connected'));
  hub.on('disconnected', ({ reconnect }) => renderStatus(reconnect ? 'connecting' : 'disconnected'));
  meeting.on('state', (s) => {
    renderMeetingState(s);
    render();
    if (['left', 'ended', 'removed'].includes(s.state)) finish(session);
  });
  for (const event of ['participants', 'track', 'track_removed', 'local', 'lock', 'active_speaker']) meeting.on(event, render);
  meeting.on('chat', addChat);
  meeting.on('error', showError);

  try {
    await hub.connect();
    await meeting.join(room);
  } catch (e) {
    showError(e);
    finish(session);
    return;
  }
  // Both at once: their announcements go out first, then one offer carries both tracks.
  const publishing = [];
  if (withMic) publishing.push(meeting.publishMicrophone());
  if (withCamera) publishing.push(meeting.publishCamera());
  for (const r of await Promise.allSettled(publishing)) if (r.status === 'rejected') showError(r.reason);
}

/** The meeting is over for this page: the socket goes too (a new join makes a new one). */
function finish(s) {
  if (!s || session !== s) return;
  s.meeting.close();
  s.hub.disconnect();
  renderStatus('disconnected');
  render();
}

/** Runs a meeting action, showing its error. */
async function act(fn) {
  const m = session?.meeting;
  if (!m || m.state !== 'joined') return;
  showError(null);
  try {
    await fn(m);
  } catch (e) {
    showError(e);
  }
}

function hostAction(action, tile) {
  act((m) => {
    const p = m.participant(tile.user);
    const track = (kind) => p?.tracks.find((t) => t.kind === kind)?.id;
    switch (action) {
      case 'mute-audio':
        return m.hostMute(tile.user, track('audio'));
      case 'mute-video':
        return m.hostMute(tile.user, track('video'));
      case 'mute-all':
        return m.hostMute(tile.user);
      case 'lower-hand':
        return m.lowerHand(tile.user);
      case 'remove':
        return m.remove(tile.user);
      default:
        return undefined;
    }
  });
}

// ---- wiring ----

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const me = $('me').value.trim();
  const room = $('room').value.trim();
  if (!me || !room) return;
  join(me, room, $('role').value, $('with-camera').checked, $('with-mic').checked);
});

$('camera').addEventListener('click', () =>
  act((m) => (m.localTrack('video') ? m.unpublish('video') : m.publishCamera())),
);
$('mic').addEventListener('click', () =>
  act((m) => (m.localTrack('audio') ? m.unpublish('audio') : m.publishMicrophone())),
);
$('screen').addEventListener('click', () =>
  act((m) => (m.localTrack('screen') ? m.unpublish('screen') : m.publishScreen())),
);
$('camera-mute').addEventListener('click', () => act((m) => m.setMuted('video', !m.localTrack('video')?.muted)));
$('mic-mute').addEventListener('click', () => act((m) => m.setMuted('audio', !m.localTrack('audio')?.muted)));
$('hand').addEventListener('click', () =>
  act((m) => (m.participant(m.user)?.hand_raised ? m.lowerHand() : m.raiseHand())),
);
$('lock').addEventListener('click', () => act((m) => m.lock(!m.locked)));
$('end').addEventListener('click', () => act((m) => m.end()));
$('leave').addEventListener('click', () => act((m) => m.leave()));

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-text').value.trim();
  if (!text) return;
  $('chat-text').value = '';
  act((m) => m.sendChat(text));
});

// The room in the address (meeting.html?room=standup) fills the form.
const params = new URLSearchParams(location.search);
if (params.get('room')) $('room').value = params.get('room');
if (params.get('name')) $('me').value = params.get('name');

renderStatus('disconnected');
renderMeetingState({ state: 'idle' });
