//! The measuring half of `cargo xtask bench tabs`, which turns what this writes
//! into `bench/results/tab-swarm.json` and `tab-ttff.json`.
//!
//! The issue's scenario, so that the figures compare with p2p-media-loader
//! measured the same way: a 120 s 1280×720 title at about 2 Mbit/s, one headless
//! Chromium process per tab, tabs joining 5 s apart, each playing to the end; 2,
//! 4 and 8 tabs, a fresh provider each. Ignored by `cargo xtask test` (it takes
//! minutes). Inputs by environment: `TELLY_BENCH_SOURCE` (the rendered source
//! file), `TELLY_BENCH_OUT` (where the raw measurements go, as JSON, rewritten
//! after every audience size so a failure keeps what was measured), and
//! optionally `TELLY_BENCH_TABS` (audience sizes, default `2,4,8`) and
//! `TELLY_BENCH_PROFILE` (seconds: DevTools samples the last tab's main thread
//! for that long from its navigation, into `last-of-N-tabs.cpuprofile` among
//! the artifacts).
//!
//! Time to first frame is measured in the page: a script Chromium runs before
//! any of the page's own (DevTools' `Page.addScriptToEvaluateOnNewDocument`)
//! stamps the first `playing` event of `video#player` with `performance.now()`,
//! whose zero is the navigation's start. So no event can be missed, and neither
//! WebDriver's round trips nor polling add to the figure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{Value, json};
use telly_e2e::provider::telly_bin;
use telly_e2e::{Browser, Provider, PublishedFixture, sign_in};
use telly_proto::api::ClientConfig;

const BENCH_ID: &str = "tab-bench";
const JOIN_GAP: Duration = Duration::from_secs(5);
/// How far past the last tab's nominal end (its join plus the title's length)
/// a run may go before it counts as failed: stalls on a saturated 2-core
/// machine can add a lot.
const SLACK: Duration = Duration::from_secs(240);

/// Installed in every document before the page's own scripts. Media events do
/// not bubble, but they do pass the window in the capture phase, so listening
/// there sees the player element however late the app creates it. A stall is
/// a `waiting` after the first `playing`; its length runs to the next `playing`.
const PROBE: &str = r#"(() => {
  const s = { first_playing_ms: null, first_progress_ms: null, ended_ms: null,
              stalls: 0, stall_ms: 0, stall_at_s: [], stall_buffered_s: [], waiting_since: null,
              start_log: [], stall_log: [], long_tasks: [0, 0, 0] };
  window.__bench = s;
  // The page's thread: tasks over 50 ms, as [count, total ms, longest ms].
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        s.long_tasks[0] += 1;
        s.long_tasks[1] += Math.round(e.duration);
        s.long_tasks[2] = Math.max(s.long_tasks[2], Math.round(e.duration));
      }
    }).observe({ type: 'longtask', buffered: true });
  } catch (_) {}
  const player = (e) => e.target instanceof HTMLVideoElement && e.target.id === 'player';
  // Until the first frame, every half second: [ms, player phase, swarm joined,
  // peers, links connecting, bytes from peers, bytes from the origin, the
  // element's readyState, appends per track, buffered ranges, the player's
  // last error, the blocks it waits for as the engine sees them, long tasks'
  // total ms, ms spent in the swarm's and the player's loops], to tell a slow
  // page from a swarm that waits. The same at every stall and 1 s after
  // (stall_log).
  const record = () => {
    const t = window.__telly, w = window.__telly_swarm;
    const v = document.querySelector('video#player');
    const p = t && t.player;
    return [Math.round(performance.now()), p ? p.phase : null,
      w ? w.joined : null, w ? w.peers : null, w ? w.connecting : null,
      w ? w.bytes_from_peers : null, w ? w.bytes_from_origin : null, v ? v.readyState : null,
      p ? p.stats.tracks.map((k) => k.appended) : null, p ? p.buffered : null,
      p ? p.stats.last_error : null, w ? w.waiting_for : null, s.long_tasks[1],
      window.__telly_busy ? [(window.__telly_busy.swarm || [0, 0])[1], (window.__telly_busy.player || [0, 0])[1]] : null];
  };
  addEventListener('playing', (e) => {
    if (!player(e)) return;
    const now = performance.now();
    if (s.first_playing_ms === null) s.first_playing_ms = now;
    if (s.waiting_since !== null) { s.stall_ms += now - s.waiting_since; s.waiting_since = null; }
  }, true);
  addEventListener('waiting', (e) => {
    if (!player(e) || s.first_playing_ms === null) return;
    s.stalls += 1;
    s.stall_at_s.push(e.target.currentTime);
    // Media buffered ahead of the playhead when the element gave up: a stall
    // with seconds buffered is the decoder's (CPU), not the swarm's.
    const v = e.target, b = v.buffered;
    let ahead = 0;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= v.currentTime + 0.1 && v.currentTime < b.end(i)) ahead = b.end(i) - v.currentTime;
    }
    s.stall_buffered_s.push(Math.round(ahead * 100) / 100);
    if (s.waiting_since === null) s.waiting_since = performance.now();
    if (s.stall_log.length < 40) {
      s.stall_log.push(record());
      setTimeout(() => { if (s.stall_log.length < 40) s.stall_log.push(record()); }, 1000);
    }
  }, true);
  addEventListener('timeupdate', (e) => {
    if (player(e) && s.first_progress_ms === null && e.target.currentTime > 0) s.first_progress_ms = performance.now();
  }, true);
  addEventListener('ended', (e) => { if (player(e)) s.ended_ms = performance.now(); }, true);
  const sample = () => {
    if (s.first_playing_ms !== null || s.start_log.length >= 240) return;
    s.start_log.push(record());
    setTimeout(sample, 500);
  };
  setTimeout(sample, 0);
})();"#;

/// Polled once a second per tab.
const STATE: &str = r#"(() => {
  const v = document.querySelector('video#player');
  const t = window.__telly;
  return {
    at_end: !!(v && t && t.player.duration_s > 0 && (v.ended || t.current_time >= t.player.duration_s - 0.3)),
    failed: !!(t && t.player.phase === 'failed') || !!(v && v.error),
    current_time: t ? t.current_time : 0,
  };
})()"#;

#[tokio::test]
#[ignore = "a benchmark of several minutes: cargo xtask bench tabs"]
async fn tab_swarm() -> Result<()> {
    let source = env_path("TELLY_BENCH_SOURCE")?;
    let out = env_path("TELLY_BENCH_OUT")?;
    let audiences: Vec<usize> = std::env::var("TELLY_BENCH_TABS")
        .unwrap_or_else(|_| "2,4,8".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .context("TELLY_BENCH_TABS: sizes like 2,4,8")
        })
        .collect::<Result<_>>()?;

    // Published once (x264 at 720p takes about real time here), then copied
    // whole into each run's provider, so each run starts with fresh metrics.
    let published = PublishedFixture::get().copy()?;
    publish(&source, published.path())?;

    let mut report = json!({
        "ttff_method": "in page: performance.now() (zero = the navigation's start) at the first `playing` event of video#player, stamped by a script installed before the page's own",
        "cpu_method": "cpu_busy_share = 1 - (idle + iowait) / total over all CPUs in /proc/stat, from the first navigation to the last tab's end, every process on the machine; cpu_own_share = CPU time of the benchmark process and its descendants (telly serve, chromedrivers, Chromiums) over the same total",
        "runs": [],
    });
    for n in audiences {
        eprintln!("tab swarm: {n} tabs");
        let run = run_audience(published.path(), n).await?;
        eprintln!("tab swarm: {n} tabs: {}", summary(&run));
        report["title"] = run["title"].clone();
        report["runs"]
            .as_array_mut()
            .context("runs is a list")?
            .push(run);
        std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn env_path(name: &str) -> Result<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .with_context(|| format!("{name} is not set: run this through `cargo xtask bench tabs`"))
}

fn publish(source: &Path, data_dir: &Path) -> Result<()> {
    let out = Command::new(telly_bin())
        .arg("publish")
        .arg(source)
        .args(["--id", BENCH_ID, "--title", "Tab Swarm Bench"])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("running telly publish")?;
    ensure!(
        out.status.success(),
        "telly publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn summary(run: &Value) -> String {
    format!(
        "origin {:.2}× the title, {} stalls ({} with media buffered), TTFF first {:.2} s last {:.2} s, CPU busy {:.0} % (ours {:.0} %)",
        run["origin_over_title"].as_f64().unwrap_or(f64::NAN),
        run["stalls"],
        run["stalls_with_media_buffered"],
        run["ttff_s"]["first"].as_f64().unwrap_or(f64::NAN),
        run["ttff_s"]["last"].as_f64().unwrap_or(f64::NAN),
        100.0 * run["cpu"]["busy_share"].as_f64().unwrap_or(f64::NAN),
        100.0 * run["cpu"]["own_share"].as_f64().unwrap_or(f64::NAN),
    )
}

/// One audience size: `n` tabs of their own Chromium, a fresh provider.
async fn run_audience(published: &Path, n: usize) -> Result<Value> {
    let provider = Provider::start_with_args(
        |dir| replace_tree(dir, published),
        // Loopback ICE only: the tabs reach each other inside the namespace.
        &["--loopback-ice"],
    )?;
    let title = title_info(&provider).await?;
    let title_bytes = title["bytes"].as_u64().context("title bytes")?;
    let duration = Duration::from_secs_f64(title["duration_s"].as_f64().context("duration")?);

    // Launched and signed in before the clock starts, so joins are 5 s apart
    // however long a Chromium takes to start.
    let mut tabs = Vec::with_capacity(n);
    for _ in 0..n {
        let browser = Browser::launch().await?;
        sign_in(&browser, &provider).await?;
        on_new_document(&browser, PROBE).await?;
        tabs.push(browser);
    }

    let cpu_start = CpuSample::take()?;
    let threads_start = ticks_by_thread();
    let load_start = loadavg_1m();
    let start = Instant::now();
    let url = provider.url(&format!("/watch/{BENCH_ID}"));
    let profile_s: Option<f64> = std::env::var("TELLY_BENCH_PROFILE")
        .ok()
        .map(|s| s.parse().context("TELLY_BENCH_PROFILE: seconds"))
        .transpose()?;
    let mut navigations: Vec<Option<tokio::task::JoinHandle<Result<f64>>>> = tabs
        .iter()
        .enumerate()
        .map(|(i, tab)| {
            let client = tab.client.clone();
            let url = url.clone();
            let at = start + JOIN_GAP * i as u32;
            let profile = profile_s.filter(|_| i + 1 == n);
            Some(tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                if profile.is_some() {
                    start_profiler(&client).await?;
                }
                let joined = start.elapsed().as_secs_f64();
                client.goto(&url).await.context("navigating to the title")?;
                if let Some(seconds) = profile {
                    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                    save_profile(&client, n).await?;
                }
                Ok(joined)
            }))
        })
        .collect();

    let deadline = JOIN_GAP * (n as u32).saturating_sub(1) + duration + SLACK;
    let mut joined_at: Vec<Option<f64>> = vec![None; n];
    let mut ended_at: Vec<Option<f64>> = vec![None; n];
    let mut load_max = load_start;
    while ended_at.iter().any(Option::is_none) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        load_max = load_max.max(loadavg_1m());
        for (i, tab) in tabs.iter().enumerate() {
            if let Some(nav) = navigations[i].take_if(|h| h.is_finished()) {
                joined_at[i] = Some(nav.await??);
            }
            if joined_at[i].is_none() || ended_at[i].is_some() {
                continue;
            }
            let state = tab.js(STATE).await?;
            if state["failed"] == true {
                bail!("tab {i} of {n} failed: {}", player_state(tab).await);
            }
            if state["at_end"] == true {
                ended_at[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        if start.elapsed() > deadline {
            let mut behind = Vec::new();
            for (i, tab) in tabs.iter().enumerate() {
                if ended_at[i].is_none() {
                    behind.push(format!("tab {i}: {}", player_state(tab).await));
                }
            }
            bail!(
                "{n} tabs: not all at the end after {:.0} s\n{}",
                deadline.as_secs_f64(),
                behind.join("\n")
            );
        }
    }
    let cpu_end = CpuSample::take()?;
    let by_thread = top_threads(
        &threads_start,
        &ticks_by_thread(),
        cpu_end.total.saturating_sub(cpu_start.total),
    );
    let cpu = cpu_end.since(&cpu_start);
    let wall_s = start.elapsed().as_secs_f64();
    let load_end = loadavg_1m();
    // The poll sees a tab within 0.3 s of the end as there; let its element
    // reach `ended` before the probes are read.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let origin_bytes = provider
        .metrics()
        .await?
        .titles
        .get(BENCH_ID)
        .map_or(0, |t| t.origin_bytes);
    let mut per_tab = Vec::with_capacity(n);
    for (i, tab) in tabs.iter().enumerate() {
        let bench = tab.js("window.__bench").await?;
        let swarm = tab.js("window.__telly_swarm ?? null").await?;
        let reseeks = tab
            .js("window.__telly ? window.__telly.player.stats.reseeks : null")
            .await?;
        // Milestones of the tab's start, ms from its navigation (host::marks).
        let marks = tab.js("window.__telly_marks ?? null").await?;
        let ms = |v: &Value| v.as_f64().map(|ms| ms / 1000.0);
        let joined = joined_at[i].unwrap_or_default();
        per_tab.push(json!({
            "joined_at_s": joined,
            "ttff_s": ms(&bench["first_playing_ms"]),
            "first_progress_s": ms(&bench["first_progress_ms"]),
            // Polled, so up to a second late; `ended_s` is the element's own
            // `ended` event (if it fired), from the navigation's start.
            "ended_after_s": ended_at[i].map(|e| e - joined),
            "ended_s": ms(&bench["ended_ms"]),
            "stalls": bench["stalls"],
            "stall_s": ms(&bench["stall_ms"]),
            "stall_at_s": bench["stall_at_s"],
            "stall_buffered_s": bench["stall_buffered_s"],
            "stalls_with_media_buffered": bench["stall_buffered_s"]
                .as_array()
                .map_or(0, |b| b.iter().filter(|s| s.as_f64().unwrap_or(0.0) >= 1.0).count()),
            "reseeks": reseeks,
            "marks": marks,
            "bytes_from_peers": swarm["bytes_from_peers"],
            "bytes_from_origin": swarm["bytes_from_origin"],
            "bytes_uploaded": swarm["bytes_uploaded"],
            "bytes_wasted": swarm["bytes_wasted"],
            "peers_at_end": swarm["peers"],
            "start_log": bench["start_log"],
            "long_tasks": bench["long_tasks"],
            // [runs, total ms, longest ms] per loop of the page (host::busy).
            "busy": tab.js("window.__telly_busy ?? null").await?,
            // Per block of the first the player asked for: [asked, got,
            // appending, appended] ms from the navigation (host::marks).
            "block_ways": tab.js("window.__telly_blocks ?? null").await?,
            "stall_log": bench["stall_log"],
        }));
    }
    for tab in tabs {
        tab.close().await?;
    }
    drop(provider);

    let ttff = |i: usize| per_tab[i]["ttff_s"].as_f64();
    let sum = |key: &str| -> f64 { per_tab.iter().filter_map(|t| t[key].as_f64()).sum() };
    Ok(json!({
        "tabs": n,
        "title": title,
        "origin_bytes": origin_bytes,
        "origin_over_title": origin_bytes as f64 / title_bytes as f64,
        "stalls": sum("stalls") as u64,
        "stall_s": sum("stall_s"),
        "stalls_with_media_buffered": sum("stalls_with_media_buffered") as u64,
        "reseeks": sum("reseeks") as u64,
        "ttff_s": { "first": ttff(0), "last": ttff(n - 1) },
        "cpu": {
            "busy_share": cpu.busy_share,
            "own_share": cpu.own_share,
            "wall_s": wall_s,
            "loadavg_1m": { "start": load_start, "end": load_end, "max": load_max },
            // [process kind / thread name, share of all CPU], largest first.
            "by_thread": by_thread,
        },
        "per_tab": per_tab,
    }))
}

/// Size, length and picture of the bench title, from its verified manifest.
async fn title_info(provider: &Provider) -> Result<Value> {
    let config: ClientConfig = reqwest::get(provider.url("/api/config"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let manifest = provider
        .signed_in_client()
        .await?
        .get(provider.url(&format!("/api/titles/{BENCH_ID}/manifest")))
        .send()
        .await?
        .error_for_status()?
        .json::<telly_proto::SignedManifest>()
        .await?
        .verify(&config.provider_key)?;
    let bytes = manifest.total_bytes();
    let duration_s = manifest.duration_ms as f64 / 1000.0;
    let video = manifest.tracks.iter().find(|t| t.width.is_some());
    Ok(json!({
        "id": BENCH_ID,
        "bytes": bytes,
        "duration_s": duration_s,
        "width": video.and_then(|t| t.width),
        "height": video.and_then(|t| t.height),
        "mbit_s": bytes as f64 * 8.0 / duration_s / 1e6,
    }))
}

async fn player_state(tab: &Browser) -> Value {
    tab.js("JSON.stringify({ player: window.__telly, bench: window.__bench })")
        .await
        .unwrap_or(Value::Null)
}

/// Empties `dir` and copies `from` into it: the provider's copy of the e2e
/// fixture becomes the copy with the bench title (same key, viewer and
/// catalogue, plus one title), without mixing two SQLite write-ahead logs.
fn replace_tree(dir: &Path, from: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    copy_tree(from, dir)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Has Chromium run `source` in every document it loads from now on, before
/// the page's scripts, through chromedriver's DevTools passthrough (WebDriver
/// itself can only run scripts in a document that already exists).
async fn on_new_document(browser: &Browser, source: &str) -> Result<()> {
    browser
        .client
        .issue_cmd(DevTools {
            method: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({ "source": source }),
        })
        .await
        .context("installing the page probe over DevTools")?;
    Ok(())
}

/// Samples the page's main thread (JS and WASM) every millisecond from the
/// next navigation on.
async fn start_profiler(client: &fantoccini::Client) -> Result<()> {
    for (method, params) in [
        ("Profiler.enable", json!({})),
        ("Profiler.setSamplingInterval", json!({ "interval": 1000 })),
        ("Profiler.start", json!({})),
    ] {
        client
            .issue_cmd(DevTools { method, params })
            .await
            .with_context(|| format!("DevTools {method}"))?;
    }
    Ok(())
}

/// Stops the profiler and writes what it sampled where DevTools can open it.
async fn save_profile(client: &fantoccini::Client, tabs: usize) -> Result<()> {
    let stopped = client
        .issue_cmd(DevTools {
            method: "Profiler.stop",
            params: json!({}),
        })
        .await
        .context("DevTools Profiler.stop")?;
    let path = telly_e2e::artifacts_dir().join(format!("last-of-{tabs}-tabs.cpuprofile"));
    std::fs::write(&path, serde_json::to_string(&stopped["profile"])?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("tab swarm: the last tab's profile is in {}", path.display());
    Ok(())
}

/// chromedriver's `POST /session/{id}/goog/cdp/execute`.
#[derive(Debug)]
struct DevTools {
    method: &'static str,
    params: Value,
}

/// `url::ParseError`, named through reqwest's re-export of `url::Url` (the
/// same `url` crate fantoccini uses), so this crate needs no `url` dependency.
type UrlError = <reqwest::Url as std::str::FromStr>::Err;

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, UrlError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        let body = json!({ "cmd": self.method, "params": self.params });
        (reqwest::Method::POST, Some(body.to_string()))
    }
}

/// CPU time counters, in the kernel's clock ticks.
struct CpuSample {
    /// All CPUs, every state but guest time (already counted as user time).
    total: u64,
    /// `total` less idle and iowait.
    busy: u64,
    /// This process and its descendants, each counting its reaped children.
    own: u64,
}

struct CpuShares {
    busy_share: f64,
    own_share: f64,
}

impl CpuSample {
    fn take() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .context("/proc/stat has no cpu line")?
            .split_whitespace()
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Ok(Self {
            total,
            busy: total - idle,
            own: own_ticks(),
        })
    }

    fn since(&self, earlier: &Self) -> CpuShares {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        CpuShares {
            busy_share: self.busy.saturating_sub(earlier.busy) as f64 / total,
            own_share: self.own.saturating_sub(earlier.own) as f64 / total,
        }
    }
}

/// utime + stime + cutime + cstime of this process and every living
/// descendant. A descendant that exited during the run and was reaped by a
/// living one is still counted (in its parent's c-times); one whose parent
/// also exited is lost, so this is a floor.
fn own_ticks() -> u64 {
    let (children, ticks) = process_table();
    let me = std::process::id();
    std::iter::once(me)
        .chain(descendants(&children, me))
        .map(|pid| ticks.get(&pid).copied().unwrap_or(0))
        .sum()
}

/// Every living process: its children, and its CPU ticks with those of its
/// reaped children (utime + stime + cutime + cstime).
fn process_table() -> (HashMap<u32, Vec<u32>>, HashMap<u32, u64>) {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (children, ticks);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces or ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // After the name: state, ppid, …; utime is the stat file's 14th field.
        children.entry(num(1) as u32).or_default().push(pid);
        ticks.insert(pid, num(11) + num(12) + num(13) + num(14));
    }
    (children, ticks)
}

/// The processes below `root`, however deep.
fn descendants(children: &HashMap<u32, Vec<u32>>, root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = children.get(&root).cloned().unwrap_or_default();
    while let Some(pid) = todo.pop() {
        todo.extend(children.get(&pid).into_iter().flatten());
        out.push(pid);
    }
    out
}

/// CPU ticks (utime + stime) of every living thread of this process's
/// descendants, summed by what the thread is: the process's kind (Chromium's
/// `--type=`, with the utility's sub-type; `telly`; `chromedriver`) and the
/// thread's name (`CrRendererMain` is a page's main thread, where the WASM,
/// the DOM and MSE calls run; `Media` and the like decode). Threads that
/// ended before the sample are not counted.
fn ticks_by_thread() -> HashMap<String, u64> {
    let (children, _) = process_table();
    let mut out = HashMap::new();
    for pid in descendants(&children, std::process::id()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // Chromium's children rewrite their command line as one string with
        // spaces (a process title), not NUL-separated arguments.
        let args: Vec<String> = cmdline
            .split(|b| *b == 0 || *b == b' ')
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args.first().map(String::as_str).unwrap_or("");
        let flag = |name: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(name))
                .map(str::to_string)
        };
        let kind = if program.contains("chromium") {
            match (flag("--type="), flag("--utility-sub-type=")) {
                (Some(t), Some(sub)) => format!("chromium {t} {sub}"),
                (Some(t), None) => format!("chromium {t}"),
                (None, _) => "chromium browser".to_string(),
            }
        } else {
            program.rsplit('/').next().unwrap_or(program).to_string()
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some((_, rest))) = (stat.find('('), stat.rsplit_once(')')) else {
                continue;
            };
            let name = &stat[open + 1..stat.len() - rest.len() - 1];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            *out.entry(format!("{kind} / {name}")).or_default() += num(11) + num(12);
        }
    }
    out
}

/// The threads that took the most CPU between two samples, as shares of
/// all the machine's CPU over that time (`total_ticks`), largest first.
fn top_threads(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    total_ticks: u64,
) -> Value {
    let mut used: Vec<(&String, u64)> = after
        .iter()
        .map(|(k, v)| (k, v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect();
    used.sort_by_key(|u| std::cmp::Reverse(u.1));
    let total = total_ticks.max(1) as f64;
    Value::Array(
        used.into_iter()
            .take(15)
            .map(|(k, v)| json!([k, (v as f64 / total * 1000.0).round() / 1000.0]))
            .collect(),
    )
}

fn loadavg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
