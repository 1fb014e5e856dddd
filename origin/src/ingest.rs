//! RTMP ingest: `rtmp://<host>:1935/live/<stream_key>` as OBS and ffmpeg publish it, with the
//! protocol (handshake, chunking, publish) from `rml_rtmp`. Each connection is its own task:
//! garbage, a broken handshake or a publisher that stalls closes that connection only.
//!
//! A publish is checked with [`Live::authorise`]; media then goes to the stream's
//! [`Transcoder`] once the first H.264 keyframe arrives (anything that is not H.264 ends the
//! stream with an error event saying so).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_media::flv::{self, FlvTag, TagKind, VideoCodec};
use cascade_rtmp::PublisherSession;
use cascade_rtmp::limits::Bounds;
use cascade_service::limits::{AuthFailures, ConnectionCaps, ConnectionLimits};
use cascade_service::shutdown::ShutdownSignal;
use cascade_transcoder::supervisor::{TranscodeJob, Transcoder};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSessionEvent, ServerSessionResult, StreamMetadata};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::metrics::live_metrics;
use crate::streams::live::{IngestCounters, Live, PublishGrant, Refusal};

/// The RTMP application publishers must use.
pub const APP: &str = "live";
/// A connection that sends nothing for this long is closed (stalled mid-chunk, or idle).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// The handshake must be done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The publish must have begun this long after the connection opened, so a silent client
/// cannot hold a slot by trickling a byte now and then.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// A publisher that sends no H.264 keyframe within this is refused.
const FIRST_KEYFRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Tags held while waiting for the first keyframe.
const MAX_PENDING_TAGS: usize = 4096;
/// Open RTMP connections at most (publishers plus handshakes in progress), in all and from
/// one address.
const LIMITS: ConnectionLimits = ConnectionLimits {
    total: 1024,
    per_address: 16,
};

/// Accepts RTMP connections until shutdown.
pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: ShutdownSignal) {
    let caps = ConnectionCaps::new(LIMITS);
    let failures = Arc::new(AuthFailures::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => return,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match caps.try_open(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                tracing::warn!(%peer, %full, "RTMP connection refused");
                continue;
            }
        };
        if let Some(wait) = failures.blocked(peer.ip(), Instant::now()) {
            tracing::warn!(%peer, ?wait, "RTMP connection refused: too many wrong stream keys");
            continue;
        }
        let live = Arc::clone(&live);
        let failures = Arc::clone(&failures);
        tokio::spawn(async move {
            let why = Connection::run(socket, peer, live, failures).await;
            tracing::debug!(%peer, %why, "RTMP connection closed");
            drop(slot);
        });
    }
}

/// What a publishing connection is doing with its media.
struct Publishing {
    grant: PublishGrant,
    counters: Arc<IngestCounters>,
    transcoder: Option<Transcoder>,
    pending: Vec<FlvTag>,
    saw_audio: bool,
    since: Instant,
    window_start: Instant,
    window_bytes: u64,
}

struct Connection {
    peer: SocketAddr,
    live: Arc<Live>,
    failures: Arc<AuthFailures>,
    opened: Instant,
    writer: OwnedWriteHalf,
    rtmp: PublisherSession,
    metadata: Option<StreamMetadata>,
    publishing: Option<Publishing>,
}

/// Why the connection loop stopped.
enum Closed {
    /// The publisher closed, stalled or broke the protocol.
    Gone(String),
    /// The stream was stopped (API, error): the transcoder is killed, not drained.
    Kicked(String),
}

impl Connection {
    async fn run(
        socket: TcpStream,
        peer: SocketAddr,
        live: Arc<Live>,
        failures: Arc<AuthFailures>,
    ) -> String {
        let opened = Instant::now();
        let _ = socket.set_nodelay(true);
        let (mut reader, writer) = socket.into_split();
        let mut writer = writer;
        let leftover = match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(&mut reader, &mut writer),
        )
        .await
        {
            Ok(Ok(leftover)) => leftover,
            Ok(Err(why)) => return why,
            Err(_) => return "handshake timed out".into(),
        };
        let (rtmp, initial) = match PublisherSession::new(Bounds::default()) {
            Ok(session) => session,
            Err(e) => return format!("cannot start an RTMP session: {e}"),
        };
        let mut connection = Connection {
            peer,
            live,
            failures,
            opened,
            writer,
            rtmp,
            metadata: None,
            publishing: None,
        };
        let closed = match connection.apply(initial).await {
            Ok(()) => connection.serve(reader, leftover).await,
            Err(closed) => closed,
        };
        connection.close(closed).await
    }

    async fn serve(&mut self, mut reader: OwnedReadHalf, leftover: Vec<u8>) -> Closed {
        if !leftover.is_empty()
            && let Err(closed) = self.input(&leftover).await
        {
            return closed;
        }
        let mut buffer = vec![0u8; 64 * 1024];
        let (_never_kicked, idle_kick) = watch::channel(false);
        loop {
            let mut kicked = self
                .publishing
                .as_ref()
                .map_or_else(|| idle_kick.clone(), |p| p.grant.kicked.clone());
            let publish_by = (self.publishing.is_none()).then_some(self.opened + PUBLISH_DEADLINE);
            let read = tokio::select! {
                read = tokio::time::timeout(READ_TIMEOUT, reader.read(&mut buffer)) => read,
                _ = kicked.wait_for(|k| *k) => return Closed::Kicked("the stream was stopped".into()),
                () = sleep_until_some(publish_by) => {
                    return Closed::Gone(format!("no publish within {PUBLISH_DEADLINE:?} of connecting"));
                }
            };
            let n = match read {
                Ok(Ok(0)) => return Closed::Gone("the publisher closed the connection".into()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Closed::Gone(format!("read failed: {e}")),
                Err(_) => {
                    return Closed::Gone(format!("nothing received for {READ_TIMEOUT:?}"));
                }
            };
            if let Err(closed) = self.input(&buffer[..n]).await {
                return closed;
            }
        }
    }

    async fn input(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let results = self
            .rtmp
            .input(bytes)
            .map_err(|e| Closed::Gone(e.to_string()))?;
        self.apply(results).await
    }

    async fn apply(&mut self, results: Vec<ServerSessionResult>) -> Result<(), Closed> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => self.send(&packet.bytes).await?,
                ServerSessionResult::RaisedEvent(event) => self.on_event(event).await?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        match tokio::time::timeout(READ_TIMEOUT, self.writer.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Closed::Gone(format!("write failed: {e}"))),
            Err(_) => Err(Closed::Gone("the publisher stopped reading".into())),
        }
    }

    async fn on_event(&mut self, event: ServerSessionEvent) -> Result<(), Closed> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') == APP {
                    let results = self
                        .rtmp
                        .accept(request_id)
                        .map_err(|e| Closed::Gone(format!("RTMP connect failed: {e}")))?;
                    self.apply_boxed(results).await
                } else {
                    self.refuse(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        &format!("unknown application {app_name:?}; publish to rtmp://host/{APP}/<stream_key>"),
                    )
                    .await
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => self.publish(request_id, &stream_key).await,
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.metadata = Some(metadata);
                Ok(())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.media(TagKind::Audio, data, timestamp.value).await,
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.media(TagKind::Video, data, timestamp.value).await,
            ServerSessionEvent::PublishStreamFinished { .. } => {
                Err(Closed::Gone("the publisher finished publishing".into()))
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                self.refuse(
                    request_id,
                    "NetStream.Play.Failed",
                    "this origin takes RTMP publishers only; play over HLS or DASH",
                )
                .await
            }
            _ => Ok(()),
        }
    }

    fn apply_boxed(
        &mut self,
        results: Vec<ServerSessionResult>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Closed>> + Send + '_>> {
        Box::pin(self.apply(results))
    }

    async fn refuse(&mut self, request_id: u32, code: &str, why: &str) -> Result<(), Closed> {
        if let Ok(results) = self.rtmp.reject(request_id, code, why) {
            for result in results {
                if let ServerSessionResult::OutboundResponse(packet) = result {
                    let _ = self.send(&packet.bytes).await;
                }
            }
        }
        Err(Closed::Gone(format!("refused: {why}")))
    }

    async fn publish(&mut self, request_id: u32, stream_key: &str) -> Result<(), Closed> {
        if self.publishing.is_some() {
            return self
                .refuse(
                    request_id,
                    "NetStream.Publish.BadName",
                    "this connection is already publishing",
                )
                .await;
        }
        // OBS and others may append parameters to the key (`key?foo=bar`).
        let key = stream_key.split('?').next().unwrap_or_default();
        let (grant, counters) = match self.live.authorise(key, self.peer).await {
            Ok(granted) => granted,
            Err(refusal) => {
                if matches!(refusal, Refusal::UnknownKey) {
                    self.failures.record(self.peer.ip(), Instant::now());
                }
                return self
                    .refuse(
                        request_id,
                        "NetStream.Publish.BadName",
                        &refusal.to_string(),
                    )
                    .await;
            }
        };
        let now = Instant::now();
        self.publishing = Some(Publishing {
            grant,
            counters,
            transcoder: None,
            pending: Vec::new(),
            saw_audio: false,
            since: now,
            window_start: now,
            window_bytes: 0,
        });
        let results = self
            .rtmp
            .accept(request_id)
            .map_err(|e| Closed::Gone(format!("RTMP publish failed: {e}")))?;
        self.apply_boxed(results).await
    }

    async fn media(&mut self, kind: TagKind, data: Bytes, timestamp_ms: u32) -> Result<(), Closed> {
        let Some(publishing) = self.publishing.as_mut() else {
            return Ok(()); // media before publish: ignore
        };
        let len = data.len() as u64;
        publishing.counters.bytes.fetch_add(len, Ordering::Relaxed);
        live_metrics().ingest_bytes.inc_by(len);
        publishing.window_bytes += len;
        let window = publishing.window_start.elapsed();
        if window >= Duration::from_secs(2) {
            let bps = (publishing.window_bytes as f64 * 8.0 / window.as_secs_f64()) as u64;
            publishing.counters.bitrate.store(bps, Ordering::Relaxed);
            live_metrics()
                .ingest_bitrate
                .with_label_values(&[&publishing.grant.stream_id])
                .set(bps as f64);
            publishing.window_start = Instant::now();
            publishing.window_bytes = 0;
        }

        let tag = FlvTag {
            kind,
            timestamp_ms,
            data,
        };
        if let Some(transcoder) = &publishing.transcoder {
            return transcoder
                .send(tag)
                .await
                .map_err(|_| Closed::Kicked("the transcoder stopped".into()));
        }

        match kind {
            TagKind::Audio => publishing.saw_audio = true,
            TagKind::Video => match flv::video_info(&tag.data) {
                Some(info) if info.codec != VideoCodec::H264 => {
                    let id = match info.codec {
                        VideoCodec::Other(id) => id,
                        VideoCodec::H264 => 7,
                    };
                    return self
                        .unusable(format!(
                            "the video is {} (FLV codec id {id}); only H.264 is accepted",
                            flv::codec_name(id)
                        ))
                        .await;
                }
                Some(info) if info.keyframe && !info.sequence_header => {
                    publishing.pending.push(tag);
                    return self.start_transcoder().await;
                }
                _ => {}
            },
            TagKind::Script => {}
        }
        publishing.pending.push(tag);
        if publishing.pending.len() > MAX_PENDING_TAGS
            || publishing.since.elapsed() > FIRST_KEYFRAME_TIMEOUT
        {
            let why = if publishing.pending.iter().any(|t| t.kind == TagKind::Video) {
                format!("no H.264 keyframe arrived within {FIRST_KEYFRAME_TIMEOUT:?}")
            } else {
                format!(
                    "no video arrived within {FIRST_KEYFRAME_TIMEOUT:?}; audio-only streams are not supported"
                )
            };
            return self.unusable(why).await;
        }
        Ok(())
    }

    /// The stream's media cannot be used: it ends with an error event saying why.
    async fn unusable(&mut self, why: String) -> Result<(), Closed> {
        if let Some(publishing) = &self.publishing {
            self.live.fail(&publishing.grant.stream_id, &why).await;
        }
        Err(Closed::Kicked(why))
    }

    async fn start_transcoder(&mut self) -> Result<(), Closed> {
        let Some(publishing) = self.publishing.as_mut() else {
            return Ok(());
        };
        let metadata = self.metadata.as_ref();
        let has_audio =
            publishing.saw_audio || metadata.is_some_and(|m| m.audio_codec_id.is_some());
        let mut settings = publishing.grant.settings.ladder(self.live.preset());
        if let Some(height) = metadata.and_then(|m| m.video_height) {
            settings.fit_to_input(height);
        }
        self.live.packager().open(
            &publishing.grant.stream_id,
            publishing.grant.packaging.clone(),
        );
        let (status_tx, mut status_rx) = mpsc::unbounded_channel();
        let transcoder = Transcoder::start(
            TranscodeJob {
                stream_id: publishing.grant.stream_id.clone(),
                settings,
                has_audio,
                continues_stream: publishing.grant.continues,
            },
            self.live.transcoder_options().clone(),
            self.live.sink(),
            status_tx,
        );
        let live = Arc::clone(&self.live);
        let stream_id = publishing.grant.stream_id.clone();
        let session = publishing.grant.session;
        tokio::spawn(async move {
            while let Some(status) = status_rx.recv().await {
                live.transcoder_status(&stream_id, session, status).await;
            }
        });
        for tag in std::mem::take(&mut publishing.pending) {
            if transcoder.send(tag).await.is_err() {
                return Err(Closed::Kicked("the transcoder stopped".into()));
            }
        }
        publishing.transcoder = Some(transcoder);
        Ok(())
    }

    /// Ends the connection: the transcoder drains (publisher gone) or is killed (stopped),
    /// then the stream is told its publisher left.
    async fn close(mut self, closed: Closed) -> String {
        let _ = self.writer.shutdown().await;
        let (why, kicked) = match closed {
            Closed::Gone(why) => (why, false),
            Closed::Kicked(why) => (why, true),
        };
        if let Some(publishing) = self.publishing.take() {
            if let Some(transcoder) = publishing.transcoder {
                if kicked {
                    transcoder.stop().await;
                } else {
                    transcoder.finish().await;
                }
            }
            self.live
                .publisher_gone(&publishing.grant.stream_id, publishing.grant.session, &why)
                .await;
        }
        why
    }
}

/// Runs the server side of the RTMP handshake; returns bytes that followed it.
/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn handshake(
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
) -> Result<Vec<u8>, String> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buffer = [0u8; 4096];
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .map_err(|e| format!("read failed during the handshake: {e}"))?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        let (response, done) = match handshake.process_bytes(&buffer[..n]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => (response_bytes, None),
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => (response_bytes, Some(remaining_bytes)),
            Err(e) => return Err(format!("bad RTMP handshake: {e:?}")),
        };
        if !response.is_empty() {
            writer
                .write_all(&response)
                .await
                .map_err(|e| format!("write failed during the handshake: {e}"))?;
        }
        if let Some(remaining) = done {
            return Ok(remaining);
        }
    }
}
