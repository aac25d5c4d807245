//! The synthetic media of the `sfu` scenario: Opus-like audio and VP8-like video packets, each
//! ending in a trailer (publisher, stream, sequence, send time) that the receiving side reads to
//! measure latency and loss per forwarded stream.
//!
//! Video payloads begin with a real RFC 7741 payload descriptor (S = 1, partition 0 on a frame's
//! first packet) and, on keyframes, a VP8 frame tag with P = 0 and the start code, so that the
//! hub's keyframe detection (`sfu::codec`) sees them as a browser's would. Nothing is decodable.

use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;

/// Bytes at the end of every payload: publisher (u32), kind (u8), sequence (u32), send µs (u64).
pub const TRAILER: usize = 17;

/// A VP8 frame's payload is cut into packets of at most this many bytes.
pub const MAX_VIDEO_PAYLOAD: usize = 1100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio = 0,
    Video = 1,
}

/// What the trailer of a received packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub publisher: u32,
    pub kind: Kind,
    pub seq: u32,
    pub sent_us: u64,
}

pub fn read_trailer(payload: &[u8]) -> Option<Trailer> {
    let t = payload.get(payload.len().checked_sub(TRAILER)?..)?;
    let kind = match t[4] {
        0 => Kind::Audio,
        1 => Kind::Video,
        _ => return None,
    };
    Some(Trailer {
        publisher: u32::from_be_bytes(t[0..4].try_into().ok()?),
        kind,
        seq: u32::from_be_bytes(t[5..9].try_into().ok()?),
        sent_us: u64::from_be_bytes(t[9..17].try_into().ok()?),
    })
}

fn put_trailer(b: &mut BytesMut, publisher: u32, kind: Kind, seq: u32, sent_us: u64) {
    b.put_u32(publisher);
    b.put_u8(kind as u8);
    b.put_u32(seq);
    b.put_u64(sent_us);
}

/// One Opus-like packet of 20 ms: a TOC byte, filler, the trailer (`bytes` in all).
pub fn audio_packet(publisher: u32, seq: u32, sent_us: u64, bytes: usize) -> Packet {
    let bytes = bytes.max(TRAILER + 1);
    let mut b = BytesMut::with_capacity(bytes);
    b.put_u8(0x78); // TOC: SILK/CELT hybrid config, 20 ms frame (nothing reads it)
    b.put_bytes(0x55, bytes - 1 - TRAILER);
    put_trailer(&mut b, publisher, Kind::Audio, seq, sent_us);
    Packet {
        header: Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq as u16,
            timestamp: seq.wrapping_mul(960),
            ..Default::default()
        },
        payload: b.freeze(),
    }
}

/// The packets of one VP8-like frame of `frame_bytes` bytes of payload: the first with S = 1 (and
/// a keyframe header if `keyframe`), the last with the marker bit. `seq` is the stream sequence
/// of the first packet; each packet takes the next.
pub fn video_frame(
    publisher: u32,
    seq: u32,
    frame: u32,
    fps: u32,
    keyframe: bool,
    frame_bytes: usize,
    sent_us: u64,
) -> Vec<Packet> {
    let per_packet = MAX_VIDEO_PAYLOAD.max(TRAILER + 16);
    let count = frame_bytes.div_ceil(per_packet).max(1);
    let size = (frame_bytes / count).max(TRAILER + 16);
    let timestamp = (u64::from(frame) * 90_000 / u64::from(fps.max(1))) as u32;
    (0..count)
        .map(|i| {
            let mut b = BytesMut::with_capacity(size);
            if i == 0 {
                b.put_u8(0x10); // payload descriptor: S = 1, partition 0, no extensions
                if keyframe {
                    // Frame tag with P = 0 (key frame), the start code, 320x180.
                    b.put_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00]);
                } else {
                    b.put_slice(&[0x11, 0x02, 0x00]);
                }
            } else {
                b.put_u8(0x00); // continuation of partition 0
            }
            b.put_bytes(0xa5, size - b.len() - TRAILER);
            put_trailer(&mut b, publisher, Kind::Video, seq + i as u32, sent_us);
            Packet {
                header: Header {
                    version: 2,
                    payload_type: 96,
                    marker: i + 1 == count,
                    sequence_number: (seq + i as u32) as u16,
                    timestamp,
                    ..Default::default()
                },
                payload: b.freeze(),
            }
        })
        .collect()
}

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
}

/// What one subscriber got of one forwarded stream.
pub struct Received {
    pub publisher: u32,
    pub kind: Kind,
    /// Every packet, whatever its send time (seen once per sequence number).
    pub total: u64,
    pub duplicates: u64,
    /// Sequence numbers seen, as a bitset (the streams are short: bounded by the run).
    seen: Vec<u64>,
    /// One-way latency of each packet sent inside the window, µs.
    pub latency: Histogram<u64>,
}

impl Received {
    pub fn new(publisher: u32, kind: Kind) -> Received {
        Received { publisher, kind, total: 0, duplicates: 0, seen: Vec::new(), latency: crate::ipc::new_histogram() }
    }

    /// Notes one packet; `window` says whether its send time counts for latency.
    pub fn note(&mut self, t: &Trailer, now_us: u64, in_window: bool) {
        let (word, bit) = ((t.seq / 64) as usize, t.seq % 64);
        if word >= self.seen.len() {
            // Bounded: sequences grow by at most a few hundred per second of a bounded run.
            if word > 1 << 20 {
                return;
            }
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.total += 1;
        if in_window {
            let _ = self.latency.record(now_us.saturating_sub(t.sent_us).max(1));
        }
    }

    /// How many distinct packets of `range` arrived.
    pub fn count_in(&self, range: &SentRange) -> u64 {
        let Some(first) = range.first else { return 0 };
        (first..=range.last)
            .filter(|&s| self.seen.get((s / 64) as usize).is_some_and(|w| w & (1 << (s % 64)) != 0))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_round_trip_and_keyframes_are_seen() {
        let a = audio_packet(3, 7, 1234, 100);
        assert_eq!(a.payload.len(), 100);
        let t = read_trailer(&a.payload).unwrap();
        assert_eq!(t, Trailer { publisher: 3, kind: Kind::Audio, seq: 7, sent_us: 1234 });

        let key = video_frame(5, 100, 60, 30, true, 4000, 99);
        assert_eq!(key.len(), 4);
        assert!(::sfu::Codec::Vp8.is_keyframe_start(&key[0].payload));
        assert!(!::sfu::Codec::Vp8.is_keyframe_start(&key[1].payload));
        assert!(key[3].header.marker && !key[0].header.marker);
        assert_eq!(read_trailer(&key[2].payload).unwrap().seq, 102);
        let delta = video_frame(5, 104, 61, 30, false, 4000, 99);
        assert!(!::sfu::Codec::Vp8.is_keyframe_start(&delta[0].payload));
        assert_eq!(delta[0].header.timestamp, 61 * 3000);
    }

    #[test]
    fn received_counts_each_sequence_once() {
        let mut r = Received::new(1, Kind::Video);
        let t = |seq| Trailer { publisher: 1, kind: Kind::Video, seq, sent_us: 10 };
        for seq in [5, 6, 6, 8, 200] {
            r.note(&t(seq), 20, true);
        }
        assert_eq!((r.total, r.duplicates), (4, 1));
        let range = SentRange { first: Some(5), last: 8 };
        assert_eq!((range.count(), r.count_in(&range)), (4, 3));
        assert_eq!(r.latency.len(), 4);
    }
}
