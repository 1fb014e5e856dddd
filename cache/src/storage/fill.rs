//! A fill in progress: its state as readers see it, and the writer pingora-cache hands the
//! upstream's body to.

use super::*;

/// Progress of a fill, as readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FillState {
    /// This many chunks are readable, more may come.
    Writing(usize),
    /// All of this many chunks are written.
    Complete(usize),
    /// The writer gave up; the object must not be served.
    Failed,
}

/// An object being written.
#[derive(Debug)]
pub(super) struct Fill {
    pub(super) id: u64,
    pub(super) key: HashBinary,
    pub(super) key_text: String,
    pub(super) tags: Vec<String>,
    pub(super) meta: StoredMeta,
    pub(super) chunks: RwLock<Vec<Bytes>>,
    pub(super) state: watch::Sender<FillState>,
    pub(super) purged: AtomicBool,
    pub(super) crowd: Arc<CrowdGate>,
}

/// Writes one fill; dropping it without `finish` marks the fill failed.
pub(super) struct FillWriter {
    pub(super) storage: &'static TieredStorage,
    pub(super) fill: Arc<Fill>,
    pub(super) tag: [u8; 8],
    pub(super) len: usize,
    pub(super) finished: bool,
}

#[async_trait]
impl HandleMiss for FillWriter {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.len += data.len();
        let count = {
            let mut chunks = self
                .fill
                .chunks
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            chunks.push(data);
            chunks.len()
        };
        self.fill.state.send_replace(FillState::Writing(count));
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        let chunks = self
            .fill
            .chunks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let count = chunks.len();
        if !self.fill.purged.load(Ordering::Acquire) {
            let fill = &self.fill;
            let obj = CachedObject::new(
                fill.key_text.clone(),
                fill.tags.clone(),
                fill.meta.clone(),
                coalesce(chunks),
                Arc::clone(&fill.crowd),
            );
            self.storage.queue_for_disk(fill.key, &obj);
            self.storage.store(fill.key, obj);
        }
        self.storage.end_fill(&self.fill);
        self.fill.state.send_replace(FillState::Complete(count));
        Ok(MissFinishType::Created(self.len))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.storage
                .stats
                .aborted_fills
                .fetch_add(1, Ordering::Relaxed);
            self.storage.end_fill(&self.fill);
            self.fill.state.send_replace(FillState::Failed);
        }
    }
}
