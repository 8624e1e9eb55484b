//! Running commands with a visible trail: every step says what it runs and how long it took.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Prints a step header and returns a guard that prints the elapsed time when dropped.
pub fn step(what: &str) -> StepTimer {
    eprintln!("\n==> {what}");
    StepTimer {
        what: what.to_string(),
        started: Instant::now(),
    }
}

pub struct StepTimer {
    what: String,
    started: Instant,
}

impl Drop for StepTimer {
    fn drop(&mut self) {
        eprintln!(
            "    ({}: {:.1} s)",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", describe(cmd));
    }
    Ok(())
}

pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("    $ {}", describe(cmd));
    cmd.status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Runs `cmd` and returns its stdout; fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first `name` on PATH or in cargo's bin directory.
pub fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(cargo_bin_dir());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory first, where `cargo install` put trunk,
/// wasm-bindgen and wasm-bindgen-test-runner (a fresh shell may not have it).
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(cargo_bin_dir()).chain(std::env::split_paths(&rest)))
        .unwrap_or(rest)
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env("PATH", path_with_cargo_bin());
    cmd
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

/// A TMPDIR for Chromium and chromedriver under `target/`, emptied when dropped.
///
/// wasm-bindgen-test-runner ends chromedriver without closing its session, and
/// Chromium then leaves its whole profile (about 66 MB) behind in TMPDIR: a
/// test run left some 140 of them in /tmp, enough to fill a CI disk. With
/// TMPDIR pointed here they go with the run, whatever way it ends.
pub struct BrowserScratch {
    dir: PathBuf,
}

impl BrowserScratch {
    pub fn new() -> Result<Self> {
        let dir = repo_root()
            .join("target")
            .join("browser-tmp")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not make {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Points `cmd`'s browsers at Debian's chromedriver and at this scratch folder.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> Result<&'c mut Command> {
        let chromedriver =
            which("chromedriver").context("chromedriver is not installed (cargo xtask setup)")?;
        Ok(cmd
            .env("CHROMEDRIVER", chromedriver)
            .env("TMPDIR", &self.dir))
    }
}

impl Drop for BrowserScratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
