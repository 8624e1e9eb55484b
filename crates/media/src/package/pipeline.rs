//! The packaging pipeline: stages, scratch files and block accounting.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::RngCore;
use rand::rngs::OsRng;
use telly_proto::hash::Sha256Hash;
use telly_proto::licence::TitleKeys;
use telly_proto::manifest::{BlockEntry, MAX_BLOCK_SIZE, SEAL_OVERHEAD, Track};
use telly_proto::merkle;

use super::boxes::{Mp4Error, TopLevelError, TopLevelReader, fourcc_str};
use super::cenc::{IvSequence, PsshEntry};
use super::fragment::{FragmentTiming, protect_fragment};
use super::init::{TrackSetup, protect_init};
use super::{
    BlockSink, MediaError, PackageOptions, PackagedTitle, Progress, Stage, clear_outputs, ffmpeg,
    protection_systems,
};
use crate::seal::seal_block;

/// The largest plaintext a block may have so that, sealed, it stays within the
/// manifest's limit.
const MAX_PLAIN_BLOCK: u64 = MAX_BLOCK_SIZE - SEAL_OVERHEAD;

/// Probe, transcode (ffmpeg) to clear fMP4 (one file per track), encrypt each
/// fragment with CENC under `keys.content_key` / `keys.key_id`, seal init segments
/// and fragments under `keys.block_key`, hand them to `sink`, grab a poster.
///
/// `work_dir` is scratch space the caller removes afterwards (created if missing).
/// On error, the files this call created in it are removed; blocks already handed
/// to `sink` stay there (they are content-addressed and unreferenced until a
/// manifest names them). On success the clear transcode is left in `work_dir`
/// ([`super::CLEAR_VIDEO_FILE`], [`super::CLEAR_AUDIO_FILE`]).
pub fn package(
    input: &Path,
    work_dir: &Path,
    keys: &TitleKeys,
    opts: &PackageOptions,
    sink: &mut dyn BlockSink,
    progress: &mut dyn FnMut(Progress),
) -> Result<PackagedTitle, MediaError> {
    progress(Progress {
        stage: Stage::Probe,
        fraction: 0.0,
    });
    let info = ffmpeg::probe(input, opts)?;
    progress(Progress {
        stage: Stage::Probe,
        fraction: 1.0,
    });
    tracing::info!(
        input = %input.display(),
        format = %info.format_name,
        video = %info.video.codec_name,
        width = info.video.width,
        height = info.video.height,
        audio = info.audio.as_ref().map(|a| a.codec_name.as_str()).unwrap_or("none"),
        duration_ms = ?info.duration_ms,
        "probed"
    );

    let mut scratch = Scratch::new(work_dir)?;
    let outputs = clear_outputs(work_dir, info.audio.is_some());
    scratch.claim(&outputs.video)?;
    if let Some(audio) = &outputs.audio {
        scratch.claim(audio)?;
    }
    let started = Instant::now();
    ffmpeg::transcode(input, &info, &outputs, opts, &mut |fraction| {
        progress(Progress {
            stage: Stage::Transcode,
            fraction,
        })
    })?;
    let transcode_ms = elapsed_ms(started);

    let started = Instant::now();
    let clear_files: Vec<PathBuf> = std::iter::once(outputs.video.clone())
        .chain(outputs.audio.clone())
        .collect();
    let total_bytes: u64 = clear_files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        .max(1);
    let systems = protection_systems(keys.key_id);
    let mut ivs = IvSequence::starting_at(OsRng.next_u64());
    let mut done_bytes = 0u64;
    let mut protected = Vec::new();
    for (i, clear) in clear_files.iter().enumerate() {
        let out = work_dir.join(format!("protected-{i}.mp4"));
        scratch.claim(&out)?;
        protected.push(protect_track(
            clear,
            &out,
            keys,
            &systems,
            &mut ivs,
            &mut |bytes| {
                done_bytes += bytes;
                progress(Progress {
                    stage: Stage::Encrypt,
                    fraction: (done_bytes as f64 / total_bytes as f64).min(1.0) as f32,
                });
            },
        )?);
    }

    let total_blocks: usize = protected.iter().map(|t| t.fragments.len() + 1).sum();
    let mut sealed_blocks = 0usize;
    let mut tracks = Vec::new();
    for track in &protected {
        tracks.push(seal_track(track, keys, sink, &mut || {
            sealed_blocks += 1;
            progress(Progress {
                stage: Stage::Seal,
                fraction: sealed_blocks as f32 / total_blocks as f32,
            });
        })?);
        scratch.remove_now(&track.file);
    }
    let package_ms = elapsed_ms(started);

    progress(Progress {
        stage: Stage::Poster,
        fraction: 0.0,
    });
    let poster_path = work_dir.join("poster.jpg");
    scratch.claim(&poster_path)?;
    let poster_jpeg = ffmpeg::poster(input, &info, &poster_path, opts)?;
    scratch.remove_now(&poster_path);
    progress(Progress {
        stage: Stage::Poster,
        fraction: 1.0,
    });

    let duration_ms = tracks
        .iter()
        .filter_map(|t| t.blocks.last().map(|b| b.start_ms + b.duration_ms))
        .max()
        .unwrap_or(0);
    scratch.keep_all();
    tracing::info!(transcode_ms, package_ms, duration_ms, "packaged");
    Ok(PackagedTitle {
        duration_ms,
        tracks,
        poster_jpeg,
        transcode_ms,
        package_ms,
    })
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> MediaError {
    move |source| MediaError::Io { context, source }
}

/// Files this call creates in `work_dir`; on drop (an error path) they are removed.
struct Scratch {
    dir: PathBuf,
    created_dir: bool,
    files: Vec<PathBuf>,
}

impl Scratch {
    fn new(dir: &Path) -> Result<Self, MediaError> {
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(io_error(format!("creating work dir {}", dir.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            created_dir,
            files: Vec::new(),
        })
    }

    /// Registers a file this call is about to create. One that already exists is
    /// not ours to overwrite (or to remove later), so that is an error.
    fn claim(&mut self, path: &Path) -> Result<(), MediaError> {
        if path.exists() {
            return Err(MediaError::Io {
                context: format!("preparing {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the work dir already holds this file; use a fresh work dir",
                ),
            });
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    fn remove_now(&mut self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a scratch file");
        }
        self.files.retain(|p| p != path);
    }

    fn keep_all(&mut self) {
        self.files.clear();
        self.created_dir = false;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in std::mem::take(&mut self.files) {
            self.remove_now(&path);
        }
        if self.created_dir {
            // Only if empty: anything else in it is not ours.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// One track's CENC-protected file and where its pieces lie in it.
struct ProtectedTrack {
    setup: TrackSetup,
    file: PathBuf,
    init_len: u64,
    fragments: Vec<(u64, FragmentTiming)>,
}

fn top_level_error(clear: &Path) -> impl Fn(TopLevelError) -> MediaError {
    let context = format!("reading ffmpeg's output {}", clear.display());
    move |e| match e {
        TopLevelError::Mp4(e) => MediaError::Mp4(e),
        TopLevelError::Io(source) => MediaError::Io {
            context: context.clone(),
            source,
        },
    }
}

/// Reads a clear single-track fragmented MP4 box by box and writes its protected
/// form: init segment first, then each `moof` + `mdat`. Boxes outside fragments
/// that blocks do not carry (`mfra`, `free`, `styp`, `sidx`, ...) are dropped.
fn protect_track(
    clear: &Path,
    out: &Path,
    keys: &TitleKeys,
    systems: &[PsshEntry],
    ivs: &mut IvSequence,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<ProtectedTrack, MediaError> {
    let file = File::open(clear).map_err(io_error(format!("opening {}", clear.display())))?;
    let mut reader = TopLevelReader::new(BufReader::new(file), MAX_PLAIN_BLOCK);
    let mut writer =
        BufWriter::new(File::create(out).map_err(io_error(format!("creating {}", out.display())))?);
    let write_error = || io_error(format!("writing {}", out.display()));
    let read_error = top_level_error(clear);

    let mut init_parts: Vec<Vec<u8>> = Vec::new();
    let mut setup: Option<(TrackSetup, u64)> = None;
    let mut pending_moof: Option<Vec<u8>> = None;
    let mut fragments = Vec::new();
    while let Some((kind, bytes)) = reader.next_box().map_err(&read_error)? {
        on_bytes(bytes.len() as u64);
        match &kind {
            b"ftyp" | b"moov" if setup.is_none() => init_parts.push(bytes),
            b"moof" => {
                if pending_moof.is_some() {
                    return Err(Mp4Error::Malformed("a 'moof' without its 'mdat'".into()).into());
                }
                if setup.is_none() {
                    let (init, track) = protect_init(&init_parts.concat(), &keys.key_id, systems)?;
                    writer.write_all(&init).map_err(write_error())?;
                    setup = Some((track, init.len() as u64));
                }
                pending_moof = Some(bytes);
            }
            b"mdat" => {
                let (Some(moof), Some((track, _))) = (pending_moof.take(), &setup) else {
                    return Err(Mp4Error::Malformed("an 'mdat' outside a fragment".into()).into());
                };
                let (fragment, timing) =
                    protect_fragment(&moof, &bytes, track, &keys.content_key, ivs)?;
                if fragment.len() as u64 > MAX_PLAIN_BLOCK {
                    return Err(Mp4Error::Unsupported(format!(
                        "a fragment of {} bytes is over the block limit",
                        fragment.len()
                    ))
                    .into());
                }
                writer.write_all(&fragment).map_err(write_error())?;
                fragments.push((fragment.len() as u64, timing));
            }
            other if pending_moof.is_some() => {
                return Err(Mp4Error::Malformed(format!(
                    "'{}' between a 'moof' and its 'mdat'",
                    fourcc_str(other)
                ))
                .into());
            }
            other => tracing::debug!(kind = %fourcc_str(other), "dropping a top-level box"),
        }
    }
    if pending_moof.is_some() {
        return Err(
            Mp4Error::Malformed("file ends after a 'moof' without its 'mdat'".into()).into(),
        );
    }
    let Some((setup, init_len)) = setup else {
        return Err(Mp4Error::Malformed(format!(
            "ffmpeg wrote no fragments to {}",
            clear.display()
        ))
        .into());
    };
    writer.flush().map_err(write_error())?;
    Ok(ProtectedTrack {
        setup,
        file: out.to_path_buf(),
        init_len,
        fragments,
    })
}

/// Converts media ticks to whole milliseconds (rounding down).
fn ticks_to_ms(ticks: u64, timescale: u32) -> u64 {
    (u128::from(ticks) * 1000 / u128::from(timescale.max(1))) as u64
}

/// Start and duration in ms of each fragment, contiguous by construction: a block
/// runs from its own decode time to the next one's (the last to its own end).
fn block_times(timings: &[FragmentTiming], timescale: u32) -> Result<Vec<(u64, u64)>, Mp4Error> {
    let mut out = Vec::with_capacity(timings.len());
    for (i, t) in timings.iter().enumerate() {
        let end_ticks = match timings.get(i + 1) {
            Some(next) if next.decode_time < t.decode_time => {
                return Err(Mp4Error::Malformed(format!(
                    "fragment {} decodes at {} before fragment {i} at {}",
                    i + 1,
                    next.decode_time,
                    t.decode_time
                )));
            }
            Some(next) => next.decode_time,
            None => t.decode_time + t.duration,
        };
        let start = ticks_to_ms(t.decode_time, timescale);
        out.push((start, ticks_to_ms(end_ticks, timescale) - start));
    }
    Ok(out)
}

/// Seals a track's init segment and fragments, hands them to the sink, and
/// describes them as the manifest will.
fn seal_track(
    track: &ProtectedTrack,
    keys: &TitleKeys,
    sink: &mut dyn BlockSink,
    on_block: &mut dyn FnMut(),
) -> Result<Track, MediaError> {
    let file =
        File::open(&track.file).map_err(io_error(format!("opening {}", track.file.display())))?;
    let mut reader = BufReader::new(file);
    let mut read_piece = |len: u64| -> Result<Vec<u8>, MediaError> {
        let mut buf = vec![0u8; usize::try_from(len).expect("bounded by MAX_PLAIN_BLOCK")];
        reader
            .read_exact(&mut buf)
            .map_err(io_error(format!("reading {}", track.file.display())))?;
        Ok(buf)
    };

    let init_plain = read_piece(track.init_len)?;
    let init = seal_and_put(&init_plain, keys, sink, 0, 0)?;
    on_block();

    let timings: Vec<FragmentTiming> = track.fragments.iter().map(|(_, t)| *t).collect();
    let times = block_times(&timings, track.setup.timescale)?;
    let mut blocks = Vec::with_capacity(times.len());
    let mut peak_bps = 0u64;
    for ((len, _), (start_ms, duration_ms)) in track.fragments.iter().zip(times) {
        let plain = read_piece(*len)?;
        let entry = seal_and_put(&plain, keys, sink, start_ms, duration_ms)?;
        if let Some(bps) = (entry.size * 8 * 1000).checked_div(duration_ms) {
            peak_bps = peak_bps.max(bps);
        }
        blocks.push(entry);
        on_block();
    }
    Ok(Track {
        kind: track.setup.kind,
        codec: track.setup.codec.clone(),
        mime: track.setup.mime(),
        bandwidth: peak_bps,
        width: track.setup.width,
        height: track.setup.height,
        init,
        blocks,
    })
}

fn seal_and_put(
    plain: &[u8],
    keys: &TitleKeys,
    sink: &mut dyn BlockSink,
    start_ms: u64,
    duration_ms: u64,
) -> Result<BlockEntry, MediaError> {
    let mut nonce = [0u8; crate::seal::NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = seal_block(&keys.block_key, nonce, plain);
    let sha256 = Sha256Hash::of(&sealed);
    sink.put(&sha256, &sealed).map_err(MediaError::Sink)?;
    Ok(BlockEntry {
        start_ms,
        duration_ms,
        size: sealed.len() as u64,
        sha256,
        piece_root: merkle::root(&sealed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(decode_time: u64, duration: u64) -> FragmentTiming {
        FragmentTiming {
            decode_time,
            duration,
            samples: 1,
        }
    }

    #[test]
    fn block_times_are_contiguous_even_with_rounding_and_gaps() {
        // 12800 ticks/s; 25 fps fragments of 50 frames, then a short last one.
        let t = [
            timing(0, 25_600),
            timing(25_600, 25_600),
            timing(51_200, 7_680),
        ];
        assert_eq!(
            block_times(&t, 12_800).unwrap(),
            vec![(0, 2000), (2000, 2000), (4000, 600)]
        );
        // 48 kHz audio fragments of 94 frames (2.005333 s) do not fall on whole ms.
        let a: Vec<FragmentTiming> = (0..4).map(|i| timing(i * 96_256, 96_256)).collect();
        let times = block_times(&a, 48_000).unwrap();
        for pair in times.windows(2) {
            assert_eq!(pair[0].0 + pair[0].1, pair[1].0);
        }
        assert_eq!(times[3].0 + times[3].1, 4 * 96_256 * 1000 / 48_000);
        // A gap is absorbed by the block before it.
        let g = [timing(0, 1000), timing(1500, 1000)];
        assert_eq!(
            block_times(&g, 1000).unwrap(),
            vec![(0, 1500), (1500, 1000)]
        );
        // Going back in time is refused.
        assert!(block_times(&[timing(5000, 10), timing(100, 10)], 1000).is_err());
    }

    #[test]
    fn scratch_removes_only_what_it_created() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("keep.txt"), b"x").unwrap();
        {
            let mut s = Scratch::new(&work).unwrap();
            let a = work.join("a");
            s.claim(&a).unwrap();
            std::fs::write(&a, b"1").unwrap();
        }
        assert!(!work.exists(), "an unfinished call leaves nothing behind");
        {
            let mut s = Scratch::new(&theirs).unwrap();
            assert!(s.claim(&theirs.join("keep.txt")).is_err());
            let b = theirs.join("b");
            s.claim(&b).unwrap();
            std::fs::write(&b, b"2").unwrap();
        }
        assert!(theirs.join("keep.txt").exists());
        assert!(!theirs.join("b").exists());
        {
            let mut s = Scratch::new(&work).unwrap();
            let c = work.join("c");
            s.claim(&c).unwrap();
            std::fs::write(&c, b"3").unwrap();
            s.keep_all();
        }
        assert!(work.join("c").exists());
    }
}
