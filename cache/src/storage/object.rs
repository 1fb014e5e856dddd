//! A complete object in memory: decoded metadata and the body in large shared chunks.

use super::*;

/// Bytes charged per object on top of its body, for its header and bookkeeping.
pub(super) const OBJECT_OVERHEAD: usize = 512;

/// Metadata kept decoded, so a hit rebuilds a `CacheMeta` without deserialising anything.
#[derive(Debug, Clone)]
pub(super) struct StoredMeta {
    pub(super) fresh_until: SystemTime,
    pub(super) created: SystemTime,
    pub(super) epoch: SystemTime,
    pub(super) stale_while_revalidate: u32,
    pub(super) stale_if_error: u32,
    pub(super) variance: Option<HashBinary>,
    pub(super) header: ResponseHeader,
}

impl StoredMeta {
    pub(super) fn capture(meta: &CacheMeta) -> Self {
        Self {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            epoch: meta.epoch(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: meta.response_header().clone(),
        }
    }

    pub(super) fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if self.epoch != self.created {
            meta.set_epoch_override(self.epoch);
        }
        if let Some(v) = self.variance {
            meta.set_variance(v);
        }
        meta
    }
}

/// A complete object.
#[derive(Debug)]
pub(super) struct CachedObject {
    /// Readable key (`host/path?query`), for the purge index.
    pub(super) key: String,
    /// `Surrogate-Key` tags.
    pub(super) tags: Vec<String>,
    /// Distinguishes this copy from earlier ones under the same key.
    pub(super) generation: u64,
    pub(super) meta: StoredMeta,
    pub(super) chunks: Vec<Bytes>,
    /// Offset of each chunk's first byte, for seeks.
    pub(super) starts: Vec<usize>,
    pub(super) len: usize,
    /// Shared with the fill it came from, so its readers and the fill's are one crowd.
    pub(super) crowd: Arc<CrowdGate>,
}

impl CachedObject {
    pub(super) fn new(
        key: String,
        tags: Vec<String>,
        meta: StoredMeta,
        chunks: Vec<Bytes>,
        crowd: Arc<CrowdGate>,
    ) -> Self {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut len = 0;
        for c in &chunks {
            starts.push(len);
            len += c.len();
        }
        Self {
            key,
            tags,
            generation: 0,
            meta,
            chunks,
            starts,
            len,
            crowd,
        }
    }

    /// The same body under new metadata.
    pub(super) fn with_meta(&self, meta: StoredMeta) -> Self {
        Self::new(
            self.key.clone(),
            self.tags.clone(),
            meta,
            self.chunks.clone(),
            Arc::clone(&self.crowd),
        )
    }
}

/// Chunk size a stored body is regrouped into: upstream reads arrive in small pieces, and each
/// piece costs a write on every hit, so a finished object is copied once into large chunks.
/// 1 MiB pieces were measured too: per 1 MiB hit they took 8% less edge CPU with the edge and
/// its client each pinned to a core, and 5% more with both sharing two cores, so no gain.
pub(super) const STORED_CHUNK: usize = 256 * 1024;

/// Regroups `chunks` into pieces of [`STORED_CHUNK`] bytes (the last may be smaller), each in
/// an allocation of exactly its size: growing one buffer instead doubled it, and every stored
/// piece kept its whole allocation alive. A chunk that is already large and starts a piece is
/// kept as it is, without copying.
pub(super) fn coalesce(chunks: Vec<Bytes>) -> Vec<Bytes> {
    if chunks.len() <= 1 || chunks.iter().all(|c| c.len() >= STORED_CHUNK) {
        return chunks;
    }
    let mut remaining: usize = chunks.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(remaining / STORED_CHUNK + 1);
    let mut piece = bytes::BytesMut::new();
    let mut piece_size = 0;
    for mut chunk in chunks {
        while !chunk.is_empty() {
            if piece.is_empty() && chunk.len() >= STORED_CHUNK {
                remaining -= chunk.len();
                out.push(chunk);
                break;
            }
            if piece.is_empty() {
                piece_size = STORED_CHUNK.min(remaining);
                piece = bytes::BytesMut::with_capacity(piece_size);
            }
            let take = (piece_size - piece.len()).min(chunk.len());
            piece.extend_from_slice(&chunk.split_to(take));
            remaining -= take;
            if piece.len() == piece_size {
                out.push(std::mem::take(&mut piece).freeze());
            }
        }
    }
    if !piece.is_empty() {
        out.push(piece.freeze());
    }
    out
}
