// The page the browser tests drive: one SDK client, everything it delivers recorded in
// `window.rec`, so a test awaits recorded state (page.waitForFunction) instead of sleeping.

import { HubClient } from '../hub.js';

const rec = {
  /** Connection events in order: {type, ...detail}. */
  events: [],
  /** Per channel: every publication delivered, in delivery order. */
  pubs: {},
  /** Per channel: join and leave events, as {type, user, client}. */
  presence: {},
  refetches: 0,
};
window.rec = rec;

/**
 * A network that can be cut. While it is down, every new socket fails as an unreachable host
 * does (close 1006 without opening), so the SDK keeps retrying until it comes back.
 */
const net = { down: false };

class UnreachableSocket {
  constructor() {
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: '', wasClean: false });
    }, 0);
  }

  send() {
    throw new Error('not open');
  }

  close() {}
}

function NetWebSocket(url, protocols) {
  return net.down ? new UnreachableSocket() : new WebSocket(url, protocols);
}

let client = null;

window.harness = {
  /**
   * Connects as `user`, with tokens from the hub's dev endpoint.
   * @param {string} user
   * @param {{role?: string, ttl?: number}} [opts]
   */
  async connect(user, { role = 'user', ttl } = {}) {
    const getToken = async () => {
      const q = new URLSearchParams({ sub: user, role });
      if (ttl) q.set('ttl', String(ttl));
      const res = await fetch(`/dev/token?${q}`);
      if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
      return (await res.json()).token;
    };
    client = new HubClient('/ws', {
      getToken,
      WebSocket: NetWebSocket,
      minReconnectDelay: 100,
      maxReconnectDelay: 1000,
    });
    window.client = client;
    for (const type of ['connecting', 'connected', 'disconnected', 'refreshed', 'error']) {
      client.on(type, (detail) => rec.events.push({ type, ...(detail instanceof Error ? { code: detail.code, message: detail.message } : detail) }));
    }
    return client.connect();
  },

  /** Subscribes and records; resolves with the first subscribe reply. */
  subscribe(channel) {
    rec.pubs[channel] = [];
    rec.presence[channel] = [];
    const sub = client.subscribe(channel, {
      onPublication: (p) => rec.pubs[channel].push(p),
      onJoin: (info) => rec.presence[channel].push({ type: 'join', ...info }),
      onLeave: (info) => rec.presence[channel].push({ type: 'leave', ...info }),
      onRefetch: () => rec.refetches++,
    });
    return sub.ready;
  },

  publish(channel, data, event) {
    return client.publish(channel, data, event);
  },

  presence(channel) {
    return client.presence(channel);
  },

  state() {
    return client.state;
  },

  /** The network goes: the socket dies as it would on a lost link, and new ones cannot open. */
  cutNetwork() {
    net.down = true;
    client._testDropSocket();
  },

  /** The network is back; the browser's `online` event ends the SDK's backoff wait. */
  restoreNetwork() {
    net.down = false;
    window.dispatchEvent(new Event('online'));
  },
};
