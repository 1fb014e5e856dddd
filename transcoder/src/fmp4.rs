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

/// Per-track defaults from `mvex/trex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trex {
    track_id: u32,
    duration: u32,
    flags: u32,
}

/// Splits a fragmented MP4 byte stream into [`Fmp4Item`]s.
///
/// After an error the splitter is poisoned: the stream position is lost, so
/// every later call returns the same error.
#[derive(Debug)]
pub struct Fmp4Splitter {
    buf: BytesMut,
    /// Length of the complete boxes at the start of `buf` that belong to the
    /// item being assembled; the next box header starts here.
    pending: usize,
    /// Offset and length of the `moof` within the pending boxes.
    moof: Option<(usize, usize)>,
    init_done: bool,
    trex: Vec<Trex>,
    next_decode_time: u64,
    max_box_size: usize,
    error: Option<Fmp4Error>,
}

impl Default for Fmp4Splitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Fmp4Splitter {
    /// Creates a splitter with the [`DEFAULT_MAX_BOX_SIZE`] limit.
    pub fn new() -> Self {
        Self::with_max_box_size(DEFAULT_MAX_BOX_SIZE)
    }

    /// Creates a splitter that rejects any top-level box, or any item, larger
    /// than `max_box_size` bytes.
    pub fn with_max_box_size(max_box_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            pending: 0,
            moof: None,
            init_done: false,
            trex: Vec::new(),
            next_decode_time: 0,
            max_box_size,
            error: None,
        }
    }

    /// Appends bytes; returns every complete item now available, in order.
    ///
    /// If the stream turns out to be malformed after some items were
    /// completed, those items are returned and the error is reported by the
    /// next call.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Fmp4Item>, Fmp4Error> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut items = Vec::new();
        loop {
            match self.next_item() {
                Ok(Some(Some(item))) => items.push(item),
                Ok(Some(None)) => {}
                Ok(None) => break,
                Err(err) => {
                    self.error = Some(err.clone());
                    if items.is_empty() {
                        return Err(err);
                    }
                    break;
                }
            }
        }
        Ok(items)
    }

    /// Call at end of stream: reports a pending error, or bytes left over in
    /// an incomplete box or a `moof` never followed by its `mdat`. Complete
    /// boxes that would only have been attached to a next fragment (such as a
    /// trailing `mfra`) are not an error.
    pub fn finish(&self) -> Result<(), Fmp4Error> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        if self.buf.len() > self.pending || self.moof.is_some() {
            return Err(Fmp4Error::Incomplete {
                buffered: self.buf.len(),
            });
        }
        Ok(())
    }

    /// Consumes the next complete top-level box. `Ok(None)`: more bytes are
    /// needed; `Ok(Some(None))`: a box was consumed without completing an
    /// item.
    fn next_item(&mut self) -> Result<Option<Option<Fmp4Item>>, Fmp4Error> {
        let rest = self.buf.get(self.pending..).unwrap_or_default();
        let Some(header) = read_header(rest)? else {
            return Ok(None);
        };
        let fourcc = header.fourcc;
        if !fourcc.is_printable() {
            return Err(Fmp4Error::InvalidBoxType { fourcc });
        }
        let Some(size) = header.size else {
            return Err(Fmp4Error::SizeToEndOfFile { fourcc });
        };
        let limit = self.max_box_size as u64;
        if size > limit {
            return Err(Fmp4Error::BoxTooLarge {
                fourcc,
                size,
                limit,
            });
        }
        // size <= max_box_size, which is a usize.
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let end = self.pending.saturating_add(size);
        if end > self.max_box_size {
            return Err(Fmp4Error::ItemTooLarge {
                fourcc,
                size: end as u64,
                limit,
            });
        }
        if rest.len() < size {
            self.buf.reserve(size - rest.len());
            return Ok(None);
        }

        match (&fourcc.0, self.init_done) {
            (b"free" | b"skip", _) if self.pending == 0 => {
                self.buf.advance(size);
                Ok(Some(None))
            }
            (b"moov", false) => {
                let payload = self
                    .buf
                    .get(self.pending + header.header_len..end)
                    .unwrap_or_default();
                let (track, trex) = parse_moov(payload)?;
                self.trex = trex;
                self.init_done = true;
                self.pending = 0;
                let bytes = self.buf.split_to(end).freeze();
                Ok(Some(Some(Fmp4Item::Init(InitSegment { bytes, track }))))
            }
            (b"moof" | b"mdat", false) => Err(Fmp4Error::UnexpectedBox {
                fourcc,
                reason: "before the 'moov' box",
            }),
            (b"moov" | b"ftyp", true) => Err(Fmp4Error::UnexpectedBox {
                fourcc,
                reason: "after the initialization segment",
            }),
            (b"moof", true) => {
                if self.moof.is_some() {
                    return Err(Fmp4Error::UnexpectedBox {
                        fourcc,
                        reason: "before the previous 'moof' got its 'mdat'",
                    });
                }
                self.moof = Some((self.pending, size));
                self.pending = end;
                Ok(Some(None))
            }
            (b"mdat", true) => {
                let Some((moof_at, moof_len)) = self.moof else {
                    return Err(Fmp4Error::UnexpectedBox {
                        fourcc,
                        reason: "without a preceding 'moof'",
                    });
                };
                let bytes = self.buf.split_to(end).freeze();
                self.pending = 0;
                self.moof = None;
                let moof = bytes
                    .get(moof_at..moof_at.saturating_add(moof_len))
                    .unwrap_or_default();
                let payload = moof.get(header_len_of(moof)..).unwrap_or_default();
                let fields = parse_moof(payload, &self.trex)?;
                let decode_time = fields.decode_time.unwrap_or(self.next_decode_time);
                self.next_decode_time = decode_time.saturating_add(fields.duration);
                Ok(Some(Some(Fmp4Item::Fragment(Fragment {
                    bytes,
                    sequence_number: fields.sequence_number,
                    decode_time,
                    duration: fields.duration,
                    sample_count: fields.sample_count,
                    starts_with_keyframe: fields.starts_with_keyframe,
                    keyframes: fields.keyframes,
                }))))
            }
            _ => {
                self.pending = end;
                Ok(Some(None))
            }
        }
    }
}

/// Header length of a box already known to be well formed.
fn header_len_of(data: &[u8]) -> usize {
    if data.get(..4) == Some(&[0, 0, 0, 1]) {
        16
    } else {
        8
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fourcc: FourCc,
    header_len: usize,
    /// `None` for size 0, "extends to the end of the enclosing space".
    size: Option<u64>,
}

/// Reads a box header; `Ok(None)` if `data` is too short to hold it.
fn read_header(data: &[u8]) -> Result<Option<Header>, Fmp4Error> {
    let Some(head) = data.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()) else {
        return Ok(None);
    };
    let [s0, s1, s2, s3, t0, t1, t2, t3] = head;
    let fourcc = FourCc([t0, t1, t2, t3]);
    let (header_len, size) = match u32::from_be_bytes([s0, s1, s2, s3]) {
        0 => {
            return Ok(Some(Header {
                fourcc,
                header_len: 8,
                size: None,
            }));
        }
        1 => {
            let Some(large) = data.get(8..16).and_then(|l| <[u8; 8]>::try_from(l).ok()) else {
                return Ok(None);
            };
            (16, u64::from_be_bytes(large))
        }
        n => (8, u64::from(n)),
    };
    if size < header_len as u64 {
        return Err(Fmp4Error::SizeSmallerThanHeader {
            fourcc,
            size,
            header_len: header_len as u64,
        });
    }
    Ok(Some(Header {
        fourcc,
        header_len,
        size: Some(size),
    }))
}

/// A child box: its type, header length and payload.
#[derive(Debug, Clone, Copy)]
struct Child<'a> {
    fourcc: FourCc,
    header_len: usize,
    payload: &'a [u8],
}

impl<'a> Child<'a> {
    fn reader(&self) -> Reader<'a> {
        Reader {
            data: self.payload,
            pos: 0,
            scope: Scope::Box(self.fourcc),
            header_len: self.header_len,
        }
    }
}

/// Iterates over the boxes packed in a parent's payload.
struct Children<'a> {
    data: &'a [u8],
    parent: FourCc,
    done: bool,
}

fn children(data: &[u8], parent: FourCc) -> Children<'_> {
    Children {
        data,
        parent,
        done: false,
    }
}

impl<'a> Children<'a> {
    fn next_child(&mut self) -> Result<Option<Child<'a>>, Fmp4Error> {
        let data = self.data;
        let Some(header) = read_header(data)? else {
            // Some writers pad with a few zero bytes (e.g. a QuickTime
            // terminator); anything else is corruption.
            if data.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            return Err(Fmp4Error::TrailingBytes {
                parent: self.parent,
                len: data.len(),
            });
        };
        let available = data.len() as u64;
        let size = header.size.unwrap_or(available);
        if size > available {
            return Err(Fmp4Error::ChildOverrun {
                parent: self.parent,
                child: header.fourcc,
                size,
                available,
            });
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let (this, rest) = data.split_at_checked(size).unwrap_or((data, &[]));
        self.data = rest;
        Ok(Some(Child {
            fourcc: header.fourcc,
            header_len: header.header_len,
            payload: this.get(header.header_len..).unwrap_or_default(),
        }))
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Child<'a>, Fmp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.data.is_empty() {
            return None;
        }
        let result = self.next_child().transpose();
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        result
    }
}

fn find_child<'a>(
    data: &'a [u8],
    parent: FourCc,
    want: FourCc,
) -> Result<Option<Child<'a>>, Fmp4Error> {
    for child in children(data, parent) {
        let child = child?;
        if child.fourcc == want {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

fn require_child<'a>(data: &'a [u8], parent: FourCc, want: FourCc) -> Result<Child<'a>, Fmp4Error> {
    find_child(data, parent, want)?.ok_or(Fmp4Error::MissingBox {
        parent,
        child: want,
    })
}

/// Bounds-checked big-endian reader over a box or descriptor payload.
#[derive(Debug, Clone)]
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    scope: Scope,
    /// Length of the box/descriptor header before `data`, for error sizes.
    header_len: usize,
}

impl<'a> Reader<'a> {
    fn short(&self, n: usize, field: &'static str) -> Fmp4Error {
        let header = self.header_len as u64;
        Fmp4Error::Truncated {
            scope: self.scope,
            size: header.saturating_add(self.data.len() as u64),
            needed: header
                .saturating_add(self.pos as u64)
                .saturating_add(n as u64),
            field,
        }
    }

    fn fourcc(&self) -> FourCc {
        match self.scope {
            Scope::Box(fourcc) | Scope::Descriptor { fourcc, .. } => fourcc,
        }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Fmp4Error> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or_else(|| self.short(n, field))?;
        self.pos += n;
        Ok(slice)
    }

    fn skip(&mut self, n: usize, field: &'static str) -> Result<(), Fmp4Error> {
        self.take(n, field).map(|_| ())
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Fmp4Error> {
        let slice = self.take(N, field)?;
        <[u8; N]>::try_from(slice).map_err(|_| self.short(N, field))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Fmp4Error> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Fmp4Error> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Fmp4Error> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, Fmp4Error> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// Reads a full box's version and 24-bit flags.
    fn version_flags(&mut self) -> Result<(u8, u32), Fmp4Error> {
        let [version, a, b, c] = self.array("version and flags")?;
        Ok((version, u32::from_be_bytes([0, a, b, c])))
    }

    /// Reads a 32-bit (version 0) or 64-bit (version 1) value.
    fn sized(&mut self, version: u8, field: &'static str) -> Result<u64, Fmp4Error> {
        if version == 1 {
            self.u64(field)
        } else {
            self.u32(field).map(u64::from)
        }
    }
}

fn parse_moov(payload: &[u8]) -> Result<(TrackInfo, Vec<Trex>), Fmp4Error> {
    let mut track = None;
    let mut trex = Vec::new();
    for child in children(payload, FourCc::MOOV) {
        let child = child?;
        if child.fourcc == FourCc::TRAK && track.is_none() {
            track = Some(parse_trak(child.payload)?);
        } else if child.fourcc == FourCc::MVEX {
            for entry in children(child.payload, FourCc::MVEX) {
                let entry = entry?;
                if entry.fourcc == FourCc::TREX {
                    trex.push(parse_trex(&entry)?);
                }
            }
        }
    }
    let track = track.ok_or(Fmp4Error::MissingBox {
        parent: FourCc::MOOV,
        child: FourCc::TRAK,
    })?;
    Ok((track, trex))
}

fn parse_trex(child: &Child<'_>) -> Result<Trex, Fmp4Error> {
    let mut r = child.reader();
    r.version_flags()?;
    let track_id = r.u32("track_ID")?;
    r.skip(4, "default_sample_description_index")?;
    let duration = r.u32("default_sample_duration")?;
    r.skip(4, "default_sample_size")?;
    let flags = r.u32("default_sample_flags")?;
    Ok(Trex {
        track_id,
        duration,
        flags,
    })
}

fn parse_trak(trak: &[u8]) -> Result<TrackInfo, Fmp4Error> {
    let tkhd = require_child(trak, FourCc::TRAK, FourCc::TKHD)?;
    let mut r = tkhd.reader();
    let (version, _) = r.version_flags()?;
    r.sized(version, "creation_time")?;
    r.sized(version, "modification_time")?;
    let track_id = r.u32("track_ID")?;

    let mdia = require_child(trak, FourCc::TRAK, FourCc::MDIA)?;
    let mdhd = require_child(mdia.payload, FourCc::MDIA, FourCc::MDHD)?;
    let mut r = mdhd.reader();
    let (version, _) = r.version_flags()?;
    r.sized(version, "creation_time")?;
    r.sized(version, "modification_time")?;
    let timescale = r.u32("timescale")?;

    let hdlr = require_child(mdia.payload, FourCc::MDIA, FourCc::HDLR)?;
    let mut r = hdlr.reader();
    r.version_flags()?;
    r.skip(4, "pre_defined")?;
    let kind = match r.array("handler_type")? {
        [b'v', b'i', b'd', b'e'] => TrackKind::Video,
        [b's', b'o', b'u', b'n'] => TrackKind::Audio,
        other => TrackKind::Other(FourCc(other)),
    };

    let minf = require_child(mdia.payload, FourCc::MDIA, FourCc::MINF)?;
    let stbl = require_child(minf.payload, FourCc::MINF, FourCc::STBL)?;
    let stsd = require_child(stbl.payload, FourCc::STBL, FourCc::STSD)?;
    let mut r = stsd.reader();
    r.version_flags()?;
    r.u32("entry_count")?;
    let entry = children(r.rest(), FourCc::STSD)
        .next()
        .transpose()?
        .ok_or_else(|| Fmp4Error::Invalid {
            fourcc: FourCc::STSD,
            detail: "no sample entry".to_owned(),
        })?;

    let mut info = TrackInfo {
        track_id,
        timescale,
        kind,
        codec: entry.fourcc.to_string(),
        width: 0,
        height: 0,
        sample_rate: 0,
        channels: 0,
    };
    match kind {
        TrackKind::Video => read_visual_entry(&entry, &mut info)?,
        TrackKind::Audio => read_audio_entry(&entry, &mut info)?,
        TrackKind::Other(_) => {}
    }
    Ok(info)
}

/// VisualSampleEntry: 78 payload bytes before its child boxes.
fn read_visual_entry(entry: &Child<'_>, info: &mut TrackInfo) -> Result<(), Fmp4Error> {
    let mut r = entry.reader();
    r.skip(24, "reserved and pre_defined fields")?;
    info.width = r.u16("width")?;
    info.height = r.u16("height")?;
    r.skip(50, "resolution, frame_count, compressorname and depth")?;
    match &entry.fourcc.0 {
        b"avc1" | b"avc3" => {
            if let Some(avcc) = find_child(r.rest(), entry.fourcc, FourCc::AVCC)? {
                let mut a = avcc.reader();
                a.skip(1, "configurationVersion")?;
                let [profile, compat, level] = a.array("profile and level")?;
                info.codec = format!("{}.{profile:02x}{compat:02x}{level:02x}", entry.fourcc);
            }
        }
        b"hvc1" | b"hev1" => {
            if let Some(hvcc) = find_child(r.rest(), entry.fourcc, FourCc::HVCC)? {
                info.codec = hevc_codec(entry.fourcc, &hvcc)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Codec string per ISO/IEC 14496-15 annex E, e.g. `hvc1.1.6.L93.B0`.
fn hevc_codec(fourcc: FourCc, hvcc: &Child<'_>) -> Result<String, Fmp4Error> {
    let mut r = hvcc.reader();
    r.skip(1, "configurationVersion")?;
    let b = r.u8("general_profile_idc")?;
    let compat = r.u32("general_profile_compatibility_flags")?;
    let constraints: [u8; 6] = r.array("general_constraint_indicator_flags")?;
    let level = r.u8("general_level_idc")?;
    let space = match b >> 6 {
        0 => "",
        1 => "A",
        2 => "B",
        _ => "C",
    };
    let tier = if b & 0x20 != 0 { 'H' } else { 'L' };
    let mut codec = format!(
        "{fourcc}.{space}{}.{:X}.{tier}{level}",
        b & 0x1f,
        compat.reverse_bits()
    );
    let used = constraints
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |i| i + 1);
    for c in constraints.iter().take(used) {
        codec.push_str(&format!(".{c:X}"));
    }
    Ok(codec)
}

/// AudioSampleEntry: 28 payload bytes before its child boxes (version 0),
/// plus the QuickTime version 1/2 extensions.
fn read_audio_entry(entry: &Child<'_>, info: &mut TrackInfo) -> Result<(), Fmp4Error> {
    let mut r = entry.reader();
    r.skip(8, "reserved and data_reference_index")?;
    let version = r.u16("version")?;
    r.skip(6, "reserved")?;
    info.channels = r.u16("channelcount")?;
    r.skip(6, "samplesize and pre_defined")?;
    info.sample_rate = r.u32("samplerate")? >> 16;
    match version {
        1 => r.skip(16, "QuickTime v1 fields")?,
        2 => {
            r.skip(4, "sizeOfStructOnly")?;
            let rate = f64::from_bits(r.u64("audioSampleRate")?);
            info.sample_rate = if rate.is_finite() && rate >= 0.0 && rate <= f64::from(u32::MAX) {
                // Range checked above, so the cast cannot saturate.
                rate.round() as u32
            } else {
                0
            };
            info.channels = u16::try_from(r.u32("numAudioChannels")?).unwrap_or(u16::MAX);
            r.skip(20, "QuickTime v2 fields")?;
        }
        _ => {}
    }
    match &entry.fourcc.0 {
        b"mp4a" => {
            if let Some(esds) = find_child(r.rest(), entry.fourcc, FourCc::ESDS)? {
                info.codec = mp4a_codec(&esds)?;
            }
        }
        b"Opus" => info.codec = "opus".to_owned(),
        b"fLaC" => info.codec = "flac".to_owned(),
        _ => {}
    }
    Ok(())
}

/// Reads one descriptor (tag, 7-bit-continuation size, body).
fn read_descriptor<'a>(r: &mut Reader<'a>) -> Result<(u8, Reader<'a>), Fmp4Error> {
    let tag = r.u8("descriptor tag")?;
    let mut size: u32 = 0;
    let mut size_len = 0;
    loop {
        let b = r.u8("descriptor size")?;
        size_len += 1;
        size = (size << 7) | u32::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
        if size_len == 4 {
            return Err(Fmp4Error::Invalid {
                fourcc: r.fourcc(),
                detail: format!("descriptor 0x{tag:02x} size is longer than 4 bytes"),
            });
        }
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let body = r.take(size, "descriptor body")?;
    Ok((
        tag,
        Reader {
            data: body,
            pos: 0,
            scope: Scope::Descriptor {
                fourcc: r.fourcc(),
                tag,
            },
            header_len: 1 + size_len,
        },
    ))
}

fn find_descriptor<'a>(r: &mut Reader<'a>, want: u8) -> Result<Option<Reader<'a>>, Fmp4Error> {
    while r.remaining() > 0 {
        let (tag, body) = read_descriptor(r)?;
        if tag == want {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

/// `mp4a.<objectTypeIndication hex>[.<audio object type>]` from `esds`.
fn mp4a_codec(esds: &Child<'_>) -> Result<String, Fmp4Error> {
    let mut r = esds.reader();
    r.version_flags()?;
    let Some(mut es) = find_descriptor(&mut r, 0x03)? else {
        return Ok("mp4a".to_owned());
    };
    es.skip(2, "ES_ID")?;
    let flags = es.u8("ES flags")?;
    if flags & 0x80 != 0 {
        es.skip(2, "dependsOn_ES_ID")?;
    }
    if flags & 0x40 != 0 {
        let len = es.u8("URLlength")?;
        es.skip(usize::from(len), "URLstring")?;
    }
    if flags & 0x20 != 0 {
        es.skip(2, "OCR_ES_Id")?;
    }
    let Some(mut config) = find_descriptor(&mut es, 0x04)? else {
        return Ok("mp4a".to_owned());
    };
    let oti = config.u8("objectTypeIndication")?;
    config.skip(12, "streamType, bufferSizeDB and bitrates")?;
    if oti != 0x40 {
        return Ok(format!("mp4a.{oti:02x}"));
    }
    let aot = match find_descriptor(&mut config, 0x05)? {
        Some(dsi) => audio_object_type(dsi.rest()),
        None => None,
    };
    Ok(match aot {
        Some(aot) => format!("mp4a.40.{aot}"),
        None => "mp4a.40".to_owned(),
    })
}

/// Audio object type from the start of an AudioSpecificConfig: 5 bits, with
/// 31 escaping to 32 + the next 6 bits.
fn audio_object_type(asc: &[u8]) -> Option<u8> {
    let first = *asc.first()?;
    let aot = first >> 3;
    if aot != 31 {
        return Some(aot);
    }
    let second = *asc.get(1)?;
    Some(32 + (((first & 0x07) << 3) | (second >> 5)))
}

#[derive(Debug, Default)]
struct FragmentFields {
    sequence_number: u32,
    decode_time: Option<u64>,
    duration: u64,
    sample_count: u32,
    starts_with_keyframe: bool,
    keyframes: u32,
}

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
const TRUN_CTS_OFFSET: u32 = 0x800;

/// A sample is sync when sample_is_non_sync_sample is clear and
/// sample_depends_on is not 1 ("depends on others").
fn is_sync(flags: u32) -> bool {
    flags & 0x0001_0000 == 0 && (flags >> 24) & 0x3 != 1
}

fn parse_moof(payload: &[u8], trex: &[Trex]) -> Result<FragmentFields, Fmp4Error> {
    let mfhd = require_child(payload, FourCc::MOOF, FourCc::MFHD)?;
    let mut r = mfhd.reader();
    r.version_flags()?;
    let mut fields = FragmentFields {
        sequence_number: r.u32("sequence_number")?,
        ..FragmentFields::default()
    };

    // Only the first traf is read; we produce one track per output.
    let traf = require_child(payload, FourCc::MOOF, FourCc::TRAF)?;
    let tfhd = require_child(traf.payload, FourCc::TRAF, FourCc::TFHD)?;
    let mut r = tfhd.reader();
    let (_, flags) = r.version_flags()?;
    let track_id = r.u32("track_ID")?;
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        r.skip(8, "base_data_offset")?;
    }
    if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        r.skip(4, "sample_description_index")?;
    }
    let tfhd_duration = if flags & TFHD_DEFAULT_DURATION != 0 {
        Some(r.u32("default_sample_duration")?)
    } else {
        None
    };
    if flags & TFHD_DEFAULT_SIZE != 0 {
        r.skip(4, "default_sample_size")?;
    }
    let tfhd_flags = if flags & TFHD_DEFAULT_FLAGS != 0 {
        Some(r.u32("default_sample_flags")?)
    } else {
        None
    };
    let trex = trex.iter().find(|t| t.track_id == track_id);
    let default_duration = tfhd_duration.or(trex.map(|t| t.duration)).unwrap_or(0);
    let default_flags = tfhd_flags.or(trex.map(|t| t.flags)).unwrap_or(0);

    let mut first_sample_seen = false;
    for child in children(traf.payload, FourCc::TRAF) {
        let child = child?;
        if child.fourcc == FourCc::TFDT {
            let mut r = child.reader();
            let (version, _) = r.version_flags()?;
            fields.decode_time = Some(r.sized(version, "baseMediaDecodeTime")?);
        } else if child.fourcc == FourCc::TRUN {
            read_trun(
                &child,
                default_duration,
                default_flags,
                &mut first_sample_seen,
                &mut fields,
            )?;
        }
    }
    Ok(fields)
}

fn read_trun(
    trun: &Child<'_>,
    default_duration: u32,
    default_flags: u32,
    first_sample_seen: &mut bool,
    fields: &mut FragmentFields,
) -> Result<(), Fmp4Error> {
    let overflow = |what: &str| Fmp4Error::Invalid {
        fourcc: FourCc::TRUN,
        detail: format!("{what} overflows"),
    };
    let mut r = trun.reader();
    let (_, flags) = r.version_flags()?;
    let count = r.u32("sample_count")?;
    if flags & TRUN_DATA_OFFSET != 0 {
        r.skip(4, "data_offset")?;
    }
    let first_flags = if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
        Some(r.u32("first_sample_flags")?)
    } else {
        None
    };
    let has_duration = flags & TRUN_DURATION != 0;
    let has_flags = flags & TRUN_FLAGS != 0;
    let per_sample = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTS_OFFSET]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count()
        * 4;
    // Check the whole table up front so a bogus count fails fast.
    let table_len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(per_sample))
        .unwrap_or(usize::MAX);
    if table_len > r.remaining() {
        return Err(r.short(table_len, "sample table"));
    }

    fields.sample_count = fields
        .sample_count
        .checked_add(count)
        .ok_or_else(|| overflow("sample count"))?;
    let mut duration: u64 = 0;
    let mut keyframes: u32 = 0;
    if per_sample == 0 {
        // No table: every sample uses the defaults, so no need to loop.
        duration = u64::from(default_duration) * u64::from(count);
        if count > 0 {
            let first = first_flags.unwrap_or(default_flags);
            keyframes = u32::from(is_sync(first));
            if is_sync(default_flags) {
                keyframes += count - 1;
            }
            if !*first_sample_seen {
                fields.starts_with_keyframe = is_sync(first);
            }
        }
    } else {
        for i in 0..count {
            let sample_duration = if has_duration {
                r.u32("sample_duration")?
            } else {
                default_duration
            };
            if flags & TRUN_SIZE != 0 {
                r.skip(4, "sample_size")?;
            }
            let table_flags = if has_flags {
                Some(r.u32("sample_flags")?)
            } else {
                None
            };
            if flags & TRUN_CTS_OFFSET != 0 {
                r.skip(4, "sample_composition_time_offset")?;
            }
            let sample_flags = match (i, first_flags, table_flags) {
                (0, Some(first), _) => first,
                (_, _, Some(f)) => f,
                _ => default_flags,
            };
            let sync = is_sync(sample_flags);
            if i == 0 && !*first_sample_seen {
                fields.starts_with_keyframe = sync;
            }
            // Bounded by count, which is a u32, and by u64 for durations.
            duration += u64::from(sample_duration);
            keyframes += u32::from(sync);
        }
    }
    if count > 0 {
        *first_sample_seen = true;
    }
    fields.duration = fields
        .duration
        .checked_add(duration)
        .ok_or_else(|| overflow("fragment duration"))?;
    fields.keyframes = fields
        .keyframes
        .checked_add(keyframes)
        .ok_or_else(|| overflow("keyframe count"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len() + 8)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(fourcc);
        out.extend_from_slice(payload);
        out
    }

    fn large_boxed(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = 1u32.to_be_bytes().to_vec();
        out.extend_from_slice(fourcc);
        out.extend_from_slice(&(payload.len() as u64 + 16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn full(fourcc: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![version];
        p.extend_from_slice(&flags.to_be_bytes()[1..]);
        p.extend_from_slice(payload);
        boxed(fourcc, &p)
    }

    fn words(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    fn ftyp() -> Vec<u8> {
        boxed(b"ftyp", b"isom\0\0\x02\0isomiso6mp41")
    }

    fn tkhd(version: u8, track_id: u32) -> Vec<u8> {
        let mut p = Vec::new();
        if version == 1 {
            p.extend_from_slice(&[0; 16]);
        } else {
            p.extend_from_slice(&[0; 8]);
        }
        p.extend_from_slice(&track_id.to_be_bytes());
        p.extend_from_slice(&[0; 60]);
        full(b"tkhd", version, 3, &p)
    }

    fn mdhd(version: u8, timescale: u32) -> Vec<u8> {
        let mut p = Vec::new();
        if version == 1 {
            p.extend_from_slice(&[0; 16]);
            p.extend_from_slice(&timescale.to_be_bytes());
            p.extend_from_slice(&[0; 8]);
        } else {
            p.extend_from_slice(&[0; 8]);
            p.extend_from_slice(&timescale.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p.extend_from_slice(&[0x55, 0xc4, 0, 0]);
        full(b"mdhd", version, 0, &p)
    }

    fn hdlr(handler: &[u8; 4]) -> Vec<u8> {
        let mut p = vec![0; 4];
        p.extend_from_slice(handler);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(b"Handler\0");
        full(b"hdlr", 0, 0, &p)
    }

    fn visual_entry(fourcc: &[u8; 4], width: u16, height: u16, children: &[u8]) -> Vec<u8> {
        let mut p = vec![0; 6];
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&width.to_be_bytes());
        p.extend_from_slice(&height.to_be_bytes());
        p.extend_from_slice(&words(&[0x0048_0000, 0x0048_0000, 0]));
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[0x00, 0x18, 0xff, 0xff]);
        assert_eq!(p.len(), 78);
        p.extend_from_slice(children);
        boxed(fourcc, &p)
    }

    fn avcc() -> Vec<u8> {
        boxed(b"avcC", &[1, 0x64, 0x00, 0x1f, 0xff, 0xe0, 0x00])
    }

    fn audio_entry(channels: u16, rate: u32, children: &[u8]) -> Vec<u8> {
        let mut p = vec![0; 6];
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&channels.to_be_bytes());
        p.extend_from_slice(&16u16.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&(rate << 16).to_be_bytes());
        assert_eq!(p.len(), 28);
        p.extend_from_slice(children);
        boxed(b"mp4a", &p)
    }

    /// A descriptor, its size written in the padded four-byte form when
    /// `long` (as many muxers do).
    fn descriptor(tag: u8, body: &[u8], long: bool) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap();
        let mut out = vec![tag];
        if long {
            out.extend_from_slice(&[
                0x80 | (len >> 21) as u8 & 0x7f,
                0x80 | (len >> 14) as u8 & 0x7f,
                0x80 | (len >> 7) as u8 & 0x7f,
                len as u8 & 0x7f,
            ]);
        } else {
            assert!(len < 128);
            out.push(len as u8);
        }
        out.extend_from_slice(body);
        out
    }

    /// esds for AAC LC 48 kHz stereo, exercising all optional ES fields.
    fn esds(long: bool) -> Vec<u8> {
        let dsi = descriptor(0x05, &[0x11, 0x90], long);
        let mut dc = vec![0x40, 0x15, 0, 0x10, 0];
        dc.extend_from_slice(&words(&[128_000, 128_000]));
        dc.extend_from_slice(&dsi);
        let mut es = vec![0, 1, 0xe0, 0, 2, 3, b'a', b'b', b'c', 0, 4];
        es.extend_from_slice(&descriptor(0x04, &dc, long));
        es.extend_from_slice(&descriptor(0x06, &[2], long));
        full(b"esds", 0, 0, &descriptor(0x03, &es, long))
    }

    fn trak(
        version: u8,
        track_id: u32,
        timescale: u32,
        handler: &[u8; 4],
        entry: &[u8],
    ) -> Vec<u8> {
        let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes()[..], entry].concat());
        let stbl = boxed(b"stbl", &stsd);
        let minf = boxed(b"minf", &stbl);
        let mdia = boxed(
            b"mdia",
            &[mdhd(version, timescale), hdlr(handler), minf].concat(),
        );
        boxed(b"trak", &[tkhd(version, track_id), mdia].concat())
    }

    fn trex(track_id: u32, duration: u32, flags: u32) -> Vec<u8> {
        full(b"trex", 0, 0, &words(&[track_id, 1, duration, 0, flags]))
    }

    fn moov(trak: &[u8], trexes: &[Vec<u8>]) -> Vec<u8> {
        let mvhd = full(b"mvhd", 0, 0, &[0; 96]);
        let mvex = boxed(b"mvex", &trexes.concat());
        boxed(b"moov", &[mvhd, trak.to_vec(), mvex].concat())
    }

    fn video_moov(trexes: &[Vec<u8>]) -> Vec<u8> {
        let entry = visual_entry(b"avc1", 320, 240, &avcc());
        moov(&trak(0, 1, 15360, b"vide", &entry), trexes)
    }

    fn tfhd(track_id: u32, duration: Option<u32>, flags: Option<u32>) -> Vec<u8> {
        let mut tf = 0x02_0000;
        let mut p = track_id.to_be_bytes().to_vec();
        if let Some(d) = duration {
            tf |= TFHD_DEFAULT_DURATION;
            p.extend_from_slice(&d.to_be_bytes());
        }
        if let Some(f) = flags {
            tf |= TFHD_DEFAULT_FLAGS;
            p.extend_from_slice(&f.to_be_bytes());
        }
        full(b"tfhd", 0, tf, &p)
    }

    fn tfdt(version: u8, time: u64) -> Vec<u8> {
        if version == 1 {
            full(b"tfdt", 1, 0, &time.to_be_bytes())
        } else {
            full(b"tfdt", 0, 0, &u32::try_from(time).unwrap().to_be_bytes())
        }
    }

    fn trun(flags: u32, count: u32, first_flags: Option<u32>, table: &[u32]) -> Vec<u8> {
        let mut p = count.to_be_bytes().to_vec();
        if flags & TRUN_DATA_OFFSET != 0 {
            p.extend_from_slice(&0u32.to_be_bytes());
        }
        let flags = match first_flags {
            Some(f) => {
                p.extend_from_slice(&f.to_be_bytes());
                flags | TRUN_FIRST_SAMPLE_FLAGS
            }
            None => flags,
        };
        p.extend_from_slice(&words(table));
        full(b"trun", 0, flags, &p)
    }

    fn moof(sequence: u32, trafs: &[Vec<u8>]) -> Vec<u8> {
        let mfhd = full(b"mfhd", 0, 0, &sequence.to_be_bytes());
        boxed(b"moof", &[vec![mfhd], trafs.to_vec()].concat().concat())
    }

    fn traf(parts: &[Vec<u8>]) -> Vec<u8> {
        boxed(b"traf", &parts.concat())
    }

    fn mdat(len: usize) -> Vec<u8> {
        boxed(b"mdat", &vec![0xAB; len])
    }

    const SYNC: u32 = 0x0200_0000;
    const NON_SYNC: u32 = 0x0101_0000;

    fn push_all(data: &[u8]) -> Vec<Fmp4Item> {
        let mut s = Fmp4Splitter::new();
        let items = s.push(data).unwrap();
        s.finish().unwrap();
        items
    }

    fn fragments(items: &[Fmp4Item]) -> Vec<&Fragment> {
        items
            .iter()
            .filter_map(|i| match i {
                Fmp4Item::Fragment(f) => Some(f),
                Fmp4Item::Init(_) => None,
            })
            .collect()
    }

    fn init_of(items: &[Fmp4Item]) -> &InitSegment {
        match &items[0] {
            Fmp4Item::Init(init) => init,
            other => panic!("expected init, got {other:?}"),
        }
    }

    #[test]
    fn init_avc1() {
        let data = [ftyp(), video_moov(&[trex(1, 512, 0)])].concat();
        let items = push_all(&data);
        assert_eq!(items.len(), 1);
        let init = init_of(&items);
        assert_eq!(&init.bytes[..], &data[..]);
        assert_eq!(
            init.track,
            TrackInfo {
                track_id: 1,
                timescale: 15360,
                kind: TrackKind::Video,
                codec: "avc1.64001f".to_owned(),
                width: 320,
                height: 240,
                sample_rate: 0,
                channels: 0,
            }
        );
    }

    #[test]
    fn init_version1_headers_and_avc3() {
        let entry = visual_entry(b"avc3", 1920, 1080, &avcc());
        let data = [ftyp(), moov(&trak(1, 7, 90000, b"vide", &entry), &[])].concat();
        let track = init_of(&push_all(&data)).track.clone();
        assert_eq!(track.track_id, 7);
        assert_eq!(track.timescale, 90000);
        assert_eq!(track.codec, "avc3.64001f");
        assert_eq!((track.width, track.height), (1920, 1080));
    }

    #[test]
    fn init_mp4a() {
        for long in [false, true] {
            let entry = audio_entry(2, 48000, &esds(long));
            let data = [ftyp(), moov(&trak(0, 2, 48000, b"soun", &entry), &[])].concat();
            let track = init_of(&push_all(&data)).track.clone();
            assert_eq!(
                track,
                TrackInfo {
                    track_id: 2,
                    timescale: 48000,
                    kind: TrackKind::Audio,
                    codec: "mp4a.40.2".to_owned(),
                    width: 0,
                    height: 0,
                    sample_rate: 48000,
                    channels: 2,
                }
            );
        }
    }

    #[test]
    fn mp4a_variants() {
        let codec = |esds: Vec<u8>| {
            let entry = audio_entry(1, 44100, &esds);
            let data = moov(&trak(0, 1, 44100, b"soun", &entry), &[]);
            Fmp4Splitter::new()
                .push(&data)
                .map(|items| init_of(&items).track.codec.clone())
        };
        // MP3 (0x6b): no audio object type.
        let mut dc = vec![0x6b, 0x15, 0, 0, 0];
        dc.extend_from_slice(&[0; 8]);
        let es = [vec![0, 1, 0], descriptor(0x04, &dc, false)].concat();
        assert_eq!(
            codec(full(b"esds", 0, 0, &descriptor(3, &es, false))).unwrap(),
            "mp4a.6b"
        );
        // Escaped audio object type 31 -> 32 + 6 bits (here 42, USAC).
        let mut dc = vec![0x40, 0x15, 0, 0, 0];
        dc.extend_from_slice(&[0; 8]);
        dc.extend_from_slice(&descriptor(0x05, &[0xf9, 0x40], false));
        let es = [vec![0, 1, 0], descriptor(0x04, &dc, false)].concat();
        assert_eq!(
            codec(full(b"esds", 0, 0, &descriptor(3, &es, false))).unwrap(),
            "mp4a.40.42"
        );
        // No esds at all.
        assert_eq!(codec(Vec::new()).unwrap(), "mp4a");
        // Descriptor size claims more than the box holds.
        let err = codec(full(b"esds", 0, 0, &[3, 0x20, 0, 1, 0])).unwrap_err();
        assert!(
            err.to_string().contains("box 'esds'") && err.to_string().contains("descriptor body"),
            "{err}"
        );
        // DecoderConfigDescriptor shorter than its fixed fields.
        let es = [vec![0, 1, 0], descriptor(0x04, &[0x40, 0x15], false)].concat();
        let err = codec(full(b"esds", 0, 0, &descriptor(3, &es, false))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "descriptor 0x04 in box 'esds' is 4 bytes, shorter than the 15 bytes needed to read its \
             streamType, bufferSizeDB and bitrates"
        );
        // Size encoding that never terminates.
        let err = codec(full(b"esds", 0, 0, &[3, 0x80, 0x80, 0x80, 0x80, 0])).unwrap_err();
        assert!(matches!(err, Fmp4Error::Invalid { .. }), "{err}");
    }

    #[test]
    fn init_hevc_and_unknown_entries() {
        let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 93];
        hvcc.extend_from_slice(&[0; 10]);
        let entry = visual_entry(b"hvc1", 3840, 2160, &boxed(b"hvcC", &hvcc));
        let track = init_of(&push_all(&moov(&trak(0, 1, 90000, b"vide", &entry), &[])))
            .track
            .clone();
        assert_eq!(track.codec, "hvc1.1.6.L93.B0");
        assert_eq!((track.width, track.height), (3840, 2160));

        let entry = visual_entry(b"vp09", 640, 360, &[]);
        let track = init_of(&push_all(&moov(&trak(0, 1, 90000, b"vide", &entry), &[])))
            .track
            .clone();
        assert_eq!(track.codec, "vp09");
        assert_eq!(track.width, 640);

        let entry = boxed(b"wvtt", &[0; 8]);
        let track = init_of(&push_all(&moov(&trak(0, 3, 1000, b"text", &entry), &[])))
            .track
            .clone();
        assert_eq!(track.kind, TrackKind::Other(FourCc(*b"text")));
        assert_eq!(track.codec, "wvtt");
    }

    #[test]
    fn decode_time_is_rewritten_in_place() {
        for version in [0u8, 1] {
            let moov_box = video_moov(&[trex(1, 512, NON_SYNC)]);
            let moof_box = moof(
                7,
                &[traf(&[
                    tfhd(1, None, None),
                    tfdt(version, 1000),
                    trun(0, 2, None, &[]),
                ])],
            );
            let fragment = fragment_of(moov_box.clone(), moof_box).unwrap();
            let moved = fragment.with_decode_time(90_000).unwrap();
            assert_eq!(moved.decode_time, 90_000);
            assert_eq!(moved.bytes.len(), fragment.bytes.len());
            // Reading the rewritten bytes again gives the new time.
            let data = [ftyp(), moov_box, moved.bytes.to_vec()].concat();
            let mut s = Fmp4Splitter::new();
            let items = s.push(&data).unwrap();
            assert_eq!(fragments(&items)[0].decode_time, 90_000);
        }
        let moov_box = video_moov(&[trex(1, 512, NON_SYNC)]);
        let moof_box = moof(
            1,
            &[traf(&[
                tfhd(1, None, None),
                tfdt(0, 0),
                trun(0, 1, None, &[]),
            ])],
        );
        let fragment = fragment_of(moov_box, moof_box).unwrap();
        assert!(fragment.with_decode_time(u64::from(u32::MAX) + 1).is_err());
    }

    fn fragment_of(moov_box: Vec<u8>, moof_box: Vec<u8>) -> Result<Fragment, Fmp4Error> {
        let data = [ftyp(), moov_box, moof_box, mdat(16)].concat();
        let mut s = Fmp4Splitter::new();
        let items = s.push(&data)?;
        if items.len() < 2 {
            s.push(&[])?;
        }
        Ok(fragments(&items)[0].clone())
    }

    #[test]
    fn trun_per_sample_durations_and_flags() {
        let table = [512, 100, SYNC, 512, 50, NON_SYNC, 1024, 50, NON_SYNC];
        let moof_box = moof(
            9,
            &[traf(&[
                tfhd(1, None, None),
                tfdt(1, 1 << 40),
                trun(
                    TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS,
                    3,
                    None,
                    &table,
                ),
            ])],
        );
        let f = fragment_of(video_moov(&[trex(1, 7, SYNC)]), moof_box).unwrap();
        assert_eq!(f.sequence_number, 9);
        assert_eq!(f.decode_time, 1 << 40);
        assert_eq!(f.duration, 2048);
        assert_eq!(f.sample_count, 3);
        assert!(f.starts_with_keyframe);
        assert_eq!(f.keyframes, 1);
    }

    #[test]
    fn tfhd_defaults_and_first_sample_flags() {
        let moof_box = moof(
            1,
            &[traf(&[
                tfhd(1, Some(1000), Some(NON_SYNC)),
                tfdt(0, 3000),
                trun(
                    TRUN_DATA_OFFSET | TRUN_SIZE,
                    4,
                    Some(SYNC),
                    &[10, 20, 30, 40],
                ),
            ])],
        );
        let f = fragment_of(video_moov(&[trex(1, 7, SYNC)]), moof_box).unwrap();
        assert_eq!(f.decode_time, 3000);
        assert_eq!(f.duration, 4000);
        assert_eq!(f.sample_count, 4);
        assert!(f.starts_with_keyframe);
        assert_eq!(f.keyframes, 1);
    }

    #[test]
    fn first_sample_flags_override_the_table() {
        let table = [NON_SYNC, NON_SYNC, SYNC];
        let moof_box = moof(
            1,
            &[traf(&[
                tfhd(1, Some(10), None),
                trun(TRUN_FLAGS, 3, Some(SYNC), &table),
            ])],
        );
        let f = fragment_of(video_moov(&[]), moof_box).unwrap();
        assert!(f.starts_with_keyframe);
        assert_eq!(f.keyframes, 2);
        assert_eq!(f.duration, 30);
    }

    #[test]
    fn trex_defaults() {
        let moof_box = || {
            moof(
                1,
                &[traf(&[
                    tfhd(1, None, None),
                    tfdt(0, 0),
                    trun(0, 5, None, &[]),
                ])],
            )
        };
        let f = fragment_of(
            video_moov(&[trex(2, 1, NON_SYNC), trex(1, 1024, 0)]),
            moof_box(),
        )
        .unwrap();
        assert_eq!(f.duration, 5120);
        assert_eq!(f.keyframes, 5);
        assert!(f.starts_with_keyframe);

        let f = fragment_of(video_moov(&[trex(1, 1024, NON_SYNC)]), moof_box()).unwrap();
        assert_eq!(f.keyframes, 0);
        assert!(!f.starts_with_keyframe);

        // No trex for the track: durations unknown, flags default to sync.
        let f = fragment_of(video_moov(&[trex(2, 1024, NON_SYNC)]), moof_box()).unwrap();
        assert_eq!(f.duration, 0);
        assert_eq!(f.keyframes, 5);
    }

    #[test]
    fn sync_sample_rules() {
        assert!(is_sync(0));
        assert!(is_sync(SYNC));
        assert!(!is_sync(NON_SYNC));
        assert!(!is_sync(0x0001_0000));
        // depends_on == 1 without the non-sync bit is still not a keyframe.
        assert!(!is_sync(0x0100_0000));
        assert!(is_sync(0x0300_0000));
    }

    #[test]
    fn multiple_truns_and_trafs() {
        let moof_box = moof(
            4,
            &[
                traf(&[
                    tfhd(1, Some(100), Some(NON_SYNC)),
                    tfdt(0, 500),
                    trun(0, 0, None, &[]),
                    trun(TRUN_DURATION, 2, Some(SYNC), &[50, 60]),
                    trun(0, 3, None, &[]),
                ]),
                traf(&[tfhd(2, Some(9999), None), trun(0, 100, None, &[])]),
            ],
        );
        let f = fragment_of(video_moov(&[]), moof_box).unwrap();
        assert_eq!(f.sample_count, 5);
        assert_eq!(f.duration, 50 + 60 + 300);
        assert!(f.starts_with_keyframe);
        assert_eq!(f.keyframes, 1);
    }

    #[test]
    fn missing_tfdt_continues_from_previous_fragment() {
        let frag = |seq, with_tfdt: bool| {
            let mut parts = vec![tfhd(1, Some(512), None)];
            if with_tfdt {
                parts.push(tfdt(0, 10_000));
            }
            parts.push(trun(0, 3, None, &[]));
            [moof(seq, &[traf(&parts)]), mdat(4)].concat()
        };
        let data = [
            ftyp(),
            video_moov(&[]),
            frag(1, true),
            frag(2, false),
            frag(3, false),
        ]
        .concat();
        let items = push_all(&data);
        let times: Vec<u64> = fragments(&items).iter().map(|f| f.decode_time).collect();
        assert_eq!(times, [10_000, 11_536, 13_072]);
    }

    fn sample_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let init = [
            ftyp(),
            boxed(b"free", &[0; 3]),
            video_moov(&[trex(1, 512, NON_SYNC)]),
        ]
        .concat();
        let frag = |seq: u32, time: u64, first: Option<u32>| {
            moof(
                seq,
                &[traf(&[
                    tfhd(1, None, None),
                    tfdt(1, time),
                    trun(0, 15, first, &[]),
                ])],
            )
        };
        let f1 = [
            boxed(b"styp", b"msdh\0\0\0\0msdhmsix"),
            boxed(b"sidx", &[0; 24]),
            frag(1, 0, Some(SYNC)),
            mdat(100),
        ]
        .concat();
        let f2 = [
            full(b"prft", 0, 0, &[0; 12]),
            frag(2, 7680, None),
            large_boxed(b"mdat", &[1; 50]),
        ]
        .concat();
        let stream = [
            boxed(b"free", &[]),
            init.clone(),
            f1.clone(),
            boxed(b"skip", &[7; 5]),
            f2.clone(),
        ]
        .concat();
        (stream, vec![init, f1, f2])
    }

    #[test]
    fn splits_stream_and_attaches_extra_boxes() {
        let (stream, expected) = sample_stream();
        let items = push_all(&stream);
        assert_eq!(items.len(), 3);
        assert_eq!(&init_of(&items).bytes[..], &expected[0][..]);
        let frags = fragments(&items);
        assert_eq!(&frags[0].bytes[..], &expected[1][..]);
        assert_eq!(&frags[1].bytes[..], &expected[2][..]);
        assert_eq!(frags[0].sequence_number, 1);
        assert!(frags[0].starts_with_keyframe);
        assert_eq!(frags[0].keyframes, 1);
        assert_eq!(frags[0].duration, 7680);
        assert_eq!(frags[1].decode_time, 7680);
        assert!(!frags[1].starts_with_keyframe);
        assert_eq!(frags[1].keyframes, 0);
    }

    #[test]
    fn chunking_does_not_change_items() {
        let (stream, _) = sample_stream();
        let whole = push_all(&stream);
        for chunk in [1, 2, 3, 7, 8, 9, 16, 100, 1000] {
            let mut s = Fmp4Splitter::new();
            let mut items = Vec::new();
            for piece in stream.chunks(chunk) {
                items.extend(s.push(piece).unwrap());
            }
            s.finish().unwrap();
            assert_eq!(items, whole, "chunk size {chunk}");
        }
    }

    fn first_error(data: &[u8]) -> Fmp4Error {
        let mut s = Fmp4Splitter::new();
        match s.push(data) {
            Err(e) => e,
            Ok(_) => s.push(&[]).unwrap_err(),
        }
    }

    #[test]
    fn top_level_errors() {
        assert_eq!(
            first_error(b"\0\0\0\0mdat"),
            Fmp4Error::SizeToEndOfFile {
                fourcc: FourCc(*b"mdat")
            }
        );
        assert_eq!(
            first_error(b"\0\0\0\x04ftyp"),
            Fmp4Error::SizeSmallerThanHeader {
                fourcc: FourCc(*b"ftyp"),
                size: 4,
                header_len: 8
            }
        );
        assert_eq!(
            first_error(&[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 9]),
            Fmp4Error::SizeSmallerThanHeader {
                fourcc: FourCc(*b"mdat"),
                size: 9,
                header_len: 16
            }
        );
        let err = first_error(b"\0\0\0\x10\x01\x02\x03\x04");
        assert_eq!(
            err.to_string(),
            "top-level box type '\\x01\\x02\\x03\\x04' is not printable ASCII; the stream is corrupt"
        );
        assert!(matches!(
            first_error(&mdat(4)),
            Fmp4Error::UnexpectedBox { .. }
        ));
        let no_moof = [ftyp(), video_moov(&[]), mdat(4)].concat();
        assert_eq!(
            first_error(&no_moof).to_string(),
            "unexpected top-level box 'mdat' without a preceding 'moof'"
        );
        let m = moof(1, &[traf(&[tfhd(1, None, None)])]);
        let two_moofs = [ftyp(), video_moov(&[]), m.clone(), m].concat();
        assert!(matches!(
            first_error(&two_moofs),
            Fmp4Error::UnexpectedBox { .. }
        ));
        let second_moov = [ftyp(), video_moov(&[]), video_moov(&[])].concat();
        assert!(matches!(
            first_error(&second_moov),
            Fmp4Error::UnexpectedBox { .. }
        ));
    }

    #[test]
    fn size_limits_apply_before_buffering() {
        let mut s = Fmp4Splitter::with_max_box_size(1000);
        // Only the header has arrived, but it already exceeds the limit.
        assert_eq!(
            s.push(b"\0\0\x13\x88mdat").unwrap_err(),
            Fmp4Error::BoxTooLarge {
                fourcc: FourCc(*b"mdat"),
                size: 5000,
                limit: 1000
            }
        );
        // Still failing: the splitter is poisoned.
        assert!(s.push(&[]).is_err());

        let mut s = Fmp4Splitter::new();
        assert!(matches!(
            s.push(&[
                0, 0, 0, 1, b'm', b'd', b'a', b't', 0xff, 0, 0, 0, 0, 0, 0, 0
            ]),
            Err(Fmp4Error::BoxTooLarge { .. })
        ));

        // Several small boxes cannot add up past the limit either.
        let mut s = Fmp4Splitter::with_max_box_size(1000);
        let err = s
            .push(&[boxed(b"uuid", &[0; 600]), boxed(b"uuid", &[0; 600])].concat())
            .unwrap_err();
        assert!(
            matches!(err, Fmp4Error::ItemTooLarge { size: 1216, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_boxes_are_named() {
        let moof_box = moof(1, &[traf(&[tfhd(1, None, None), full(b"trun", 0, 0, &[])])]);
        assert_eq!(
            fragment_of(video_moov(&[]), moof_box)
                .unwrap_err()
                .to_string(),
            "box 'trun' is 12 bytes, shorter than the 16 bytes needed to read its sample_count"
        );
        // sample_count promising a table that is not there.
        let moof_box = moof(
            1,
            &[traf(&[
                tfhd(1, None, None),
                trun(TRUN_DURATION, 0x4000_0000, None, &[1, 2]),
            ])],
        );
        let err = fragment_of(video_moov(&[]), moof_box).unwrap_err();
        assert!(
            matches!(
                err,
                Fmp4Error::Truncated {
                    field: "sample table",
                    needed: 0x1_0000_0010,
                    ..
                }
            ),
            "{err}"
        );
        // Sample count overflow across truns.
        let moof_box = moof(
            1,
            &[traf(&[
                tfhd(1, None, None),
                trun(0, u32::MAX, None, &[]),
                trun(0, 1, None, &[]),
            ])],
        );
        assert!(matches!(
            fragment_of(video_moov(&[]), moof_box),
            Err(Fmp4Error::Invalid { .. })
        ));
        let moof_box = moof(
            1,
            &[traf(&[full(
                b"tfhd",
                0,
                TFHD_DEFAULT_DURATION,
                &[0, 0, 0, 1],
            )])],
        );
        assert!(matches!(
            fragment_of(video_moov(&[]), moof_box),
            Err(Fmp4Error::Truncated { .. })
        ));
        let moof_box = boxed(b"moof", &full(b"mfhd", 0, 0, &1u32.to_be_bytes()));
        assert_eq!(
            fragment_of(video_moov(&[]), moof_box).unwrap_err(),
            Fmp4Error::MissingBox {
                parent: FourCc(*b"moof"),
                child: FourCc(*b"traf")
            }
        );
    }

    #[test]
    fn malformed_moov_errors() {
        // A trak whose declared size runs past the end of moov.
        let mut t = trak(0, 1, 1000, b"vide", &visual_entry(b"avc1", 1, 1, &[]));
        t[3] = t[3].wrapping_add(10);
        let err = first_error(&boxed(b"moov", &t));
        assert!(matches!(err, Fmp4Error::ChildOverrun { .. }), "{err}");
        // Stray non-zero trailing bytes.
        let err = first_error(&boxed(b"moov", &[1, 2, 3]));
        assert_eq!(
            err,
            Fmp4Error::TrailingBytes {
                parent: FourCc(*b"moov"),
                len: 3
            }
        );
        // No trak.
        assert!(matches!(
            first_error(&boxed(b"moov", &[])),
            Fmp4Error::MissingBox { .. }
        ));
        // Visual sample entry cut short.
        let short_entry = boxed(b"avc1", &[0; 30]);
        let err = first_error(&moov(&trak(0, 1, 1000, b"vide", &short_entry), &[]));
        assert_eq!(
            err.to_string(),
            "box 'avc1' is 38 bytes, shorter than the 86 bytes needed to read its resolution, \
             frame_count, compressorname and depth"
        );
        // Empty stsd.
        let err = first_error(&moov(&trak(0, 1, 1000, b"vide", &[]), &[]));
        assert!(matches!(err, Fmp4Error::Invalid { .. }), "{err}");
    }

    #[test]
    fn items_before_an_error_are_delivered() {
        let data = [
            ftyp(),
            video_moov(&[]),
            b"\0\0\0\x10\xff\xff\xff\xff".to_vec(),
        ]
        .concat();
        let mut s = Fmp4Splitter::new();
        assert_eq!(s.push(&data).unwrap().len(), 1);
        assert!(matches!(s.push(&[]), Err(Fmp4Error::InvalidBoxType { .. })));
        assert!(s.finish().is_err());
    }

    #[test]
    fn finish_reports_incomplete_data() {
        let (stream, _) = sample_stream();
        let mut s = Fmp4Splitter::new();
        s.push(&stream[..stream.len() - 1]).unwrap();
        assert!(matches!(s.finish(), Err(Fmp4Error::Incomplete { .. })));
        // A complete trailing box that was waiting for a moof is fine.
        let mut s = Fmp4Splitter::new();
        s.push(&[stream, boxed(b"mfra", &[0; 8])].concat()).unwrap();
        s.finish().unwrap();
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }
    }

    fn feed_chunked(rng: &mut Lcg, data: &[u8]) {
        let mut s = Fmp4Splitter::with_max_box_size(1 << 20);
        let mut rest = data;
        while !rest.is_empty() {
            let n = 1 + rng.below(64).min(rest.len() - 1);
            let (piece, tail) = rest.split_at(n);
            if s.push(piece).is_err() {
                return;
            }
            rest = tail;
        }
        let _ = s.finish();
    }

    #[test]
    fn fuzz_random_bytes_never_panic() {
        let mut rng = Lcg(0x5eed);
        for _ in 0..2000 {
            let len = rng.below(300);
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Make some inputs look like boxes so parsing gets further.
            if data.len() >= 8 && rng.below(2) == 0 {
                data[..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
                data[4..8].copy_from_slice([b"moov", b"ftyp", b"moof", b"free"][rng.below(4)]);
            }
            feed_chunked(&mut rng, &data);
        }
    }

    #[test]
    fn fuzz_mutated_streams_never_panic() {
        let (stream, _) = sample_stream();
        let audio = [
            ftyp(),
            moov(
                &trak(0, 2, 48000, b"soun", &audio_entry(2, 48000, &esds(true))),
                &[],
            ),
        ]
        .concat();
        let mut rng = Lcg(42);
        for base in [&stream, &audio] {
            for _ in 0..3000 {
                let mut data = base.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(data.len());
                    data[at] = match rng.below(3) {
                        0 => rng.next() as u8,
                        1 => data[at] ^ (1 << rng.below(8)),
                        _ => 0xff,
                    };
                }
                if rng.below(4) == 0 {
                    data.truncate(rng.below(data.len()));
                }
                feed_chunked(&mut rng, &data);
            }
        }
    }

    /// Runs ffmpeg with the given mapping/codec options and splits its output.
    fn ffmpeg_items(name: &str, codec_args: &[&str]) -> Vec<Fmp4Item> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "transcoder-pure-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.mp4");
        let mut args = vec![
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "4",
        ];
        args.extend_from_slice(codec_args);
        args.extend_from_slice(&[
            "-movflags",
            "+empty_moov+default_base_moof+frag_keyframe",
            "-frag_duration",
            "500000",
            "-f",
            "mp4",
        ]);
        let status = std::process::Command::new("ffmpeg")
            .args(&args)
            .arg(&out)
            .status()
            .expect("ffmpeg must be installed");
        assert!(status.success(), "ffmpeg failed: {status}");
        let data = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let mut s = Fmp4Splitter::new();
        let mut items = Vec::new();
        for chunk in data.chunks(1000) {
            items.extend(s.push(chunk).unwrap());
        }
        s.finish().unwrap();
        assert!(matches!(items[0], Fmp4Item::Init(_)));
        assert_eq!(
            items
                .iter()
                .filter(|i| matches!(i, Fmp4Item::Init(_)))
                .count(),
            1
        );
        items
    }

    fn assert_contiguous(frags: &[&Fragment]) {
        assert!(frags.len() > 1);
        for pair in frags.windows(2) {
            assert!(pair[1].decode_time > pair[0].decode_time);
            assert_eq!(pair[1].decode_time, pair[0].decode_time + pair[0].duration);
            assert_eq!(pair[1].sequence_number, pair[0].sequence_number + 1);
        }
    }

    #[test]
    fn real_ffmpeg_video() {
        let items = ffmpeg_items(
            "video",
            &[
                "-map",
                "0:v",
                "-c:v",
                "libx264",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
            ],
        );
        let track = &init_of(&items).track;
        assert!(track.codec.starts_with("avc1."), "{}", track.codec);
        assert_eq!(track.codec.len(), "avc1.64001f".len());
        assert_eq!(track.kind, TrackKind::Video);
        assert_eq!((track.width, track.height), (320, 240));
        assert!(track.timescale > 0);
        let frags = fragments(&items);
        assert_contiguous(&frags);
        assert_eq!(frags.iter().map(|f| f.sample_count).sum::<u32>(), 120);
        assert_eq!(frags.iter().map(|f| f.keyframes).sum::<u32>(), 4);
        let start = frags[0].decode_time;
        assert!(frags[0].starts_with_keyframe);
        for f in &frags {
            if f.keyframes > 0 {
                // Keyframes only open fragments, once per second of media.
                assert!(f.starts_with_keyframe);
                assert_eq!(f.keyframes, 1);
                assert_eq!((f.decode_time - start) % u64::from(track.timescale), 0);
            }
        }
    }

    #[test]
    fn real_ffmpeg_audio() {
        let items = ffmpeg_items("audio", &["-map", "1:a", "-c:a", "aac", "-b:a", "128k"]);
        let track = &init_of(&items).track;
        assert_eq!(track.codec, "mp4a.40.2");
        assert_eq!(track.kind, TrackKind::Audio);
        assert!(
            matches!(track.sample_rate, 44100 | 48000),
            "{}",
            track.sample_rate
        );
        assert!(track.channels >= 1);
        assert_eq!((track.width, track.height), (0, 0));
        let frags = fragments(&items);
        assert_contiguous(&frags);
        for f in &frags {
            assert!(f.starts_with_keyframe);
            assert_eq!(f.keyframes, f.sample_count);
        }
    }
}
