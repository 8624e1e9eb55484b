//! The built web app (Trunk's `dist`): files as they are, `index.html` for every
//! other path so that client-side routes survive a reload.
//!
//! Caching: Trunk puts a content hash in the names of the files it builds
//! (`app-0123456789abcdef_bg.wasm`), so those are immutable; everything else, and
//! above all `index.html`, which names the current hashes, is revalidated each time.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;

const FINGERPRINTED: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

pub fn service(state: &Arc<AppState>) -> Router {
    let dir = state.web_dir.clone();
    let index = dir.join("index.html");
    let missing_index = Arc::new(index.clone());
    Router::new()
        .fallback_service(ServeDir::new(&dir).fallback(ServeFile::new(&index)))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let missing_index = Arc::clone(&missing_index);
            async move { cache_policy(request, next, &missing_index).await }
        }))
}

async fn cache_policy(request: Request, next: Next, index: &Path) -> Response {
    let fingerprinted = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .is_some_and(is_fingerprinted);
    let mut response = next.run(request).await;
    if response.status() == StatusCode::NOT_FOUND && !index.is_file() {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "The web app is not built: no {} (build it with trunk, or start telly serve with --web-dir).\n",
                index.display()
            ),
        )
            .into_response();
    }
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let policy = if fingerprinted && !is_html && response.status().is_success() {
        FINGERPRINTED
    } else {
        REVALIDATE
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    response.map(Body::new)
}

/// Whether a file name carries a Trunk content hash: `-` and 16 hex digits, then
/// `.` or `_`.
fn is_fingerprinted(name: &str) -> bool {
    name.match_indices('-').any(|(at, _)| {
        let rest = &name.as_bytes()[at + 1..];
        rest.len() > 16
            && rest[..16].iter().all(u8::is_ascii_hexdigit)
            && matches!(rest[16], b'.' | b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_trunk_hashes() {
        assert!(is_fingerprinted("telly-web-0123456789abcdef_bg.wasm"));
        assert!(is_fingerprinted("telly-web-0123456789abcdef.js"));
        assert!(is_fingerprinted("style-fedcba9876543210.css"));
        assert!(!is_fingerprinted("index.html"));
        assert!(!is_fingerprinted("telly-web.js"));
        assert!(!is_fingerprinted("a-0123456789abcde.js"));
        assert!(!is_fingerprinted("a-0123456789abcdef"));
    }
}
