// Small pieces the SDK shares: the error type, an event emitter, backoff, URL handling.

/**
 * An error from the hub or from the SDK. `code` is stable and machine-readable: the server's
 * codes (`forbidden`, `not_found`, `token_expired`, ...) or the SDK's own (`timeout`,
 * `disconnected`, `not_connected`, `unsupported`, `bad_url`). Errors that say when to try again
 * (`rate_limited`, `swipe_limit`) carry `retryAfterMs`.
 */
export class HubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message || code);
    this.name = 'HubError';
    this.code = code;
    /** @type {number | undefined} how long to wait before trying again (`retry_after_ms`) */
    this.retryAfterMs = undefined;
  }

  /**
   * The error an `error` frame carries.
   * @param {{code: string, message?: string, retry_after_ms?: number}} frame
   */
  static fromFrame(frame) {
    const err = new HubError(frame.code, frame.message);
    if (typeof frame.retry_after_ms === 'number') err.retryAfterMs = frame.retry_after_ms;
    return err;
  }
}

/** A minimal event emitter: `on` returns a function that removes the listener. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} removes the listener
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  /**
   * Calls every listener; one that throws is reported and does not stop the others.
   * @param {string} event
   * @param {any} arg
   */
  emit(event, arg) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) safeCall(fn, arg, event);
  }
}

/**
 * Calls an application callback. Its exceptions must not break the SDK's own bookkeeping
 * (offsets, reconnects), so they are reported and swallowed.
 * @param {Function | undefined} fn
 * @param {any} arg
 * @param {string} what
 */
export function safeCall(fn, arg, what) {
  if (typeof fn !== 'function') return;
  try {
    fn(arg);
  } catch (e) {
    console.error(`hub: ${what} handler threw`, e);
  }
}

/**
 * Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^attempt)).
 * Full jitter spreads the reconnects of many clients dropped at once (a node restart).
 * @param {number} attempt 0 for the first retry
 * @param {number} base milliseconds
 * @param {number} max milliseconds
 */
export function backoffDelay(attempt, base, max) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * cap);
}

/**
 * Accepts `ws://`/`wss://` URLs, `http(s)://` URLs (converted) and, in a page, a path such as
 * `/ws` (resolved against the page's origin).
 * @param {string} url
 */
export function resolveUrl(url) {
  const base = globalThis.location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.toString();
}

/** setTimeout that accepts any delay (browsers overflow above 2^31-1 ms and fire at once). */
export function longTimeout(fn, ms) {
  return setTimeout(fn, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
}
