use super::*;

fn layer(rid: &str, width: u32, height: u32, kbps: u64) -> Layer {
    Layer { rid: rid.into(), width, height, bitrate_bps: kbps * 1000 }
}

/// q 320x180 @150k, h 640x360 @500k, f 1280x720 @1500k, given out of order on purpose.
fn qhf() -> Vec<Layer> {
    vec![layer("f", 1280, 720, 1500), layer("q", 320, 180, 150), layer("h", 640, 360, 500)]
}

/// A requested size (width, height), or none.
type Size = Option<(u32, u32)>;
/// The switch a step must produce: its target rid and reason, or none.
type Expected = Option<(&'static str, SwitchReason)>;

/// The margin rules alone (no probing): most tests below are about them.
fn selector() -> LayerSelector {
    LayerSelector::new(qhf(), SelectorConfig { probe_percent: None, ..SelectorConfig::default() }).unwrap()
}

/// With the default probing.
fn probing() -> LayerSelector {
    LayerSelector::new(qhf(), SelectorConfig::default()).unwrap()
}

fn bw(kbps: u64) -> Constraints {
    Constraints { max_width: None, max_height: None, available_bps: kbps * 1000 }
}

fn sized(width: u32, height: u32, kbps: u64) -> Constraints {
    Constraints { max_width: Some(width), max_height: Some(height), available_bps: kbps * 1000 }
}

fn to(switch: Option<LayerSwitch>) -> Option<(String, SwitchReason)> {
    switch.map(|s| (s.to.expect("a layer"), s.reason))
}

fn sw(rid: &str, reason: SwitchReason) -> Option<(String, SwitchReason)> {
    Some((rid.into(), reason))
}

#[test]
fn validate_layers_accepts_and_refuses() {
    let ok: &[&[Layer]] = &[&[], &[layer("f", 1280, 720, 1500)], &qhf()];
    for layers in ok {
        assert_eq!(validate_layers(layers), Ok(()), "{layers:?}");
    }
    let four = [qhf(), vec![layer("x", 1920, 1080, 3000)]].concat();
    let cases: Vec<(Vec<Layer>, LayerError)> = vec![
        (four, LayerError::TooMany(4)),
        (vec![layer("", 320, 180, 150)], LayerError::BadRid),
        (vec![layer("averyveryverylongrid", 320, 180, 150)], LayerError::BadRid),
        (vec![layer("q", 320, 180, 150), layer("q", 640, 360, 500)], LayerError::DuplicateRid("q".into())),
        (vec![layer("q", 0, 180, 150)], LayerError::Zero("q".into())),
        (vec![layer("q", 320, 0, 150)], LayerError::Zero("q".into())),
        (vec![layer("q", 320, 180, 0)], LayerError::Zero("q".into())),
    ];
    for (layers, err) in cases {
        assert_eq!(validate_layers(&layers), Err(err.clone()), "{layers:?}");
        assert_eq!(LayerSelector::new(layers, SelectorConfig::default()).err(), Some(err));
    }
    assert_eq!(LayerSelector::new(vec![], SelectorConfig::default()).err(), Some(LayerError::Empty));
}

#[test]
fn initial_choice_by_size_and_bandwidth() {
    // (requested size or none, estimate kbps, expected rid)
    let cases: &[(Size, u64, &str)] = &[
        (None, 10_000, "f"),
        (None, 1_500, "f"),
        (None, 1_499, "h"),
        (None, 500, "h"),
        (None, 499, "q"),
        (None, 150, "q"),
        // Below the lowest layer: still the lowest (pausing is the caller's choice).
        (None, 10, "q"),
        // Smallest layer covering the size, never larger.
        (Some((320, 180)), 10_000, "q"),
        (Some((321, 180)), 10_000, "h"),
        (Some((640, 360)), 10_000, "h"),
        (Some((641, 100)), 10_000, "f"),
        (Some((100, 361)), 10_000, "f"),
        // Larger than every layer: the largest.
        (Some((3840, 2160)), 10_000, "f"),
        // Size and bandwidth together: the lower of the two.
        (Some((1280, 720)), 600, "h"),
        (Some((640, 360)), 200, "q"),
        (Some((0, 0)), 10_000, "q"),
    ];
    for &(size, kbps, rid) in cases {
        let mut s = selector();
        let want = match size {
            Some((w, h)) => sized(w, h, kbps),
            None => bw(kbps),
        };
        let got = s.update(want, 0).expect("the first update always chooses");
        assert!(got.needs_keyframe());
        assert_eq!(
            (got.from, got.to.as_deref(), got.reason),
            (None, Some(rid), SwitchReason::Initial),
            "{size:?} {kbps}"
        );
        assert_eq!(s.current().map(|l| l.rid.as_str()), Some(rid));
        assert_eq!(s.update(want, 1), None, "a second identical update changes nothing");
    }
}

#[test]
fn one_dimension_alone_limits() {
    let mut s = selector();
    let want = Constraints { max_width: Some(600), max_height: None, available_bps: 10_000_000 };
    assert_eq!(to(s.update(want, 0)), sw("h", SwitchReason::Initial));
    let mut s = selector();
    let want = Constraints { max_width: None, max_height: Some(170), available_bps: 10_000_000 };
    assert_eq!(to(s.update(want, 0)), sw("q", SwitchReason::Initial));
}

#[test]
fn steps_down_at_once_and_up_only_after_the_hold() {
    let mut s = selector();
    // (now_ms, estimate kbps, expected switch)
    let steps: &[(u64, u64, Expected)] = &[
        (0, 2_000, Some(("f", SwitchReason::Initial))),
        (100, 1_600, None),
        // Below f's bitrate: straight down, two layers if need be.
        (200, 400, Some(("q", SwitchReason::BandwidthDown))),
        // Enough for h but not with the 25 % margin (625 k): stay.
        (300, 600, None),
        (5_000, 620, None),
        // Margin reached: the hold starts now.
        (6_000, 625, None),
        (8_999, 700, None),
        (9_000, 700, Some(("h", SwitchReason::StepUp))),
        // One layer at a time: plenty for f, but a new hold starts after the step.
        (9_001, 5_000, None),
        (11_999, 5_000, None),
        (12_001, 5_000, Some(("f", SwitchReason::StepUp))),
        (20_000, 5_000, None),
    ];
    for &(now, kbps, expected) in steps {
        let got = s.update(bw(kbps), now);
        assert_eq!(to(got), expected.map(|(r, why)| (r.to_string(), why)), "at {now} ms with {kbps} kbps");
    }
}

#[test]
fn a_dip_restarts_the_hold() {
    let mut s = selector();
    assert_eq!(to(s.update(bw(200), 0)), sw("q", SwitchReason::Initial));
    assert_eq!(s.update(bw(700), 1_000), None);
    assert_eq!(s.update(bw(700), 3_000), None);
    // Still carries q, but not h with the margin: the hold is lost.
    assert_eq!(s.update(bw(550), 3_500), None);
    assert_eq!(s.update(bw(700), 4_000), None, "the hold restarts here");
    assert_eq!(s.update(bw(700), 6_999), None);
    assert_eq!(to(s.update(bw(700), 7_000)), sw("h", SwitchReason::StepUp));
}

#[test]
fn flapping_estimate_does_not_flap_the_layer() {
    let mut s = selector();
    assert_eq!(to(s.update(bw(600), 0)), sw("h", SwitchReason::Initial));
    // Oscillating around f's bitrate every 500 ms: never long enough above 1.25 × 1500 k.
    let mut switches = 0;
    for i in 1..100u64 {
        let kbps = if i % 2 == 0 { 1_400 } else { 2_000 };
        switches += usize::from(s.update(bw(kbps), i * 500).is_some());
    }
    assert_eq!(switches, 0);
    assert_eq!(s.current().unwrap().rid, "h");
}

#[test]
fn size_changes() {
    let mut s = selector();
    assert_eq!(to(s.update(sized(1280, 720, 5_000), 0)), sw("f", SwitchReason::Initial));
    // The tile shrinks: down at once, whatever the bandwidth.
    assert_eq!(to(s.update(sized(320, 180, 5_000), 10)), sw("q", SwitchReason::Size));
    // The tile grows: up one layer per hold.
    assert_eq!(s.update(sized(1280, 720, 5_000), 20), None);
    assert_eq!(to(s.update(sized(1280, 720, 5_000), 3_020)), sw("h", SwitchReason::StepUp));
    assert_eq!(s.update(sized(1280, 720, 5_000), 3_021), None);
    assert_eq!(to(s.update(sized(1280, 720, 5_000), 6_021)), sw("f", SwitchReason::StepUp));
    // Never above what the size asks for, however long the bandwidth is there.
    assert_eq!(to(s.update(sized(640, 360, 5_000), 7_000)), sw("h", SwitchReason::Size));
    assert_eq!(s.update(sized(640, 360, 5_000), 100_000), None);
}

#[test]
fn inactive_layers_are_skipped() {
    let mut s = selector();
    assert_eq!(to(s.update(bw(5_000), 0)), sw("f", SwitchReason::Initial));
    s.set_active("f", false).unwrap();
    assert_eq!(to(s.update(bw(5_000), 10)), sw("h", SwitchReason::LayerActivity));
    s.set_active("h", false).unwrap();
    assert_eq!(to(s.update(bw(5_000), 20)), sw("q", SwitchReason::LayerActivity));
    s.set_active("q", false).unwrap();
    let off = s.update(bw(5_000), 30).unwrap();
    assert_eq!((off.from.as_deref(), off.to.as_deref(), off.needs_keyframe()), (Some("q"), None, false));
    assert_eq!(s.current(), None);
    assert_eq!(s.update(bw(5_000), 40), None, "nothing to forward, nothing to switch");
    // The publisher resumes its top layer only: it is the only choice, at once.
    s.set_active("f", true).unwrap();
    assert_eq!(to(s.update(bw(5_000), 50)), sw("f", SwitchReason::Initial));
    // A lower layer coming back does not pull the subscriber down.
    s.set_active("q", true).unwrap();
    assert_eq!(s.update(bw(5_000), 60), None);
    // The size asks for q: the smallest active layer covering 640x360 is f (h is off).
    assert_eq!(to(s.update(sized(640, 360, 5_000), 70)), None);
    assert_eq!(to(s.update(sized(320, 180, 5_000), 80)), sw("q", SwitchReason::Size));
    // Stepping up skips the inactive h.
    assert_eq!(s.update(bw(5_000), 90), None);
    assert_eq!(to(s.update(bw(5_000), 3_090)), sw("f", SwitchReason::StepUp));
    assert_eq!(s.set_active("x", true), Err(LayerError::UnknownRid("x".into())));
}

#[test]
fn zero_hold_steps_up_on_the_first_good_estimate() {
    let config =
        SelectorConfig { up_margin_percent: 0, up_hold_ms: 0, probe_percent: None, ..SelectorConfig::default() };
    let mut s = LayerSelector::new(qhf(), config).unwrap();
    assert_eq!(to(s.update(bw(200), 0)), sw("q", SwitchReason::Initial));
    assert_eq!(to(s.update(bw(500), 0)), sw("h", SwitchReason::StepUp));
    assert_eq!(to(s.update(bw(1_500), 0)), sw("f", SwitchReason::StepUp));
}

#[test]
fn single_layer_track_never_switches_after_the_first() {
    let s = LayerSelector::new(vec![layer("", 1280, 720, 1500)], SelectorConfig::default());
    assert_eq!(s.as_ref().err(), Some(&LayerError::BadRid), "even a lone layer needs a rid");
    let mut s = LayerSelector::new(vec![layer("0", 1280, 720, 1500)], SelectorConfig::default()).unwrap();
    assert_eq!(to(s.update(bw(1), 0)), sw("0", SwitchReason::Initial));
    for (i, kbps) in [1, 10_000, 0, 500].into_iter().enumerate() {
        assert_eq!(s.update(bw(kbps), i as u64 * 10_000), None);
    }
}

#[test]
fn measured_rates_replace_the_announced_ones() {
    let mut s = selector();
    // f is announced at 1.5 Mb/s but sends 800 kb/s, h 370 kb/s: 1 Mb/s carries f.
    s.set_measured("f", true, Some(800_000)).unwrap();
    s.set_measured("h", true, Some(370_000)).unwrap();
    assert_eq!(to(s.update(bw(1_000), 0)), sw("f", SwitchReason::Initial));
    // Down only once the estimate no longer carries what f really sends.
    assert_eq!(s.update(bw(810), 100), None);
    assert_eq!(to(s.update(bw(790), 200)), sw("h", SwitchReason::BandwidthDown));
    // Unmeasured again: the announced rate counts (zero is no measurement).
    s.set_measured("h", true, Some(0)).unwrap();
    assert_eq!(to(s.update(bw(450), 300)), sw("q", SwitchReason::BandwidthDown));
    assert_eq!(s.set_measured("x", true, None), Err(LayerError::UnknownRid("x".into())));
}

/// What a browser's receive-side estimate does: it never goes far past 1.5x what it receives, and
/// climbs about 8 % a second towards that cap.
fn remb_after(estimate_kbps: u64, incoming_kbps: u64, ms: u64) -> u64 {
    let cap = incoming_kbps * 3 / 2 + 10;
    let mut e = estimate_kbps as f64;
    for _ in 0..ms / 100 {
        e *= 1.08f64.powf(0.1);
    }
    (e as u64).min(cap)
}

#[test]
fn probing_climbs_layers_a_capped_estimate_never_shows() {
    let mut s = probing();
    // Measured rates of a still camera: q 155 k, h 370 k, f 800 k.
    for (rid, kbps) in [("q", 155), ("h", 370), ("f", 800)] {
        s.set_measured(rid, true, Some(kbps * 1000)).unwrap();
    }
    // A subscriber shown small starts on q; then its tile grows.
    assert_eq!(to(s.update(sized(320, 180, 240), 0)), sw("q", SwitchReason::Initial));
    let mut layer = "q".to_string();
    let mut estimate = 240;
    let mut switches = Vec::new();
    for step in 1..=600u64 {
        let now = step * 100;
        let incoming = match layer.as_str() {
            "q" => 155,
            "h" => 370,
            _ => 800,
        };
        estimate = remb_after(estimate, incoming, 100);
        if let Some(switch) = s.update(sized(1280, 720, estimate), now) {
            layer = switch.to.clone().unwrap();
            switches.push((now, layer.clone(), switch.reason));
        }
    }
    // q -> h -> f, each a probe after the 3 s hold, none undone: the estimate followed each time.
    let got: Vec<(&str, SwitchReason)> = switches.iter().map(|(_, l, r)| (l.as_str(), *r)).collect();
    assert_eq!(got, [("h", SwitchReason::StepUp), ("f", SwitchReason::StepUp)], "{switches:?}");
    assert_eq!(switches[0].0, 3_100, "q held 1.3x its rate from the first update: up after the hold");
    assert_eq!(s.hold_ms(), 3_000);
}

#[test]
fn a_probe_into_congestion_steps_back_and_waits_longer() {
    let mut s = probing();
    for (rid, kbps) in [("q", 155), ("h", 370), ("f", 800)] {
        s.set_measured(rid, true, Some(kbps * 1000)).unwrap();
    }
    // The link carries 300 kb/s: q fits, and the estimate sits at the 1.5x cap, so h is probed.
    assert_eq!(to(s.update(bw(240), 0)), sw("q", SwitchReason::Initial));
    assert_eq!(s.update(bw(240), 1_000), None);
    assert_eq!(to(s.update(bw(240), 4_000)), sw("h", SwitchReason::StepUp));
    // Within the grace a lower estimate than h needs is expected...
    assert_eq!(s.update(bw(260), 5_000), None);
    assert_eq!(s.update(bw(280), 6_000), None);
    // ...but a fall below 80 % of its peak is congestion: back to q, and the hold doubles.
    assert_eq!(to(s.update(bw(210), 7_000)), sw("q", SwitchReason::BandwidthDown));
    assert_eq!(s.hold_ms(), 6_000);
    assert_eq!(s.update(bw(240), 7_100), None);
    assert_eq!(s.update(bw(240), 13_099), None, "the doubled hold");
    assert_eq!(to(s.update(bw(240), 13_100)), sw("h", SwitchReason::StepUp));
    // This time the estimate stays level but never reaches h: when the grace ends, down again.
    assert_eq!(s.update(bw(300), 20_000), None);
    assert_eq!(to(s.update(bw(300), 23_100)), sw("q", SwitchReason::BandwidthDown));
    assert_eq!(s.hold_ms(), 12_000);
    // Failures double the hold up to the ceiling; a probe that holds resets it.
    let mut now = 23_100;
    for _ in 0..5 {
        s.update(bw(240), now);
        now += s.hold_ms();
        assert_eq!(to(s.update(bw(240), now)), sw("h", SwitchReason::StepUp));
        now += 10_000;
        assert_eq!(to(s.update(bw(300), now)), sw("q", SwitchReason::BandwidthDown));
    }
    assert_eq!(s.hold_ms(), 48_000);
    s.update(bw(240), now);
    now += s.hold_ms();
    assert_eq!(to(s.update(bw(240), now)), sw("h", SwitchReason::StepUp));
    now += 10_000;
    assert_eq!(s.update(bw(500), now), None, "the estimate climbed: h stays");
    assert_eq!(s.hold_ms(), 3_000);
}

#[test]
fn no_probe_above_the_requested_size_or_onto_an_idle_layer() {
    let mut s = probing();
    assert_eq!(to(s.update(sized(320, 180, 240), 0)), sw("q", SwitchReason::Initial));
    assert_eq!(s.update(sized(320, 180, 240), 100_000), None, "q covers the tile");
    // h is not sent: the probe goes to f, the next layer that is.
    s.set_measured("h", false, None).unwrap();
    assert_eq!(s.update(bw(240), 100_100), None);
    assert_eq!(to(s.update(bw(240), 103_100)), sw("f", SwitchReason::StepUp));
}
