//! A typed client for the provider's HTTP API (docs/API.md). Same origin, so the
//! session cookie travels with every request (`credentials: same-origin`, fetch's
//! default).

use gloo_net::http::{Request, Response};
use js_sys::{ArrayBuffer, Uint8Array};
use serde::de::DeserializeOwned;
use telly_proto::api::{ClientConfig, GrantRequest, GrantResponse, SessionInfo, SignIn};
use telly_proto::signal::PeerId;
use telly_proto::{Licence, Sha256Hash, SignedManifest, TitleSummary};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::host::crypto::js_error_text;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("not signed in")]
    Unauthorized,
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the provider answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the provider could not be reached: {0}")]
    Network(String),
    #[error("the provider's answer does not parse: {0}")]
    Decode(String),
    #[error("the provider sent {got} bytes where at most {limit} were expected")]
    TooLarge { got: u64, limit: u64 },
}

/// The provider's API, on the page's own origin unless told otherwise.
#[derive(Clone, Debug, Default)]
pub struct Api {
    /// Prefix of every path, e.g. `""` (same origin) or `http://127.0.0.1:8080`.
    base: String,
}

fn segment(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

impl Api {
    pub fn same_origin() -> Self {
        Self::default()
    }

    pub fn with_base(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Turns a non-2xx answer into an error, reading `{"error": "..."}` if present.
    async fn check(response: Response) -> Result<Response, ApiError> {
        if response.ok() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<telly_proto::api::ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        Err(match status {
            401 => ApiError::Unauthorized,
            403 => ApiError::Forbidden(message),
            404 => ApiError::NotFound(message),
            _ => ApiError::Status { status, message },
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let response = Request::get(&self.url(path))
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        let response = Self::check(response).await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Decode(e.to_string()))
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ApiError> {
        let response = Request::post(&self.url(path))
            .json(body)
            .map_err(|e| ApiError::Decode(e.to_string()))?
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        let response = Self::check(response).await?;
        response
            .json()
            .await
            .map_err(|e| ApiError::Decode(e.to_string()))
    }

    pub async fn config(&self) -> Result<ClientConfig, ApiError> {
        self.get_json("/api/config").await
    }

    pub async fn sign_in(&self, name: &str, password: &str) -> Result<SessionInfo, ApiError> {
        let body = SignIn {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        self.post_json("/api/session", &body).await
    }

    pub async fn session(&self) -> Result<SessionInfo, ApiError> {
        self.get_json("/api/session").await
    }

    pub async fn sign_out(&self) -> Result<(), ApiError> {
        let response = Request::delete(&self.url("/api/session"))
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        Self::check(response).await.map(|_| ())
    }

    pub async fn titles(&self) -> Result<Vec<TitleSummary>, ApiError> {
        self.get_json("/api/titles").await
    }

    pub async fn title(&self, id: &str) -> Result<TitleSummary, ApiError> {
        self.get_json(&format!("/api/titles/{}", segment(id))).await
    }

    /// The signed manifest as served; the caller verifies it.
    pub async fn manifest(&self, id: &str) -> Result<SignedManifest, ApiError> {
        self.get_json(&format!("/api/titles/{}/manifest", segment(id)))
            .await
    }

    pub async fn licence(&self, id: &str) -> Result<Licence, ApiError> {
        self.post_json(
            &format!("/api/titles/{}/licence", segment(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Passes a Clear Key session's `message` to the licence server and returns
    /// the JSON Web Key set for `MediaKeySession.update`.
    pub async fn clear_key(&self, id: &str, message: &Uint8Array) -> Result<Uint8Array, ApiError> {
        let response = Request::post(&self.url(&format!("/api/titles/{}/clearkey", segment(id))))
            .header("Content-Type", "application/json")
            .body(message.clone())
            .map_err(|e| ApiError::Decode(e.to_string()))?
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        let response = Self::check(response).await?;
        read_bytes(response, 64 * 1024).await
    }

    /// A sealed block or init segment from the origin, at most `limit` bytes.
    /// Unverified: the caller checks its hash. `reload` skips the HTTP cache
    /// (and refreshes it), for a block whose cached copy was refused.
    pub async fn block(
        &self,
        sha: &Sha256Hash,
        limit: u64,
        reload: bool,
    ) -> Result<Uint8Array, ApiError> {
        let response = self.get_block(sha, None, reload).await?;
        read_bytes(response, limit).await
    }

    /// `GET /blocks/{sha}`, whole or the byte range `start..end`.
    async fn get_block(
        &self,
        sha: &Sha256Hash,
        range: Option<(u64, u64)>,
        reload: bool,
    ) -> Result<Response, ApiError> {
        let cache = if reload {
            web_sys::RequestCache::Reload
        } else {
            web_sys::RequestCache::Default
        };
        let mut request =
            Request::get(&self.url(&format!("/blocks/{}", sha.to_hex()))).cache(cache);
        if let Some((start, end)) = range {
            request = request.header("Range", &format!("bytes={start}-{}", end.saturating_sub(1)));
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        Self::check(response).await
    }

    /// Bytes `start..end` of a sealed block (an HTTP range), for chunks the
    /// swarm engine wants from the origin. `reload` as for [`Api::block`].
    pub async fn block_range(
        &self,
        sha: &Sha256Hash,
        start: u64,
        end: u64,
        reload: bool,
    ) -> Result<Uint8Array, ApiError> {
        let response = self.get_block(sha, Some((start, end)), reload).await?;
        let wanted = end.saturating_sub(start);
        let bytes = read_bytes(response, wanted.max(1)).await?;
        if u64::from(bytes.length()) != wanted {
            return Err(ApiError::Decode(format!(
                "asked for {wanted} bytes of block {sha}, got {}",
                bytes.length()
            )));
        }
        Ok(bytes)
    }

    /// A grant to join the title's swarm as `peer_id` (signalling and peers).
    pub async fn grant(&self, id: &str, peer_id: &PeerId) -> Result<GrantResponse, ApiError> {
        let body = GrantRequest {
            peer_id: peer_id.clone(),
        };
        self.post_json(&format!("/api/titles/{}/grant", segment(id)), &body)
            .await
    }

    /// Tells the provider what this tab moved for a title since its last report.
    pub async fn report(
        &self,
        id: &str,
        report: &telly_proto::api::SwarmReport,
    ) -> Result<(), ApiError> {
        let response = Request::post(&self.url(&format!("/api/titles/{}/report", segment(id))))
            .json(report)
            .map_err(|e| ApiError::Decode(e.to_string()))?
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        Self::check(response).await.map(|_| ())
    }

    pub fn poster_url(&self, summary: &TitleSummary) -> String {
        if summary.poster.starts_with('/') {
            self.url(&summary.poster)
        } else {
            summary.poster.clone()
        }
    }
}

/// Reads a response body into JS memory, refusing more than `limit` bytes.
async fn read_bytes(response: Response, limit: u64) -> Result<Uint8Array, ApiError> {
    let declared = response
        .headers()
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(got) = declared
        && got > limit
    {
        return Err(ApiError::TooLarge { got, limit });
    }
    let raw: web_sys::Response = response.into();
    let promise = raw
        .array_buffer()
        .map_err(|e| ApiError::Network(js_error_text(&e)))?;
    let buffer = JsFuture::from(promise)
        .await
        .map_err(|e| ApiError::Network(js_error_text(&e)))?;
    let buffer: ArrayBuffer = buffer
        .dyn_into()
        .map_err(|_| ApiError::Decode("the body is not binary".into()))?;
    let got = u64::from(buffer.byte_length());
    if got > limit {
        return Err(ApiError::TooLarge { got, limit });
    }
    Ok(Uint8Array::new(&buffer))
}
