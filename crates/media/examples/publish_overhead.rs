//! Benchmark: how much longer publishing takes than ffmpeg's transcode alone.
//!
//! Runs the packager's exact transcode (same ffmpeg arguments) on `--input`, then
//! the full `package` call (probe, transcode, CENC, sealing into a directory
//! sink as the provider stores blocks, poster) on the same input, and writes
//! `value` = package seconds / transcode seconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use telly_media::package::{BlockSink, PackageOptions, clear_outputs, ffmpeg, package};
use telly_proto::hash::Sha256Hash;
use telly_proto::licence::{KeyId, TitleKeys};

/// CENC and sealing are single passes over the media at hundreds of MB/s, while
/// x264 runs near real time on 2 cores; with probe and poster as fixed costs,
/// publishing should take at most a quarter longer than the transcode.
const TARGET_RATIO: f64 = 1.25;

#[derive(Parser)]
struct Args {
    /// The video to publish.
    #[arg(long)]
    input: PathBuf,
    /// Where to write bench/results/publish-overhead.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Alternate transcode-alone and package this many times; the fastest of each counts.
    #[arg(long, default_value_t = 2)]
    runs: usize,
}

struct DirSink {
    dir: PathBuf,
    bytes: u64,
}

impl BlockSink for DirSink {
    fn put(&mut self, sha256: &Sha256Hash, sealed: &[u8]) -> std::io::Result<()> {
        self.bytes += sealed.len() as u64;
        std::fs::write(self.dir.join(sha256.to_hex()), sealed)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = PackageOptions::default();
    let scratch = tempfile::tempdir()?;

    ensure!(args.runs > 0, "--runs must be at least 1");
    let info = ffmpeg::probe(&args.input, &opts)?;
    let keys = TitleKeys {
        key_id: KeyId([0x42; 16]),
        content_key: [0x24; 16],
        block_key: [0x99; 32],
    };
    let mut transcode_s = f64::INFINITY;
    let mut package_s = f64::INFINITY;
    let mut last = None;
    for run in 0..args.runs {
        // The transcode alone, exactly as the packager runs it.
        let alone_dir = scratch.path().join(format!("alone-{run}"));
        std::fs::create_dir(&alone_dir)?;
        let outputs = clear_outputs(&alone_dir, info.audio.is_some());
        let started = Instant::now();
        ffmpeg::transcode(&args.input, &info, &outputs, &opts, &mut |_| {})?;
        transcode_s = transcode_s.min(started.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&alone_dir)?;

        // The whole publish pipeline, storing blocks as the provider does.
        let blocks_dir = scratch.path().join(format!("blocks-{run}"));
        std::fs::create_dir(&blocks_dir)?;
        let mut sink = DirSink {
            dir: blocks_dir.clone(),
            bytes: 0,
        };
        let work = scratch.path().join(format!("work-{run}"));
        let started = Instant::now();
        let title = package(&args.input, &work, &keys, &opts, &mut sink, &mut |_| {})?;
        package_s = package_s.min(started.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&blocks_dir)?;
        std::fs::remove_dir_all(&work)?;
        last = Some((title, sink.bytes));
    }
    let (title, sealed_bytes) = last.expect("at least one run");
    ensure!(transcode_s > 0.0, "the transcode took no time");
    let ratio = package_s / transcode_s;
    let blocks: usize = title.tracks.iter().map(|t| t.blocks.len() + 1).sum();
    println!(
        "transcode alone {transcode_s:.2} s; package {package_s:.2} s (its transcode {:.2} s, CENC+seal {:.2} s, {blocks} blocks, {:.1} MB sealed); ratio {ratio:.3}",
        title.transcode_ms as f64 / 1000.0,
        title.package_ms as f64 / 1000.0,
        sealed_bytes as f64 / 1e6,
    );

    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "name": "publish-overhead",
            "unit": "ratio",
            "value": round3(ratio),
            "baseline": round3(transcode_s),
            "ratio": round3(ratio),
            "target": TARGET_RATIO,
            "machine": machine(),
            "date": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?,
            "command": command_line(),
            "details": {
                "what": "value and ratio = package() wall seconds / ffmpeg transcode-alone seconds (fastest of `runs` each, alternated); baseline = transcode-alone seconds",
                "target_why": "CENC and sealing are linear passes at hundreds of MB/s; x264 is near real time on 2 cores",
                "input": args.input.display().to_string(),
                "input_duration_ms": info.duration_ms,
                "package_seconds": round3(package_s),
                "package_transcode_seconds": title.transcode_ms as f64 / 1000.0,
                "package_cenc_seal_seconds": title.package_ms as f64 / 1000.0,
                "blocks": blocks,
                "sealed_bytes": sealed_bytes,
                "runs": args.runs,
            },
        });
        write_json(out, &json)?;
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn write_json(out: &Path, json: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(json)? + "\n")
        .with_context(|| format!("writing {}", out.display()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores, {}", std::env::consts::OS)
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run -p telly-media --release --example publish-overhead -- {}",
        args.join(" ")
    )
}
