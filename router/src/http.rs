//! The viewer-facing HTTP side: every delivery URL is answered with a 302 to the chosen edge;
//! a multivariant playlist or MPD is fetched from that edge and rewritten for content
//! steering; `/v1/steering` orders the pathways for one viewer; `/v1/route` shows a decision.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use cascade_service::admin::PeerAddr;
use cascade_service::json::{json_error, json_response};

use crate::choose::{Decision, DecisionReport, stream_key};
use crate::client::client_address;
use crate::fetch::EdgeClient;
use crate::state::Router;
use crate::steering::{self, Format, Pathway};

/// At most this many PoPs are offered as pathways in one playlist.
const MAX_PATHWAYS: usize = 8;

/// What the HTTP handler needs.
pub struct HttpRouter {
    /// Decisions.
    pub router: Arc<Router>,
    /// Fetches playlists from edges.
    pub edges: EdgeClient,
    /// Steering manifest lifetime, seconds.
    pub steering_ttl: u64,
    /// Whether the listener speaks HTTPS (for absolute URLs to itself).
    pub https: bool,
}

fn no_store(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_store(response)
}

fn header_values(req: &Request<Incoming>, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = req
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of query parameter `name`; `Err` names a malformed one.
fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, String> {
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            return cascade_keys::decode_query_value(value)
                .map(Some)
                .ok_or_else(|| format!("the {name} parameter is not valid percent-encoded UTF-8"));
        }
    }
    Ok(None)
}

/// Whether the router fetches `path` from the edge and answers it itself: multivariant
/// playlists and MPDs (rewritten for steering) and the player page (so that the page asks the
/// router for its playlist). Everything else is a redirect.
fn served_here(path: &str) -> bool {
    let player_page = path.contains("/player/") && !path.contains("/assets/");
    path.ends_with("/master.m3u8") || path.ends_with(".mpd") || player_page
}

/// Whether a `Host` value is safe to echo into URLs: host[:port], nothing else.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl HttpRouter {
    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let peer = req
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let client = client_address(
            peer,
            header_values(&req, header::FORWARDED).as_deref(),
            header_values(&req, header::HeaderName::from_static("x-forwarded-for")).as_deref(),
            self.router.trusted_proxies(),
        );
        let path = req.uri().path().to_owned();
        if path == "/v1" || path.starts_with("/v1/") {
            return self.api(&req, &path, client);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not served here: viewers GET or HEAD a delivery URL",
                    req.method()
                ),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        self.deliver(&req, &path, client).await
    }

    fn api(&self, req: &Request<Incoming>, path: &str, client: IpAddr) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} answers GET only"),
            );
        }
        let query = req.uri().query();
        match path {
            "/v1/route" => self.route_report(query, client),
            "/v1/steering" => self.steering(req, query, client),
            _ => json_error(
                StatusCode::NOT_FOUND,
                format!("{path} is not a router endpoint (try /v1/route?ip=&stream=)"),
            ),
        }
    }

    fn route_report(&self, query: Option<&str>, client: IpAddr) -> Response<Full<Bytes>> {
        let ip = match query_param(query, "ip") {
            Ok(Some(ip)) => match ip.trim().parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    self.router.metrics.bad_request("http");
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        format!("ip: {ip:?} is not an IP address"),
                    );
                }
            },
            Ok(None) => client,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        };
        let stream = match query_param(query, "stream") {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        };
        let key = stream_key(&stream);
        let (located, decision) = self.router.decide(ip, key);
        let topology = &self.router.topology;
        match decision {
            Ok(d) => {
                let pop = &topology.pops[d.pop];
                let reason = topology.explain(&located, &d, &self.router.status());
                let report = DecisionReport {
                    client: ip,
                    stream: key,
                    located_by: located.source(),
                    pop: &pop.id,
                    edge: &pop.edges[d.edge].id,
                    url: &pop.edges[d.edge].url,
                    pathways: d
                        .pathways
                        .iter()
                        .map(|&p| topology.pops[p].id.as_str())
                        .collect(),
                    reason: &reason,
                };
                no_store(json_response(StatusCode::OK, &json!(report)))
            }
            Err(e) => no_store(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"client": ip, "stream": key, "located_by": located.source(), "error": e.to_string()}),
            )),
        }
    }

    fn steering(
        &self,
        req: &Request<Incoming>,
        query: Option<&str>,
        client: IpAddr,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (stream, format) = match (query_param(query, "stream"), query_param(query, "format")) {
            (Ok(Some(stream)), Ok(format)) => (stream, format),
            (Ok(None), _) => {
                return json_error(StatusCode::BAD_REQUEST, "the stream parameter is missing");
            }
            (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, e),
        };
        let format = match format.as_deref() {
            None | Some("hls") => Format::Hls,
            Some("dash") => Format::Dash,
            Some(other) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("format: {other:?} is neither hls nor dash"),
                );
            }
        };
        let key = stream_key(&stream);
        let (located, decision) = self.router.decide(client, key);
        let topology = &self.router.topology;
        let priority: Vec<&str> = match &decision {
            Ok(d) => {
                let status = self.router.status();
                let healthy = |p: usize| status.get(p).is_some_and(|e| e.iter().any(|e| e.up));
                d.pathways
                    .iter()
                    .copied()
                    .filter(|&p| healthy(p))
                    .map(|p| topology.pops[p].id.as_str())
                    .collect()
            }
            Err(_) => {
                self.router.metrics.no_route("steering");
                topology
                    .by_distance(&located)
                    .into_iter()
                    .map(|p| topology.pops[p].id.as_str())
                    .collect()
            }
        };
        if decision.is_ok() {
            self.router.metrics.decided(
                "steering",
                located.source(),
                started.elapsed().as_secs_f64(),
            );
        }
        let reload = self.steering_uri(req, key, format);
        let body = steering::manifest(format, &priority, self.steering_ttl, &reload);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        no_store(response)
    }

    /// Where players ask for steering: relative for HLS, absolute for DASH (dash.js resolves
    /// it against the MPD's BaseURL otherwise).
    fn steering_uri(&self, req: &Request<Incoming>, key: &str, format: Format) -> String {
        let relative = format!(
            "/v1/steering?stream={}{}",
            percent_encode(key),
            if format == Format::Dash {
                "&format=dash"
            } else {
                ""
            }
        );
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .filter(|h| plain_host(h));
        match (format, host) {
            (Format::Dash, Some(host)) => {
                format!(
                    "{}://{host}{relative}",
                    if self.https { "https" } else { "http" }
                )
            }
            _ => relative,
        }
    }

    async fn deliver(
        &self,
        req: &Request<Incoming>,
        path: &str,
        client: IpAddr,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let key = stream_key(path);
        let (located, decision) = self.router.decide(client, key);
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                self.router.metrics.no_route("redirect");
                let mut response = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{e}; try again shortly"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                return response;
            }
        };
        let edge = &self.router.topology.pops[decision.pop].edges[decision.edge];
        let path_and_query = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
        if served_here(path)
            && req.method() == Method::GET
            && let Some(response) = self
                .steered(req, path, path_and_query, key, &decision)
                .await
        {
            self.router.metrics.decided(
                "playlist",
                located.source(),
                started.elapsed().as_secs_f64(),
            );
            return response;
        }
        self.router.metrics.decided(
            "redirect",
            located.source(),
            started.elapsed().as_secs_f64(),
        );
        let location = format!("{}{path_and_query}", edge.url);
        let mut response = text(StatusCode::FOUND, format!("go to {location}"));
        match HeaderValue::from_str(&location) {
            Ok(value) => {
                response.headers_mut().insert(header::LOCATION, value);
                response
            }
            Err(_) => {
                self.router.metrics.bad_request("http");
                text(
                    StatusCode::BAD_REQUEST,
                    "the request target cannot be redirected",
                )
            }
        }
    }

    /// The playlist from the chosen edge, rewritten with a pathway per PoP (or the player
    /// page, as it is); `None` when the edge does not answer 200 (the viewer is then
    /// redirected and plays without steering).
    async fn steered(
        &self,
        req: &Request<Incoming>,
        path: &str,
        path_and_query: &str,
        key: &str,
        decision: &Decision,
    ) -> Option<Response<Full<Bytes>>> {
        let topology = &self.router.topology;
        let edge = &topology.pops[decision.pop].edges[decision.edge];
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let fetched = match self.edges.get(&edge.url, path_and_query, agent).await {
            Ok(f) if f.status == 200 => f,
            Ok(f) => {
                tracing::debug!(edge = %edge.id, status = f.status, path, "the edge refused the playlist: redirecting instead");
                return None;
            }
            Err(e) => {
                tracing::warn!(edge = %edge.id, error = %e, path, "cannot fetch the playlist: redirecting instead");
                return None;
            }
        };
        let text = std::str::from_utf8(&fetched.body).ok()?;
        let dir = steering::directory(path);
        let pathways: Vec<Pathway> = decision
            .pathways
            .iter()
            .take(MAX_PATHWAYS)
            .map(|&p| {
                let edge = if p == decision.pop {
                    edge
                } else {
                    self.router.pathway_edge(p, key)
                };
                Pathway {
                    id: topology.pops[p].id.clone(),
                    base: format!("{}{dir}", edge.url),
                }
            })
            .collect();
        let body = if path.ends_with(".mpd") {
            steering::rewrite_dash(text, &pathways, &self.steering_uri(req, key, Format::Dash))?
        } else if path.ends_with(".m3u8") {
            steering::rewrite_hls(text, &pathways, &self.steering_uri(req, key, Format::Hls))
        } else {
            // The player page: its relative URLs then ask the router for the playlist.
            text.to_owned()
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        if let Some(value) = fetched
            .content_type
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        if let Ok(value) =
            HeaderValue::from_str(&format!("{}/{}", topology.pops[decision.pop].id, edge.id))
        {
            response.headers_mut().insert("x-cascade-route", value);
        }
        Some(no_store(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_decode_or_say_why_not() {
        assert_eq!(
            query_param(Some("ip=192.0.2.1&stream=live%2Fa"), "stream"),
            Ok(Some("live/a".into()))
        );
        assert_eq!(query_param(Some("ip=192.0.2.1"), "stream"), Ok(None));
        assert_eq!(query_param(None, "ip"), Ok(None));
        assert!(query_param(Some("stream=%zz"), "stream").is_err());
        assert!(query_param(Some("stream=%ff"), "stream").is_err());
        assert!(query_param(Some("stream=%2"), "stream").is_err());
        assert_eq!(percent_encode("live/a b"), "live%2Fa%20b");
    }

    #[test]
    fn playlists_and_the_player_page_are_served_here_the_rest_redirected() {
        assert!(served_here("/live/a/master.m3u8"));
        assert!(served_here("/t/x/live/a/manifest.mpd"));
        assert!(served_here("/player/a"));
        assert!(!served_here("/player/assets/v1/player.js"));
        assert!(!served_here("/live/a/720p/playlist.m3u8"));
        assert!(!served_here("/live/a/720p/3.m4s"));
    }

    #[test]
    fn only_plain_hosts_are_echoed() {
        assert!(plain_host("router.example.com:8070"));
        assert!(plain_host("[::1]:8070"));
        assert!(!plain_host("evil.com/x"));
        assert!(!plain_host("a b"));
        assert!(!plain_host(""));
    }
}
