//! Incremental splitter and reader for the fragmented MP4 that ffmpeg writes
//! to a pipe (`-movflags +empty_moov+default_base_moof+frag_keyframe`).
//!
//! Bytes arrive in arbitrary chunks; [`Fmp4Splitter`] cuts them into the
//! initialization segment (`ftyp` + `moov`) and media fragments
//! (`moof` + `mdat`), handing each out as a zero-copy [`Bytes`] together with
//! the facts an origin server needs: codec string, dimensions, timing and
//! keyframe information. Input is untrusted: malformed data yields an
//! [`Fmp4Error`], never a panic.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// Default limit on one top-level box, and on one item (init segment or
/// fragment) as a whole.
pub const DEFAULT_MAX_BOX_SIZE: usize = 64 << 20;

/// A four-character box type code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    const MOOV: Self = Self(*b"moov");
    const MOOF: Self = Self(*b"moof");
    const TRAK: Self = Self(*b"trak");
    const TKHD: Self = Self(*b"tkhd");
    const MDIA: Self = Self(*b"mdia");
    const MDHD: Self = Self(*b"mdhd");
    const HDLR: Self = Self(*b"hdlr");
    const MINF: Self = Self(*b"minf");
    const STBL: Self = Self(*b"stbl");
    const STSD: Self = Self(*b"stsd");
    const MVEX: Self = Self(*b"mvex");
    const TREX: Self = Self(*b"trex");
    const AVCC: Self = Self(*b"avcC");
    const HVCC: Self = Self(*b"hvcC");
    const ESDS: Self = Self(*b"esds");
    const MFHD: Self = Self(*b"mfhd");
    const TRAF: Self = Self(*b"traf");
    const TFHD: Self = Self(*b"tfhd");
    const TFDT: Self = Self(*b"tfdt");
    const TRUN: Self = Self(*b"trun");

    fn is_printable(self) -> bool {
        self.0.iter().all(|b| (0x20..=0x7e).contains(b))
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if (0x20..=0x7e).contains(&b) {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc('{self}')")
    }
}

/// The structure a truncation error was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A box.
    Box(FourCc),
    /// An MPEG-4 descriptor (inside `esds`).
    Descriptor {
        /// The box holding the descriptor.
        fourcc: FourCc,
        /// The descriptor tag.
        tag: u8,
    },
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Box(fourcc) => write!(f, "box '{fourcc}'"),
            Scope::Descriptor { fourcc, tag } => {
                write!(f, "descriptor 0x{tag:02x} in box '{fourcc}'")
            }
        }
    }
}

/// Why the fragmented MP4 stream could not be split or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// A box header declares a size smaller than the header itself.
    #[error("box '{fourcc}' declares size {size}, smaller than its {header_len}-byte header")]
    SizeSmallerThanHeader {
        /// Box type.
        fourcc: FourCc,
        /// Declared size.
        size: u64,
        /// Header length (8, or 16 with a 64-bit size).
        header_len: u64,
    },
    /// A top-level box uses size 0 ("extends to end of file").
    #[error("top-level box '{fourcc}' has size 0 (to end of file), impossible on a live stream")]
    SizeToEndOfFile {
        /// Box type.
        fourcc: FourCc,
    },
    /// A top-level box is larger than the configured limit.
    #[error("top-level box '{fourcc}' is {size} bytes, more than the {limit}-byte limit")]
    BoxTooLarge {
        /// Box type.
        fourcc: FourCc,
        /// Declared size.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A box would grow the item being assembled beyond the limit.
    #[error(
        "box '{fourcc}' would grow the buffered segment to {size} bytes, more than the {limit}-byte limit"
    )]
    ItemTooLarge {
        /// Box type.
        fourcc: FourCc,
        /// Resulting item size.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A top-level box type is not printable ASCII: the stream is corrupt.
    #[error("top-level box type '{fourcc}' is not printable ASCII; the stream is corrupt")]
    InvalidBoxType {
        /// Box type.
        fourcc: FourCc,
    },
    /// A top-level box appeared where it cannot be handled.
    #[error("unexpected top-level box '{fourcc}' {reason}")]
    UnexpectedBox {
        /// Box type.
        fourcc: FourCc,
        /// Where it appeared.
        reason: &'static str,
    },
    /// A child box extends past the end of its parent.
    #[error(
        "box '{child}' inside '{parent}' is {size} bytes but only {available} bytes remain in its parent"
    )]
    ChildOverrun {
        /// Parent box type.
        parent: FourCc,
        /// Child box type.
        child: FourCc,
        /// Declared child size.
        size: u64,
        /// Bytes left in the parent.
        available: u64,
    },
    /// A box ends with bytes too short to be a box header.
    #[error("box '{parent}' ends with {len} bytes that do not form a box")]
    TrailingBytes {
        /// Parent box type.
        parent: FourCc,
        /// Number of stray bytes.
        len: usize,
    },
    /// A required child box is absent.
    #[error("box '{parent}' has no '{child}' box")]
    MissingBox {
        /// Parent box type.
        parent: FourCc,
        /// Missing child type.
        child: FourCc,
    },
    /// A box or descriptor is too short for its contents.
    #[error("{scope} is {size} bytes, shorter than the {needed} bytes needed to read its {field}")]
    Truncated {
        /// Where the problem is.
        scope: Scope,
        /// Actual size, including its header.
        size: u64,
        /// Size needed to read `field`, including the header.
        needed: u64,
        /// The field that could not be read.
        field: &'static str,
    },
    /// A box holds an impossible value.
    #[error("box '{fourcc}': {detail}")]
    Invalid {
        /// Box type.
        fourcc: FourCc,
        /// What was wrong.
        detail: String,
    },
    /// The stream ended inside a top-level box or fragment.
    #[error("stream ended with {buffered} bytes of an incomplete box or fragment")]
    Incomplete {
        /// Bytes left over.
        buffered: usize,
    },
}

/// One complete unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fmp4Item {
    /// The initialization segment.
    Init(InitSegment),
    /// A media fragment.
    Fragment(Fragment),
}

/// The initialization segment and what it says about the track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSegment {
    /// `ftyp` + `moov` (and anything between them) exactly as received.
    pub bytes: Bytes,
    /// The first track in `moov`.
    pub track: TrackInfo,
}

/// Media kind of a track, from its `hdlr` handler type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// Handler `vide`.
    Video,
    /// Handler `soun`.
    Audio,
    /// Any other handler.
    Other(FourCc),
}

/// Facts about a track read from the initialization segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Track id from `tkhd`.
    pub track_id: u32,
    /// Media timescale (ticks per second) from `mdhd`.
    pub timescale: u32,
    /// Media kind from `hdlr`.
    pub kind: TrackKind,
    /// RFC 6381 codec string, e.g. `avc1.64001f` or `mp4a.40.2`; the sample
    /// entry type when nothing more specific is known.
    pub codec: String,
    /// Width in pixels from the visual sample entry; 0 for non-video.
    pub width: u16,
    /// Height in pixels from the visual sample entry; 0 for non-video.
    pub height: u16,
    /// Sample rate in Hz from the audio sample entry; 0 for non-audio.
    pub sample_rate: u32,
    /// Channel count from the audio sample entry; 0 for non-audio.
    pub channels: u16,
}

/// A media fragment and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// `moof` + `mdat`, plus any boxes (`styp`, `sidx`, `prft`, ...) that
    /// preceded the `moof`, exactly as received.
    pub bytes: Bytes,
    /// Sequence number from `mfhd`.
    pub sequence_number: u32,
    /// Decode time of the first sample in timescale units, from `tfdt`; when
    /// `tfdt` is absent, the end of the previous fragment.
    pub decode_time: u64,
    /// Sum of the sample durations in timescale units.
    pub duration: u64,
    /// Number of samples.
    pub sample_count: u32,
    /// The first sample is a sync sample.
    pub starts_with_keyframe: bool,
    /// Number of sync samples.
    pub keyframes: u32,
}

impl Fragment {
    /// The same fragment moved to `decode_time` on the media timeline: every `tfdt` is
    /// rewritten in place (the packager keeps one timeline across transcoder restarts, whose
    /// output starts again at zero). A version 0 `tfdt` that cannot hold the new time is an
    /// error; a fragment without `tfdt` is returned unchanged apart from the field.
    pub fn with_decode_time(&self, decode_time: u64) -> Result<Fragment, Fmp4Error> {
        let data = self.bytes.as_ref();
        let base = data.as_ptr() as usize;
        let mut patches: Vec<(usize, Vec<u8>)> = Vec::new();
        for top in children(data, FourCc(*b"file")) {
            let top = top?;
            if top.fourcc != FourCc::MOOF {
                continue;
            }
            for traf in children(top.payload, FourCc::MOOF) {
                let traf = traf?;
                if traf.fourcc != FourCc::TRAF {
                    continue;
                }
                for child in children(traf.payload, FourCc::TRAF) {
                    let child = child?;
                    if child.fourcc != FourCc::TFDT {
                        continue;
                    }
                    let mut r = child.reader();
                    let (version, _) = r.version_flags()?;
                    let at = child.payload.as_ptr() as usize - base + 4;
                    let field = if version == 1 {
                        r.u64("baseMediaDecodeTime")?;
                        decode_time.to_be_bytes().to_vec()
                    } else {
                        r.u32("baseMediaDecodeTime")?;
                        let narrow =
                            u32::try_from(decode_time).map_err(|_| Fmp4Error::UnexpectedBox {
                                fourcc: FourCc::TFDT,
                                reason: "is version 0 and cannot hold the rewritten decode time",
                            })?;
                        narrow.to_be_bytes().to_vec()
                    };
                    patches.push((at, field));
                }
            }
        }
        let mut out = BytesMut::from(data);
        for (at, field) in patches {
            if let Some(slot) = out.get_mut(at..at + field.len()) {
                slot.copy_from_slice(&field);
            }
        }
        Ok(Fragment {
            bytes: out.freeze(),
            decode_time,
            ..self.clone()
        })
    }
}

/// The timing of a stored media segment, read back from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTiming {
    /// Decode time of its first sample, timescale units.
    pub decode_time: u64,
    /// Sum of its fragments' durations, timescale units.
    pub duration: u64,
    /// Its first sample is a sync sample.
    pub starts_with_keyframe: bool,
}

/// Reads the timing of `segment` (one or more fragments) with the `init` segment it was
/// packaged against (sample defaults come from its `trex`).
pub fn segment_timing(init: &[u8], segment: &[u8]) -> Result<SegmentTiming, Fmp4Error> {
    let mut splitter = Fmp4Splitter::new();
    let mut items = splitter.push(init)?;
    items.extend(splitter.push(segment)?);
    splitter.finish()?;
    let mut fragments = items.iter().filter_map(|item| match item {
        Fmp4Item::Fragment(f) => Some(f),
        Fmp4Item::Init(_) => None,
    });
    let first = fragments.next().ok_or(Fmp4Error::MissingBox {
        parent: FourCc(*b"file"),
        child: FourCc::MOOF,
    })?;
    Ok(SegmentTiming {
        decode_time: first.decode_time,
        duration: first.duration + fragments.map(|f| f.duration).sum::<u64>(),
        starts_with_keyframe: first.starts_with_keyframe,
    })
}

mod boxes;
mod moof;
mod moov;
mod splitter;
#[cfg(test)]
mod tests;

use boxes::*;
use moof::*;
use moov::*;
pub use splitter::Fmp4Splitter;
