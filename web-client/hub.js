// The hub's JavaScript SDK: plain ES modules, no build step.
//
//   import { HubClient } from '/hub.js';
//   const hub = new HubClient('/ws', { getToken: async () => (await fetch('/my/token')).text() });
//   // or, with cluster nodes to fail over between (each reconnect tries the next one):
//   // new HubClient(['wss://hub1.example/ws', 'wss://hub2.example/ws'], { getToken })
//   hub.on('connected', (info) => console.log('connected as', info.user));
//   const sub = hub.subscribe('news', { onPublication: (pub) => console.log(pub.data) });
//   hub.connect();
//   await sub.publish({ text: 'hello' });
//
// Wire protocol (docs/protocol.md): JSON text frames over the `hub.json` subprotocol. Requests
// carry an increasing `id` and get exactly one `reply` or `error`; pushes (`push`, `join`,
// `leave`) carry the channel. MessagePack (`hub.msgpack`) is for mobile clients and is not
// implemented in this browser SDK: JSON costs a browser nothing extra and keeps it dependency-free.

import { Subscription } from './lib/subscription.js';
import { Emitter, HubError, backoffDelay, longTimeout, resolveUrl } from './lib/util.js';

export { HubError, Subscription };

/**
 * Close codes: 4000-4099 mean "reconnect and resume"; 4100-4199 "do not reconnect until
 * something changes". 4102 (token expired) is the one such change the SDK can make itself.
 */
export const CloseCode = Object.freeze({
  SHUTDOWN: 4000,
  SLOW_CONSUMER: 4001,
  NO_PONG: 4002,
  AUTH_REQUIRED: 4100,
  INVALID_TOKEN: 4101,
  TOKEN_EXPIRED: 4102,
  DISCONNECTED: 4103,
  BANNED: 4104,
  TOO_LARGE: 1009,
});

/** Server error codes worth retrying a resubscribe for, on the same connection. */
const TRANSIENT = new Set(['unavailable', 'internal', 'rate_limited']);

/**
 * @typedef {object} HubOptions
 * @property {string} [token] a fixed token (no refresh; a 4102 close is final)
 * @property {() => Promise<string>} [getToken] fetches a token; called to connect, before the
 *   token expires (refresh), and after a 4102 close
 * @property {'json'} [codec] only 'json' in the browser SDK
 * @property {boolean} [debug] logs frames and state changes to the console
 * @property {number} [timeout] request timeout in ms (default 10000); also bounds connecting
 * @property {number} [minReconnectDelay] ms (default 500)
 * @property {number} [maxReconnectDelay] ms (default 20000)
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (default the global one)
 */

/**
 * @typedef {object} ConnectInfo
 * @property {string} client the connection's id
 * @property {string} user
 * @property {string} node
 * @property {number} [expires_at] token expiry, Unix seconds
 * @property {number} ping_interval_ms
 */

/**
 * A connection to the hub that stays up: it reconnects with backoff, refreshes its token, and
 * re-subscribes (resuming every channel from the last offset it delivered).
 *
 * Endpoints: given several URLs (the nodes of a cluster), the client connects to the first and
 * moves to the next one, round robin, on every reconnect attempt, whatever ended the previous
 * socket (a drop, a 4000 "node shutting down", a connect timeout, a refused socket). The backoff
 * and jitter apply as with one URL. A client whose node dies thus lands on another node and
 * resumes its subscriptions there from their offsets (in cluster mode history is shared, so the
 * offsets and epochs mean the same on every node). `url` is the endpoint in use or being tried.
 *
 * Events (`on(name, fn)`):
 * - `connecting` `{attempt, delay, url, code?, reason?}`: a (re)connect to `url` is scheduled
 *   (after `delay` ms) or starting
 * - `connected` {@link ConnectInfo}
 * - `disconnected` `{code, reason, reconnect}`: the socket went; `reconnect` says whether the
 *   SDK will try again (false after `disconnect()` and for 4100-4199 closes except 4102)
 * - `refreshed` `{expires_at}`: the token was replaced on the live connection
 * - `error` {@link HubError}: something failed outside any request (token fetch, refresh)
 */
export class HubClient extends Emitter {
  /**
   * @param {string | string[]} urls one endpoint or several (cluster nodes, tried in turn on each
   *   reconnect). Each is `ws(s)://host/ws`, `http(s)://host/ws`, or a path such as `/ws`.
   * @param {HubOptions} [options]
   */
  constructor(urls, options = {}) {
    super();
    const list = Array.isArray(urls) ? urls : [urls];
    if (list.length === 0 || list.some((u) => typeof u !== 'string' || u === '')) {
      throw new HubError('bad_request', 'one endpoint URL or a non-empty list of them is required');
    }
    if (options.codec && options.codec !== 'json') {
      throw new HubError('unsupported', `codec ${options.codec} is not supported in the browser SDK`);
    }
    if (!options.token && !options.getToken) {
      throw new HubError('bad_request', 'a token or getToken is required');
    }
    /** @type {readonly string[]} every endpoint, resolved to ws(s):// URLs */
    this.urls = Object.freeze(list.map(resolveUrl));
    /** Index in `urls` of the endpoint in use (or being tried). */
    this._endpoint = 0;
    this.options = {
      timeout: 10_000,
      minReconnectDelay: 500,
      maxReconnectDelay: 20_000,
      ...options,
    };
    /** 'disconnected' | 'connecting' | 'connected' */
    this.state = 'disconnected';
    /** @type {ConnectInfo | null} the last connect reply */
    this.info = null;
    this._token = options.token ?? null;
    this._tokenExpired = false;
    this._nextId = 1;
    /** @type {Map<number, {done: Function, timer: any}>} requests awaiting their reply */
    this._pending = new Map();
    /** @type {Map<string, Subscription>} */
    this._subs = new Map();
    this._ws = null;
    /** Counts connection attempts and losses, so a stale callback can tell it is stale. */
    this._gen = 0;
    this._attempt = 0;
    this._timers = { reconnect: null, connect: null, refresh: null, heartbeat: null };
    this._lastReceived = 0;
    /** Waiters for the `connected` state, settled on connect or on a final disconnect. */
    this._waiters = new Set();
    this._onOnline = () => this._reconnectNow();
  }

  // ---- connection ----

  /** The endpoint in use, or being tried while connecting. */
  get url() {
    return this.urls[this._endpoint];
  }

  /**
   * Starts connecting (and reconnecting, until `disconnect`), at the endpoint used last (the
   * first one at first).
   * @returns {Promise<ConnectInfo>} the first successful connect; rejects on a final close
   */
  connect() {
    if (this.state === 'disconnected') {
      this._closing = false;
      this._attempt = 0;
      globalThis.addEventListener?.('online', this._onOnline);
      this.emit('connecting', { attempt: 0, delay: 0, url: this.url });
      this._open();
    }
    const connected = this._whenConnected(Infinity);
    // Callers that do not await connect() learn of a final close from 'disconnected'.
    connected.catch(() => {});
    return connected;
  }

  /** Closes the connection for good (until `connect` is called again). Subscriptions are kept. */
  disconnect() {
    this._closing = true;
    globalThis.removeEventListener?.('online', this._onOnline);
    this._lost(1000, 'client disconnect', false);
  }

  /** The subscription of `channel` on this client, if any. */
  getSubscription(channel) {
    return this._subs.get(channel);
  }

  /** Starts a connection attempt now. */
  async _open() {
    const gen = ++this._gen;
    this._setState('connecting');
    // A token fetch or socket that does not lead to a `connect` reply in time is given up on.
    this._timers.connect = setTimeout(() => this._lost(1006, 'connect timeout', true), this.options.timeout);
    let token;
    try {
      token = await this._currentToken();
    } catch (e) {
      if (gen !== this._gen) return;
      this.emit('error', asHubError(e, 'token'));
      this._lost(1006, 'token fetch failed', true);
      return;
    }
    if (gen !== this._gen) return;
    this._log('opening', this.url);
    let ws;
    try {
      ws = new (this.options.WebSocket ?? globalThis.WebSocket)(this.url, ['hub.json']);
    } catch (e) {
      // A URL the browser refuses (malformed, ws:// from an https page): on to the next endpoint.
      this.emit('error', new HubError('bad_url', `cannot open ${this.url}: ${e?.message ?? e}`));
      this._lost(1006, 'cannot open socket', true);
      return;
    }
    this._ws = ws;
    this._lastReceived = Date.now();
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onclose = (ev) => this._lost(ev.code, ev.reason, true);
    ws.onopen = () => this._sendConnect(token);
  }

  _sendConnect(token) {
    this._send({ op: 'connect', token }, this.options.timeout, (err, info) => {
      if (err) {
        // A refused token comes with a close (4101/4102) that decides what happens next.
        if (err.code === 'token_expired') this._tokenExpired = true;
        this._log('connect refused', err);
        return;
      }
      clearTimeout(this._timers.connect);
      this.info = info;
      this._attempt = 0;
      this._tokenExpired = false;
      this._setState('connected');
      this._scheduleRefresh();
      this._startHeartbeat();
      // Resubscribe before listeners run: a subscription a `connected` listener makes is sent
      // by `subscribe` itself, and must not be sent twice.
      for (const sub of this._subs.values()) this._sendSubscribe(sub);
      this.emit('connected', info);
      for (const w of this._waiters) w.resolve(info);
      this._waiters.clear();
    });
  }

  /**
   * The socket is gone (or given up on): settle what was in flight and decide what follows.
   * @param {number} code
   * @param {string} reason
   * @param {boolean} mayReconnect false when the application asked to disconnect
   */
  _lost(code, reason, mayReconnect) {
    this._gen += 1;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onopen = null;
      try {
        ws.close(1000);
      } catch {
        // Already closed.
      }
    }
    for (const t of Object.keys(this._timers)) {
      clearTimeout(this._timers[t]);
      this._timers[t] = null;
    }
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.done(new HubError('disconnected', `connection closed (${code} ${reason || ''})`.trim()));
    }
    this._pending.clear();
    for (const sub of this._subs.values()) if (sub.state === 'subscribed') sub.state = 'subscribing';
    if (this.state === 'disconnected') return;

    let reconnect = mayReconnect && !this._closing;
    if (code === CloseCode.TOKEN_EXPIRED || this._tokenExpired) {
      this._tokenExpired = true;
      reconnect &&= typeof this.options.getToken === 'function';
    } else if (code >= 4100 && code <= 4199) {
      reconnect = false;
    }
    this._log('disconnected', code, reason, reconnect ? '(will reconnect)' : '');
    // Listeners see the state that follows: 'connecting' if a retry comes, else 'disconnected'.
    this._setState(reconnect ? 'connecting' : 'disconnected');
    this.emit('disconnected', { code, reason, reconnect });
    if (reconnect) {
      this._scheduleReconnect(code, reason);
    } else {
      globalThis.removeEventListener?.('online', this._onOnline);
      const err = new HubError('disconnected', `disconnected: ${code} ${reason || ''}`.trim());
      err.closeCode = code;
      for (const w of this._waiters) w.reject(err);
      this._waiters.clear();
    }
  }

  _scheduleReconnect(code, reason) {
    const { minReconnectDelay, maxReconnectDelay } = this.options;
    const delay = backoffDelay(this._attempt, minReconnectDelay, maxReconnectDelay);
    this._attempt += 1;
    // Round robin: the endpoint that just failed (or shut down) is the last one tried again.
    this._endpoint = (this._endpoint + 1) % this.urls.length;
    this._setState('connecting');
    this.emit('connecting', { attempt: this._attempt, delay, url: this.url, code, reason });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._open();
    }, delay);
  }

  /** Skips the rest of a backoff wait (the browser says the network is back). */
  _reconnectNow() {
    if (this._timers.reconnect === null) return;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._open();
  }

  _setState(state) {
    if (this.state !== state) this._log('state', this.state, '->', state);
    this.state = state;
  }

  /**
   * Resolves when connected; rejects on a final disconnect or after `timeout` ms.
   * @param {number} timeout
   */
  _whenConnected(timeout) {
    if (this.state === 'connected') return Promise.resolve(this.info);
    if (this.state === 'disconnected' && timeout !== Infinity) {
      return Promise.reject(new HubError('not_connected', 'not connected; call connect() first'));
    }
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      if (timeout !== Infinity) {
        const timer = longTimeout(() => {
          this._waiters.delete(w);
          reject(new HubError('timeout', 'not connected in time'));
        }, timeout);
        w.resolve = (v) => (clearTimeout(timer), resolve(v));
        w.reject = (e) => (clearTimeout(timer), reject(e));
      }
      this._waiters.add(w);
    });
  }

  // ---- tokens ----

  async _currentToken() {
    const { getToken } = this.options;
    const known = this.info?.expires_at;
    const stale = this._tokenExpired || (known != null && known * 1000 <= Date.now());
    if (getToken && (this._token === null || stale)) {
      this._token = await getToken();
      this._tokenExpired = false;
    }
    return this._token;
  }

  /** Refreshes the token a little before it expires (20% of its life, at most a minute). */
  _scheduleRefresh(expiresAt = this.info?.expires_at) {
    clearTimeout(this._timers.refresh);
    if (!this.options.getToken || expiresAt == null) return;
    const left = expiresAt * 1000 - Date.now();
    const delay = left - Math.min(60_000, left * 0.2);
    this._timers.refresh = longTimeout(() => this._refresh(expiresAt), delay);
  }

  async _refresh(expiresAt) {
    // A connection that went meanwhile is not this refresh's business: the next one has its own.
    const gen = this._gen;
    try {
      const token = await this.options.getToken();
      if (gen !== this._gen) return;
      const reply = await this._rawRequest({ op: 'refresh', token }, this.options.timeout);
      this._token = token;
      this.info = { ...this.info, expires_at: reply.expires_at };
      this._scheduleRefresh(reply.expires_at);
      this.emit('refreshed', { expires_at: reply.expires_at });
    } catch (e) {
      if (gen !== this._gen) return;
      this.emit('error', asHubError(e, 'refresh'));
      // Try again while the old token lives; the server closes with 4102 if it runs out.
      const left = expiresAt * 1000 - Date.now();
      if (left > 2000) this._timers.refresh = setTimeout(() => this._refresh(expiresAt), Math.min(5000, left / 2));
    }
  }

  // ---- heartbeat ----

  /**
   * Browsers answer the server's WebSocket pings but cannot see them. When nothing has come in
   * for a ping interval, an app-level `ping` checks the link; no answer means it is dead.
   */
  _startHeartbeat() {
    const interval = this.info?.ping_interval_ms;
    if (!interval) return;
    const tick = async () => {
      this._timers.heartbeat = setTimeout(tick, interval);
      if (Date.now() - this._lastReceived < interval) return;
      try {
        await this._rawRequest({ op: 'ping' }, this.options.timeout);
      } catch (e) {
        if (e.code === 'timeout' && this.state === 'connected') this._lost(1006, 'no pong', true);
      }
    };
    this._timers.heartbeat = setTimeout(tick, interval);
  }

  // ---- frames and requests ----

  _onFrame(raw) {
    this._lastReceived = Date.now();
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      this._log('unreadable frame', raw);
      return;
    }
    this._log('<-', msg);
    switch (msg.type) {
      case 'reply':
      case 'error': {
        const p = this._pending.get(msg.id);
        if (!p) {
          if (msg.type === 'error') this.emit('error', HubError.fromFrame(msg));
          return;
        }
        this._pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.type === 'reply') p.done(null, msg.data);
        else p.done(HubError.fromFrame(msg));
        return;
      }
      case 'push': {
        const pub = { ...msg };
        delete pub.type;
        this._subs.get(msg.channel)?._deliver(pub);
        return;
      }
      case 'join':
      case 'leave':
        this._subs.get(msg.channel)?._presenceEvent(msg.type, msg.info);
        return;
      default:
        this._log('unknown frame type', msg.type);
    }
  }

  /**
   * Sends a request on the current socket; `done(err, data)` runs synchronously when its reply
   * frame is handled, before any later frame, which subscribe replies rely on for ordering.
   * @param {object} frame without `id`
   * @param {number} timeout ms
   * @param {(err: HubError | null, data?: any) => void} done
   */
  _send(frame, timeout, done) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) {
      done(new HubError('not_connected', 'not connected'));
      return;
    }
    const id = this._nextId++;
    const body = { id, ...frame };
    const timer = setTimeout(() => {
      this._pending.delete(id);
      done(new HubError('timeout', `no reply to ${frame.op} within ${timeout} ms`));
    }, timeout);
    this._pending.set(id, { done, timer });
    this._log('->', body);
    ws.send(JSON.stringify(body));
  }

  /** `_send` as a promise. */
  _rawRequest(frame, timeout) {
    return new Promise((resolve, reject) => {
      this._send(frame, timeout, (err, data) => (err ? reject(err) : resolve(data)));
    });
  }

  /**
   * A request that waits (within the timeout) for the connection if it is being re-established.
   * @param {object} frame
   * @param {number} [timeout]
   */
  async _request(frame, timeout = this.options.timeout) {
    const deadline = Date.now() + timeout;
    if (this.state !== 'connected') await this._whenConnected(timeout);
    return this._rawRequest(frame, Math.max(1, deadline - Date.now()));
  }

  // ---- channels ----

  /**
   * Subscribes to a channel. The subscription lasts until `unsubscribe`, across reconnects.
   * May be called before `connect`.
   * @param {string} channel
   * @param {import('./lib/subscription.js').SubscriptionHandlers} [handlers]
   * @returns {Subscription} `sub.ready` settles with the first subscribe reply
   */
  subscribe(channel, handlers = {}) {
    if (this._subs.has(channel)) {
      throw new HubError('already_subscribed', `already subscribed to ${channel}`);
    }
    const sub = new Subscription(this, channel, handlers);
    this._subs.set(channel, sub);
    if (this.state === 'connected') this._sendSubscribe(sub);
    return sub;
  }

  /** @param {Subscription} sub */
  _sendSubscribe(sub, retry = 0) {
    const ws = this._ws;
    const since = sub._since();
    const frame = { op: 'subscribe', channel: sub.channel };
    if (since) frame.since = since;
    this._send(frame, this.options.timeout, (err, data) => {
      // Unsubscribed while the request was in flight (its unsubscribe follows on the same
      // socket), or the socket is gone (the next one resubscribes).
      if (sub.state === 'unsubscribed' || this._ws !== ws || !ws) return;
      if (!err) {
        sub._applySubscribed(data, since);
      } else if (err.code === 'timeout') {
        // No answer in time: the link is bad; a new connection resubscribes everything.
        this._lost(1006, 'subscribe timeout', true);
      } else if (TRANSIENT.has(err.code)) {
        const delay = backoffDelay(retry, this.options.minReconnectDelay, this.options.maxReconnectDelay);
        setTimeout(() => this._ws === ws && this._sendSubscribe(sub, retry + 1), delay);
      } else {
        this._forget(sub);
        sub._fail(err);
      }
    });
  }

  /** @param {Subscription} sub */
  _forget(sub) {
    if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
  }

  /**
   * Publishes. Not retried by the SDK: a `disconnected` rejection means the publication may or
   * may not have been made (the app decides whether to send again).
   * @param {string} channel
   * @param {any} data any JSON value
   * @param {string} [event] defaults to "message" on the server
   * @returns {Promise<{position?: {offset: number, epoch: string}}>}
   */
  publish(channel, data, event) {
    const frame = { op: 'publish', channel, data };
    if (event) frame.event = event;
    return this._request(frame);
  }

  /**
   * @param {string} channel
   * @returns {Promise<import('./lib/subscription.js').ClientInfo[]>}
   */
  async presence(channel) {
    const data = await this._request({ op: 'presence', channel });
    return data.members;
  }

  /**
   * @param {string} channel
   * @param {{since?: {offset: number, epoch: string}, limit?: number}} [opts]
   * @returns {Promise<{position: {offset: number, epoch: string}, publications: object[]}>}
   */
  history(channel, { since, limit } = {}) {
    const frame = { op: 'history', channel };
    if (since) frame.since = since;
    if (limit != null) frame.limit = limit;
    return this._request(frame);
  }

  /** @returns {Promise<number>} the round trip in ms */
  async ping() {
    const start = performance.now();
    await this._request({ op: 'ping' });
    return performance.now() - start;
  }

  // ---- diagnostics ----

  /**
   * Tests only: drops the socket as a network failure would (no close frame is awaited, the SDK
   * sees code 1006), so the reconnect and resume paths run.
   */
  _testDropSocket() {
    this._lost(1006, 'simulated network drop', true);
  }

  _log(...args) {
    if (this.options.debug) console.debug('hub:', ...args);
  }
}

function asHubError(e, what) {
  return e instanceof HubError ? e : new HubError(what === 'token' ? 'token_failed' : 'internal', String(e?.message ?? e));
}
