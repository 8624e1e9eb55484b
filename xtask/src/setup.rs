//! Installs what a fresh Debian machine with only rustup lacks, and skips what is
//! there. Versions: trunk is pinned (0.22 needs a newer rustc than the pinned
//! toolchain); wasm-bindgen-cli must equal the `wasm-bindgen` in Cargo.lock, or the
//! generated JS glue and the wasm disagree.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::sh;

pub const TRUNK_VERSION: &str = "0.21.14";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// (command that proves the package is there, Debian package)
const APT_PACKAGES: &[(&str, &str)] = &[
    ("ffmpeg", "ffmpeg"),
    ("ffprobe", "ffmpeg"),
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    ("ip", "iproute2"),
];

pub fn ensure_all() -> Result<()> {
    let _t = sh::step("setup: checking the toolchain and tools");
    ensure_wasm_target()?;
    ensure_apt_packages()?;
    ensure_wasm_bindgen()?;
    ensure_trunk()?;
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = sh::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        eprintln!("    ok: rust target {WASM_TARGET}");
        return Ok(());
    }
    eprintln!("    installing rust target {WASM_TARGET}");
    sh::run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

fn ensure_apt_packages() -> Result<()> {
    let mut missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(cmd, _)| sh::which(cmd).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        eprintln!("    ok: ffmpeg, chromium, chromedriver, iproute2");
        return Ok(());
    }
    if !sh::is_root() {
        bail!(
            "missing Debian packages {missing:?}; install them with `sudo apt-get install {}`",
            missing.join(" ")
        );
    }
    eprintln!("    installing Debian packages: {}", missing.join(" "));
    sh::run(Command::new("apt-get").args(["update", "-q"]))?;
    sh::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The wasm-bindgen version Cargo.lock resolved.
pub fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(sh::repo_root().join("Cargo.lock"))
        .context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return Ok(v.trim_matches('"').to_string());
        }
    }
    bail!("Cargo.lock names no wasm-bindgen package")
}

fn installed_version(tool: &str) -> Option<String> {
    let path = sh::which(tool)?;
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_string)
}

fn ensure_wasm_bindgen() -> Result<()> {
    let want = locked_wasm_bindgen_version()?;
    if installed_version("wasm-bindgen").as_deref() == Some(want.as_str()) {
        eprintln!("    ok: wasm-bindgen-cli {want}");
        return Ok(());
    }
    eprintln!("    building wasm-bindgen-cli {want} from crates.io (a few minutes)");
    // `--locked` fails for this crate here: its lockfile names a version the index lacks.
    sh::run(sh::cargo().args([
        "install",
        "wasm-bindgen-cli",
        "--version",
        &format!("={want}"),
    ]))
}

fn ensure_trunk() -> Result<()> {
    if installed_version("trunk").as_deref() == Some(TRUNK_VERSION) {
        eprintln!("    ok: trunk {TRUNK_VERSION}");
        return Ok(());
    }
    eprintln!("    building trunk {TRUNK_VERSION} from crates.io (several minutes)");
    // Without --locked, a newer cssparser breaks lightningcss; full LTO would
    // double the build for no benefit to us.
    sh::run(
        sh::cargo()
            .args([
                "install",
                "trunk",
                "--locked",
                "--version",
                &format!("={TRUNK_VERSION}"),
            ])
            .env("CARGO_PROFILE_RELEASE_LTO", "off"),
    )
}
