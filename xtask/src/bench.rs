//! `cargo xtask bench`: benchmarks that measure Telly against a baseline in one run
//! and write `bench/results/NAME.json` (DESIGN.md's fields).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{demo, setup, sh};

pub fn run(which: &str) -> Result<()> {
    setup::ensure_all()?;
    let results = sh::repo_root().join("bench").join("results");
    std::fs::create_dir_all(&results)?;
    match which {
        "block-open" => block_open(&results)?,
        "publish" => publish_overhead(&results)?,
        "sim" => sim(&results)?,
        "tabs" => crate::bench_tabs::run(&results)?,
        // Rewrites tab-*.json from the last `tabs` run's raw measurements.
        "tabs-report" => crate::bench_tabs::report(&results)?,
        "goodput" => crate::bench_goodput::run(&results)?,
        // Only rewrite the README's table from the results already there.
        "table" => {}
        "all" => {
            block_open(&results)?;
            publish_overhead(&results)?;
            sim(&results)?;
            crate::bench_goodput::run(&results)?;
            crate::bench_tabs::run(&results)?;
        }
        other => bail!(
            "unknown benchmark {other:?}: block-open, publish, sim, tabs, goodput, all or table"
        ),
    }
    update_readme(&results)
}

/// Rewrites the README's benchmark table (after the `<!-- bench-table -->`
/// marker) from every result file.
fn update_readme(results: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(results)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut table = String::from(
        "| benchmark | value | baseline | ratio | target | date |\n|---|---|---|---|---|---|\n",
    );
    let cell = |v: &Value| match v {
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("{f:.3}")),
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for file in files {
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("parsing {}", file.display()))?;
        let rows = match value {
            Value::Array(rows) => rows,
            one => vec![one],
        };
        for r in rows {
            table.push_str(&format!(
                "| {} | {} {} | {} | {} | {} | {} |\n",
                cell(&r["name"]),
                cell(&r["value"]),
                cell(&r["unit"]),
                cell(&r["baseline"]),
                cell(&r["ratio"]),
                cell(&r["target"]),
                cell(&r["date"]),
            ));
        }
    }
    let readme_path = sh::repo_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    let marker = "<!-- bench-table -->";
    let head = readme
        .split_once(marker)
        .map(|(h, _)| h)
        .context("README.md lacks the bench-table marker")?;
    std::fs::write(&readme_path, format!("{head}{marker}\n{table}"))?;
    eprintln!("    README benchmark table updated");
    Ok(())
}

pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown OS".into());
    format!(
        "{cores} cores, {mem_gib:.0} GiB, {os}, {}",
        std::env::consts::ARCH
    )
}

pub(crate) fn today() -> String {
    sh::output(Command::new("date").args(["-u", "+%F"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn write(results: &Path, name: &str, value: &Value) -> Result<()> {
    let path = results.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")?;
    eprintln!("    wrote {}", path.display());
    Ok(())
}

/// SHA-256 + AES-256-GCM over the same sealed blocks: WebCrypto in headless
/// Chromium against RustCrypto natively.
fn block_open(results: &Path) -> Result<()> {
    let _t = sh::step("bench: block verify + open, browser against native");
    let scratch = sh::repo_root().join("target").join("bench-block-open");
    std::fs::create_dir_all(&scratch)?;
    let native_json = scratch.join("native.json");
    sh::run(
        sh::cargo()
            .args([
                "run",
                "-q",
                "-p",
                "telly-media",
                "--release",
                "--example",
                "block-open-native",
                "--",
                "--out",
            ])
            .arg(&native_json),
    )?;
    let native: Value = serde_json::from_str(&std::fs::read_to_string(&native_json)?)?;
    let native_mb_s = native["native_mb_s"]
        .as_f64()
        .context("native benchmark wrote no native_mb_s")?;

    let scratch = sh::BrowserScratch::new()?;
    let out = sh::output(
        scratch
            // No `-q`: cargo would pass `--quiet` on to wasm-bindgen-test-runner,
            // which refuses it.
            .apply(sh::cargo().args([
                "test",
                "-p",
                "telly-web",
                "--release",
                "--features",
                "bench",
                "--target",
                "wasm32-unknown-unknown",
                "--test",
                "browser_crypto",
                "--",
                "bench_block_open",
                "--nocapture",
            ]))?
            .env("WASM_BINDGEN_TEST_TIMEOUT", "300"),
    )?;
    let browser_mb_s = out
        .lines()
        .find_map(|l| l.split("BENCH block-open browser_mb_s=").nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("the browser benchmark printed no `BENCH block-open browser_mb_s=` line")?;
    eprintln!("    native {native_mb_s:.0} MB/s, browser {browser_mb_s:.0} MB/s");
    write(
        results,
        "block-open",
        &json!({
            "name": "block-open",
            "unit": "MB/s",
            "value": browser_mb_s,
            "baseline": native_mb_s,
            "ratio": browser_mb_s / native_mb_s,
            "target": 0.5,
            "machine": machine(),
            "date": today(),
            "command": "cargo xtask bench block-open",
            "notes": "SHA-256 verify then AES-256-GCM open of 512 KiB sealed blocks; value: WebCrypto from WASM in headless Chromium; baseline: RustCrypto natively (release)",
        }),
    )
}

/// `telly publish`'s packaging against ffmpeg's transcode alone, same input.
fn publish_overhead(results: &Path) -> Result<()> {
    let _t = sh::step("bench: publish overhead (CENC + sealing) against ffmpeg's transcode");
    let sources = sh::repo_root().join("target").join("bench-sources");
    let input = demo::make_source(&demo::DEMO_TITLES[0], &sources)?;
    let out = sh::repo_root().join("target").join("publish-overhead.json");
    sh::run(
        sh::cargo()
            .args([
                "run",
                "-q",
                "-p",
                "telly-media",
                "--release",
                "--example",
                "publish-overhead",
                "--",
                "--input",
            ])
            .arg(&input)
            .arg("--out")
            .arg(&out),
    )?;
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    value["machine"] = json!(machine());
    value["date"] = json!(today());
    value["command"] = json!("cargo xtask bench publish");
    write(results, "publish-overhead", &value)
}

/// The swarm simulator's scenarios, each against its baselines.
fn sim(results: &Path) -> Result<()> {
    let scenarios = sh::repo_root().join("bench").join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&scenarios)
        .with_context(|| format!("reading {}", scenarios.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("scenario file name")?
            .to_string();
        let _t = sh::step(&format!("bench: simulator scenario {stem}"));
        sh::run(
            sh::cargo()
                .args(["run", "-q", "-p", "telly-sim", "--release", "--"])
                .arg(&file)
                .arg("--out")
                .arg(results.join(format!("{stem}.json")))
                .arg("--plot")
                .arg(results.join(format!("{stem}.svg"))),
        )?;
    }
    Ok(())
}
