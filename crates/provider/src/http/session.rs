//! The session cookie and the extractor that makes a route need a signed-in viewer.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};

use super::{ApiFailure, AppState};
use crate::accounts::{self, SESSION_LIFETIME_SECS, SessionToken};
use crate::unix_now;

pub const SESSION_COOKIE: &str = "telly_session";

/// A signed-in viewer. Taking it as a handler argument makes the route answer 401
/// to anyone without a valid, unexpired session.
#[derive(Debug)]
pub struct Viewer {
    pub name: String,
    pub token: SessionToken,
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiFailure> {
        let token = session_token(&parts.headers).ok_or_else(ApiFailure::unauthorized)?;
        let lookup = token.clone();
        let name = state
            .with_db(move |conn| accounts::session_viewer(conn, &lookup, unix_now()))
            .await?
            .ok_or_else(ApiFailure::unauthorized)?;
        Ok(Self { name, token })
    }
}

/// The well-formed session token among the request's cookies, if any.
pub fn session_token(headers: &HeaderMap) -> Option<SessionToken> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .find_map(|(_, value)| SessionToken::parse(value.trim()))
}

/// `Set-Cookie` for a new session. No `Secure`: the default origin is plain HTTP on
/// loopback; behind TLS a proxy may add it.
pub fn set_cookie(token: &SessionToken) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_LIFETIME_SECS}",
        token.as_str()
    ))
    .expect("a hex token makes a valid header")
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("telly_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_among_other_cookies() {
        let token = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {SESSION_COOKIE}={token}; b=2")).unwrap(),
        );
        assert_eq!(session_token(&headers).unwrap().as_str(), token);
    }

    #[test]
    fn malformed_or_absent_cookies_are_no_session() {
        let mut headers = HeaderMap::new();
        assert!(session_token(&headers).is_none());
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("telly_session=xyz"),
        );
        assert!(session_token(&headers).is_none());
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("telly_sessionx=ab"),
        );
        assert!(session_token(&headers).is_none());
    }

    #[test]
    fn cookie_attributes() {
        let token = SessionToken::parse(&"0".repeat(64)).unwrap();
        let cookie = set_cookie(&token);
        let cookie = cookie.to_str().unwrap();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2592000"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
    }
}
