//! Hit handlers: a complete object in memory (optionally a range), a fill as it arrives, and
//! an object read block by block from disk.

use super::*;

/// Makes a cache hit share the first bytes of its answer before its bulk (see [`Pacing`]);
/// for requests that waited for another's fetch. Readers of another request's fill in
/// progress always do.
pub fn pace_for_crowd(hit: &mut HitHandler) {
    if let Some(complete) = hit.as_any_mut().downcast_mut::<CompleteHit>() {
        complete.pacing = Pacing::First;
    }
}

/// Reads a fill as it arrives.
pub(super) struct PartialHit {
    pub(super) fill: Arc<Fill>,
    pub(super) state: watch::Receiver<FillState>,
    /// Next chunk to return.
    pub(super) next: usize,
    /// The unreturned end of a chunk cut short by pacing.
    pub(super) rest: Option<Bytes>,
    pub(super) pacing: Pacing,
}

pub(super) fn fill_aborted() -> Box<Error> {
    Error::explain(
        ErrorType::Custom("FillAborted"),
        "the upstream fill of this object was aborted",
    )
}

#[async_trait]
impl HandleHit for PartialHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        self.pacing.before_read(&self.fill.crowd).await;
        if let Some(rest) = self.rest.take() {
            return Ok(Some(rest));
        }
        loop {
            let state = *self.state.borrow_and_update();
            match state {
                FillState::Writing(n) | FillState::Complete(n) if self.next < n => {
                    let mut chunk = self
                        .fill
                        .chunks
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)[self.next]
                        .clone();
                    self.next += 1;
                    let share = self.pacing.limit(chunk.len(), &self.fill.crowd);
                    if share < chunk.len() {
                        self.rest = Some(chunk.split_off(share));
                    }
                    return Ok(Some(chunk));
                }
                FillState::Complete(_) => return Ok(None),
                FillState::Failed => return Err(fill_aborted()),
                FillState::Writing(_) => {
                    // The sender lives in the fill we hold, so this only errs if it is gone.
                    if self.state.changed().await.is_err() {
                        return Err(fill_aborted());
                    }
                }
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Reads a complete object, optionally a byte range of it.
pub(super) struct CompleteHit {
    pub(super) obj: Arc<CachedObject>,
    pub(super) chunk: usize,
    pub(super) offset: usize,
    pub(super) remaining: usize,
    pub(super) pacing: Pacing,
}

#[async_trait]
impl HandleHit for CompleteHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.remaining > 0 {
            self.pacing.before_read(&self.obj.crowd).await;
        }
        while self.remaining > 0 {
            let Some(chunk) = self.obj.chunks.get(self.chunk) else {
                break;
            };
            let available = chunk.len() - self.offset;
            if available == 0 {
                self.chunk += 1;
                self.offset = 0;
                continue;
            }
            let n = self
                .pacing
                .limit(available.min(self.remaining), &self.obj.crowd);
            let out = chunk.slice(self.offset..self.offset + n);
            self.offset += n;
            self.remaining -= n;
            return Ok(Some(out));
        }
        Ok(None)
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let end = end.unwrap_or(self.obj.len);
        if start > end || end > self.obj.len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek {start}..{end} outside 0..{}", self.obj.len),
            );
        }
        // The chunk containing `start`: the last one that begins at or before it.
        let chunk = self
            .obj
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        self.chunk = chunk;
        self.offset = start - self.obj.starts.get(chunk).copied().unwrap_or(0);
        self.remaining = end - start;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Reads an object from the disk tier block by block, each verified before it is returned.
pub(super) struct DiskHit {
    pub(super) tier: Arc<DiskTier>,
    pub(super) id: HashBinary,
    pub(super) entry: Arc<DiskEntry>,
    pub(super) file: Arc<std::fs::File>,
    /// Block 0, read and verified by the lookup.
    pub(super) first: Bytes,
    pub(super) pos: u64,
    pub(super) end: u64,
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let block_size = u64::from(self.entry.header.block_size);
        let index = usize::try_from(self.pos / block_size).unwrap_or(usize::MAX);
        let block = if index == 0 {
            self.first.clone()
        } else {
            let (file, entry) = (Arc::clone(&self.file), Arc::clone(&self.entry));
            let read = tokio::task::spawn_blocking(move || read_block(&file, &entry, index))
                .await
                .unwrap_or_else(|e| Err(format!("reader task failed: {e}")));
            match read {
                Ok(block) => block,
                Err(why) => {
                    self.tier.drop_damaged(&self.id, &self.entry, &why);
                    return Error::e_explain(
                        ErrorType::Custom("DiskCorrupt"),
                        format!("disk copy damaged: {why}"),
                    );
                }
            }
        };
        let block_start = index as u64 * block_size;
        let from = usize::try_from(self.pos - block_start).unwrap_or(usize::MAX);
        let to =
            usize::try_from((self.end - block_start).min(block.len() as u64)).unwrap_or(usize::MAX);
        if from >= to {
            return Ok(None);
        }
        self.pos = block_start + to as u64;
        Ok(Some(block.slice(from..to)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.entry.header.body_len;
        let end = end.map_or(len, |e| e as u64);
        if start as u64 > end || end > len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek {start}..{end} outside 0..{len}"),
            );
        }
        self.pos = start as u64;
        self.end = end;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}
