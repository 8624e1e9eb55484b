//! The `telly` binary end to end: publish real (tiny) ffmpeg clips, refuse unusable
//! inputs without leaving anything behind, manage viewers, and serve what was
//! published over a real socket until SIGTERM.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use telly_proto::{Manifest, Sha256Hash};
use telly_provider::data_dir::DataDir;
use telly_provider::{accounts, catalogue, db};

fn telly(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_telly"));
    command
        .arg("--data-dir")
        .arg(data)
        .env_remove("TELLY_PASSWORD")
        .env_remove("TELLY_DATA_DIR")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0");
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("telly runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A 3-second 320×240 clip with a tone: the smallest input that makes a title of
/// more than one block per track.
fn tiny_clip(dir: &Path, name: &str, pattern: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("{pattern}=size=320x240:rate=25"))
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330",
            "-t",
            "3",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg is installed");
    assert!(status.success(), "ffmpeg made the test clip");
    path
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn published_manifest(data: &DataDir, id: &str) -> Manifest {
    let conn = db::open(&data.database_path()).unwrap();
    let signed = catalogue::signed_manifest(&conn, id)
        .unwrap()
        .expect("the title is in the catalogue");
    signed
        .verify(&data.provider_public_key().unwrap())
        .expect("the manifest verifies with the provider key")
}

fn manifest_blocks(manifest: &Manifest) -> BTreeSet<String> {
    manifest
        .tracks
        .iter()
        .flat_map(|t| std::iter::once(&t.init).chain(&t.blocks))
        .map(|b| {
            let hex = b.sha256.to_hex();
            format!("{}/{hex}", &hex[..2])
        })
        .collect()
}

#[test]
fn publish_stores_verifiable_blocks_and_a_signed_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tiny_clip(tmp.path(), "clip.mp4", "testsrc2");
    let root = tmp.path().join("data");
    let output = run(telly(&root).arg("publish").arg(&clip).args([
        "--title",
        "Tiny Test: One",
        "--synopsis",
        "Bars.",
        "--year",
        "2025",
        "--genre",
        "Test",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("tiny-test-one"), "{stdout}");

    let data = DataDir::open(&root).unwrap();
    let manifest = published_manifest(&data, "tiny-test-one");
    assert_eq!(manifest.title, "Tiny Test: One");
    assert!(
        (2900..=3300).contains(&manifest.duration_ms),
        "{}",
        manifest.duration_ms
    );
    assert_eq!(manifest.tracks.len(), 2, "video and audio");
    assert!(manifest.tracks.iter().all(|t| t.blocks.len() >= 2));

    // The blocks on disk are exactly the manifest's, each hashing to its name,
    // and each opens with the title's block key.
    assert_eq!(files_under(&data.blocks_dir()), manifest_blocks(&manifest));
    let conn = db::open(&data.database_path()).unwrap();
    let secrets = catalogue::secrets(&conn, "tiny-test-one").unwrap().unwrap();
    assert_eq!(secrets.keys.key_id, manifest.key_id);
    for track in &manifest.tracks {
        for block in std::iter::once(&track.init).chain(&track.blocks) {
            let sealed = std::fs::read(
                data.blocks_dir()
                    .join(&block.sha256.to_hex()[..2])
                    .join(block.sha256.to_hex()),
            )
            .unwrap();
            assert_eq!(sealed.len() as u64, block.size);
            assert_eq!(Sha256Hash::of(&sealed), block.sha256);
            assert_eq!(telly_proto::merkle::root(&sealed), block.piece_root);
            let plain =
                telly_media::seal::verify_and_open(&secrets.keys.block_key, &sealed, &block.sha256)
                    .unwrap();
            assert!(plain.len() > 8);
        }
        let init = std::fs::read(
            data.blocks_dir()
                .join(&track.init.sha256.to_hex()[..2])
                .join(track.init.sha256.to_hex()),
        )
        .unwrap();
        let init = telly_media::seal::open_block(&secrets.keys.block_key, &init).unwrap();
        assert_eq!(&init[4..8], b"ftyp", "an init segment starts with ftyp");
    }

    let summary = catalogue::get(&conn, "tiny-test-one").unwrap().unwrap();
    assert_eq!(summary.year, Some(2025));
    assert_eq!(summary.genre.as_deref(), Some("Test"));
    assert_eq!(summary.size_bytes, manifest.total_bytes());
    let poster = std::fs::read(data.poster_path("tiny-test-one")).unwrap();
    assert_eq!(&poster[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    assert!(
        files_under(&data.tmp_dir()).is_empty(),
        "scratch space is cleaned"
    );

    let listed = run(telly(&root).args(["title", "list"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("tiny-test-one\tTiny Test: One"));

    // The same id again is refused clearly, and the first title is untouched.
    let again = run(telly(&root).arg("publish").arg(&clip).args([
        "--title",
        "Other",
        "--id",
        "tiny-test-one",
    ]));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(files_under(&data.blocks_dir()), manifest_blocks(&manifest));
    assert_eq!(catalogue::list(&conn).unwrap().len(), 1);

    // Removing it removes its blocks and its directory.
    let removed = run(telly(&root).args(["title", "remove", "tiny-test-one"]));
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(files_under(&data.blocks_dir()).is_empty());
    assert!(!data.title_dir("tiny-test-one").exists());
    assert!(catalogue::list(&conn).unwrap().is_empty());
}

/// After a refused publish: no catalogue row, no block, no title directory.
fn assert_nothing_published(root: &Path) {
    let data = DataDir::open(root).unwrap();
    let conn = db::open(&data.database_path()).unwrap();
    assert!(catalogue::list(&conn).unwrap().is_empty());
    let blocks: i64 = conn
        .query_row("SELECT count(*) FROM title_blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks, 0);
    assert_eq!(files_under(&data.blocks_dir()), BTreeSet::new());
    assert_eq!(files_under(&data.titles_dir()), BTreeSet::new());
    assert_eq!(files_under(&data.tmp_dir()), BTreeSet::new());
}

#[test]
fn unusable_inputs_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "this is not a video\n").unwrap();
    let empty = tmp.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let audio = tmp.path().join("tone.m4a");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine", "-t", "1"])
        .arg(&audio)
        .status()
        .unwrap();
    assert!(status.success());
    let cases: [(&Path, &str); 5] = [
        (&text, "not a video"),
        (&empty, "empty"),
        (&audio, "no video stream"),
        (Path::new("/nonexistent/clip.mp4"), "no such file"),
        (tmp.path(), "not a regular file"),
    ];
    for (input, expected) in cases {
        let output = run(telly(&root)
            .arg("publish")
            .arg(input)
            .args(["--title", "Broken"]));
        assert!(!output.status.success(), "{} was accepted", input.display());
        assert!(
            stderr(&output).contains(expected),
            "{}: {}",
            input.display(),
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
        assert_nothing_published(&root);
    }
    let bad_id =
        run(telly(&root)
            .arg("publish")
            .arg(&text)
            .args(["--title", "X", "--id", "../escape"]));
    assert!(
        stderr(&bad_id).contains("not a usable title id"),
        "{}",
        stderr(&bad_id)
    );
    assert_nothing_published(&root);
}

#[test]
fn a_failure_after_packaging_removes_the_blocks_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tiny_clip(tmp.path(), "clip.mp4", "smptebars");
    let root = tmp.path().join("data");
    let data = DataDir::open(&root).unwrap();
    // A file where the title's directory must go: the publish fails only after
    // every block has been written.
    std::fs::write(data.title_dir("blocked"), "in the way").unwrap();
    let output = run(telly(&root)
        .arg("publish")
        .arg(&clip)
        .args(["--title", "Blocked"]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("titles/blocked"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_file(data.title_dir("blocked")).unwrap();
    assert_nothing_published(&root);

    // With the obstacle gone the same publish succeeds.
    let output = run(telly(&root)
        .arg("publish")
        .arg(&clip)
        .args(["--title", "Blocked"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        files_under(&data.blocks_dir()),
        manifest_blocks(&published_manifest(&data, "blocked"))
    );
}

#[test]
fn a_killed_publish_is_cleaned_up_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("longer.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
        ])
        .args([
            "-f", "lavfi", "-i", "sine", "-t", "30", "-pix_fmt", "yuv420p",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    let root = tmp.path().join("data");
    let data = DataDir::open(&root).unwrap();
    let child = telly(&root)
        .arg("publish")
        .arg(&clip)
        .args(["--title", "Killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut publisher = Server(child);
    // Kill it as soon as it has stored its first block.
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under(&data.blocks_dir()).is_empty() {
        assert!(
            publisher.0.try_wait().unwrap().is_none(),
            "publish ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no block appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    publisher.0.kill().unwrap();
    publisher.0.wait().unwrap();
    assert!(
        !files_under(&data.tmp_dir()).is_empty(),
        "the dead run left its journal"
    );

    // The next run, even one that fails at once, cleans up after the dead one.
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "not a video").unwrap();
    let output = run(telly(&root)
        .arg("publish")
        .arg(&text)
        .args(["--title", "Other"]));
    assert!(!output.status.success());
    assert_nothing_published(&root);
}

#[test]
fn viewers_are_added_from_flag_environment_or_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let output = run(telly(&root).args(["user", "add", "ada", "--password", "from flag"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(telly(&root)
        .args(["user", "add", "bob"])
        .env("TELLY_PASSWORD", "from env"));
    assert!(output.status.success(), "{}", stderr(&output));
    let mut child = telly(&root)
        .args(["user", "add", "cy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let duplicate = run(telly(&root).args(["user", "add", "ada", "--password", "x"]));
    assert!(!duplicate.status.success());
    assert!(stderr(&duplicate).contains("already exists"));
    let no_password = run(telly(&root).args(["user", "add", "dee"]));
    assert!(!no_password.status.success());
    assert!(
        stderr(&no_password).contains("no password"),
        "{}",
        stderr(&no_password)
    );

    let listed = run(telly(&root).args(["user", "list"]));
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "ada\nbob\ncy\n");

    let conn = db::open(&DataDir::open(&root).unwrap().database_path()).unwrap();
    for (name, password) in [
        ("ada", "from flag"),
        ("bob", "from env"),
        ("cy", "from stdin"),
    ] {
        let hash = accounts::password_hash_of(&conn, name).unwrap();
        assert!(
            accounts::check_password(hash.as_deref(), password),
            "{name}"
        );
        assert!(
            !accounts::check_password(hash.as_deref(), "wrong"),
            "{name}"
        );
    }
}

/// Kills the server if a test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_publishes_over_http_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tiny_clip(tmp.path(), "clip.mp4", "testsrc");
    let root = tmp.path().join("data");
    let output = run(telly(&root)
        .arg("publish")
        .arg(&clip)
        .args(["--title", "Served", "--id", "served"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        run(telly(&root).args(["user", "add", "ada", "--password", "pw"]))
            .status
            .success()
    );

    let mut child = telly(&root)
        .args(["serve", "--listen", "127.0.0.1:0", "--web-dir"])
        .arg(tmp.path().join("no-web-app"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let mut server = Server(child);
    let base = first_line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .trim_end_matches('/')
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let config: telly_proto::api::ClientConfig = client
            .get(format!("{base}/api/config"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!config.test_faults, "test faults are off unless asked for");
        let signed_in = client
            .post(format!("{base}/api/session"))
            .json(&serde_json::json!({"name": "ada", "password": "pw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), reqwest::StatusCode::OK);
        let signed: telly_proto::SignedManifest = client
            .get(format!("{base}/api/titles/served/manifest"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let manifest = signed.verify(&config.provider_key).unwrap();
        let licence: telly_proto::Licence = client
            .post(format!("{base}/api/titles/served/licence"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let block = &manifest.tracks[0].blocks[0];
        let sealed = client
            .get(format!("{base}/blocks/{}", block.sha256))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        telly_media::seal::verify_and_open(&licence.block_key, &sealed, &block.sha256).unwrap();
        let metrics: telly_proto::api::Metrics = client
            .get(format!("{base}/api/metrics"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metrics.titles["served"].origin_bytes, block.size);
    });

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "telly serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a graceful stop exits 0, got {status}");
}

#[test]
fn serve_test_faults_turns_on_the_pages_fault_switches() {
    let tmp = tempfile::tempdir().unwrap();
    let help = run(telly(&tmp.path().join("data")).args(["serve", "--help"]));
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.contains("--test-faults") && help.contains("Tests only"),
        "{help}"
    );

    let child = telly(&tmp.path().join("data"))
        .args([
            "serve",
            "--test-faults",
            "--listen",
            "127.0.0.1:0",
            "--web-dir",
        ])
        .arg(tmp.path().join("no-web-app"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let mut first_line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base = first_line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config: telly_proto::api::ClientConfig = runtime.block_on(async {
        reqwest::get(format!("{base}/api/config"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(config.test_faults);
    // Dropping `server` stops it.
}
