// The dating-app chat on top of HubClient (docs/protocol.md#chat): conversations, messages keyed
// by (conversation, seq), receipts, typing, presence, and the sync that makes a reconnect lose and
// duplicate nothing.
//
//   import { HubClient } from '/hub.js';
//   import { ChatClient } from '/lib/chat.js';
//   const hub = new HubClient('/ws', { getToken });
//   const chat = new ChatClient(hub, { user: 'alice' });
//   chat.on('message', ({ conversation, message }) => render(conversation));
//   hub.connect();
//   await chat.whenSynced();
//   await chat.send(3, 'hi!');
//
// Everything the server tells a user arrives as a push on `user:{me}`; this client owns that one
// subscription. The HubClient keeps the subscription across reconnects and resumes it from its
// offset; on every (re)subscribe this client also runs the sync of docs/protocol.md ("Sync after a
// reconnect"): `chat.conversations`, then `chat.history` with `after` for each conversation that
// has messages above what is held. Messages are stored by seq, so whichever path brings one
// (push, resume, history, send reply) it is held and announced once.

import { Emitter, HubError, backoffDelay } from './util.js';

/** Server error codes after which a send is tried again with the same client_id. */
const SEND_RETRY = new Set(['disconnected', 'timeout', 'unavailable', 'internal', 'rate_limited']);
/** Failures after which a sync is tried again (with backoff) on the same connection. */
const SYNC_RETRY = new Set(['timeout', 'unavailable', 'internal', 'rate_limited']);

/**
 * @typedef {object} ChatOptions
 * @property {string} user the signed-in user (the token's `sub`): the client subscribes to `user:{user}`
 * @property {number} [pageSize] messages per `chat.history` page (1-100, default 50)
 * @property {number} [initialPage] when set, a conversation of which nothing is held loads only
 *   its newest `initialPage` messages (`before`), and older ones on `loadOlder`; by default the
 *   sync loads a conversation's whole history, as docs/protocol.md describes
 * @property {number} [typingInterval] the server's `chat.typing_interval` in ms (default 1000)
 * @property {number} [typingRefresh] ms after which a continued `typing(true)` is sent again, so
 *   the peer keeps showing it (default 3000)
 * @property {number} [typingTimeout] ms a peer's `typing:true` is shown without news (default 5000)
 * @property {number} [sendRetryFor] ms during which a send that failed for a transient reason
 *   (connection lost, no reply, rate limited) is tried again with the same client_id (default 120000)
 * @property {() => number} [now] the clock, in ms (default Date.now)
 */

/**
 * @typedef {object} Message
 * @property {string} id `"{conversation}:{seq}"`
 * @property {number} conversation
 * @property {number} seq
 * @property {string} from
 * @property {string} client_id
 * @property {string} text
 * @property {{url: string, type: string}} [attachment]
 * @property {number} ts Unix ms
 */

/**
 * @typedef {object} Presence
 * @property {string} user
 * @property {'online' | 'away' | 'offline'} status
 * @property {number | null} last_seen Unix ms
 */

/**
 * @typedef {object} Conversation what the server says of a conversation, plus `typing`
 * @property {number} id
 * @property {string} peer
 * @property {'active' | 'closed'} state
 * @property {number} created_at
 * @property {number} last_seq
 * @property {Message | null} last_message
 * @property {number} read own read position
 * @property {number} unread
 * @property {number} peer_delivered
 * @property {number} peer_read
 * @property {Presence} [presence] the peer's, while active
 * @property {boolean} typing the peer is typing
 */

/**
 * @typedef {object} PendingMessage a send that has no stored message yet
 * @property {number} conversation
 * @property {string} client_id
 * @property {string} text
 * @property {{url: string, type: string}} [attachment]
 * @property {'sending' | 'failed'} state
 * @property {HubError} [error] why it failed
 */

/**
 * A chat user's view: conversations, the messages of each, and the operations on them.
 *
 * Events (`on(name, fn)`):
 * - `match` {@link Conversation}: a new match (from a swipe, the peer's swipe, or the server API),
 *   or a closed conversation reopened (the server API can match a pair again)
 * - `super_like` `{from}`: someone super-liked this user
 * - `message` `{conversation, message, source}`: a message newly held; `source` is `push`,
 *   `history` (sync or paging) or `send` (this client's own send reply). Never twice per seq, but
 *   not always in seq order (a live push can come before the history that fills a gap):
 *   render from `messages(conversation)`, which is.
 * - `receipt` `{conversation, user, delivered, read}`: a delivered/read position moved (the
 *   peer's, or this user's own from any device)
 * - `typing` `{conversation, user, typing}`: the peer started or stopped typing (a peer's
 *   `typing:true` lapses after `typingTimeout`, or with their next message)
 * - `presence` {@link Presence}: a match's status changed
 * - `closed` `{conversation}`: a conversation was closed (unmatch, block, server API)
 * - `conversations` {@link Conversation}[]: the list or a summary in it changed
 * - `outbox` `{conversation}`: a pending send started, failed, or was stored
 * - `sync` `{state: 'start' | 'done' | 'failed', fetched?, error?}`
 * - `error` {@link HubError}: something failed outside any call the app made
 */
export class ChatClient extends Emitter {
  /**
   * @param {import('../hub.js').HubClient} hub a client for the user; connect it yourself
   * @param {ChatOptions} options
   */
  constructor(hub, options) {
    super();
    if (!options?.user) throw new HubError('bad_request', 'ChatClient needs the signed-in user');
    this.hub = hub;
    this.user = options.user;
    this.options = {
      pageSize: 50,
      initialPage: undefined,
      typingInterval: 1000,
      typingRefresh: 3000,
      typingTimeout: 5000,
      sendRetryFor: 120_000,
      now: Date.now,
      ...options,
    };
    /** @type {Map<number, ConvState>} */
    this._convs = new Map();
    /** Bumped by every sync, so that a sync overtaken by a newer one stops. */
    this._syncGen = 0;
    this.syncing = false;
    /** Whether a sync has completed since the last (re)subscribe. */
    this.synced = false;
    /** Whether any sync has completed: later lists announce the matches they bring as new. */
    this._everSynced = false;
    /** @type {Set<{resolve: Function, reject: Function}>} */
    this._syncWaiters = new Set();
    this._offHub = [
      hub.on('connected', (info) => {
        if (info.user !== this.user) {
          this.emit('error', new HubError('unauthorized', `connected as ${info.user}, not ${this.user}`));
        }
      }),
      hub.on('disconnected', ({ reconnect }) => {
        this.synced = false;
        if (!reconnect) this._settleSync(new HubError('disconnected', 'the connection closed for good'));
      }),
    ];
    this.channel = `user:${this.user}`;
    this.sub = hub.subscribe(this.channel, {
      onSubscribed: () => this._startSync(),
      onPublication: (pub) => this._onPush(pub),
      // A lost resume needs nothing more: the sync that follows every subscribe reloads state.
      onRefetch: () => {},
      onError: (err) => {
        this.emit('error', err);
        this._settleSync(err);
      },
    });
  }

  /** Stops: leaves `user:{me}` and drops timers. The hub connection stays as it is. */
  async close() {
    for (const off of this._offHub) off();
    for (const c of this._convs.values()) {
      clearTimeout(c.typingTimer);
      clearTimeout(c.typingOut.timer);
    }
    this._syncGen += 1;
    this._settleSync(new HubError('closed', 'chat client closed'));
    await this.sub.unsubscribe();
  }

  // ---- reading state ----

  /** @returns {Conversation[]} newest activity first */
  conversations() {
    return [...this._convs.values()]
      .filter((c) => c.known)
      .sort((a, b) => activity(b) - activity(a) || b.info.id - a.info.id)
      .map(snapshot);
  }

  /** @param {number} id @returns {Conversation | undefined} */
  conversation(id) {
    const c = this._convs.get(id);
    return c?.known ? snapshot(c) : undefined;
  }

  /** Held messages of a conversation, ascending seq. @param {number} id @returns {Message[]} */
  messages(id) {
    const c = this._convs.get(id);
    if (!c) return [];
    return [...c.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Sends not yet stored (or failed), oldest first. @param {number} id @returns {PendingMessage[]} */
  pending(id) {
    const c = this._convs.get(id);
    return c ? [...c.pending.values()].map((p) => ({ ...p })) : [];
  }

  /** Sum of `unread` over the conversations. */
  get totalUnread() {
    let n = 0;
    for (const c of this._convs.values()) if (c.known) n += c.info.unread;
    return n;
  }

  /**
   * How far one of this user's own messages got: `sent` (stored), `delivered` (reached one of the
   * peer's devices) or `read`.
   * @param {Message} message
   * @returns {'sent' | 'delivered' | 'read' | undefined} undefined for the peer's messages
   */
  messageStatus(message) {
    if (message.from !== this.user) return undefined;
    const c = this._convs.get(message.conversation);
    if (!c) return 'sent';
    if (message.seq <= c.info.peer_read) return 'read';
    if (message.seq <= c.info.peer_delivered) return 'delivered';
    return 'sent';
  }

  /**
   * Resolves once a sync has completed on the current connection (at once if it has); rejects if
   * the connection closes for good first.
   */
  whenSynced() {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve, reject) => this._syncWaiters.add({ resolve, reject }));
  }

  // ---- operations ----

  /**
   * Sends a message. The client_id is made here (or given) and kept across retries: a send that
   * fails for a transient reason (the connection went, no reply, `rate_limited`, `unavailable`)
   * is tried again with it for `sendRetryFor` ms, and the server stores it once whatever happens.
   * Meanwhile it is listed in `pending(conversation)`.
   * @param {number} conversation
   * @param {string} text
   * @param {{attachment?: {url: string, type: string}, clientId?: string}} [opts]
   * @returns {Promise<Message>} the stored message
   */
  send(conversation, text, { attachment, clientId } = {}) {
    const c = this._conv(conversation);
    const entry = {
      conversation,
      client_id: clientId ?? newClientId(),
      text,
      ...(attachment ? { attachment } : {}),
      state: 'sending',
    };
    c.pending.set(entry.client_id, entry);
    // The peer stops showing "typing" when the message arrives: nothing to send for it.
    this._typingSettled(c);
    this.emit('outbox', { conversation });
    return this._deliverPending(c, entry);
  }

  /**
   * Sends a failed pending message again, with its client_id.
   * @param {number} conversation
   * @param {string} clientId
   */
  retry(conversation, clientId) {
    const c = this._convs.get(conversation);
    const entry = c?.pending.get(clientId);
    if (!entry) return Promise.reject(new HubError('not_found', `no pending message ${clientId}`));
    if (entry.state === 'sending') return entry.promise;
    entry.state = 'sending';
    delete entry.error;
    this.emit('outbox', { conversation });
    return this._deliverPending(c, entry);
  }

  /** Drops a failed pending message. */
  discard(conversation, clientId) {
    const c = this._convs.get(conversation);
    if (c?.pending.get(clientId)?.state === 'failed') {
      c.pending.delete(clientId);
      this.emit('outbox', { conversation });
    }
  }

  /**
   * Marks the conversation read up to `seq` (default: the newest message held). Does nothing
   * (and sends nothing) when the read position is already there.
   * @param {number} conversation
   * @param {number} [seq]
   * @returns {Promise<{read: number, unread: number}>}
   */
  async markRead(conversation, seq) {
    const c = this._convs.get(conversation);
    if (!c) throw new HubError('not_found', `unknown conversation ${conversation}`);
    const upTo = seq ?? Math.max(0, ...c.messages.keys());
    if (upTo <= Math.max(c.info.read, c.readSent)) return { read: c.info.read, unread: c.info.unread };
    c.readSent = upTo;
    try {
      const receipt = await this.hub._request({ op: 'chat.read', conversation, seq: upTo });
      this._applyOwnReceipt(c, receipt);
    } catch (e) {
      // Not sent after all: a later call may try again.
      if (c.readSent === upTo) c.readSent = c.info.read;
      throw e;
    }
    return { read: c.info.read, unread: c.info.unread };
  }

  /**
   * Tells the peer this user is typing (or stopped). Call it on every keystroke: it sends at most
   * one `chat.typing` per `typingInterval` per conversation (the server refuses more), repeats a
   * continued `true` every `typingRefresh`, and sends a `false` only after a `true`, delayed
   * until the interval allows it.
   * @param {number} conversation
   * @param {boolean} [typing]
   */
  typing(conversation, typing = true) {
    const c = this._conv(conversation);
    const t = c.typingOut;
    t.want = typing;
    if (typing) {
      if (t.sent && this.options.now() - t.at < this.options.typingRefresh) return;
    } else if (!t.sent && !t.timer) {
      return;
    }
    this._scheduleTyping(c);
  }

  /**
   * @param {'online' | 'away'} status
   * @returns {Promise<string>} the user's status across their devices
   */
  async setStatus(status) {
    const data = await this.hub._request({ op: 'chat.status', status });
    return data.status;
  }

  /**
   * The presence of matches (users who are not a match are left out by the server).
   * @param {string[]} users
   * @returns {Promise<Presence[]>}
   */
  async presence(users) {
    const data = await this.hub._request({ op: 'chat.presence', users });
    for (const p of data.presence ?? []) this._applyPresence(p, false);
    return data.presence ?? [];
  }

  /**
   * @param {string} user
   * @param {'like' | 'pass' | 'super_like'} [kind]
   * @returns {Promise<{matched: boolean, conversation?: Conversation, remaining: number}>}
   */
  async swipe(user, kind = 'like') {
    const data = await this.hub._request({ op: 'chat.swipe', user, kind });
    if (data.conversation) this._upsert(data.conversation, { announce: true });
    return data;
  }

  /**
   * Closes the conversation for both users.
   * @param {number} conversation
   */
  async unmatch(conversation) {
    const data = await this.hub._request({ op: 'chat.unmatch', conversation });
    if (data?.conversation && typeof data.conversation === 'object') this._upsert(data.conversation, { announce: true });
    this._close(conversation);
  }

  /**
   * Blocks a user: every conversation with them closes, and neither can swipe or send to the other.
   * @param {string} user
   */
  async block(user) {
    await this.hub._request({ op: 'chat.block', user });
    for (const c of this._convs.values()) if (c.known && c.info.peer === user) this._close(c.info.id);
  }

  /**
   * @param {string} user
   * @param {string} reason 1-64 bytes
   * @param {{conversation?: number, details?: string}} [opts]
   * @returns {Promise<any>} the report's id
   */
  async report(user, reason, { conversation, details } = {}) {
    const frame = { op: 'chat.report', user, reason };
    if (conversation != null) frame.conversation = conversation;
    if (details) frame.details = details;
    const data = await this.hub._request(frame);
    return data.report;
  }

  /**
   * One `chat.history` page; what it brings is held (and announced) like any message.
   * @param {number} conversation
   * @param {{before?: number, after?: number, limit?: number}} [opts]
   * @returns {Promise<{messages: Message[], more: boolean, read: number, peer_delivered: number,
   *   peer_read: number, fresh: number}>} the reply, with `fresh`: how many messages were new here
   */
  async history(conversation, opts = {}) {
    const page = await this._page(conversation, opts);
    if (page.fresh) this._ackDelivered(this._conv(conversation));
    return page;
  }

  /** `history` without the delivery ack (the sync acknowledges once it has caught up). */
  async _page(conversation, { before, after, limit = this.options.pageSize } = {}) {
    const frame = { op: 'chat.history', conversation, limit };
    if (before != null) frame.before = before;
    if (after != null) frame.after = after;
    const page = await this.hub._request(frame);
    const c = this._conv(conversation);
    if (!c.known) {
      // Nothing was known about it yet: learn it with the next list.
      this._refreshList();
    }
    c.info.read = Math.max(c.info.read, page.read ?? 0);
    this._applyPeerPositions(c, page.peer_delivered, page.peer_read);
    let fresh = 0;
    for (const m of page.messages ?? []) if (this._hold(m, 'history')) fresh += 1;
    if (before != null && !page.more) c.complete = true;
    this._changed();
    return { ...page, fresh };
  }

  /**
   * Loads the page before the oldest message held (only useful with `initialPage`: otherwise the
   * whole history is held).
   * @param {number} conversation
   * @returns {Promise<boolean>} whether older messages remain
   */
  async loadOlder(conversation, limit = this.options.pageSize) {
    const c = this._conv(conversation);
    const oldest = c.messages.size ? Math.min(...c.messages.keys()) : c.info.last_seq + 1;
    if (c.complete || oldest <= 1) {
      c.complete = true;
      return false;
    }
    const page = await this.history(conversation, { before: oldest, limit });
    return page.more;
  }

  // ---- sync ----

  _startSync(attempt = 0) {
    const gen = ++this._syncGen;
    this.synced = false;
    this.syncing = true;
    this.emit('sync', { state: 'start' });
    this._sync(gen).then(
      (fetched) => {
        if (gen !== this._syncGen) return;
        this.syncing = false;
        this.synced = true;
        this._everSynced = true;
        this.emit('sync', { state: 'done', fetched });
        this._settleSync(null);
      },
      (err) => {
        if (gen !== this._syncGen) return;
        this.syncing = false;
        this.emit('sync', { state: 'failed', error: err });
        // A lost connection syncs again on the next subscribe.
        if (err.code === 'disconnected' || err.code === 'not_connected') return;
        this.emit('error', err);
        if (SYNC_RETRY.has(err.code)) {
          const { minReconnectDelay = 500, maxReconnectDelay = 20_000 } = this.hub.options ?? {};
          const delay = err.retryAfterMs ?? backoffDelay(attempt, minReconnectDelay, maxReconnectDelay);
          setTimeout(() => gen === this._syncGen && this.hub.state === 'connected' && this._startSync(attempt + 1), delay);
          return;
        }
        this._settleSync(err);
      },
    );
  }

  /** The list first, then each conversation's missing messages. @returns {Promise<number>} */
  async _sync(gen) {
    const data = await this.hub._request({ op: 'chat.conversations' });
    if (gen !== this._syncGen) return 0;
    this._applyList(data.conversations ?? []);
    let fetched = 0;
    for (const entry of data.conversations ?? []) {
      const c = this._convs.get(entry.id);
      fetched += await this._catchUp(c, gen);
      if (gen !== this._syncGen) return fetched;
      this._ackDelivered(c);
    }
    // Pushes that came meanwhile were not acknowledged one by one.
    for (const c of this._convs.values()) if (c.known) this._ackDelivered(c);
    return fetched;
  }

  /**
   * Pages `chat.history` after the contiguous top until the conversation's last seq is held.
   * @returns {Promise<number>} messages newly held
   */
  async _catchUp(c, gen) {
    let fetched = 0;
    const id = c.info.id;
    if (c.top === 0 && c.messages.size === 0 && c.info.last_seq > 0 && this.options.initialPage) {
      // Only the newest page for a conversation never loaded; older ones on loadOlder.
      c.top = Math.max(0, c.info.last_seq - this.options.initialPage);
      const page = await this._page(id, { before: c.info.last_seq + 1, limit: this.options.initialPage });
      if (gen !== this._syncGen) return fetched;
      fetched += page.messages.length;
      const first = page.messages[0]?.seq;
      if (first != null) {
        c.top = first - 1;
        this._advanceTop(c);
      }
      if (!page.more) c.complete = true;
    }
    let after = c.top;
    while (c.info.last_seq > c.top) {
      const page = await this._page(id, { after, limit: this.options.pageSize });
      if (gen !== this._syncGen) return fetched;
      fetched += page.messages.length;
      const last = page.messages.at(-1)?.seq;
      if (!page.more || last == null || last <= after) break;
      after = last;
    }
    return fetched;
  }

  _settleSync(err) {
    for (const w of this._syncWaiters) (err ? w.reject(err) : w.resolve());
    this._syncWaiters.clear();
  }

  /** A message push for a conversation not in the list: ask for the list again. */
  _refreshList() {
    if (this._listing || this.syncing) return;
    this._listing = true;
    this.hub
      ._request({ op: 'chat.conversations' })
      .then((data) => {
        this._applyList(data.conversations ?? []);
        for (const c of this._convs.values()) if (c.known && c.info.last_seq > c.top) this._fillGap(c);
      })
      .catch((e) => e.code !== 'disconnected' && e.code !== 'not_connected' && this.emit('error', e))
      .finally(() => (this._listing = false));
  }

  // ---- pushes ----

  /** @param {import('./subscription.js').Publication} pub */
  _onPush(pub) {
    const d = pub.data ?? {};
    switch (pub.event) {
      case 'match':
        if (d.conversation) this._upsert(d.conversation, { announce: true });
        return;
      case 'super_like':
        this.emit('super_like', { from: d.from });
        return;
      case 'message': {
        const c = this._conv(d.conversation);
        if (!c.known) this._refreshList();
        const behind = d.seq > c.top + 1;
        if (!this._hold(d, 'push')) return;
        this._changed();
        if (d.from !== this.user && !this.syncing) this._ackDelivered(c);
        // A hole below a live message (missed while a cluster's bus was out): fill it.
        if (behind && !this.syncing && c.known) this._fillGap(c);
        return;
      }
      case 'receipt': {
        const c = this._convs.get(d.conversation);
        if (!c) return;
        if (d.user === this.user) this._applyOwnReceipt(c, d);
        else this._applyPeerPositions(c, d.delivered, d.read);
        return;
      }
      case 'typing': {
        if (d.user === this.user) return;
        const c = this._conv(d.conversation);
        if (!c.info.peer) c.info.peer = d.user;
        this._peerTyping(c, d.typing !== false);
        return;
      }
      case 'presence':
        this._applyPresence(d, true);
        return;
      case 'closed':
        this._close(d.conversation);
        return;
      default:
        // An event this SDK does not know (a newer server): not an error.
        return;
    }
  }

  _fillGap(c) {
    if (c.filling) return;
    c.filling = true;
    const gen = this._syncGen;
    this._catchUp(c, gen)
      .then(() => this._ackDelivered(c))
      .catch((e) => e.code !== 'disconnected' && e.code !== 'not_connected' && this.emit('error', e))
      .finally(() => (c.filling = false));
  }

  // ---- state changes ----

  /** The per-conversation state, made empty (and not yet `known`) on first mention. */
  _conv(id) {
    let c = this._convs.get(id);
    if (!c) {
      c = {
        known: false,
        info: {
          id,
          peer: '',
          state: 'active',
          created_at: 0,
          last_seq: 0,
          last_message: null,
          read: 0,
          unread: 0,
          peer_delivered: 0,
          peer_read: 0,
          typing: false,
        },
        /** @type {Map<number, Message>} */
        messages: new Map(),
        /** Every seq from the first one wanted up to `top` is held. */
        top: 0,
        /** Whether nothing older than the oldest held message remains. */
        complete: false,
        /** @type {Map<string, PendingMessage>} */
        pending: new Map(),
        /** Highest seq a `chat.delivered` / `chat.read` was sent for. */
        deliveredSent: 0,
        deliveredBusy: false,
        /** This user's own delivered position (any device). */
        ownDelivered: 0,
        readSent: 0,
        typingTimer: null,
        typingOut: { sent: false, want: false, at: -Infinity, timer: null },
        filling: false,
        closedAnnounced: false,
      };
      this._convs.set(id, c);
    }
    return c;
  }

  /**
   * Takes a conversation entry from the server (list, swipe, match push). Monotonic positions
   * only move forward, so a stale entry never undoes newer pushes.
   */
  _upsert(entry, { announce = false, quiet = false } = {}) {
    const c = this._conv(entry.id);
    const isNew = !c.known;
    const i = c.info;
    i.peer = entry.peer ?? i.peer;
    i.created_at = entry.created_at ?? i.created_at;
    const wasClosed = i.state === 'closed';
    // The server's word on the state: a match made again for the pair (the server API does that)
    // reopens the same conversation.
    if (entry.state) i.state = entry.state;
    const reopened = wasClosed && i.state === 'active' && !isNew;
    if (reopened) c.closedAnnounced = false;
    if ((entry.last_seq ?? 0) >= i.last_seq) {
      i.last_seq = entry.last_seq ?? 0;
      i.last_message = entry.last_message ?? i.last_message;
      // The server's count covers everything up to its last_seq.
      i.unread = entry.unread ?? i.unread;
    }
    i.read = Math.max(i.read, entry.read ?? 0);
    i.peer_delivered = Math.max(i.peer_delivered, entry.peer_delivered ?? 0);
    i.peer_read = Math.max(i.peer_read, entry.peer_read ?? 0);
    if (i.state === 'closed') delete i.presence;
    else if (entry.presence) i.presence = { ...entry.presence };
    c.known = true;
    if (i.last_message) this._hold(i.last_message, 'history', { contiguousOnly: true });
    if ((isNew || reopened) && announce) this.emit('match', snapshot(c));
    if (i.state === 'closed' && !wasClosed && !isNew) this._announceClosed(c);
    if (i.state === 'closed' && isNew) c.closedAnnounced = true;
    if (!quiet) this._changed();
    return c;
  }

  _applyList(entries) {
    for (const entry of entries) this._upsert(entry, { announce: this._everSynced, quiet: true });
    this._changed();
  }

  /**
   * Holds a message unless its (conversation, seq) is held already.
   * @returns {boolean} whether it was new
   */
  _hold(m, source, { contiguousOnly = false } = {}) {
    const c = this._conv(m.conversation);
    if (c.messages.has(m.seq)) return false;
    if (contiguousOnly && m.seq > c.top + 1) {
      // A list entry's last_message above a gap: the sync fetches it with its predecessors.
      return false;
    }
    c.messages.set(m.seq, m);
    this._advanceTop(c);
    const i = c.info;
    if (m.seq > i.last_seq) {
      i.last_seq = m.seq;
      i.last_message = m;
      if (m.from !== this.user && m.seq > i.read) i.unread += 1;
    } else if (i.last_message == null || i.last_message.seq < m.seq) {
      i.last_message = m;
    }
    if (m.from === this.user) {
      if (c.pending.delete(m.client_id)) this.emit('outbox', { conversation: i.id });
    } else if (i.typing) {
      this._peerTyping(c, false);
    }
    this.emit('message', { conversation: i.id, message: m, source });
    return true;
  }

  _advanceTop(c) {
    while (c.messages.has(c.top + 1)) c.top += 1;
  }

  _applyOwnReceipt(c, r) {
    const i = c.info;
    const before = i.read;
    const beforeDelivered = c.ownDelivered;
    i.read = Math.max(i.read, r.read ?? 0);
    c.ownDelivered = Math.max(c.ownDelivered, r.delivered ?? 0, i.read);
    if (typeof r.unread === 'number') {
      i.unread = r.unread;
    } else if (i.read > before) {
      // Read on another device: what is held of the peer's between the two positions is read.
      let n = 0;
      for (const m of c.messages.values()) if (m.from !== this.user && m.seq > before && m.seq <= i.read) n += 1;
      i.unread = Math.max(0, i.unread - n);
    }
    c.deliveredSent = Math.max(c.deliveredSent, c.ownDelivered);
    if (i.read > before || c.ownDelivered > beforeDelivered) {
      this.emit('receipt', { conversation: i.id, user: this.user, delivered: c.ownDelivered, read: i.read });
    }
    this._changed();
  }

  _applyPeerPositions(c, delivered = 0, read = 0) {
    const i = c.info;
    if (delivered <= i.peer_delivered && read <= i.peer_read) return;
    i.peer_delivered = Math.max(i.peer_delivered, delivered, read);
    i.peer_read = Math.max(i.peer_read, read);
    this.emit('receipt', { conversation: i.id, user: i.peer, delivered: i.peer_delivered, read: i.peer_read });
    this._changed();
  }

  _applyPresence(p, announce) {
    let touched = false;
    for (const c of this._convs.values()) {
      if (!c.known || c.info.peer !== p.user || c.info.state === 'closed') continue;
      c.info.presence = { user: p.user, status: p.status, last_seen: p.last_seen ?? null };
      touched = true;
    }
    if (announce) this.emit('presence', { user: p.user, status: p.status, last_seen: p.last_seen ?? null });
    if (touched) this._changed();
  }

  _close(id) {
    const c = this._convs.get(id);
    if (!c) return;
    if (c.info.state !== 'closed') {
      c.info.state = 'closed';
      delete c.info.presence;
      if (c.info.typing) this._peerTyping(c, false);
    }
    this._announceClosed(c);
  }

  _announceClosed(c) {
    if (c.closedAnnounced) return;
    c.closedAnnounced = true;
    clearTimeout(c.typingOut.timer);
    c.typingOut.timer = null;
    this.emit('closed', { conversation: c.info.id });
    this._changed();
  }

  _changed() {
    this.emit('conversations', this.conversations());
  }

  // ---- receipts sent by this client ----

  /**
   * Tells the server the peer's messages held here reached this device: one `chat.delivered` for
   * the highest seq held, never one that would not move the position, one at a time.
   */
  _ackDelivered(c) {
    if (c.deliveredBusy || c.info.state === 'closed') return;
    let seq = 0;
    for (const m of c.messages.values()) if (m.from !== this.user && m.seq > seq) seq = m.seq;
    if (seq <= Math.max(c.deliveredSent, c.info.read)) return;
    c.deliveredBusy = true;
    this.hub
      ._request({ op: 'chat.delivered', conversation: c.info.id, seq })
      .then(
        (receipt) => {
          c.deliveredSent = Math.max(c.deliveredSent, seq);
          c.deliveredBusy = false;
          this._applyOwnReceipt(c, receipt);
          this._ackDelivered(c);
        },
        (e) => {
          c.deliveredBusy = false;
          // The sync after a reconnect acknowledges again; a closed conversation needs nothing.
          if (['disconnected', 'not_connected', 'timeout', 'conversation_closed'].includes(e.code)) return;
          this.emit('error', e);
        },
      );
  }

  // ---- typing sent by this client ----

  _scheduleTyping(c) {
    const t = c.typingOut;
    if (t.timer) return; // the scheduled send takes the latest wish
    const wait = t.at + this.options.typingInterval - this.options.now();
    if (wait > 0) {
      t.timer = setTimeout(() => {
        t.timer = null;
        if (t.want === t.sent && (!t.want || this.options.now() - t.at < this.options.typingRefresh)) return;
        this._sendTyping(c, t.want);
      }, wait);
      return;
    }
    this._sendTyping(c, t.want);
  }

  _sendTyping(c, typing) {
    const t = c.typingOut;
    if (c.info.state === 'closed') return;
    const prev = { sent: t.sent, at: t.at };
    t.sent = typing;
    t.at = this.options.now();
    this.hub._request({ op: 'chat.typing', conversation: c.info.id, typing }).catch((e) => {
      if (e.code !== 'rate_limited') return;
      // Refused: the peer's view is what it was; try again when the server allows.
      t.sent = prev.sent;
      t.at = this.options.now() + (e.retryAfterMs ?? this.options.typingInterval) - this.options.typingInterval;
      if (t.want !== t.sent || t.want) this._scheduleTyping(c);
    });
  }

  /** A message went: the peer stops showing "typing" on receiving it. */
  _typingSettled(c) {
    const t = c.typingOut;
    clearTimeout(t.timer);
    t.timer = null;
    t.want = false;
    t.sent = false;
  }

  _peerTyping(c, typing) {
    clearTimeout(c.typingTimer);
    c.typingTimer = null;
    if (typing) c.typingTimer = setTimeout(() => this._peerTyping(c, false), this.options.typingTimeout);
    if (c.info.typing === typing) return;
    c.info.typing = typing;
    this.emit('typing', { conversation: c.info.id, user: c.info.peer, typing });
    this._changed();
  }

  // ---- sends ----

  /** Sends (and retries) a pending message until stored, refused, or out of time. */
  _deliverPending(c, entry) {
    const started = this.options.now();
    const frame = { op: 'chat.send', conversation: entry.conversation, client_id: entry.client_id, text: entry.text };
    if (entry.attachment) frame.attachment = entry.attachment;
    const attempt = async () => {
      for (let tries = 0; ; tries++) {
        try {
          return await this.hub._request(frame);
        } catch (e) {
          const left = this.options.sendRetryFor - (this.options.now() - started);
          if (!SEND_RETRY.has(e.code) || left <= 0 || this.hub.state === 'disconnected') throw e;
          // Lost connections wait in _request for the next one; the others wait as told.
          const wait =
            e.code === 'rate_limited'
              ? e.retryAfterMs ?? 1000
              : e.code === 'unavailable' || e.code === 'internal'
                ? Math.min(5000, 200 * 2 ** tries)
                : 0;
          if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, left)));
        }
      }
    };
    entry.promise = attempt().then(
      (message) => {
        // The push of this message may have come first (it is dropped from pending then).
        this._hold(message, 'send');
        if (c.pending.delete(entry.client_id)) this.emit('outbox', { conversation: entry.conversation });
        this._changed();
        return c.messages.get(message.seq) ?? message;
      },
      (e) => {
        entry.state = 'failed';
        entry.error = e;
        this.emit('outbox', { conversation: entry.conversation });
        throw e;
      },
    );
    return entry.promise;
  }
}

/** @typedef {ReturnType<ChatClient['_conv']>} ConvState */

function snapshot(c) {
  const i = c.info;
  const out = { ...i, last_message: i.last_message ? { ...i.last_message } : null };
  if (i.presence) out.presence = { ...i.presence };
  return out;
}

function activity(c) {
  return c.info.last_message?.ts ?? c.info.created_at ?? 0;
}

/** A client_id: random, 1-64 bytes. `crypto.getRandomValues` works outside secure contexts too. */
export function newClientId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return `c-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}
