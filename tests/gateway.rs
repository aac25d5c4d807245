//! The socket edge: auth, refresh and expiry, heartbeats, bad frames, limits, shutdown.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use hub::{auth::now_secs, protocol::Codec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn first_frame_must_be_connect() {
    let hub = Hub::start(&[]);
    let mut c = Client::open(&hub, Codec::Json).await;
    let reply = c.request(json!({ "op": "subscribe", "channel": "news" })).await;
    assert_eq!(reply["code"], "unauthorized");
    assert_eq!(c.close_code().await, Some(4100));
}

#[tokio::test]
async fn bad_signature_is_refused() {
    let hub = Hub::start(&[]);
    let forged = hub::auth::mint_hs256(
        "some-other-secret-entirely",
        &hub::auth::Claims { sub: "mallory".into(), exp: now_secs() + 60, role: None, channels: vec![] },
    );
    let mut c = Client::open(&hub, Codec::Json).await;
    let reply = c.request(json!({ "op": "connect", "token": forged })).await;
    assert_eq!(reply["code"], "unauthorized");
    assert_eq!(c.close_code().await, Some(4101));
    let mut c = Client::open(&hub, Codec::Json).await;
    let reply = c.request(json!({ "op": "connect", "token": "not.a.jwt" })).await;
    assert_eq!(reply["code"], "unauthorized");
    assert_eq!(c.close_code().await, Some(4101));
}

#[tokio::test]
async fn expired_token_is_refused() {
    let hub = Hub::start(&["auth.leeway=\"0s\""]);
    let mut c = Client::open(&hub, Codec::Json).await;
    let reply = c.request(json!({ "op": "connect", "token": token_with("old", None, &[], now_secs() - 10) })).await;
    assert_eq!(reply["code"], "token_expired");
    assert_eq!(c.close_code().await, Some(4102));
}

#[tokio::test]
async fn silent_socket_is_closed_after_connect_timeout() {
    let hub = Hub::start(&["auth.connect_timeout=\"200ms\""]);
    let mut c = Client::open(&hub, Codec::Json).await;
    assert_eq!(c.close_code().await, Some(4100));
}

#[tokio::test]
async fn refresh_extends_and_expiry_closes() {
    let hub = Hub::start(&["auth.leeway=\"0s\""]);
    let short = now_secs() + 2;
    // Refreshed before its token lapses: stays.
    let mut kept = Client::connect_token(&hub, &token_with("alice", None, &[], short), Codec::Json).await;
    let long = now_secs() + 3600;
    let data = kept.ok(json!({ "op": "refresh", "token": token_with("alice", None, &[], long) })).await;
    assert_eq!(data["expires_at"], json!(long));
    // A refresh for someone else is refused.
    assert_eq!(kept.err(json!({ "op": "refresh", "token": token("bob") })).await, "unauthorized");
    // Not refreshed, and expiring later than the first token did: closed with 4102 ...
    let mut lapsed = Client::connect_token(&hub, &token_with("alice", None, &[], short + 2), Codec::Json).await;
    assert_eq!(lapsed.close_code().await, Some(4102));
    // ... by which time the refreshed connection has outlived its first token and still answers.
    kept.ok(json!({ "op": "ping" })).await;
}

#[tokio::test]
async fn client_that_never_pongs_is_closed() {
    let hub = Hub::start(&["gateway.ping_interval=\"100ms\"", "gateway.pong_timeout=\"100ms\""]);
    // A raw WebSocket client that reads frames but never answers pings.
    let mut tcp = tokio::net::TcpStream::connect(&hub.addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let connect = json!({ "id": 1, "op": "connect", "token": token("quiet") }).to_string();
    tcp.write_all(&masked_text_frame(connect.as_bytes())).await.unwrap();
    let mut seen_ping = false;
    let mut buf = Vec::new();
    let close_code = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(GUARD, tcp.read(&mut chunk)).await.expect("guard").unwrap();
        assert!(n > 0, "socket ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_subslice(&buf, b"\r\n\r\n") {
            if buf.starts_with(b"HTTP/1.1 101") {
                buf.drain(..end + 4);
            }
        }
        let mut found = None;
        while let Some((opcode, payload, used)) = parse_frame(&buf) {
            buf.drain(..used);
            match opcode {
                0x9 => seen_ping = true,
                0x8 => {
                    found = Some(u16::from_be_bytes([payload[0], payload[1]]));
                    break;
                }
                _ => {}
            }
        }
        if let Some(code) = found {
            break code;
        }
    };
    assert!(seen_ping, "the server pings before giving up");
    assert_eq!(close_code, 4002);
}

fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// (opcode, payload, bytes used) of an unmasked server frame, if complete.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < head + len {
        return None;
    }
    Some((opcode, buf[head..head + len].to_vec(), head + len))
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn malformed_and_unknown_input_gets_errors_and_the_connection_lives() {
    let hub = Hub::start(&[]);
    let mut c = Client::connect(&hub, "alice").await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "bad_request"),
        (Message::text("[]"), "bad_request"),
        (Message::text(r#"{"op":"subscribe","channel":"news"}"#), "bad_request"),
        (Message::text(r#"{"id":5,"op":"teleport"}"#), "unknown_op"),
        (Message::text(r#"{"id":6,"op":"publish","channel":"news"}"#), "bad_request"),
        (Message::text(r#"{"id":7,"op":"subscribe","channel":42}"#), "bad_request"),
        (Message::binary(vec![0xc1, 0xff, 0x00]), "bad_request"),
        (Message::binary(rmp_serde::to_vec_named(&json!({"id": 8, "op": "warp"})).unwrap()), "unknown_op"),
    ];
    for (msg, code) in cases {
        c.send_raw(msg).await;
        let reply = c.next_message().await.expect("connection stays open");
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
    }
    // An error names the request id when it can be read.
    c.send_raw(Message::text(r#"{"id":77,"op":"nope"}"#)).await;
    assert_eq!(c.next_message().await.unwrap()["id"], 77);
    assert_eq!(c.err(json!({ "op": "connect", "token": token("alice") })).await, "bad_request");
    c.ok(json!({ "op": "ping" })).await;
}

#[tokio::test]
async fn msgpack_clients_speak_the_same_protocol() {
    let hub = Hub::start(&[]);
    let mut m = Client::connect_token(&hub, &token("mp"), Codec::MsgPack).await;
    let mut j = Client::connect(&hub, "js").await;
    m.ok(json!({ "op": "subscribe", "channel": "mixed" })).await;
    j.ok(json!({ "op": "subscribe", "channel": "mixed" })).await;
    j.ok(json!({ "op": "publish", "channel": "mixed", "data": { "n": 1, "s": "é" } })).await;
    let p = m.next_of("push", "mixed").await;
    assert_eq!(p["data"], json!({ "n": 1, "s": "é" }));
    assert_eq!(j.next_of("push", "mixed").await["data"], p["data"], "the publisher gets its own publication");
    assert_eq!(p["from"], "js");
    m.ok(json!({ "op": "publish", "channel": "mixed", "data": [1, 2, 3] })).await;
    assert_eq!(j.next_of("push", "mixed").await["data"], json!([1, 2, 3]));
}

#[tokio::test]
async fn oversize_frame_closes_with_1009() {
    let hub = Hub::start(&["gateway.max_message_bytes=1024"]);
    let mut c = Client::connect(&hub, "big").await;
    let huge = "x".repeat(4096);
    c.send_raw(Message::text(format!(r#"{{"id":9,"op":"publish","channel":"news","data":"{huge}"}}"#))).await;
    assert_eq!(c.close_code().await, Some(1009));
    // The node keeps serving others.
    let mut other = Client::connect(&hub, "small").await;
    other.ok(json!({ "op": "ping" })).await;
}

#[tokio::test]
async fn rate_limit_rejects_excess_and_keeps_the_socket() {
    let hub = Hub::start(&["gateway.rate_per_sec=1.0", "gateway.rate_burst=5.0"]);
    let mut c = Client::connect(&hub, "eager").await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        let r = c.request(json!({ "op": "ping" })).await;
        codes.push(r["code"].as_str().unwrap_or("ok").to_string());
    }
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "rate_limited").count(), 5, "{codes:?}");
    // Still open: a WebSocket ping gets its pong.
    c.ws.send(Message::Ping(b"alive".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(GUARD, c.ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"alive");
                break;
            }
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect_elsewhere() {
    let mut hub = Hub::start(&[]);
    let mut a = Client::connect(&hub, "a").await;
    let mut b = Client::connect(&hub, "b").await;
    a.ok(json!({ "op": "subscribe", "channel": "news" })).await;
    assert_eq!(hub.terminate(), Some(0));
    assert_eq!(a.close_code().await, Some(4000));
    assert_eq!(b.close_code().await, Some(4000));
}

/// Tokens signed with RS256 and ES256 keys are accepted when their public keys are configured.
#[tokio::test]
async fn rs256_and_es256_tokens_with_configured_public_keys() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let dir = std::env::temp_dir().join(format!("hub-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl").args(args).current_dir(&dir).status().unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
    openssl(&["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"]);
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
    openssl(&["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"]);
    let rsa_pub = dir.join("rsa.pub.pem");
    let ec_pub = dir.join("ec.pub.pem");
    let hub = Hub::start(&[
        &format!("auth.rsa_public_keys=[\"{}\"]", rsa_pub.display()),
        &format!("auth.ec_public_keys=[\"{}\"]", ec_pub.display()),
    ]);
    let claims = hub::auth::Claims { sub: "keyed".into(), exp: now_secs() + 60, role: None, channels: vec![] };
    let rsa_key = EncodingKey::from_rsa_pem(&std::fs::read(dir.join("rsa.pem")).unwrap()).unwrap();
    let ec_key = EncodingKey::from_ec_pem(&std::fs::read(dir.join("ec.pem")).unwrap()).unwrap();
    let rs = encode(&Header::new(Algorithm::RS256), &claims, &rsa_key).unwrap();
    let es = encode(&Header::new(Algorithm::ES256), &claims, &ec_key).unwrap();
    for token in [rs, es] {
        let c = Client::connect_token(&hub, &token, Codec::Json).await;
        assert_eq!(c.connect_reply["user"], "keyed");
    }
    // An ES256 token from a key that is not configured is refused.
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.pem"]);
    let other = EncodingKey::from_ec_pem(&std::fs::read(dir.join("other.pem")).unwrap()).unwrap();
    let forged = encode(&Header::new(Algorithm::ES256), &claims, &other).unwrap();
    let mut c = Client::open(&hub, Codec::Json).await;
    assert_eq!(c.request(json!({ "op": "connect", "token": forged })).await["code"], "unauthorized");
    assert_eq!(c.close_code().await, Some(4101));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn configured_audience_is_required() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let hub = Hub::start(&["auth.audience=\"my-app\""]);
    let mint = |aud: Option<&str>| {
        let mut claims = json!({ "sub": "aud-user", "exp": now_secs() + 60 });
        if let Some(aud) = aud {
            claims["aud"] = json!(aud);
        }
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    };
    Client::connect_token(&hub, &mint(Some("my-app")), Codec::Json).await;
    for bad in [None, Some("other-app")] {
        let mut c = Client::open(&hub, Codec::Json).await;
        assert_eq!(c.request(json!({ "op": "connect", "token": mint(bad) })).await["code"], "unauthorized");
        assert_eq!(c.close_code().await, Some(4101));
    }
    // Without a configured audience, a token's aud is ignored.
    let plain = Hub::start(&[]);
    Client::connect_token(&plain, &mint(Some("anything")), Codec::Json).await;
}
