//! A viewer signs in, browses, watches, seeks and reloads; bad content is refused.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use telly_e2e::provider::TITLE_ID;
use telly_e2e::{Browser, Provider, artifacts_dir, sign_in};
use telly_proto::Manifest;
use telly_proto::api::ClientConfig;

const STATE: &str = "window.__telly";
const NO_MEDIA_ERROR: &str = "document.querySelector('video#player') && document.querySelector('video#player').error === null && window.__telly && window.__telly.player.phase !== 'failed'";

async fn current_time(browser: &Browser) -> Result<f64> {
    Ok(browser
        .js(&format!("{STATE} ? {STATE}.current_time : 0"))
        .await?
        .as_f64()
        .unwrap_or(0.0))
}

async fn stats(browser: &Browser) -> Result<Value> {
    browser
        .js(&format!("{STATE}.player.stats"))
        .await
        .context("reading the player's stats")
}

async fn verified_manifest(provider: &Provider) -> Result<Manifest> {
    let config: ClientConfig = reqwest::get(provider.url("/api/config"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(provider.manifest().await?.verify(&config.provider_key)?)
}

fn video_track(manifest: &Manifest) -> Result<&telly_proto::Track> {
    manifest
        .tracks
        .iter()
        .find(|t| t.kind == telly_proto::TrackKind::Video)
        .context("a video track")
}

/// Where the provider keeps a block's sealed bytes.
fn block_file(provider: &Provider, block: &telly_proto::BlockEntry) -> std::path::PathBuf {
    let hex = block.sha256.to_hex();
    provider.data_dir.join("blocks").join(&hex[..2]).join(&hex)
}

#[tokio::test]
async fn watch_seek_and_reload_play_from_the_store() -> Result<()> {
    let provider = Provider::start()?;
    let browser = Browser::launch().await?;
    sign_in(&browser, &provider).await?;
    browser.screenshot("catalogue").await?;

    browser
        .click(&format!(".title-card[data-title-id='{TITLE_ID}']"))
        .await?;
    browser
        .wait_until("the title page", "document.querySelector('#play-button')")
        .await?;
    browser.screenshot("title").await?;
    let clicked = Instant::now();
    browser.click("#play-button").await?;
    browser
        .wait_until(
            "the first frame",
            &format!("{STATE} && {STATE}.current_time > 0"),
        )
        .await?;
    let ttff = clicked.elapsed().as_secs_f64();
    std::fs::write(
        artifacts_dir().join("ttff.json"),
        format!("{{\"name\":\"ttff-origin-loopback\",\"unit\":\"s\",\"value\":{ttff:.3}}}\n"),
    )?;
    println!("time to first frame (origin, loopback, from the Play click): {ttff:.2} s");

    browser
        .wait_until("10 s of playback", &format!("{STATE}.current_time > 10"))
        .await?;
    ensure!(
        browser.js(NO_MEDIA_ERROR).await? == Value::Bool(true),
        "a media error during playback: {}",
        browser.js(&format!("JSON.stringify({STATE})")).await?
    );
    browser.screenshot("player").await?;

    let duration = browser.js(&format!("{STATE}.player.duration_s")).await?;
    let middle = duration.as_f64().context("duration")? / 2.0;
    browser
        .js(&format!(
            "(document.querySelector('video#player').currentTime = {middle}, true)"
        ))
        .await?;
    browser
        .wait_until(
            "playback resuming after the seek",
            &format!("{STATE}.current_time > {} && !{STATE}.paused", middle + 3.0),
        )
        .await?;
    ensure!(
        browser.js(NO_MEDIA_ERROR).await? == Value::Bool(true),
        "a media error after the seek"
    );
    let resumed_at = current_time(&browser).await?;
    ensure!(
        resumed_at < middle + 15.0,
        "after seeking to {middle} s playback is at {resumed_at} s"
    );
    browser.screenshot("player-after-seek").await?;

    let before_reload = provider.metrics().await?;
    let title = before_reload
        .titles
        .get(TITLE_ID)
        .context("metrics for the title")?;
    ensure!(title.origin_blocks > 0, "the origin sent nothing?");
    browser.client.refresh().await?;
    browser
        .wait_until(
            "playback after the reload",
            &format!("{STATE} && {STATE}.current_time > 4"),
        )
        .await?;
    let after = stats(&browser).await?;
    ensure!(
        after["from_store"].as_u64().unwrap_or(0) > 0,
        "nothing was opened from IndexedDB after the reload: {after}"
    );
    let after_reload = provider.metrics().await?;
    let title = after_reload.titles.get(TITLE_ID).context("metrics")?;
    let refetched: Vec<_> = title
        .block_fetches
        .iter()
        .filter(|(_, n)| **n > 1)
        .collect();
    ensure!(
        refetched.is_empty(),
        "blocks fetched from the origin more than once: {refetched:?}"
    );
    browser.close().await
}

/// How long Chromium keeps playing audio after video underflows before it stalls.
const CHROMIUM_VIDEO_UNDERFLOW_S: f64 = 3.0;

#[tokio::test]
async fn a_corrupt_block_at_the_origin_is_refused_and_never_appended() -> Result<()> {
    let provider = Provider::start()?;
    let manifest = verified_manifest(&provider).await?;
    let video = video_track(&manifest)?;
    let victim = &video.blocks[2];
    let hex = victim.sha256.to_hex();
    let path = block_file(&provider, victim);
    let mut bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes)?;

    let browser = Browser::launch().await?;
    sign_in(&browser, &provider).await?;
    browser
        .goto(&provider.url(&format!("/watch/{TITLE_ID}")))
        .await?;
    browser
        .wait_until(
            "the corrupt block's rejection",
            &format!("{STATE} && {STATE}.player.stats.rejected_blocks.includes('{hex}')"),
        )
        .await?;
    // Let the player retry and go on as far as it can.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let s = stats(&browser).await?;
    let appended: Vec<&str> = s["appended_blocks"]
        .as_array()
        .context("appended_blocks")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        !appended.contains(&hex.as_str()),
        "the corrupt block reached the decoder"
    );
    ensure!(
        appended.contains(&video.blocks[1].sha256.to_hex().as_str()),
        "the good blocks before it were not played: {s}"
    );
    // Chromium lets audio play on for up to 3 s when only video runs dry (its
    // renderer's video-underflow threshold), so the picture freezes at the gap
    // and playback stops at most 3 s later; it must then stay stopped, not skip.
    let played = current_time(&browser).await?;
    let limit = (victim.start_ms as f64) / 1000.0 + CHROMIUM_VIDEO_UNDERFLOW_S + 0.5;
    ensure!(
        played <= limit,
        "playback went to {played} s, past the corrupt block at {} s",
        victim.start_ms as f64 / 1000.0
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let later = current_time(&browser).await?;
    ensure!(
        (later - played).abs() < 0.05,
        "playback went on from {played} s to {later} s without the corrupt block"
    );
    let metrics = provider.metrics().await?;
    let fetches = metrics.titles[TITLE_ID]
        .block_fetches
        .get(&hex)
        .copied()
        .unwrap_or(0);
    ensure!(
        fetches >= 2,
        "the corrupt block was not fetched again after its rejection ({fetches} fetches)"
    );
    browser.screenshot("corrupt-block").await?;
    browser.close().await
}

#[tokio::test]
async fn a_video_block_the_playhead_passed_without_leaves_no_frozen_picture() -> Result<()> {
    // The origin loses one video block: the player cannot get it, Chromium's
    // audio clock carries the playhead past the hole into media it holds, and
    // its video decoder then waits at the hole for ever unless the player
    // restarts decoding where the playhead is.
    let provider = Provider::start()?;
    let manifest = verified_manifest(&provider).await?;
    let lost = &video_track(&manifest)?.blocks[2];
    let path = block_file(&provider, lost);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;

    let browser = Browser::launch().await?;
    sign_in(&browser, &provider).await?;
    browser
        .goto(&provider.url(&format!("/watch/{TITLE_ID}")))
        .await?;
    let past = (lost.start_ms + lost.duration_ms) as f64 / 1000.0 + 6.0;
    browser
        .wait_until(
            "playback well past the lost block",
            &format!("{STATE} && {STATE}.current_time > {past}"),
        )
        .await?;
    let s = stats(&browser).await?;
    ensure!(
        s["reseeks"].as_u64().unwrap_or(0) >= 1,
        "playback went on without a restart of decoding: {s}"
    );
    ensure!(
        browser.js(NO_MEDIA_ERROR).await? == Value::Bool(true),
        "a media error: {s}"
    );
    browser.close().await
}

#[tokio::test]
async fn a_manifest_signed_by_another_key_is_refused() -> Result<()> {
    // Without its key file the provider makes a new key pair on start: the stored
    // manifests are then signed by a key that is no longer the provider's.
    let provider = Provider::start_with(|data| {
        std::fs::remove_file(data.join("provider.key")).context("removing provider.key")
    })?;
    let browser = Browser::launch().await?;
    sign_in(&browser, &provider).await?;
    browser
        .goto(&provider.url(&format!("/watch/{TITLE_ID}")))
        .await?;
    let message = browser
        .wait_until(
            "the player's refusal",
            &format!("{STATE} && {STATE}.player.phase === 'failed' && {STATE}.player.message"),
        )
        .await?;
    let shown = browser
        .wait_until(
            "the visible error",
            "document.querySelector('#player-error-message') && document.querySelector('#player-error-message').innerText",
        )
        .await?;
    println!("refused with: {message} / shown: {shown}");
    let text = shown.as_str().unwrap_or_default().to_lowercase();
    ensure!(
        text.contains("sign") || text.contains("manifest"),
        "the error shown does not say what is wrong: {shown}"
    );
    let s = stats(&browser).await?;
    ensure!(s["manifest_verified"] == Value::Bool(false), "{s}");
    ensure!(
        s["appended_blocks"].as_array().is_none_or(Vec::is_empty),
        "blocks were appended for a forged manifest: {s}"
    );
    let metrics = provider.metrics().await?;
    let sent = metrics.titles.get(TITLE_ID).map_or(0, |t| t.origin_bytes);
    ensure!(sent == 0, "the origin sent {sent} bytes of a refused title");
    browser.screenshot("forged-manifest").await?;
    browser.close().await
}

#[tokio::test]
async fn no_licence_without_a_session() -> Result<()> {
    let provider = Provider::start()?;
    let anonymous = reqwest::Client::new();
    for path in ["licence", "clearkey"] {
        let url = provider.url(&format!("/api/titles/{TITLE_ID}/{path}"));
        let status = anonymous
            .post(&url)
            .json(&serde_json::json!({"kids": [], "type": "temporary"}))
            .send()
            .await?
            .status();
        ensure!(status == 401, "{path} without a session answered {status}");
        let status = anonymous
            .post(&url)
            .header("cookie", "telly_session=forged0000000000000000000000000000")
            .json(&serde_json::json!({"kids": [], "type": "temporary"}))
            .send()
            .await?
            .status();
        ensure!(
            status == 401,
            "{path} with a forged session answered {status}"
        );
    }
    let viewer = provider.signed_in_client().await?;
    let licence: telly_proto::Licence = viewer
        .post(provider.url(&format!("/api/titles/{TITLE_ID}/licence")))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let manifest = verified_manifest(&provider).await?;
    ensure!(licence.key_id == manifest.key_id, "licence for another key");
    // The block key opens the title's sealed blocks.
    let block = &manifest.tracks[0].blocks[0];
    let sealed = reqwest::get(provider.url(&format!("/blocks/{}", block.sha256)))
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    ensure!(
        telly_proto::Sha256Hash::of(&sealed) == block.sha256,
        "the origin served other bytes"
    );
    // Signing out ends the licence too.
    viewer.delete(provider.url("/api/session")).send().await?;
    let status = viewer
        .post(provider.url(&format!("/api/titles/{TITLE_ID}/licence")))
        .send()
        .await?
        .status();
    ensure!(status == 401, "licence after sign-out answered {status}");
    Ok(())
}
