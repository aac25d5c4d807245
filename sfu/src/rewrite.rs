//! One outgoing stream (one subscriber of one track): its sequence numbers and timestamps stay
//! continuous while its source changes underneath.
//!
//! A *source* is one incoming RTP stream: a simulcast layer and the SSRC it currently has. The
//! subscriber's stream switches source when the wanted layer changes, when it resumes after a pause or a
//! mute, and when the publisher restarts (new SSRC, or a jump of the sequence far backwards). The
//! contract, which the receiver's jitter buffer and decoder rely on:
//!
//! - **One source at a time.** A packet is forwarded only if it belongs to the current source, or if it
//!   belongs to the target layer and is a switch point (the first packet of a keyframe, see
//!   [`crate::codec`]); that packet makes its source the current one. Until the target's keyframe comes,
//!   the previous source keeps flowing, so a layer change never freezes the picture.
//! - **Sequence numbers:** the first packet after a switch gets `last sent + 1`; within a source the
//!   input's spacing is kept (an upstream loss stays a gap, for the receiver to NACK or conceal).
//!   Padding-only packets are not forwarded and leave no gap. Output sequence numbers strictly increase
//!   (modulo 2^16, compared by signed 16-bit distance).
//! - **Timestamps:** the first packet after a switch gets `last sent + max(1, elapsed wall time × clock
//!   rate)`, capped at 2^30 ticks so it still reads as "later" modulo 2^32; within a source the input's
//!   spacing is kept. Output timestamps never go backwards (modulo 2^32, signed 32-bit distance).
//! - **Ordering:** a packet of the current source that is not newer than the newest one already
//!   forwarded (a duplicate, or one reordered in the network, or an upstream retransmission of one) is
//!   dropped: forwarding it would need an output sequence number below one already sent. A packet more
//!   than [`RESTART_DISTANCE`] behind, or so far ahead of the last one sent (2^15 or more, possible
//!   across padding) that its output number would read as going back, is taken as a restart of the
//!   publisher's numbering and treated as a new source. A newer packet whose timestamp is older than the newest forwarded one is malformed
//!   input and dropped.
//! - **The SSRC** of the outgoing stream is not this type's concern: it never changes, and the owner
//!   stamps it.
//!
//! The first packet ever forwarded keeps its source's sequence number and timestamp (offsets 0).

use crate::Layer;

/// How far behind the newest forwarded sequence number a packet must be to be taken as a restart of
/// the publisher's numbering rather than a late packet.
pub const RESTART_DISTANCE: u16 = 1000;

/// Timestamp jumps on a switch are capped here, far below 2^31, so that they read as forward.
const MAX_SWITCH_TS_DELTA: u64 = 1 << 30;

/// What the rewriter needs to know of an incoming packet; computed once per packet, shared by every
/// subscriber's rewriter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePacket {
    pub layer: Layer,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    /// No payload (padding for bandwidth probing): never forwarded.
    pub padding_only: bool,
    /// The first packet of a keyframe (or any packet of an audio track).
    pub switch_point: bool,
}

/// The outgoing sequence number and timestamp for a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub seq: u16,
    pub timestamp: u32,
    /// This packet began a new source (a layer switch, a resume, a publisher restart).
    pub switched: bool,
}

/// Why a packet is not forwarded to this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber wants no layer now.
    Paused,
    /// Another layer than this packet's is current and wanted.
    NotSelected,
    /// The packet is of the wanted layer, which is not current yet, and is no switch point.
    WaitingForKeyframe,
    /// Not newer than what was already forwarded from this source.
    Late,
    /// Padding only.
    Padding,
    /// Newer sequence number with an older timestamp.
    TimestampBackwards,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forward(Rewritten),
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy)]
struct Source {
    layer: Layer,
    ssrc: u32,
    /// Added to the input's sequence number (wrapping).
    seq_offset: u16,
    /// Added to the input's timestamp (wrapping).
    ts_offset: u32,
    /// Newest input sequence number seen from this source (padding included).
    newest_seq: u16,
    /// Timestamp of the newest forwarded input packet.
    newest_ts: u32,
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u16,
    timestamp: u32,
    at_ms: u64,
}

/// Sequence number and timestamp state of one outgoing stream.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    clock_rate: u32,
    target: Option<Layer>,
    source: Option<Source>,
    last: Option<LastSent>,
}

impl StreamRewriter {
    /// A paused stream (no target) for a track with this RTP clock rate (90 000 for video, 48 000 for
    /// Opus).
    pub fn new(clock_rate: u32) -> Self {
        StreamRewriter { clock_rate, target: None, source: None, last: None }
    }

    /// Sets the wanted layer (`None` pauses the stream; resuming then needs a switch point). Returns
    /// true when the stream now waits for a keyframe of the target.
    pub fn set_target(&mut self, target: Option<Layer>) -> bool {
        self.target = target;
        if target.is_none() {
            self.source = None;
        }
        self.waiting_for_keyframe().is_some()
    }

    /// Forgets the current source, so the next packet forwarded must be a switch point (after a mute,
    /// for instance). Continuity with what was sent is kept.
    pub fn reset_source(&mut self) {
        self.source = None;
    }

    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// The layer being forwarded now.
    pub fn current(&self) -> Option<Layer> {
        self.source.map(|s| s.layer)
    }

    /// The layer whose keyframe this stream waits for, if it does.
    pub fn waiting_for_keyframe(&self) -> Option<Layer> {
        self.target.filter(|&t| self.current() != Some(t))
    }

    /// The last sequence number and timestamp sent, if any.
    pub fn last_sent(&self) -> Option<(u16, u32)> {
        self.last.map(|l| (l.seq, l.timestamp))
    }

    /// Decides whether `p` is forwarded on this stream, and with which sequence number and timestamp.
    pub fn rewrite(&mut self, p: &SourcePacket, now_ms: u64) -> Outcome {
        let Some(target) = self.target else { return Outcome::Drop(DropReason::Paused) };
        if self.source.is_some_and(|s| s.layer == p.layer && s.ssrc == p.ssrc) {
            match self.continue_source(p, target, now_ms) {
                Some(outcome) => return outcome,
                None => self.source = None,
            }
        }
        if p.layer != target {
            return Outcome::Drop(DropReason::NotSelected);
        }
        if p.padding_only {
            return Outcome::Drop(DropReason::Padding);
        }
        if !p.switch_point {
            return Outcome::Drop(DropReason::WaitingForKeyframe);
        }
        let (seq, timestamp) = match self.last {
            None => (p.seq, p.timestamp),
            Some(last) => {
                let elapsed = now_ms.saturating_sub(last.at_ms);
                let ticks = (elapsed.saturating_mul(u64::from(self.clock_rate)) / 1000).clamp(1, MAX_SWITCH_TS_DELTA);
                (last.seq.wrapping_add(1), last.timestamp.wrapping_add(ticks as u32))
            }
        };
        self.source = Some(Source {
            layer: p.layer,
            ssrc: p.ssrc,
            seq_offset: seq.wrapping_sub(p.seq),
            ts_offset: timestamp.wrapping_sub(p.timestamp),
            newest_seq: p.seq,
            newest_ts: p.timestamp,
        });
        self.last = Some(LastSent { seq, timestamp, at_ms: now_ms });
        Outcome::Forward(Rewritten { seq, timestamp, switched: true })
    }

    /// A packet of the current source: its outcome, or `None` when it shows the publisher restarted
    /// its numbering (far behind, or so far ahead that the output would read as going back).
    fn continue_source(&mut self, p: &SourcePacket, target: Layer, now_ms: u64) -> Option<Outcome> {
        let src = self.source.as_mut()?;
        let ahead = p.seq.wrapping_sub(src.newest_seq) as i16;
        if ahead <= 0 {
            if ahead.unsigned_abs() > RESTART_DISTANCE && p.layer == target {
                return None;
            }
            return Some(Outcome::Drop(DropReason::Late));
        }
        if p.padding_only {
            // The next packet takes this one's place in the output.
            src.newest_seq = p.seq;
            src.seq_offset = src.seq_offset.wrapping_sub(1);
            return Some(Outcome::Drop(DropReason::Padding));
        }
        if (p.timestamp.wrapping_sub(src.newest_ts) as i32) < 0 {
            return Some(Outcome::Drop(DropReason::TimestampBackwards));
        }
        let seq = p.seq.wrapping_add(src.seq_offset);
        let timestamp = p.timestamp.wrapping_add(src.ts_offset);
        // Padding in between can carry the input 2^15 or more past the last packet sent.
        if self.last.is_some_and(|last| (seq.wrapping_sub(last.seq) as i16) <= 0) {
            return None;
        }
        src.newest_seq = p.seq;
        src.newest_ts = p.timestamp;
        self.last = Some(LastSent { seq, timestamp, at_ms: now_ms });
        Some(Outcome::Forward(Rewritten { seq, timestamp, switched: false }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(layer: Layer, seq: u16, timestamp: u32, switch_point: bool) -> SourcePacket {
        SourcePacket { layer, ssrc: 100 + layer.index() as u32, seq, timestamp, padding_only: false, switch_point }
    }

    fn forwarded(o: Outcome) -> Rewritten {
        match o {
            Outcome::Forward(r) => r,
            Outcome::Drop(d) => panic!("dropped: {d:?}"),
        }
    }

    #[test]
    fn paused_stream_forwards_nothing() {
        let mut r = StreamRewriter::new(90_000);
        assert_eq!(r.rewrite(&pkt(Layer::LOW, 1, 0, true), 0), Outcome::Drop(DropReason::Paused));
    }

    #[test]
    fn padding_leaves_no_gap() {
        let mut r = StreamRewriter::new(90_000);
        r.set_target(Some(Layer::LOW));
        assert_eq!(forwarded(r.rewrite(&pkt(Layer::LOW, 10, 0, true), 0)).seq, 10);
        let pad = SourcePacket { padding_only: true, ..pkt(Layer::LOW, 11, 0, false) };
        assert_eq!(r.rewrite(&pad, 0), Outcome::Drop(DropReason::Padding));
        assert_eq!(forwarded(r.rewrite(&pkt(Layer::LOW, 12, 3000, false), 33)).seq, 11);
        // A real loss stays a gap.
        assert_eq!(forwarded(r.rewrite(&pkt(Layer::LOW, 14, 6000, false), 66)).seq, 13);
    }

    #[test]
    fn padding_cannot_carry_the_output_past_half_the_sequence_space() {
        let mut r = StreamRewriter::new(90_000);
        r.set_target(Some(Layer::LOW));
        forwarded(r.rewrite(&pkt(Layer::LOW, 0, 0, true), 0));
        let pad = SourcePacket { padding_only: true, ..pkt(Layer::LOW, 20_000, 0, false) };
        assert_eq!(r.rewrite(&pad, 0), Outcome::Drop(DropReason::Padding));
        // 20 000 + 15 000 past the last packet sent: a restart, which waits for a keyframe.
        assert_eq!(r.rewrite(&pkt(Layer::LOW, 35_000, 0, false), 0), Outcome::Drop(DropReason::WaitingForKeyframe));
        let next = forwarded(r.rewrite(&pkt(Layer::LOW, 35_001, 0, true), 0));
        assert_eq!((next.seq, next.switched), (1, true));
    }

    #[test]
    fn far_behind_is_a_restart() {
        let mut r = StreamRewriter::new(90_000);
        r.set_target(Some(Layer::LOW));
        forwarded(r.rewrite(&pkt(Layer::LOW, 5000, 0, true), 0));
        assert_eq!(r.rewrite(&pkt(Layer::LOW, 4990, 0, true), 1), Outcome::Drop(DropReason::Late));
        let restarted = forwarded(r.rewrite(&pkt(Layer::LOW, 3, 77, true), 10));
        assert_eq!((restarted.seq, restarted.timestamp, restarted.switched), (5001, 900, true));
    }
}
