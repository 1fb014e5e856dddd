//! Box and descriptor reading: headers, child iteration and a bounds-checked reader.

use super::*;

/// Header length of a box already known to be well formed.
pub(super) fn header_len_of(data: &[u8]) -> usize {
    if data.get(..4) == Some(&[0, 0, 0, 1]) {
        16
    } else {
        8
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) fourcc: FourCc,
    pub(super) header_len: usize,
    /// `None` for size 0, "extends to the end of the enclosing space".
    pub(super) size: Option<u64>,
}

/// Reads a box header; `Ok(None)` if `data` is too short to hold it.
pub(super) fn read_header(data: &[u8]) -> Result<Option<Header>, Fmp4Error> {
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
pub(super) struct Child<'a> {
    pub(super) fourcc: FourCc,
    pub(super) header_len: usize,
    pub(super) payload: &'a [u8],
}

impl<'a> Child<'a> {
    pub(super) fn reader(&self) -> Reader<'a> {
        Reader {
            data: self.payload,
            pos: 0,
            scope: Scope::Box(self.fourcc),
            header_len: self.header_len,
        }
    }
}

/// Iterates over the boxes packed in a parent's payload.
pub(super) struct Children<'a> {
    pub(super) data: &'a [u8],
    pub(super) parent: FourCc,
    pub(super) done: bool,
}

pub(super) fn children(data: &[u8], parent: FourCc) -> Children<'_> {
    Children {
        data,
        parent,
        done: false,
    }
}

impl<'a> Children<'a> {
    pub(super) fn next_child(&mut self) -> Result<Option<Child<'a>>, Fmp4Error> {
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

pub(super) fn find_child<'a>(
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

pub(super) fn require_child<'a>(
    data: &'a [u8],
    parent: FourCc,
    want: FourCc,
) -> Result<Child<'a>, Fmp4Error> {
    find_child(data, parent, want)?.ok_or(Fmp4Error::MissingBox {
        parent,
        child: want,
    })
}

/// Bounds-checked big-endian reader over a box or descriptor payload.
#[derive(Debug, Clone)]
pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) scope: Scope,
    /// Length of the box/descriptor header before `data`, for error sizes.
    pub(super) header_len: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn short(&self, n: usize, field: &'static str) -> Fmp4Error {
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

    pub(super) fn fourcc(&self) -> FourCc {
        match self.scope {
            Scope::Box(fourcc) | Scope::Descriptor { fourcc, .. } => fourcc,
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Fmp4Error> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or_else(|| self.short(n, field))?;
        self.pos += n;
        Ok(slice)
    }

    pub(super) fn skip(&mut self, n: usize, field: &'static str) -> Result<(), Fmp4Error> {
        self.take(n, field).map(|_| ())
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], Fmp4Error> {
        let slice = self.take(N, field)?;
        <[u8; N]>::try_from(slice).map_err(|_| self.short(N, field))
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, Fmp4Error> {
        self.array::<1>(field).map(|[b]| b)
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, Fmp4Error> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, Fmp4Error> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, Fmp4Error> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// Reads a full box's version and 24-bit flags.
    pub(super) fn version_flags(&mut self) -> Result<(u8, u32), Fmp4Error> {
        let [version, a, b, c] = self.array("version and flags")?;
        Ok((version, u32::from_be_bytes([0, a, b, c])))
    }

    /// Reads a 32-bit (version 0) or 64-bit (version 1) value.
    pub(super) fn sized(&mut self, version: u8, field: &'static str) -> Result<u64, Fmp4Error> {
        if version == 1 {
            self.u64(field)
        } else {
            self.u32(field).map(u64::from)
        }
    }
}
