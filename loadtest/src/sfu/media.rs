//! The synthetic media of the `sfu` scenario: real Opus audio and VP8-like video packets, each
//! ending in a trailer (publisher, kind, layer, sequence, send time) that the receiving side reads
//! to measure latency and loss per forwarded stream ([`super::received`]).
//!
//! **Why a trailer in the payload.** The hub forwards the publisher's payload untouched but
//! rewrites SSRC, sequence number and timestamp per subscriber and drops header extensions (their
//! ids were negotiated with the publisher, not the subscriber), so the payload is the only thing a
//! receiver can read the publisher's own numbering from.
//!
//! **Audio** is Opus made by libopus: a synthetic speaker (a voiced tone with syllables and
//! pauses, see [`Speech`]) encoded once up front, 20 ms frames at 48 kHz, and cycled: encoding per
//! packet would cost the load generator CPU that the hub on the same cores needs. The trailer
//! goes into Opus's own padding (RFC 6716 §3.2.5: a code 3 packet may end in padding bytes, which
//! decoders skip and must accept whatever their value), so every packet is a valid Opus packet that
//! decodes exactly as the encoder's output did. The hub decodes it for audio levels when, as here,
//! no RFC 6464 extension is negotiated.
//!
//! **Video** payloads begin with a real RFC 7741 payload descriptor (S = 1, partition 0 on a
//! frame's first packet) and, on keyframes, a VP8 frame tag with P = 0, the start code and the
//! layer's size, so that the hub's keyframe detection (`sfu::codec`) sees them as a browser's would.
//! Nothing after that is decodable. Each simulcast layer is its own RTP stream with its own
//! sequence numbers; the trailer names the layer.

use anyhow::{ensure, Context};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;

/// Bytes at the end of every payload: publisher (u32), kind (u8), layer (u8), sequence (u32),
/// send µs (u64).
pub const TRAILER: usize = 18;

/// A VP8 frame's payload is cut into packets of at most this many bytes.
pub const MAX_VIDEO_PAYLOAD: usize = 1100;

/// Samples of one 20 ms Opus frame at 48 kHz, mono.
const FRAME_SAMPLES: usize = 960;

/// The synthetic speaker's cycle: 6 s of 20 ms frames, talking for the first half.
const CYCLE_FRAMES: usize = 300;
const TALK_FRAMES: usize = 150;

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
    /// The simulcast layer, lowest first (0 for audio and single-layer video).
    pub layer: u8,
    /// The publisher's sequence number within its (kind, layer) stream, not wrapped at 2^16.
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
        layer: t[5],
        seq: u32::from_be_bytes(t[6..10].try_into().ok()?),
        sent_us: u64::from_be_bytes(t[10..18].try_into().ok()?),
    })
}

fn write_trailer(out: &mut [u8], t: &Trailer) {
    let mut b = &mut out[..TRAILER];
    b.put_u32(t.publisher);
    b.put_u8(t.kind as u8);
    b.put_u8(t.layer);
    b.put_u32(t.seq);
    b.put_u64(t.sent_us);
}

/// One video encoding a publisher sends, as announced in `meeting.publish` `layers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    /// Empty for a track without simulcast.
    pub rid: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
}

/// The encodings of every publisher's video, lowest first: with simulcast, rids "q", "h", "f" at
/// 320x180, 640x360 and 1280x720 with 15 %, 50 % and 100 % of `top_bps`; without, one layer.
pub fn video_layers(simulcast: bool, top_bps: u64) -> Vec<LayerSpec> {
    let layer = |rid: &str, width, height, bitrate_bps| LayerSpec { rid: rid.into(), width, height, bitrate_bps };
    if simulcast {
        vec![
            layer("q", 320, 180, (top_bps * 15 / 100).max(1)),
            layer("h", 640, 360, (top_bps / 2).max(1)),
            layer("f", 1280, 720, top_bps.max(1)),
        ]
    } else {
        vec![layer("", 1280, 720, top_bps.max(1))]
    }
}

/// The layer the hub forwards to a subscriber showing tracks at `size` (absent: no limit), when
/// its bandwidth is no limit: the smallest layer covering the size, else the largest. This is
/// the rule of `signaling::LayerSelector`, repeated here to know what a subscriber that received
/// nothing should have received.
pub fn layer_for(layers: &[LayerSpec], size: Option<(u32, u32)>) -> usize {
    let largest = layers.len().saturating_sub(1);
    let Some((w, h)) = size else { return largest };
    layers.iter().position(|l| l.width >= w && l.height >= h).unwrap_or(largest)
}

/// A synthetic speaker's Opus frames, encoded once and sent in a cycle (each publisher starts at a
/// different frame, so that they talk at different times and the hub's active speaker changes).
///
/// The signal is a voiced tone (a 110–170 Hz fundamental with five harmonics, its pitch drifting)
/// cut into syllables of about 140 ms, for 3 s (about -20 dBov), then 3 s of faint noise (about
/// -65 dBov): levels that the hub's decoder measures as speech and as silence.
pub struct Speech {
    /// Each frame already padded to code 3 with [`TRAILER`] bytes of padding at its end, which
    /// [`Speech::packet`] overwrites.
    frames: Vec<Bytes>,
}

impl Speech {
    /// Encodes the cycle at `bitrate_bps` (VBR, VoIP application, mono).
    pub fn new(bitrate_bps: u32) -> anyhow::Result<Speech> {
        let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .context("creating the Opus encoder")?;
        encoder.set_bitrate(opus::Bitrate::Bits(bitrate_bps.clamp(6_000, 510_000) as i32))?;
        let pcm = speech_pcm();
        let mut frames = Vec::with_capacity(CYCLE_FRAMES);
        let mut buf = [0u8; 1500];
        for chunk in pcm.chunks_exact(FRAME_SAMPLES) {
            let len = encoder.encode(chunk, &mut buf)?;
            frames.push(pad_for_trailer(&buf[..len])?);
        }
        Ok(Speech { frames })
    }

    /// Frame `n` of the cycle with its trailer, as RTP (sequence `seq`, timestamp `seq` × 960).
    pub fn packet(&self, n: usize, t: &Trailer) -> Packet {
        let frame = &self.frames[n % self.frames.len()];
        let mut b = BytesMut::from(&frame[..]);
        let at = b.len() - TRAILER;
        write_trailer(&mut b[at..], t);
        Packet {
            header: Header {
                version: 2,
                payload_type: 111,
                sequence_number: t.seq as u16,
                timestamp: t.seq.wrapping_mul(FRAME_SAMPLES as u32),
                ..Default::default()
            },
            payload: b.freeze(),
        }
    }

    /// Frames in the cycle.
    pub fn len(&self) -> usize {
        self.frames.len()
    }
}

/// `packet` padded (code 3, RFC 6716 §3.2.5) so that its last [`TRAILER`] bytes are padding.
fn pad_for_trailer(packet: &[u8]) -> anyhow::Result<Bytes> {
    // A code 3 header is the TOC, a frame-count byte and (for up to 254 bytes of padding) one
    // padding-length byte: 2 more than code 0's. Any other starting code needs no more than that.
    let mut buf = vec![0u8; packet.len() + 2 + TRAILER];
    buf[..packet.len()].copy_from_slice(packet);
    // libopus pads to the whole buffer (and returns OPUS_OK, not a length).
    opus::packet::pad(&mut buf, packet.len()).context("padding an Opus packet")?;
    let parsed = opus::packet::parse(&buf).context("parsing a padded Opus packet")?;
    let end =
        parsed.frames.last().map_or(parsed.payload_offset, |f| f.as_ptr() as usize - buf.as_ptr() as usize + f.len());
    ensure!(end + TRAILER <= buf.len(), "Opus padding too short for the trailer");
    Ok(Bytes::from(buf))
}

/// The synthetic speaker's cycle, 48 kHz mono.
fn speech_pcm() -> Vec<i16> {
    use std::f64::consts::TAU;
    let rate = 48_000.0;
    let mut pcm = Vec::with_capacity(CYCLE_FRAMES * FRAME_SAMPLES);
    let mut phase = 0.0f64;
    let mut noise = 0x2545_f491u32;
    for i in 0..CYCLE_FRAMES * FRAME_SAMPLES {
        let t = i as f64 / rate;
        noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let hiss = f64::from((noise >> 16) as i16) / 32_768.0;
        let sample = if i < TALK_FRAMES * FRAME_SAMPLES {
            let f0 = 140.0 + 30.0 * (TAU * 0.7 * t).sin();
            phase = (phase + TAU * f0 / rate) % TAU;
            let voiced: f64 = (1..=5).map(|k| (phase * f64::from(k)).sin() / f64::from(k)).sum();
            // Syllables: a raised sine at 3.5 Hz, its troughs flattened into short gaps.
            let syllable = ((TAU * 3.5 * t).sin() * 1.2).clamp(0.0, 1.0);
            0.2 * syllable * voiced + 0.002 * hiss
        } else {
            0.0006 * hiss
        };
        pcm.push((sample * 32_767.0).round().clamp(-32_768.0, 32_767.0) as i16);
    }
    pcm
}

/// The packets of one VP8-like frame of `frame_bytes` bytes of payload on one layer: the first
/// with S = 1 (and a keyframe header with `size` if `keyframe`), the last with the marker bit.
/// `first.seq` is the layer's sequence of the first packet; each packet takes the next.
pub fn video_frame(
    first: Trailer,
    frame: u32,
    fps: u32,
    keyframe: bool,
    frame_bytes: usize,
    size: (u32, u32),
) -> Vec<Packet> {
    let per_packet = MAX_VIDEO_PAYLOAD.max(TRAILER + 16);
    let count = frame_bytes.div_ceil(per_packet).max(1);
    let payload = (frame_bytes / count).max(TRAILER + 16);
    let timestamp = (u64::from(frame) * 90_000 / u64::from(fps.max(1))) as u32;
    (0..count)
        .map(|i| {
            let mut b = BytesMut::with_capacity(payload);
            if i == 0 {
                b.put_u8(0x10); // payload descriptor: S = 1, partition 0, no extensions
                if keyframe {
                    // Frame tag with P = 0 (key frame), the start code, width and height (14 bits each).
                    b.put_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
                    b.put_u16_le((size.0 & 0x3fff) as u16);
                    b.put_u16_le((size.1 & 0x3fff) as u16);
                } else {
                    b.put_slice(&[0x11, 0x02, 0x00]);
                }
            } else {
                b.put_u8(0x00); // continuation of partition 0
            }
            b.put_bytes(0xa5, payload - b.len());
            let seq = first.seq + i as u32;
            let at = b.len() - TRAILER;
            write_trailer(&mut b[at..], &Trailer { seq, ..first });
            Packet {
                header: Header {
                    version: 2,
                    payload_type: 96,
                    marker: i + 1 == count,
                    sequence_number: seq as u16,
                    timestamp,
                    ..Default::default()
                },
                payload: b.freeze(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(kind: Kind, layer: u8, seq: u32) -> Trailer {
        Trailer { publisher: 3, kind, layer, seq, sent_us: 1234 }
    }

    #[test]
    fn opus_packets_decode_like_the_encoder_output_and_carry_the_trailer() {
        let speech = Speech::new(32_000).unwrap();
        assert_eq!(speech.len(), CYCLE_FRAMES);
        let mut plain = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut padded = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let (mut a, mut b) = (vec![0i16; 5760], vec![0i16; 5760]);
        let mut rms = Vec::new();
        for n in 0..CYCLE_FRAMES {
            let t = trailer(Kind::Audio, 0, 7 + n as u32);
            let p = speech.packet(n, &t);
            assert_eq!(read_trailer(&p.payload), Some(t));
            assert_eq!(p.header.sequence_number, 7 + n as u16);
            // The same frame without its padding, as libopus would strip it.
            let mut stripped = p.payload.to_vec();
            let len = opus::packet::unpad(&mut stripped).unwrap();
            let na = plain.decode(&stripped[..len], &mut a, false).unwrap();
            let nb = padded.decode(&p.payload, &mut b, false).unwrap();
            assert_eq!((na, nb), (FRAME_SAMPLES, FRAME_SAMPLES));
            assert_eq!(a[..na], b[..nb], "frame {n} decodes differently with the trailer");
            let power = b[..nb].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / nb as f64;
            rms.push(power.sqrt() / 32_768.0);
        }
        // Speech, then near silence: the levels the hub measures differ by far more than its
        // voice threshold needs.
        let db = |r: f64| -20.0 * r.max(1e-9).log10();
        let talking = rms[10..TALK_FRAMES].iter().copied().fold(0.0, f64::max);
        let quiet = rms[TALK_FRAMES + 10..].iter().copied().fold(0.0, f64::max);
        assert!(db(talking) < 25.0, "talking at {:.0} dBov", db(talking));
        assert!(db(quiet) > 55.0, "pauses at {:.0} dBov", db(quiet));
    }

    #[test]
    fn video_frames_carry_trailers_and_keyframes_are_seen() {
        let key = video_frame(trailer(Kind::Video, 2, 100), 60, 30, true, 4000, (1280, 720));
        assert_eq!(key.len(), 4);
        assert!(::sfu::Codec::Vp8.is_keyframe_start(&key[0].payload));
        assert!(!::sfu::Codec::Vp8.is_keyframe_start(&key[1].payload));
        assert_eq!(&key[0].payload[7..11], &[0x00, 0x05, 0xd0, 0x02]);
        assert!(key[3].header.marker && !key[0].header.marker);
        assert_eq!(read_trailer(&key[2].payload), Some(trailer(Kind::Video, 2, 102)));
        let delta = video_frame(trailer(Kind::Video, 0, 104), 61, 30, false, 600, (320, 180));
        assert_eq!(delta.len(), 1);
        assert!(!::sfu::Codec::Vp8.is_keyframe_start(&delta[0].payload));
        assert_eq!(delta[0].header.timestamp, 61 * 3000);
        assert_eq!(delta[0].payload.len(), 600);
    }

    #[test]
    fn layers_and_the_layer_a_size_gets() {
        let layers = video_layers(true, 1_000_000);
        let rids: Vec<_> = layers.iter().map(|l| (l.rid.as_str(), l.bitrate_bps)).collect();
        assert_eq!(rids, [("q", 150_000), ("h", 500_000), ("f", 1_000_000)]);
        assert_eq!(layer_for(&layers, None), 2);
        assert_eq!(layer_for(&layers, Some((320, 180))), 0);
        assert_eq!(layer_for(&layers, Some((321, 100))), 1);
        assert_eq!(layer_for(&layers, Some((1920, 1080))), 2);
        assert_eq!(layer_for(&video_layers(false, 1_000_000), Some((320, 180))), 0);
    }
}
