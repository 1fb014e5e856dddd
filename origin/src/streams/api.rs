//! The management API under `/api/v1/livestreams` (bearer tokens: `read` lists and gets,
//! `write` also creates, changes, starts, stops, rotates keys and deletes):
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/api/v1/livestreams` | create (201: id, stream key, ingest and playback URLs) |
//! | POST | `/api/v1/livestreams/:id/rotate_key` | new key; the old one stops working |
//! | GET | `/api/v1/livestreams?status=&user_id=&limit=&offset=` | list, newest first |
//! | GET | `/api/v1/livestreams/:id` | one stream, with its live ingest state |
//! | PATCH | `/api/v1/livestreams/:id` | change title, DVR, latency, settings |
//! | DELETE | `/api/v1/livestreams/:id?recordings=delete` | stop if live, then delete it and its recordings (409 while it has VOD recordings, unless `recordings=delete`) |
//! | POST | `/api/v1/livestreams/:id/start` | accept a publisher again after `ended` |
//! | POST | `/api/v1/livestreams/:id/stop` | disconnect the publisher, end the stream |
//! | GET | `/api/v1/livestreams/:id/events?limit=&offset=` | events, oldest first |
//! | GET | `/api/v1/livestreams/:id/analytics?from=&to=&interval=` | per-interval viewer figures and sessions |
//! | GET | `/api/v1/livestreams/:id/viewers` | viewers watching now |
//! | POST | `/api/v1/livestreams/:id/viewers/track` | a player's beacon (no token: untrusted statistics, like CMCD) |
//!
//! The stream key is in the answers to create and rotate only: the registry stores its digest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use cascade_service::admin::PeerAddr;
use cascade_service::auth::{ApiTokens, Scope};
use cascade_service::json::{auth_refusal, json_error, json_response, read_body};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::analytics::Analytics;
use crate::archive::{Archive, recording_json};
use crate::streams::event::{EventType, NewEvent};
use crate::streams::live::Live;
use crate::streams::model::{CreateStream, Status, StreamConfig, UpdateStream};
use crate::streams::registry::{EventRecord, ListFilter, RecordingRecord, StreamRecord};

/// Largest request body.
const MAX_BODY: usize = 64 * 1024;
/// Default and largest page sizes.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const PREFIX: &str = "/api/v1/livestreams";

/// Where the origin is reached, for the URLs the API hands out.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    /// `rtmp://host:port/live`.
    pub rtmp_base: String,
    /// `http://host:port`.
    pub http_base: String,
}

impl PublicUrls {
    fn ingest(&self, key: &str) -> String {
        format!("{}/{key}", self.rtmp_base)
    }

    fn hls(&self, id: &str) -> String {
        format!("{}/live/{id}/master.m3u8", self.http_base)
    }

    fn dash(&self, id: &str) -> String {
        format!("{}/live/{id}/manifest.mpd", self.http_base)
    }
}

/// The API's state.
pub struct StreamApi {
    tokens: ApiTokens,
    live: Arc<Live>,
    urls: PublicUrls,
    nvenc: Arc<AtomicBool>,
    archive: Arc<Archive>,
    analytics: Arc<Analytics>,
}

type HttpResponse = Response<Full<Bytes>>;

fn bad_request(field: Option<&str>, message: impl std::fmt::Display) -> HttpResponse {
    let mut body = json!({ "error": message.to_string() });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    json_response(StatusCode::BAD_REQUEST, &body)
}

fn not_found(id: &str) -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, format!("no live stream {id:?}"))
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "management API failure");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the stream registry is unavailable; retry shortly",
    )
}

fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<HttpResponse>> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        Box::new(bad_request(
            field.as_deref(),
            format!("invalid JSON body: {}", e.inner()),
        ))
    })
}

/// `30m`, `1h`, `1d`, `300s`: a whole number of minutes, in ms.
fn parse_interval(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let ms = n.checked_mul(match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    })?;
    (ms % 60_000 == 0).then_some(ms)
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

fn page(query: &str) -> Result<(u32, u32), Box<HttpResponse>> {
    let number = |name: &str, default: u32, max: u32| -> Result<u32, Box<HttpResponse>> {
        match query_param(query, name) {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(Box::new(bad_request(
                    Some(name),
                    format!("{v:?} is not a whole number from 0 to {max}"),
                ))),
            },
        }
    };
    let limit = number("limit", DEFAULT_LIMIT, MAX_LIMIT)?.max(1);
    let offset = number("offset", 0, u32::MAX)?;
    Ok((limit, offset))
}

impl StreamApi {
    /// The API over `live`.
    pub fn new(
        tokens: ApiTokens,
        live: Arc<Live>,
        urls: PublicUrls,
        nvenc: Arc<AtomicBool>,
        archive: Arc<Archive>,
        analytics: Arc<Analytics>,
    ) -> Self {
        Self {
            tokens,
            live,
            urls,
            nvenc,
            archive,
            analytics,
        }
    }

    fn stream_json(&self, stream: &StreamRecord) -> Value {
        let c = &stream.config;
        let hls = self.urls.hls(&stream.id);
        json!({
            "id": stream.id,
            "title": c.title,
            "description": c.description,
            "user_id": stream.user_id,
            "status": stream.status.as_str(),
            "master_playlist": hls,
            "playback": { "hls": hls, "dash": self.urls.dash(&stream.id) },
            "dvr_enabled": c.dvr_enabled,
            "dvr_window": c.dvr_window,
            "low_latency": c.low_latency,
            "settings": c.settings,
            "created_at": rfc3339(stream.created_at),
            "started_at": stream.started_at.map_or(Value::Null, rfc3339),
            "ended_at": stream.ended_at.map_or(Value::Null, rfc3339),
            "viewer_count": self.analytics.viewers(&stream.id).len(),
            "ingest": self.live.view(&stream.id),
            "renditions": self.live.renditions(&stream.id),
        })
    }

    /// The stream with its key and ingest URL: only in the answers to create and rotate, since
    /// the registry keeps nothing but the key's digest.
    fn with_key(&self, stream: &StreamRecord, key: &str) -> Value {
        let mut body = self.stream_json(stream);
        body["stream_key"] = json!(key);
        body["rtmp_ingest_url"] = json!(self.urls.ingest(key));
        body
    }

    fn event_json(event: &EventRecord) -> Value {
        json!({
            "id": event.id,
            "event_type": event.event_type,
            "severity": event.severity,
            "message": event.message,
            "details": event.details,
            "timestamp": rfc3339(event.at),
        })
    }

    fn refuse(&self, req: &Request<Incoming>, needs: Scope) -> Option<HttpResponse> {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let error = self.tokens.authorise(header, needs, peer).err()?;
        Some(auth_refusal(&error))
    }

    /// Whether `path` belongs to this API.
    pub fn owns(path: &str) -> bool {
        path == PREFIX || path.starts_with("/api/v1/livestreams/")
    }

    /// Answers one request under `/api/v1/livestreams`.
    pub async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let method = req.method().clone();
        let rest = path.strip_prefix(PREFIX).unwrap_or_default();
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if let ([id, "viewers", "track"], &Method::POST) = (segments.as_slice(), &method) {
            let id = (*id).to_owned();
            return match self.find(&id).await {
                Ok(_) => match read_body(req, Analytics::max_beacon_bytes()).await {
                    Ok(body) => self.analytics.track(&id, &body).await,
                    Err(response) => *response,
                },
                Err(response) => *response,
            };
        }
        let (allowed, needs): (&str, Scope) = match (segments.as_slice(), &method) {
            ([], &Method::GET)
            | ([_], &Method::GET)
            | ([_, "events" | "recordings" | "analytics" | "viewers"], &Method::GET)
            | ([_, "recordings", _], &Method::GET) => ("", Scope::Read),
            ([], &Method::POST)
            | ([_], &Method::PATCH | &Method::DELETE)
            | ([_, "recordings", _], &Method::DELETE)
            | ([_, "recordings", _, "convert"], &Method::POST)
            | ([_, "start" | "stop" | "rotate_key"], &Method::POST) => ("", Scope::Write),
            ([_, "recordings"], _) => ("GET", Scope::Read),
            ([_, "recordings", _], _) => ("GET, DELETE", Scope::Read),
            ([_, "recordings", _, "convert"], _) => ("POST", Scope::Read),
            ([], _) => ("GET, POST", Scope::Read),
            ([_], _) => ("GET, PATCH, DELETE", Scope::Read),
            ([_, "events" | "analytics" | "viewers"], _) => ("GET", Scope::Read),
            ([_, "viewers", "track"], _) => ("POST", Scope::Read),
            ([_, "start" | "stop" | "rotate_key"], _) => ("POST", Scope::Read),
            _ => {
                return json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
            }
        };
        if let Some(refused) = self.refuse(&req, needs) {
            return refused;
        }
        if !allowed.is_empty() {
            let mut response = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here; use {allowed}"),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allowed));
            return response;
        }
        let result = match (segments.as_slice(), method) {
            ([], Method::GET) => self.list(&query).await,
            ([], _) => match read_body(req, MAX_BODY).await {
                Ok(body) => self.create(&body).await,
                Err(response) => Err(response),
            },
            ([id], Method::GET) => self.get(id).await,
            ([id], Method::PATCH) => match read_body(req, MAX_BODY).await {
                Ok(body) => self.update(id, &body).await,
                Err(response) => Err(response),
            },
            ([id], _) => self.delete(id, &query).await,
            ([id, "events"], _) => self.events(id, &query).await,
            ([id, "analytics"], _) => self.analytics(id, &query).await,
            ([id, "viewers"], _) => self.viewers(id).await,
            ([id, "recordings"], _) => self.recordings(id).await,
            ([id, "recordings", rec], Method::GET) => self.recording(id, rec).await,
            ([id, "recordings", rec], _) => self.delete_recording(id, rec).await,
            ([id, "recordings", rec, _], _) => self.convert_recording(id, rec).await,
            ([id, "start"], _) => self.start(id).await,
            ([id, "stop"], _) => self.stop(id).await,
            ([id, _], _) => self.rotate_key(id).await,
            _ => Ok(json_error(StatusCode::NOT_FOUND, "no such endpoint")),
        };
        result.unwrap_or_else(|response| *response)
    }

    async fn find(&self, id: &str) -> Result<StreamRecord, Box<HttpResponse>> {
        match self.live.registry().get(id).await {
            Ok(Some(stream)) => Ok(stream),
            Ok(None) => Err(Box::new(not_found(id))),
            Err(e) => Err(Box::new(internal(e))),
        }
    }

    async fn create(&self, body: &[u8]) -> Result<HttpResponse, Box<HttpResponse>> {
        let request: CreateStream = parse_json(body)?;
        request
            .validate(self.nvenc.load(Ordering::Relaxed))
            .map_err(|e| Box::new(bad_request(Some(&e.field), &e)))?;
        let (stream, key) = self
            .live
            .registry()
            .create(&request.user_id, &StreamConfig::from(&request))
            .await
            .map_err(|e| Box::new(internal(e)))?;
        tracing::info!(stream = %stream.id, "live stream created");
        let mut response = json_response(StatusCode::CREATED, &self.with_key(&stream, &key));
        if let Ok(location) = HeaderValue::from_str(&format!("{PREFIX}/{}", stream.id)) {
            response
                .headers_mut()
                .insert(hyper::header::LOCATION, location);
        }
        Ok(response)
    }

    async fn list(&self, query: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let (limit, offset) = page(query)?;
        let status = match query_param(query, "status") {
            None | Some("") => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| {
                Box::new(bad_request(
                    Some("status"),
                    format!("{s:?} is not a status (idle, live, ended)"),
                ))
            })?),
        };
        let user_id = query_param(query, "user_id")
            .filter(|u| !u.is_empty())
            .map(percent_decode);
        let filter = ListFilter {
            status,
            user_id,
            limit,
            offset,
        };
        let (streams, total) = self
            .live
            .registry()
            .list(&filter)
            .await
            .map_err(|e| Box::new(internal(e)))?;
        let streams: Vec<Value> = streams.iter().map(|s| self.stream_json(s)).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "streams": streams, "limit": limit, "offset": offset, "total": total }),
        ))
    }

    async fn get(&self, id: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let stream = self.find(id).await?;
        let mut body = self.stream_json(&stream);
        body["peak_viewer_count"] = json!(self.analytics.peak_viewers(id).await);
        Ok(json_response(StatusCode::OK, &body))
    }

    async fn viewers(&self, id: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        self.find(id).await?;
        Ok(json_response(
            StatusCode::OK,
            &self.analytics.viewers_json(id),
        ))
    }

    async fn analytics(&self, id: &str, query: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        self.find(id).await?;
        let now = cascade_service::clock::now_ms_i64();
        let time = |name: &str, default: i64| -> Result<i64, Box<HttpResponse>> {
            match query_param(query, name) {
                None | Some("") => Ok(default),
                Some(v) => {
                    let text = cascade_keys::decode_query_value(v).unwrap_or_default();
                    chrono::DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.timestamp_millis())
                        .map_err(|e| {
                            Box::new(bad_request(
                                Some(name),
                                format!("{text:?} is not an RFC 3339 time: {e}"),
                            ))
                        })
                }
            }
        };
        let to = time("to", now)?;
        let from = time("from", to - 3_600_000)?;
        if from >= to {
            return Err(Box::new(bad_request(Some("from"), "must be before to")));
        }
        let interval = match query_param(query, "interval") {
            None | Some("") => 60_000,
            Some(v) => parse_interval(v).ok_or_else(|| {
                Box::new(bad_request(
                    Some("interval"),
                    format!("{v:?} is not a whole number of minutes such as 1m, 5m, 1h or 1d"),
                ))
            })?,
        };
        if (to - from) / interval > 10_000 {
            return Err(Box::new(bad_request(
                Some("interval"),
                "more than 10000 points: widen the interval or narrow from/to",
            )));
        }
        match self.analytics.series_json(id, from, to, interval).await {
            Ok(body) => Ok(json_response(StatusCode::OK, &body)),
            Err(e) => Err(Box::new(internal(e))),
        }
    }

    async fn update(&self, id: &str, body: &[u8]) -> Result<HttpResponse, Box<HttpResponse>> {
        let update: UpdateStream = parse_json(body)?;
        let mut stream = self.find(id).await?;
        update
            .apply(&mut stream.config, self.nvenc.load(Ordering::Relaxed))
            .map_err(|e| Box::new(bad_request(Some(&e.field), &e)))?;
        if !self
            .live
            .registry()
            .set_config(id, &stream.config)
            .await
            .map_err(|e| Box::new(internal(e)))?
        {
            return Err(Box::new(not_found(id)));
        }
        Ok(json_response(StatusCode::OK, &self.stream_json(&stream)))
    }

    async fn delete(&self, id: &str, query: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        self.find(id).await?;
        let take_vod = match query_param(query, "recordings") {
            None => false,
            Some("delete") => true,
            Some(other) => {
                return Err(Box::new(bad_request(
                    Some("recordings"),
                    format!("{other:?}: the only value is \"delete\""),
                )));
            }
        };
        let recordings = self
            .live
            .registry()
            .list_recordings(id)
            .await
            .map_err(|e| Box::new(internal(e)))?;
        let vod: Vec<&str> = recordings
            .iter()
            .filter(|r| r.status == "vod")
            .map(|r| r.id.as_str())
            .collect();
        if !vod.is_empty() && !take_vod {
            return Err(Box::new(json_error(
                StatusCode::CONFLICT,
                format!(
                    "the stream has recordings kept as VOD ({}); deleting the stream deletes \
                     them: delete them first, or send DELETE ?recordings=delete",
                    vod.join(", ")
                ),
            )));
        }
        self.live
            .end(
                id,
                NewEvent::new(EventType::StreamEnded, "the stream was deleted"),
            )
            .await;
        if !self
            .live
            .registry()
            .delete(id)
            .await
            .map_err(|e| Box::new(internal(e)))?
        {
            return Err(Box::new(not_found(id)));
        }
        self.live.forget(id);
        tracing::info!(stream = %id, recordings = recordings.len(), "live stream deleted; its recordings go to retention");
        // Its recordings are retention's now (a live one once finished): start at once.
        let archive = Arc::clone(&self.archive);
        tokio::spawn(async move { archive.enforce_retention().await });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    async fn recordings(&self, id: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        self.find(id).await?;
        let list = self
            .live
            .registry()
            .list_recordings(id)
            .await
            .map_err(|e| Box::new(internal(e)))?;
        let recordings: Vec<Value> = list
            .iter()
            .map(|r| recording_json(r, &self.urls.http_base))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "recordings": recordings, "total": recordings.len() }),
        ))
    }

    async fn find_recording(
        &self,
        id: &str,
        rec: &str,
    ) -> Result<RecordingRecord, Box<HttpResponse>> {
        self.find(id).await?;
        match self.live.registry().get_recording(rec).await {
            Ok(Some(r)) if r.stream_id == id => Ok(r),
            Ok(_) => Err(Box::new(json_error(
                StatusCode::NOT_FOUND,
                format!("stream {id} has no recording {rec}"),
            ))),
            Err(e) => Err(Box::new(internal(e))),
        }
    }

    fn recording_response(&self, r: &RecordingRecord) -> HttpResponse {
        json_response(StatusCode::OK, &recording_json(r, &self.urls.http_base))
    }

    /// The recording, unless it is still being recorded (409: `action` waits for the end).
    async fn finished_recording(
        &self,
        id: &str,
        rec: &str,
        action: &str,
    ) -> Result<RecordingRecord, Box<HttpResponse>> {
        let r = self.find_recording(id, rec).await?;
        if r.status == "recording" {
            return Err(Box::new(json_error(
                StatusCode::CONFLICT,
                format!("the recording is still live; {action} it after the stream ends"),
            )));
        }
        Ok(r)
    }

    async fn recording(&self, id: &str, rec: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let r = self.find_recording(id, rec).await?;
        Ok(self.recording_response(&r))
    }

    async fn convert_recording(
        &self,
        id: &str,
        rec: &str,
    ) -> Result<HttpResponse, Box<HttpResponse>> {
        let mut r = self.finished_recording(id, rec, "convert").await?;
        let converted = self
            .live
            .registry()
            .convert_recording(rec)
            .await
            .map_err(|e| Box::new(internal(e)))?;
        if !converted {
            return Err(Box::new(json_error(
                StatusCode::CONFLICT,
                "the recording's retention ended and it is being deleted; it cannot be converted",
            )));
        }
        r.status = "vod".into();
        r.expires_at = None;
        tracing::info!(stream = %id, recording = %rec, "recording converted to VOD");
        Ok(self.recording_response(&r))
    }

    async fn delete_recording(
        &self,
        id: &str,
        rec: &str,
    ) -> Result<HttpResponse, Box<HttpResponse>> {
        self.finished_recording(id, rec, "delete").await?;
        self.archive
            .delete(rec)
            .await
            .map_err(|e| Box::new(internal(e)))?;
        tracing::info!(stream = %id, recording = %rec, "recording deleted");
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    async fn start(&self, id: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let stream = self.find(id).await?;
        let message = match stream.status {
            Status::Live => "the stream is live",
            Status::Idle => "the stream is waiting for its publisher",
            Status::Ended => {
                self.live
                    .registry()
                    .set_status(id, Status::Idle)
                    .await
                    .map_err(|e| Box::new(internal(e)))?;
                "the stream accepts a publisher again"
            }
        };
        let stream = self.find(id).await?;
        let mut body = self.stream_json(&stream);
        body["message"] = json!(format!(
            "{message}; publish to {}",
            self.urls.ingest("<stream_key>")
        ));
        Ok(json_response(StatusCode::OK, &body))
    }

    async fn stop(&self, id: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let stream = self.find(id).await?;
        let message = if stream.status == Status::Ended {
            "the stream had already ended"
        } else {
            self.live
                .end(
                    id,
                    NewEvent::new(
                        EventType::StreamEnded,
                        "the stream was stopped through the API",
                    ),
                )
                .await;
            "the stream is stopped; its publisher was disconnected"
        };
        let stream = self.find(id).await?;
        let mut body = self.stream_json(&stream);
        body["message"] = json!(message);
        Ok(json_response(StatusCode::OK, &body))
    }

    async fn rotate_key(&self, id: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let (stream, key) = match self.live.registry().rotate_key(id).await {
            Ok(Some(rotated)) => rotated,
            Ok(None) => return Err(Box::new(not_found(id))),
            Err(e) => return Err(Box::new(internal(e))),
        };
        tracing::info!(stream = %id, "stream key rotated");
        Ok(json_response(StatusCode::OK, &self.with_key(&stream, &key)))
    }

    async fn events(&self, id: &str, query: &str) -> Result<HttpResponse, Box<HttpResponse>> {
        let (limit, offset) = page(query)?;
        self.find(id).await?;
        let events = self
            .live
            .registry()
            .events(id, limit, offset)
            .await
            .map_err(|e| Box::new(internal(e)))?;
        let events: Vec<Value> = events.iter().map(Self::event_json).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "events": events, "limit": limit, "offset": offset }),
        ))
    }
}

/// Decodes `%XX` escapes and `+` in a query value (invalid escapes are kept as they are).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page("").unwrap(), (20, 0));
        assert_eq!(page("limit=5&offset=10").unwrap(), (5, 10));
        assert!(page("limit=1000").is_err());
        assert!(page("offset=-1").is_err());
    }
}
