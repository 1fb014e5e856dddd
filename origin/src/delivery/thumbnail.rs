//! Stream thumbnails (`/live/<id>/thumbnail.jpg`): the first frame of the newest complete
//! segment of the smallest video rendition, decoded by ffmpeg on demand and reused for a
//! few seconds, so a live stream's thumbnail is never older than that.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cascade_media::fmp4::TrackKind;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{Body, error, full, reply};
use crate::packaging::LiveMedia;

/// How long a thumbnail is reused.
pub const REFRESH: Duration = Duration::from_secs(5);
/// Longest ffmpeg may take for one thumbnail.
const DECODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Thumbnails of live streams.
pub struct Thumbnails {
    ffmpeg: String,
    cache: Mutex<HashMap<String, (Instant, Bytes)>>,
    /// One decode at a time: thumbnails must not compete with the transcoders for CPU.
    decoding: tokio::sync::Mutex<()>,
}

impl Thumbnails {
    /// Thumbnails decoded with `ffmpeg`.
    pub fn new(ffmpeg: &str) -> Self {
        Self {
            ffmpeg: ffmpeg.to_owned(),
            cache: Mutex::new(HashMap::new()),
            decoding: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, stream_id: &str) -> Option<Bytes> {
        let cache = self.cache.lock().ok()?;
        let (at, jpeg) = cache.get(stream_id)?;
        (at.elapsed() < REFRESH).then(|| jpeg.clone())
    }

    /// Answers a thumbnail request for `media`.
    pub async fn serve(&self, media: &Arc<LiveMedia>, key: &str) -> Response<Body> {
        match self.thumbnail(media).await {
            Ok(jpeg) => {
                let cache_control = format!("public, max-age={}", REFRESH.as_secs());
                reply(
                    StatusCode::OK,
                    "image/jpeg",
                    &cache_control,
                    key,
                    full(jpeg),
                )
            }
            Err(response) => *response,
        }
    }

    /// The cached thumbnail, or a fresh one (one decode at a time; a request that waited
    /// for another's decode takes its result).
    async fn thumbnail(&self, media: &LiveMedia) -> Result<Bytes, Box<Response<Body>>> {
        if let Some(jpeg) = self.cached(&media.stream_id) {
            return Ok(jpeg);
        }
        let _turn = self.decoding.lock().await;
        if let Some(jpeg) = self.cached(&media.stream_id) {
            return Ok(jpeg);
        }
        let Some(input) = newest_keyframe_segment(media) else {
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "",
                "no complete video segment yet",
            )));
        };
        match decode_first_frame(&self.ffmpeg, input).await {
            Ok(jpeg) => {
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(media.stream_id.clone(), (Instant::now(), jpeg.clone()));
                }
                Ok(jpeg)
            }
            Err(e) => {
                tracing::warn!(stream = %media.stream_id, error = %e, "thumbnail failed");
                Err(Box::new(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "",
                    "the thumbnail could not be made",
                )))
            }
        }
    }

    /// Forgets a stream's thumbnail.
    pub fn forget(&self, stream_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(stream_id);
        }
    }
}

/// Init + the newest complete segment of the smallest video rendition.
fn newest_keyframe_segment(media: &LiveMedia) -> Option<Bytes> {
    let state = media.lock()?;
    let rendition = state
        .renditions()
        .into_iter()
        .filter(|r| r.track.kind == TrackKind::Video)
        .min_by_key(|r| r.track.height)?;
    let segment = rendition
        .segments
        .iter()
        .rev()
        .find(|s| s.complete && s.independent() && s.parts.iter().all(|p| p.bytes.is_some()))?;
    let init = rendition.init(segment.init_id)?;
    let mut input = BytesMut::with_capacity(init.bytes.len() + segment.size as usize);
    input.extend_from_slice(&init.bytes);
    input.extend_from_slice(&segment.bytes()?);
    Some(input.freeze())
}

async fn decode_first_frame(ffmpeg: &str, input: Bytes) -> std::io::Result<Bytes> {
    let mut child = tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "mp4",
            "-i",
            "pipe:0",
            "-frames:v",
            "1",
            "-q:v",
            "5",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let run = async move {
        let feed = async move {
            // ffmpeg may stop reading once it has its frame; that is not an error.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let (_, read) = tokio::join!(feed, stdout.read_to_end(&mut out));
        read?;
        let status = child.wait().await?;
        if !status.success() || out.is_empty() {
            return Err(std::io::Error::other(format!(
                "ffmpeg exited with {status}"
            )));
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(DECODE_TIMEOUT, run)
        .await
        .map_err(|_| std::io::Error::other("ffmpeg took too long"))?
}
