//! Small scenarios (seconds in a debug build) that check the direction of every
//! target: Telly beats the p2p-media-loader-like baseline on origin egress with
//! rebuffering no worse, stays near the theoretical minimum, fills a deficit, and
//! survives churn. Engine invariants are checked as the runs go.

use telly_sim::report::Figures;
use telly_sim::run_strategy;
use telly_sim::scenario::Scenario;
use telly_sim::world::{Strategy, World};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text).expect("test scenarios parse")
}

fn run(s: &Scenario, strategy: Strategy) -> Figures {
    run_strategy(s, strategy, 1, 5_000, &mut |_, _| {}).0
}

const SMALL_FLASH: &str = r#"
name = "test-flash"
viewers = 40
title_s = 60
arrival = { kind = "flash", window_s = 15 }
upload_x_bitrate = { min = 1.0, max = 2.0 }
"#;

#[test]
fn a_small_premiere_beats_the_baseline_and_stays_near_the_minimum() {
    let s = scenario(SMALL_FLASH);
    let telly = run(&s, Strategy::Telly { relay: true });
    let p2pml = run(&s, Strategy::P2pmlLike);
    let origin = run(&s, Strategy::OriginOnly);
    assert!((origin.origin_over_title - 40.0).abs() < 0.5, "{origin:?}");
    assert!(
        telly.origin_bytes * 2 < p2pml.origin_bytes,
        "telly {telly:?} vs {p2pml:?}"
    );
    assert!(telly.origin_over_title < 8.0, "{telly:?}");
    assert!(telly.peer_share > 0.8, "{telly:?}");
    assert!(
        telly.rebuffer_ratio <= p2pml.rebuffer_ratio + 0.005,
        "{telly:?}"
    );
    assert!(telly.ttff_p95_s <= 2.0, "{telly:?}");
}

#[test]
fn relaying_partial_blocks_beats_store_and_forward_at_a_premiere() {
    let s = scenario(SMALL_FLASH);
    let relay = run(&s, Strategy::Telly { relay: true });
    let store = run(&s, Strategy::Telly { relay: false });
    assert!(
        relay.origin_bytes < store.origin_bytes,
        "{relay:?} vs {store:?}"
    );
}

#[test]
fn scarce_upload_makes_the_origin_fill_about_the_deficit() {
    let s = scenario(
        r#"
name = "test-scarce"
viewers = 40
title_s = 60
arrival = { kind = "staggered", over_s = 60 }
upload_x_bitrate = { min = 0.2, max = 1.0 }
"#,
    );
    let telly = run(&s, Strategy::Telly { relay: true });
    let p2pml = run(&s, Strategy::P2pmlLike);
    assert!(
        telly.min_origin_bytes > s.title_bytes(),
        "a deficit exists: {telly:?}"
    );
    assert!(telly.origin_over_min < 2.5, "{telly:?}");
    assert!(
        telly.origin_bytes < p2pml.origin_bytes,
        "{telly:?} vs {p2pml:?}"
    );
    assert!(
        telly.rebuffer_ratio <= p2pml.rebuffer_ratio + 0.005,
        "{telly:?}"
    );
}

#[test]
fn churn_costs_re_requests_not_stalls() {
    let s = scenario(
        r#"
name = "test-churn"
viewers = 40
title_s = 60
arrival = { kind = "staggered", over_s = 60 }
upload_x_bitrate = { min = 1.0, max = 2.0 }
churn = 0.3
seek = 0.1
"#,
    );
    let telly = run(&s, Strategy::Telly { relay: true });
    assert!(telly.rebuffer_max_s <= 2.0, "{telly:?}");
    let p2pml = run(&s, Strategy::P2pmlLike);
    assert!(
        telly.origin_bytes < p2pml.origin_bytes,
        "{telly:?} vs {p2pml:?}"
    );
}

#[test]
fn a_jump_past_the_prefetch_window_waits_about_a_start_and_is_no_rebuffer() {
    let s = scenario(
        r#"
name = "test-seek"
viewers = 20
title_s = 240
arrival = { kind = "staggered", over_s = 30 }
upload_x_bitrate = { min = 1.0, max = 2.0 }
seek = 0.5
"#,
    );
    let telly = run(&s, Strategy::Telly { relay: true });
    assert!(
        telly.seek_wait_p50_s > 0.0 && telly.seek_wait_p95_s <= 2.0,
        "{telly:?}"
    );
    assert_eq!(telly.rebuffer_count, 0, "{telly:?}");
}

#[test]
fn a_run_is_the_same_whatever_the_shards_and_threads_that_run_it() {
    // Arrivals, departures mid-title and seeks are global events between
    // windows; messages cross shards through outboxes.
    let s = scenario(
        r#"
name = "test-shards"
viewers = 60
title_s = 60
arrival = { kind = "staggered", over_s = 40 }
upload_x_bitrate = { min = 0.5, max = 2.0 }
churn = 0.2
seek = 0.2
"#,
    );
    let run = |shards: usize, threads: usize| {
        let mut world = World::new(&s, Strategy::Telly { relay: true }, shards);
        world.set_check_every(1_000);
        world.run(threads, |_| {});
        (world.records(), world.origin_bytes(), world.events())
    };
    let alone = run(1, 1);
    let (records, origin, events) = &alone;
    assert!(*origin > 0 && *events > 10_000, "{origin} {events}");
    assert!(records.iter().any(|r| r.seek_wait_ms.is_some()));
    assert!(records.iter().any(|r| r.left_ms < r.arrived_ms + 50_000));
    for (shards, threads) in [(2, 1), (3, 2), (8, 2), (7, 3)] {
        let other = run(shards, threads);
        assert!(
            other == alone,
            "{shards} shards on {threads} threads: origin {} against {origin}, {} events against {events}",
            other.1,
            other.2
        );
    }
}

#[test]
fn bad_scenarios_are_refused_with_a_reason() {
    for (text, why) in [
        ("name = 1", "parse"),
        (
            "name = \"x\"\nviewers = 0\narrival = { kind = \"flash\", window_s = 1 }\nupload_x_bitrate = { min = 1.0, max = 2.0 }",
            "viewers",
        ),
        (
            "name = \"x\"\nviewers = 5\narrival = { kind = \"flash\", window_s = 1 }\nupload_x_bitrate = { min = 2.0, max = 1.0 }",
            "min <= max",
        ),
        (
            "name = \"x\"\nviewers = 5\narrival = { kind = \"sideways\" }\nupload_x_bitrate = { min = 1.0, max = 2.0 }",
            "parse",
        ),
        (
            "name = \"x\"\nviewers = 5\nchurn = 2.0\narrival = { kind = \"flash\", window_s = 1 }\nupload_x_bitrate = { min = 1.0, max = 2.0 }",
            "shares",
        ),
    ] {
        let error = Scenario::parse(text).expect_err(text).to_string();
        assert!(error.contains(why), "{error} should mention {why}");
    }
}

#[test]
fn the_scenario_files_in_the_repository_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("bench/scenarios exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let s = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                Some(s.name.as_str()),
                path.file_stem().and_then(|n| n.to_str())
            );
            seen += 1;
        }
    }
    assert!(seen >= 4);
}
