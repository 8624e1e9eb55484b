//! `cargo xtask test`: every check the project has, in the order that fails fastest.
//!
//! The end-to-end tests run inside a network namespace with only `lo` up, made
//! here and removed afterwards, so nothing they start can reach another host
//! (DESIGN.md's testing rules). Where a namespace can't be made (not root), they
//! run on the host, where every server they start binds 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::{build, setup, sh};

pub fn run(lint: bool, e2e_filter: Option<&str>) -> Result<()> {
    setup::ensure_all()?;
    if lint {
        let _t = sh::step("lint: rustfmt and clippy (native and wasm32)");
        sh::run(sh::cargo().args(["fmt", "--all", "--", "--check"]))?;
        sh::run(sh::cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "telly-web",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        sh::run(sh::cargo().args([
            "clippy",
            "-p",
            "telly-web",
            "--target",
            "wasm32-unknown-unknown",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    {
        let _t = sh::step("test: native unit, property and integration tests");
        sh::run(sh::cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "telly-web",
            "--exclude",
            "telly-e2e",
        ]))?;
        // The web app's pure parts (the player's plan, formatting) are
        // tested natively; its browser tests run in the next step.
        sh::run(sh::cargo().args(["test", "-p", "telly-web", "--lib"]))?;
    }
    {
        let _t = sh::step("test: telly-web in headless Chromium (wasm-bindgen-test)");
        let scratch = sh::BrowserScratch::new()?;
        sh::run(
            scratch
                .apply(sh::cargo().args([
                    "test",
                    "-p",
                    "telly-web",
                    "--target",
                    "wasm32-unknown-unknown",
                ]))?
                .env("WASM_BINDGEN_TEST_TIMEOUT", "120"),
        )?;
    }
    let built = build::all(build::Profile::Dev)?;
    let _t = sh::step("test: end to end (telly serve + headless Chromium over WebDriver)");
    let binaries = e2e_test_binaries()?;
    let artifacts = sh::repo_root().join("target").join("test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let netns = Netns::create();
    let scratch = sh::BrowserScratch::new()?;
    for bin in binaries {
        let mut cmd = match &netns {
            Some(ns) => ns.exec(&bin),
            None => Command::new(&bin),
        };
        scratch
            .apply(&mut cmd)?
            .env("TELLY_BIN", &built.telly)
            .env("TELLY_WEB_DIR", &built.web_dir)
            .env("TELLY_ARTIFACTS", &artifacts)
            .args(["--test-threads", "1"]);
        if let Some(f) = e2e_filter {
            cmd.arg(f);
        }
        sh::run(&mut cmd)?;
    }
    eprintln!("    screenshots and logs: {}", artifacts.display());
    Ok(())
}

/// Builds the e2e test binaries and returns their paths, so they can run inside
/// the namespace without cargo (which might want the network).
fn e2e_test_binaries() -> Result<Vec<PathBuf>> {
    let out = sh::output(sh::cargo().args([
        "test",
        "-p",
        "telly-e2e",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && let Some(exe) = msg["executable"].as_str()
        {
            bins.push(PathBuf::from(exe));
        }
    }
    if bins.is_empty() {
        bail!("cargo built no e2e test binary");
    }
    Ok(bins)
}

/// A network namespace with only loopback, removed on drop.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn create() -> Option<Self> {
        if !sh::is_root() {
            eprintln!("    not root: end-to-end tests run on the host, loopback only");
            return None;
        }
        let name = format!("telly-e2e-{}", std::process::id());
        let made = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("ip")
                .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
        if made {
            eprintln!("    network namespace {name}: only `lo`");
            Some(Self { name })
        } else {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            eprintln!("    could not make a network namespace: running on the host, loopback only");
            None
        }
    }

    pub(crate) fn exec(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
