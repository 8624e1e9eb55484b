//! One movie fragment (`moof` + `mdat`) of a single-track file: its timing, and
//! its CENC-protected form.
//!
//! Protecting a fragment encrypts each sample in `mdat` in place (CTR keeps sizes)
//! and adds `saiz`, `saio` and `senc` at the end of the `traf`. The `moof` grows by
//! those boxes, so `trun`'s data offset (relative to the `moof` start, as
//! default-base-is-moof says) moves by the same amount, and `saio` points at the
//! first IV inside the written `senc`.

use telly_proto::manifest::TrackKind;

use super::boxes::{ByteReader, Mp4Box, Mp4Error, fourcc_str, parse_one, read_header};
use super::cenc::{
    IvSequence, MAX_SUBSAMPLES, SENC_FIRST_IV_OFFSET, SampleAuxInfo, avc_subsamples, crypt_sample,
    saio_box, saiz_box, senc_box,
};
use super::init::TrackSetup;

const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_DURATION: u32 = 0x08;
const TFHD_DEFAULT_SIZE: u32 = 0x10;
const TFHD_DEFAULT_FLAGS: u32 = 0x20;
const TRUN_DATA_OFFSET: u32 = 0x01;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x04;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_CTO: u32 = 0x800;
/// Where `trun`'s data_offset sits in its payload: version/flags, sample_count.
const TRUN_DATA_OFFSET_AT: usize = 8;

/// A fragment's place on its track's media timeline, in the track's timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentTiming {
    pub decode_time: u64,
    pub duration: u64,
    pub samples: u32,
}

/// The parts of a `traf` the packager needs.
#[derive(Debug)]
struct TrackRun {
    timing: FragmentTiming,
    data_offset: i32,
    sample_sizes: Vec<u32>,
}

fn malformed(msg: impl Into<String>) -> Mp4Error {
    Mp4Error::Malformed(msg.into())
}

fn read_run(traf: &Mp4Box, setup: &TrackSetup) -> Result<TrackRun, Mp4Error> {
    for kind in [b"senc", b"saiz", b"saio"] {
        if traf.child(kind).is_some() {
            return Err(Mp4Error::Unsupported(format!(
                "fragment already has '{}': it is protected",
                fourcc_str(kind)
            )));
        }
    }
    let (_, tfhd_flags, tfhd) = traf.require(&[b"tfhd"])?.full_header()?;
    let mut r = ByteReader::new(tfhd, "tfhd");
    let track_id = r.u32()?;
    if track_id != setup.track_id {
        return Err(malformed(format!(
            "fragment is for track {track_id}, the init segment's is {}",
            setup.track_id
        )));
    }
    if tfhd_flags & TFHD_BASE_DATA_OFFSET != 0 {
        // An absolute file offset would be wrong once the fragment stands alone.
        return Err(Mp4Error::Unsupported(
            "tfhd base-data-offset (expected default-base-is-moof)".into(),
        ));
    }
    if tfhd_flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        r.u32()?;
    }
    let mut default_duration = setup.default_sample_duration;
    let mut default_size = setup.default_sample_size;
    if tfhd_flags & TFHD_DEFAULT_DURATION != 0 {
        default_duration = r.u32()?;
    }
    if tfhd_flags & TFHD_DEFAULT_SIZE != 0 {
        default_size = r.u32()?;
    }
    if tfhd_flags & TFHD_DEFAULT_FLAGS != 0 {
        r.u32()?;
    }

    let (tfdt_version, _, tfdt) = traf
        .child(b"tfdt")
        .ok_or_else(|| malformed("fragment has no 'tfdt'"))?
        .full_header()?;
    let mut r = ByteReader::new(tfdt, "tfdt");
    let decode_time = if tfdt_version == 1 {
        r.u64()?
    } else {
        u64::from(r.u32()?)
    };

    let truns: Vec<&Mp4Box> = traf.kids().iter().filter(|b| &b.kind == b"trun").collect();
    let [trun] = truns.as_slice() else {
        return Err(Mp4Error::Unsupported(format!(
            "fragment has {} 'trun' boxes; one is expected",
            truns.len()
        )));
    };
    let (_, flags, body) = trun.full_header()?;
    let mut r = ByteReader::new(body, "trun");
    let sample_count = r.u32()?;
    if flags & TRUN_DATA_OFFSET == 0 {
        return Err(Mp4Error::Unsupported("'trun' without a data offset".into()));
    }
    let data_offset = r.u32()? as i32;
    if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
        r.u32()?;
    }
    let per_sample = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count();
    // Each present per-sample field is 4 bytes: refuse a count the box cannot hold
    // before allocating for it.
    if (sample_count as usize).saturating_mul(per_sample * 4) > r.remaining() {
        return Err(malformed(format!(
            "'trun' claims {sample_count} samples but is too short for them"
        )));
    }
    if flags & TRUN_SIZE == 0 && default_size == 0 {
        return Err(malformed("no sample sizes in 'trun', 'tfhd' or 'trex'"));
    }
    let mut sample_sizes = Vec::with_capacity(sample_count as usize);
    let mut duration = 0u64;
    for _ in 0..sample_count {
        duration += u64::from(if flags & TRUN_DURATION != 0 {
            r.u32()?
        } else {
            default_duration
        });
        sample_sizes.push(if flags & TRUN_SIZE != 0 {
            r.u32()?
        } else {
            default_size
        });
        if flags & TRUN_FLAGS != 0 {
            r.u32()?;
        }
        if flags & TRUN_CTO != 0 {
            r.u32()?;
        }
    }
    Ok(TrackRun {
        timing: FragmentTiming {
            decode_time,
            duration,
            samples: sample_count,
        },
        data_offset,
        sample_sizes,
    })
}

fn parse_moof(bytes: &[u8]) -> Result<Mp4Box, Mp4Error> {
    let moof = parse_one(bytes)?;
    if &moof.kind != b"moof" {
        return Err(malformed(format!(
            "expected 'moof', found '{}'",
            fourcc_str(&moof.kind)
        )));
    }
    Ok(moof)
}

fn single_traf(moof: &Mp4Box) -> Result<&Mp4Box, Mp4Error> {
    let trafs: Vec<&Mp4Box> = moof.kids().iter().filter(|b| &b.kind == b"traf").collect();
    match trafs.as_slice() {
        [traf] => Ok(traf),
        other => Err(Mp4Error::Unsupported(format!(
            "fragment has {} 'traf' boxes; one is expected",
            other.len()
        ))),
    }
}

/// Encrypts one fragment under `key` with IVs from `ivs`; returns the protected
/// `moof` + `mdat` and the fragment's timing.
pub fn protect_fragment(
    moof_bytes: &[u8],
    mdat_bytes: &[u8],
    setup: &TrackSetup,
    key: &[u8; 16],
    ivs: &mut IvSequence,
) -> Result<(Vec<u8>, FragmentTiming), Mp4Error> {
    let mut moof = parse_moof(moof_bytes)?;
    let run = read_run(single_traf(&moof)?, setup)?;

    let (mdat_size, mdat_kind, mdat_header) = read_header(mdat_bytes)?;
    if &mdat_kind != b"mdat" || mdat_size != mdat_bytes.len() as u64 {
        return Err(malformed("a 'moof' must be followed by its whole 'mdat'"));
    }
    // Where the samples start inside mdat's payload.
    let start = i64::from(run.data_offset) - moof_bytes.len() as i64 - mdat_header as i64;
    let total: u64 = run.sample_sizes.iter().map(|&s| u64::from(s)).sum();
    let payload_len = (mdat_bytes.len() - mdat_header) as u64;
    if start < 0 || start as u64 + total > payload_len {
        return Err(malformed(format!(
            "samples ({total} bytes at offset {}) lie outside the 'mdat'",
            run.data_offset
        )));
    }

    let mut mdat = mdat_bytes.to_vec();
    let with_subsamples = setup.kind == TrackKind::Video;
    let mut aux = Vec::with_capacity(run.sample_sizes.len());
    let mut pos = mdat_header + start as usize;
    for &size in &run.sample_sizes {
        let sample = &mut mdat[pos..pos + size as usize];
        pos += size as usize;
        let subsamples = if with_subsamples {
            let nal_length_size = setup
                .nal_length_size
                .ok_or_else(|| malformed("video track without a NAL length size"))?;
            avc_subsamples(sample, nal_length_size)?
        } else {
            Vec::new()
        };
        if subsamples.len() > MAX_SUBSAMPLES {
            return Err(Mp4Error::Unsupported(format!(
                "a sample has {} NAL ranges, over {MAX_SUBSAMPLES}",
                subsamples.len()
            )));
        }
        let iv = ivs.next_iv();
        crypt_sample(key, &iv, sample, &subsamples)?;
        aux.push(SampleAuxInfo { iv, subsamples });
    }

    let old_size = moof.size();
    let traf = moof.require_mut(&[b"traf"])?;
    let children = traf.children.get_or_insert_with(Vec::new);
    children.push(saiz_box(&aux, with_subsamples));
    children.push(saio_box(0));
    children.push(senc_box(&aux, with_subsamples));
    let growth = moof.size() - old_size;

    let new_offset = i64::from(run.data_offset) + growth as i64;
    let new_offset = i32::try_from(new_offset)
        .map_err(|_| Mp4Error::Unsupported("'moof' too large for a 32-bit data offset".into()))?;
    let trun = moof.require_mut(&[b"traf", b"trun"])?;
    trun.payload[TRUN_DATA_OFFSET_AT..TRUN_DATA_OFFSET_AT + 4]
        .copy_from_slice(&new_offset.to_be_bytes());
    let senc_at = moof
        .offset_of(&[b"traf", b"senc"])
        .expect("senc was just added");
    let aux_offset = u32::try_from(senc_at + SENC_FIRST_IV_OFFSET)
        .map_err(|_| Mp4Error::Unsupported("'moof' over 4 GiB".into()))?;
    *moof.require_mut(&[b"traf", b"saio"])? = saio_box(aux_offset);

    let mut out = Vec::with_capacity(moof.size() as usize + mdat.len());
    moof.write_into(&mut out);
    out.extend_from_slice(&mdat);
    Ok((out, run.timing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::boxes::parse_boxes;
    use crate::package::cenc::{IV_SIZE, Subsample};

    fn setup(kind: TrackKind) -> TrackSetup {
        TrackSetup {
            kind,
            track_id: 1,
            timescale: 1000,
            default_sample_duration: 40,
            default_sample_size: 0,
            nal_length_size: (kind == TrackKind::Video).then_some(4),
            codec: String::new(),
            width: None,
            height: None,
        }
    }

    fn slice_sample(len: usize, seed: u8) -> Vec<u8> {
        let mut out = (len as u32).to_be_bytes().to_vec();
        out.push(0x65);
        out.extend((1..len).map(|i| (i as u8).wrapping_mul(seed)));
        out
    }

    /// A clear fragment as ffmpeg writes it: tfhd (default-base-is-moof, default
    /// duration), tfdt v1, trun with data offset and sizes.
    fn clear_fragment(samples: &[Vec<u8>], decode_time: u64) -> (Vec<u8>, Vec<u8>) {
        let mfhd = Mp4Box::full(b"mfhd", 0, 0, &1u32.to_be_bytes());
        let mut tfhd = 1u32.to_be_bytes().to_vec();
        tfhd.extend_from_slice(&40u32.to_be_bytes());
        let tfhd = Mp4Box::full(b"tfhd", 0, 0x020008, &tfhd);
        let tfdt = Mp4Box::full(b"tfdt", 1, 0, &decode_time.to_be_bytes());
        let mut trun = (samples.len() as u32).to_be_bytes().to_vec();
        trun.extend_from_slice(&0u32.to_be_bytes());
        for s in samples {
            trun.extend_from_slice(&(s.len() as u32).to_be_bytes());
        }
        let trun = Mp4Box::full(b"trun", 0, TRUN_DATA_OFFSET | TRUN_SIZE, &trun);
        let traf = Mp4Box::container(b"traf", vec![], vec![tfhd, tfdt, trun]);
        let mut moof = Mp4Box::container(b"moof", vec![], vec![mfhd, traf]);
        let offset = (moof.size() + 8) as u32;
        moof.require_mut(&[b"traf", b"trun"]).unwrap().payload[8..12]
            .copy_from_slice(&offset.to_be_bytes());
        let mdat = Mp4Box::leaf(b"mdat", samples.concat());
        (moof.to_bytes(), mdat.to_bytes())
    }

    #[test]
    fn protected_video_fragment_is_self_consistent_and_decrypts() {
        let key = [0x11; 16];
        let samples = vec![
            slice_sample(100, 3),
            slice_sample(37, 5),
            slice_sample(16, 7),
        ];
        let (moof, mdat) = clear_fragment(&samples, 80);
        let mut ivs = IvSequence::starting_at(1000);
        let (out, timing) =
            protect_fragment(&moof, &mdat, &setup(TrackKind::Video), &key, &mut ivs).unwrap();
        assert_eq!(
            timing,
            FragmentTiming {
                decode_time: 80,
                duration: 120,
                samples: 3
            }
        );

        let boxes = parse_boxes(&out).unwrap();
        assert_eq!(boxes.len(), 2);
        let (moof_box, mdat_box) = (&boxes[0], &boxes[1]);
        let moof_len = moof_box.size() as usize;
        let traf = moof_box.child(b"traf").unwrap();
        let kinds: Vec<_> = traf.kids().iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            vec![*b"tfhd", *b"tfdt", *b"trun", *b"saiz", *b"saio", *b"senc"]
        );

        // trun's data offset points at the first sample byte of the new layout.
        let data_offset = u32::from_be_bytes(
            traf.child(b"trun").unwrap().payload[8..12]
                .try_into()
                .unwrap(),
        ) as usize;
        assert_eq!(data_offset, moof_len + 8);
        // saio points at the first IV, counted from the moof start.
        let saio = &traf.child(b"saio").unwrap().payload;
        let aux_at = u32::from_be_bytes(saio[8..12].try_into().unwrap()) as usize;
        assert_eq!(&out[aux_at..aux_at + IV_SIZE], &1000u64.to_be_bytes());

        // Walk senc through saiz's sizes and decrypt each sample independently.
        let saiz = &traf.child(b"saiz").unwrap().payload;
        let mut aux = aux_at;
        let mut data = data_offset;
        for (i, clear) in samples.iter().enumerate() {
            let info_size = if saiz[4] != 0 {
                saiz[4] as usize
            } else {
                saiz[9 + i] as usize
            };
            let iv: [u8; 8] = out[aux..aux + 8].try_into().unwrap();
            assert_eq!(iv, (1000 + i as u64).to_be_bytes());
            let count = u16::from_be_bytes(out[aux + 8..aux + 10].try_into().unwrap()) as usize;
            assert_eq!(info_size, 10 + 6 * count);
            let subs: Vec<Subsample> = (0..count)
                .map(|k| {
                    let e = &out[aux + 10 + 6 * k..aux + 16 + 6 * k];
                    Subsample {
                        clear: u16::from_be_bytes([e[0], e[1]]),
                        protected: u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                    }
                })
                .collect();
            let mut sample = out[data..data + clear.len()].to_vec();
            if subs.iter().any(|s| s.protected > 0) {
                assert_ne!(&sample, clear, "sample {i} must be encrypted");
            }
            assert_eq!(
                &sample[..5],
                &clear[..5],
                "length prefix and NAL header stay clear"
            );
            crypt_sample(&key, &iv, &mut sample, &subs).unwrap();
            assert_eq!(&sample, clear);
            aux += info_size;
            data += clear.len();
        }
        assert_eq!(mdat_box.payload.len(), samples.concat().len());
    }

    #[test]
    fn protected_audio_fragment_is_fully_encrypted() {
        let key = [0x22; 16];
        let samples = vec![vec![0xaa; 300], vec![0xbb; 7]];
        let (moof, mdat) = clear_fragment(&samples, 0);
        let mut ivs = IvSequence::starting_at(5);
        let (out, _) =
            protect_fragment(&moof, &mdat, &setup(TrackKind::Audio), &key, &mut ivs).unwrap();
        let boxes = parse_boxes(&out).unwrap();
        let traf = boxes[0].child(b"traf").unwrap();
        let senc = traf.child(b"senc").unwrap();
        assert_eq!(
            senc.full_header().unwrap().1,
            0,
            "no subsample flag for audio"
        );
        assert_eq!(traf.child(b"saiz").unwrap().payload[4], IV_SIZE as u8);
        let mdat_payload = &boxes[1].payload;
        let mut first = mdat_payload[..300].to_vec();
        assert_ne!(first, vec![0xaa; 300]);
        crypt_sample(&key, &5u64.to_be_bytes(), &mut first, &[]).unwrap();
        assert_eq!(first, vec![0xaa; 300]);
        let mut second = mdat_payload[300..].to_vec();
        crypt_sample(&key, &6u64.to_be_bytes(), &mut second, &[]).unwrap();
        assert_eq!(second, vec![0xbb; 7]);
    }

    #[test]
    fn inconsistent_fragments_are_refused() {
        let key = [0; 16];
        let mut ivs = IvSequence::starting_at(0);
        let video = setup(TrackKind::Video);
        let samples = vec![slice_sample(64, 1)];
        let (moof, mdat) = clear_fragment(&samples, 0);
        // mdat shorter than trun says.
        let short = Mp4Box::leaf(b"mdat", vec![0; 10]).to_bytes();
        assert!(protect_fragment(&moof, &short, &video, &key, &mut ivs).is_err());
        // Wrong track.
        let other = TrackSetup {
            track_id: 2,
            ..video.clone()
        };
        assert!(protect_fragment(&moof, &mdat, &other, &key, &mut ivs).is_err());
        // Already protected fragments are not protected twice.
        let (once, _) = protect_fragment(&moof, &mdat, &video, &key, &mut ivs).unwrap();
        let boxes = parse_boxes(&once).unwrap();
        let (moof2, mdat2) = (boxes[0].to_bytes(), boxes[1].to_bytes());
        assert!(matches!(
            protect_fragment(&moof2, &mdat2, &video, &key, &mut ivs),
            Err(Mp4Error::Unsupported(_))
        ));
        // A sample that is not length-prefixed H.264.
        let (moof, mdat) = clear_fragment(&[vec![0xff; 20]], 0);
        assert!(protect_fragment(&moof, &mdat, &video, &key, &mut ivs).is_err());
        // A trun claiming a huge sample count.
        let mut huge = parse_one(&moof).unwrap();
        huge.require_mut(&[b"traf", b"trun"]).unwrap().payload[4..8]
            .copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(protect_fragment(&huge.to_bytes(), &mdat, &video, &key, &mut ivs).is_err());
        // Not a moof.
        assert!(protect_fragment(&mdat, &mdat, &video, &key, &mut ivs).is_err());
    }
}
