//! A connection's bounded outbox: every frame for the socket goes through it, and its one writer
//! drains all that is queued into a single flush. Producers (fan-out, replies, the heartbeat
//! sweeper) never wait: a full outbox marks the connection a slow consumer instead.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::errors::CloseReason;

pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: frames queued, a ping due, or a close requested.
    wake: Notify,
    /// Wakes a writer stuck in a write when the connection must close.
    kill: Notify,
    max_bytes: usize,
    max_frames: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Taken by the writer and not yet written: still this connection's memory, so it counts
    /// against the limits (a writer stuck on a full socket must not hide a growing backlog).
    inflight_bytes: usize,
    inflight_frames: usize,
    ping: bool,
    close: Option<CloseReason>,
}

/// What the writer takes in one go.
#[derive(Default)]
pub struct Batch {
    pub frames: VecDeque<Bytes>,
    pub ping: bool,
    pub close: Option<CloseReason>,
}

impl Outbox {
    pub fn new(max_bytes: usize, max_frames: usize) -> Self {
        Outbox { state: Mutex::new(State::default()), wake: Notify::new(), kill: Notify::new(), max_bytes, max_frames }
    }

    /// Queues a frame. Returns false when the connection is closing or has just overflowed
    /// (it is then marked a slow consumer and its queue dropped: memory stays flat).
    pub fn push(&self, frame: Bytes) -> bool {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return false;
        }
        if s.frames.len() + s.inflight_frames >= self.max_frames
            || s.bytes + s.inflight_bytes + frame.len() > self.max_bytes
        {
            s.close = Some(CloseReason::SlowConsumer);
            s.frames = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.kill.notify_one();
            self.wake.notify_one();
            return false;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Asks the writer to send a WebSocket ping.
    pub fn ping(&self) {
        self.state.lock().ping = true;
        self.wake.notify_one();
    }

    /// Asks the writer to flush what is queued and close with `reason`. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.state.lock();
        if s.close.is_none() {
            s.close = Some(reason);
        }
        drop(s);
        self.kill.notify_one();
        self.wake.notify_one();
    }

    pub fn closing(&self) -> Option<CloseReason> {
        self.state.lock().close
    }

    /// Takes everything queued. The queue's memory goes with the batch, so an idle connection
    /// keeps no buffer.
    pub fn take(&self) -> Batch {
        let mut s = self.state.lock();
        s.inflight_bytes = std::mem::take(&mut s.bytes);
        s.inflight_frames = s.frames.len();
        Batch { frames: std::mem::take(&mut s.frames), ping: std::mem::take(&mut s.ping), close: s.close }
    }

    /// The writer wrote what it took.
    pub fn written(&self) {
        let mut s = self.state.lock();
        s.inflight_bytes = 0;
        s.inflight_frames = 0;
    }

    pub async fn ready(&self) {
        self.wake.notified().await
    }

    pub async fn killed(&self) {
        self.kill.notified().await
    }

    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_marks_slow_consumer_and_drops_queue() {
        let o = Outbox::new(10, 100);
        assert!(o.push(Bytes::from_static(b"12345")));
        assert!(o.push(Bytes::from_static(b"12345")));
        assert!(!o.push(Bytes::from_static(b"1")));
        assert_eq!(o.closing(), Some(CloseReason::SlowConsumer));
        assert_eq!(o.queued_bytes(), 0);
        let b = o.take();
        assert!(b.frames.is_empty());
        assert_eq!(b.close, Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn frames_being_written_still_count() {
        let o = Outbox::new(10, 100);
        assert!(o.push(Bytes::from_static(b"123456")));
        let batch = o.take();
        assert_eq!(batch.frames.len(), 1);
        // The writer has not finished: the taken bytes still count.
        assert!(!o.push(Bytes::from_static(b"123456")));
        assert_eq!(o.closing(), Some(CloseReason::SlowConsumer));
        let o = Outbox::new(10, 100);
        o.push(Bytes::from_static(b"123456"));
        o.take();
        o.written();
        assert!(o.push(Bytes::from_static(b"123456")));
    }

    #[test]
    fn first_close_reason_wins() {
        let o = Outbox::new(10, 1);
        o.close(CloseReason::Shutdown);
        o.close(CloseReason::Banned);
        assert_eq!(o.closing(), Some(CloseReason::Shutdown));
        assert!(!o.push(Bytes::from_static(b"x")));
    }
}
