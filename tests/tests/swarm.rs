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
    let tabs_wanted = 6;
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
    // Tabs report every 10 s; the last ones have played 40 s by now.
    let reported = provider.metrics().await?.titles[TITLE_ID].peer_bytes_reported;
    ensure!(
        reported > 0,
        "no tab reported its peer bytes to the provider"
    );
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

/// Polls the tab's swarm state until `condition` (a JS expression over `s`, the
/// state) holds.
async fn wait_for_swarm(browser: &Browser, what: &str, condition: &str) -> Result<Value> {
    browser
        .wait_until(
            what,
            &format!("(() => {{ const s = {SWARM}; return !!s && ({condition}); }})()"),
        )
        .await
}

async fn player_stats(browser: &Browser) -> Result<Value> {
    browser
        .js("window.__telly.player.stats")
        .await
        .context("reading the player's stats")
}

#[tokio::test]
async fn tabs_without_a_valid_grant_are_refused_by_signalling_and_by_peers() -> Result<()> {
    const OTHER: &str = "e2e-bars-again";
    let fixture = telly_e2e::PublishedFixture::get();
    let provider = Provider::start_with_args(
        |dir| fixture.publish_again(dir, OTHER),
        &["--loopback-ice", "--test-faults"],
    )?;
    let honest = open_tab(&provider, "").await?;
    wait_for_swarm(&honest, "the honest tab joined", "s.joined").await?;

    // Signalling refuses a join without a grant, and one with another title's.
    let no_grant = open_tab(&provider, "?fault=no-grant").await?;
    wait_for_swarm(
        &no_grant,
        "signalling refusing a join without a grant",
        "(s.refused || '').startsWith('NoGrant')",
    )
    .await?;
    let other_title = open_tab(&provider, &format!("?fault=grant-of={OTHER}")).await?;
    wait_for_swarm(
        &other_title,
        "signalling refusing another title's grant",
        "(s.refused || '').startsWith('WrongSwarm')",
    )
    .await?;

    // Peers refuse what signalling cannot see: the grant in the handshake.
    let forged = open_tab(&provider, "?fault=forged-grant").await?;
    let foreign = open_tab(&provider, &format!("?fault=peer-grant-of={OTHER}")).await?;
    wait_for_swarm(&forged, "the forged tab admitted by signalling", "s.joined").await?;
    wait_for_swarm(
        &foreign,
        "the foreign tab admitted by signalling",
        "s.joined",
    )
    .await?;
    wait_for_swarm(
        &honest,
        "the honest tab refusing both handshakes",
        "s.peers_refused >= 2",
    )
    .await?;

    // Refused tabs still play, from the origin alone.
    for (name, tab) in [
        ("no grant", &no_grant),
        ("another title's grant", &other_title),
        ("a forged grant", &forged),
        ("another title's grant to peers", &foreign),
    ] {
        tab.wait_until(
            &format!("the tab with {name} playing"),
            "window.__telly && window.__telly.current_time > 2",
        )
        .await?;
        let swarm = swarm_state(tab).await?;
        ensure!(
            swarm["bytes_from_peers"] == 0,
            "the tab with {name} got bytes from peers: {swarm}"
        );
    }
    let swarm = swarm_state(&honest).await?;
    ensure!(
        swarm["bytes_uploaded"] == 0,
        "the honest tab served a refused peer: {swarm}"
    );
    for tab in [honest, no_grant, other_title, forged, foreign] {
        tab.close().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_peer_serving_corrupt_chunks_is_banned_and_playback_goes_on() -> Result<()> {
    let provider = Provider::start_swarm()?;
    let cheat = open_tab(&provider, "?fault=corrupt-uploads").await?;
    cheat
        .wait_until(
            "the cheat playing (holding the first blocks)",
            "window.__telly && window.__telly.current_time > 4",
        )
        .await?;
    let viewer = open_tab(&provider, "").await?;
    wait_for_swarm(
        &viewer,
        "the viewer banning the cheat",
        "s.peers_banned >= 1",
    )
    .await?;
    viewer
        .wait_until_for("the viewer at the end", AT_THE_END, TO_THE_END)
        .await?;
    ensure!(
        viewer.js(NO_MEDIA_ERROR).await? == Value::Bool(true),
        "the viewer had a media error"
    );
    let stats = player_stats(&viewer).await?;
    ensure!(
        stats["verify_failures"] == 0,
        "a corrupt block reached the player: {stats}"
    );
    let cheat_swarm = swarm_state(&cheat).await?;
    ensure!(
        cheat_swarm["bytes_uploaded"].as_u64().unwrap_or(0) > 0,
        "the cheat never served, so nothing was tested: {cheat_swarm}"
    );
    let swarm = swarm_state(&viewer).await?;
    ensure!(
        swarm["peers"] == 0,
        "the viewer still talks to the cheat: {swarm}"
    );
    viewer.close().await?;
    cheat.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_peer_vanishing_mid_transfer_costs_a_re_request() -> Result<()> {
    let provider = Provider::start_swarm()?;
    let size = title_bytes(&provider).await?;
    let first = open_tab(&provider, "").await?;
    first
        .wait_until(
            "the first tab playing",
            "window.__telly && window.__telly.current_time > 4",
        )
        .await?;
    let second = open_tab(&provider, "").await?;
    wait_for_swarm(
        &second,
        "the second tab taking blocks from the first",
        "s.bytes_from_peers > 0",
    )
    .await?;
    // Gone without a goodbye from the engine: the browser closes.
    first.close().await?;
    second
        .wait_until_for("the second tab at the end", AT_THE_END, TO_THE_END)
        .await?;
    ensure!(
        second.js(NO_MEDIA_ERROR).await? == Value::Bool(true),
        "the second tab had a media error"
    );
    let swarm = swarm_state(&second).await?;
    let from_peers = swarm["bytes_from_peers"].as_u64().unwrap_or(0);
    ensure!(
        from_peers < size,
        "the first tab had sent everything before it vanished, so nothing was tested: {swarm}"
    );
    ensure!(
        swarm["bytes_from_origin"].as_u64().unwrap_or(0) > 0 && swarm["peers"] == 0,
        "the rest should have come from the origin: {swarm}"
    );
    second.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_tab_keeps_sharing_after_the_player_a_reload_and_a_signalling_restart() -> Result<()> {
    const SHARED_AND_JOINED: &str = "(window.__telly_shared || []).some(t => t.title_id === 'e2e-bars' && t.swarm.joined && t.swarm.signalling_connected)";
    let mut provider = Provider::start_swarm()?;
    let sharer = open_tab(&provider, "").await?;
    sharer
        .wait_until(
            "the sharer having watched a while",
            "window.__telly && window.__telly.current_time > 6",
        )
        .await?;
    // Leaving the player (here: a fresh page on the catalogue) keeps the title
    // shared: the new page finds what the tab holds and joins to serve it.
    sharer.goto(&provider.url("/")).await?;
    sharer
        .wait_until("the reloaded tab sharing the title", SHARED_AND_JOINED)
        .await?;
    // Signalling goes away and comes back: the sharer must reconnect and re-join
    // by itself, or the viewer below could not find it.
    provider.restart()?;
    sharer
        .wait_until(
            "the sharer noticing signalling went away",
            "!(window.__telly_shared || []).some(t => t.swarm.signalling_connected)",
        )
        .await?;
    sharer
        .wait_until("the sharer back in the swarm", SHARED_AND_JOINED)
        .await?;
    let viewer = open_tab(&provider, "").await?;
    wait_for_swarm(
        &viewer,
        "the viewer taking blocks from the sharing tab",
        "s.bytes_from_peers > 0",
    )
    .await?;
    viewer
        .wait_until(
            "the viewer playing",
            "window.__telly && window.__telly.current_time > 2",
        )
        .await?;
    viewer.close().await?;
    sharer.close().await?;
    Ok(())
}
