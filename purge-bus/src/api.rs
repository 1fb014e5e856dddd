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
//!
//! With the embedded transport the API also serves the nodes (with `purge_bus.node_token`, or
//! to loopback peers when none is set):
//!
//! - `GET /v1/feed?from=N&wait_ms=W&epoch=E`: the log from offset `N` (a [`FeedPage`]),
//!   waiting up to `W` ms for a purge when there is none yet (not when `E`, the log the node
//!   followed so far, is not this one);
//! - `POST /v1/reports`: a JSON array of [`NodeReport`]s (applied purges, heartbeats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cascade_service::admin::PeerAddr;
use cascade_service::json::{auth_refusal, json_error as error, json_response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::{ApiTokens, BearerSecret, Scope};
use crate::membership::Membership;
use crate::rate::RateLimiter;
use crate::tracker::PurgeTracker;
use crate::transport::{EmbeddedLog, PurgeTransport};
use cascade_purge_follower::message::PurgeMessage;
use cascade_purge_follower::node::FeedPage;
use cascade_purge_follower::report::NodeReport;
use cascade_purge_follower::request::PurgeRequest;

/// Most reports one `POST /v1/reports` may carry.
pub const MAX_REPORTS: usize = 1000;

/// Longest a feed request may wait for a purge.
pub const MAX_FEED_WAIT: Duration = Duration::from_secs(25);

/// The embedded log served to nodes, and how nodes prove who they are.
pub struct NodeFeed {
    /// The log purges are published to.
    pub log: Arc<EmbeddedLog>,
    /// `purge_bus.node_token`; `None`: serve loopback peers only.
    pub token: Option<BearerSecret>,
}

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The API's state.
pub struct PurgeApi {
    tokens: ApiTokens,
    limiter: Mutex<RateLimiter>,
    tracker: Mutex<PurgeTracker>,
    transport: Arc<dyn PurgeTransport>,
    members: Mutex<Membership>,
    feed: Option<NodeFeed>,
    next_id: AtomicU64,
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Full<Bytes>>>> {
    cascade_service::json::read_body(req, MAX_BODY).await
}

impl PurgeApi {
    /// An API over `transport` expecting every purge on the configured `nodes` and on every
    /// node heartbeating; `feed` serves the embedded log to nodes.
    pub fn new(
        tokens: ApiTokens,
        limiter: RateLimiter,
        transport: Arc<dyn PurgeTransport>,
        nodes: Vec<String>,
        feed: Option<NodeFeed>,
    ) -> Self {
        Self {
            tokens,
            limiter: Mutex::new(limiter),
            tracker: Mutex::new(PurgeTracker::default()),
            transport,
            members: Mutex::new(Membership::new(nodes)),
            feed,
            next_id: AtomicU64::new(1),
        }
    }

    /// Takes a node's report: an applied purge or a heartbeat.
    pub fn record_report(&self, report: &NodeReport) {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen(report.node(), Instant::now());
        let applied: Vec<(&str, u64)> = match report {
            NodeReport::Applied { id, applied_ms, .. } => vec![(id.as_str(), *applied_ms)],
            NodeReport::Heartbeat { recent, .. } => {
                recent.iter().map(|(id, at)| (id.as_str(), *at)).collect()
            }
        };
        let mut tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, applied_ms) in applied {
            let at = UNIX_EPOCH + Duration::from_millis(applied_ms);
            if tracker.applied(id, report.node(), at) {
                tracing::info!(purge = %id, "purge applied on every expected node");
            }
        }
    }

    /// Checks a node's request against the feed's token or loopback rule.
    fn refuse_node(
        &self,
        req: &Request<Incoming>,
    ) -> Result<&NodeFeed, Box<Response<Full<Bytes>>>> {
        let Some(feed) = &self.feed else {
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "this bus publishes to Kafka: nodes consume the purge topic, not /v1/feed",
            )));
        };
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        match &feed.token {
            Some(token) => {
                let header = req
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                token
                    .check(header, peer)
                    .map(|()| feed)
                    .map_err(|e| Box::new(auth_refusal(&e)))
            }
            None => {
                if peer.is_some_and(|ip| ip.is_loopback()) {
                    Ok(feed)
                } else {
                    Err(Box::new(error(
                        StatusCode::FORBIDDEN,
                        "nodes off this machine need purge_bus.node_token set on the bus",
                    )))
                }
            }
        }
    }

    async fn serve_feed(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let feed = match self.refuse_node(&req) {
            Ok(feed) => feed,
            Err(refusal) => return *refusal,
        };
        let mut from = 0usize;
        let mut wait = Duration::ZERO;
        for pair in req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "from" => match value.parse() {
                    Ok(n) => from = n,
                    Err(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("from: {value:?} is not an offset"),
                        );
                    }
                },
                "wait_ms" => match value.parse::<u64>() {
                    Ok(ms) => wait = Duration::from_millis(ms).min(MAX_FEED_WAIT),
                    Err(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("wait_ms: {value:?} is not a number of milliseconds"),
                        );
                    }
                },
                // A node that followed an earlier log (the bus restarted) must hear at once.
                "epoch" if value != feed.log.epoch() => wait = Duration::ZERO,
                "epoch" => {}
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown parameter {name:?}; use from, wait_ms and epoch"),
                    );
                }
            }
        }
        let read = feed.log.wait_from(from, wait).await;
        let page = FeedPage {
            epoch: feed.log.epoch().to_owned(),
            next: read.next,
            end: read.end,
            first: read.first,
            messages: read.messages,
        };
        json_response(StatusCode::OK, &json!(page))
    }

    async fn take_reports(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(refusal) = self.refuse_node(&req) {
            return *refusal;
        }
        let body = match read_body(req).await {
            Ok(body) => body,
            Err(refused) => return *refused,
        };
        let raw: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body: expected a JSON array of reports: {e}"),
                );
            }
        };
        if raw.len() > MAX_REPORTS {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} reports in one request; at most {MAX_REPORTS}",
                    raw.len()
                ),
            );
        }
        let mut reports = Vec::with_capacity(raw.len());
        for (i, value) in raw.into_iter().enumerate() {
            match NodeReport::from_value(value) {
                Ok(r) => reports.push(r),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("[{i}]: {e}")),
            }
        }
        for report in &reports {
            self.record_report(report);
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }

    /// Checks the token and its rate limit; `Some` is the refusal to send.
    fn refuse(&self, req: &Request<Incoming>, needs: Scope) -> Option<Response<Full<Bytes>>> {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let name = match self.tokens.authorise(header, needs, peer) {
            Ok(name) => name,
            Err(e) => return Some(auth_refusal(&e)),
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
            (Method::GET, "/v1/feed") => self.serve_feed(req).await,
            (Method::POST, "/v1/reports") => self.take_reports(req).await,
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
        let body = match read_body(req).await {
            Ok(body) => body,
            Err(refused) => return *refused,
        };
        let request: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        };
        if let Err(e) = request.validate() {
            return error(StatusCode::BAD_REQUEST, e);
        }
        let accepted_at = SystemTime::now();
        let issued_ms = accepted_at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let id = format!(
            "pg-{issued_ms:x}-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let message = PurgeMessage {
            id: id.clone(),
            request: request.clone(),
            issued_ms,
        };
        // Tracked before publishing: the first nodes may apply it before `publish` returns.
        let expected = self
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expected(Instant::now());
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accepted(id.clone(), request, expected.clone(), accepted_at);
        if let Err(e) = self.transport.publish(&message).await {
            self.tracker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget(&id);
            tracing::error!(purge = %id, error = %e, "could not publish a purge");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the purge was not accepted: the bus could not take it ({e}); retry"),
            );
        }
        tracing::info!(purge = %id, "purge accepted");
        json_response(
            StatusCode::ACCEPTED,
            &json!({ "id": id, "expected": expected }),
        )
    }
}
