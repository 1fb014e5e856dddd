//! The origin's delivery shell: LL-HLS playlists, DASH manifests, init segments, segments
//! and parts over HTTP, with the cache headers the shield and edges rely on. Blocking
//! playlist reloads and requests for the hinted part wait on the packager; an in-progress
//! segment is streamed chunked as its parts arrive.
//!
//! Submodules: the viewers' player page ([`player`]) and stream thumbnails ([`thumbnail`]).

pub mod player;
pub mod thumbnail;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::archive::Archive;
use crate::delivery::thumbnail::Thumbnails;
use crate::http::{Body, IMMUTABLE, VOD_PLAYLIST, error, full, media_type, reply, surrogate_key};
use crate::packaging::{LiveMedia, LivePackager};
use cascade_cmcd::cmsd::StaticData;
use cascade_cmcd::{ObjectType, StreamType, StreamingFormat};
use cascade_media::dash::{self, MpdOptions};
use cascade_media::hls::{self, BlockingState};
use cascade_media::packager::{Rendition, Segment, StreamPackager};
use cascade_media::route::{self, Asset, PlaylistQuery, Route, RouteError};
use cascade_service::clock::now_ms;

/// Serves `/live/...`, `/vod/...` and `/time`.
pub struct Delivery {
    packager: Arc<LivePackager>,
    archive: Arc<Archive>,
    thumbnails: Thumbnails,
}

/// A 404 for live media that does not exist yet but will: no tier may store it, or viewers
/// would be told it is missing after it appears.
fn not_yet(key: &str, message: String) -> Response<Body> {
    let mut response = error(StatusCode::NOT_FOUND, key, message);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn route_error(e: RouteError) -> Response<Body> {
    match e {
        RouteError::BadRequest(m) => error(StatusCode::BAD_REQUEST, "", m),
        RouteError::NotFound(m) => error(StatusCode::NOT_FOUND, "", m),
    }
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const MPD_TYPE: &str = "application/dash+xml";

impl Delivery {
    /// Delivery over the live packager and the archive.
    pub fn new(packager: Arc<LivePackager>, archive: Arc<Archive>, thumbnails: Thumbnails) -> Self {
        Self {
            packager,
            archive,
            thumbnails,
        }
    }

    /// Whether `path` is delivery's.
    pub fn owns(path: &str) -> bool {
        route::owns(path)
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        match *req.method() {
            Method::GET | Method::HEAD => {}
            Method::OPTIONS => return preflight(),
            _ => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "",
                    format!("{} is not allowed here; use GET or HEAD", req.method()),
                );
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
                return r;
            }
        }
        let route = match route::parse(req.uri().path()) {
            Ok(route) => route,
            Err(e) => return route_error(e),
        };
        match route {
            Route::Time => time(),
            Route::Live { stream, asset } => self.live(&stream, asset, req.uri().query()).await,
            Route::Vod { recording, asset } => self.archive.serve_vod(&recording, asset).await,
        }
    }

    async fn live(&self, stream: &str, asset: Asset, query: Option<&str>) -> Response<Body> {
        let key = surrogate_key("stream", stream, asset.rendition());
        // A malformed blocking-reload query is the client's error whether or not the stream
        // is live now, so it is read before the stream is looked up.
        let playlist_query = match asset {
            Asset::MediaPlaylist { .. } => match route::playlist_query(query) {
                Ok(q) => Some(q),
                Err(e) => return route_error(e),
            },
            _ => None,
        };
        let Some(media) = self.packager.get(stream) else {
            return error(
                StatusCode::NOT_FOUND,
                &key,
                format!("stream {stream} is not live"),
            );
        };
        match asset {
            Asset::Multivariant => {
                let Some(state) = media.lock() else {
                    return unavailable(&key);
                };
                if state.renditions().is_empty() {
                    return error(StatusCode::NOT_FOUND, &key, "no media yet");
                }
                let text = hls::multivariant_playlist(&state);
                with_cmsd(
                    reply(
                        StatusCode::OK,
                        PLAYLIST_TYPE,
                        &live_playlist_cache(&state),
                        &key,
                        full(text),
                    ),
                    &manifest_cmsd(StreamingFormat::Hls),
                )
            }
            Asset::Manifest => {
                let Some(state) = media.lock() else {
                    return unavailable(&key);
                };
                if state.renditions().is_empty() {
                    return error(StatusCode::NOT_FOUND, &key, "no media yet");
                }
                let options = MpdOptions {
                    now_ms: now_ms(),
                    utc_timing_url: "../../time".into(),
                    target_latency_ms: target_latency_ms(&state),
                };
                let text = dash::live_mpd(&state, &options);
                with_cmsd(
                    reply(
                        StatusCode::OK,
                        MPD_TYPE,
                        &live_playlist_cache(&state),
                        &key,
                        full(text),
                    ),
                    &manifest_cmsd(StreamingFormat::Dash),
                )
            }
            Asset::Thumbnail => self.thumbnails.serve(&media, &key).await,
            Asset::MediaPlaylist { rendition } => {
                let query = playlist_query.unwrap_or_default();
                self.media_playlist(&media, &rendition, query, &key).await
            }
            Asset::Init { rendition, id } => {
                let found = media.lock().and_then(|s| {
                    let r = s.rendition(&rendition)?;
                    Some((media_type(r), r.init(id)?.bytes.clone()))
                });
                match found {
                    Some((kind, bytes)) => with_cmsd(
                        reply(StatusCode::OK, kind, IMMUTABLE, &key, full(bytes)),
                        &StaticData {
                            object_type: Some(ObjectType::Init),
                            stream_type: Some(StreamType::Live),
                            ..StaticData::default()
                        },
                    ),
                    None => match self
                        .archive
                        .live_object(stream, &rendition, &asset_file(id))
                        .await
                    {
                        Some(bytes) => {
                            reply(StatusCode::OK, "video/mp4", IMMUTABLE, &key, full(bytes))
                        }
                        None => error(
                            StatusCode::NOT_FOUND,
                            &key,
                            format!("no init {id} for {rendition}"),
                        ),
                    },
                }
            }
            Asset::Part {
                rendition,
                msn,
                part,
            } => self.part(&media, &rendition, msn, part, &key).await,
            Asset::Segment { rendition, msn } => self.segment(&media, &rendition, msn, &key).await,
        }
    }

    async fn media_playlist(
        &self,
        media: &Arc<LiveMedia>,
        rendition: &str,
        query: PlaylistQuery,
        key: &str,
    ) -> Response<Body> {
        let target = match media.lock() {
            Some(state) => state
                .rendition(rendition)
                .map(|r| hls::target_duration(state.settings().segment_target, r)),
            None => return unavailable(key),
        };
        let Some(target) = target else {
            return error(
                StatusCode::NOT_FOUND,
                key,
                format!("no rendition {rendition}"),
            );
        };
        let blocking = query.msn.is_some();
        let mut waited = false;
        if let Some(msn) = query.msn {
            let decide = |s: &StreamPackager| {
                s.rendition(rendition).map_or(BlockingState::Ready, |r| {
                    hls::blocking_state(r, msn, query.part, s.ended())
                })
            };
            let state = media.lock().map(|s| decide(&s));
            match state {
                Some(BlockingState::TooFarAhead) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        key,
                        format!("_HLS_msn={msn} is more than two segments beyond the live edge"),
                    );
                }
                Some(BlockingState::Wait) => {
                    // Hold for up to three target durations, as the specification asks.
                    let wait = Duration::from_secs(3 * target.max(1));
                    if !media
                        .wait_for(wait, |s| decide(s) != BlockingState::Wait)
                        .await
                    {
                        let mut r = error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            key,
                            format!("msn {msn} part {:?} did not appear in time", query.part),
                        );
                        r.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        return r;
                    }
                    waited = true;
                }
                Some(BlockingState::Ready) => {}
                None => return unavailable(key),
            }
        }
        let Some(state) = media.lock() else {
            return unavailable(key);
        };
        let Some(r) = state.rendition(rendition) else {
            return error(
                StatusCode::NOT_FOUND,
                key,
                format!("no rendition {rendition}"),
            );
        };
        let text = hls::live_media_playlist(&state, r, query.skip);
        let cache = if state.ended() {
            VOD_PLAYLIST.to_owned()
        } else if blocking {
            // The answer for a given msn/part never changes.
            format!("public, max-age={}", 3 * target)
        } else {
            live_playlist_cache(&state)
        };
        drop(state);
        let response = with_cmsd(
            reply(StatusCode::OK, PLAYLIST_TYPE, &cache, key, full(text)),
            &manifest_cmsd(StreamingFormat::Hls),
        );
        if waited {
            media.observe_wake(rendition);
        }
        response
    }

    async fn part(
        &self,
        media: &Arc<LiveMedia>,
        rendition: &str,
        msn: u64,
        part: usize,
        key: &str,
    ) -> Response<Body> {
        let look = |s: &StreamPackager| -> PartLookup {
            let Some(r) = s.rendition(rendition) else {
                return PartLookup::Gone;
            };
            if let Some(segment) = r.segment(msn) {
                if let Some(p) = segment.parts.get(part) {
                    return match &p.bytes {
                        Some(bytes) => PartLookup::Ready(
                            media_type(r),
                            bytes.clone(),
                            Box::new(media_cmsd(r, segment, Some(part))),
                        ),
                        None => PartLookup::Gone,
                    };
                }
                if segment.complete {
                    return PartLookup::Gone;
                }
                return PartLookup::Pending;
            }
            let first = r.segments.front().map_or(r.next_msn(), |s| s.msn);
            if msn < first || s.ended() || r.ended {
                PartLookup::Gone
            } else if msn <= r.next_msn() + 1 {
                PartLookup::Pending
            } else {
                PartLookup::TooFar
            }
        };
        let mut waited = false;
        loop {
            let Some(found) = media.lock().map(|s| look(&s)) else {
                return unavailable(key);
            };
            match found {
                PartLookup::Ready(kind, bytes, cmsd) => {
                    let response = with_cmsd(
                        reply(StatusCode::OK, kind, IMMUTABLE, key, full(bytes)),
                        &cmsd,
                    );
                    if waited {
                        media.observe_wake(rendition);
                    }
                    return response;
                }
                PartLookup::Gone => {
                    return error(
                        StatusCode::NOT_FOUND,
                        key,
                        format!("part {msn}.{part} of {rendition} is not in the live window"),
                    );
                }
                PartLookup::TooFar => {
                    return not_yet(
                        key,
                        format!("part {msn}.{part} of {rendition} is too far beyond the live edge"),
                    );
                }
                PartLookup::Pending if waited => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        key,
                        format!("part {msn}.{part} of {rendition} did not appear in time"),
                    );
                }
                PartLookup::Pending => {
                    let wait = part_wait(media);
                    media
                        .wait_for(wait, |s| !matches!(look(s), PartLookup::Pending))
                        .await;
                    waited = true;
                }
            }
        }
    }

    async fn segment(
        &self,
        media: &Arc<LiveMedia>,
        rendition: &str,
        msn: u64,
        key: &str,
    ) -> Response<Body> {
        enum Found {
            Whole(&'static str, Bytes, Box<StaticData>),
            Growing(&'static str, Box<StaticData>),
            Archived,
            Missing,
            Future,
            Ahead,
        }
        let look = |s: &StreamPackager| -> Found {
            let Some(r) = s.rendition(rendition) else {
                return Found::Missing;
            };
            match r.segment(msn) {
                Some(segment) if segment.complete => match segment.bytes() {
                    Some(bytes) => {
                        Found::Whole(media_type(r), bytes, Box::new(media_cmsd(r, segment, None)))
                    }
                    None => Found::Archived,
                },
                Some(segment) if s.settings().low_latency => {
                    Found::Growing(media_type(r), Box::new(media_cmsd(r, segment, None)))
                }
                Some(_) => Found::Future,
                None if msn == r.next_msn() && s.settings().low_latency && !s.ended() => {
                    Found::Future
                }
                None if r.segments.front().is_some_and(|f| msn < f.msn) => Found::Archived,
                None if msn >= r.next_msn() && !s.ended() && !r.ended => Found::Ahead,
                None => Found::Missing,
            }
        };
        let mut found = match media.lock() {
            Some(s) => look(&s),
            None => return unavailable(key),
        };
        if matches!(found, Found::Future) && media.lock().is_some_and(|s| s.settings().low_latency)
        {
            // LL-DASH asks for a segment a part's time before it starts.
            let wait = part_wait(media);
            media
                .wait_for(wait, |s| !matches!(look(s), Found::Future))
                .await;
            found = match media.lock() {
                Some(s) => look(&s),
                None => return unavailable(key),
            };
        }
        match found {
            Found::Whole(kind, bytes, cmsd) => with_cmsd(
                reply(StatusCode::OK, kind, IMMUTABLE, key, full(bytes)),
                &cmsd,
            ),
            Found::Growing(kind, cmsd) => with_cmsd(
                reply(
                    StatusCode::OK,
                    kind,
                    IMMUTABLE,
                    key,
                    growing_segment(Arc::clone(media), rendition.to_owned(), msn),
                ),
                &cmsd,
            ),
            Found::Archived => match self
                .archive
                .live_object(&media.stream_id, rendition, &format!("{msn}.m4s"))
                .await
            {
                Some(bytes) => reply(StatusCode::OK, "video/mp4", IMMUTABLE, key, full(bytes)),
                None => error(
                    StatusCode::NOT_FOUND,
                    key,
                    format!("segment {msn} of {rendition} is not available"),
                ),
            },
            Found::Future => not_yet(
                key,
                format!("segment {msn} of {rendition} is not complete yet"),
            ),
            Found::Ahead => not_yet(
                key,
                format!("segment {msn} of {rendition} is beyond the live edge"),
            ),
            Found::Missing => error(
                StatusCode::NOT_FOUND,
                key,
                format!("no segment {msn} of {rendition}"),
            ),
        }
    }
}

enum PartLookup {
    Ready(&'static str, Bytes, Box<StaticData>),
    Pending,
    Gone,
    TooFar,
}

/// `CMSD-Static` of a live segment, or of one of its parts: type, duration, bitrate and
/// the wall-clock time of its first sample (from which edges compute viewers' latency).
fn media_cmsd(r: &Rendition, segment: &Segment, part: Option<usize>) -> StaticData {
    let ticks_before: u64 = part.map_or(0, |p| {
        segment.parts.iter().take(p).map(|p| p.duration).sum()
    });
    let duration = match part {
        Some(p) => segment.parts.get(p).map_or(0, |p| p.duration),
        None => segment.duration,
    };
    let audio = matches!(r.track.kind, cascade_media::fmp4::TrackKind::Audio);
    StaticData {
        object_type: Some(if audio {
            ObjectType::Audio
        } else {
            ObjectType::Video
        }),
        // Parts are LL-HLS's; whole segments serve HLS and DASH alike.
        format: part.map(|_| StreamingFormat::Hls),
        stream_type: Some(StreamType::Live),
        duration_ms: (duration > 0).then(|| (r.seconds(duration) * 1000.0).round() as u64),
        bitrate_kbps: (r.bandwidth > 0).then(|| u64::from(r.bandwidth / 1000)),
        object_time_ms: Some(
            segment.program_date_time_ms + (r.seconds(ticks_before) * 1000.0).round() as u64,
        ),
    }
}

/// `CMSD-Static` of a live playlist or MPD.
fn manifest_cmsd(format: StreamingFormat) -> StaticData {
    StaticData {
        object_type: Some(ObjectType::Manifest),
        format: Some(format),
        stream_type: Some(StreamType::Live),
        ..StaticData::default()
    }
}

/// The response with its `CMSD-Static` header.
fn with_cmsd(mut response: Response<Body>, data: &StaticData) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&data.header_value()) {
        response.headers_mut().insert("cmsd-static", value);
    }
    response
}

fn asset_file(init_id: u32) -> String {
    cascade_media::packager::init_file_name(init_id)
}

/// How long a request for a part that does not exist yet may wait: three part targets and
/// at least a second (a restarting transcoder needs longer, and then 503 tells the client).
fn part_wait(media: &LiveMedia) -> Duration {
    let target = media.lock().map_or(2.0, |s| s.settings().segment_target);
    Duration::from_secs_f64((target * 1.5).max(1.0))
}

/// Low-latency DASH target: four parts (1.36 s with the default 0.34 s parts), one more than
/// LL-HLS's `PART-HOLD-BACK`, as margin for a player that learns of each segment from a
/// manifest up to a second old; three segments without LL.
fn target_latency_ms(state: &StreamPackager) -> u64 {
    let s = state.settings();
    let seconds = if s.low_latency {
        4.0 * s.part_target
    } else {
        3.0 * s.segment_target
    };
    (seconds * 1000.0) as u64
}

/// `Cache-Control` of a live playlist or manifest: about half a segment (at least a second).
fn live_playlist_cache(state: &StreamPackager) -> String {
    if state.ended() {
        return VOD_PLAYLIST.to_owned();
    }
    let half = (state.settings().segment_target / 2.0).floor().max(1.0);
    format!("public, max-age={half}")
}

fn unavailable(key: &str) -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        key,
        "the packager is unavailable",
    )
}

fn time() -> Response<Body> {
    reply(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "no-store",
        "",
        full(hls::date_time(now_ms())),
    )
}

fn preflight() -> Response<Body> {
    let mut r = reply(
        StatusCode::NO_CONTENT,
        "text/plain",
        "public, max-age=86400",
        "",
        full(Bytes::new()),
    );
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range, Origin, Accept"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// The body of a segment still being produced: its parts as they arrive, then the end.
fn growing_segment(media: Arc<LiveMedia>, rendition: String, msn: u64) -> Body {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut changes = media.subscribe();
        loop {
            changes.mark_unchanged();
            let (parts, complete) = {
                let Some(state) = media.lock() else {
                    return;
                };
                let Some(segment) = state.rendition(&rendition).and_then(|r| r.segment(msn)) else {
                    return;
                };
                let parts: Vec<Bytes> = segment
                    .parts
                    .iter()
                    .skip(sent)
                    .filter_map(|p| p.bytes.clone())
                    .collect();
                (parts, segment.complete || state.ended())
            };
            for part in parts {
                if tx.send(Frame::data(part)).await.is_err() {
                    return;
                }
                sent += 1;
            }
            if complete {
                return;
            }
            let wait = tokio::time::timeout(Duration::from_secs(30), changes.changed()).await;
            if !matches!(wait, Ok(Ok(()))) {
                // The segment stopped growing: end the body short rather than hang.
                tx.abort(std::io::Error::other("the segment stopped growing"));
                return;
            }
        }
    });
    body.boxed()
}
