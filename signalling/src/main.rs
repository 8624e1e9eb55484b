//! `telly-signalling`: the signalling server and tracker on its own, for when it
//! runs apart from `telly serve`.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use telly_proto::ProviderPublicKey;
use telly_signalling::{Hub, SIGNAL_PATH, SignalConfig};

/// Signalling and tracker for a Telly network: admits peers with the provider's
/// grants and relays their WebRTC offers, answers and ICE candidates.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The provider's Ed25519 public key, hex (`GET /api/config` shows it).
    #[arg(long, value_name = "HEX", env = "TELLY_PROVIDER_KEY")]
    provider_key: ProviderPublicKey,
    /// Seeds the tracker's choice among equally good peers [default: random].
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let mut config = SignalConfig::with_random_seed();
    if let Some(seed) = cli.seed {
        config.seed = seed;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let hub = Hub::new(cli.provider_key, config);
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("listening on {}", cli.listen))?;
        let addr = listener.local_addr()?;
        // On stdout, for scripts that start the server on port 0.
        println!("signalling ws://{addr}{SIGNAL_PATH}");
        tracing::info!(%addr, provider_key = %cli.provider_key.to_hex(), "serving signalling");
        axum::serve(listener, telly_signalling::app(hub))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
