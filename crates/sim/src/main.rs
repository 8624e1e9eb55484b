//! `telly-sim SCENARIO.toml --out RESULT.json [--plot PLOT.svg]`: runs Telly and
//! both baselines on a scenario and writes the benchmark report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use telly_sim::report::{Figures, plot};
use telly_sim::scenario::Scenario;
use telly_sim::world::Strategy;

/// The simulator allocates and frees small buffers (messages, queues) by the
/// hundred million.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    about = "Simulates a Telly swarm against an origin-only CDN and a p2p-media-loader-like baseline"
)]
struct Args {
    /// Scenario file (TOML), e.g. bench/scenarios/sim-flash-1k.toml.
    scenario: PathBuf,
    /// Where to write the JSON report.
    #[arg(long, required_unless_present = "only")]
    out: Option<PathBuf>,
    /// Where to draw the SVG plot of origin egress over time.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Check every engine's invariants every N events (slow; 0 = never).
    #[arg(long, default_value_t = 0)]
    check_every: u64,
    /// Threads for Telly's run (its viewers are in eight shards whatever the
    /// count, and the figures are the same for any). Default: the machine's
    /// cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Run one strategy alone and print its figures (for profiling; no report):
    /// telly, telly-store-and-forward, origin-only or p2p-media-loader-like.
    #[arg(long)]
    only: Option<String>,
}

fn figures_json(f: &Figures) -> Value {
    let mut v = serde_json::to_value(f).expect("figures serialize");
    v["origin_egress_gb"] = json!(f.origin_bytes as f64 / 1e9);
    v
}

/// One line per strategy for the terminal.
fn summary(f: &Figures) -> String {
    format!(
        "{}: origin {:.3}× min, {} viewers rebuffered ({} times, worst {:.3} s, ratio {:.2e}), ttff p95 {:.2} s, seek wait p95 {:.2} s, {} events, wall {:.1} s",
        f.strategy,
        f.origin_over_min,
        f.viewers_rebuffered,
        f.rebuffer_count,
        f.rebuffer_max_s,
        f.rebuffer_ratio,
        f.ttff_p95_s,
        f.seek_wait_p95_s,
        f.events,
        f.wall_s
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{} {cores} cores, {mem_gib:.0} GiB", std::env::consts::ARCH)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let scenario =
        Scenario::parse(&text).with_context(|| format!("in {}", args.scenario.display()))?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if let Some(label) = &args.only {
        let strategy = Strategy::from_label(label)
            .with_context(|| format!("no strategy is called {label}"))?;
        let (f, _) = telly_sim::run_strategy(
            &scenario,
            strategy,
            threads,
            args.check_every,
            &mut |_, _| {},
        );
        eprintln!("{}", summary(&f));
        return Ok(());
    }
    let Some(out) = args.out else {
        anyhow::bail!("--out is needed to write the report");
    };
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>24} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
        )
        .expect("a valid template"),
    );
    let outcome = telly_sim::run_scenario(
        &scenario,
        threads,
        args.check_every,
        &mut |label, now, horizon| {
            bar.set_prefix(label.to_string());
            bar.set_position(now.saturating_mul(1000) / horizon.max(1));
            bar.set_message(format!("{:.0} s virtual", now as f64 / 1000.0));
        },
    );
    bar.finish_and_clear();

    let t = &outcome.telly;
    let p2pml = outcome
        .baselines
        .iter()
        .find(|b| b.strategy == "p2p-media-loader-like")
        .expect("the baseline ran");
    let mut baselines = serde_json::Map::new();
    for b in &outcome.baselines {
        let mut v = figures_json(b);
        v["telly_origin_ratio"] = json!(t.origin_bytes as f64 / b.origin_bytes.max(1) as f64);
        baselines.insert(b.strategy.clone(), v);
    }
    let variants: serde_json::Map<String, Value> = outcome
        .variants
        .iter()
        .map(|v| (v.strategy.clone(), figures_json(v)))
        .collect();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let command = format!(
        "cargo run -p telly-sim --release -- {} --out {}{}",
        args.scenario.display(),
        out.display(),
        args.plot
            .as_ref()
            .map(|p| format!(" --plot {}", p.display()))
            .unwrap_or_default()
    );
    let report = json!({
        "name": scenario.name,
        "unit": "origin egress / theoretical minimum",
        "value": t.origin_over_min,
        "baseline": p2pml.origin_over_min,
        "ratio": t.origin_bytes as f64 / p2pml.origin_bytes.max(1) as f64,
        "target": scenario.target_origin_over_min,
        "machine": machine(),
        "date": date,
        "command": command,
        "viewers": scenario.viewers,
        "origin_over_min": t.origin_over_min,
        "origin_over_title": t.origin_over_title,
        "peer_share": t.peer_share,
        "rebuffer_ratio": t.rebuffer_ratio,
        "rebuffer_max_s": t.rebuffer_max_s,
        "ttff_p50_s": t.ttff_p50_s,
        "ttff_p95_s": t.ttff_p95_s,
        "seek_wait_p50_s": t.seek_wait_p50_s,
        "seek_wait_p95_s": t.seek_wait_p95_s,
        "wall_s": t.wall_s,
        "threads": threads,
        // Telly's run comes first and alone, so the peak when it ends is its own.
        "peak_rss_mb": outcome.telly_peak_rss_mb,
        "memory_per_viewer_kb": outcome.telly_peak_rss_mb * 1024.0 / scenario.viewers as f64,
        "process_peak_rss_mb": outcome.peak_rss_mb,
        "block_duration_s": scenario.block_s,
        "telly": figures_json(t),
        "baselines": baselines,
        "variants": variants,
        "link_model": "message-level queueing: FIFO uplink and downlink per viewer at capacity, plus latency",
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    if let Some(path) = &args.plot {
        plot(
            path,
            &format!("{}: origin egress over time", scenario.name),
            scenario.title_bytes(),
            &outcome.series,
        )
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("drawing {}", path.display()))?;
    }
    eprintln!(
        "{}: origin {:.3}× min ({:.3}× title), peers {:.1} %, rebuffer {:.4} % (worst {:.1} s), ttff p50 {:.2} s p95 {:.2} s, wall {:.1} s",
        scenario.name,
        t.origin_over_min,
        t.origin_over_title,
        t.peer_share * 100.0,
        t.rebuffer_ratio * 100.0,
        t.rebuffer_max_s,
        t.ttff_p50_s,
        t.ttff_p95_s,
        t.wall_s
    );
    for b in outcome.baselines.iter().chain(&outcome.variants) {
        eprintln!("  {}", summary(b));
    }
    Ok(())
}
