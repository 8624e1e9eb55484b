//! Driving ffprobe and ffmpeg: what the input is, the clear fragmented-MP4
//! transcode (one file per track), and the poster frame.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{MediaError, PackageOptions};

/// What ffprobe says about an input that the packager can use.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeInfo {
    /// `None` when the container does not say (progress is then not a fraction).
    pub duration_ms: Option<u64>,
    pub format_name: String,
    pub video: VideoStream,
    pub audio: Option<AudioStream>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoStream {
    /// ffprobe's stream index, as `-map 0:N` takes it.
    pub index: u32,
    pub codec_name: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioStream {
    pub index: u32,
    pub codec_name: String,
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    disposition: HashMap<String, i64>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

/// Demuxers that read a single picture (or a sequence of image files), not a video.
fn is_still_image_format(format_name: &str) -> bool {
    format_name == "image2" || format_name.ends_with("_pipe")
}

fn seconds_to_ms(s: &str) -> Option<u64> {
    let secs: f64 = s.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| (secs * 1000.0).round() as u64)
}

fn frame_rate(s: &str) -> Option<f64> {
    let (num, den) = s.split_once('/')?;
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    (num > 0.0 && den > 0.0).then_some(num / den)
}

/// Checks the input is a readable, non-empty file and asks ffprobe what it holds.
pub fn probe(input: &Path, opts: &PackageOptions) -> Result<ProbeInfo, MediaError> {
    let unreadable = |source: std::io::Error| MediaError::Unreadable {
        path: input.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(input).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unreadable(std::io::Error::other("not a regular file")));
    }
    // Opening catches permission problems that metadata alone does not.
    std::fs::File::open(input).map_err(unreadable)?;
    if meta.len() == 0 {
        return Err(MediaError::Empty {
            path: input.to_path_buf(),
        });
    }

    let output = Command::new(&opts.ffprobe)
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(&opts.ffprobe, e))?;
    if !output.status.success() {
        return Err(MediaError::NotMedia {
            path: input.to_path_buf(),
            detail: tail(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    parse_probe(input, &output.stdout)
}

fn parse_probe(input: &Path, json: &[u8]) -> Result<ProbeInfo, MediaError> {
    let not_media = |detail: String| MediaError::NotMedia {
        path: input.to_path_buf(),
        detail,
    };
    let parsed: ProbeJson = serde_json::from_slice(json)
        .map_err(|e| not_media(format!("ffprobe's report does not parse: {e}")))?;
    let format = parsed
        .format
        .ok_or_else(|| not_media("ffprobe found no container format".into()))?;
    let format_name = format.format_name.unwrap_or_default();
    if parsed.streams.is_empty() {
        return Err(not_media(format!("no streams in '{format_name}'")));
    }
    if is_still_image_format(&format_name) {
        return Err(not_media(format!(
            "a still image ('{format_name}'), not a video"
        )));
    }
    let video = parsed
        .streams
        .iter()
        .filter(|s| s.codec_type.as_deref() == Some("video"))
        // Cover art in audio files is a "video" stream of one picture.
        .find(|s| s.disposition.get("attached_pic").copied().unwrap_or(0) == 0)
        .ok_or_else(|| MediaError::NoVideoStream {
            path: input.to_path_buf(),
        })?;
    let codec_name = video.codec_name.clone().unwrap_or_default();
    // ffmpeg's "tty" demuxer reads text as ANSI art; that is not a video either.
    if codec_name == "ansi" || format_name == "tty" {
        return Err(not_media("text, not a video".into()));
    }
    let (width, height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(not_media("the video stream has no picture size".into())),
    };
    let duration_ms = format
        .duration
        .as_deref()
        .and_then(seconds_to_ms)
        .or_else(|| video.duration.as_deref().and_then(seconds_to_ms));
    let audio = parsed
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"))
        .map(|s| AudioStream {
            index: s.index,
            codec_name: s.codec_name.clone().unwrap_or_default(),
        });
    Ok(ProbeInfo {
        duration_ms,
        format_name,
        video: VideoStream {
            index: video.index,
            codec_name,
            width,
            height,
            frame_rate: video.avg_frame_rate.as_deref().and_then(frame_rate),
        },
        audio,
    })
}

fn spawn_error(program: &Path, e: std::io::Error) -> MediaError {
    if e.kind() == std::io::ErrorKind::NotFound {
        MediaError::ToolMissing {
            program: program.to_path_buf(),
        }
    } else {
        MediaError::Io {
            context: format!("starting {}", program.display()),
            source: e,
        }
    }
}

/// The last lines of a tool's error output, enough to say what went wrong.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(12);
    let joined = lines[start..].join("\n");
    if joined.is_empty() {
        "(no error output)".into()
    } else {
        joined
    }
}

/// Target video bitrate: about 2 Mbit/s for 1280x720, scaled by picture area.
pub fn video_bitrate(width: u32, height: u32, max_height: u32) -> u64 {
    let out_h = u64::from(height.min(max_height).max(2));
    let out_w = u64::from(width) * out_h / u64::from(height.max(1));
    let area = (out_w * out_h).max(1);
    (2_000_000 * area / (1280 * 720)).clamp(300_000, 8_000_000)
}

/// Where the clear transcode goes: one fragmented MP4 per track.
#[derive(Debug, Clone)]
pub struct ClearOutputs {
    pub video: PathBuf,
    /// `None` when the input has no audio stream.
    pub audio: Option<PathBuf>,
}

/// ffmpeg's arguments for the clear transcode (also what the publish benchmark times).
///
/// Why these settings:
/// - key frames forced every `fragment_ms`, scene cuts off, closed GOPs and a long
///   keyint, so fragments (cut at each key frame by `frag_keyframe`) are all about
///   `fragment_ms` and every one starts with an IDR;
/// - no B-frames: decode order is presentation order, so fragments need no
///   composition offsets or edit lists, and a block's decode time is its play time;
/// - `empty_moov` + `default_base_moof`: an init segment with no samples, and
///   fragment offsets relative to their own `moof`, so each fragment stands alone;
/// - audio fragments are cut by duration, since every audio frame is a key frame.
pub fn transcode_args(
    input: &Path,
    info: &ProbeInfo,
    outputs: &ClearOutputs,
    opts: &PackageOptions,
) -> Vec<std::ffi::OsString> {
    let max_height = (opts.max_height.max(2)) & !1;
    let fragment_s = opts.fragment_ms.max(100) as f64 / 1000.0;
    let keyint = info
        .video
        .frame_rate
        .map(|fps| (fps * fragment_s * 10.0).ceil() as u64)
        .unwrap_or(600)
        .max(10);
    let bitrate = video_bitrate(info.video.width, info.video.height, max_height);
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(Into::into));
    push(&[
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-nostats",
    ]);
    push(&["-progress", "pipe:1", "-i"]);
    args.push(input.into());
    let mut push = |items: &[String]| args.extend(items.iter().map(Into::into));
    push(&[
        "-map".into(),
        format!("0:{}", info.video.index),
        "-map_metadata".into(),
        "-1".into(),
        "-map_chapters".into(),
        "-1".into(),
        "-vf".into(),
        format!("scale=w=-2:h='min({max_height},trunc(ih/2)*2)',format=yuv420p"),
        "-c:v".into(),
        "libx264".into(),
        "-preset".into(),
        "veryfast".into(),
        "-profile:v".into(),
        "high".into(),
        "-bf".into(),
        "0".into(),
        "-crf".into(),
        "23".into(),
        "-maxrate".into(),
        bitrate.to_string(),
        "-bufsize".into(),
        (2 * bitrate).to_string(),
        "-g".into(),
        keyint.to_string(),
        "-sc_threshold".into(),
        "0".into(),
        "-flags".into(),
        "+cgop".into(),
        "-forced-idr".into(),
        "1".into(),
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{fragment_s})"),
        "-movflags".into(),
        "+frag_keyframe+empty_moov+default_base_moof".into(),
        "-f".into(),
        "mp4".into(),
    ]);
    args.push(outputs.video.as_os_str().into());
    if let (Some(audio), Some(path)) = (&info.audio, &outputs.audio) {
        let mut push = |items: &[String]| args.extend(items.iter().map(Into::into));
        push(&[
            "-map".into(),
            format!("0:{}", audio.index),
            "-map_metadata".into(),
            "-1".into(),
            "-map_chapters".into(),
            "-1".into(),
            "-c:a".into(),
            "aac".into(),
            "-b:a".into(),
            "128k".into(),
            "-ac".into(),
            "2".into(),
            "-ar".into(),
            "48000".into(),
            "-frag_duration".into(),
            (opts.fragment_ms.max(100) * 1000).to_string(),
            "-movflags".into(),
            "+empty_moov+default_base_moof".into(),
            "-f".into(),
            "mp4".into(),
        ]);
        args.push(path.as_os_str().into());
    }
    args
}

/// Runs the clear transcode, reporting the fraction of the input done.
pub fn transcode(
    input: &Path,
    info: &ProbeInfo,
    outputs: &ClearOutputs,
    opts: &PackageOptions,
    on_fraction: &mut dyn FnMut(f32),
) -> Result<(), MediaError> {
    let mut child = Command::new(&opts.ffmpeg)
        .args(transcode_args(input, info, outputs, opts))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&opts.ffmpeg, e))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    // Drain stderr on its own thread so ffmpeg never blocks on a full pipe.
    let stderr_reader = std::thread::spawn(move || read_tail(stderr));
    let stdout = child.stdout.take().expect("stdout is piped");
    let total_us = info.duration_ms.map(|ms| ms.saturating_mul(1000));
    let mut last_reported = -1.0f32;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(fraction) = progress_fraction(&line, total_us)
            && fraction - last_reported >= 0.005
        {
            last_reported = fraction;
            on_fraction(fraction);
        }
    }
    let status = child.wait().map_err(|e| MediaError::Io {
        context: "waiting for ffmpeg".into(),
        source: e,
    })?;
    let stderr_tail = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(MediaError::ToolFailed {
            task: "transcode",
            status: status.to_string(),
            stderr_tail: tail(&stderr_tail),
        });
    }
    on_fraction(1.0);
    Ok(())
}

/// Reads a stream to its end, keeping only its last 16 KiB.
fn read_tail(mut stream: impl Read) -> String {
    const KEEP: usize = 16 * 1024;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * KEEP {
            kept.drain(..kept.len() - KEEP);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The fraction done from one `-progress` line (`out_time_us=...`, `progress=end`).
pub fn progress_fraction(line: &str, total_us: Option<u64>) -> Option<f32> {
    let (key, value) = line.trim().split_once('=')?;
    match key {
        "progress" if value == "end" => Some(1.0),
        "out_time_us" => {
            let done: i64 = value.parse().ok()?;
            let total = total_us.filter(|&t| t > 0)?;
            Some((done.max(0) as f64 / total as f64).clamp(0.0, 1.0) as f32)
        }
        _ => None,
    }
}

/// A JPEG of the frame about 10% into the title, at most 480 pixels wide.
pub fn poster(
    input: &Path,
    info: &ProbeInfo,
    out: &Path,
    opts: &PackageOptions,
) -> Result<Vec<u8>, MediaError> {
    let at_ms = info.duration_ms.unwrap_or(0) / 10;
    match grab_frame(input, info, out, opts, at_ms) {
        Ok(jpeg) => Ok(jpeg),
        // Durations can overstate; the first frame always exists.
        Err(_) if at_ms > 0 => grab_frame(input, info, out, opts, 0),
        Err(e) => Err(e),
    }
}

fn grab_frame(
    input: &Path,
    info: &ProbeInfo,
    out: &Path,
    opts: &PackageOptions,
    at_ms: u64,
) -> Result<Vec<u8>, MediaError> {
    let output = Command::new(&opts.ffmpeg)
        .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
        .args(["-ss", &format!("{}.{:03}", at_ms / 1000, at_ms % 1000)])
        .arg("-i")
        .arg(input)
        .args(["-map", &format!("0:{}", info.video.index)])
        .args(["-frames:v", "1", "-vf", "scale=w='min(480,iw)':h=-2"])
        .args(["-q:v", "3", "-c:v", "mjpeg", "-f", "image2"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(&opts.ffmpeg, e))?;
    if !output.status.success() {
        return Err(MediaError::ToolFailed {
            task: "poster",
            status: output.status.to_string(),
            stderr_tail: tail(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    let jpeg = std::fs::read(out).map_err(|e| MediaError::Io {
        context: format!("reading the poster {}", out.display()),
        source: e,
    })?;
    if !jpeg.starts_with(&[0xff, 0xd8]) {
        return Err(MediaError::ToolFailed {
            task: "poster",
            status: output.status.to_string(),
            stderr_tail: "ffmpeg wrote no JPEG".into(),
        });
    }
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_json(streams: &str, format: &str) -> Vec<u8> {
        format!(r#"{{"streams": [{streams}], "format": {{"format_name": "{format}", "duration": "12.5"}}}}"#)
            .into_bytes()
    }

    const VIDEO: &str = r#"{"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080, "avg_frame_rate": "30000/1001"}"#;
    const AUDIO: &str = r#"{"index": 1, "codec_type": "audio", "codec_name": "aac"}"#;
    const COVER: &str = r#"{"index": 2, "codec_type": "video", "codec_name": "mjpeg", "width": 500, "height": 500, "disposition": {"attached_pic": 1}}"#;

    #[test]
    fn probe_report_is_read() {
        let info = parse_probe(
            Path::new("x"),
            &probe_json(&format!("{VIDEO},{AUDIO}"), "mov,mp4"),
        )
        .unwrap();
        assert_eq!(info.duration_ms, Some(12_500));
        assert_eq!(
            (info.video.index, info.video.width, info.video.height),
            (0, 1920, 1080)
        );
        assert!((info.video.frame_rate.unwrap() - 29.97).abs() < 0.01);
        assert_eq!(info.audio.unwrap().index, 1);
    }

    #[test]
    fn unusable_reports_are_refused() {
        let p = Path::new("x");
        assert!(matches!(
            parse_probe(p, &probe_json(AUDIO, "mp3")),
            Err(MediaError::NoVideoStream { .. })
        ));
        // Cover art does not make an audio file a video.
        assert!(matches!(
            parse_probe(p, &probe_json(&format!("{AUDIO},{COVER}"), "mp3")),
            Err(MediaError::NoVideoStream { .. })
        ));
        assert!(matches!(
            parse_probe(p, &probe_json(VIDEO, "png_pipe")),
            Err(MediaError::NotMedia { .. })
        ));
        assert!(matches!(
            parse_probe(p, &probe_json("", "mp4")),
            Err(MediaError::NotMedia { .. })
        ));
        assert!(matches!(
            parse_probe(p, b"{}"),
            Err(MediaError::NotMedia { .. })
        ));
        assert!(matches!(
            parse_probe(p, b"not json"),
            Err(MediaError::NotMedia { .. })
        ));
        let ansi = r#"{"index": 0, "codec_type": "video", "codec_name": "ansi", "width": 640, "height": 400}"#;
        assert!(matches!(
            parse_probe(p, &probe_json(ansi, "tty")),
            Err(MediaError::NotMedia { .. })
        ));
        let sizeless = r#"{"index": 0, "codec_type": "video", "codec_name": "h264"}"#;
        assert!(matches!(
            parse_probe(p, &probe_json(sizeless, "mp4")),
            Err(MediaError::NotMedia { .. })
        ));
    }

    #[test]
    fn progress_lines_become_fractions() {
        assert_eq!(
            progress_fraction("out_time_us=5000000", Some(10_000_000)),
            Some(0.5)
        );
        assert_eq!(
            progress_fraction("out_time_us=-40000", Some(10_000_000)),
            Some(0.0)
        );
        assert_eq!(
            progress_fraction("out_time_us=99000000", Some(10_000_000)),
            Some(1.0)
        );
        assert_eq!(progress_fraction("out_time_us=N/A", Some(10_000_000)), None);
        assert_eq!(progress_fraction("out_time_us=5", None), None);
        assert_eq!(progress_fraction("progress=end", None), Some(1.0));
        assert_eq!(progress_fraction("progress=continue", None), None);
        assert_eq!(progress_fraction("frame=12", Some(1)), None);
    }

    #[test]
    fn bitrate_scales_with_area() {
        assert_eq!(video_bitrate(1920, 1080, 720), 2_000_000);
        assert_eq!(video_bitrate(1280, 720, 720), 2_000_000);
        assert_eq!(video_bitrate(640, 360, 720), 500_000);
        assert_eq!(video_bitrate(160, 120, 720), 300_000);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text);
        assert!(t.starts_with("line 18"));
        assert!(t.ends_with("line 29"));
        assert_eq!(tail(""), "(no error output)");
    }
}
