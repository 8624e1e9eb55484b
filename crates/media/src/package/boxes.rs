//! A small ISO BMFF (MP4) box tree: parse, edit, write.
//!
//! Only the boxes the packager walks into are parsed as containers; every other
//! box is kept as opaque bytes and written back unchanged, so a round trip of an
//! unedited tree is byte-exact. Sizes are recomputed on write, which is what lets
//! the packager insert boxes deep inside `moov` or `moof` without fixing parents.
//!
//! Every read is bounds-checked: malformed input gives [`Mp4Error`], never a panic.

use std::io::Read;

pub type FourCc = [u8; 4];

/// Deepest nesting accepted; real files stay under 10.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mp4Error {
    #[error("malformed MP4: {0}")]
    Malformed(String),
    #[error("unsupported MP4 layout: {0}")]
    Unsupported(String),
}

pub fn fourcc_str(kind: &FourCc) -> String {
    kind.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

fn malformed(msg: impl Into<String>) -> Mp4Error {
    Mp4Error::Malformed(msg.into())
}

/// One box. For containers, `payload` holds the bytes between the header and the
/// first child (a sample entry's fixed fields, `stsd`'s version and count) and
/// `children` the boxes after them; for leaves, `payload` is the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Box {
    pub kind: FourCc,
    pub payload: Vec<u8>,
    pub children: Option<Vec<Mp4Box>>,
}

/// How many payload bytes precede the children of a container box, or `None` for a leaf.
fn container_prefix(kind: &FourCc, body: &[u8]) -> Result<Option<usize>, Mp4Error> {
    Ok(match kind {
        b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"mvex" | b"moof" | b"traf" | b"edts"
        | b"dinf" | b"sinf" | b"schi" => Some(0),
        // FullBox header (4) + entry_count (4).
        b"stsd" => Some(8),
        // SampleEntry (8) + VisualSampleEntry fields (70), ISO/IEC 14496-12 12.1.3.
        b"avc1" | b"avc3" | b"encv" => Some(78),
        // SampleEntry (8) + AudioSampleEntry fields (20); QuickTime's sound
        // description versions 1 and 2 add 16 and 36 bytes.
        b"mp4a" | b"enca" => {
            let version = body
                .get(8..10)
                .map(|v| u16::from_be_bytes([v[0], v[1]]))
                .ok_or_else(|| malformed("audio sample entry shorter than its fields"))?;
            Some(match version {
                0 => 28,
                1 => 44,
                2 => 64,
                v => {
                    return Err(Mp4Error::Unsupported(format!(
                        "audio sample entry version {v}"
                    )));
                }
            })
        }
        _ => None,
    })
}

/// Reads a box header at the start of `data`: (total size, kind, header length).
/// A size of 0 ("to the end") is resolved against `data`'s length.
pub fn read_header(data: &[u8]) -> Result<(u64, FourCc, usize), Mp4Error> {
    if data.len() < 8 {
        return Err(malformed(format!(
            "{} bytes left where a box header needs 8",
            data.len()
        )));
    }
    let size32 = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let kind: FourCc = [data[4], data[5], data[6], data[7]];
    let (size, header) = match size32 {
        0 => (data.len() as u64, 8),
        1 => {
            let large = data
                .get(8..16)
                .ok_or_else(|| malformed("box with a 64-bit size is truncated"))?;
            (u64::from_be_bytes(large.try_into().expect("8 bytes")), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header as u64 {
        return Err(malformed(format!(
            "box '{}' claims {size} bytes, less than its header",
            fourcc_str(&kind)
        )));
    }
    Ok((size, kind, header))
}

/// Parses a sequence of sibling boxes that fills `data` exactly.
pub fn parse_boxes(data: &[u8]) -> Result<Vec<Mp4Box>, Mp4Error> {
    parse_at_depth(data, 0)
}

fn parse_at_depth(mut data: &[u8], depth: usize) -> Result<Vec<Mp4Box>, Mp4Error> {
    if depth > MAX_DEPTH {
        return Err(malformed("boxes nested too deeply"));
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let (size, kind, header) = read_header(data)?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= data.len())
            .ok_or_else(|| {
                malformed(format!(
                    "box '{}' claims {size} bytes but only {} remain",
                    fourcc_str(&kind),
                    data.len()
                ))
            })?;
        let body = &data[header..size];
        out.push(parse_body(kind, body, depth)?);
        data = &data[size..];
    }
    Ok(out)
}

fn parse_body(kind: FourCc, body: &[u8], depth: usize) -> Result<Mp4Box, Mp4Error> {
    match container_prefix(&kind, body)? {
        None => Ok(Mp4Box {
            kind,
            payload: body.to_vec(),
            children: None,
        }),
        Some(prefix) => {
            let fixed = body.get(..prefix).ok_or_else(|| {
                malformed(format!(
                    "box '{}' is {} bytes, shorter than its {prefix} fixed bytes",
                    fourcc_str(&kind),
                    body.len()
                ))
            })?;
            Ok(Mp4Box {
                kind,
                payload: fixed.to_vec(),
                children: Some(parse_at_depth(&body[prefix..], depth + 1)?),
            })
        }
    }
}

/// Parses one whole box (header included) that fills `data` exactly.
pub fn parse_one(data: &[u8]) -> Result<Mp4Box, Mp4Error> {
    let mut boxes = parse_boxes(data)?;
    match boxes.len() {
        1 => Ok(boxes.remove(0)),
        n => Err(malformed(format!("expected one box, found {n}"))),
    }
}

impl Mp4Box {
    pub fn leaf(kind: &FourCc, payload: Vec<u8>) -> Self {
        Self {
            kind: *kind,
            payload,
            children: None,
        }
    }

    pub fn container(kind: &FourCc, prefix: Vec<u8>, children: Vec<Mp4Box>) -> Self {
        Self {
            kind: *kind,
            payload: prefix,
            children: Some(children),
        }
    }

    /// A FullBox leaf: version, 24-bit flags, then `body`.
    pub fn full(kind: &FourCc, version: u8, flags: u32, body: &[u8]) -> Self {
        let mut payload = Vec::with_capacity(4 + body.len());
        payload.push(version);
        payload.extend_from_slice(&flags.to_be_bytes()[1..]);
        payload.extend_from_slice(body);
        Self::leaf(kind, payload)
    }

    fn body_size(&self) -> u64 {
        self.payload.len() as u64
            + self
                .children
                .iter()
                .flatten()
                .map(Mp4Box::size)
                .sum::<u64>()
    }

    /// Bytes this box takes when written, header included.
    pub fn size(&self) -> u64 {
        let body = self.body_size();
        if body + 8 > u64::from(u32::MAX) {
            body + 16
        } else {
            body + 8
        }
    }

    pub fn write_into(&self, out: &mut Vec<u8>) {
        let body = self.body_size();
        if body + 8 > u64::from(u32::MAX) {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&self.kind);
            out.extend_from_slice(&(body + 16).to_be_bytes());
        } else {
            let size = u32::try_from(body + 8).expect("checked above");
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&self.kind);
        }
        out.extend_from_slice(&self.payload);
        for child in self.children.iter().flatten() {
            child.write_into(out);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.size()).unwrap_or(0));
        self.write_into(&mut out);
        out
    }

    pub fn kids(&self) -> &[Mp4Box] {
        self.children.as_deref().unwrap_or(&[])
    }

    pub fn child(&self, kind: &FourCc) -> Option<&Mp4Box> {
        self.kids().iter().find(|b| &b.kind == kind)
    }

    pub fn child_mut(&mut self, kind: &FourCc) -> Option<&mut Mp4Box> {
        self.children.as_mut()?.iter_mut().find(|b| &b.kind == kind)
    }

    /// The descendant reached by following `path` (first match at each level).
    pub fn find(&self, path: &[&FourCc]) -> Option<&Mp4Box> {
        path.iter().try_fold(self, |b, kind| b.child(kind))
    }

    pub fn find_mut(&mut self, path: &[&FourCc]) -> Option<&mut Mp4Box> {
        let mut here = self;
        for kind in path {
            here = here.child_mut(kind)?;
        }
        Some(here)
    }

    /// Like [`Mp4Box::find`], but a missing box is a [`Mp4Error::Malformed`] naming the path.
    pub fn require(&self, path: &[&FourCc]) -> Result<&Mp4Box, Mp4Error> {
        self.find(path).ok_or_else(|| missing(&self.kind, path))
    }

    pub fn require_mut(&mut self, path: &[&FourCc]) -> Result<&mut Mp4Box, Mp4Error> {
        let kind = self.kind;
        self.find_mut(path).ok_or_else(|| missing(&kind, path))
    }

    /// Byte offset, from the start of this box, of the first descendant along `path`
    /// once written. Used for `saio`, which points into the written `moof`.
    pub fn offset_of(&self, path: &[&FourCc]) -> Option<u64> {
        let Some((first, rest)) = path.split_first() else {
            return Some(0);
        };
        let header = self.size() - self.body_size();
        let mut offset = header + self.payload.len() as u64;
        for child in self.kids() {
            if &child.kind == *first {
                return child.offset_of(rest).map(|inner| offset + inner);
            }
            offset += child.size();
        }
        None
    }

    /// Version and flags of a FullBox, and the bytes after them.
    pub fn full_header(&self) -> Result<(u8, u32, &[u8]), Mp4Error> {
        if self.payload.len() < 4 {
            return Err(malformed(format!(
                "'{}' is too short for a full box header",
                fourcc_str(&self.kind)
            )));
        }
        let flags = u32::from_be_bytes([0, self.payload[1], self.payload[2], self.payload[3]]);
        Ok((self.payload[0], flags, &self.payload[4..]))
    }
}

fn missing(root: &FourCc, path: &[&FourCc]) -> Mp4Error {
    let path: Vec<String> = std::iter::once(root)
        .chain(path.iter().copied())
        .map(fourcc_str)
        .collect();
    malformed(format!("missing box {}", path.join("/")))
}

/// Bounds-checked big-endian reads over a box payload.
pub struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| malformed(format!("'{}' is truncated", self.what)))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Mp4Error> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Mp4Error> {
        Ok(u16::from_be_bytes(self.bytes(2)?.try_into().expect("2")))
    }

    pub fn u32(&mut self) -> Result<u32, Mp4Error> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    pub fn u64(&mut self) -> Result<u64, Mp4Error> {
        Ok(u64::from_be_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Reads a file's top-level boxes one at a time, each whole, so a fragmented MP4
/// is processed one fragment at a time in bounded memory.
pub struct TopLevelReader<R> {
    inner: R,
    max_box: u64,
}

impl<R: Read> TopLevelReader<R> {
    /// `max_box` bounds the bytes read for one box; a bigger one is an error.
    pub fn new(inner: R, max_box: u64) -> Self {
        Self { inner, max_box }
    }

    /// The next box as (kind, all its bytes including the header), or `None` at a clean end.
    pub fn next_box(&mut self) -> Result<Option<(FourCc, Vec<u8>)>, TopLevelError> {
        let mut header = [0u8; 8];
        let got = read_full(&mut self.inner, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 8 {
            return Err(malformed("file ends inside a box header").into());
        }
        let kind: FourCc = header[4..8].try_into().expect("4");
        let mut bytes = header.to_vec();
        let size = match u32::from_be_bytes(header[..4].try_into().expect("4")) {
            0 => {
                // "Extends to the end of the file": read what is left, within the bound.
                (&mut self.inner)
                    .take(self.max_box + 1)
                    .read_to_end(&mut bytes)?;
                if bytes.len() as u64 > self.max_box {
                    return Err(self.too_big(&kind, bytes.len() as u64));
                }
                return Ok(Some((kind, bytes)));
            }
            1 => {
                let mut large = [0u8; 8];
                if read_full(&mut self.inner, &mut large)? < 8 {
                    return Err(malformed("file ends inside a 64-bit box size").into());
                }
                bytes.extend_from_slice(&large);
                u64::from_be_bytes(large)
            }
            n => u64::from(n),
        };
        if size < bytes.len() as u64 {
            return Err(malformed(format!(
                "top-level box '{}' claims {size} bytes, less than its header",
                fourcc_str(&kind)
            ))
            .into());
        }
        if size > self.max_box {
            return Err(self.too_big(&kind, size));
        }
        let header_len = bytes.len();
        bytes.resize(usize::try_from(size).expect("bounded by max_box"), 0);
        if read_full(&mut self.inner, &mut bytes[header_len..])? < bytes.len() - header_len {
            return Err(malformed(format!(
                "file ends inside top-level box '{}'",
                fourcc_str(&kind)
            ))
            .into());
        }
        Ok(Some((kind, bytes)))
    }

    fn too_big(&self, kind: &FourCc, size: u64) -> TopLevelError {
        Mp4Error::Unsupported(format!(
            "top-level box '{}' is {size} bytes, over the {} byte limit",
            fourcc_str(kind),
            self.max_box
        ))
        .into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopLevelError {
    #[error(transparent)]
    Mp4(#[from] Mp4Error),
    #[error("reading MP4: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn nested_tree_round_trips_byte_exact() {
        let tkhd = raw(b"tkhd", &[1, 2, 3]);
        let free = raw(b"free", &[]);
        let trak = raw(b"trak", &[tkhd.clone(), free.clone()].concat());
        let moov = raw(b"moov", &trak);
        let tree = parse_one(&moov).unwrap();
        assert_eq!(tree.kind, *b"moov");
        let trak_box = tree.child(b"trak").unwrap();
        assert_eq!(trak_box.kids().len(), 2);
        assert_eq!(trak_box.kids()[0].payload, vec![1, 2, 3]);
        assert_eq!(tree.to_bytes(), moov);
        assert_eq!(tree.size(), moov.len() as u64);
        // tkhd starts after moov's and trak's 8-byte headers.
        assert_eq!(tree.offset_of(&[b"trak", b"tkhd"]), Some(16));
        assert_eq!(tree.offset_of(&[b"trak", b"free"]), Some(16 + 11));
        assert_eq!(tree.offset_of(&[b"trak", b"nope"]), None);
    }

    #[test]
    fn sizes_are_recomputed_after_edits() {
        let moov = raw(b"moov", &raw(b"trak", &raw(b"tkhd", &[0; 4])));
        let mut tree = parse_one(&moov).unwrap();
        tree.require_mut(&[b"trak"])
            .unwrap()
            .children
            .as_mut()
            .unwrap()
            .push(Mp4Box::full(b"pssh", 1, 0, &[9; 20]));
        let bytes = tree.to_bytes();
        assert_eq!(bytes.len(), moov.len() + 32);
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(
            u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize,
            bytes.len() - 8
        );
        let back = parse_one(&bytes).unwrap();
        let pssh = back.require(&[b"trak", b"pssh"]).unwrap();
        let (version, flags, rest) = pssh.full_header().unwrap();
        assert_eq!((version, flags, rest.len()), (1, 0, 20));
    }

    #[test]
    fn sample_entries_keep_their_fixed_fields() {
        let mut avc1_body = vec![0u8; 78];
        avc1_body[24..26].copy_from_slice(&640u16.to_be_bytes());
        let avcc = raw(b"avcC", &[1, 0x64, 0, 0x1f, 0xff]);
        avc1_body.extend_from_slice(&avcc);
        let avc1 = raw(b"avc1", &avc1_body);
        let stsd = raw(
            b"stsd",
            &[[0, 0, 0, 0, 0, 0, 0, 1].as_slice(), &avc1].concat(),
        );
        let tree = parse_one(&stsd).unwrap();
        let entry = &tree.kids()[0];
        assert_eq!(entry.payload.len(), 78);
        assert_eq!(
            entry.child(b"avcC").unwrap().payload,
            vec![1, 0x64, 0, 0x1f, 0xff]
        );
        assert_eq!(tree.to_bytes(), stsd);
    }

    #[test]
    fn large_size_header_is_read() {
        let mut data = 1u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"mdat");
        data.extend_from_slice(&20u64.to_be_bytes());
        data.extend_from_slice(&[7; 4]);
        let b = parse_one(&data).unwrap();
        assert_eq!(b.payload, vec![7; 4]);
        // Written back, a small box uses the compact header.
        assert_eq!(b.to_bytes(), raw(b"mdat", &[7; 4]));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(parse_boxes(&[0, 0, 0]).is_err());
        // Claims 100 bytes, has 12.
        assert!(parse_boxes(&raw(b"free", &[0; 4])[..]).is_ok());
        let mut lying = raw(b"free", &[0; 4]);
        lying[3] = 100;
        assert!(matches!(parse_boxes(&lying), Err(Mp4Error::Malformed(_))));
        // Size smaller than the header.
        let mut tiny = raw(b"free", &[]);
        tiny[3] = 4;
        assert!(parse_boxes(&tiny).is_err());
        // A sample entry too short for its fixed fields.
        assert!(parse_boxes(&raw(b"avc1", &[0; 10])).is_err());
        assert!(parse_boxes(&raw(b"mp4a", &[0; 4])).is_err());
        // Nesting beyond the limit.
        let mut deep = raw(b"free", &[]);
        for _ in 0..40 {
            deep = raw(b"moov", &deep);
        }
        assert!(parse_boxes(&deep).is_err());
    }

    #[test]
    fn top_level_reader_streams_and_bounds() {
        let file = [
            raw(b"ftyp", &[1; 8]),
            raw(b"moof", &[2; 30]),
            raw(b"mdat", &[3; 5]),
        ]
        .concat();
        let mut reader = TopLevelReader::new(&file[..], 1024);
        let kinds: Vec<FourCc> = std::iter::from_fn(|| reader.next_box().unwrap())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, vec![*b"ftyp", *b"moof", *b"mdat"]);

        let mut small = TopLevelReader::new(&file[..], 20);
        assert!(small.next_box().unwrap().is_some());
        assert!(matches!(
            small.next_box(),
            Err(TopLevelError::Mp4(Mp4Error::Unsupported(_)))
        ));

        let cut = &file[..file.len() - 2];
        let mut reader = TopLevelReader::new(cut, 1024);
        reader.next_box().unwrap();
        reader.next_box().unwrap();
        assert!(reader.next_box().is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_boxes(&data);
            let mut reader = TopLevelReader::new(&data[..], 128);
            for _ in 0..64 {
                match reader.next_box() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }

        #[test]
        fn parsed_boxes_write_back_identically(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let leaves: Vec<u8> = payloads.iter().flat_map(|p| raw(b"tkhd", p)).collect();
            let moov = raw(b"moov", &raw(b"trak", &leaves));
            prop_assert_eq!(parse_one(&moov).unwrap().to_bytes(), moov);
        }
    }
}
