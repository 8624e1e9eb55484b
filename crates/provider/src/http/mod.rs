//! `telly serve`: the HTTP API of docs/API.md, the block origin and the web app.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive exactly the
//! routes production serves; [`serve`] runs it on a listener until shutdown.

mod api;
mod error;
mod origin;
mod session;
#[cfg(test)]
mod tests;
mod web;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use ed25519_dalek::SigningKey;
use rusqlite::Connection;
use telly_proto::ProviderPublicKey;
use telly_proto::api::NetworkConfig;
use telly_signalling::{Hub, SignalConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::blocks::BlockStore;
use crate::catalogue::{self, CatalogueError};
use crate::data_dir::{DataDir, DataDirError};
use crate::db::{self, DbError};
use crate::metrics::{BlockOwners, OriginMetrics};

pub use error::ApiFailure;
pub use session::SESSION_COOKIE;

/// Largest request body any route accepts (sign-in, licence and Clear Key
/// requests are all well under a kilobyte).
pub const MAX_REQUEST_BODY: usize = 16 * 1024;
/// At most this many password checks run at once; each takes ~19 MiB and a core.
const CONCURRENT_PASSWORD_CHECKS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// The built web app (Trunk's `dist`).
    pub web_dir: PathBuf,
    /// Shown by the web app; `GET /api/config`.
    pub provider_name: String,
    /// ICE servers and loopback-only mode, passed on to the web app.
    pub network: NetworkConfig,
    /// Tests only: tell the web app it may honour `?fault=` switches
    /// (`ClientConfig::test_faults`). Never set in a real deployment.
    pub test_faults: bool,
}

/// Everything the handlers share.
pub struct AppState {
    data: DataDir,
    blocks: BlockStore,
    /// One connection is plenty for one machine's viewers: every query is a
    /// primary-key lookup, and handlers run them on blocking threads.
    db: Mutex<Connection>,
    public_key: ProviderPublicKey,
    /// Signs swarm grants (manifests are signed at publish time).
    signing_key: SigningKey,
    /// Signalling and tracker, served at `/signal`.
    hub: Arc<Hub>,
    network: NetworkConfig,
    test_faults: bool,
    provider_name: String,
    web_dir: PathBuf,
    metrics: OriginMetrics,
    owners: BlockOwners,
    password_checks: Semaphore,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("data", &self.data)
            .field("web_dir", &self.web_dir)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Opens the data directory (creating the provider key and database on first
    /// use) and loads the block → title map.
    pub fn open(config: &ServerConfig) -> Result<Arc<Self>, ServeError> {
        let data = DataDir::open(&config.data_dir)?;
        let signing_key = data.provider_key()?;
        let public_key = ProviderPublicKey(signing_key.verifying_key());
        let conn = db::open(&data.database_path())?;
        let hub = Hub::new(public_key, SignalConfig::with_random_seed());
        let state = Arc::new(Self {
            blocks: BlockStore::new(data.blocks_dir()),
            data,
            db: Mutex::new(conn),
            public_key,
            signing_key,
            hub,
            network: config.network.clone(),
            test_faults: config.test_faults,
            provider_name: config.provider_name.clone(),
            web_dir: config.web_dir.clone(),
            metrics: OriginMetrics::default(),
            owners: BlockOwners::default(),
            password_checks: Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
        });
        state.refresh_owners_blocking()?;
        if state.test_faults {
            tracing::warn!(
                "test faults are on: the web app may obey ?fault= switches; never use this in a real deployment"
            );
        }
        if !state.web_dir.join("index.html").is_file() {
            tracing::warn!(web_dir = %state.web_dir.display(),
                "no index.html in the web directory: the API works, the web app will not load (build it with trunk, or pass --web-dir)");
        }
        Ok(state)
    }

    pub fn public_key(&self) -> ProviderPublicKey {
        self.public_key
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn metrics(&self) -> telly_proto::api::Metrics {
        self.metrics.snapshot()
    }

    /// Runs `f` on the database on a blocking thread.
    async fn with_db<R, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, ApiFailure>
    where
        R: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let state = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let conn = state.db.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn)
        })
        .await;
        match joined {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ApiFailure::internal(e)),
            Err(e) => Err(ApiFailure::internal(e)),
        }
    }

    /// Reloads the block → title map if the catalogue changed since it was read.
    fn refresh_owners_blocking(&self) -> Result<(), CatalogueError> {
        let conn = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let generation = db::catalogue_generation(&conn)?;
        if self.owners.is_stale(generation) {
            self.owners
                .replace(generation, catalogue::block_owners(&conn)?);
        }
        Ok(())
    }
}

/// The whole HTTP surface of `telly serve`.
pub fn app(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/config", get(api::config))
        .route(
            "/session",
            post(api::sign_in)
                .get(api::current_session)
                .delete(api::sign_out),
        )
        .route("/titles", get(api::list_titles))
        .route("/titles/{id}", get(api::get_title))
        .route("/titles/{id}/manifest", get(api::manifest))
        .route("/titles/{id}/poster.jpg", get(origin::poster))
        .route("/titles/{id}/licence", post(api::licence))
        .route("/titles/{id}/clearkey", post(api::clear_key))
        .route("/titles/{id}/grant", post(api::grant))
        .route("/titles/{id}/report", post(api::report))
        .route("/metrics", get(origin::metrics))
        .fallback(api::no_such_route)
        // Answers depend on the session; the poster sets its own policy.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    Router::new()
        .nest("/api", api)
        .nest(
            telly_signalling::SIGNAL_PATH,
            telly_signalling::router(Arc::clone(&state.hub)),
        )
        .route("/blocks/{sha256}", get(origin::block))
        .fallback_service(web::service(&state))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
