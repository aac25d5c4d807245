//! For the adapter's tests: a plain webrtc-rs client peer on loopback, and a guard that turns
//! a hang into a failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

/// A failure guard: the steps of the tests end on events, not on time.
pub const GUARD: Duration = Duration::from_secs(30);

pub async fn guarded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A client as a browser would be, reduced to loopback host candidates. Its media engine registers
/// no header extensions, so its audio carries no RFC 6464 level.
pub async fn client() -> Arc<RTCPeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    Arc::new(api.new_peer_connection(RTCConfiguration::default()).await.unwrap())
}

/// Sets the local description and returns it with all candidates (the clients do not trickle).
pub async fn complete_local(pc: &RTCPeerConnection, description: RTCSessionDescription) -> String {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await.unwrap();
    guarded("client gathering", gathered.recv()).await;
    pc.local_description().await.unwrap().sdp
}
