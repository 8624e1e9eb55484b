//! `cargo xtask bench goodput`: the swarm path's goodput over a WebRTC data
//! channel against the raw throughput of the same kind of channel, both
//! measured in one headless Chromium page (web/tests/browser_goodput.rs).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::{machine, today, write};
use crate::sh;

const TARGET_RATIO: f64 = 0.8;

/// `key=value` pairs of the first stdout line starting with `prefix `.
fn fields(out: &str, prefix: &str) -> Option<BTreeMap<String, String>> {
    let rest = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix)?.strip_prefix(' '))?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn number(map: &BTreeMap<String, String>, key: &str) -> Result<f64> {
    map.get(key)
        .with_context(|| format!("the browser benchmark printed no {key}"))?
        .parse::<f64>()
        .with_context(|| format!("{key} is not a number"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub fn run(results: &Path) -> Result<()> {
    let _t = sh::step("bench: swarm goodput over a WebRTC data channel, against the raw channel");
    let scratch = sh::BrowserScratch::new()?;
    let load_before = load_average();
    // No `-q`: cargo would pass `--quiet` on to wasm-bindgen-test-runner, which
    // refuses it.
    let mut cmd = sh::cargo();
    cmd.args([
        "test",
        "-p",
        "telly-web",
        "--release",
        "--features",
        "bench",
        "--target",
        "wasm32-unknown-unknown",
        "--test",
        "browser_goodput",
        "--",
        "bench_goodput",
        "--nocapture",
    ]);
    scratch
        .apply(&mut cmd)?
        .env("WASM_BINDGEN_TEST_TIMEOUT", "300");
    eprintln!(
        "    $ cargo test -p telly-web --release --features bench --target wasm32-unknown-unknown --test browser_goodput -- bench_goodput --nocapture"
    );
    let output = cmd.output().context("could not start cargo test")?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let scratch = sh::repo_root().join("target").join("bench-goodput");
    std::fs::create_dir_all(&scratch)?;
    let log = scratch.join("browser.log");
    std::fs::write(
        &log,
        format!(
            "{out}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    )?;
    if !output.status.success() {
        bail!(
            "the browser benchmark failed ({}); its output is in {}",
            output.status,
            log.display()
        );
    }
    let load_after = load_average();

    let head = fields(&out, "BENCH tab-goodput")
        .context("the browser benchmark printed no `BENCH tab-goodput` line")?;
    let swarm = number(&head, "swarm_mb_s")?;
    let raw = number(&head, "raw_mb_s")?;
    let detail = fields(&out, "BENCH tab-goodput-detail").unwrap_or_default();
    let ratio = swarm / raw;

    // Per round: raw, swarm (seeder reading its store), swarm (seeder holding
    // every block in memory), for the notes.
    let rounds: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BENCH tab-goodput-run "))
        .filter_map(|l| {
            let (label, rest) = l.split_once(' ')?;
            let mb_s = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("mb_s="))?;
            Some(format!("{label} {mb_s}"))
        })
        .collect();
    let cold_runs: Vec<BTreeMap<String, String>> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BENCH tab-goodput-run cold#"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    let median_of = |key: &str| -> String {
        let mut values: Vec<f64> = cold_runs
            .iter()
            .filter_map(|r| r.get(key)?.parse().ok())
            .collect();
        values.sort_by(f64::total_cmp);
        values
            .get(values.len() / 2)
            .map_or_else(|| "?".into(), |v| format!("{v:.2}"))
    };
    let mut raw_sends: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BENCH tab-goodput-run raw#"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("send_ms_per_mb="))?
                .parse()
                .ok()
        })
        .collect();
    raw_sends.sort_by(f64::total_cmp);
    let median_raw_send = raw_sends
        .get(raw_sends.len() / 2)
        .map_or_else(|| "?".into(), |v| format!("{v:.2}"));
    let get = |key: &str| detail.get(key).cloned().unwrap_or_else(|| "?".into());
    let origin_fetches: u64 = cold_runs
        .iter()
        .filter_map(|r| r.get("origin_fetches")?.parse::<u64>().ok())
        .sum();

    eprintln!(
        "    swarm {swarm:.2} MB/s, raw {raw:.2} MB/s: ratio {ratio:.2} (target {TARGET_RATIO})"
    );
    let notes = format!(
        "Both ends run in one headless Chromium renderer (one page: its main thread runs both \
         engines and both links, and the WebRTC threads of both ends share the machine's cores), \
         the conservative case. value: swarm path, median over {rounds_n} rounds: a seeding \
         Engine<Signed> answering Loads from its store (each block's Merkle leaves hashed again by \
         WebCrypto, as the tab's driver does, and checked against the signed roots) sends a \
         120 x 512 KiB random title (signed manifest, Merkle piece roots, signed grants) to a \
         downloading engine (Starting at 0, then Playing; horizon covers the title; upload caps \
         1 GB/s with the tab's one-second burst), every frame wire::encode -> PeerLink -> wire::decode; \
         verified bytes from peers from 0.5 s after the first request to the last block \
         delivered, the warm-up left out as the baseline's is (over the whole run, first \
         request on: median {whole} MB/s, per-round ratio {whole_ratio}). Origin fetches: \
         {origin_fetches}. \
         baseline: the same kind of PeerLink pair, a bare sender of 64 KiB messages under the \
         same flow control, bytes received over 3 s after 0.5 s warm-up, median. \
         Per run (MB/s): {rounds}. Same swarm path with the seeder holding every block in memory \
         (no loads): median {hot} MB/s. Median of per-round ratios: swarm/raw \
         {round_ratio}, in-memory seeder/raw {hot_round_ratio}. Swarm runs (medians): pipeline \
         {outstanding} chunks outstanding of the 32-chunk cap, seeder queue {queue} KiB, seeder \
         idle share {idle}, page thread busy share {busy}; main-thread ms per MB: engines \
         {engine} (seeder: loads {load}, inputs {s_in}, poll_action {s_poll}; viewer: inputs \
         {v_in}, poll_action {v_poll}), encode {encode}, decode {decode}, channel send {send} \
         (the raw sender's: {raw_send}). Hashing (ms per MB): WebCrypto's leaves of a whole block, awaited one block at a time, \
         {webcrypto}; in WASM: open_fetched of a whole block without them {open}, viewer's \
         check_chunk {check}, one SHA-256 pass {sha}; framing a chunk (to_wire + encode) {f_enc}, reading one \
         (decode + from_wire) {f_dec}, one plain copy {copy}. Load average {load_before} before, {load_after} after \
         (a shared machine: figures vary run to run). Log: target/bench-goodput/browser.log.",
        rounds_n = get("rounds"),
        rounds = rounds.join(", "),
        hot = get("hot_mb_s"),
        whole = get("whole_mb_s"),
        whole_ratio = get("whole_round_ratio"),
        round_ratio = get("round_ratio"),
        hot_round_ratio = get("hot_round_ratio"),
        outstanding = median_of("mean_outstanding_chunks"),
        queue = median_of("mean_seeder_queue_kib"),
        idle = median_of("seeder_idle_share"),
        busy = median_of("busy_share"),
        engine = median_of("engine_ms_per_mb"),
        encode = median_of("encode_ms_per_mb"),
        decode = median_of("decode_ms_per_mb"),
        send = median_of("send_ms_per_mb"),
        load = median_of("seeder_load_ms_per_mb"),
        s_in = median_of("seeder_input_ms_per_mb"),
        s_poll = median_of("seeder_poll_ms_per_mb"),
        v_in = median_of("viewer_input_ms_per_mb"),
        v_poll = median_of("viewer_poll_ms_per_mb"),
        raw_send = median_raw_send,
        open = get("seeder_open_ms_per_mb"),
        webcrypto = get("webcrypto_leaves_ms_per_mb"),
        check = get("viewer_check_ms_per_mb"),
        sha = get("sha256_ms_per_mb"),
        f_enc = get("chunk_encode_ms_per_mb"),
        f_dec = get("chunk_decode_ms_per_mb"),
        copy = get("copy_ms_per_mb"),
    );
    write(
        results,
        "tab-goodput",
        &json!({
            "name": "tab-goodput",
            "unit": "MB/s",
            "value": swarm,
            "baseline": raw,
            "ratio": ratio,
            "target": TARGET_RATIO,
            "machine": machine(),
            "date": today(),
            "command": "cargo xtask bench goodput",
            "notes": notes,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_told_from_the_detail_lines() {
        let out = "noise\nBENCH tab-goodput-run raw#0 mb_s=9.00 busy_share=0.01\n\
                   BENCH tab-goodput-detail hot_mb_s=10.72 rounds=3\n\
                   BENCH tab-goodput swarm_mb_s=7.60 raw_mb_s=9.50\n";
        let head = fields(out, "BENCH tab-goodput").unwrap();
        assert_eq!(number(&head, "swarm_mb_s").unwrap(), 7.6);
        assert_eq!(number(&head, "raw_mb_s").unwrap(), 9.5);
        let detail = fields(out, "BENCH tab-goodput-detail").unwrap();
        assert_eq!(detail["hot_mb_s"], "10.72");
        assert!(fields(out, "BENCH tab-goodput-nothing").is_none());
    }
}
