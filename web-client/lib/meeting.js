// Video meetings on top of HubClient (docs/protocol.md#meetings): one room at a time, two peer
// connections to the hub's media plane, and the room's state as the server tells it.
//
//   import { HubClient } from '/hub.js';
//   import { MeetingClient } from '/lib/meeting.js';
//   const hub = new HubClient('/ws', { getToken });
//   const meeting = new MeetingClient(hub);
//   meeting.on('track', (t) => attach(t.user, t.kind, t.stream));
//   await hub.connect();
//   await meeting.join('standup');
//   await meeting.publishCamera();
//   await meeting.publishMicrophone();
//
// Two connections, one offerer each, so there is never glare:
// - the PUBLISHER connection carries this client's tracks to the hub. The client offers on it,
//   after announcing every track it adds with `meeting.publish` (cid = MediaStreamTrack.id, which
//   is what the SDP's msid line names), and offers again whenever it adds or removes one. Offers
//   are serialised: a change made while one is in flight is carried by the next.
// - the SUBSCRIBER connection carries the other participants' tracks here. The hub offers on it
//   (an `offer` push) whenever what this client receives changes; each offer is answered with
//   `meeting.answer`, in the order they came. Every received track's stream id (msid) is the
//   room's track id, which `track_published` events and the join snapshot map to a user.
// Candidates trickle both ways (`meeting.candidate`, in snake case on the wire).
//
// The room's events come on the channel `room:{id}`. This client subscribes to it before it
// joins (the HubClient only delivers pushes of channels it has a subscription for; the join then
// finds the socket subscribed already) and drops it when the meeting is over for it.

import { Emitter, HubError, backoffDelay } from './util.js';

/** Simulcast encodings of a camera, lowest first: the rids the hub's layer choice knows. */
/** Join failures a rejoin waits out and tries again (a node shutting down, Redis busy). */
const REJOIN_RETRY = new Set(['unavailable', 'timeout']);
/** How many times in a row a rejoin is tried again after such failures before giving up. */
const REJOIN_ATTEMPTS = 6;

const SIMULCAST = [
  { rid: 'q', scale: 4, bitrate: 150_000 },
  { rid: 'h', scale: 2, bitrate: 500_000 },
  { rid: 'f', scale: 1, bitrate: 1_500_000 },
];

/**
 * @typedef {object} MeetingOptions
 * @property {RTCConfiguration} [rtcConfig] for both peer connections (no ICE servers by default:
 *   the hub's media port is reached directly)
 * @property {boolean} [simulcast] send the camera as three layers q/h/f where the browser can
 *   (default true)
 * @property {number} [answerTimeout] ms to wait for the hub's answer to an offer (default 15000)
 * @property {typeof RTCPeerConnection} [RTCPeerConnection] the class (default the global one)
 * @property {MediaDevices} [mediaDevices] default navigator.mediaDevices
 * @property {boolean} [rejoin] when the socket drops (and the hub client reconnects) or the room's
 *   node is lost, join the room again and publish the same tracks (default true); without it the
 *   meeting ends for this client (`left` with reason `disconnected`, or `ended` with `node_lost`)
 */

/**
 * @typedef {object} Participant
 * @property {string} user
 * @property {'host' | 'participant' | 'viewer'} role
 * @property {boolean} hand_raised
 * @property {boolean} me
 * @property {boolean} speaking the room's active speaker
 * @property {RemoteTrack[]} tracks its published tracks (own ones for `me`)
 */

/**
 * @typedef {object} RemoteTrack a track some participant published, as this client knows it
 * @property {string} id the room's track id ("t3")
 * @property {string} user
 * @property {'audio' | 'video' | 'screen'} kind
 * @property {boolean} muted
 * @property {string[]} layers simulcast rids
 * @property {MediaStream | null} stream once its media has arrived (the stream's id is `id`)
 */

/**
 * @typedef {object} LocalTrack a track this client publishes
 * @property {'audio' | 'video' | 'screen'} kind
 * @property {MediaStreamTrack} track
 * @property {MediaStream} stream
 * @property {string | null} id the room's track id, once announced
 * @property {boolean} muted
 * @property {boolean} forced muted by a host
 */

/**
 * One participant's side of a meeting.
 *
 * Events (`on(name, fn)`):
 * - `state` `{state, reason?, by?}`: `idle` → `joining` → `joined` → `left` | `ended` | `removed`;
 *   `joined` → `rejoining` (reason `disconnected` or `node_lost`) → `joining` → `joined` when the
 *   client rejoins by itself (option `rejoin`): remote tracks are removed and arrive again, own
 *   tracks are published again (the same `MediaStreamTrack`s, not captured anew)
 * - `participants` {@link Participant}[]: who is in the room, their roles, hands, tracks changed
 * - `track` {@link RemoteTrack}: another participant's track has media to show (or its mute
 *   state changed): attach `stream`
 * - `track_removed` `{id, user, kind}`
 * - `track_muted` `{user, track, muted, forced, by?}` (anyone's, own tracks included)
 * - `local` {@link LocalTrack}[]: what this client publishes changed (added, removed, muted)
 * - `active_speaker` `{user}` (`user` null when nobody speaks)
 * - `hand` `{user, raised, by?}`
 * - `lock` `{locked, by?}`
 * - `chat` `{from, text, offset}`
 * - `ended` `{reason, by?}`, `removed` `{by?}`: the meeting is over for this client; its peer
 *   connections are closed and its tracks stopped
 * - `error` {@link HubError}: something failed outside a call the app made (a renegotiation, a
 *   media error the hub reported)
 */
export class MeetingClient extends Emitter {
  /**
   * @param {import('../hub.js').HubClient} hub
   * @param {MeetingOptions} [options]
   */
  constructor(hub, options = {}) {
    super();
    this.hub = hub;
    this.options = { simulcast: true, answerTimeout: 15_000, rtcConfig: {}, rejoin: true, ...options };
    /** 'idle' | 'joining' | 'joined' | 'rejoining' | 'left' | 'ended' | 'removed' */
    this.state = 'idle';
    /** @type {string | null} */
    this.room = null;
    /** @type {string | null} */
    this.user = null;
    /** @type {'host' | 'participant' | 'viewer' | null} */
    this.role = null;
    this.locked = false;
    /** @type {string | null} */
    this.activeSpeaker = null;
    /** @type {RTCPeerConnection | null} */
    this.publisher = null;
    /** @type {RTCPeerConnection | null} */
    this.subscriber = null;
    /** Own tracks to publish again once rejoined. @type {{kind: string, track: MediaStreamTrack, stream: MediaStream, muted: boolean}[]} */
    this._kept = [];
    this._rejoinBusy = false;
    this._rejoinAttempt = 0;
    this._reset();
    this._offHub = [
      hub.on('disconnected', ({ reconnect }) => {
        // The hub makes a participant whose socket closed leave the room.
        if (reconnect && this.options.rejoin && (this.state === 'joined' || this._rejoinBusy)) {
          // Mid-rejoin, the rejoin itself sees the failure and waits for the next connection.
          if (this.state === 'joined') this._suspend('disconnected');
        } else if (!reconnect && this.state === 'rejoining') this._finish('left', { reason: 'disconnected' });
        else if (this.state === 'joined' || this.state === 'joining') this._finish('left', { reason: 'disconnected' });
      }),
      hub.on('connected', () => {
        if (this.state === 'rejoining') this._rejoin();
      }),
    ];
  }

  _reset() {
    /** @type {Map<string, {user: string, role: string, hand_raised: boolean}>} */
    this._people = new Map();
    /** @type {Map<string, RemoteTrack & {receiver?: RTCRtpReceiver, track?: MediaStreamTrack}>} by room track id */
    this._tracks = new Map();
    /** Received media whose track id no event has named yet, by stream id. */
    this._orphans = new Map();
    /** @type {Map<string, LocalTrack & {transceiver: RTCRtpTransceiver | null}>} by kind */
    this._local = new Map();
    this._sub = null;
    this._userSub = null;
    this._pubBusy = null;
    this._pubDirty = false;
    this._answerWaiter = null;
    this._pubCandidatesOut = null;
    this._pubCandidatesIn = [];
    this._subChain = Promise.resolve();
    this._subCandidatesOut = null;
    this._subCandidatesIn = [];
    this.activeSpeaker = null;
    this.locked = false;
  }

  // ---- reading state ----

  /** @returns {Participant[]} joined first-come, this client first */
  participants() {
    const list = [];
    for (const p of this._people.values()) {
      const me = p.user === this.user;
      const tracks = me
        ? [...this._local.values()].filter((l) => l.id).map((l) => ({ id: l.id, user: p.user, kind: l.kind, muted: l.muted, layers: [], stream: l.stream }))
        : [...this._tracks.values()].filter((t) => t.user === p.user).map(publicTrack);
      list.push({ user: p.user, role: p.role, hand_raised: p.hand_raised, me, speaking: this.activeSpeaker === p.user, tracks });
    }
    return list.sort((a, b) => Number(b.me) - Number(a.me));
  }

  /** @param {string} user @returns {Participant | undefined} */
  participant(user) {
    return this.participants().find((p) => p.user === user);
  }

  /** @returns {RemoteTrack[]} every other participant's track */
  remoteTracks() {
    return [...this._tracks.values()].map(publicTrack);
  }

  /** @returns {LocalTrack[]} */
  localTracks() {
    return [...this._local.values()].map(publicLocal);
  }

  /** @param {'audio' | 'video' | 'screen'} kind */
  localTrack(kind) {
    const l = this._local.get(kind);
    return l ? publicLocal(l) : undefined;
  }

  /**
   * The receiving statistics of another participant's track (its `inbound-rtp` entry), or null
   * before its media has arrived.
   * @param {string} id the room's track id
   * @returns {Promise<object | null>}
   */
  async trackStats(id) {
    const receiver = this._tracks.get(id)?.receiver;
    if (!receiver) return null;
    const report = await receiver.getStats();
    for (const s of report.values()) if (s.type === 'inbound-rtp') return s;
    return null;
  }

  get isHost() {
    return this.role === 'host';
  }

  // ---- joining and leaving ----

  /**
   * Joins `room` (the token must grant it) and opens the subscriber connection: the other
   * participants' tracks start arriving (`track` events). Publish with `publishCamera` & co.
   * @param {string} room
   * @returns {Promise<{role: string, room: object}>} the join reply
   */
  async join(room) {
    if (this.state === 'joining' || this.state === 'joined' || this.state === 'rejoining') {
      throw new HubError('already_joined', `already in room ${this.room}`);
    }
    if (this.hub.state !== 'connected') await this.hub.connect();
    try {
      return await this._enter(room);
    } catch (e) {
      this._finish('idle', { reason: 'join_failed' });
      throw e;
    }
  }

  /** Subscribes to the room's channel, opens the subscriber connection and joins. */
  async _enter(room) {
    this._reset();
    this.room = room;
    this.user = this.hub.info?.user ?? null;
    this._setState('joining');
    const channel = `room:${room}`;
    this._sub = this.hub.subscribe(channel, {
      onPublication: (pub) => this._onPush(pub),
      // Only a reconnect loses history, and after one this client joins afresh.
      onRefetch: () => {},
    });
    await this._sub.ready;
    // `removed` (with the host who did it) is told on the user's own channel; an app that holds
    // that channel already (a chat client) still learns of the removal from the room channel's
    // `participant_left`, without `by`.
    const userChannel = `user:${this.user}`;
    if (!this.hub.getSubscription(userChannel)) {
      this._userSub = this.hub.subscribe(userChannel, {
        onPublication: (pub) => pub.event === 'removed' && this._onRemoved(pub.data?.by),
      });
    }
    this._openSubscriber();
    const reply = await this._req('meeting.join');
    this.role = reply.role;
    this._loadSnapshot(reply.room);
    this._setState('joined');
    this._emitPeople();
    return reply;
  }

  /**
   * The socket dropped or the room's node was lost: close the connections, keep the own tracks,
   * and join again as soon as the hub client is connected.
   * @param {'disconnected' | 'node_lost'} reason
   */
  _suspend(reason) {
    this._rejoinAttempt = 0;
    this._kept.push(...[...this._local.values()].map(({ kind, track, stream, muted }) => ({ kind, track, stream, muted })));
    this._local.clear();
    const removed = this._teardown();
    this._setState('rejoining', { reason });
    this._announceTeardown(removed);
    if (this.hub.state === 'connected') this._rejoin();
  }

  async _rejoin() {
    if (this._rejoinBusy) return;
    this._rejoinBusy = true;
    try {
      await this._enter(this.room);
      this._rejoinAttempt = 0;
      const kept = this._kept.splice(0);
      for (const k of kept) {
        if (this.state !== 'joined') {
          this._kept.push(k); // suspended again meanwhile
          continue;
        }
        if (k.track.readyState !== 'live') continue;
        await this.publishTrack(k.track, k.kind, { stream: k.stream, muted: k.muted }).catch((e) => this._quietError(e));
      }
    } catch (e) {
      if (this.state !== 'joining') return; // left, or closed, meanwhile
      if (this.hub.state === 'connecting' && this.options.rejoin) {
        // The socket went again: the next `connected` tries once more.
        this._teardown();
        this._setState('rejoining', { reason: 'disconnected' });
      } else if (REJOIN_RETRY.has(e?.code) && this._rejoinAttempt < REJOIN_ATTEMPTS) {
        // The room's node is going away (or the cluster is busy): try again shortly.
        const delay = backoffDelay(this._rejoinAttempt++, 250, 4000);
        this._teardown();
        this._setState('rejoining', { reason: e.code });
        setTimeout(() => this.state === 'rejoining' && this.hub.state === 'connected' && this._rejoin(), delay);
      } else {
        this._finish('left', { reason: 'rejoin_failed', code: e?.code });
        this.emit('error', e instanceof HubError ? e : new HubError('internal', String(e?.message ?? e)));
      }
    } finally {
      this._rejoinBusy = false;
    }
  }

  /** Leaves the room: the hub is told, the connections closed, the local tracks stopped. */
  async leave() {
    if (this.state === 'rejoining') {
      this._finish('left', { reason: 'left' });
      return;
    }
    if (this.state !== 'joined' && this.state !== 'joining') return;
    const room = this.room;
    try {
      await this.hub._request({ op: 'meeting.leave', room });
    } catch (e) {
      // Gone already (ended, removed, the connection closed): leaving is done either way.
      if (!['not_in_room', 'not_found', 'room_ended', 'disconnected', 'not_connected'].includes(e.code)) throw e;
    } finally {
      this._finish('left', { reason: 'left' });
    }
  }

  /** Stops listening to the hub (after `leave`). */
  close() {
    for (const off of this._offHub) off();
    const inRoom = ['joining', 'joined', 'rejoining'].includes(this.state);
    this._finish(inRoom ? 'left' : this.state, { reason: 'closed' });
  }

  // ---- publishing ----

  /**
   * Captures the camera and publishes it (as simulcast layers q/h/f where the browser allows).
   * @param {MediaTrackConstraints} [constraints]
   * @returns {Promise<LocalTrack>}
   */
  async publishCamera(constraints = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } }) {
    const stream = await this._devices().getUserMedia({ video: constraints, audio: false });
    return this.publishTrack(stream.getVideoTracks()[0], 'video', { stream });
  }

  /**
   * Captures the microphone and publishes it.
   * @param {MediaTrackConstraints | true} [constraints]
   * @param {{muted?: boolean}} [opts] publish muted (a microphone that starts off)
   */
  async publishMicrophone(constraints = true, { muted = false } = {}) {
    const stream = await this._devices().getUserMedia({ audio: constraints, video: false });
    return this.publishTrack(stream.getAudioTracks()[0], 'audio', { stream, muted });
  }

  /** Shares a screen (or window, or tab) as a track of kind `screen`. */
  async publishScreen() {
    const stream = await this._devices().getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    // The browser's own "stop sharing" ends the track.
    track.addEventListener('ended', () => {
      if (this._local.get('screen')?.track === track) this.unpublish('screen').catch((e) => this.emit('error', e));
    });
    return this.publishTrack(track, 'screen', { stream });
  }

  /**
   * Publishes a track this client holds: announces it (`meeting.publish`), adds it to the
   * publisher connection and offers. Resolves once the hub has answered an offer carrying it.
   * On a refusal (`viewer_cannot_publish`, `too_many_tracks`, ...) the track is stopped and the
   * promise rejects with the hub's code.
   * @param {MediaStreamTrack} track
   * @param {'audio' | 'video' | 'screen'} kind
   * @param {{stream?: MediaStream, muted?: boolean, simulcast?: boolean}} [opts]
   * @returns {Promise<LocalTrack>}
   */
  async publishTrack(track, kind, { stream, muted = false, simulcast = this.options.simulcast } = {}) {
    if (this.state !== 'joined') {
      track.stop();
      throw new HubError('not_in_room', 'join a room first');
    }
    if (this._local.has(kind)) {
      track.stop();
      throw new HubError('track_already_published', `a ${kind} track is published already`);
    }
    stream ??= new MediaStream([track]);
    const encodings = kind === 'video' && simulcast ? cameraEncodings(track) : null;
    const entry = { kind, track, stream, id: null, muted, forced: false, transceiver: null };
    this._local.set(kind, entry);
    try {
      const layers = encodings?.map((e) => ({ rid: e.rid, width: e.width, height: e.height, bitrate_bps: e.maxBitrate }));
      const reply = await this._req('meeting.publish', {
        cid: track.id,
        kind,
        ...(layers ? { layers } : {}),
        ...(muted ? { muted: true } : {}),
      });
      if (this._local.get(kind) !== entry) throw new HubError('cancelled', 'the meeting ended while publishing');
      entry.id = reply.track;
      track.enabled = !muted;
      const pc = this._openPublisher();
      const init = { direction: 'sendonly', streams: [stream] };
      if (encodings) init.sendEncodings = encodings.map(({ rid, scaleResolutionDownBy, maxBitrate }) => ({ rid, scaleResolutionDownBy, maxBitrate }));
      entry.transceiver = pc.addTransceiver(track, init);
      this._emitLocal();
      await this._negotiate();
      return publicLocal(entry);
    } catch (e) {
      if (this._local.get(kind) === entry) {
        this._local.delete(kind);
        if (entry.transceiver && this.publisher && this.publisher.signalingState !== 'closed') {
          this.publisher.removeTrack(entry.transceiver.sender);
        }
        this._emitLocal();
      }
      // A track kept for a rejoin (the meeting was suspended meanwhile) lives on.
      if (!this._kept.some((k) => k.track === track)) track.stop();
      throw e;
    }
  }

  /**
   * Stops publishing the track of `kind`: `meeting.unpublish`, then an offer without it.
   * @param {'audio' | 'video' | 'screen'} kind
   */
  async unpublish(kind) {
    const entry = this._local.get(kind);
    if (!entry) return;
    this._local.delete(kind);
    entry.track.stop();
    this._emitLocal();
    if (this.state !== 'joined') return;
    if (entry.id) await this._req('meeting.unpublish', { track: entry.id });
    if (entry.transceiver && this.publisher?.signalingState !== 'closed') {
      this.publisher.removeTrack(entry.transceiver.sender);
      await this._negotiate();
    }
  }

  /**
   * Mutes or unmutes an own track: the hub stops forwarding it (`meeting.mute`), and the track is
   * disabled here too (no camera light, no sound captured).
   * @param {'audio' | 'video' | 'screen'} kind
   * @param {boolean} muted
   */
  async setMuted(kind, muted) {
    const entry = this._local.get(kind);
    if (!entry?.id) throw new HubError('unknown_track', `no published ${kind} track`);
    await this._req('meeting.mute', { track: entry.id, muted });
    entry.track.enabled = !muted;
    entry.muted = muted;
    if (!muted) entry.forced = false;
    this._emitLocal();
  }

  // ---- hands, chat, host controls ----

  raiseHand() {
    return this._req('meeting.raise_hand');
  }

  /** Lowers the own hand, or (hosts) someone else's. @param {string} [user] */
  lowerHand(user) {
    return this._req('meeting.lower_hand', user && user !== this.user ? { user } : {});
  }

  /** @param {string} text */
  sendChat(text) {
    return this.hub.publish(`room:${this.room}`, { text }, 'chat');
  }

  /** Hosts: mutes one of `user`'s tracks, or all of them. @param {string} user @param {string} [track] */
  hostMute(user, track) {
    return this._req('meeting.host_mute', track ? { user, track } : { user });
  }

  /** Hosts: removes `user` (it cannot join this room again). @param {string} user */
  remove(user) {
    return this._req('meeting.remove', { user });
  }

  /** Hosts: only hosts may join while locked. @param {boolean} locked */
  lock(locked) {
    return this._req('meeting.lock', { locked });
  }

  /** Hosts: ends the meeting for everyone. */
  end() {
    return this._req('meeting.end');
  }

  /**
   * Tells the hub the size a video is shown at, so it forwards the smallest simulcast layer
   * that covers it.
   * @param {string} track @param {number} width @param {number} height
   */
  setVideoSize(track, width, height) {
    return this._req('meeting.subscribe', { tracks: [track], max_width: Math.round(width), max_height: Math.round(height) });
  }

  // ---- the room's pushes ----

  /** @param {import('./subscription.js').Publication} pub */
  _onPush(pub) {
    if (this.state !== 'joining' && this.state !== 'joined') return;
    const d = pub.data ?? {};
    switch (pub.event) {
      // For this client's connections alone (no offset).
      case 'offer':
        this._onServerOffer(d.sdp);
        return;
      case 'answer':
        this._answerWaiter?.resolve(d.sdp);
        return;
      case 'candidate':
        this._onServerCandidate(d.target, d.candidate);
        return;
      case 'error': {
        const err = new HubError(d.code ?? 'media_failed', d.message ?? 'media error');
        if (this._answerWaiter) this._answerWaiter.reject(err);
        else this.emit('error', err);
        return;
      }
      // Room events.
      case 'participant_joined':
        this._people.set(d.user, { user: d.user, role: d.role, hand_raised: false });
        this._emitPeople();
        return;
      case 'participant_left':
        if (d.user === this.user) {
          if (d.reason === 'removed') this._onRemoved(undefined);
          // This user joined again from another connection (another tab), which took its place.
          // The joining session hears it too (before its join reply): it is the one that stays.
          else if (d.reason === 'replaced' && this.state === 'joined') this._finish('left', { reason: 'replaced' });
          return;
        }
        this._people.delete(d.user);
        for (const t of [...this._tracks.values()]) if (t.user === d.user) this._dropTrack(t.id);
        if (this.activeSpeaker === d.user) this.activeSpeaker = null;
        this._emitPeople();
        return;
      case 'track_published':
        if (d.user === this.user) return;
        this._addTrack({ id: d.track, user: d.user, kind: d.kind, muted: Boolean(d.muted), layers: d.layers ?? [] });
        this._emitPeople();
        return;
      case 'track_unpublished':
        if (d.user === this.user) return;
        this._dropTrack(d.track);
        this._emitPeople();
        return;
      case 'track_muted':
        this._onTrackMuted(d);
        return;
      case 'active_speaker':
        this.activeSpeaker = d.user ?? null;
        this.emit('active_speaker', { user: this.activeSpeaker });
        this._emitPeople();
        return;
      case 'hand_raised':
      case 'hand_lowered': {
        const p = this._people.get(d.user);
        if (p) p.hand_raised = pub.event === 'hand_raised';
        this.emit('hand', { user: d.user, raised: pub.event === 'hand_raised', by: d.by });
        this._emitPeople();
        return;
      }
      case 'lock_changed':
        this.locked = Boolean(d.locked);
        this.emit('lock', { locked: this.locked, by: d.by });
        return;
      case 'room_ended':
        // Its node was lost: the room starts again on a live node when joined again.
        if (d.reason === 'node_lost' && this.options.rejoin && this.state === 'joined') this._suspend('node_lost');
        else this._finish('ended', { reason: d.reason, by: d.by });
        return;
      case 'chat':
        this.emit('chat', { from: pub.from, text: String(d.text ?? ''), offset: pub.offset });
        return;
      default:
        // Other events (newer servers) are not this client's business.
    }
  }

  _onTrackMuted(d) {
    if (d.user === this.user) {
      const entry = [...this._local.values()].find((l) => l.id === d.track);
      if (entry) {
        entry.muted = Boolean(d.muted);
        entry.forced = Boolean(d.forced) && entry.muted;
        // A host's mute holds here too: nothing is captured while the hub would drop it anyway.
        entry.track.enabled = !entry.muted;
        this._emitLocal();
      }
    } else {
      const t = this._tracks.get(d.track);
      if (t) {
        t.muted = Boolean(d.muted);
        if (t.stream) this.emit('track', publicTrack(t));
      }
    }
    this.emit('track_muted', { user: d.user, track: d.track, muted: Boolean(d.muted), forced: Boolean(d.forced), by: d.by });
    this._emitPeople();
  }

  _onRemoved(by) {
    if (this.state === 'joined' || this.state === 'joining') this._finish('removed', { by });
  }

  _loadSnapshot(room) {
    this.locked = Boolean(room?.locked);
    // The speaker chosen before this client joined: no `active_speaker` event repeats it.
    this.activeSpeaker = room?.active_speaker ?? null;
    this._people.clear();
    for (const p of room?.participants ?? []) {
      this._people.set(p.user, { user: p.user, role: p.role, hand_raised: Boolean(p.hand_raised) });
      if (p.user === this.user) continue;
      for (const t of p.tracks ?? []) {
        this._addTrack({ id: t.id, user: p.user, kind: t.kind, muted: Boolean(t.muted), layers: (t.layers ?? []).map((l) => l.rid ?? l) });
      }
    }
  }

  _addTrack(info) {
    const known = this._tracks.get(info.id);
    const t = Object.assign(known ?? { stream: null }, info);
    this._tracks.set(info.id, t);
    const media = this._orphans.get(info.id);
    if (media) {
      this._orphans.delete(info.id);
      Object.assign(t, media);
    }
    if (t.stream) this.emit('track', publicTrack(t));
  }

  _dropTrack(id) {
    const t = this._tracks.get(id);
    this._orphans.delete(id);
    if (!t) return;
    this._tracks.delete(id);
    this.emit('track_removed', { id, user: t.user, kind: t.kind });
  }

  // ---- peer connections ----

  _newPeer(target) {
    const Pc = this.options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    // The hub bundles everything on one port. Only the publisher insists on it: the hub's first
    // offer on the subscriber connection may come before any track flows, with no m-line and
    // so no BUNDLE group, which a max-bundle connection refuses.
    const policy = target === 'publisher' ? { bundlePolicy: 'max-bundle' } : {};
    const pc = new Pc({ ...policy, ...this.options.rtcConfig });
    pc.addEventListener('icecandidate', (ev) => {
      const c = ev.candidate;
      if (!c || !c.candidate) return;
      const wire = { candidate: c.candidate, sdp_mid: c.sdpMid ?? undefined, sdp_mline_index: c.sdpMLineIndex ?? undefined };
      if (c.usernameFragment) wire.username_fragment = c.usernameFragment;
      // Sent only after the description they belong to has gone out.
      const held = target === 'publisher' ? this._pubCandidatesOut : this._subCandidatesOut;
      if (held) held.push(wire);
      else this._sendCandidate(target, wire);
    });
    return pc;
  }

  _sendCandidate(target, candidate) {
    this._req('meeting.candidate', { target, candidate }).catch((e) => this._quietError(e));
  }

  _openSubscriber() {
    if (this.subscriber) return this.subscriber;
    const pc = this._newPeer('subscriber');
    this._subCandidatesOut = [];
    pc.addEventListener('track', (ev) => {
      const stream = ev.streams[0];
      if (!stream) return;
      const media = { stream, track: ev.track, receiver: ev.receiver };
      const t = this._tracks.get(stream.id);
      if (t) {
        Object.assign(t, media);
        this.emit('track', publicTrack(t));
        this._emitPeople();
      } else {
        // Media can come before the event that names its owner.
        this._orphans.set(stream.id, media);
      }
    });
    this.subscriber = pc;
    return pc;
  }

  _openPublisher() {
    if (this.publisher) return this.publisher;
    this.publisher = this._newPeer('publisher');
    this._pubCandidatesOut = [];
    return this.publisher;
  }

  /** Applies the hub's offers on the subscriber connection one after the other. */
  _onServerOffer(sdp) {
    const pc = this.subscriber;
    if (!pc) return;
    this._subChain = this._subChain.then(async () => {
      if (pc.signalingState === 'closed') return;
      try {
        await pc.setRemoteDescription({ type: 'offer', sdp });
        await this._flushCandidates(pc, this._subCandidatesIn);
        await pc.setLocalDescription(await pc.createAnswer());
        await this._req('meeting.answer', { sdp: pc.localDescription.sdp });
        const held = this._subCandidatesOut;
        this._subCandidatesOut = null;
        for (const c of held ?? []) this._sendCandidate('subscriber', c);
      } catch (e) {
        if (pc.signalingState !== 'closed') this._quietError(e, 'media_failed');
      }
    });
  }

  _onServerCandidate(target, candidate) {
    if (!candidate?.candidate) return;
    const pc = target === 'publisher' ? this.publisher : this.subscriber;
    if (!pc || pc.signalingState === 'closed') return;
    const init = {
      candidate: candidate.candidate,
      sdpMid: candidate.sdp_mid ?? null,
      sdpMLineIndex: candidate.sdp_mline_index ?? null,
    };
    if (candidate.username_fragment) init.usernameFragment = candidate.username_fragment;
    const held = target === 'publisher' ? this._pubCandidatesIn : this._subCandidatesIn;
    // A candidate needs an m-line to belong to: the hub can send one while the description in
    // place has none (its first subscriber offer may come before any track flows). It is kept
    // for the next description.
    if (!hasMedia(pc.remoteDescription)) {
      held.push(init);
    } else {
      addCandidate(pc, init).catch((e) => this._quietError(e, 'media_failed'));
    }
  }

  /** Adds the candidates held for `pc` once its remote description has an m-line. */
  async _flushCandidates(pc, held) {
    if (!hasMedia(pc.remoteDescription)) return;
    for (const c of held.splice(0)) await addCandidate(pc, c).catch((e) => this._quietError(e, 'media_failed'));
  }

  /**
   * Offers on the publisher connection until what it carries has been answered. Calls made while
   * an offer is in flight share the next round.
   * @returns {Promise<void>}
   */
  _negotiate() {
    this._pubDirty = true;
    if (this._pubBusy) return this._pubBusy;
    const pc = this.publisher;
    this._pubBusy = (async () => {
      try {
        while (this._pubDirty && pc.signalingState !== 'closed') {
          this._pubDirty = false;
          await pc.setLocalDescription(await pc.createOffer());
          const answer = this._waitAnswer();
          try {
            await this._req('meeting.offer', { sdp: pc.localDescription.sdp });
          } catch (e) {
            answer.cancel();
            throw e;
          }
          const held = this._pubCandidatesOut;
          this._pubCandidatesOut = null;
          for (const c of held ?? []) this._sendCandidate('publisher', c);
          const sdp = await answer.promise;
          if (pc.signalingState === 'closed') return;
          await pc.setRemoteDescription({ type: 'answer', sdp });
          await this._flushCandidates(pc, this._pubCandidatesIn);
        }
      } catch (e) {
        // The next negotiation starts from a stable state.
        if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
        throw e;
      } finally {
        this._pubBusy = null;
      }
    })();
    return this._pubBusy;
  }

  _waitAnswer() {
    let waiter;
    const promise = new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(reject, new HubError('timeout', 'no answer to the offer')), this.options.answerTimeout);
      const done = (fn, v) => {
        clearTimeout(timer);
        if (this._answerWaiter === waiter) this._answerWaiter = null;
        fn(v);
      };
      waiter = { resolve: (sdp) => done(resolve, sdp), reject: (e) => done(reject, e) };
    });
    this._answerWaiter = waiter;
    return { promise, cancel: () => waiter.reject(new HubError('cancelled', 'offer not sent')) };
  }

  // ---- plumbing ----

  _req(op, fields = {}) {
    return this.hub._request({ op, room: this.room, ...fields });
  }

  _devices() {
    const d = this.options.mediaDevices ?? globalThis.navigator?.mediaDevices;
    if (!d) throw new HubError('unsupported', 'no media devices here (a secure context is needed)');
    return d;
  }

  _quietError(e, code = 'internal') {
    // Errors after the meeting ended are the teardown's echo.
    if (this.state !== 'joined' && this.state !== 'joining') return;
    this.emit('error', e instanceof HubError ? e : new HubError(code, String(e?.message ?? e)));
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.emit('state', { state, ...extra });
  }

  /** The meeting is over for this client: close everything, then tell the app. */
  _finish(state, extra) {
    const was = this.state;
    for (const l of [...this._local.values(), ...this._kept.splice(0)]) l.track.stop();
    this._local.clear();
    const removed = this._teardown();
    if (was === state) return;
    this._setState(state, extra);
    this._announceTeardown(removed);
    if (state === 'ended') this.emit('ended', extra);
    if (state === 'removed') this.emit('removed', extra);
  }

  /**
   * Closes the connections and subscriptions and forgets the room's state (own tracks are the
   * caller's). @returns {string[]} the remote tracks that went
   */
  _teardown() {
    for (const pc of [this.publisher, this.subscriber]) pc?.close();
    this.publisher = this.subscriber = null;
    this._answerWaiter?.reject(new HubError('cancelled', 'the meeting is over'));
    this._sub?.unsubscribe().catch(() => {});
    this._userSub?.unsubscribe().catch(() => {});
    this._sub = this._userSub = null;
    const tracks = [...this._tracks.keys()];
    this._tracks.clear();
    this._orphans.clear();
    this._people.clear();
    this.activeSpeaker = null;
    return tracks;
  }

  /** @param {string[]} removed remote track ids */
  _announceTeardown(removed) {
    for (const id of removed) this.emit('track_removed', { id });
    this._emitLocal();
    this._emitPeople();
  }

  _emitPeople() {
    this.emit('participants', this.participants());
  }

  _emitLocal() {
    this.emit('local', this.localTracks());
  }
}

/**
 * Simulcast encodings for a camera track, from its actual size: three layers at 1/4, 1/2 and
 * full size. The browser drops the layers a small capture cannot carry.
 * @param {MediaStreamTrack} track
 */
function cameraEncodings(track) {
  const { width = 1280, height = 720 } = track.getSettings?.() ?? {};
  return SIMULCAST.map((l) => ({
    rid: l.rid,
    scaleResolutionDownBy: l.scale,
    maxBitrate: l.bitrate,
    width: Math.round(width / l.scale),
    height: Math.round(height / l.scale),
  }));
}

/** @param {RTCSessionDescription | null} desc */
function hasMedia(desc) {
  return Boolean(desc && /(^|\n)m=/.test(desc.sdp));
}

function addCandidate(pc, init) {
  return pc.addIceCandidate(init);
}

function publicTrack(t) {
  return { id: t.id, user: t.user, kind: t.kind, muted: t.muted, layers: t.layers ?? [], stream: t.stream ?? null };
}

function publicLocal(l) {
  return { kind: l.kind, track: l.track, stream: l.stream, id: l.id, muted: l.muted, forced: l.forced };
}
