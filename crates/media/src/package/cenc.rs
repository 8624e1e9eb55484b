//! Common Encryption, scheme `cenc` (ISO/IEC 23001-7): AES-128-CTR sample
//! encryption and the boxes that describe it.
//!
//! Sample encryption: each sample has an 8-byte IV; the counter block is
//! `IV || 0u64`, its low 64 bits counting 16-byte blocks. Within one sample the
//! protected ranges of all subsamples form one continuous keystream.
//!
//! H.264 (NAL-structured video, 23001-7 clause 10.2): each NAL unit's length prefix
//! and one-byte header stay clear; of the rest, the largest multiple of 16 bytes at
//! the end is protected and the remainder joins the clear part, so protected ranges
//! are whole AES blocks (what Shaka Packager writes and Chromium expects for video).
//! Non-VCL NAL units (SPS, PPS, SEI, AUD) stay wholly clear. AAC is protected whole.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use telly_proto::licence::KeyId;

use super::boxes::{ByteReader, FourCc, Mp4Box, Mp4Error};

pub const IV_SIZE: usize = 8;
/// `senc` flag: every sample carries a subsample map.
const SENC_USE_SUBSAMPLES: u32 = 0x2;
/// ISO/IEC 23001-7 scheme `cenc`, version 1.0.
pub const SCHEME_CENC: &FourCc = b"cenc";
pub const SCHEME_VERSION: u32 = 0x0001_0000;

/// W3C Clear Key's system id, 1077efec-c0b2-4d02-ace3-3c1e52e2fb4b.
pub const CLEAR_KEY_SYSTEM_ID: [u8; 16] = [
    0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b,
];

type Aes128Ctr64 = ctr::Ctr64BE<Aes128>;

/// A run of `clear` bytes followed by `protected` bytes within one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsample {
    pub clear: u16,
    pub protected: u32,
}

/// What `senc` records for one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleAuxInfo {
    pub iv: [u8; IV_SIZE],
    /// Empty for full-sample encryption.
    pub subsamples: Vec<Subsample>,
}

impl SampleAuxInfo {
    /// Bytes this sample's entry takes in `senc` (what `saiz` records).
    pub fn size(&self, with_subsamples: bool) -> usize {
        if with_subsamples {
            IV_SIZE + 2 + 6 * self.subsamples.len()
        } else {
            IV_SIZE
        }
    }
}

/// Hands out per-sample IVs. One sequence serves every track of a title, so no IV
/// repeats under the title's content key; it starts at a random value so that
/// packaging the same keys again does not replay old IVs either.
#[derive(Debug, Clone)]
pub struct IvSequence {
    next: u64,
}

impl IvSequence {
    pub fn starting_at(first: u64) -> Self {
        Self { next: first }
    }

    pub fn next_iv(&mut self) -> [u8; IV_SIZE] {
        let iv = self.next.to_be_bytes();
        self.next = self.next.wrapping_add(1);
        iv
    }
}

/// The subsample map of one length-prefixed H.264 sample.
pub fn avc_subsamples(sample: &[u8], nal_length_size: usize) -> Result<Vec<Subsample>, Mp4Error> {
    if !matches!(nal_length_size, 1 | 2 | 4) {
        return Err(Mp4Error::Unsupported(format!(
            "NAL length size {nal_length_size}"
        )));
    }
    let mut reader = ByteReader::new(sample, "H.264 sample");
    let mut out = Vec::new();
    let mut pending_clear: usize = 0;
    while reader.remaining() > 0 {
        let len_bytes = reader.bytes(nal_length_size)?;
        let nal_len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let nal = reader.bytes(nal_len)?;
        let Some(&nal_header) = nal.first() else {
            return Err(Mp4Error::Malformed(
                "empty NAL unit in an H.264 sample".into(),
            ));
        };
        let is_slice = matches!(nal_header & 0x1f, 1..=5);
        let payload = nal_len - 1;
        let protected = if is_slice { payload - payload % 16 } else { 0 };
        pending_clear += nal_length_size + nal_len - protected;
        if protected > 0 {
            push_subsample(&mut out, &mut pending_clear, protected)?;
        }
    }
    if pending_clear > 0 || out.is_empty() {
        push_subsample(&mut out, &mut pending_clear, 0)?;
    }
    Ok(out)
}

/// Appends `pending_clear` clear bytes then `protected` bytes, splitting clear runs
/// longer than the 16-bit field allows into clear-only entries.
fn push_subsample(
    out: &mut Vec<Subsample>,
    pending_clear: &mut usize,
    protected: usize,
) -> Result<(), Mp4Error> {
    while *pending_clear > usize::from(u16::MAX) {
        out.push(Subsample {
            clear: u16::MAX,
            protected: 0,
        });
        *pending_clear -= usize::from(u16::MAX);
    }
    let protected = u32::try_from(protected)
        .map_err(|_| Mp4Error::Unsupported("NAL unit over 4 GiB".into()))?;
    out.push(Subsample {
        clear: u16::try_from(*pending_clear).expect("split above"),
        protected,
    });
    *pending_clear = 0;
    Ok(())
}

/// Encrypts (or, CTR being symmetric, decrypts) one sample in place.
/// `subsamples` empty means the whole sample is protected.
pub fn crypt_sample(
    key: &[u8; 16],
    iv: &[u8; IV_SIZE],
    sample: &mut [u8],
    subsamples: &[Subsample],
) -> Result<(), Mp4Error> {
    let mut counter = [0u8; 16];
    counter[..IV_SIZE].copy_from_slice(iv);
    let mut cipher = Aes128Ctr64::new(key.into(), &counter.into());
    if subsamples.is_empty() {
        cipher.apply_keystream(sample);
        return Ok(());
    }
    let mut pos = 0usize;
    for s in subsamples {
        let start = pos + usize::from(s.clear);
        let end = start + s.protected as usize;
        let range = sample.get_mut(start..end).ok_or_else(|| {
            Mp4Error::Malformed("subsample map runs past the end of its sample".into())
        })?;
        cipher.apply_keystream(range);
        pos = end;
    }
    if pos != sample.len() {
        return Err(Mp4Error::Malformed(format!(
            "subsample map covers {pos} of {} bytes",
            sample.len()
        )));
    }
    Ok(())
}

/// `senc` (23001-7 7.2): sample count, then per sample its IV and, with
/// subsamples, their count and (clear u16, protected u32) pairs.
pub fn senc_box(samples: &[SampleAuxInfo], with_subsamples: bool) -> Mp4Box {
    let mut body = Vec::new();
    body.extend_from_slice(&(samples.len() as u32).to_be_bytes());
    for s in samples {
        body.extend_from_slice(&s.iv);
        if with_subsamples {
            body.extend_from_slice(&(s.subsamples.len() as u16).to_be_bytes());
            for sub in &s.subsamples {
                body.extend_from_slice(&sub.clear.to_be_bytes());
                body.extend_from_slice(&sub.protected.to_be_bytes());
            }
        }
    }
    let flags = if with_subsamples {
        SENC_USE_SUBSAMPLES
    } else {
        0
    };
    Mp4Box::full(b"senc", 0, flags, &body)
}

/// Offset of the first sample's IV from the start of the `senc` box: header (8),
/// version and flags (4), sample count (4).
pub const SENC_FIRST_IV_OFFSET: u64 = 16;

/// `saiz` (14496-12 8.7.8): the size of each sample's auxiliary information. No
/// aux_info_type (flags 0): it defaults to the scheme type, `cenc`.
pub fn saiz_box(samples: &[SampleAuxInfo], with_subsamples: bool) -> Mp4Box {
    let sizes: Vec<usize> = samples.iter().map(|s| s.size(with_subsamples)).collect();
    let uniform = sizes.windows(2).all(|w| w[0] == w[1]);
    let mut body = Vec::new();
    match sizes.first() {
        Some(&size) if uniform && size <= 255 => {
            body.push(size as u8);
            body.extend_from_slice(&(sizes.len() as u32).to_be_bytes());
        }
        _ => {
            body.push(0);
            body.extend_from_slice(&(sizes.len() as u32).to_be_bytes());
            // An entry over 255 bytes would need 41+ subsamples in one sample; the
            // caller refuses that before getting here.
            body.extend(sizes.iter().map(|&s| u8::try_from(s).unwrap_or(u8::MAX)));
        }
    }
    Mp4Box::full(b"saiz", 0, 0, &body)
}

/// Most subsamples one sample may have so that its `saiz` entry fits in a byte.
pub const MAX_SUBSAMPLES: usize = (255 - IV_SIZE - 2) / 6;

/// `saio` (14496-12 8.7.9): one offset, relative to the track fragment's base
/// (the `moof` start here), to where the first sample's auxiliary info begins.
pub fn saio_box(offset: u32) -> Mp4Box {
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&offset.to_be_bytes());
    Mp4Box::full(b"saio", 0, 0, &body)
}

/// `tenc` (23001-7 8.2), version 0: protected by default, 8-byte IVs, the key id.
pub fn tenc_box(key_id: &KeyId) -> Mp4Box {
    let mut body = vec![0u8, 0u8, 1u8, IV_SIZE as u8];
    body.extend_from_slice(&key_id.0);
    Mp4Box::full(b"tenc", 0, 0, &body)
}

/// `sinf` for a sample entry whose original format was `original` (e.g. `avc1`).
pub fn sinf_box(original: &FourCc, key_id: &KeyId) -> Mp4Box {
    let frma = Mp4Box::leaf(b"frma", original.to_vec());
    let mut schm_body = SCHEME_CENC.to_vec();
    schm_body.extend_from_slice(&SCHEME_VERSION.to_be_bytes());
    let schm = Mp4Box::full(b"schm", 0, 0, &schm_body);
    let schi = Mp4Box::container(b"schi", Vec::new(), vec![tenc_box(key_id)]);
    Mp4Box::container(b"sinf", Vec::new(), vec![frma, schm, schi])
}

/// One protection system's `pssh`. A title lists one entry per DRM system it
/// supports: Clear Key today; Widevine or PlayReady entries (with their own data)
/// go in the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsshEntry {
    pub system_id: [u8; 16],
    pub key_ids: Vec<KeyId>,
    pub data: Vec<u8>,
}

impl PsshEntry {
    /// Clear Key's `pssh` names the key ids in a version 1 box and carries no data
    /// (W3C "Common SystemID and PSSH Box Format").
    pub fn clear_key(key_id: KeyId) -> Self {
        Self {
            system_id: CLEAR_KEY_SYSTEM_ID,
            key_ids: vec![key_id],
            data: Vec::new(),
        }
    }

    /// `pssh` (23001-7 8.1): version 1 when key ids are listed, else version 0.
    pub fn to_box(&self) -> Mp4Box {
        let mut body = self.system_id.to_vec();
        let version = if self.key_ids.is_empty() {
            0
        } else {
            body.extend_from_slice(&(self.key_ids.len() as u32).to_be_bytes());
            for kid in &self.key_ids {
                body.extend_from_slice(&kid.0);
            }
            1
        };
        body.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        body.extend_from_slice(&self.data);
        Mp4Box::full(b"pssh", version, 0, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(header: u8, len: usize) -> Vec<u8> {
        let mut out = (len as u32).to_be_bytes().to_vec();
        out.push(header);
        out.extend((1..len).map(|i| i as u8));
        out
    }

    #[test]
    fn slices_leave_header_and_remainder_clear_and_protect_whole_blocks() {
        // SEI (6) of 30 bytes, then an IDR slice (5) of 1 + 100 bytes.
        let sample = [nal(6, 30), nal(0x65, 101)].concat();
        let subs = avc_subsamples(&sample, 4).unwrap();
        // Clear: SEI whole (34) + slice prefix and header (5) + 100 % 16 (4).
        assert_eq!(
            subs,
            vec![Subsample {
                clear: 34 + 5 + 4,
                protected: 96
            }]
        );
        let total: usize = subs
            .iter()
            .map(|s| s.clear as usize + s.protected as usize)
            .sum();
        assert_eq!(total, sample.len());
        assert!(subs.iter().all(|s| s.protected % 16 == 0));
    }

    #[test]
    fn each_slice_gets_its_own_entry_and_tiny_slices_stay_clear() {
        let sample = [nal(0x41, 33), nal(0x41, 10), nal(0x41, 17)].concat();
        let subs = avc_subsamples(&sample, 4).unwrap();
        assert_eq!(
            subs,
            vec![
                Subsample {
                    clear: 5,
                    protected: 32
                },
                // The 10-byte slice is all clear and joins the next one's clear part.
                Subsample {
                    clear: 14 + 5,
                    protected: 16
                },
            ]
        );
    }

    #[test]
    fn long_clear_runs_are_split() {
        let sample = [nal(6, 70_000), nal(0x65, 33)].concat();
        let subs = avc_subsamples(&sample, 4).unwrap();
        assert_eq!(
            subs[0],
            Subsample {
                clear: u16::MAX,
                protected: 0
            }
        );
        assert_eq!(subs[1].protected, 32);
        let total: usize = subs
            .iter()
            .map(|s| s.clear as usize + s.protected as usize)
            .sum();
        assert_eq!(total, sample.len());
    }

    #[test]
    fn broken_samples_are_errors() {
        // Length runs past the end.
        let mut sample = nal(0x65, 40);
        sample.truncate(30);
        assert!(avc_subsamples(&sample, 4).is_err());
        // A zero-length NAL unit.
        assert!(avc_subsamples(&[0, 0, 0, 0], 4).is_err());
        assert!(avc_subsamples(&[0, 0, 0], 4).is_err());
        assert!(avc_subsamples(&nal(0x65, 40), 3).is_err());
    }

    #[test]
    fn keystream_is_aes_of_iv_and_block_counter_across_subsamples() {
        // The keystream is built here from AES itself, independently of the ctr crate.
        use aes::cipher::{BlockEncrypt, KeyInit};
        let key = [0x2bu8; 16];
        let iv = [1, 2, 3, 4, 5, 6, 7, 8];
        let aes = Aes128::new(&key.into());
        let mut keystream = Vec::new();
        for counter in 0u64..3 {
            let mut block = [0u8; 16];
            block[..8].copy_from_slice(&iv);
            block[8..].copy_from_slice(&counter.to_be_bytes());
            let mut b = block.into();
            aes.encrypt_block(&mut b);
            keystream.extend_from_slice(&b);
        }
        // Full sample: plain XOR keystream.
        let mut sample = vec![0u8; 40];
        crypt_sample(&key, &iv, &mut sample, &[]).unwrap();
        assert_eq!(sample, keystream[..40]);
        // Subsamples: clear bytes untouched, protected ranges take one continuous keystream.
        let mut sample = vec![0u8; 5 + 16 + 3 + 16];
        let subs = [
            Subsample {
                clear: 5,
                protected: 16,
            },
            Subsample {
                clear: 3,
                protected: 16,
            },
        ];
        crypt_sample(&key, &iv, &mut sample, &subs).unwrap();
        assert_eq!(&sample[..5], &[0; 5]);
        assert_eq!(&sample[5..21], &keystream[..16]);
        assert_eq!(&sample[21..24], &[0; 3]);
        assert_eq!(&sample[24..40], &keystream[16..32]);
        // And it inverts.
        crypt_sample(&key, &iv, &mut sample, &subs).unwrap();
        assert_eq!(sample, vec![0u8; 40]);
        // A map that does not cover the sample is refused.
        let mut short = vec![0u8; 10];
        assert!(crypt_sample(&key, &iv, &mut short, &subs).is_err());
    }

    fn kid() -> KeyId {
        KeyId(*b"0123456789abcdef")
    }

    #[test]
    fn senc_layout_with_subsamples() {
        let samples = vec![
            SampleAuxInfo {
                iv: [1; 8],
                subsamples: vec![Subsample {
                    clear: 0x0102,
                    protected: 0x0304_0506,
                }],
            },
            SampleAuxInfo {
                iv: [2; 8],
                subsamples: vec![
                    Subsample {
                        clear: 7,
                        protected: 0,
                    },
                    Subsample {
                        clear: 8,
                        protected: 16,
                    },
                ],
            },
        ];
        let bytes = senc_box(&samples, true).to_bytes();
        let expected: Vec<u8> = [
            &[0, 0, 0, 54][..],
            b"senc",
            &[0, 0, 0, 2],       // version 0, flags 0x000002
            &[0, 0, 0, 2],       // sample_count
            &[1; 8],             // IV
            &[0, 1],             // subsample_count
            &[1, 2, 3, 4, 5, 6], // clear u16, protected u32
            &[2; 8],
            &[0, 2],
            &[0, 7, 0, 0, 0, 0],
            &[0, 8, 0, 0, 0, 16],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(&bytes[SENC_FIRST_IV_OFFSET as usize..][..8], &[1; 8]);
    }

    #[test]
    fn senc_layout_full_sample() {
        let samples = vec![SampleAuxInfo {
            iv: [9; 8],
            subsamples: vec![],
        }];
        let bytes = senc_box(&samples, false).to_bytes();
        let expected: Vec<u8> = [
            &[0, 0, 0, 24][..],
            b"senc",
            &[0, 0, 0, 0],
            &[0, 0, 0, 1],
            &[9; 8],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn saiz_uses_a_default_size_when_uniform() {
        let same = vec![
            SampleAuxInfo {
                iv: [0; 8],
                subsamples: vec![]
            };
            3
        ];
        let expected: Vec<u8> = [
            &[0, 0, 0, 17][..],
            b"saiz",
            &[0, 0, 0, 0],
            &[8],
            &[0, 0, 0, 3],
        ]
        .concat();
        assert_eq!(saiz_box(&same, false).to_bytes(), expected);

        let mixed = vec![
            SampleAuxInfo {
                iv: [0; 8],
                subsamples: vec![Subsample {
                    clear: 1,
                    protected: 16,
                }],
            },
            SampleAuxInfo {
                iv: [0; 8],
                subsamples: vec![
                    Subsample {
                        clear: 1,
                        protected: 16
                    };
                    2
                ],
            },
        ];
        let expected: Vec<u8> = [
            &[0, 0, 0, 19][..],
            b"saiz",
            &[0, 0, 0, 0],
            &[0],
            &[0, 0, 0, 2],
            &[16, 22],
        ]
        .concat();
        assert_eq!(saiz_box(&mixed, true).to_bytes(), expected);
    }

    #[test]
    fn saio_layout() {
        let expected: Vec<u8> = [
            &[0, 0, 0, 20][..],
            b"saio",
            &[0, 0, 0, 0],
            &[0, 0, 0, 1],
            &[0, 0, 0x01, 0x2c],
        ]
        .concat();
        assert_eq!(saio_box(300).to_bytes(), expected);
    }

    #[test]
    fn tenc_and_sinf_layout() {
        let expected_tenc: Vec<u8> = [
            &[0, 0, 0, 32][..],
            b"tenc",
            &[0, 0, 0, 0],
            &[0, 0, 1, 8],
            b"0123456789abcdef",
        ]
        .concat();
        assert_eq!(tenc_box(&kid()).to_bytes(), expected_tenc);
        let sinf = sinf_box(b"avc1", &kid()).to_bytes();
        let expected: Vec<u8> = [
            &[0, 0, 0, 80][..],
            b"sinf",
            &[0, 0, 0, 12],
            b"frma",
            b"avc1",
            &[0, 0, 0, 20],
            b"schm",
            &[0, 0, 0, 0],
            b"cenc",
            &[0, 1, 0, 0],
            &[0, 0, 0, 40],
            b"schi",
            &expected_tenc,
        ]
        .concat();
        assert_eq!(sinf, expected);
    }

    #[test]
    fn clear_key_pssh_layout() {
        let bytes = PsshEntry::clear_key(kid()).to_box().to_bytes();
        let expected: Vec<u8> = [
            &[0, 0, 0, 52][..],
            b"pssh",
            &[1, 0, 0, 0],
            &[
                0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2,
                0xfb, 0x4b,
            ],
            &[0, 0, 0, 1],
            b"0123456789abcdef",
            &[0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        // A system with data and no key ids (e.g. a Widevine entry) is version 0.
        let other = PsshEntry {
            system_id: [0xed; 16],
            key_ids: vec![],
            data: vec![1, 2, 3],
        };
        let bytes = other.to_box().to_bytes();
        assert_eq!(bytes[8], 0);
        assert_eq!(bytes.len(), 8 + 4 + 16 + 4 + 3);
        assert_eq!(&bytes[28..], &[0, 0, 0, 3, 1, 2, 3]);
    }

    #[test]
    fn ivs_never_repeat_across_calls() {
        let mut seq = IvSequence::starting_at(u64::MAX - 1);
        let a = seq.next_iv();
        let b = seq.next_iv();
        let c = seq.next_iv();
        assert_eq!(a, (u64::MAX - 1).to_be_bytes());
        assert_ne!(a, b);
        assert_eq!(c, [0; 8]);
    }
}
