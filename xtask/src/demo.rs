//! `cargo xtask demo`: the provider with demo titles, on loopback.
//!
//! Idempotent: sources, published titles and the demo viewer are reused when a
//! previous run made them. Ctrl-C stops `telly serve` (it shuts down gracefully)
//! and then this command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::{build, setup, sh};

pub const DEMO_VIEWER: &str = "demo";
pub const DEMO_PASSWORD: &str = "telly-demo";

/// A synthetic title: an ffmpeg lavfi picture, a tone, and a length.
pub struct DemoTitle {
    pub id: &'static str,
    pub title: &'static str,
    pub synopsis: &'static str,
    pub year: u16,
    pub genre: &'static str,
    pub video: &'static str,
    pub audio: &'static str,
    pub seconds: u32,
}

pub const DEMO_TITLES: &[DemoTitle] = &[
    DemoTitle {
        id: "test-card-tonight",
        title: "Test Card Tonight",
        synopsis: "A colour test card with a moving clock, a sweep and a steady 440 Hz tone: the broadcaster's classic, now in a swarm.",
        year: 2026,
        genre: "Documentary",
        video: "testsrc2=size=1280x720:rate=25",
        audio: "sine=frequency=440:sample_rate=48000",
        seconds: 120,
    },
    DemoTitle {
        id: "mandelbrot-voyage",
        title: "Mandelbrot Voyage",
        synopsis: "A slow zoom into the Mandelbrot set over a low 220 Hz drone.",
        year: 2025,
        genre: "Science",
        video: "mandelbrot=size=1280x720:rate=25",
        audio: "sine=frequency=220:sample_rate=48000",
        seconds: 90,
    },
    DemoTitle {
        id: "game-of-life",
        title: "The Game of Life",
        synopsis: "Conway's cellular automaton grows, collides and settles, to a bright 660 Hz beep every second.",
        year: 2024,
        genre: "Drama",
        video: "life=size=1280x720:rate=25:mold=10:ratio=0.2:death_color=#202040:life_color=#c0ffa0,format=yuv420p",
        audio: "sine=frequency=660:beep_factor=2:sample_rate=48000",
        seconds: 60,
    },
    DemoTitle {
        id: "colour-bars",
        title: "Colour Bars at Midnight",
        synopsis: "SMPTE HD colour bars and a 1 kHz line-up tone, for those who stay up after closedown.",
        year: 2023,
        genre: "Comedy",
        video: "smptehdbars=size=1280x720:rate=25",
        audio: "sine=frequency=1000:sample_rate=48000",
        seconds: 75,
    },
];

/// Renders a demo title's source file with ffmpeg's synthetic sources.
pub fn make_source(t: &DemoTitle, dir: &Path) -> Result<PathBuf> {
    let out = dir.join(format!("{}.mkv", t.id));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!("{}.partial.mkv", t.id));
    sh::run(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", t.video, "-f", "lavfi", "-i", t.audio])
            .args(["-t", &t.seconds.to_string()])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18"])
            .args(["-c:a", "flac"])
            .arg(&partial),
    )?;
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

fn published_ids(telly: &Path, data_dir: &Path) -> Result<Vec<String>> {
    let listing = sh::output(
        Command::new(telly)
            .args(["title", "list", "--data-dir"])
            .arg(data_dir),
    )?;
    Ok(listing
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect())
}

pub fn run(listen: &str) -> Result<()> {
    setup::ensure_all()?;
    let built = build::all(build::Profile::Release)?;
    let data_dir = sh::repo_root().join("demo-data");
    let sources = data_dir.join("sources");

    {
        let _t = sh::step("demo: titles");
        let published = published_ids(&built.telly, &data_dir)?;
        for t in DEMO_TITLES {
            if published.iter().any(|id| id == t.id) {
                eprintln!("    ok: {} is published", t.id);
                continue;
            }
            eprintln!(
                "    rendering the source of {:?} ({} s)",
                t.title, t.seconds
            );
            let source = make_source(t, &sources)?;
            sh::run(
                Command::new(&built.telly)
                    .arg("publish")
                    .arg(&source)
                    .args(["--id", t.id, "--title", t.title, "--synopsis", t.synopsis])
                    .args(["--year", &t.year.to_string(), "--genre", t.genre])
                    .arg("--data-dir")
                    .arg(&data_dir),
            )?;
        }
    }
    {
        let _t = sh::step("demo: viewer account");
        let users = sh::output(
            Command::new(&built.telly)
                .args(["user", "list", "--data-dir"])
                .arg(&data_dir),
        )?;
        if users.lines().any(|l| l.trim() == DEMO_VIEWER) {
            eprintln!("    ok: viewer {DEMO_VIEWER} exists");
        } else {
            sh::run(
                Command::new(&built.telly)
                    .args(["user", "add", DEMO_VIEWER, "--password", DEMO_PASSWORD])
                    .arg("--data-dir")
                    .arg(&data_dir),
            )?;
        }
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let server_pid = Arc::new(AtomicU32::new(0));
    {
        let flag = interrupted.clone();
        let server_pid = server_pid.clone();
        // A terminal's Ctrl-C reaches `telly serve` too, but a SIGINT or SIGTERM
        // sent to this process alone must not leave the server running: pass it
        // on as SIGTERM, which `telly serve` answers with a graceful shutdown.
        ctrlc::set_handler(move || {
            flag.store(true, Ordering::SeqCst);
            let pid = server_pid.load(Ordering::SeqCst);
            if pid != 0 {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    let mut server = Command::new(&built.telly)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(&data_dir)
        .arg("--web-dir")
        .arg(&built.web_dir)
        // Two windows on this one machine reach each other over loopback only.
        .arg("--loopback-ice")
        .spawn()
        .context("starting telly serve")?;
    server_pid.store(server.id(), Ordering::SeqCst);
    eprintln!(
        "\n  Telly is on http://{listen}/\n  Sign in as `{DEMO_VIEWER}` with password `{DEMO_PASSWORD}`.\n\n  To see the swarm, start two Chromiums, each with a profile of its own (two\n  windows of one profile share their stored blocks), and play the same title:\n    chromium --user-data-dir=$(mktemp -d) --allow-loopback-in-peer-connection http://{listen}/\n  (Chromium uses loopback WebRTC addresses only with that flag and a media\n  permission: each asks once for the microphone and stops the track at once). The stats panel under the second player shows most of its blocks\n  coming from the first.\n  Ctrl-C stops it.\n"
    );
    let status = server.wait()?;
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("stopped");
        return Ok(());
    }
    if !status.success() {
        bail!("telly serve exited: {status}");
    }
    Ok(())
}
