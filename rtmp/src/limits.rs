//! Limits on an RTMP chunk stream, checked on the bytes before the RTMP session reads them.
//!
//! An RTMP message header announces up to 16 MiB, and the session library (`rml_rtmp`)
//! buffers a message until it is complete. [`ChunkLimits`] follows the chunk headers (basic
//! header, message header, extended timestamp, and the peer's `Set Chunk Size`) and refuses a
//! stream whose messages or chunk size pass the configured bounds, so a publisher cannot make
//! the server hold more than one bounded message.
//!
//! It also refuses what that library cannot follow: it keeps a single partial message for
//! the whole connection, so a chunk of another chunk stream, or a new message header, in the
//! middle of a message would be appended to the wrong message (and can underflow its length
//! arithmetic, which the fuzz target found). Encoders (ffmpeg, OBS, librtmp) write a
//! message's chunks back to back, so they never do either.

use std::collections::HashMap;

/// The bounds a publisher must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Largest message (a 4K keyframe at a high bitrate is a few MiB).
    pub max_message: u32,
    /// Largest chunk size the peer may set.
    pub max_chunk_size: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_message: 8 * 1024 * 1024,
            max_chunk_size: 1024 * 1024,
        }
    }
}

/// Why a chunk stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A message larger than allowed.
    #[error("RTMP message of {0} bytes is larger than the {1} allowed")]
    MessageTooLarge(u32, u32),
    /// A chunk size larger than allowed.
    #[error("RTMP chunk size {0} is larger than the {1} allowed")]
    ChunkSizeTooLarge(u32, u32),
    /// A chunk size of zero.
    #[error("RTMP chunk size 0 is not valid")]
    ChunkSizeZero,
    /// A chunk of another chunk stream in the middle of a message.
    #[error("RTMP chunk stream {0} interleaved with the unfinished message of chunk stream {1}")]
    Interleaved(u32, u32),
    /// A new message header in the middle of a message.
    #[error("RTMP chunk stream {0} starts a new message before finishing the last")]
    Restarted(u32),
    /// A chunk continues a chunk stream that never had a full header.
    #[error("RTMP chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
}

const DEFAULT_CHUNK_SIZE: u32 = 128;
const SET_CHUNK_SIZE: u8 = 1;
const EXTENDED: u32 = 0x00ff_ffff;

#[derive(Debug, Clone, Copy, Default)]
struct StreamState {
    length: u32,
    type_id: u8,
    /// Bytes of the current message received so far.
    received: u32,
    extended_timestamp: bool,
    /// The first bytes of a `Set Chunk Size` message.
    control: [u8; 4],
}

/// Where the parser is inside the byte stream.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Waiting for a chunk header (held in `header` until complete).
    Header,
    /// Inside a chunk's payload: `left` bytes of chunk stream `csid` to go.
    Payload { csid: u32, left: u32 },
}

/// Follows a publisher's chunk stream and checks it against [`Bounds`].
#[derive(Debug)]
pub struct ChunkLimits {
    bounds: Bounds,
    chunk_size: u32,
    streams: HashMap<u32, StreamState>,
    /// The chunk stream in the middle of a message, if any.
    partial: Option<u32>,
    stage: Stage,
    header: Vec<u8>,
}

impl ChunkLimits {
    /// A checker for a new connection (the handshake already done).
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            partial: None,
            stage: Stage::Header,
            header: Vec::with_capacity(18),
        }
    }

    /// Checks the next `bytes` of the chunk stream; an error means the connection must close.
    pub fn check(&mut self, mut bytes: &[u8]) -> Result<(), LimitError> {
        while !bytes.is_empty() {
            match self.stage {
                Stage::Header => {
                    let needed = header_len(&self.header, &self.streams);
                    let take = needed.saturating_sub(self.header.len()).min(bytes.len());
                    self.header.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.header.len() == header_len(&self.header, &self.streams) {
                        self.start_chunk()?;
                    }
                }
                Stage::Payload { csid, left } => {
                    let take = (left as usize).min(bytes.len());
                    self.payload(csid, &bytes[..take])?;
                    bytes = &bytes[take..];
                    let left = left - take as u32;
                    self.stage = Stage::Payload { csid, left };
                    if left == 0 {
                        self.end_chunk(csid)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_chunk(&mut self) -> Result<(), LimitError> {
        let header = std::mem::take(&mut self.header);
        let (fmt, csid, at) = basic_header(&header);
        if let Some(open) = self.partial
            && open != csid
        {
            return Err(LimitError::Interleaved(csid, open));
        }
        let previous = self.streams.get(&csid).copied();
        let mut state = match (fmt, previous) {
            (0, _) => StreamState {
                extended_timestamp: false,
                ..previous.unwrap_or_default()
            },
            (_, Some(state)) => state,
            (_, None) => return Err(LimitError::NoPreviousHeader(csid)),
        };
        let field = |i: usize| {
            u32::from_be_bytes([0, header[at + i], header[at + i + 1], header[at + i + 2]])
        };
        let starting = self.partial.is_none();
        if fmt <= 1 && !starting {
            return Err(LimitError::Restarted(csid));
        }
        if fmt <= 2 {
            state.extended_timestamp = field(0) == EXTENDED;
        }
        if fmt <= 1 {
            state.length = field(3);
            state.type_id = header[at + 6];
        }
        if starting {
            state.received = 0;
        }
        if state.length > self.bounds.max_message {
            return Err(LimitError::MessageTooLarge(
                state.length,
                self.bounds.max_message,
            ));
        }
        let left = (state.length - state.received).min(self.chunk_size);
        self.streams.insert(csid, state);
        self.header = header;
        self.header.clear();
        self.stage = Stage::Payload { csid, left };
        if left == 0 {
            self.end_chunk(csid)?;
        }
        Ok(())
    }

    fn payload(&mut self, csid: u32, bytes: &[u8]) -> Result<(), LimitError> {
        let Some(state) = self.streams.get_mut(&csid) else {
            return Ok(());
        };
        for (i, &byte) in bytes.iter().enumerate() {
            if let Some(slot) = state.control.get_mut(state.received as usize + i) {
                *slot = byte;
            } else {
                break;
            }
        }
        state.received += bytes.len() as u32;
        if state.received < state.length {
            self.partial = Some(csid);
        }
        Ok(())
    }

    fn end_chunk(&mut self, csid: u32) -> Result<(), LimitError> {
        self.stage = Stage::Header;
        let Some(state) = self.streams.get(&csid).copied() else {
            return Ok(());
        };
        if state.received < state.length {
            return Ok(());
        }
        self.partial = None;
        if state.type_id == SET_CHUNK_SIZE && state.length >= 4 {
            let size = u32::from_be_bytes(state.control) & 0x7fff_ffff;
            if size == 0 {
                return Err(LimitError::ChunkSizeZero);
            }
            if size > self.bounds.max_chunk_size {
                return Err(LimitError::ChunkSizeTooLarge(
                    size,
                    self.bounds.max_chunk_size,
                ));
            }
            self.chunk_size = size;
        }
        Ok(())
    }

    /// Bytes held in the partial message.
    pub fn partial_bytes(&self) -> u64 {
        self.partial
            .and_then(|csid| self.streams.get(&csid))
            .map_or(0, |state| u64::from(state.received))
    }
}

/// The format, chunk stream id and length of the basic header in `header` (which holds at
/// least the basic header).
fn basic_header(header: &[u8]) -> (u8, u32, usize) {
    let fmt = header[0] >> 6;
    match header[0] & 0x3f {
        0 => (fmt, 64 + u32::from(header[1]), 2),
        1 => (
            fmt,
            64 + u32::from(header[1]) + 256 * u32::from(header[2]),
            3,
        ),
        id => (fmt, u32::from(id), 1),
    }
}

/// How long the chunk header starting in `partial` is, as far as `partial` tells: each call
/// with more bytes may give a longer answer, until the header is complete.
fn header_len(partial: &[u8], streams: &HashMap<u32, StreamState>) -> usize {
    let Some(&first) = partial.first() else {
        return 1;
    };
    let basic = match first & 0x3f {
        0 => 2,
        1 => 3,
        _ => 1,
    };
    if partial.len() < basic {
        return basic;
    }
    let (fmt, csid, _) = basic_header(partial);
    let message = [11, 7, 3, 0][usize::from(fmt)];
    let fixed = basic + message;
    if partial.len() < fixed {
        return fixed;
    }
    let extended = if fmt <= 2 {
        let at = basic;
        u32::from_be_bytes([0, partial[at], partial[at + 1], partial[at + 2]]) == EXTENDED
    } else {
        streams.get(&csid).is_some_and(|s| s.extended_timestamp)
    };
    fixed + if extended { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type-0 chunk header on `csid` for a message of `len` bytes of `type_id`.
    fn full_header(csid: u8, len: u32, type_id: u8) -> Vec<u8> {
        let l = len.to_be_bytes();
        vec![csid, 0, 0, 0, l[1], l[2], l[3], type_id, 1, 0, 0, 0]
    }

    fn message(csid: u8, type_id: u8, payload: &[u8], chunk_size: usize) -> Vec<u8> {
        let mut out = full_header(csid, payload.len() as u32, type_id);
        for (i, chunk) in payload.chunks(chunk_size).enumerate() {
            if i > 0 {
                out.push(0xc0 | csid);
            }
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn ordinary_publishing_passes_in_any_split() {
        let mut stream = message(2, SET_CHUNK_SIZE, &4096u32.to_be_bytes(), 128);
        stream.extend(message(4, 9, &vec![7u8; 10_000], 4096));
        stream.extend(message(4, 8, &[1u8; 300], 4096));
        stream.extend(message(4, 9, &vec![7u8; 70_000], 4096));
        for split in [1, 3, 17, 4096, stream.len()] {
            let mut limits = ChunkLimits::new(Bounds::default());
            for piece in stream.chunks(split) {
                limits.check(piece).unwrap();
            }
            assert_eq!(limits.partial_bytes(), 0, "split {split}");
            assert_eq!(limits.chunk_size, 4096);
        }
    }

    #[test]
    fn a_message_header_over_the_bound_is_refused_before_its_body() {
        let mut limits = ChunkLimits::new(Bounds::default());
        let header = full_header(4, 16 * 1024 * 1024 - 1, 9);
        assert_eq!(
            limits.check(&header),
            Err(LimitError::MessageTooLarge(
                16 * 1024 * 1024 - 1,
                8 * 1024 * 1024
            ))
        );
    }

    #[test]
    fn another_chunk_stream_in_the_middle_of_a_message_is_refused() {
        let mut limits = ChunkLimits::new(Bounds::default());
        let mut stream = full_header(4, 1000, 9);
        stream.extend_from_slice(&[0u8; 128]);
        stream.extend(message(6, 8, &[1u8; 10], 128));
        assert_eq!(limits.check(&stream), Err(LimitError::Interleaved(6, 4)));
    }

    #[test]
    fn a_new_message_header_in_the_middle_of_a_message_is_refused() {
        // The fuzz target's find: the session library underflowed on this.
        let mut limits = ChunkLimits::new(Bounds::default());
        let mut stream = full_header(4, 1000, 9);
        stream.extend_from_slice(&[0u8; 128]);
        stream.extend_from_slice(&[0x44, 0, 0, 0, 0, 0, 50, 9]);
        assert_eq!(limits.check(&stream), Err(LimitError::Restarted(4)));
    }

    #[test]
    fn chunk_sizes_out_of_bounds_are_refused() {
        let mut limits = ChunkLimits::new(Bounds::default());
        let set = message(2, SET_CHUNK_SIZE, &0x7fff_ffffu32.to_be_bytes(), 128);
        assert_eq!(
            limits.check(&set),
            Err(LimitError::ChunkSizeTooLarge(0x7fff_ffff, 1024 * 1024))
        );
        let mut limits = ChunkLimits::new(Bounds::default());
        let zero = message(2, SET_CHUNK_SIZE, &0u32.to_be_bytes(), 128);
        assert_eq!(limits.check(&zero), Err(LimitError::ChunkSizeZero));
    }

    #[test]
    fn extended_timestamps_and_long_chunk_stream_ids_are_followed() {
        let mut limits = ChunkLimits::new(Bounds::default());
        // Two-byte basic header (csid 64 + 10), extended timestamp, 200-byte message split
        // in two chunks; the type-3 continuation carries the extended timestamp again.
        let mut stream = vec![
            0x00, 10, 0xff, 0xff, 0xff, 0, 0, 200, 9, 1, 0, 0, 0, 1, 2, 3, 4,
        ];
        stream.extend_from_slice(&[0u8; 128]);
        stream.extend_from_slice(&[0xc0, 10, 1, 2, 3, 4]);
        stream.extend_from_slice(&[0u8; 72]);
        // Three-byte basic header (csid 64 + 1 + 256).
        stream.extend_from_slice(&[0x01, 1, 1, 0, 0, 0, 0, 0, 5, 8, 1, 0, 0, 0, 9, 9, 9, 9, 9]);
        limits.check(&stream).unwrap();
        assert_eq!(limits.partial_bytes(), 0);
    }

    #[test]
    fn continuing_an_unknown_chunk_stream_is_refused() {
        let mut limits = ChunkLimits::new(Bounds::default());
        assert_eq!(
            limits.check(&[0xc5, 0, 0]),
            Err(LimitError::NoPreviousHeader(5))
        );
    }

    #[test]
    fn the_input_that_broke_the_session_library_is_refused() {
        // From the rtmp fuzz target: a second message header while the first was unfinished
        // made rml_rtmp subtract past zero.
        let input = [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01, 0x77, 0x01, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x10, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x01, 0xb8, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x9a, 0x00, 0x00, 0x40, 0xc0, 0x78, 0x78, 0x78, 0x78, 0x78,
            0x78, 0x78, 0x02, 0x04, 0x01, 0x00, 0x04, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x18, 0x01, 0x00, 0x00, 0x00, 0x00,
        ];
        assert!(ChunkLimits::new(Bounds::default()).check(&input).is_err());
    }
}
