//! Property tests of the frame decoders: no input panics them, every request survives a round
//! trip through both codecs, and a live hub answers any frame with exactly one message.

mod common;

use common::*;
use hub::protocol::{Codec, Op, Request, StreamPosition};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 é]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    })
}

fn request() -> impl Strategy<Value = Request> {
    let channel = "[a-z]{1,8}(:[a-z0-9]{1,8})?";
    let since = prop::option::of(
        (any::<u32>(), "[0-9a-f]{10}").prop_map(|(o, e)| StreamPosition { offset: o as u64, epoch: e }),
    );
    let op = prop_oneof![
        "[A-Za-z0-9._-]{0,40}".prop_map(|token| Op::Connect { token }),
        "[A-Za-z0-9._-]{0,40}".prop_map(|token| Op::Refresh { token }),
        (channel, since.clone()).prop_map(|(channel, since)| Op::Subscribe { channel, since }),
        channel.prop_map(|channel| Op::Unsubscribe { channel }),
        (channel, prop::option::of("[a-z]{1,8}"), json_value()).prop_map(|(channel, event, data)| Op::Publish {
            channel,
            event,
            data
        }),
        channel.prop_map(|channel| Op::Presence { channel }),
        (channel, since, prop::option::of(0usize..500)).prop_map(|(channel, since, limit)| Op::History {
            channel,
            since,
            limit
        }),
        Just(Op::Ping {}),
    ];
    (any::<u32>(), op).prop_map(|(id, op)| Request { id: id as u64, op })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Codec::Json.decode::<Request>(&bytes);
        let _ = Codec::MsgPack.decode::<Request>(&bytes);
        let _ = hub::protocol::salvage_id(Codec::Json, &bytes);
        let _ = hub::protocol::salvage_id(Codec::MsgPack, &bytes);
    }

    #[test]
    fn arbitrary_json_shapes_never_panic(v in json_value(), id in any::<i64>(), op in "[a-z_]{0,12}") {
        let mut obj = json!({ "id": id, "op": op, "channel": v.clone(), "data": v });
        let bytes = serde_json::to_vec(&obj).unwrap();
        let _ = Codec::Json.decode::<Request>(&bytes);
        obj["since"] = json!({ "offset": id, "epoch": 5 });
        let bytes = rmp_serde::to_vec_named(&obj).unwrap();
        let _ = Codec::MsgPack.decode::<Request>(&bytes);
    }

    #[test]
    fn requests_round_trip_both_codecs(req in request()) {
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(&req);
            let back: Request = codec.decode(&bytes).unwrap();
            prop_assert_eq!(&back, &req);
        }
    }
}

/// Random frames against the real server: each gets one answer and the socket stays open.
#[tokio::test]
async fn live_hub_answers_every_random_frame() {
    use proptest::strategy::ValueTree;
    let hub = Hub::start(&["gateway.rate_per_sec=100000.0", "gateway.rate_burst=100000.0"]);
    let mut c = Client::connect(&hub, "fuzzer").await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let frames = prop::collection::vec(any::<u8>(), 0..256);
    for i in 0..300 {
        let bytes = frames.new_tree(&mut runner).unwrap().current();
        let msg = if i % 2 == 0 {
            Message::binary(bytes)
        } else {
            // Valid UTF-8 text with JSON-ish punctuation mixed in.
            let text: String =
                bytes.iter().map(|b| ['{', '}', '"', ':', ',', '[', ']', 'a', '1', ' '][(*b % 10) as usize]).collect();
            Message::text(text)
        };
        c.send_raw(msg).await;
        let reply = c.next_message().await.expect("socket stays open");
        assert!(matches!(reply["type"].as_str(), Some("error") | Some("reply")), "{reply}");
    }
    c.ok(json!({ "op": "ping" })).await;
}
