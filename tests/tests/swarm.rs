//! Tabs share a title over WebRTC data channels: a swarm of headless Chromium
//! instances (one process and profile each) joining at staggered times all play
//! to the end while the origin sends the title about once; peers without a
//! valid grant are refused; a cheating peer is banned; a vanishing one costs a
//! re-request.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use telly_e2e::provider::TITLE_ID;
use telly_e2e::{Browser, Provider, artifacts_dir, sign_in};
use telly_proto::api::ClientConfig;

const SWARM: &str = "window.__telly_swarm";
const NO_MEDIA_ERROR: &str = "document.querySelector('video#player') && document.querySelector('video#player').error === null && window.__telly && window.__telly.player.phase !== 'failed'";
const AT_THE_END: &str = "window.__telly && window.__telly.player.duration_s > 0 && (document.querySelector('video#player').ended || window.__telly.current_time >= window.__telly.player.duration_s - 0.3)";
/// Long enough for a 40 s title to play through on a loaded 2-core machine.
const TO_THE_END: Duration = Duration::from_secs(150);

async fn title_bytes(provider: &Provider) -> Result<u64> {
    let config: ClientConfig = reqwest::get(provider.url("/api/config"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(provider
        .manifest()
        .await?
        .verify(&config.provider_key)?
        .total_bytes())
}

async fn origin_bytes(provider: &Provider) -> Result<u64> {
    Ok(provider
        .metrics()
        .await?
        .titles
        .get(TITLE_ID)
        .map_or(0, |t| t.origin_bytes))
}

async fn swarm_state(browser: &Browser) -> Result<Value> {
    browser
        .js(&format!("{SWARM} ?? null"))
        .await
        .context("reading the swarm's state")
}

/// A signed-in tab of its own Chromium, watching the fixture with `query`.
async fn open_tab(provider: &Provider, query: &str) -> Result<Browser> {
    let browser = Browser::launch().await?;
    sign_in(&browser, provider).await?;
    browser
        .goto(&provider.url(&format!("/watch/{TITLE_ID}{query}")))
        .await?;
    Ok(browser)
}

#[tokio::test]
async fn six_staggered_tabs_play_to_the_end_and_the_origin_sends_the_title_about_once() -> Result<()>
{
    let tabs_wanted: usize = std::env::var("TELLY_E2E_TABS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let provider = Provider::start_swarm()?;
    let size = title_bytes(&provider).await?;
    let mut tabs = Vec::new();
    for i in 0..tabs_wanted {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        tabs.push(open_tab(&provider, "").await?);
    }
    for (i, tab) in tabs.iter().enumerate() {
        tab.wait_until_for(&format!("tab {i} at the end"), AT_THE_END, TO_THE_END)
            .await?;
        ensure!(
            tab.js(NO_MEDIA_ERROR).await? == Value::Bool(true),
            "tab {i} had a media error: {}",
            tab.js("JSON.stringify(window.__telly)").await?
        );
    }
    let mut report = Vec::new();
    for (i, tab) in tabs.iter().enumerate() {
        let swarm = swarm_state(tab).await?;
        report.push(swarm.clone());
        if i > 0 {
            ensure!(
                swarm["bytes_from_peers"].as_u64().unwrap_or(0) > 0,
                "tab {i} took nothing from peers: {swarm}"
            );
        }
    }
    let origin = origin_bytes(&provider).await?;
    let ratio = origin as f64 / size as f64;
    std::fs::write(
        artifacts_dir().join("swarm-tabs.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "tabs": tabs_wanted,
            "title_bytes": size,
            "origin_bytes": origin,
            "origin_over_title": ratio,
            "swarm": report,
        }))?,
    )?;
    tabs[tabs_wanted - 1].screenshot("swarm-last-tab").await?;
    ensure!(
        ratio <= 1.5,
        "the origin sent {origin} bytes for a {size}-byte title ({ratio:.2}×) to {tabs_wanted} tabs"
    );
    for tab in tabs {
        tab.close().await?;
    }
    Ok(())
}
