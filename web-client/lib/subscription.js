// One channel subscription: its handlers, and the stream position that makes resume work.

import { HubError, safeCall } from './util.js';

/**
 * @typedef {object} Publication
 * @property {string} channel
 * @property {number} [offset] position in the channel's stream (absent without history)
 * @property {string} event
 * @property {any} data
 * @property {string} [from] user id of the publisher (absent for the server API)
 * @property {boolean} [recovered] true when it was missed while away and came with a resume
 */

/**
 * @typedef {object} ClientInfo
 * @property {string} user
 * @property {string} client
 */

/**
 * @typedef {object} SubscriptionHandlers
 * @property {(pub: Publication) => void} [onPublication]
 * @property {(info: ClientInfo) => void} [onJoin]
 * @property {(info: ClientInfo) => void} [onLeave]
 * @property {() => void} [onRefetch] what was missed could not be recovered (history trimmed or
 *   reset): reload the channel's state from the app's source of truth
 * @property {(reply: object) => void} [onSubscribed] every successful (re)subscribe, with the reply
 * @property {(err: HubError) => void} [onError] the subscription failed and was dropped
 */

/**
 * Made by `HubClient.subscribe`. Survives reconnects: the client re-subscribes it on every new
 * connection, asking for what it missed since the last offset it delivered.
 *
 * Delivery contract: within one subscription, publications reach `onPublication` in offset
 * order and never twice, whether they come live or from a resume.
 */
export class Subscription {
  /**
   * @param {import('../hub.js').HubClient} client
   * @param {string} channel
   * @param {SubscriptionHandlers} handlers
   */
  constructor(client, channel, handlers) {
    this.client = client;
    this.channel = channel;
    this.handlers = handlers ?? {};
    /** 'subscribing' | 'subscribed' | 'unsubscribed' */
    this.state = 'subscribing';
    /** Offset of the last publication delivered (or the stream top when first subscribed). */
    this.offset = null;
    /** Epoch of the channel's stream; offsets from another epoch mean nothing. */
    this.epoch = null;
    this._readyResolve = null;
    this._readyReject = null;
    /** Settles with the first subscribe reply (or its error). Later resubscribes do not touch it. */
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    // An app that never awaits `ready` should not see an unhandled rejection: onError reports.
    this.ready.catch(() => {});
  }

  /** Stops delivery and tells the server (when connected). */
  async unsubscribe() {
    if (this.state === 'unsubscribed') return;
    this.state = 'unsubscribed';
    this.client._forget(this);
    if (this.client.state !== 'connected') return;
    try {
      await this.client._request({ op: 'unsubscribe', channel: this.channel });
    } catch (e) {
      // The connection went or the server had already dropped it: nothing is left to undo.
      if (!['disconnected', 'not_subscribed', 'not_connected'].includes(e.code)) throw e;
    }
  }

  /** @returns {Promise<ClientInfo[]>} who is subscribed to the channel now */
  presence() {
    return this.client.presence(this.channel);
  }

  /**
   * @param {{since?: {offset: number, epoch: string}, limit?: number}} [opts]
   */
  history(opts) {
    return this.client.history(this.channel, opts);
  }

  /**
   * @param {any} data
   * @param {string} [event]
   */
  publish(data, event) {
    return this.client.publish(this.channel, data, event);
  }

  // ---- driven by HubClient ----

  /** The `since` to send when (re)subscribing, or undefined for a fresh start. */
  _since() {
    return this.epoch != null && this.offset != null
      ? { offset: this.offset, epoch: this.epoch }
      : undefined;
  }

  /**
   * Applies a subscribe reply.
   * @param {{position?: {offset: number, epoch: string}, recovered: boolean,
   *   publications?: Array<object>}} data
   * @param {object | undefined} since what the request asked for
   */
  _applySubscribed(data, since) {
    const first = this._readyResolve !== null;
    this.state = 'subscribed';
    const position = data.position;
    const lost = since !== undefined && !data.recovered;
    if (!position) {
      this.offset = null;
      this.epoch = null;
    } else if (since === undefined || lost) {
      // A fresh start: everything up to the stream top is state the app loads itself (history
      // or its back end); only what comes after is delivered.
      this.offset = position.offset;
      this.epoch = position.epoch;
    } else {
      this.epoch = position.epoch;
    }
    if (first) {
      this._readyResolve(data);
      this._readyResolve = this._readyReject = null;
    }
    safeCall(this.handlers.onSubscribed, data, 'onSubscribed');
    if (lost) {
      safeCall(this.handlers.onRefetch, undefined, 'onRefetch');
      return;
    }
    for (const p of data.publications ?? []) {
      this._deliver({ channel: this.channel, ...p, recovered: true });
    }
  }

  /** @param {HubError} err */
  _fail(err) {
    this.state = 'unsubscribed';
    if (this._readyReject) {
      this._readyReject(err);
      this._readyResolve = this._readyReject = null;
    }
    safeCall(this.handlers.onError, err, 'onError');
  }

  /** @param {Publication} pub */
  _deliver(pub) {
    if (this.state !== 'subscribed') return;
    if (pub.offset != null) {
      // Never deliver a duplicate: a resume and a live push may carry the same publication.
      if (this.offset != null && pub.offset <= this.offset) return;
      this.offset = pub.offset;
    }
    safeCall(this.handlers.onPublication, pub, 'onPublication');
  }

  /** @param {'join' | 'leave'} kind @param {ClientInfo} info */
  _presenceEvent(kind, info) {
    if (this.state !== 'subscribed') return;
    safeCall(kind === 'join' ? this.handlers.onJoin : this.handlers.onLeave, info, kind);
  }
}

export { HubError };
