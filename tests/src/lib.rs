//! The end-to-end harness: a real `telly serve` over a real data directory, real
//! ffmpeg output, real headless Chromium driven over WebDriver.
//!
//! Everything binds 127.0.0.1. `cargo xtask test` runs the test binaries inside a
//! network namespace that has only `lo` and passes the paths below by environment:
//! `TELLY_BIN` (the `telly` binary), `TELLY_WEB_DIR` (trunk's dist),
//! `TELLY_ARTIFACTS` (screenshots and measurements), `CHROMEDRIVER`.

pub mod browser;
pub mod provider;

use std::path::PathBuf;
use std::time::Duration;

pub use browser::Browser;
pub use provider::{Provider, PublishedFixture};

pub const VIEWER: &str = "e2e-viewer";
pub const PASSWORD: &str = "correct horse battery staple";

/// How long any single wait in a test may take before the test fails: generous,
/// because two cores run Chromium, the server and the decoder at once.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn env_path(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

pub fn artifacts_dir() -> PathBuf {
    let dir = env_path("TELLY_ARTIFACTS", "target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Signs `browser` in as the fixture's viewer and waits for the catalogue.
pub async fn sign_in(browser: &Browser, provider: &Provider) -> anyhow::Result<()> {
    browser.goto(&provider.url("/signin")).await?;
    browser.type_into("#signin-name", VIEWER).await?;
    browser.type_into("#signin-password", PASSWORD).await?;
    browser.click("#signin-submit").await?;
    browser
        .wait_until(
            "the catalogue",
            "document.querySelectorAll('#catalogue .title-card').length",
        )
        .await?;
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
