//! The init segment (`ftyp` + `moov`): what the packager learns from it about its
//! one track, and its protected form (`encv`/`enca` with `sinf`, plus `pssh`).

use telly_proto::licence::KeyId;
use telly_proto::manifest::TrackKind;

use super::boxes::{ByteReader, FourCc, Mp4Box, Mp4Error, fourcc_str, parse_boxes};
use super::cenc::{PsshEntry, sinf_box};

/// What fragments of a track need from its init segment, and what the manifest says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSetup {
    pub kind: TrackKind,
    pub track_id: u32,
    /// Ticks per second of the track's media time (`mdhd`).
    pub timescale: u32,
    /// `trex` defaults, used when a fragment's `tfhd` and `trun` give none.
    pub default_sample_duration: u32,
    pub default_sample_size: u32,
    /// Bytes of each NAL unit's length prefix (H.264 only).
    pub nal_length_size: Option<usize>,
    /// RFC 6381 codec string, e.g. `avc1.64001F` or `mp4a.40.2`.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl TrackSetup {
    pub fn mime(&self) -> String {
        let major = match self.kind {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        };
        format!("{major}/mp4; codecs=\"{}\"", self.codec)
    }
}

fn malformed(msg: impl Into<String>) -> Mp4Error {
    Mp4Error::Malformed(msg.into())
}

/// Reads the clear init segment of a single-track fragmented MP4 and returns its
/// protected form with `pssh` boxes for `systems`, and the track's setup.
pub fn protect_init(
    clear: &[u8],
    key_id: &KeyId,
    systems: &[PsshEntry],
) -> Result<(Vec<u8>, TrackSetup), Mp4Error> {
    let boxes = parse_boxes(clear)?;
    let ftyp = boxes
        .iter()
        .find(|b| &b.kind == b"ftyp")
        .ok_or_else(|| malformed("init segment has no 'ftyp'"))?;
    let mut moov = boxes
        .iter()
        .find(|b| &b.kind == b"moov")
        .cloned()
        .ok_or_else(|| malformed("init segment has no 'moov'"))?;
    let setup = read_setup(&moov)?;

    let entry = moov.require_mut(&[b"trak", b"mdia", b"minf", b"stbl", b"stsd"])?;
    let entry = entry
        .children
        .as_mut()
        .and_then(|c| c.first_mut())
        .ok_or_else(|| malformed("'stsd' has no sample entry"))?;
    let original: FourCc = entry.kind;
    entry.kind = match &original {
        b"avc1" => *b"encv",
        b"mp4a" => *b"enca",
        other => {
            return Err(Mp4Error::Unsupported(format!(
                "sample entry '{}' cannot be protected here",
                fourcc_str(other)
            )));
        }
    };
    entry
        .children
        .get_or_insert_with(Vec::new)
        .push(sinf_box(&original, key_id));
    let moov_children = moov.children.get_or_insert_with(Vec::new);
    moov_children.extend(systems.iter().map(PsshEntry::to_box));

    let mut out = ftyp.to_bytes();
    moov.write_into(&mut out);
    Ok((out, setup))
}

/// The track's setup from a clear `moov` holding exactly one track.
pub fn read_setup(moov: &Mp4Box) -> Result<TrackSetup, Mp4Error> {
    let traks = moov.kids().iter().filter(|b| &b.kind == b"trak").count();
    if traks != 1 {
        return Err(Mp4Error::Unsupported(format!(
            "init segment has {traks} tracks; one per file is expected"
        )));
    }
    let trak = moov.require(&[b"trak"])?;
    let track_id = read_track_id(trak.require(&[b"tkhd"])?)?;
    let timescale = read_timescale(trak.require(&[b"mdia", b"mdhd"])?)?;
    let (default_sample_duration, default_sample_size) = read_trex(moov, track_id)?;

    let stsd = trak.require(&[b"mdia", b"minf", b"stbl", b"stsd"])?;
    let entries = stsd.kids();
    if entries.len() != 1 {
        return Err(Mp4Error::Unsupported(format!(
            "'stsd' has {} sample entries; one is expected",
            entries.len()
        )));
    }
    let entry = &entries[0];
    let (kind, codec, nal_length_size, width, height) = match &entry.kind {
        b"avc1" => {
            let avcc = entry
                .child(b"avcC")
                .ok_or_else(|| malformed("'avc1' has no 'avcC'"))?;
            let (codec, nal_length_size) = avc_codec(&avcc.payload)?;
            let mut fields = ByteReader::new(&entry.payload, "avc1");
            fields.bytes(24)?;
            let width = u32::from(fields.u16()?);
            let height = u32::from(fields.u16()?);
            (
                TrackKind::Video,
                codec,
                Some(nal_length_size),
                Some(width),
                Some(height),
            )
        }
        b"mp4a" => {
            let esds = entry
                .child(b"esds")
                .ok_or_else(|| malformed("'mp4a' has no 'esds'"))?;
            (TrackKind::Audio, mp4a_codec(esds)?, None, None, None)
        }
        other => {
            return Err(Mp4Error::Unsupported(format!(
                "sample entry '{}' (expected avc1 or mp4a)",
                fourcc_str(other)
            )));
        }
    };
    Ok(TrackSetup {
        kind,
        track_id,
        timescale,
        default_sample_duration,
        default_sample_size,
        nal_length_size,
        codec,
        width,
        height,
    })
}

fn read_track_id(tkhd: &Mp4Box) -> Result<u32, Mp4Error> {
    let (version, _, rest) = tkhd.full_header()?;
    let mut r = ByteReader::new(rest, "tkhd");
    r.bytes(if version == 1 { 16 } else { 8 })?;
    r.u32()
}

fn read_timescale(mdhd: &Mp4Box) -> Result<u32, Mp4Error> {
    let (version, _, rest) = mdhd.full_header()?;
    let mut r = ByteReader::new(rest, "mdhd");
    r.bytes(if version == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return Err(malformed("'mdhd' timescale is 0"));
    }
    Ok(timescale)
}

/// (default sample duration, default sample size) from the track's `trex`; a
/// fragmented file must have one.
fn read_trex(moov: &Mp4Box, track_id: u32) -> Result<(u32, u32), Mp4Error> {
    let mvex = moov
        .child(b"mvex")
        .ok_or_else(|| Mp4Error::Unsupported("not a fragmented MP4 (no 'mvex')".into()))?;
    for trex in mvex.kids().iter().filter(|b| &b.kind == b"trex") {
        let (_, _, rest) = trex.full_header()?;
        let mut r = ByteReader::new(rest, "trex");
        if r.u32()? == track_id {
            r.u32()?; // default_sample_description_index
            let duration = r.u32()?;
            let size = r.u32()?;
            return Ok((duration, size));
        }
    }
    Err(malformed(format!("no 'trex' for track {track_id}")))
}

/// The `avc1.PPCCLL` codec string from the first SPS in an `avcC`
/// (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 5.3.3.1), and the NAL
/// length size. The record's own profile/level bytes must agree with the SPS.
pub fn avc_codec(avcc: &[u8]) -> Result<(String, usize), Mp4Error> {
    let mut r = ByteReader::new(avcc, "avcC");
    if r.u8()? != 1 {
        return Err(Mp4Error::Unsupported("avcC configuration version".into()));
    }
    let record = [r.u8()?, r.u8()?, r.u8()?];
    let nal_length_size = usize::from(r.u8()? & 0x3) + 1;
    if nal_length_size == 3 {
        return Err(malformed("avcC NAL length size 3 is not allowed"));
    }
    let sps_count = r.u8()? & 0x1f;
    if sps_count == 0 {
        return Err(malformed("avcC has no SPS"));
    }
    let sps_len = usize::from(r.u16()?);
    let sps = r.bytes(sps_len)?;
    // SPS: NAL header, then profile_idc, constraint flags, level_idc.
    let Some(from_sps) = sps.get(1..4) else {
        return Err(malformed("SPS too short"));
    };
    if sps[0] & 0x1f != 7 {
        return Err(malformed("avcC's first parameter set is not an SPS"));
    }
    if from_sps[0] != record[0] || from_sps[2] != record[2] {
        return Err(malformed("avcC profile/level disagree with its SPS"));
    }
    let codec = format!(
        "avc1.{:02X}{:02X}{:02X}",
        from_sps[0], from_sps[1], from_sps[2]
    );
    Ok((codec, nal_length_size))
}

/// `mp4a.OO.A` from an `esds`: the object type indication of the decoder config
/// descriptor and, for MPEG-4 audio, the audio object type of its
/// AudioSpecificConfig (ISO/IEC 14496-1 7.2.6, 14496-3 1.6.2.1).
pub fn mp4a_codec(esds: &Mp4Box) -> Result<String, Mp4Error> {
    let (_, _, rest) = esds.full_header()?;
    let mut r = ByteReader::new(rest, "esds");
    let es = read_descriptor(&mut r, 0x03)?;
    let mut es = ByteReader::new(es, "ES_Descriptor");
    es.u16()?; // ES_ID
    let flags = es.u8()?;
    if flags & 0x80 != 0 {
        es.u16()?; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        let url_len = usize::from(es.u8()?);
        es.bytes(url_len)?;
    }
    if flags & 0x20 != 0 {
        es.u16()?; // OCR_ES_Id
    }
    let config = read_descriptor(&mut es, 0x04)?;
    let mut config = ByteReader::new(config, "DecoderConfigDescriptor");
    let object_type = config.u8()?;
    config.bytes(12)?; // stream type, buffer size, max and average bitrate
    if object_type != 0x40 {
        return Ok(format!("mp4a.{object_type:02x}"));
    }
    let specific = read_descriptor(&mut config, 0x05)?;
    let first = *specific
        .first()
        .ok_or_else(|| malformed("empty AudioSpecificConfig"))?;
    let mut audio_object_type = first >> 3;
    if audio_object_type == 31 {
        let second = *specific
            .get(1)
            .ok_or_else(|| malformed("AudioSpecificConfig truncated"))?;
        audio_object_type = 32 + (((first & 0x7) << 3) | (second >> 5));
    }
    Ok(format!("mp4a.40.{audio_object_type}"))
}

/// Reads one descriptor, which must carry `tag`, and returns its body.
fn read_descriptor<'a>(r: &mut ByteReader<'a>, tag: u8) -> Result<&'a [u8], Mp4Error> {
    let found = r.u8()?;
    if found != tag {
        return Err(malformed(format!(
            "esds: expected descriptor tag {tag:#04x}, found {found:#04x}"
        )));
    }
    // Expandable size: up to four bytes of 7 bits, high bit meaning "more".
    let mut size = 0usize;
    for _ in 0..4 {
        let b = r.u8()?;
        size = (size << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            return r.bytes(size);
        }
    }
    Err(malformed("esds descriptor size longer than four bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::boxes::parse_one;

    // A real x264 High@3.1 SPS prefix in an avcC (profile 0x64, constraints 0, level 0x1f).
    const AVCC: [u8; 17] = [
        1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x07, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40,
        0x01, 0x00,
    ];

    #[test]
    fn avc_codec_string_comes_from_the_sps() {
        let (codec, nal) = avc_codec(&AVCC[..15]).unwrap();
        assert_eq!(codec, "avc1.64001F");
        assert_eq!(nal, 4);
        let mut disagreeing = AVCC;
        disagreeing[1] = 0x42;
        assert!(avc_codec(&disagreeing).is_err());
        let mut not_sps = AVCC;
        not_sps[8] = 0x68;
        assert!(avc_codec(&not_sps).is_err());
        assert!(avc_codec(&AVCC[..9]).is_err());
        assert!(avc_codec(&[]).is_err());
    }

    fn esds(asc: &[u8]) -> Mp4Box {
        let mut dsi = vec![0x05, asc.len() as u8];
        dsi.extend_from_slice(asc);
        let mut dcd = vec![0x04, 0x80, 0x80, 0x80, (13 + dsi.len()) as u8, 0x40, 0x15];
        dcd.extend_from_slice(&[0; 11]);
        dcd.extend_from_slice(&dsi);
        let mut es = vec![0x03, (3 + dcd.len()) as u8, 0, 1, 0];
        es.extend_from_slice(&dcd);
        Mp4Box::full(b"esds", 0, 0, &es)
    }

    #[test]
    fn mp4a_codec_string_reads_the_audio_object_type() {
        // AAC-LC, 48 kHz, stereo: 0x11 0x90.
        assert_eq!(mp4a_codec(&esds(&[0x11, 0x90])).unwrap(), "mp4a.40.2");
        // HE-AAC (5).
        assert_eq!(mp4a_codec(&esds(&[0x2b, 0x10])).unwrap(), "mp4a.40.5");
        // Escape: 31 then 6 bits (here 10 -> 42).
        assert_eq!(mp4a_codec(&esds(&[0xf9, 0x40])).unwrap(), "mp4a.40.42");
        let mut broken = esds(&[0x11, 0x90]);
        broken.payload[4] = 0x09;
        assert!(mp4a_codec(&broken).is_err());
        let mut truncated = esds(&[0x11, 0x90]);
        truncated.payload.truncate(12);
        assert!(mp4a_codec(&truncated).is_err());
    }

    fn raw(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        Mp4Box::leaf(kind, body.to_vec()).to_bytes()
    }

    fn cont(kind: &[u8; 4], children: &[Vec<u8>]) -> Vec<u8> {
        raw(kind, &children.concat())
    }

    fn video_init() -> Vec<u8> {
        let mut avc1 = vec![0u8; 78];
        avc1[7] = 1;
        avc1[24..26].copy_from_slice(&640u16.to_be_bytes());
        avc1[26..28].copy_from_slice(&360u16.to_be_bytes());
        avc1.extend_from_slice(&raw(b"avcC", &AVCC));
        let stsd = raw(
            b"stsd",
            &[[0, 0, 0, 0, 0, 0, 0, 1].as_slice(), &raw(b"avc1", &avc1)].concat(),
        );
        let mut tkhd = vec![0u8; 84];
        tkhd[12..16].copy_from_slice(&1u32.to_be_bytes());
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&12800u32.to_be_bytes());
        let mut trex = vec![0u8; 24];
        trex[4..8].copy_from_slice(&1u32.to_be_bytes());
        trex[12..16].copy_from_slice(&512u32.to_be_bytes());
        let trak = cont(
            b"trak",
            &[
                raw(b"tkhd", &tkhd),
                cont(
                    b"mdia",
                    &[
                        raw(b"mdhd", &mdhd),
                        cont(b"minf", &[cont(b"stbl", &[stsd])]),
                    ],
                ),
            ],
        );
        let moov = cont(
            b"moov",
            &[
                raw(b"mvhd", &[0; 100]),
                trak,
                cont(b"mvex", &[raw(b"trex", &trex)]),
            ],
        );
        [raw(b"ftyp", b"isom\0\0\x02\0"), moov].concat()
    }

    #[test]
    fn protecting_a_video_init_segment() {
        let kid = KeyId([0xab; 16]);
        let clear = video_init();
        let (protected, setup) = protect_init(&clear, &kid, &[PsshEntry::clear_key(kid)]).unwrap();
        assert_eq!(setup.kind, TrackKind::Video);
        assert_eq!(setup.track_id, 1);
        assert_eq!(setup.timescale, 12800);
        assert_eq!(setup.default_sample_duration, 512);
        assert_eq!(setup.codec, "avc1.64001F");
        assert_eq!((setup.width, setup.height), (Some(640), Some(360)));
        assert_eq!(setup.mime(), "video/mp4; codecs=\"avc1.64001F\"");
        // sinf (80) + pssh (52) added.
        assert_eq!(protected.len(), clear.len() + 80 + 52);

        let boxes = parse_boxes(&protected).unwrap();
        assert_eq!(
            boxes.iter().map(|b| b.kind).collect::<Vec<_>>(),
            vec![*b"ftyp", *b"moov"]
        );
        let moov = &boxes[1];
        let entry = &moov
            .require(&[b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
            .unwrap()
            .kids()[0];
        assert_eq!(&entry.kind, b"encv");
        assert!(entry.child(b"avcC").is_some());
        let sinf = entry.child(b"sinf").unwrap();
        assert_eq!(sinf.child(b"frma").unwrap().payload, b"avc1");
        let tenc = sinf.find(&[b"schi", b"tenc"]).unwrap();
        assert_eq!(&tenc.payload[8..], &kid.0);
        let pssh = moov.child(b"pssh").unwrap();
        assert_eq!(
            &pssh.payload[4..20],
            &crate::package::cenc::CLEAR_KEY_SYSTEM_ID
        );
        // Reading the protected segment's encv is refused: it is already protected.
        assert!(read_setup(moov).is_err());
        assert!(parse_one(&moov.to_bytes()).is_ok());
    }

    #[test]
    fn broken_init_segments_are_errors() {
        let kid = KeyId([1; 16]);
        assert!(protect_init(&[], &kid, &[]).is_err());
        let init = video_init();
        assert!(protect_init(&init[..init.len() - 3], &kid, &[]).is_err());
        // Without mvex it is not fragmented.
        let mut renamed = init.clone();
        let at = renamed.windows(4).position(|w| w == b"mvex").unwrap();
        renamed[at..at + 4].copy_from_slice(b"free");
        assert!(matches!(
            protect_init(&renamed, &kid, &[]),
            Err(Mp4Error::Unsupported(_))
        ));
    }
}
