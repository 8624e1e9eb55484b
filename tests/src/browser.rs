//! Headless Debian Chromium driven over WebDriver (chromedriver), with the flags
//! DESIGN.md lists and a fresh profile per browser.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{PATIENCE, artifacts_dir, free_port};

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    // Chromium gathers loopback ICE candidates only for a page holding a media
    // permission; these grant it without a prompt and without real devices.
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--window-size=1280,800",
];

/// One Chromium with its own chromedriver and profile; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn launch() -> Result<Self> {
        let profile = tempfile::tempdir()?;
        let port = free_port();
        let chromedriver = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/chromedriver".into());
        let log = std::fs::File::create(artifacts_dir().join(format!("chromedriver-{port}.log")))?;
        // Its own process group: Chromium and its helpers join it, so that
        // dropping a browser (a failed test) ends all of them, not only the
        // driver (Chromium would otherwise live on as an orphan).
        let driver = Command::new(&chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.context("navigating")
    }

    /// Evaluates a JavaScript expression and returns its JSON value.
    pub async fn js(&self, expression: &str) -> Result<Value> {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .with_context(|| format!("evaluating {expression}"))
    }

    /// Polls `expression` until it is truthy; fails after [`PATIENCE`] with `what`.
    pub async fn wait_until(&self, what: &str, expression: &str) -> Result<Value> {
        self.wait_until_for(what, expression, PATIENCE).await
    }

    pub async fn wait_until_for(
        &self,
        what: &str,
        expression: &str,
        patience: Duration,
    ) -> Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.js(expression).await?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if started.elapsed() > patience {
                let state = self
                    .js("JSON.stringify(window.__telly ?? null)")
                    .await
                    .unwrap_or(Value::Null);
                self.screenshot(&format!("timeout-{}", slug(what)))
                    .await
                    .ok();
                bail!("timed out waiting for {what} (`{expression}`); player state: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("finding {css}"))?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))
    }

    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("finding {css}"))?
            .send_keys(text)
            .await
            .with_context(|| format!("typing into {css}"))
    }

    /// Saves a PNG under the artifacts directory and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn close(self) -> Result<()> {
        let closed = self.client.clone().close().await;
        drop(self);
        closed.context("closing the browser")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group is the driver's own (see `launch`), so this ends exactly
        // the processes this browser started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
