//! What the node negotiates: codecs with their RTCP feedback, header extensions, interceptors.

use webrtc::api::interceptor_registry::configure_rtcp_reports;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::interceptor::nack::generator::Generator;
use webrtc::interceptor::registry::Registry;
use webrtc::interceptor::twcc;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::sdp::extmap;

use super::PeerRole;

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() }
}

/// Publishers get transport-wide congestion control (they estimate their uplink from our feedback);
/// subscribers get REMB only, so that they report their estimate of the downlink to us.
pub(super) fn register_codecs(media: &mut MediaEngine, role: PeerRole) -> Result<(), webrtc::Error> {
    let twcc = role == PeerRole::Publisher;
    let mut video_feedback = vec![feedback("goog-remb", "")];
    if twcc {
        video_feedback.push(feedback("transport-cc", ""));
    }
    video_feedback.extend([feedback("ccm", "fir"), feedback("nack", ""), feedback("nack", "pli")]);
    let video = |mime: &str, fmtp: &str, payload_type| RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: video_feedback.clone(),
        },
        payload_type,
        ..Default::default()
    };
    for codec in [
        video(MIME_TYPE_VP8, "", 96),
        video(MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 102),
        video(MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 108),
    ] {
        media.register_codec(codec, RTPCodecType::Video)?;
    }
    let opus = RTCRtpCodecParameters { capability: opus_capability(role), payload_type: 111, ..Default::default() };
    media.register_codec(opus, RTPCodecType::Audio)?;

    let extension = |uri: &str| RTCRtpHeaderExtensionCapability { uri: uri.to_owned() };
    let uris: &[&str] = if twcc { &[extmap::SDES_MID_URI, extmap::TRANSPORT_CC_URI] } else { &[extmap::SDES_MID_URI] };
    for uri in uris {
        media.register_header_extension(extension(uri), RTPCodecType::Audio, None)?;
        media.register_header_extension(extension(uri), RTPCodecType::Video, None)?;
    }
    media.register_header_extension(extension(extmap::AUDIO_LEVEL_URI), RTPCodecType::Audio, None)?;
    for uri in [extmap::SDES_RTP_STREAM_ID_URI, extmap::SDES_REPAIR_RTP_STREAM_ID_URI] {
        media.register_header_extension(extension(uri), RTPCodecType::Video, None)?;
    }
    Ok(())
}

/// Opus as the node negotiates it with a connection of `role` (also the codec of a room mix, which
/// only subscriber connections receive).
pub(super) fn opus_capability(role: PeerRole) -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: if role == PeerRole::Publisher { vec![feedback("transport-cc", "")] } else { Vec::new() },
    }
}

/// `register_default_interceptors` without the NACK responder: the forwarders answer NACKs.
pub(super) fn interceptors(mut registry: Registry, role: PeerRole) -> Registry {
    registry.add(Box::new(Generator::builder()));
    registry = configure_rtcp_reports(registry);
    if role == PeerRole::Publisher {
        registry.add(Box::new(twcc::sender::Sender::builder()));
        registry.add(Box::new(twcc::receiver::Receiver::builder()));
    }
    registry
}
