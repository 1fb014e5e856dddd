//! The incremental splitter that cuts a byte stream into init segments and fragments.

use bytes::BytesMut;

use super::*;

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
