//! The JSON API: configuration, sessions, the catalogue, manifests, licences,
//! swarm grants and the tabs' swarm reports.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use telly_proto::api::{
    ClientConfig, GrantRequest, GrantResponse, SessionInfo, SignIn, SwarmReport,
};
use telly_proto::{
    ClearKeyRequest, ClearKeyResponse, Grant, Licence, Sha256Hash, SignedGrant, SignedManifest,
    TitleSummary,
};

use super::error::JsonBody;
use super::session::{Viewer, clear_cookie, set_cookie};
use super::{ApiFailure, AppState};
use crate::accounts::{self, MAX_NAME_LEN, MAX_PASSWORD_LEN};
use crate::catalogue::{self, TitleSecrets};
use crate::unix_now;

pub async fn config(State(state): State<Arc<AppState>>) -> Json<ClientConfig> {
    Json(ClientConfig {
        provider_name: state.provider_name.clone(),
        provider_key: state.public_key,
        network: state.network.clone(),
        test_faults: state.test_faults,
    })
}

pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    JsonBody(sign_in): JsonBody<SignIn>,
) -> Result<Response, ApiFailure> {
    let refused = || ApiFailure::new(StatusCode::UNAUTHORIZED, "wrong name or password");
    if sign_in.name.chars().count() > MAX_NAME_LEN || sign_in.password.len() > MAX_PASSWORD_LEN {
        return Err(refused());
    }
    let name = sign_in.name.clone();
    let stored = state
        .with_db(move |conn| accounts::password_hash_of(conn, &name))
        .await?;
    let permit = state
        .password_checks
        .acquire()
        .await
        .map_err(ApiFailure::internal)?;
    let password = sign_in.password;
    let matches =
        tokio::task::spawn_blocking(move || accounts::check_password(stored.as_deref(), &password))
            .await
            .map_err(ApiFailure::internal)?;
    drop(permit);
    if !matches {
        tracing::info!(viewer = %sign_in.name, "sign-in refused");
        return Err(refused());
    }
    let name = sign_in.name.clone();
    let token = state
        .with_db(move |conn| {
            let now = unix_now();
            accounts::purge_expired_sessions(conn, now)?;
            accounts::create_session(conn, &name, now)
        })
        .await?;
    tracing::info!(viewer = %sign_in.name, "signed in");
    Ok((
        [(header::SET_COOKIE, set_cookie(&token))],
        Json(SessionInfo {
            viewer: sign_in.name,
        }),
    )
        .into_response())
}

pub async fn current_session(viewer: Viewer) -> Json<SessionInfo> {
    Json(SessionInfo {
        viewer: viewer.name,
    })
}

pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Response, ApiFailure> {
    let token = viewer.token;
    state
        .with_db(move |conn| accounts::end_session(conn, &token))
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_cookie())],
    )
        .into_response())
}

pub async fn list_titles(
    State(state): State<Arc<AppState>>,
    _viewer: Viewer,
) -> Result<Json<Vec<TitleSummary>>, ApiFailure> {
    Ok(Json(state.with_db(catalogue::list).await?))
}

fn no_title(id: &str) -> ApiFailure {
    ApiFailure::not_found(format!(
        "no title {:?}",
        id.chars().take(80).collect::<String>()
    ))
}

pub async fn get_title(
    State(state): State<Arc<AppState>>,
    _viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Json<TitleSummary>, ApiFailure> {
    catalogue::validate_id(&id).map_err(|_| no_title(&id))?;
    let lookup = id.clone();
    state
        .with_db(move |conn| catalogue::get(conn, &lookup))
        .await?
        .map(Json)
        .ok_or_else(|| no_title(&id))
}

/// The title's signed manifest, or 404 for an unknown or malformed id.
async fn signed_manifest_of(state: &Arc<AppState>, id: &str) -> Result<SignedManifest, ApiFailure> {
    catalogue::validate_id(id).map_err(|_| no_title(id))?;
    let lookup = id.to_owned();
    state
        .with_db(move |conn| catalogue::signed_manifest(conn, &lookup))
        .await?
        .ok_or_else(|| no_title(id))
}

pub async fn manifest(
    State(state): State<Arc<AppState>>,
    _viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Json<SignedManifest>, ApiFailure> {
    signed_manifest_of(&state, &id).await.map(Json)
}

/// The title's keys, if it exists and its licence window is open now.
async fn licensable(state: &Arc<AppState>, id: String) -> Result<TitleSecrets, ApiFailure> {
    catalogue::validate_id(&id).map_err(|_| no_title(&id))?;
    let lookup = id.clone();
    let secrets = state
        .with_db(move |conn| catalogue::secrets(conn, &lookup))
        .await?
        .ok_or_else(|| no_title(&id))?;
    if !secrets.window.is_open(unix_now()) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            format!("the licence window of {id:?} is closed"),
        ));
    }
    Ok(secrets)
}

pub async fn licence(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Json<Licence>, ApiFailure> {
    let secrets = licensable(&state, id.clone()).await?;
    tracing::info!(viewer = %viewer.name, title = %id, "licence issued");
    Ok(Json(Licence {
        title_id: id,
        key_id: secrets.keys.key_id,
        block_key: secrets.keys.block_key,
        expires_at: secrets.window.until,
    }))
}

/// Answers the CDM's Clear Key request with the content key of this title only,
/// and only if the request asked for its key id.
pub async fn clear_key(
    State(state): State<Arc<AppState>>,
    _viewer: Viewer,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ClearKeyRequest>,
) -> Result<Json<ClearKeyResponse>, ApiFailure> {
    let secrets = licensable(&state, id).await?;
    Ok(Json(ClearKeyResponse::answer(&request, &[secrets.keys])))
}

/// How long a swarm grant lasts. Short, so that a viewer whose account is
/// removed drops out of every swarm soon; tabs renew well before it ends.
pub const GRANT_TTL_S: u64 = 15 * 60;

/// A grant to join the title's swarm as the peer the tab names. Not tied to the
/// licence window: sealed blocks may spread before a release, unreadable.
pub async fn grant(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<GrantRequest>,
) -> Result<Json<GrantResponse>, ApiFailure> {
    let signed = signed_manifest_of(&state, &id).await?;
    let swarm_id = Sha256Hash::of(signed.body.as_bytes());
    let expires_at = unix_now() + GRANT_TTL_S;
    let grant = SignedGrant::sign(
        &Grant {
            viewer: viewer.name.clone(),
            peer_id: request.peer_id.to_string(),
            title_id: id.clone(),
            swarm_id,
            expires_at,
        },
        &state.signing_key,
    );
    tracing::debug!(viewer = %viewer.name, title = %id, peer = %request.peer_id, "grant issued");
    Ok(Json(GrantResponse {
        swarm_id,
        grant,
        expires_at,
    }))
}

/// Adds what a tab moved for this title since its last report to the title's
/// counters in `GET /api/metrics`. Only signed-in viewers may report, so a
/// stranger cannot skew them; values no tab could reach are refused outright
/// rather than clamped, so a buggy client shows up as errors, not odd numbers.
pub async fn report(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    JsonBody(report): JsonBody<SwarmReport>,
) -> Result<StatusCode, ApiFailure> {
    if let Some((field, value)) = report.oversized_field() {
        return Err(ApiFailure::bad_request(format!(
            "{field} is {value} bytes; one report may claim at most {} bytes (4 GiB) per field",
            SwarmReport::MAX_BYTES
        )));
    }
    catalogue::validate_id(&id).map_err(|_| no_title(&id))?;
    let lookup = id.clone();
    if !state
        .with_db(move |conn| catalogue::exists(conn, &lookup))
        .await?
    {
        return Err(no_title(&id));
    }
    state.metrics.record_report(&id, &report);
    tracing::debug!(
        viewer = %viewer.name,
        title = %id,
        from_peers = report.bytes_from_peers,
        from_origin = report.bytes_from_origin,
        uploaded = report.bytes_uploaded,
        "swarm report"
    );
    Ok(StatusCode::NO_CONTENT)
}

pub async fn no_such_route() -> ApiFailure {
    ApiFailure::not_found("no such API route")
}
