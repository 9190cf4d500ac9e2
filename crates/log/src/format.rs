//! On-disk formats. All integers little-endian; every structure carries a CRC32C.
//!
//! Segment file `{base_offset:020}.log`:
//!   header (32 bytes): magic "KEELSEG1" | format_version u32 | reserved u32 |
//!                      base_offset u64 | crc32c u32 (of the 24 bytes before) | reserved u32
//!   then frames, one per record:
//!                      crc32c u32 (of the 12 header bytes after it and the payload) |
//!                      payload_len u32 | offset u64 | payload
//! Index file `{base_offset:020}.index` (sealed segments only; derived data, rebuilt if bad):
//!   magic "KEELIDX1" | entry_count u32 | segment_end_offset u64 | segment_size_bytes u64 |
//!   entries (relative_offset u32, position u32) * entry_count | crc32c u32 of all before.

pub const SEGMENT_MAGIC: &[u8; 8] = b"KEELSEG1";
pub const INDEX_MAGIC: &[u8; 8] = b"KEELIDX1";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 32;
pub const FRAME_HEADER_BYTES: usize = 16;
const INDEX_HEADER_BYTES: usize = 28;

pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// The base offset named by a segment or index file name, if it is one of ours.
pub fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(".log") {
        (stem, FileKind::Segment)
    } else if let Some(stem) = name.strip_suffix(".index") {
        (stem, FileKind::Index)
    } else {
        return None;
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|base| (base, kind))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Segment,
    Index,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub fn encode_segment_header(base_offset: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&base_offset.to_le_bytes());
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(header.len() as u64, SEGMENT_HEADER_BYTES);
    header
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Not our magic: the file was written by something else.
    Foreign,
    /// Ours, but unusable; the string says why.
    Corrupt(String),
}

/// Validates a segment header and returns its base offset.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u64, HeaderProblem> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        if SEGMENT_MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Err(HeaderProblem::Corrupt(format!("segment header is {} bytes, expected {SEGMENT_HEADER_BYTES}", bytes.len())));
        }
        return Err(HeaderProblem::Foreign);
    }
    if &bytes[0..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::Foreign);
    }
    let crc_stored = u32_at(bytes, 24);
    let crc_actual = crc32c::crc32c(&bytes[0..24]);
    if crc_stored != crc_actual {
        return Err(HeaderProblem::Corrupt(format!("segment header checksum {crc_stored:#010x} does not match {crc_actual:#010x}")));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::Corrupt(format!("segment format version {version}, this build reads {FORMAT_VERSION}")));
    }
    Ok(u64_at(bytes, 16))
}

/// Appends one frame to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let payload_len = u32::try_from(payload.len()).expect("payload length checked against record_bytes_max");
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&payload_len.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

pub fn frame_bytes(payload_len: usize) -> u64 {
    (FRAME_HEADER_BYTES + payload_len) as u64
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameCheck {
    /// A whole valid frame of `frame_bytes` bytes holding the expected offset.
    Valid {
        payload_len: usize,
    },
    /// `bytes` ends before the frame does; `needed` is the frame's full size if known.
    Incomplete {
        needed: Option<usize>,
    },
    Invalid(String),
}

/// Checks the frame at the start of `bytes`. Never trusts a length before
/// bounding it, so a torn or flipped header cannot cause a huge read.
pub fn check_frame(bytes: &[u8], expected_offset: u64, record_bytes_max: u32) -> FrameCheck {
    if bytes.len() < FRAME_HEADER_BYTES {
        return FrameCheck::Incomplete { needed: None };
    }
    let payload_len = u32_at(bytes, 4);
    if payload_len > record_bytes_max {
        return FrameCheck::Invalid(format!("frame length {payload_len} exceeds record_bytes_max {record_bytes_max}"));
    }
    let frame_len = FRAME_HEADER_BYTES + payload_len as usize;
    if bytes.len() < frame_len {
        return FrameCheck::Incomplete { needed: Some(frame_len) };
    }
    let crc_stored = u32_at(bytes, 0);
    let crc_actual = crc32c::crc32c(&bytes[4..frame_len]);
    if crc_stored != crc_actual {
        return FrameCheck::Invalid(format!("frame checksum {crc_stored:#010x} does not match {crc_actual:#010x}"));
    }
    let offset = u64_at(bytes, 8);
    if offset != expected_offset {
        return FrameCheck::Invalid(format!("frame holds offset {offset}, expected {expected_offset}"));
    }
    FrameCheck::Valid { payload_len: payload_len as usize }
}

/// One sparse index entry: the record at `base + relative_offset` starts at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SealedIndex {
    pub segment_end_offset: u64,
    pub segment_size_bytes: u64,
    pub entries: Vec<IndexEntry>,
}

pub fn encode_index(index: &SealedIndex) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(INDEX_HEADER_BYTES + index.entries.len() * 8 + 4);
    bytes.extend_from_slice(INDEX_MAGIC);
    bytes.extend_from_slice(&u32::try_from(index.entries.len()).expect("index entries fit u32").to_le_bytes());
    bytes.extend_from_slice(&index.segment_end_offset.to_le_bytes());
    bytes.extend_from_slice(&index.segment_size_bytes.to_le_bytes());
    for entry in &index.entries {
        bytes.extend_from_slice(&entry.relative_offset.to_le_bytes());
        bytes.extend_from_slice(&entry.position.to_le_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// `None` when the index is torn, corrupt or not ours: callers rebuild it.
pub fn decode_index(bytes: &[u8]) -> Option<SealedIndex> {
    if bytes.len() < INDEX_HEADER_BYTES + 4 || &bytes[0..8] != INDEX_MAGIC {
        return None;
    }
    let count = u32_at(bytes, 8) as usize;
    let expected_len = INDEX_HEADER_BYTES.checked_add(count.checked_mul(8)?)?.checked_add(4)?;
    if bytes.len() != expected_len {
        return None;
    }
    let crc_at = expected_len - 4;
    if u32_at(bytes, crc_at) != crc32c::crc32c(&bytes[..crc_at]) {
        return None;
    }
    let entries = (0..count)
        .map(|i| {
            let at = INDEX_HEADER_BYTES + i * 8;
            IndexEntry { relative_offset: u32_at(bytes, at), position: u32_at(bytes, at + 4) }
        })
        .collect();
    Some(SealedIndex { segment_end_offset: u64_at(bytes, 12), segment_size_bytes: u64_at(bytes, 20), entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, b"hello keel");
        assert_eq!(check_frame(&buf, 42, 1024), FrameCheck::Valid { payload_len: 10 });
        for bit in 0..buf.len() * 8 {
            let mut flipped = buf.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let check = check_frame(&flipped, 42, 1024);
            assert!(!matches!(check, FrameCheck::Valid { .. }), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn frame_with_wrong_offset_or_huge_length_is_invalid() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, b"x");
        assert!(matches!(check_frame(&buf, 8, 1024), FrameCheck::Invalid(_)));
        assert!(matches!(check_frame(&buf, 7, 0), FrameCheck::Invalid(_)));
        assert_eq!(check_frame(&buf[..10], 7, 1024), FrameCheck::Incomplete { needed: None });
        assert_eq!(check_frame(&buf[..16], 7, 1024), FrameCheck::Incomplete { needed: Some(17) });
        assert!(matches!(check_frame(&[0u8; 32], 0, 1024), FrameCheck::Invalid(_)));
    }

    #[test]
    fn segment_header_detects_foreign_and_corrupt_files() {
        let header = encode_segment_header(1234);
        assert_eq!(decode_segment_header(&header), Ok(1234));
        assert_eq!(decode_segment_header(b"PK\x03\x04 zip file"), Err(HeaderProblem::Foreign));
        let mut corrupt = header.clone();
        corrupt[17] ^= 0x10;
        assert!(matches!(decode_segment_header(&corrupt), Err(HeaderProblem::Corrupt(_))));
        assert!(matches!(decode_segment_header(&header[..12]), Err(HeaderProblem::Corrupt(_))));
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let index = SealedIndex {
            segment_end_offset: 99,
            segment_size_bytes: 12_345,
            entries: vec![IndexEntry { relative_offset: 0, position: 32 }, IndexEntry { relative_offset: 40, position: 4200 }],
        };
        let bytes = encode_index(&index);
        assert_eq!(decode_index(&bytes), Some(index));
        let mut damaged = bytes.clone();
        damaged[30] ^= 1;
        assert_eq!(decode_index(&damaged), None);
        assert_eq!(decode_index(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn only_twenty_digit_names_are_ours() {
        assert_eq!(parse_file_name("00000000000000000042.log"), Some((42, FileKind::Segment)));
        assert_eq!(parse_file_name("00000000000000000042.index"), Some((42, FileKind::Index)));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
    }
}
