//! `cargo xtask`: the project's commands. `demo` and `test` are the README's two;
//! both install what a fresh machine lacks first (see `setup`).

mod bench;
mod bench_goodput;
mod bench_tabs;
mod build;
mod demo;
mod setup;
mod sh;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Telly's build, demo, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (wasm32 target, trunk, wasm-bindgen-cli, ffmpeg, chromium).
    Setup,
    /// Build the web app (trunk) and the `telly` binary.
    Build {
        /// Optimised build (what the demo serves).
        #[arg(long)]
        release: bool,
    },
    /// Publish demo titles and serve them on loopback.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Every check: format, lints, unit/property tests, browser tests, end-to-end tests.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run the end-to-end tests whose names contain this.
        #[arg(long)]
        e2e_filter: Option<String>,
    },
    /// Benchmarks; results go to bench/results/*.json.
    Bench {
        /// Which: block-open, publish, sim, all, or table (only rewrite the README's table).
        #[arg(default_value = "all")]
        which: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    std::env::set_current_dir(sh::repo_root())?;
    match cli.command {
        Command::Setup => setup::ensure_all(),
        Command::Build { release } => {
            setup::ensure_all()?;
            build::all(if release {
                build::Profile::Release
            } else {
                build::Profile::Dev
            })
            .map(|_| ())
        }
        Command::Demo { listen } => demo::run(&listen),
        Command::Test {
            no_lint,
            e2e_filter,
        } => test::run(!no_lint, e2e_filter.as_deref()),
        Command::Bench { which } => bench::run(&which),
    }
}
