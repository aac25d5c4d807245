// A scripted stand-in for the browser's WebSocket, shared by the Node unit tests: the test plays
// the server, reading the frames the SDK sends and answering them. Not a test itself (node --test
// runs it too, and finds none).

/** A queue whose `next()` waits for the next pushed item. */
export class Queue {
  constructor() {
    this.items = [];
    this.waiters = [];
  }

  push(item) {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.items.push(item);
  }

  next() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** Every FakeSocket the SDK opens, in order: `await sockets.next()`. */
export const sockets = new Queue();

export class FakeSocket {
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = new Queue();
    this.closedByClient = null;
    this.onopen = this.onmessage = this.onclose = null;
    sockets.push(this);
  }

  // ---- the SDK's side ----

  send(text) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(text));
  }

  close(code) {
    this.closedByClient = code ?? 1005;
    this.readyState = 3;
  }

  // ---- the test's (server's) side ----

  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The next frame the SDK sent. */
  next() {
    return this.sent.next();
  }

  reply(id, data) {
    this.push({ type: 'reply', id, data });
  }

  error(id, code, message = code) {
    this.push({ type: 'error', id, code, message });
  }

  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  /** Opens, checks the connect frame, answers it. Returns the connect frame. */
  async accept(info = {}) {
    this.open();
    const frame = await this.next();
    if (frame.op !== 'connect') throw new Error(`expected connect, got ${frame.op}`);
    this.reply(frame.id, {
      client: 'c1',
      user: 'u',
      node: 'n',
      ping_interval_ms: 25_000,
      ...info,
    });
    return frame;
  }
}
