//! Where a receiver's decoder can start: keyframe detection from the RTP payload, without decoding.
//!
//! A forwarder may only begin a stream (or move it to another simulcast layer, or to a restarted
//! publisher) on the *first packet of a keyframe*; everything before that packet is dropped. Each
//! function here answers "does this payload begin a frame that decodes on its own?" by reading the
//! payload descriptor and, where needed, the first bytes of the codec's frame header. A `false` is always
//! safe (the forwarder waits for the next keyframe); a `true` on a packet that is not one would break the
//! receiver's decoder, so each check errs towards `false` on truncated or unknown input.
//!
//! Supported:
//! - **VP8** (RFC 7741): S = 1 and PID = 0 in the payload descriptor, then the P bit of the VP8 frame
//!   tag (RFC 6386 §9.1) is 0.
//! - **VP9** (draft-ietf-payload-vp9): P = 0 (not inter-predicted) and B = 1 (start of a frame) and,
//!   when the layer indices are present, spatial layer 0.
//! - **H.264** (RFC 6184, packetization modes 0 and 1): a single NAL unit, the first unit of a STAP-A, or
//!   the first fragment of an FU-A whose NAL type is an IDR slice (5) or a sequence parameter set (7).
//!   WebRTC senders put SPS and PPS before every IDR, and each simulcast layer has its own SPS
//!   (resolutions differ), so the switch point is the SPS when it comes first; STAP-B, MTAP and FU-B
//!   (interleaved mode) are not recognised.
//! - **AV1** (AV1 RTP specification §4.4): N = 1 (first packet of a coded video sequence) and Z = 0.
//! - **Audio**: every packet is a switch point.
//!
//! Not supported: H.265, and any codec not listed (use [`Codec::Audio`] only for audio).

/// The codec of a forwarded track, as far as forwarding needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Any audio codec (Opus, G.711, …): no keyframes, so every packet is a switch point.
    Audio,
}

impl Codec {
    /// True when the codec is video (switching needs a keyframe).
    pub fn is_video(self) -> bool {
        !matches!(self, Codec::Audio)
    }

    /// True when `payload` (the RTP payload, padding removed) starts a keyframe.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_keyframe_start(payload),
            Codec::Vp9 => vp9_keyframe_start(payload),
            Codec::H264 => h264_keyframe_start(payload),
            Codec::Av1 => av1_keyframe_start(payload),
            Codec::Audio => !payload.is_empty(),
        }
    }
}

/// RFC 7741 §4.2 payload descriptor, then the VP8 frame tag.
pub fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // I: picture id, one byte, or two when its M bit is set.
            let Some(&pid) = payload.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // T or K: TID/Y/KEYIDX share one byte
        }
    }
    // Frame tag: bit 0 of its first byte is P, "inter frame"; 0 means keyframe.
    payload.get(at).is_some_and(|&tag| tag & 0x01 == 0)
}

/// draft-ietf-payload-vp9 §4.2: `|I|P|L|F|B|E|V|Z|`, then the optional picture id and layer indices.
pub fn vp9_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let has_pid = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let has_layers = first & 0x20 != 0;
    let begins_frame = first & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if !has_layers {
        return true;
    }
    let mut at = 1;
    if has_pid {
        let Some(&pid) = payload.get(at) else { return false };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: |TID|U| SID |D|
    payload.get(at).is_some_and(|&layers| (layers >> 1) & 0x07 == 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184 §5.6–5.8: single NAL unit, STAP-A, FU-A.
pub fn h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&nal) = payload.first() else { return false };
    let starts = |t: u8| t == H264_IDR || t == H264_SPS;
    match nal & 0x1F {
        H264_STAP_A => {
            // Aggregated units: 16-bit size, then the unit; any IDR or SPS inside makes it a start.
            let mut at = 1;
            while at + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[at], payload[at + 1]]) as usize;
                let Some(&unit) = payload.get(at + 2) else { return false };
                if size == 0 {
                    return false;
                }
                if starts(unit & 0x1F) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        H264_FU_A => payload.get(1).is_some_and(|&fu| fu & 0x80 != 0 && starts(fu & 0x1F)),
        t => starts(t),
    }
}

/// AV1 aggregation header `|Z|Y|W W|N|-|-|-|`: N marks the first packet of a coded video sequence.
pub fn av1_keyframe_start(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&h| h & 0x08 != 0 && h & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_descriptor_variants() {
        // Minimal descriptor, S=1 PID=0, frame tag P=0.
        assert!(vp8_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same with P=1: an inter frame.
        assert!(!vp8_keyframe_start(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!vp8_keyframe_start(&[0x00, 0x00]));
        // Partition 1.
        assert!(!vp8_keyframe_start(&[0x11, 0x00]));
        // X with I (two-byte picture id), L and T: tag after 1 + 1 + 2 + 1 + 1 bytes.
        assert!(vp8_keyframe_start(&[0x90, 0xE0, 0x81, 0x23, 0x05, 0x40, 0x00]));
        assert!(!vp8_keyframe_start(&[0x90, 0xE0, 0x81, 0x23, 0x05, 0x40, 0x01]));
        // X with I one-byte picture id only.
        assert!(vp8_keyframe_start(&[0x90, 0x80, 0x12, 0x00]));
        // Truncated.
        assert!(!vp8_keyframe_start(&[0x90, 0xE0, 0x81]));
        assert!(!vp8_keyframe_start(&[]));
        assert!(!vp8_keyframe_start(&[0x10]));
    }

    #[test]
    fn vp9_descriptor_variants() {
        // B=1, P=0, no layers.
        assert!(vp9_keyframe_start(&[0x08]));
        // P=1.
        assert!(!vp9_keyframe_start(&[0x48]));
        // B=0.
        assert!(!vp9_keyframe_start(&[0x04]));
        // I (15-bit pid) and L with SID 0, then SID 1.
        assert!(vp9_keyframe_start(&[0xA8, 0x80, 0x01, 0x00]));
        assert!(!vp9_keyframe_start(&[0xA8, 0x80, 0x01, 0x02]));
        assert!(!vp9_keyframe_start(&[0xA8, 0x80]));
    }

    #[test]
    fn h264_packetizations() {
        assert!(h264_keyframe_start(&[0x65, 0x88])); // single IDR
        assert!(h264_keyframe_start(&[0x67, 0x42])); // single SPS
        assert!(!h264_keyframe_start(&[0x41, 0x9a])); // non-IDR slice
        assert!(!h264_keyframe_start(&[0x68, 0xce])); // PPS alone
                                                      // STAP-A with SPS (size 2) and PPS (size 2).
        assert!(h264_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]));
        // STAP-A with two non-IDR units.
        assert!(!h264_keyframe_start(&[0x78, 0x00, 0x02, 0x41, 0x00, 0x00, 0x02, 0x41, 0x00]));
        // STAP-A whose IDR is the second unit.
        assert!(h264_keyframe_start(&[0x78, 0x00, 0x02, 0x06, 0x00, 0x00, 0x02, 0x65, 0x00]));
        // FU-A start of IDR, middle of IDR, start of non-IDR.
        assert!(h264_keyframe_start(&[0x7C, 0x85, 0x00]));
        assert!(!h264_keyframe_start(&[0x7C, 0x05, 0x00]));
        assert!(!h264_keyframe_start(&[0x7C, 0x81, 0x00]));
        assert!(!h264_keyframe_start(&[0x7C]));
        assert!(!h264_keyframe_start(&[]));
    }

    #[test]
    fn av1_aggregation_header() {
        assert!(av1_keyframe_start(&[0x18]));
        assert!(!av1_keyframe_start(&[0x10]));
        assert!(!av1_keyframe_start(&[0x88]));
    }
}
