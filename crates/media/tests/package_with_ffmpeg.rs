//! End-to-end checks of `package` against the real ffmpeg, and an independent
//! check of its CENC output: ffmpeg decrypts the opened blocks with the content key
//! and its decoded frames must equal those of the clear transcode.
//!
//! These tests need `ffmpeg` and `ffprobe` on PATH (xtask installs them); without
//! them each test prints why it is skipped and returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use telly_media::package::{
    BlockSink, CLEAR_AUDIO_FILE, CLEAR_VIDEO_FILE, MediaError, PackageOptions, PackagedTitle,
    Progress, Stage, package,
};
use telly_media::seal::verify_and_open;
use telly_proto::hash::Sha256Hash;
use telly_proto::licence::{KeyId, TitleKeys};
use telly_proto::manifest::{MANIFEST_VERSION, Manifest, TrackKind};
use telly_proto::merkle;

fn ffmpeg_present() -> bool {
    let works = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("ffmpeg") && works("ffprobe") {
        true
    } else {
        eprintln!("SKIPPED: ffmpeg/ffprobe not found on PATH (cargo xtask installs them)");
        false
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Synthetic sources made once per test binary in a temp dir that lives as long as it.
struct Sources {
    _dir: tempfile::TempDir,
    av: PathBuf,
    video_only: PathBuf,
    audio_only: PathBuf,
}

fn sources() -> &'static Sources {
    static SOURCES: OnceLock<Sources> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let av = dir.path().join("av.mkv");
        // 7 s of moving picture and a tone, in a container and codecs the packager
        // must transcode (not already H.264/AAC in MP4).
        run(Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25:duration=7",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100:duration=7",
                "-c:v",
                "mpeg4",
                "-q:v",
                "4",
                "-c:a",
                "pcm_s16le",
                "-shortest",
            ])
            .arg(&av));
        let video_only = dir.path().join("video-only.mp4");
        run(Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=200x150:rate=30:duration=3",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .arg(&video_only));
        let audio_only = dir.path().join("audio-only.m4a");
        run(Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=300:duration=2",
                "-c:a",
                "aac",
            ])
            .arg(&audio_only));
        Sources {
            _dir: dir,
            av,
            video_only,
            audio_only,
        }
    })
}

fn keys() -> TitleKeys {
    TitleKeys {
        key_id: KeyId(*b"telly-test-kid!!"),
        content_key: [
            0x3a, 0x1f, 0x90, 0x5c, 0x07, 0xe2, 0x44, 0xb8, 0x6d, 0x21, 0xc9, 0x0e, 0x73, 0xaa,
            0x58, 0x14,
        ],
        block_key: [0x5e; 32],
    }
}

#[derive(Default)]
struct MemorySink {
    blocks: HashMap<Sha256Hash, Vec<u8>>,
}

impl BlockSink for MemorySink {
    fn put(&mut self, sha256: &Sha256Hash, sealed: &[u8]) -> std::io::Result<()> {
        self.blocks.insert(*sha256, sealed.to_vec());
        Ok(())
    }
}

struct Packaged {
    title: PackagedTitle,
    sink: MemorySink,
    progress: Vec<Progress>,
    work: tempfile::TempDir,
}

fn package_file(input: &Path) -> Result<Packaged, (MediaError, tempfile::TempDir)> {
    let work = tempfile::tempdir().unwrap();
    let mut sink = MemorySink::default();
    let mut progress = Vec::new();
    match package(
        input,
        work.path(),
        &keys(),
        &PackageOptions::default(),
        &mut sink,
        &mut |p| progress.push(p),
    ) {
        Ok(title) => Ok(Packaged {
            title,
            sink,
            progress,
            work,
        }),
        Err(e) => Err((e, work)),
    }
}

/// One track's init segment and blocks, each opened (checked against its hash).
fn opened_pieces(p: &Packaged, kind: TrackKind, block_key: &[u8; 32]) -> Vec<Vec<u8>> {
    let track = p.title.tracks.iter().find(|t| t.kind == kind).unwrap();
    std::iter::once(&track.init)
        .chain(&track.blocks)
        .map(|entry| {
            verify_and_open(block_key, &p.sink.blocks[&entry.sha256], &entry.sha256).unwrap()
        })
        .collect()
}

/// The per-frame lines of `ffmpeg -f framemd5` (stream, dts, pts, duration, size, md5).
///
/// `piped` feeds the file on stdin. ffmpeg 5.1, given a seekable multi-fragment
/// file without `sidx`/`mfra`, parses every `moof` up front and then looks up
/// each packet's CENC info in the last fragment's table, so whole-track checks
/// go through a pipe (where it reads fragments as it goes, from `senc`); single
/// fragments are read from a seekable file (where it reads `saiz`/`saio`).
fn framemd5(file: &[u8], key: Option<&[u8; 16]>, piped: bool) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.mp4");
    std::fs::write(&path, file).unwrap();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error"]);
    if let Some(key) = key {
        cmd.args(["-decryption_key", &hex::encode(key)]);
    }
    if piped {
        cmd.args(["-i", "pipe:0"])
            .stdin(std::fs::File::open(&path).unwrap());
    } else {
        cmd.arg("-nostdin").arg("-i").arg(&path);
    }
    cmd.args(["-f", "framemd5", "-"]);
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Splits a clear fragmented MP4 into its init segment (everything before the
/// first `moof`) and its fragments (`moof` + `mdat`), with a walk of its own.
fn split_clear(file: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut init = Vec::new();
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut at = 0;
    while at + 8 <= file.len() {
        let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && at + size <= file.len(),
            "ffmpeg wrote plain 32-bit box sizes"
        );
        let kind = &file[at + 4..at + 8];
        let bytes = &file[at..at + size];
        match kind {
            b"moof" => fragments.push(bytes.to_vec()),
            b"mdat" => fragments.last_mut().unwrap().extend_from_slice(bytes),
            _ if fragments.is_empty() => init.extend_from_slice(bytes),
            _ => {} // mfra at the end
        }
        at += size;
    }
    (init, fragments)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn audio_video_title_packages_and_decrypts_to_the_clear_frames() {
    if !ffmpeg_present() {
        return;
    }
    let p = package_file(&sources().av).map_err(|(e, _)| e).unwrap();
    let keys = keys();

    // The tracks as the manifest will describe them.
    assert_eq!(p.title.tracks.len(), 2);
    let video = &p.title.tracks[0];
    let audio = &p.title.tracks[1];
    assert_eq!(video.kind, TrackKind::Video);
    assert!(
        video.codec.starts_with("avc1.64"),
        "High profile: {}",
        video.codec
    );
    assert_eq!(video.mime, format!("video/mp4; codecs=\"{}\"", video.codec));
    assert_eq!((video.width, video.height), (Some(320), Some(240)));
    assert_eq!(audio.kind, TrackKind::Audio);
    assert_eq!(audio.codec, "mp4a.40.2");
    assert!(video.bandwidth > 0 && audio.bandwidth > 0);

    // ~2 s fragments starting on key frames: 7 s of 25 fps video is 2+2+2+1 s.
    let durations: Vec<u64> = video.blocks.iter().map(|b| b.duration_ms).collect();
    assert_eq!(durations, vec![2000, 2000, 2000, 1000]);
    assert!(
        audio.blocks.len() >= 3 && audio.blocks.len() <= 5,
        "{} audio blocks",
        audio.blocks.len()
    );
    for b in &audio.blocks[..audio.blocks.len() - 1] {
        assert!(
            (1900..=2100).contains(&b.duration_ms),
            "audio block of {} ms",
            b.duration_ms
        );
    }
    assert!(
        (6900..=7100).contains(&p.title.duration_ms),
        "{} ms",
        p.title.duration_ms
    );

    // A manifest built from it validates (contiguity, sizes).
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        title_id: "t".into(),
        title: "Test".into(),
        duration_ms: p.title.duration_ms,
        key_id: keys.key_id,
        tracks: p.title.tracks.clone(),
        published_at: 0,
    };
    manifest.validate().unwrap();

    // Every entry describes exactly the sealed bytes the sink got.
    let entries: Vec<_> = p
        .title
        .tracks
        .iter()
        .flat_map(|t| std::iter::once(&t.init).chain(&t.blocks))
        .collect();
    assert_eq!(p.sink.blocks.len(), entries.len());
    for e in &entries {
        let sealed = &p.sink.blocks[&e.sha256];
        assert_eq!(e.size, sealed.len() as u64);
        assert_eq!(e.sha256, Sha256Hash::of(sealed));
        assert_eq!(e.piece_root, merkle::root(sealed));
    }

    // The poster is a JPEG; progress went through every stage in order and ended at 1.
    assert!(p.title.poster_jpeg.starts_with(&[0xff, 0xd8]) && p.title.poster_jpeg.len() > 500);
    let stages: Vec<Stage> = p.progress.iter().map(|x| x.stage).collect::<Vec<_>>();
    let mut order = stages.clone();
    order.dedup();
    assert_eq!(
        order,
        vec![
            Stage::Probe,
            Stage::Transcode,
            Stage::Encrypt,
            Stage::Seal,
            Stage::Poster
        ]
    );
    assert!(p.progress.iter().all(|x| (0.0..=1.0).contains(&x.fraction)));
    for stage in [Stage::Transcode, Stage::Encrypt, Stage::Seal] {
        let last = p.progress.iter().rfind(|x| x.stage == stage).unwrap();
        assert_eq!(last.fraction, 1.0, "{stage:?} ends complete");
    }
    assert!(
        p.progress
            .iter()
            .filter(|x| x.stage == Stage::Transcode)
            .count()
            >= 2
    );

    // Only the clear transcode stays in the work dir.
    let mut left: Vec<String> = std::fs::read_dir(p.work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![CLEAR_AUDIO_FILE.to_owned(), CLEAR_VIDEO_FILE.to_owned()]
    );

    // The independent check, per track.
    for (kind, clear_name) in [
        (TrackKind::Video, CLEAR_VIDEO_FILE),
        (TrackKind::Audio, CLEAR_AUDIO_FILE),
    ] {
        let pieces = opened_pieces(&p, kind, &keys.block_key);
        let opened = pieces.concat();
        // Structure: protected sample entry, Clear Key pssh, per-fragment CENC info.
        let entry = if kind == TrackKind::Video {
            b"encv"
        } else {
            b"enca"
        };
        assert!(
            contains(&pieces[0], entry)
                && contains(&pieces[0], b"pssh")
                && contains(&pieces[0], b"tenc")
        );
        for piece in &pieces[1..] {
            for b in [b"senc", b"saiz", b"saio"] {
                assert!(
                    contains(piece, b),
                    "{kind:?} fragments carry {}",
                    String::from_utf8_lossy(b)
                );
            }
        }
        let clear_file = std::fs::read(p.work.path().join(clear_name)).unwrap();
        check_track_decrypts(kind, &pieces, &opened, &clear_file, &keys.content_key);
    }
}

/// ffmpeg decrypts `opened` (the whole track) and each block on its own; decoded
/// frames must equal those of the clear transcode, and a wrong key must not.
fn check_track_decrypts(
    kind: TrackKind,
    pieces: &[Vec<u8>],
    opened: &[u8],
    clear_file: &[u8],
    key: &[u8; 16],
) {
    let clear = framemd5(clear_file, None, true).unwrap();
    let decrypted = framemd5(opened, Some(key), true).unwrap();
    assert!(clear.len() >= 50, "{kind:?}: {} clear frames", clear.len());
    assert_eq!(decrypted.len(), clear.len(), "{kind:?}: frame count");
    assert_eq!(
        decrypted, clear,
        "{kind:?}: decrypted frames equal the clear ones"
    );

    // Each block alone after the init segment, against the same clear fragment.
    let (clear_init, clear_fragments) = split_clear(clear_file);
    assert_eq!(
        clear_fragments.len(),
        pieces.len() - 1,
        "{kind:?}: one block per fragment"
    );
    for (i, (block, clear_fragment)) in pieces[1..].iter().zip(&clear_fragments).enumerate() {
        let alone = [pieces[0].as_slice(), block].concat();
        let clear_alone = [clear_init.as_slice(), clear_fragment].concat();
        let frames = framemd5(&alone, Some(key), false).unwrap();
        assert!(!frames.is_empty());
        assert_eq!(
            frames,
            framemd5(&clear_alone, None, false).unwrap(),
            "{kind:?} block {i}"
        );
    }

    let mut wrong = *key;
    wrong[0] ^= 0x80;
    if let Ok(frames) = framemd5(opened, Some(&wrong), true) {
        assert_ne!(
            frames, clear,
            "{kind:?}: a wrong key must not give the clear frames"
        );
    } // else the decoder gave up on garbage: not the clear frames either
}

#[test]
fn a_video_without_audio_makes_a_video_only_title() {
    if !ffmpeg_present() {
        return;
    }
    let p = package_file(&sources().video_only)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(p.title.tracks.len(), 1);
    let video = &p.title.tracks[0];
    assert_eq!(video.kind, TrackKind::Video);
    assert_eq!((video.width, video.height), (Some(200), Some(150)));
    let durations: Vec<u64> = video.blocks.iter().map(|b| b.duration_ms).collect();
    assert_eq!(durations, vec![2000, 1000]);
    let pieces = opened_pieces(&p, TrackKind::Video, &keys().block_key);
    let clear_file = std::fs::read(p.work.path().join(CLEAR_VIDEO_FILE)).unwrap();
    check_track_decrypts(
        TrackKind::Video,
        &pieces,
        &pieces.concat(),
        &clear_file,
        &keys().content_key,
    );
}

fn assert_refused(input: &Path, expect: impl Fn(&MediaError) -> bool) {
    match package_file(input) {
        Ok(_) => panic!("{} was packaged", input.display()),
        Err((e, work)) => {
            assert!(expect(&e), "unexpected error for {}: {e}", input.display());
            let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
            assert!(left.is_empty(), "a refusal leaves nothing behind: {left:?}");
            eprintln!("refused as expected: {e}");
        }
    }
}

#[test]
fn unusable_inputs_are_refused_clearly() {
    if !ffmpeg_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "These are some notes, not a film.\n".repeat(20)).unwrap();
    assert_refused(&text, |e| matches!(e, MediaError::NotMedia { .. }));

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert_refused(&empty, |e| matches!(e, MediaError::Empty { .. }));

    assert_refused(&sources().audio_only, |e| {
        matches!(e, MediaError::NoVideoStream { .. })
    });

    let missing = dir.path().join("no-such-file.mp4");
    assert_refused(&missing, |e| matches!(e, MediaError::Unreadable { .. }));
    assert_refused(dir.path(), |e| matches!(e, MediaError::Unreadable { .. }));

    // A truncated video: the start of a real file that ends mid-stream.
    let bytes = std::fs::read(&sources().video_only).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    assert_refused(&cut, |e| matches!(e, MediaError::NotMedia { .. }));
}

#[test]
fn a_missing_ffmpeg_is_named() {
    // Needs no ffmpeg: the refusal comes before any tool runs.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.mp4");
    std::fs::write(&input, b"not empty").unwrap();
    let opts = PackageOptions {
        ffprobe: dir.path().join("no-ffprobe"),
        ..PackageOptions::default()
    };
    let err = package(
        &input,
        &dir.path().join("work"),
        &keys(),
        &opts,
        &mut MemorySink::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, MediaError::ToolMissing { .. }), "{err}");
    assert!(err.to_string().contains("install ffmpeg"));
    assert!(!dir.path().join("work").exists());
}

#[test]
fn a_failing_sink_stops_packaging_and_cleans_up() {
    if !ffmpeg_present() {
        return;
    }
    struct FullDisk;
    impl BlockSink for FullDisk {
        fn put(&mut self, _: &Sha256Hash, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }
    let work = tempfile::tempdir().unwrap();
    let err = package(
        &sources().video_only,
        work.path(),
        &keys(),
        &PackageOptions::default(),
        &mut FullDisk,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, MediaError::Sink(_)), "{err}");
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn a_failing_transcode_reports_ffmpeg_and_removes_its_output() {
    if !ffmpeg_present() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // Stands in for an ffmpeg that dies mid-way: it writes to its last output,
    // complains and fails.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("ffmpeg");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor last; do :; done\necho partial > \"$last\"\necho 'Conversion failed!' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = dir.path().join("work");
    let opts = PackageOptions {
        ffmpeg: fake,
        ..PackageOptions::default()
    };
    let err = package(
        &sources().av,
        &work,
        &keys(),
        &opts,
        &mut MemorySink::default(),
        &mut |_| {},
    )
    .unwrap_err();
    match &err {
        MediaError::ToolFailed {
            task, stderr_tail, ..
        } => {
            assert_eq!(*task, "transcode");
            assert!(stderr_tail.contains("Conversion failed!"), "{err}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(
        !work.exists(),
        "the work dir this call created is gone with its files"
    );
}
