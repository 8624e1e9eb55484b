//! telly-sim: a discrete-event simulator that drives thousands of telly-swarm
//! engines in virtual time, against an origin-only CDN and a baseline modelled on
//! p2p-media-loader.
//!
//! Links use a queueing model at message granularity (see [`world`]): each
//! viewer's uplink and downlink serve 64 KiB chunks first come first served at
//! their capacity, so a viewer's upload is shared among the peers it serves and
//! congestion is real; control messages pay only latency. Content is modelled by
//! sizes and an honesty flag ([`model`]); the engine's decisions run unchanged.
//! A run is split into shards run side by side in short windows, and comes out
//! the same on any number of threads (see [`world`]).
//!
//! For looking into a run, environment variables (all optional):
//! `TELLY_SIM_DEBUG` prints the engines' summed stats per strategy;
//! `TELLY_SIM_RECORDS=DIR` writes each strategy's per-viewer records to
//! `DIR/<strategy>.jsonl`; `TELLY_SIM_TRACE_ORIGIN` logs every origin fetch with
//! the block's state; `TELLY_SIM_TRACE_VIEWER=N[,M...]` logs those viewers'
//! messages and actions; `TELLY_SIM_TRACE_STALLS` logs stalls;
//! `TELLY_SIM_TRACE_UPLINK` logs every chunk sent and when it leaves.

pub mod baseline;
pub mod model;
pub mod node;
pub mod report;
pub mod scenario;
pub mod world;

use std::time::Instant;

use report::{Figures, Series, minimum_origin};
use scenario::Scenario;
use world::{Strategy, World};

/// Everything one scenario run produced.
#[derive(Debug)]
pub struct Outcome {
    pub telly: Figures,
    pub baselines: Vec<Figures>,
    /// Extra Telly variants (store-and-forward when the scenario asks).
    pub variants: Vec<Figures>,
    pub series: Series,
    /// Of the process when Telly's run ended (before the baselines began).
    pub telly_peak_rss_mb: f64,
    /// Of the whole process, the baselines' runs side by side included.
    pub peak_rss_mb: f64,
}

/// Shards a run's viewers are split into: several per thread, so that each
/// window's work evens out between threads (the figures do not depend on it).
pub const SHARDS: usize = 8;

/// Runs one strategy on `threads` threads; `progress(virtual ms, horizon ms)`.
pub fn run_strategy(
    scenario: &Scenario,
    strategy: Strategy,
    threads: usize,
    check_every: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> (Figures, Vec<(f64, u64)>) {
    let started = Instant::now();
    let mut world = World::new(scenario, strategy, SHARDS);
    world.set_check_every(check_every);
    let horizon = world.horizon_ms();
    world.run(threads, |now| progress(now, horizon));
    let records = world.records();
    let minimum = minimum_origin(&records, scenario.title_bytes());
    let figures = Figures::new(
        strategy.label(),
        scenario,
        &records,
        world.origin_bytes(),
        minimum,
        started.elapsed().as_secs_f64(),
        world.events(),
    );
    let series = world.samples.iter().map(|s| (s.0, s.1)).collect();
    let t = &world.engine_totals;
    tracing::info!(
        strategy = strategy.label(),
        origin_fetches = t.origin_fetches,
        unheld = t.origin_fetches_unheld,
        waiting = t.origin_fetches_waiting,
        timeouts = t.requests_timed_out,
        duplicate_bytes = t.bytes_duplicate,
        "engine totals"
    );
    if std::env::var_os("TELLY_SIM_DEBUG").is_some() {
        eprintln!("{} engine totals: {t:?}", strategy.label());
    }
    // Per-viewer records for analysis, one JSON object per line and strategy.
    if let Some(dir) = std::env::var_os("TELLY_SIM_RECORDS") {
        let path = std::path::Path::new(&dir).join(format!("{}.jsonl", strategy.label()));
        let lines: String = records
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|l| l + "\n")
            .collect();
        if let Err(error) = std::fs::write(&path, lines) {
            eprintln!("writing {}: {error}", path.display());
        }
    }
    (figures, series)
}

/// Runs Telly and both baselines (and the relay comparison if asked). The
/// theoretical minimum is Telly's (same arrivals and capacities in every run).
/// Telly runs first, alone, on `threads` threads (its wall time is a figure);
/// then the baselines and any variant, each on a thread of its own.
pub fn run_scenario(
    scenario: &Scenario,
    threads: usize,
    check_every: u64,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Outcome {
    let mut others = vec![Strategy::OriginOnly, Strategy::P2pmlLike];
    if scenario.compare_relay {
        others.push(Strategy::Telly { relay: false });
    }
    let strategy = Strategy::Telly { relay: true };
    let (telly, telly_series) = run_strategy(
        scenario,
        strategy,
        threads,
        check_every,
        &mut |now, horizon| progress(strategy.label(), now, horizon),
    );
    let telly_peak_rss_mb = peak_rss_mb();
    progress("baselines", 0, 1);
    let others = std::thread::scope(|scope| {
        let runs: Vec<_> = others
            .into_iter()
            .map(|strategy| {
                scope.spawn(move || {
                    let (figures, series) =
                        run_strategy(scenario, strategy, 1, check_every, &mut |_, _| {});
                    (strategy, figures, series)
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("a baseline's thread does not panic"))
            .collect::<Vec<_>>()
    });
    let mut series = vec![(telly.strategy.clone(), telly_series)];
    let mut baselines = Vec::new();
    let mut variants = Vec::new();
    for (strategy, mut figures, s) in others {
        series.push((figures.strategy.clone(), s));
        if matches!(strategy, Strategy::Telly { .. }) {
            variants.push(figures);
            continue;
        }
        figures.min_origin_bytes = telly.min_origin_bytes;
        figures.origin_over_min =
            figures.origin_bytes as f64 / telly.min_origin_bytes.max(1) as f64;
        baselines.push(figures);
    }
    Outcome {
        telly,
        baselines,
        variants,
        series,
        telly_peak_rss_mb,
        peak_rss_mb: peak_rss_mb(),
    }
}

pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
