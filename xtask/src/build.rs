//! Building what the demo and the end-to-end tests run: the web app (trunk) and `telly`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::sh;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Release,
}

pub struct Built {
    pub telly: PathBuf,
    pub web_dir: PathBuf,
}

pub fn all(profile: Profile) -> Result<Built> {
    let web_dir = web()?;
    let telly = telly(profile)?;
    Ok(Built { telly, web_dir })
}

/// The web app, always optimised: a debug Leptos wasm is many megabytes and slow.
pub fn web() -> Result<PathBuf> {
    let _t = sh::step("build: web app (trunk, release)");
    let trunk = sh::which("trunk").unwrap_or_else(|| "trunk".into());
    sh::run(
        Command::new(trunk)
            .args(["build", "--release"])
            .env("TRUNK_SKIP_VERSION_CHECK", "true")
            .env("PATH", sh::path_with_cargo_bin()),
    )?;
    Ok(sh::repo_root().join("dist"))
}

pub fn telly(profile: Profile) -> Result<PathBuf> {
    let _t = sh::step("build: telly binary");
    let mut cmd = sh::cargo();
    cmd.args(["build", "-p", "telly-provider", "--bin", "telly"]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    sh::run(&mut cmd)?;
    let dir = if profile == Profile::Release {
        "release"
    } else {
        "debug"
    };
    Ok(target_dir().join(dir).join("telly"))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sh::repo_root().join("target"))
}
