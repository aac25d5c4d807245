//! What one subscriber got of one forwarded stream (one publisher's audio or video track), and
//! how much of it it should have got.
//!
//! **What the receiver sees.** The hub forwards one stream per subscription with its own SSRC and
//! continuous sequence numbers and timestamps: with simulcast, the packets of whichever layer the
//! hub forwards to that subscriber at the time, switching only on a keyframe of the new layer. Each
//! payload's trailer ([`super::media::Trailer`]) still names the layer and the publisher's own
//! sequence number within that layer.
//!
//! **Segments.** The packets are split into segments: runs the hub forwarded from one source (one
//! layer), told apart by layer and by the hub's sequence offset (output sequence − the publisher's
//! sequence, mod 2^16), which the hub keeps constant within a source (`sfu::rewrite`: "within a
//! source the input's spacing is kept") and changes on every switch. A packet that matches an
//! earlier segment (a late one) counts there; anything else starts a new segment.
//!
//! **Loss is counted only against the layer in effect** ([`Received::account`]), with the window
//! defined by send time (the sender's per-layer range of sequences sent in it):
//! - segment k expects every window packet of its layer from its first to its last sequence; the
//!   first segment reaches back to the window's start and the last forward to its end (the layer
//!   in effect then; a stream that began late or stopped early shows as loss, as without simulcast);
//! - between two segments, the output sequence numbers the hub used and the receiver never saw
//!   (`next.first_out − prev.last_out − 1`) are packets forwarded and lost, counted against the new
//!   layer when both ends were sent in the window;
//! - a stream with no packet at all expects the window's packets of the layer the subscriber asked
//!   for ([`super::media::layer_for`]).
//!
//! What this cannot see: packets of the old layer lost between the publisher and the hub in the
//! last moments before a switch (the hub never numbered them, and which old-layer packets the hub
//! still forwards once the new keyframe is near is its choice). Without switches — one layer for
//! the whole window, the usual case — the count is exact, the same as sent × subscribers.

use hdrhistogram::Histogram;

use super::media::{Kind, Trailer};

/// At most this many layers per stream (the hub's limit).
pub const MAX_LAYERS: usize = 3;

/// One publisher stream's sends inside the measured window: the range of its sequence numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SentRange {
    pub first: Option<u32>,
    pub last: u32,
}

impl SentRange {
    pub fn note(&mut self, seq: u32) {
        if self.first.is_none() {
            self.first = Some(seq);
        }
        self.last = seq;
    }

    pub fn count(&self) -> u64 {
        self.first.map_or(0, |f| u64::from(self.last - f) + 1)
    }

    fn contains(&self, seq: u32) -> bool {
        self.first.is_some_and(|f| seq >= f && seq <= self.last)
    }
}

/// A run of packets the hub forwarded from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub layer: u8,
    /// Output sequence − publisher sequence, mod 2^16.
    offset: u16,
    /// The publisher's sequences of its first and last packets seen.
    pub first: u32,
    pub last: u32,
    /// Their output sequence numbers, unwrapped.
    first_out: i64,
    last_out: i64,
}

/// Expected and received packets of one layer (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub expected: u64,
    pub received: u64,
}

/// What one subscriber got of one forwarded stream.
pub struct Received {
    pub publisher: u32,
    pub kind: Kind,
    /// Every packet, whatever its send time (seen once per layer and sequence number).
    pub total: u64,
    pub duplicates: u64,
    /// Per layer: sequence numbers seen, as a bitset (bounded by the run's length).
    seen: Vec<Vec<u64>>,
    pub segments: Vec<Segment>,
    /// The newest output sequence number, unwrapped.
    out_max: Option<i64>,
    /// One-way latency of each packet sent inside the window, µs, per layer: made for the layers
    /// that arrive only (a histogram is some 140 KB; a stream's latency over all layers is their
    /// sum, [`Received::latency`]).
    pub layer_latency: Vec<Option<Histogram<u64>>>,
}

impl Received {
    pub fn new(publisher: u32, kind: Kind) -> Received {
        Received {
            publisher,
            kind,
            total: 0,
            duplicates: 0,
            seen: Vec::new(),
            segments: Vec::new(),
            out_max: None,
            layer_latency: Vec::new(),
        }
    }

    /// Notes one packet: its trailer, the sequence number it arrived with (the hub's), and whether
    /// its send time is inside the window (for latency).
    pub fn note(&mut self, t: &Trailer, out_seq: u16, now_us: u64, in_window: bool) {
        let layer = usize::from(t.layer);
        if layer >= MAX_LAYERS {
            return;
        }
        if self.seen.len() <= layer {
            self.seen.resize_with(layer + 1, Vec::new);
            self.layer_latency.resize_with(layer + 1, || None);
        }
        let seen = &mut self.seen[layer];
        let (word, bit) = ((t.seq / 64) as usize, t.seq % 64);
        if word >= seen.len() {
            // Bounded: sequences grow by at most a few hundred per second of a bounded run.
            if word > 1 << 20 {
                return;
            }
            seen.resize(word + 1, 0);
        }
        if seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        seen[word] |= 1 << bit;
        self.total += 1;
        let out = self.unwrap_out(out_seq);
        self.place(t, out);
        if in_window {
            let us = now_us.saturating_sub(t.sent_us).max(1);
            let _ = self.layer_latency[layer].get_or_insert_with(crate::ipc::new_histogram).record(us);
        }
    }

    /// The latency histograms of the layers that arrived.
    pub fn latency(&self) -> impl Iterator<Item = &Histogram<u64>> {
        self.layer_latency.iter().flatten()
    }

    /// The output sequence number unwrapped against the newest one seen.
    fn unwrap_out(&mut self, seq: u16) -> i64 {
        let out = match self.out_max {
            None => i64::from(seq),
            Some(max) => max + i64::from(seq.wrapping_sub(max as u16) as i16),
        };
        self.out_max = Some(self.out_max.map_or(out, |m| m.max(out)));
        out
    }

    /// Puts a new packet in its segment, or starts one.
    fn place(&mut self, t: &Trailer, out: i64) {
        let offset = (out as u16).wrapping_sub(t.seq as u16);
        // The newest segments first: a late packet belongs to a recent one. Bounded, in case a
        // misbehaving hub switched on every packet.
        let n = self.segments.len();
        if let Some(s) = self.segments.iter_mut().rev().take(8).find(|s| s.layer == t.layer && s.offset == offset) {
            if t.seq < s.first {
                (s.first, s.first_out) = (t.seq, out);
            }
            if t.seq > s.last {
                (s.last, s.last_out) = (t.seq, out);
            }
            return;
        }
        if n < 10_000 {
            self.segments.push(Segment {
                layer: t.layer,
                offset,
                first: t.seq,
                last: t.seq,
                first_out: out,
                last_out: out,
            });
        }
    }

    /// How many distinct packets of `layer` with sequences in `lo..=hi` arrived.
    fn count_seen(&self, layer: usize, lo: u32, hi: u32) -> u64 {
        let Some(seen) = self.seen.get(layer) else { return 0 };
        (lo..=hi).filter(|&s| seen.get((s / 64) as usize).is_some_and(|w| w & (1 << (s % 64)) != 0)).count() as u64
    }

    /// Per layer, the packets sent in the window this subscriber should have got and got (see the
    /// module documentation). `sent[l]` is layer l's window range.
    pub fn account(&self, sent: &[SentRange]) -> Vec<Count> {
        let mut counts = vec![Count::default(); sent.len()];
        let n = self.segments.len();
        for (k, seg) in self.segments.iter().enumerate() {
            let l = usize::from(seg.layer);
            let Some(range) = sent.get(l) else { continue };
            let Some(window_first) = range.first else { continue };
            let lo = if k == 0 { window_first } else { seg.first.max(window_first) };
            let hi = if k + 1 == n { range.last } else { seg.last.min(range.last) };
            if lo <= hi {
                counts[l].expected += u64::from(hi - lo) + 1;
                counts[l].received += self.count_seen(l, lo, hi);
            }
            if k > 0 {
                let prev = &self.segments[k - 1];
                let gap = (seg.first_out - prev.last_out - 1).max(0) as u64;
                let prev_in = sent.get(usize::from(prev.layer)).is_some_and(|r| r.contains(prev.last));
                if gap > 0 && prev_in && range.contains(seg.first) {
                    counts[l].expected += gap;
                }
            }
        }
        counts
    }
}

/// [`Received::account`] for a stream of which nothing arrived: the window's packets of the
/// layer `asked` are all lost.
pub fn account_missing(sent: &[SentRange], asked: usize) -> Vec<Count> {
    let mut counts = vec![Count::default(); sent.len()];
    if let (Some(c), Some(r)) = (counts.get_mut(asked), sent.get(asked)) {
        c.expected = r.count();
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(layer: u8, seq: u32) -> Trailer {
        Trailer { publisher: 1, kind: Kind::Video, layer, seq, sent_us: 10 }
    }

    fn range(first: u32, last: u32) -> SentRange {
        SentRange { first: Some(first), last }
    }

    #[test]
    fn one_layer_counts_each_sequence_once_over_the_whole_window() {
        let mut r = Received::new(1, Kind::Video);
        // Output numbering = publisher's + 1000; 7 lost, 6 twice (a retransmission).
        for seq in [3, 4, 5, 6, 6, 8, 9, 200] {
            r.note(&t(0, seq), 1000 + seq as u16, 20, true);
        }
        assert_eq!((r.total, r.duplicates, r.segments.len()), (7, 1, 1));
        assert_eq!(r.latency().map(Histogram::len).sum::<u64>(), 7);
        // Window 5..=10: 5, 6, 8, 9 arrived; 7 and 10 (the tail) are lost.
        assert_eq!(r.account(&[range(5, 10)]), [Count { expected: 6, received: 4 }]);
        assert_eq!(account_missing(&[range(5, 10)], 0), [Count { expected: 6, received: 0 }]);
    }

    #[test]
    fn switches_count_loss_against_the_layer_in_effect() {
        let mut r = Received::new(1, Kind::Video);
        // The hub's numbering, from 65 530 and wrapping on the way.
        let out = |n: u32| (65_530 + n) as u16;
        // Layer 2 from 10 to 19, 15 arriving late; a switch to layer 0 at its keyframe 40, whose
        // packet the hub numbered but the subscriber never got; 41..=44; back up to layer 2 at 30.
        for seq in (10..=19).filter(|&s| s != 15).chain([15]) {
            r.note(&t(2, seq), out(seq - 10), 20, true);
        }
        for seq in 41..=44 {
            r.note(&t(0, seq), out(seq - 30), 20, true);
        }
        for seq in 30..=35 {
            r.note(&t(2, seq), out(seq - 15), 20, true);
        }
        let layers: Vec<_> = r.segments.iter().map(|s| (s.layer, s.first, s.last)).collect();
        assert_eq!(layers, [(2, 10, 19), (0, 41, 44), (2, 30, 35)]);
        // The window: layer 0 sent 30..=50, layer 1 30..=50, layer 2 5..=36.
        let sent = [range(30, 50), range(30, 50), range(5, 36)];
        let c = r.account(&sent);
        // Layer 2: 5..=19 (the first segment reaches back to the window's start: 5..=9 lost) and
        // 30..=36 (the last reaches to its end: 36 lost). Layer 0: 41..=44 and the gap before.
        assert_eq!(c[2], Count { expected: 15 + 7, received: 10 + 6 });
        assert_eq!(c[0], Count { expected: 4 + 1, received: 4 });
        assert_eq!(c[1], Count::default());
    }

    #[test]
    fn a_restart_on_the_same_layer_is_a_new_segment() {
        let mut r = Received::new(1, Kind::Audio);
        for seq in 0..5 {
            r.note(&t(0, seq), 100 + seq as u16, 20, false);
        }
        // A mute: the publisher's 5..=9 were dropped by the hub, which goes on at 105.
        for seq in 10..15 {
            r.note(&t(0, seq), 95 + seq as u16, 20, false);
        }
        assert_eq!(r.segments.len(), 2);
        assert_eq!(r.latency().map(Histogram::len).sum::<u64>(), 0);
        assert_eq!(r.account(&[range(0, 14)]), [Count { expected: 10, received: 10 }]);
    }
}
