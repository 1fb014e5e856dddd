//! The operators' HTTP API on `purge_bus.listen`:
//!
//! - `POST /v1/purge` (write scope): a [`PurgeRequest`] → 202 `{"id", "expected"}` once the
//!   transport has it; 400 naming the problem, 503 when the transport cannot take it.
//! - `GET /v1/purge/<id>` (read scope): expected nodes, who applied it and when, complete,
//!   latency.
//! - `GET /v1/purge?limit=N` (read scope): the newest purges.
//!
//! Every request needs a bearer token (401 without, 403 for too small a scope) and is counted
//! against that token's rate limit (429 with `Retry-After`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::{ApiTokens, AuthError, Scope};
use crate::rate::RateLimiter;
use crate::request::PurgeRequest;
use crate::tracker::PurgeTracker;
use crate::transport::{PurgeMessage, PurgeTransport};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The API's state.
pub struct PurgeApi {
    tokens: ApiTokens,
    limiter: Mutex<RateLimiter>,
    tracker: Mutex<PurgeTracker>,
    transport: Arc<dyn PurgeTransport>,
    nodes: Vec<String>,
    next_id: AtomicU64,
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PurgeApi {
    /// An API over `transport` expecting every purge on `nodes`.
    pub fn new(
        tokens: ApiTokens,
        limiter: RateLimiter,
        transport: Arc<dyn PurgeTransport>,
        nodes: Vec<String>,
    ) -> Self {
        Self {
            tokens,
            limiter: Mutex::new(limiter),
            tracker: Mutex::new(PurgeTracker::default()),
            transport,
            nodes,
            next_id: AtomicU64::new(1),
        }
    }

    /// The tracker, for the ack consumer.
    pub fn tracker(&self) -> &Mutex<PurgeTracker> {
        &self.tracker
    }

    /// Checks the token and its rate limit; `Some` is the refusal to send.
    fn refuse(&self, req: &Request<Incoming>, needs: Scope) -> Option<Response<Full<Bytes>>> {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let name = match self.tokens.authorise(header, needs) {
            Ok(name) => name,
            Err(e @ AuthError::Forbidden { .. }) => return Some(error(StatusCode::FORBIDDEN, e)),
            Err(e) => return Some(error(StatusCode::UNAUTHORIZED, e)),
        };
        let verdict = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(name, Instant::now());
        let wait = verdict.err()?;
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("token {name:?} is over its rate limit; retry in {secs}s"),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, hyper::header::HeaderValue::from(secs));
        Some(response)
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::POST, "/v1/purge") => {
                if let Some(refused) = self.refuse(&req, Scope::Write) {
                    return refused;
                }
                self.submit(req).await
            }
            (Method::GET, "/v1/purge") => {
                if let Some(refused) = self.refuse(&req, Scope::Read) {
                    return refused;
                }
                let limit = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(50)
                    .clamp(1, 1000);
                let tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
                json_response(StatusCode::OK, &json!({ "purges": tracker.recent(limit) }))
            }
            (Method::GET, p) if p.starts_with("/v1/purge/") => {
                if let Some(refused) = self.refuse(&req, Scope::Read) {
                    return refused;
                }
                let id = &p["/v1/purge/".len()..];
                let tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
                match tracker.get(id) {
                    Some(status) => json_response(StatusCode::OK, &json!(status)),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("no purge {id:?} (ids are remembered for the last 10000 purges)"),
                    ),
                }
            }
            (_, "/v1/purge") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST to purge or GET to list",
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint {path}; see POST /v1/purge"),
            ),
        }
    }

    async fn submit(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body could not be read or is over {MAX_BODY} bytes: {e}"),
                );
            }
        };
        let request: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        };
        if let Err(e) = request.validate() {
            return error(StatusCode::BAD_REQUEST, e);
        }
        let issued_ms = now_ms();
        let id = format!(
            "pg-{issued_ms:x}-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let message = PurgeMessage {
            id: id.clone(),
            request: request.clone(),
            issued_ms,
        };
        if let Err(e) = self.transport.publish(&message).await {
            tracing::error!(purge = %id, error = %e, "could not publish a purge");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the purge was not accepted: the bus could not take it ({e}); retry"),
            );
        }
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accepted(id.clone(), request, self.nodes.clone(), SystemTime::now());
        tracing::info!(purge = %id, "purge accepted");
        json_response(
            StatusCode::ACCEPTED,
            &json!({ "id": id, "expected": self.nodes }),
        )
    }
}
