//! The on-disk layout of one cached object, with no IO: encoding and checking the header, and
//! the per-block checksums that let a hit verify each block before it is sent.
//!
//! ```text
//! 0   magic "CSCDSK01"
//! 8   header length (u32 LE)
//! 12  CRC-32 of the header (u32 LE)
//! 16  header: key, tags, pingora metadata (internal + response header), body length,
//!     block size, one CRC-32 per body block
//! 16+header length: body
//! ```
//!
//! A file is whole only if its length is exactly `16 + header length + body length`; a
//! truncated file fails that test before anything is read, a corrupt header fails its CRC,
//! and a corrupt body block fails its own CRC when it is read.

use bytes::Bytes;

/// File signature and format version.
pub const MAGIC: &[u8; 8] = b"CSCDSK01";

/// Bytes before the header.
pub const PREFIX_LEN: usize = 16;

/// Body block size: each block has its own checksum and is read in one piece.
pub const BLOCK_SIZE: u32 = 256 * 1024;

/// Largest header accepted when reading (keys and response headers are small).
const MAX_HEADER_LEN: u32 = 1 << 20;

/// Why a file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a cache file, or another format version.
    #[error("not a cache file of this version")]
    BadMagic,
    /// The header is larger than any we write.
    #[error("header length {0} is implausible")]
    HeaderTooLong(u32),
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The header ends early or has trailing bytes.
    #[error("header is malformed: {0}")]
    Malformed(&'static str),
    /// The file is shorter or longer than its header says.
    #[error("file is {actual} bytes, its header says {expected}")]
    WrongLength {
        /// Length implied by the header.
        expected: u64,
        /// Length on disk.
        actual: u64,
    },
}

/// Everything in a file except the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskHeader {
    /// Readable cache key (`host/path?query`).
    pub key: String,
    /// `Surrogate-Key` tags.
    pub tags: Vec<String>,
    /// pingora `CacheMeta` internal part.
    pub meta_internal: Vec<u8>,
    /// pingora `CacheMeta` response header part.
    pub meta_header: Vec<u8>,
    /// Body length.
    pub body_len: u64,
    /// Block size the checksums were computed over.
    pub block_size: u32,
    /// CRC-32 of each body block.
    pub block_crcs: Vec<u32>,
}

impl DiskHeader {
    /// A header for `body` (given as the chunks it is held in).
    pub fn for_body(
        key: String,
        tags: Vec<String>,
        meta_internal: Vec<u8>,
        meta_header: Vec<u8>,
        body: &[Bytes],
    ) -> Self {
        Self {
            key,
            tags,
            meta_internal,
            meta_header,
            body_len: body.iter().map(|c| c.len() as u64).sum(),
            block_size: BLOCK_SIZE,
            block_crcs: block_crcs(body, BLOCK_SIZE as usize),
        }
    }

    /// Prefix and header, ready to be followed by the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(
            64 + self.key.len() + self.meta_internal.len() + self.meta_header.len(),
        );
        put_bytes(&mut payload, self.key.as_bytes());
        put_u32(&mut payload, len_u32(self.tags.len()));
        for tag in &self.tags {
            put_bytes(&mut payload, tag.as_bytes());
        }
        put_bytes(&mut payload, &self.meta_internal);
        put_bytes(&mut payload, &self.meta_header);
        payload.extend_from_slice(&self.body_len.to_le_bytes());
        put_u32(&mut payload, self.block_size);
        put_u32(&mut payload, len_u32(self.block_crcs.len()));
        for crc in &self.block_crcs {
            put_u32(&mut payload, *crc);
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, len_u32(payload.len()));
        put_u32(&mut out, crc32fast::hash(&payload));
        out.extend_from_slice(&payload);
        out
    }

    /// Reads the prefix: the header's length and checksum.
    pub fn decode_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<(u32, u32), FormatError> {
        if &prefix[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        let crc = u32::from_le_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
        if len > MAX_HEADER_LEN {
            return Err(FormatError::HeaderTooLong(len));
        }
        Ok((len, crc))
    }

    /// Reads the header that followed a prefix announcing checksum `crc`.
    pub fn decode(payload: &[u8], crc: u32) -> Result<Self, FormatError> {
        if crc32fast::hash(payload) != crc {
            return Err(FormatError::HeaderChecksum);
        }
        let mut r = Reader(payload);
        let key = r.string()?;
        let tag_count = r.u32()?;
        let mut tags = Vec::new();
        for _ in 0..tag_count {
            tags.push(r.string()?);
        }
        let meta_internal = r.bytes()?.to_vec();
        let meta_header = r.bytes()?.to_vec();
        let body_len = r.u64()?;
        let block_size = r.u32()?;
        // Pinned: a hit reads one block into memory, so a crafted file must not choose its size.
        if block_size != BLOCK_SIZE {
            return Err(FormatError::Malformed(
                "block size is not this format's 256 KiB",
            ));
        }
        let crc_count = r.u32()?;
        if u64::from(crc_count) != body_len.div_ceil(u64::from(block_size)) {
            return Err(FormatError::Malformed(
                "block count does not match the body",
            ));
        }
        let mut block_crcs = Vec::new();
        for _ in 0..crc_count {
            block_crcs.push(r.u32()?);
        }
        if !r.0.is_empty() {
            return Err(FormatError::Malformed("trailing bytes"));
        }
        Ok(Self {
            key,
            tags,
            meta_internal,
            meta_header,
            body_len,
            block_size,
            block_crcs,
        })
    }

    /// Where the body starts, for a header of `header_len` bytes.
    pub fn body_offset(header_len: u32) -> u64 {
        PREFIX_LEN as u64 + u64::from(header_len)
    }

    /// Checks that a file of `actual` bytes holds exactly this header and its body.
    pub fn check_length(&self, header_len: u32, actual: u64) -> Result<(), FormatError> {
        let expected = Self::body_offset(header_len) + self.body_len;
        if expected == actual {
            Ok(())
        } else {
            Err(FormatError::WrongLength { expected, actual })
        }
    }

    /// Number of body blocks.
    pub fn blocks(&self) -> usize {
        self.block_crcs.len()
    }

    /// Offset within the body and length of block `index`.
    pub fn block_span(&self, index: usize) -> (u64, usize) {
        let start = index as u64 * u64::from(self.block_size);
        let len = (self.body_len.saturating_sub(start)).min(u64::from(self.block_size));
        (start, len as usize)
    }

    /// True when `block` is intact block `index`.
    pub fn block_is_intact(&self, index: usize, block: &[u8]) -> bool {
        self.block_crcs.get(index).is_some_and(|&crc| {
            block.len() == self.block_span(index).1 && crc32fast::hash(block) == crc
        })
    }
}

/// CRC-32 of each `block_size` block of the body held in `chunks`.
pub fn block_crcs(chunks: &[Bytes], block_size: usize) -> Vec<u32> {
    let mut crcs = Vec::new();
    let mut hasher = crc32fast::Hasher::new();
    let mut in_block = 0;
    for chunk in chunks {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let n = rest.len().min(block_size - in_block);
            hasher.update(&rest[..n]);
            in_block += n;
            rest = &rest[n..];
            if in_block == block_size {
                crcs.push(std::mem::take(&mut hasher).finalize());
                in_block = 0;
            }
        }
    }
    if in_block > 0 {
        crcs.push(hasher.finalize());
    }
    crcs
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, len_u32(b.len()));
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Malformed("ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, FormatError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| FormatError::Malformed("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &[Bytes]) -> DiskHeader {
        DiskHeader::for_body(
            "cdn.example.com/vod/a/1.m4s".into(),
            vec!["vod".into(), "title-7".into()],
            vec![1, 2, 3],
            b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            body,
        )
    }

    fn decode_all(file: &[u8]) -> Result<(DiskHeader, u32), FormatError> {
        let prefix: [u8; PREFIX_LEN] = file[..PREFIX_LEN].try_into().unwrap_or([0; PREFIX_LEN]);
        let (len, crc) = DiskHeader::decode_prefix(&prefix)?;
        let end = (PREFIX_LEN + len as usize).min(file.len());
        Ok((DiskHeader::decode(&file[PREFIX_LEN..end], crc)?, len))
    }

    #[test]
    fn a_header_round_trips_and_the_length_check_catches_truncation() {
        let body = vec![Bytes::from(vec![7u8; 600_000])];
        let header = sample(&body);
        assert_eq!(header.blocks(), 3, "600 000 bytes in 256 KiB blocks");
        let mut file = header.encode();
        file.extend_from_slice(&body[0]);
        let (decoded, len) = decode_all(&file).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(decoded.check_length(len, file.len() as u64), Ok(()));
        assert!(matches!(
            decoded.check_length(len, file.len() as u64 - 1),
            Err(FormatError::WrongLength { .. })
        ));
    }

    #[test]
    fn a_flipped_header_byte_or_wrong_magic_is_refused() {
        let header = sample(&[Bytes::from_static(b"abc")]);
        let mut file = header.encode();
        let last = file.len() - 1;
        file[last] ^= 1;
        assert_eq!(decode_all(&file).unwrap_err(), FormatError::HeaderChecksum);
        let mut file = header.encode();
        file[0] = b'X';
        assert_eq!(decode_all(&file).unwrap_err(), FormatError::BadMagic);
    }

    #[test]
    fn block_checksums_ignore_chunk_boundaries_and_catch_a_flipped_bit() {
        let whole: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let one = vec![Bytes::from(whole.clone())];
        let many: Vec<Bytes> = whole.chunks(10_000).map(Bytes::copy_from_slice).collect();
        assert_eq!(block_crcs(&one, 262_144), block_crcs(&many, 262_144));
        let header = sample(&many);
        let (start, len) = header.block_span(2);
        assert_eq!((start, len), (524_288, 700_000 - 524_288));
        let mut block = whole[start as usize..].to_vec();
        assert!(header.block_is_intact(2, &block));
        block[100] ^= 0x10;
        assert!(!header.block_is_intact(2, &block));
        assert!(!header.block_is_intact(2, &whole[start as usize..whole.len() - 1]));
    }

    #[test]
    fn a_header_asking_for_another_block_size_is_refused() {
        for block_size in [0, 1, u32::MAX] {
            let mut header = sample(&[Bytes::from_static(b"abc")]);
            header.block_size = block_size;
            header.block_crcs =
                vec![0; header.body_len.div_ceil(u64::from(block_size.max(1))) as usize];
            assert_eq!(
                decode_all(&header.encode()).unwrap_err(),
                FormatError::Malformed("block size is not this format's 256 KiB"),
                "block size {block_size}"
            );
        }
    }

    #[test]
    fn an_empty_body_has_no_blocks() {
        let header = sample(&[]);
        assert_eq!((header.body_len, header.blocks()), (0, 0));
        let (decoded, _) = decode_all(&header.encode()).unwrap();
        assert_eq!(decoded, header);
    }
}
