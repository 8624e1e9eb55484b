//! `telly serve` as a child process over a data directory published once per test
//! binary and copied per test, so each test gets fresh metrics and may damage its
//! copy (corrupt a block, swap the key) without touching the others.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use telly_proto::api::Metrics;
use telly_proto::{SignedManifest, TitleSummary};

use crate::{PASSWORD, VIEWER, artifacts_dir, env_path, free_port};

pub const TITLE_ID: &str = "e2e-bars";
pub const TITLE_SECONDS: u32 = 40;

pub fn telly_bin() -> PathBuf {
    env_path("TELLY_BIN", "target/debug/telly")
}

/// A data directory with one published title and one viewer, made once.
pub struct PublishedFixture {
    pub data_dir: PathBuf,
    /// The rendered source, for publishing it again under another id.
    pub source: PathBuf,
    _keep: tempfile::TempDir,
}

static FIXTURE: OnceLock<PublishedFixture> = OnceLock::new();

impl PublishedFixture {
    pub fn get() -> &'static PublishedFixture {
        FIXTURE.get_or_init(|| Self::make().expect("publishing the e2e fixture"))
    }

    fn make() -> Result<Self> {
        let keep = tempfile::tempdir()?;
        let data_dir = keep.path().join("data");
        let source = keep.path().join("source.mkv");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &TITLE_SECONDS.to_string()])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "flac"])
            .arg(&source)
            .status()
            .context("running ffmpeg")?;
        if !status.success() {
            bail!("ffmpeg could not render the fixture source");
        }
        run_telly(
            Command::new(telly_bin())
                .arg("publish")
                .arg(&source)
                .args(["--id", TITLE_ID, "--title", "End-to-End Bars"])
                .args(["--synopsis", "A test card for the end-to-end tests."])
                .args(["--year", "2026", "--genre", "Test"])
                .arg("--data-dir")
                .arg(&data_dir),
        )?;
        run_telly(
            Command::new(telly_bin())
                .args(["user", "add", VIEWER, "--password", PASSWORD])
                .arg("--data-dir")
                .arg(&data_dir),
        )?;
        Ok(Self {
            data_dir,
            source,
            _keep: keep,
        })
    }

    /// Publishes the fixture's source again as title `id` into `data_dir`
    /// (another title: its own keys, blocks and swarm).
    pub fn publish_again(&self, data_dir: &Path, id: &str) -> Result<()> {
        run_telly(
            Command::new(telly_bin())
                .arg("publish")
                .arg(&self.source)
                .args(["--id", id, "--title", "End-to-End Bars, again"])
                .arg("--data-dir")
                .arg(data_dir),
        )
    }

    /// A private copy of the data directory for one test.
    pub fn copy(&self) -> Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        copy_tree(&self.data_dir, dir.path())?;
        Ok(dir)
    }
}

fn run_telly(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().context("running telly")?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A running `telly serve`; killed (by its PID, which we started) on drop.
pub struct Provider {
    pub base: String,
    pub data_dir: PathBuf,
    child: Child,
    /// How `child` was started, for [`Provider::restart`].
    command: Vec<std::ffi::OsString>,
    _data: tempfile::TempDir,
}

impl Provider {
    /// Serves a fresh copy of the published fixture.
    pub fn start() -> Result<Self> {
        Self::start_with(|_| Ok(()))
    }

    /// Serves a fresh copy of the fixture after `prepare` has changed it.
    pub fn start_with(prepare: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        Self::start_with_args(prepare, &[])
    }

    /// Serves for swarm tests: peers use loopback candidates only, and test
    /// pages may ask for faults (`?fault=…`).
    pub fn start_swarm() -> Result<Self> {
        Self::start_with_args(|_| Ok(()), &["--loopback-ice", "--test-faults"])
    }

    /// Serves a fresh copy of the fixture with extra `telly serve` arguments.
    pub fn start_with_args(
        prepare: impl FnOnce(&Path) -> Result<()>,
        serve_args: &[&str],
    ) -> Result<Self> {
        let data = PublishedFixture::get().copy()?;
        prepare(data.path())?;
        let port = free_port();
        let mut command: Vec<std::ffi::OsString> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--data-dir".into(),
            data.path().into(),
            "--web-dir".into(),
            env_path("TELLY_WEB_DIR", "dist").into(),
        ];
        command.extend(serve_args.iter().map(Into::into));
        let child = Self::spawn(&command, port, 0)?;
        let provider = Self {
            base: format!("http://127.0.0.1:{port}"),
            data_dir: data.path().to_path_buf(),
            child,
            command,
            _data: data,
        };
        provider.wait_ready()?;
        Ok(provider)
    }

    fn spawn(command: &[std::ffi::OsString], port: u16, run: u32) -> Result<Child> {
        let log =
            std::fs::File::create(artifacts_dir().join(format!("telly-serve-{port}-{run}.log")))?;
        Command::new(telly_bin())
            .args(command)
            .env("RUST_LOG", "info,telly_signalling=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting telly serve")
    }

    /// Stops the server (SIGTERM: a graceful shutdown, every socket closed) and
    /// starts it again on the same port over the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                self.child.kill()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let port: u16 = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("the provider's port")?;
        self.child = Self::spawn(&self.command, port, 1)?;
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(self.base.trim_start_matches("http://")).is_ok() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("telly serve did not listen on {} within 30 s", self.base);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        Ok(reqwest::get(self.url("/api/metrics"))
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// A reqwest client signed in as the e2e viewer.
    pub async fn signed_in_client(&self) -> Result<reqwest::Client> {
        let client = reqwest::Client::builder().cookie_store(true).build()?;
        client
            .post(self.url("/api/session"))
            .json(&telly_proto::api::SignIn {
                name: VIEWER.into(),
                password: PASSWORD.into(),
            })
            .send()
            .await?
            .error_for_status()?;
        Ok(client)
    }

    pub async fn manifest(&self) -> Result<SignedManifest> {
        let client = self.signed_in_client().await?;
        Ok(client
            .get(self.url(&format!("/api/titles/{TITLE_ID}/manifest")))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn title(&self) -> Result<TitleSummary> {
        let client = self.signed_in_client().await?;
        Ok(client
            .get(self.url(&format!("/api/titles/{TITLE_ID}")))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
