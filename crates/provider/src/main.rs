//! `telly`: the provider's command line, a thin layer over telly-provider.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use telly_media::package::{PackageOptions, Progress, Stage};
use telly_proto::api::NetworkConfig;
use telly_provider::catalogue::{LicenceWindow, TitleInfo};
use telly_provider::data_dir::{self, DataDir};
use telly_provider::http::{self, AppState, ServerConfig};
use telly_provider::publish::{self, PublishRequest};
use telly_provider::{accounts, catalogue, db, unix_now};

#[derive(Parser)]
#[command(
    name = "telly",
    version,
    about = "Telly: peer-to-peer television, the provider's side"
)]
struct Cli {
    /// The provider's data directory [default: $TELLY_DATA_DIR, else ./telly-data]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Package a video file into an encrypted title and add it to the catalogue.
    Publish(PublishArgs),
    /// Serve the web app, the API and the blocks.
    Serve(ServeArgs),
    /// Manage viewer accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Look at or remove published titles.
    #[command(subcommand)]
    Title(TitleCommand),
}

#[derive(Args)]
struct PublishArgs {
    /// Any file ffmpeg can read that has a video stream.
    file: PathBuf,
    #[arg(long)]
    title: String,
    #[arg(long, default_value = "")]
    synopsis: String,
    #[arg(long)]
    year: Option<u16>,
    #[arg(long)]
    genre: Option<String>,
    /// The title's id in URLs [default: made from the title]
    #[arg(long, value_name = "SLUG")]
    id: Option<String>,
    /// No licence before this time (Unix seconds).
    #[arg(long, value_name = "UNIX_SECONDS")]
    licence_from: Option<u64>,
    /// No licence from this time on (Unix seconds).
    #[arg(long, value_name = "UNIX_SECONDS")]
    licence_until: Option<u64>,
    /// Tallest output picture, in pixels.
    #[arg(long, default_value_t = 720)]
    max_height: u32,
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The built web app [default: $TELLY_WEB_DIR, else ./dist]
    #[arg(
        long,
        value_name = "DIR",
        env = "TELLY_WEB_DIR",
        default_value = "dist"
    )]
    web_dir: PathBuf,
    /// The name the web app shows.
    #[arg(long, default_value = "Telly")]
    provider_name: String,
    /// A STUN or TURN server your viewers' tabs may use (`stun:host:port`);
    /// repeat for more. None by default: peers use host candidates only.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// Tests and one-machine demos only: tabs connect over loopback candidates.
    #[arg(long)]
    loopback_ice: bool,
    /// Tests only: let the web app obey `?fault=` switches in its URL (faults
    /// injected on purpose). Never use it in a real deployment.
    #[arg(long)]
    test_faults: bool,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a viewer. The password comes from --password, else $TELLY_PASSWORD,
    /// else the first line of standard input.
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// List viewers.
    List,
}

#[derive(Subcommand)]
enum TitleCommand {
    /// List published titles, newest first.
    List,
    /// Remove a title and the blocks no other title uses.
    Remove { id: String },
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
    let root = data_dir::resolve(cli.data_dir);
    match cli.command {
        Command::Publish(args) => publish_command(&root, args),
        Command::Serve(args) => serve_command(root, args),
        Command::User(command) => user_command(&root, command),
        Command::Title(command) => title_command(&root, command),
    }
}

fn open_data(root: &std::path::Path) -> Result<DataDir> {
    DataDir::open(root).with_context(|| format!("opening the data directory {}", root.display()))
}

fn publish_command(root: &std::path::Path, args: PublishArgs) -> Result<()> {
    let data = open_data(root)?;
    let request = PublishRequest {
        input: args.file.clone(),
        id: args.id,
        info: TitleInfo {
            title: args.title,
            synopsis: args.synopsis,
            year: args.year,
            genre: args.genre,
        },
        window: LicenceWindow {
            from: args.licence_from,
            until: args.licence_until,
        },
        options: PackageOptions {
            max_height: args.max_height,
            ..PackageOptions::default()
        },
    };
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {percent:>3}% {elapsed_precise}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| {
        bar.set_prefix(stage_name(p.stage));
        bar.set_position((p.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
    };
    let outcome = publish::publish(&data, &request, &mut on_progress);
    bar.finish_and_clear();
    let published = outcome.with_context(|| format!("publishing {}", args.file.display()))?;
    let blocks: usize = published
        .manifest
        .tracks
        .iter()
        .map(|t| t.blocks.len() + 1)
        .sum();
    println!(
        "published {:?} as {} ({:.1} s, {} tracks, {} blocks, {} bytes sealed) in {:.1} s (transcode {:.1} s, encrypt and seal {:.1} s)",
        published.manifest.title,
        published.id,
        published.manifest.duration_ms as f64 / 1000.0,
        published.manifest.tracks.len(),
        blocks,
        published.manifest.total_bytes(),
        published.total_ms as f64 / 1000.0,
        published.transcode_ms as f64 / 1000.0,
        published.package_ms as f64 / 1000.0,
    );
    Ok(())
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Probe => "probe",
        Stage::Transcode => "transcode",
        Stage::Encrypt => "encrypt",
        Stage::Seal => "seal",
        Stage::Poster => "poster",
    }
}

fn serve_command(root: PathBuf, args: ServeArgs) -> Result<()> {
    let config = ServerConfig {
        data_dir: root,
        web_dir: args.web_dir,
        provider_name: args.provider_name,
        network: NetworkConfig {
            ice_servers: args.ice_servers,
            loopback_ice: args.loopback_ice,
            signal_path: telly_signalling::SIGNAL_PATH.into(),
        },
        test_faults: args.test_faults,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let state = AppState::open(&config)
            .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // On stdout, for people and for scripts that start the server on port 0.
        println!("serving http://{addr}/");
        tracing::info!(
            url = %format!("http://{addr}/"),
            data_dir = %config.data_dir.display(),
            web_dir = %config.web_dir.display(),
            provider_key = %state.public_key().to_hex(),
            "serving"
        );
        http::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

fn user_command(root: &std::path::Path, command: UserCommand) -> Result<()> {
    let data = open_data(root)?;
    let conn = db::open(&data.database_path())?;
    match command {
        UserCommand::Add { name, password } => {
            accounts::validate_name(&name)?;
            if accounts::password_hash_of(&conn, &name)?.is_some() {
                bail!("a viewer named {name:?} already exists");
            }
            let password = match password.or_else(|| std::env::var("TELLY_PASSWORD").ok()) {
                Some(p) => p,
                None => read_password_line()?,
            };
            let hash = accounts::hash_password(&password)?;
            accounts::add_user(&conn, &name, &hash, unix_now())?;
            println!("added viewer {name:?}");
        }
        UserCommand::List => {
            for user in accounts::list_users(&conn)? {
                println!("{}", user.name);
            }
        }
    }
    Ok(())
}

fn read_password_line() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password given (use --password, $TELLY_PASSWORD or standard input)");
    }
    Ok(password)
}

fn title_command(root: &std::path::Path, command: TitleCommand) -> Result<()> {
    let data = open_data(root)?;
    match command {
        TitleCommand::List => {
            let conn = db::open(&data.database_path())?;
            for t in catalogue::list(&conn)? {
                println!(
                    "{}\t{}\t{:.1} s\t{} bytes\tswarm {}",
                    t.id,
                    t.title,
                    t.duration_ms as f64 / 1000.0,
                    t.size_bytes,
                    t.swarm_id
                );
            }
        }
        TitleCommand::Remove { id } => {
            let removed = publish::remove_title(&data, &id)?;
            println!("removed {id} and {removed} blocks");
        }
    }
    Ok(())
}
