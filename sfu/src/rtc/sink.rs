//! The outgoing track of one subscription: a `TrackLocal` bound to one sender of one connection.
//!
//! `TrackLocalStaticRTP` is made for a track shared by many connections: every write copies the
//! packet, takes an async lock and copies its list of bindings. A subscription's track is bound to
//! one sender at a time, and the forwarder hands over each packet it made for it, so
//! [`SubscriptionTrack::write`] only rewrites that packet's SSRC and payload type to what the binding
//! negotiated (adds the MID extension if negotiated) and passes it to the sender's writer, which
//! drops it while the sender is paused.

use std::any::Any;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rtp::header::Extension;
use rtp::packet::Packet;
use webrtc::interceptor::Attributes;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc::sdp::extmap;
use webrtc::track::track_local::{TrackLocal, TrackLocalContext, TrackLocalWriter};

use super::lock;

struct Binding {
    id: String,
    ssrc: u32,
    payload_type: u8,
    mid: Option<Extension>,
    writer: Arc<dyn TrackLocalWriter + Send + Sync>,
}

pub(super) struct SubscriptionTrack {
    codec: RTCRtpCodecCapability,
    /// Both the track id and the stream id of the `msid`.
    label: String,
    binding: Mutex<Option<Arc<Binding>>>,
}

impl SubscriptionTrack {
    pub(super) fn new(codec: RTCRtpCodecCapability, label: &str) -> Self {
        SubscriptionTrack { codec, label: label.to_owned(), binding: Mutex::new(None) }
    }

    /// Sends `packet` on the bound sender; nothing (and `Ok(0)`) before the track is bound.
    pub(super) async fn write(&self, mut packet: Packet) -> Result<usize, webrtc::Error> {
        let Some(binding) = lock(&self.binding).clone() else { return Ok(0) };
        packet.header.ssrc = binding.ssrc;
        packet.header.payload_type = binding.payload_type;
        if let Some(mid) = &binding.mid {
            packet.header.set_extension(mid.id, mid.payload.clone())?;
        }
        binding.writer.write_rtp_with_attributes(&packet, &Attributes::new()).await
    }
}

/// The codec of `parameters` that is `codec`: the same MIME type and format parameters, else the
/// first of the same MIME type (a browser may order or spell H.264's parameters its own way).
fn negotiated(codec: &RTCRtpCodecCapability, parameters: &[RTCRtpCodecParameters]) -> Option<RTCRtpCodecParameters> {
    let same_mime = |p: &&RTCRtpCodecParameters| p.capability.mime_type.eq_ignore_ascii_case(&codec.mime_type);
    parameters
        .iter()
        .filter(same_mime)
        .find(|p| p.capability.sdp_fmtp_line == codec.sdp_fmtp_line)
        .or_else(|| parameters.iter().find(same_mime))
        .cloned()
}

#[async_trait]
impl TrackLocal for SubscriptionTrack {
    async fn bind(&self, t: &TrackLocalContext) -> webrtc::error::Result<RTCRtpCodecParameters> {
        let codec = negotiated(&self.codec, t.codec_parameters()).ok_or(webrtc::Error::ErrUnsupportedCodec)?;
        let mid_id = t.header_extensions().iter().find(|e| e.uri == extmap::SDES_MID_URI).map(|e| e.id as u8);
        let mid = mid_id.zip(t.mid()).map(|(id, mid)| Extension { id, payload: mid.as_bytes().to_vec().into() });
        let binding =
            Binding { id: t.id(), ssrc: t.ssrc(), payload_type: codec.payload_type, mid, writer: t.write_stream() };
        *lock(&self.binding) = Some(Arc::new(binding));
        Ok(codec)
    }

    async fn unbind(&self, t: &TrackLocalContext) -> webrtc::error::Result<()> {
        let mut binding = lock(&self.binding);
        if binding.as_ref().is_some_and(|b| b.id == t.id()) {
            *binding = None;
            Ok(())
        } else {
            Err(webrtc::Error::ErrUnbindFailed)
        }
    }

    fn id(&self) -> &str {
        &self.label
    }

    fn rid(&self) -> Option<&str> {
        None
    }

    fn stream_id(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> RTPCodecType {
        if self.codec.mime_type.to_ascii_lowercase().starts_with("audio/") {
            RTPCodecType::Audio
        } else {
            RTPCodecType::Video
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
