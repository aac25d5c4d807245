//! What a publisher actually sends on each simulcast layer: its bitrate, and whether it sends it at
//! all.
//!
//! Publishers announce each layer's *maximum* bitrate; encoders run well below it on easy content
//! (a still camera, a slide) and drop top layers altogether when their own uplink or CPU is short.
//! The layer choice needs what is really sent, so the forwarder measures every layer:
//! - a layer is **active** while its packets keep coming: one within the last [`ACTIVE_WINDOW_MS`];
//! - its **bitrate** is that of the last complete window of at least [`WINDOW_MS`] (RTP header and
//!   payload bytes), `None` until one window has passed.
//!
//! Pure: the caller passes the time with every packet and every read.

/// Shortest span over which a bitrate is taken.
pub const WINDOW_MS: u64 = 1_000;

/// A layer with no packet for this long is taken as not sent.
pub const ACTIVE_WINDOW_MS: u64 = 1_500;

/// Bytes an RTP header adds to the payload (fixed header, no CSRC or extensions).
const RTP_HEADER_BYTES: u64 = 12;

/// One layer's measured rate, as [`LayerRate::read`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeasuredRate {
    pub active: bool,
    /// Bits per second over the last complete window, once there is one.
    pub bps: Option<u64>,
}

/// The meter of one layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerRate {
    window_start_ms: Option<u64>,
    window_bytes: u64,
    bps: Option<u64>,
    last_packet_ms: Option<u64>,
}

impl LayerRate {
    /// A packet of `payload_bytes` arrived at `now_ms`.
    pub fn on_packet(&mut self, payload_bytes: usize, now_ms: u64) {
        let start = *self.window_start_ms.get_or_insert(now_ms);
        let elapsed = now_ms.saturating_sub(start);
        if elapsed >= WINDOW_MS {
            // A layer that stopped and came back starts a fresh window rather than averaging the gap in.
            let resumed = self.last_packet_ms.is_some_and(|last| now_ms.saturating_sub(last) >= ACTIVE_WINDOW_MS);
            self.bps = (!resumed).then(|| self.window_bytes * 8 * 1000 / elapsed);
            self.window_start_ms = Some(now_ms);
            self.window_bytes = 0;
        }
        self.window_bytes += payload_bytes as u64 + RTP_HEADER_BYTES;
        self.last_packet_ms = Some(now_ms);
    }

    pub fn read(&self, now_ms: u64) -> MeasuredRate {
        let active = self.last_packet_ms.is_some_and(|last| now_ms.saturating_sub(last) < ACTIVE_WINDOW_MS);
        MeasuredRate { active, bps: if active { self.bps } else { None } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_stream_is_measured_after_one_window() {
        let mut r = LayerRate::default();
        assert_eq!(r.read(0), MeasuredRate { active: false, bps: None });
        // 100 packets/s of 113 B payload: 125 B with the header, 100 kb/s.
        for i in 0..=100 {
            r.on_packet(113, i * 10);
            if i < 100 {
                assert_eq!(r.read(i * 10), MeasuredRate { active: true, bps: None }, "no window yet at {i}");
            }
        }
        assert_eq!(r.read(1_000), MeasuredRate { active: true, bps: Some(100_000) });
    }

    #[test]
    fn a_silent_layer_turns_inactive_and_restarts_its_window() {
        let mut r = LayerRate::default();
        for i in 0..=200 {
            r.on_packet(113, i * 10);
        }
        assert!(r.read(2_000).active);
        assert!(r.read(2_000 + ACTIVE_WINDOW_MS - 1).active);
        assert_eq!(r.read(2_000 + ACTIVE_WINDOW_MS), MeasuredRate { active: false, bps: None });
        // It comes back at twice the rate: the first window after the gap measures only the new rate.
        let back = 10_000;
        r.on_packet(113, back);
        assert_eq!(r.read(back), MeasuredRate { active: true, bps: None }, "the old rate is forgotten");
        for i in 1..=200 {
            r.on_packet(113, back + i * 5);
        }
        assert_eq!(r.read(back + 1_000).bps, Some(200_000));
    }
}
