//! The real consumer of the packager's output: headless Chromium plays the opened
//! blocks through MSE (one SourceBuffer per track) with EME Clear Key, and a
//! wrong content key makes the media element fail.
//!
//! Needs `ffmpeg`, `ffprobe` and Debian's `chromium`; without them the test prints
//! why it is skipped and returns. The page is served from 127.0.0.1 only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use telly_media::package::{BlockSink, PackageOptions, package};
use telly_media::seal::verify_and_open;
use telly_proto::hash::Sha256Hash;
use telly_proto::licence::{KeyId, TitleKeys};

const CHROMIUM: &str = "chromium";

fn tools_present() -> bool {
    let works = |tool: &str| {
        Command::new(tool)
            .arg(if tool == CHROMIUM {
                "--version"
            } else {
                "-version"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = ["ffmpeg", "ffprobe", CHROMIUM]
        .into_iter()
        .filter(|t| !works(t))
        .collect();
    if missing.is_empty() {
        true
    } else {
        eprintln!("SKIPPED: not installed: {}", missing.join(", "));
        false
    }
}

#[derive(Default)]
struct MemorySink(HashMap<Sha256Hash, Vec<u8>>);

impl BlockSink for MemorySink {
    fn put(&mut self, sha256: &Sha256Hash, sealed: &[u8]) -> std::io::Result<()> {
        self.0.insert(*sha256, sealed.to_vec());
        Ok(())
    }
}

const PAGE: &str = r#"<!doctype html><html><body><script>
const KID = hexBytes('__KID__'), KEY = hexBytes('__KEY__'), WRONG = hexBytes('__WRONG__');
function hexBytes(h) { return new Uint8Array(h.match(/../g).map(x => parseInt(x, 16))); }
function b64url(b) { return btoa(String.fromCharCode(...b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''); }
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function waitFor(cond, ms) { const end = Date.now() + ms; while (!cond() && Date.now() < end) await sleep(100); return cond(); }

async function play(key) {
  const meta = await (await fetch('/meta.json')).json();
  const v = document.createElement('video');
  v.muted = true;
  document.body.appendChild(v);
  const access = await navigator.requestMediaKeySystemAccess('org.w3.clearkey', [{
    initDataTypes: ['keyids'],
    videoCapabilities: meta.filter(t => t.kind === 'video').map(t => ({contentType: t.mime})),
    audioCapabilities: meta.filter(t => t.kind === 'audio').map(t => ({contentType: t.mime})),
  }]);
  const keys = await access.createMediaKeys();
  await v.setMediaKeys(keys);
  const session = keys.createSession();
  session.addEventListener('message', e => {
    const jwk = {keys: [{kty: 'oct', kid: b64url(KID), k: b64url(key)}], type: 'temporary'};
    session.update(new TextEncoder().encode(JSON.stringify(jwk)));
  });
  await session.generateRequest('keyids', new TextEncoder().encode(JSON.stringify({kids: [b64url(KID)]})));
  const ms = new MediaSource();
  v.src = URL.createObjectURL(ms);
  await new Promise(r => ms.addEventListener('sourceopen', r, {once: true}));
  const buffered = [];
  try {
    await Promise.all(meta.map(async (t, i) => {
      const sb = ms.addSourceBuffer(t.mime);
      for (let j = 0; j < t.pieces; j++) {
        const data = await (await fetch(`/t${i}/${j}`)).arrayBuffer();
        sb.appendBuffer(data);
        await new Promise((ok, fail) => {
          sb.addEventListener('updateend', ok, {once: true});
          sb.addEventListener('error', () => fail(new Error('append failed')), {once: true});
        });
      }
      buffered[i] = [sb.buffered.start(0), sb.buffered.end(sb.buffered.length - 1), sb.buffered.length];
    }));
    ms.endOfStream();
  } catch (e) {
    return {error: 'append: ' + String(e) + ' / ' + (v.error && v.error.message), buffered};
  }
  v.play().catch(() => {});
  await waitFor(() => v.currentTime >= 3 || v.error, 30000);
  const played = v.currentTime;
  let resumed = null;
  if (!v.error) {
    v.currentTime = 6;
    await waitFor(() => v.currentTime >= 6.5 || v.error, 30000);
    resumed = v.currentTime;
  }
  return {played, resumed, error: v.error && v.error.message, width: v.videoWidth, height: v.videoHeight, buffered,
          frames: v.getVideoPlaybackQuality().totalVideoFrames};
}

(async () => {
  let result;
  try {
    const wrong = await play(WRONG);
    const right = await play(KEY);
    result = {wrong, right};
  } catch (e) { result = {failed: String(e)}; }
  await fetch('/result', {method: 'POST', body: JSON.stringify(result)});
})();
</script></body></html>"#;

/// Serves `files` on 127.0.0.1 until a result is POSTed; returns the port and the result channel.
fn serve(files: HashMap<String, (String, Vec<u8>)>) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Some(result) = answer(stream, &files) {
                let _ = tx.send(result);
                return;
            }
        }
    });
    (port, rx)
}

fn answer(mut stream: TcpStream, files: &HashMap<String, (String, Vec<u8>)>) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?);
    if method == "POST" && path == "/result" {
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body).ok()?;
        let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        return Some(String::from_utf8_lossy(&body).into_owned());
    }
    let response = match files.get(path) {
        Some((mime, body)) => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    let _ = stream.write_all(&response);
    None
}

#[test]
fn chromium_plays_the_packaged_title_with_clear_key() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.mp4");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=8",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=660:sample_rate=48000:duration=8",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(made.success());

    let keys = TitleKeys {
        key_id: KeyId(*b"chromium-test-k!"),
        content_key: *b"0123456789ABCDEF",
        block_key: [7; 32],
    };
    let mut sink = MemorySink::default();
    let title = package(
        &input,
        &dir.path().join("work"),
        &keys,
        &PackageOptions::default(),
        &mut sink,
        &mut |_| {},
    )
    .unwrap();

    let mut files: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    let mut meta = Vec::new();
    for (i, track) in title.tracks.iter().enumerate() {
        for (j, entry) in std::iter::once(&track.init)
            .chain(&track.blocks)
            .enumerate()
        {
            let opened =
                verify_and_open(&keys.block_key, &sink.0[&entry.sha256], &entry.sha256).unwrap();
            files.insert(format!("/t{i}/{j}"), ("video/mp4".into(), opened));
        }
        meta.push(serde_json::json!({
            "kind": track.kind,
            "mime": track.mime,
            "pieces": track.blocks.len() + 1,
        }));
    }
    let mut wrong = keys.content_key;
    wrong[15] ^= 1;
    let page = PAGE
        .replace("__KID__", &hex::encode(keys.key_id.0))
        .replace("__KEY__", &hex::encode(keys.content_key))
        .replace("__WRONG__", &hex::encode(wrong));
    files.insert("/".into(), ("text/html".into(), page.into_bytes()));
    files.insert(
        "/meta.json".into(),
        (
            "application/json".into(),
            serde_json::to_vec(&meta).unwrap(),
        ),
    );
    let (port, results) = serve(files);

    let profile = dir.path().join("profile");
    let mut chromium = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outcome = results.recv_timeout(Duration::from_secs(150));
    let _ = chromium.kill();
    let _ = chromium.wait();
    let report = outcome.expect("the page reported within 150 s");
    eprintln!("chromium: {report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();

    let right = &report["right"];
    assert!(right["error"].is_null(), "playback error: {report}");
    assert!(right["played"].as_f64().unwrap() >= 3.0, "{report}");
    assert!(
        right["resumed"].as_f64().unwrap() >= 6.5,
        "seek resumed: {report}"
    );
    assert_eq!(
        (right["width"].as_u64(), right["height"].as_u64()),
        (Some(320), Some(240))
    );
    for track in right["buffered"].as_array().unwrap() {
        assert!(
            track[0].as_f64().unwrap() < 0.05,
            "buffer starts at 0: {report}"
        );
        assert!(
            track[1].as_f64().unwrap() > 7.9,
            "buffer reaches the end: {report}"
        );
        assert_eq!(track[2].as_u64(), Some(1), "one contiguous range: {report}");
    }
    let wrong = &report["wrong"];
    assert!(
        !wrong["error"].is_null() && wrong["resumed"].is_null(),
        "a wrong key must not play: {report}"
    );
}
