//! The origin: sealed blocks and init segments by hash, posters, and the counters
//! of what was sent.
//!
//! Blocks need no session: they are sealed and content-addressed, so any cache may
//! keep them forever. That is what the headers say.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use telly_proto::Sha256Hash;
use telly_proto::api::Metrics;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::{ApiFailure, AppState};
use crate::catalogue;

pub const BLOCK_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
pub const POSTER_CACHE_CONTROL: &str = "public, max-age=86400";

/// Only the canonical form: 64 lowercase hex digits.
fn parse_block_hash(text: &str) -> Option<Sha256Hash> {
    let canonical = text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

pub async fn block(
    State(state): State<Arc<AppState>>,
    Path(hex): Path<String>,
    request: Request,
) -> Result<Response, ApiFailure> {
    let hash = parse_block_hash(&hex).ok_or_else(|| {
        ApiFailure::bad_request("a block is named by its SHA-256 as 64 lowercase hex digits")
    })?;
    let path = state.blocks.path_of(&hash);
    let unknown = || ApiFailure::not_found(format!("no block {hex}"));
    if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
        return Err(unknown());
    }
    let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex makes a valid header");
    let cache_control = HeaderValue::from_static(BLOCK_CACHE_CONTROL);
    if if_none_match_hits(request.headers(), etag.to_str().expect("ascii")) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    let counted = request.method() == Method::GET;
    // ServeFile streams the file and answers Range and If-Modified-Since itself.
    let mut response = ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(ApiFailure::internal)?
        .map(Body::new);
    if response.status() == StatusCode::NOT_FOUND {
        // Removed between the check above and the open.
        return Err(unknown());
    }
    let success = response.status().is_success();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let sent = success.then(|| {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    });
    if let (true, Some(bytes)) = (counted, sent) {
        count(&state, hash, bytes).await;
    }
    Ok(response)
}

/// Attributes a sent block to its title, reloading the block → title map first if
/// the block is unknown and the catalogue has changed since it was read.
async fn count(state: &Arc<AppState>, hash: Sha256Hash, bytes: u64) {
    let mut owner = state.owners.owner(&hash);
    if owner.is_none() {
        let reloading = Arc::clone(state);
        let refreshed =
            tokio::task::spawn_blocking(move || reloading.refresh_owners_blocking()).await;
        match refreshed {
            Ok(Ok(())) => owner = state.owners.owner(&hash),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not reload the block map"),
            Err(e) => tracing::warn!(error = %e, "could not reload the block map"),
        }
    }
    match owner {
        Some(title) => state.metrics.record(&title, &hash, bytes),
        None => tracing::debug!(block = %hash, "sent a block no title references"),
    }
}

pub async fn poster(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let missing = || ApiFailure::not_found("no poster for this title");
    catalogue::validate_id(&id).map_err(|_| missing())?;
    let jpeg = tokio::fs::read(state.data.poster_path(&id))
        .await
        .map_err(|_| missing())?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(POSTER_CACHE_CONTROL),
            ),
        ],
        jpeg,
    )
        .into_response())
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Json<Metrics> {
    Json(state.metrics.snapshot())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_hashes_name_blocks() {
        let good = Sha256Hash::of(b"x").to_hex();
        assert!(parse_block_hash(&good).is_some());
        for bad in [
            good.to_uppercase(),
            good[1..].to_string(),
            format!("{good}0"),
            "zz".repeat(32),
            String::new(),
            "../../etc/passwd".into(),
        ] {
            assert!(parse_block_hash(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn if_none_match_forms() {
        let etag = "\"abc\"";
        let mut headers = HeaderMap::new();
        assert!(!if_none_match_hits(&headers, etag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match_hits(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abcd\""));
        assert!(!if_none_match_hits(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match_hits(&headers, etag));
    }
}
