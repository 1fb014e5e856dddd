//! The caching proxy: pingora's `ProxyHttp` over the pure pieces of this crate. Per request it
//! refuses what it must (method 405, unknown host 421, bad token 403, malformed path 400),
//! turns the request into its [`RequestKey`], rewrites the upstream request to exactly what
//! the key names, lets pingora-cache look up, collapse and fill through
//! [`TieredStorage`], applies the [`TtlPolicy`] to responses, and picks the upstream by
//! consistent hashing with failover.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri};
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, NoCacheReason, RespCacheable,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use pingora_cache::ForcedFreshness;
use pingora_cache::HitHandler;
use pingora_proxy::FailToProxy;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics::{cmcd_metrics, proxy_metrics};
use crate::policy::key::{RequestKey, normalise_host};
use crate::policy::purge::{FETCHED_HEADER, format_fetched, parse_fetched, surrogate_tags};
use crate::policy::token::TokenKey;
use crate::policy::ttl::{ContentClass, Decision, Directives, TtlPolicy};
use crate::policy::upstream::Upstreams;
use crate::storage::{self, TieredStorage};
use cascade_analytics::Record;
use cascade_analytics::device::Device;
use cascade_analytics::record::MediaPath;
use cascade_analytics::session::session_id;
use cascade_analytics::transport::Collector;
use cascade_cmcd::cmsd;
use cascade_cmcd::{Cmcd, ObjectType};
use cascade_service::clock::now_ms_i64;

/// Longest request target accepted (414 beyond).
pub const MAX_URI_LEN: usize = 8 * 1024;

/// Most request header bytes accepted (431 beyond); players send a few hundred.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Most response header bytes accepted from an upstream (502 beyond): a media response has a
/// few hundred, and a cached header is kept and sent with every hit.
pub const MAX_UPSTREAM_HEADER_BYTES: usize = 64 * 1024;

/// Request headers forwarded upstream. Everything else is dropped: a header that is not part
/// of the cache key must not be able to change the body stored under it.
const FORWARDED_HEADERS: [HeaderName; 3] = [
    header::HOST,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// Size of a header block as sent (`name: value\r\n` per field).
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// One configured site.
#[derive(Debug)]
pub struct Site {
    /// Signed-URL key when the site requires tokens.
    pub token: Option<TokenKey>,
    /// Whether CORS headers are added.
    pub cors: bool,
}

/// Sites by host name.
#[derive(Debug, Default)]
pub struct Sites {
    by_host: HashMap<String, Arc<Site>>,
    /// Answers every host not listed (a shield, whose upstreams are fixed).
    any_host: Option<Arc<Site>>,
}

impl Sites {
    /// Every host, with one site's settings.
    pub fn any_host(site: Site) -> Self {
        Self {
            by_host: HashMap::new(),
            any_host: Some(Arc::new(site)),
        }
    }

    /// Adds `site` under each of `hosts` (normalised).
    pub fn insert(&mut self, hosts: &[String], site: Site) {
        let site = Arc::new(site);
        for host in hosts {
            let host = normalise_host(host).unwrap_or_else(|_| host.to_ascii_lowercase());
            self.by_host.insert(host, Arc::clone(&site));
        }
    }

    fn get(&self, host: &str) -> Option<&Arc<Site>> {
        self.by_host.get(host).or(self.any_host.as_ref())
    }
}

/// What the cache needs, shared by every tier.
#[derive(Clone)]
pub struct CacheCore {
    /// Object store.
    pub storage: &'static TieredStorage,
    /// Collapses concurrent misses of one key into one fetch.
    pub lock: &'static CacheKeyLockImpl,
    /// Freshness rules.
    pub ttl: TtlPolicy,
    /// Query parameters that are part of the key.
    pub keyed_query: Vec<String>,
    /// Largest cacheable object.
    pub max_object_size: usize,
    /// How long a request waits for a concurrent fetch of the same key.
    pub collapse_timeout: Duration,
}

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct UpstreamTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each read, including the wait for the response header.
    pub read: Duration,
}

/// Header carrying the shared secret that lets an edge fill from a shield.
pub const FILL_SECRET_HEADER: &str = "x-cascade-fill-secret";

/// The origin's CTA-5006 static data, stored with the object.
const CMSD_STATIC: &str = "cmsd-static";
/// Each tier's CTA-5006 dynamic data, per response.
const CMSD_DYNAMIC: &str = "cmsd-dynamic";

/// Header naming the tier that answered a server-wide `OPTIONS *` (the readiness probe).
pub const TIER_HEADER: &str = "x-cascade-tier";

/// The caching proxy of a tier (edge or shield), pingora's `ProxyHttp`. Clones share the
/// cache, the sites and the upstreams: the HTTP/3 listener runs a clone.
#[derive(Clone)]
pub struct CachingProxy {
    /// `edge` or `shield`.
    pub tier: &'static str,
    /// The cache.
    pub core: CacheCore,
    /// Served hosts.
    pub sites: Arc<Sites>,
    /// Where misses go.
    pub upstreams: Arc<Upstreams>,
    /// When misses go over TLS: the name each upstream's certificate must carry.
    pub upstream_tls: Option<Arc<HashMap<SocketAddr, String>>>,
    /// Upstream timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Requests in progress (for draining on shutdown).
    pub inflight: Arc<AtomicUsize>,
    /// `Alt-Svc` value advertised on HTTPS (H1/H2) responses when HTTP/3 is served.
    pub alt_svc: Option<HeaderValue>,
    /// This node's `Via` token, e.g. `1.1 cascade-edge`.
    pub via: HeaderValue,
    /// SHA-256 of the fill secret requests must carry, if any.
    pub required_fill_secret: Option<[u8; 32]>,
    /// Fill secret sent upstream, if any.
    pub sent_fill_secret: Option<HeaderValue>,
    /// A request's `Cache-Control: no-cache` makes a cached copy revalidate.
    pub honour_request_no_cache: bool,
    /// Connect errors, timeouts and 5xx answers move an idempotent request to the next upstream.
    pub failover_on_error: bool,
    /// Seconds an idle keep-alive connection is kept (`clients.keepalive_timeout`).
    pub keepalive_secs: u64,
    /// This node's id, in `CMSD-Dynamic` and analytics records.
    pub node_id: Arc<str>,
    /// Read players' CMCD (for metrics and records): viewer-facing tiers with analytics on.
    pub read_cmcd: bool,
    /// Where viewer analytics records go, if anywhere (edges only).
    pub analytics: Option<Arc<Collector>>,
}

/// Decrements the in-flight count when the request's context is dropped.
pub struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's delivery rate and round-trip time, as the kernel estimates them (TCP_INFO).
#[derive(Debug, Clone, Copy)]
struct TcpEstimate {
    throughput_kbps: u64,
    rtt_ms: u64,
}

/// How long a connection's [`TcpEstimate`] is reused. One `getsockopt` per response was about
/// 3 % of a small cache hit's cost, and the kernel's estimates move over round trips.
const TCP_ESTIMATE_REUSE: Duration = Duration::from_millis(250);

/// Connections whose estimates one worker thread holds before it drops the old ones.
const TCP_ESTIMATES_HELD: usize = 4096;

/// Per connection (its socket digest, which lives as long as it does, and the peer): when the
/// estimate was read, and the estimate.
type HeldEstimates = HashMap<(usize, Option<SocketAddr>), (Instant, Option<TcpEstimate>)>;

thread_local! {
    static TCP_ESTIMATES: std::cell::RefCell<HeldEstimates> = std::cell::RefCell::new(HashMap::new());
}

/// The connection's [`TcpEstimate`], read from the kernel at most every
/// [`TCP_ESTIMATE_REUSE`].
fn tcp_estimate(socket: &Arc<pingora_core::protocols::SocketDigest>) -> Option<TcpEstimate> {
    let peer = socket.peer_addr().and_then(|a| a.as_inet()).copied();
    let key = (Arc::as_ptr(socket) as usize, peer);
    let now = Instant::now();
    TCP_ESTIMATES.with(|held| {
        let mut held = held.borrow_mut();
        if let Some((read, estimate)) = held.get(&key)
            && now.duration_since(*read) < TCP_ESTIMATE_REUSE
        {
            return *estimate;
        }
        let estimate = socket.tcp_info().map(|t| TcpEstimate {
            throughput_kbps: t.tcpi_delivery_rate * 8 / 1000,
            rtt_ms: u64::from(t.tcpi_rtt) / 1000,
        });
        if held.len() >= TCP_ESTIMATES_HELD {
            held.retain(|_, (read, _)| now.duration_since(*read) < TCP_ESTIMATE_REUSE);
        }
        held.insert(key, (now, estimate));
        estimate
    })
}

/// Numbers requests for their tracing spans (unique within the process).
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Per-request state.
pub struct RequestCtx {
    /// The request's tracing span (`cascade::request`): every event about the request is
    /// recorded in it, so one request's warnings and its access-log line share its id. It
    /// holds only what those events need to be tied together (the access line carries the
    /// rest): the id, the cache key (never the raw path, which may hold a viewer's token) and
    /// the upstream tried.
    span: tracing::Span,
    key: Option<RequestKey>,
    site: Option<Arc<Site>>,
    class: ContentClass,
    /// Upstreams this request has tried, in order.
    tried: Vec<SocketAddr>,
    upstream: Option<SocketAddr>,
    upstream_started: Option<Instant>,
    started: Instant,
    body_bytes: u64,
    /// What the player said about its playback (CMCD), if anything.
    cmcd: Option<Box<Cmcd>>,
    /// Until the response header was ready.
    ttfb: Option<Duration>,
    /// The object's first sample, from the origin's `CMSD-Static` (live media only).
    object_time_ms: Option<i64>,
    _inflight: InflightGuard,
}

impl CachingProxy {
    /// Puts this tier's `CMSD-Dynamic` entry in front of the upstream's. A stored response's
    /// entries describe the fill it came from, not this answer, so a hit carries ours alone.
    fn add_cmsd_dynamic(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        held: Duration,
    ) -> Result<()> {
        let tcp = session
            .digest()
            .and_then(|d| d.socket_digest.as_ref())
            .and_then(tcp_estimate);
        let fresh_from_upstream = matches!(
            session.cache.phase(),
            CachePhase::Miss | CachePhase::Expired | CachePhase::Disabled(_) | CachePhase::Uninit
        );
        let upstream = fresh_from_upstream
            .then(|| resp.headers.get(CMSD_DYNAMIC))
            .flatten()
            .and_then(|v| v.to_str().ok());
        let entry = cmsd::DynamicEntry {
            server: &self.node_id,
            estimated_throughput_kbps: tcp.map(|t| t.throughput_kbps).filter(|kbps| *kbps > 0),
            rtt_ms: tcp.map(|t| t.rtt_ms),
            response_delay_ms: Some(u64::try_from(held.as_millis()).unwrap_or(u64::MAX)),
        };
        let value = entry.prepend_to(upstream);
        resp.insert_header(CMSD_DYNAMIC, value)?;
        Ok(())
    }

    /// The analytics record of a finished request, for stream content only.
    fn analytics_record(
        &self,
        collector: &Collector,
        session: &Session,
        ctx: &RequestCtx,
        status: u16,
        cache: &str,
        protocol: &str,
    ) -> Option<Record> {
        let media = MediaPath::parse(ctx.key.as_ref()?.path())?;
        let req = session.req_header();
        let user_agent = req
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let cmcd = ctx.cmcd.as_deref();
        let mut record = Record {
            at_ms: now_ms_i64() - i64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(0),
            stream: media.stream.to_owned(),
            live: media.live,
            rendition: media.rendition.map(str::to_owned),
            object: media.object,
            status,
            bytes: ctx.body_bytes,
            cache: cache.to_owned(),
            ttfb_ms: ctx
                .ttfb
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            duration_ms: u32::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u32::MAX),
            protocol: protocol.to_owned(),
            edge: collector.edge().to_owned(),
            session: session_id(
                cmcd.and_then(|c| c.session_id.as_deref()),
                collector.salt(),
                Self::client_ip(session),
                user_agent,
            ),
            device: Device::from_user_agent(user_agent),
            location: collector.locate(Self::client_ip(session)),
            object_time_ms: ctx.object_time_ms,
            ..Record::default()
        };
        if let Some(cmcd) = cmcd {
            record.apply_cmcd(cmcd);
        }
        Some(record)
    }

    /// The upstream a retry of this request would go to, if any is left.
    fn next_upstream(&self, ctx: &RequestCtx) -> Option<SocketAddr> {
        let key = ctx.key.as_ref()?;
        self.upstreams.choose(key.primary().as_bytes(), &ctx.tried)
    }

    /// `h1`, `h2` or `h3` (the HTTP/3 listener's sessions are pingora "custom" sessions).
    fn protocol(session: &Session) -> &'static str {
        if session.as_downstream().is_custom() {
            "h3"
        } else if session.is_http2() {
            "h2"
        } else {
            "h1"
        }
    }

    /// Whether the client reached us over TLS on TCP (HTTPS H1/H2).
    fn https_over_tcp(session: &Session) -> bool {
        session.digest().is_some_and(|d| d.ssl_digest.is_some())
    }

    fn client_ip(session: &Session) -> Option<IpAddr> {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }

    /// Checks the request and computes its key; `Err` carries the local_response to send.
    fn admit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<RequestKey, LocalResponse> {
        let req = session.req_header();
        let method = &req.method;
        if method != Method::GET && method != Method::HEAD && method != Method::OPTIONS {
            return Err(LocalResponse::new(
                405,
                format!("{method} is not allowed; use GET or HEAD"),
            )
            .header(header::ALLOW, "GET, HEAD, OPTIONS"));
        }
        // Pingora stands `/` in for a target the URI parser refused (`live/a.m4s`), which
        // would key another object than the one asked for.
        let raw = req.raw_path();
        let asterisk = raw == b"*" && req.method == Method::OPTIONS;
        if req.uri.scheme().is_none() && !raw.is_empty() && !raw.starts_with(b"/") && !asterisk {
            return Err(LocalResponse::new(
                400,
                "the request target must be a path starting with / or an absolute URL".into(),
            ));
        }
        let target = match req.uri.path_and_query() {
            Some(pq) => pq.as_str(),
            // An absolute URL without a path names the root.
            None if req.uri.scheme().is_some() => "/",
            None => {
                return Err(LocalResponse::new(
                    400,
                    "the request target must be a path starting with / or an absolute URL".into(),
                ));
            }
        };
        if target.len() > MAX_URI_LEN {
            return Err(LocalResponse::new(
                414,
                format!("the request target is longer than {MAX_URI_LEN} bytes"),
            ));
        }
        if header_bytes(&req.headers) > MAX_HEADER_BYTES {
            return Err(LocalResponse::new(
                431,
                format!("the request headers exceed {MAX_HEADER_BYTES} bytes"),
            ));
        }
        if method == Method::OPTIONS && target == "*" {
            return Err(LocalResponse::new(204, String::new())
                .header(header::ALLOW, "GET, HEAD, OPTIONS")
                .header(HeaderName::from_static(TIER_HEADER), self.tier));
        }
        let raw_host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .ok_or_else(|| LocalResponse::new(400, "the request has no Host".into()))?;
        let host = normalise_host(raw_host).map_err(|e| LocalResponse::new(400, e.to_string()))?;
        let site =
            self.sites.get(&host).cloned().ok_or_else(|| {
                LocalResponse::new(421, format!("this edge does not serve {host}"))
            })?;
        ctx.site = Some(Arc::clone(&site));
        if let Some(expected) = &self.required_fill_secret {
            let presented = req
                .headers
                .get(FILL_SECRET_HEADER)
                .map(|v| Sha256::digest(v.as_bytes()));
            let valid = presented.is_some_and(|p| bool::from(p.as_slice().ct_eq(expected)));
            if !valid {
                return Err(LocalResponse::new(
                    403,
                    format!(
                        "this {} fills only edges that present the fill secret",
                        self.tier
                    ),
                ));
            }
        }
        if method == Method::OPTIONS {
            return Err(if site.cors {
                LocalResponse::new(204, String::new())
                    .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
                    .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")
                    .header(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        "Range, Origin, Accept",
                    )
                    .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
            } else {
                LocalResponse::new(405, "OPTIONS is not allowed on this site".into())
                    .header(header::ALLOW, "GET, HEAD")
            });
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let (token, path) = match &site.token {
            Some(_) => {
                let (token, rest) =
                    TokenKey::split(path).map_err(|e| LocalResponse::new(403, e.to_string()))?;
                (Some(token), rest)
            }
            None => (None, path),
        };
        // The target without its token (unchanged when the site has no tokens).
        let target = match (&token, query) {
            (None, _) => std::borrow::Cow::Borrowed(target),
            (Some(_), Some(q)) => std::borrow::Cow::Owned(format!("{path}?{q}")),
            (Some(_), None) => std::borrow::Cow::Borrowed(path),
        };
        let key = RequestKey::new(&host, &target, &self.core.keyed_query)
            .map_err(|e| LocalResponse::new(400, e.to_string()))?;
        if let (Some(token_key), Some(token)) = (&site.token, token) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            token_key
                .check(token, key.path(), now, Self::client_ip(session))
                .map_err(|e| LocalResponse::new(403, e.to_string()))?;
        }
        Ok(key)
    }
}

/// A response the proxy sends itself instead of proxying (refusals, CORS preflights).
struct LocalResponse {
    status: u16,
    message: String,
    headers: Vec<(HeaderName, &'static str)>,
}

impl LocalResponse {
    fn new(status: u16, message: String) -> Self {
        Self {
            status,
            message,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    async fn send(self, session: &mut Session) -> Result<()> {
        let body = if self.message.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(format!("{}\n", self.message))
        };
        let mut resp = ResponseHeader::build(self.status, Some(4))?;
        resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        for (name, value) in self.headers {
            resp.insert_header(name, value)?;
        }
        let head_only = session.req_header().method == Method::HEAD || body.is_empty();
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}

/// The `X-Cache` / metrics label for how a request was served.
pub fn cache_state(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "hit",
        CachePhase::Miss => "miss",
        CachePhase::Stale | CachePhase::StaleUpdating => "stale",
        CachePhase::Expired => "expired",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "revalidated",
        CachePhase::Disabled(_)
        | CachePhase::Bypass
        | CachePhase::Uninit
        | CachePhase::CacheKey => "pass",
    }
}

#[async_trait]
impl ProxyHttp for CachingProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        RequestCtx {
            span: tracing::Span::none(),
            key: None,
            site: None,
            class: ContentClass::Other,
            tried: Vec::new(),
            upstream: None,
            upstream_started: None,
            started: Instant::now(),
            body_bytes: 0,
            cmcd: None,
            ttfb: None,
            object_time_ms: None,
            _inflight: InflightGuard(Arc::clone(&self.inflight)),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Pingora has already turned keep-alive off for `Connection: close` and for shutdown.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.keepalive_secs));
        }
        ctx.span = tracing::info_span!(
            target: "cascade::request",
            "request",
            id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
            key = tracing::field::Empty,
            upstream = tracing::field::Empty,
        );
        // Read before the target is normalised: the cache key and the upstream never see it.
        if self.read_cmcd {
            let req = session.req_header();
            ctx.cmcd = cascade_cmcd::from_request(
                req.uri.query(),
                req.headers
                    .iter()
                    .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            )
            .map(Box::new);
        }
        match self.admit(session, ctx) {
            Ok(key) => {
                ctx.span.record("key", tracing::field::display(&key));
                let target: Uri = key.upstream_target().parse().map_err(|e| {
                    Error::because(
                        ErrorType::InvalidHTTPHeader,
                        "normalised target is not a URI",
                        e,
                    )
                })?;
                let req = session.req_header_mut();
                // HTTP/2 and HTTP/3 name the host in `:authority`, kept in the URI, which the
                // normalised target replaces: keep it as `Host` for the upstream request.
                if !req.headers.contains_key(header::HOST)
                    && let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned())
                {
                    req.insert_header(header::HOST, authority)?;
                }
                // Pingora builds a stale-while-revalidate refresh by re-reading this header as
                // HTTP/1.x text. An `HTTP/2` request line fails that parse, so the refresh never
                // ran and its cache lock held every later viewer of the object until it aged
                // out (10-26 s). Upstream requests are HTTP/1.1 anyway; the response still goes
                // out over the client's own HTTP/2 stream.
                if req.version == http::Version::HTTP_2 {
                    req.set_version(http::Version::HTTP_11);
                }
                req.set_uri(target);
                ctx.class = ContentClass::of(key.path(), key.query());
                ctx.key = Some(key);
                Ok(false)
            }
            Err(local_response) => {
                local_response.send(session).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.key.is_none() {
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.core.collapse_timeout);
        session.cache.enable(
            self.core.storage,
            None,
            None,
            Some(self.core.lock),
            Some(overrides),
        );
        session
            .cache
            .set_max_file_size_bytes(self.core.max_object_size);
        Ok(())
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        _meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        is_fresh: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        // Released collapse waiters arrive together: each sends its first bytes before the bulk.
        if session.cache.lock_duration().is_some() {
            storage::pace_for_crowd(hit_handler);
        }
        // An edge that applied a purge the shield has not yet seen asks with no-cache; the
        // shield must go back to the origin rather than hand over its own (purged) copy.
        let no_cache = self.honour_request_no_cache
            && is_fresh
            && session
                .req_header()
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| Directives::parse([v]).no_cache);
        Ok(no_cache.then_some(ForcedFreshness::ForceExpired))
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let key = ctx
            .key
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no cache key computed"))?;
        // The user tag is not hashed; it carries the readable key for purge indexes.
        Ok(CacheKey::new(key.primary(), key.to_string()))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        // A parent tier that has not applied a purge yet may hand back the purged copy: its
        // first-fetch stamp predates the purge, so it is passed on but not stored.
        let fetched = resp
            .headers
            .get(FETCHED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_fetched);
        if let (Some(fetched), Some(key)) = (fetched, ctx.key.as_ref()) {
            let tags = surrogate_tags(
                resp.headers
                    .get("surrogate-key")
                    .and_then(|v| v.to_str().ok()),
            );
            if self
                .core
                .storage
                .predates_purge(&key.to_string(), &tags, fetched)
            {
                tracing::warn!(parent: &ctx.span, key = %key, "upstream sent a copy older than a purge applied here; not storing it");
                return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                    "copy predates a purge applied here",
                )));
            }
        }
        if resp.headers.contains_key(header::SET_COOKIE) {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                "response sets a cookie",
            )));
        }
        let directives = Directives::parse(
            resp.headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let age = resp
            .headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        Ok(
            match self
                .core
                .ttl
                .decide(ctx.class, resp.status.as_u16(), &directives, age)
            {
                Decision::Uncacheable(why) => {
                    RespCacheable::Uncacheable(NoCacheReason::Custom(why))
                }
                Decision::Cacheable {
                    fresh,
                    stale_while_revalidate,
                    stale_if_error,
                } => {
                    let now = SystemTime::now();
                    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
                    RespCacheable::Cacheable(CacheMeta::new(
                        now + fresh,
                        now,
                        secs(stale_while_revalidate),
                        secs(stale_if_error),
                        resp.clone(),
                    ))
                }
            },
        )
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // No error: stale-while-revalidate (pingora checks the object's window). An upstream
        // error: stale-if-error (likewise bounded by the object's window).
        error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let key = ctx
            .key
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no cache key computed"))?;
        let addr = self
            .upstreams
            .choose(key.primary().as_bytes(), &ctx.tried)
            .ok_or_else(|| {
                Error::explain(ErrorType::ConnectNoRoute, "every upstream failed").into_up()
            })?;
        ctx.tried.push(addr);
        ctx.upstream = Some(addr);
        ctx.span.record("upstream", tracing::field::display(addr));
        ctx.upstream_started = Some(Instant::now());
        let mut peer = match self.upstream_tls.as_deref() {
            Some(names) => {
                let name = names
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| addr.ip().to_string());
                HttpPeer::new(addr, true, name)
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.read);
        peer.options.write_timeout = Some(self.timeouts.connect);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(addr) = peer._address.as_inet().copied()
            && self.upstreams.set_healthy(addr, false)
        {
            proxy_metrics().upstream_health_changes.inc();
            tracing::warn!(parent: &ctx.span, upstream = %addr, error = %e, "upstream unreachable; marked unhealthy");
        }
        // GET and HEAD are idempotent: try the next upstream in ring order.
        let key_bytes = ctx
            .key
            .as_ref()
            .map(RequestKey::primary)
            .unwrap_or_default();
        e.set_retry(
            self.upstreams
                .choose(key_bytes.as_bytes(), &ctx.tried)
                .is_some(),
        );
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("upstream {peer}"));
        let method = &session.req_header().method;
        let idempotent = method == Method::GET || method == Method::HEAD;
        if !idempotent {
            e.set_retry(false);
        } else if self.failover_on_error
            && e.esource() == &ErrorSource::Upstream
            && session.response_written().is_none()
            && self.next_upstream(ctx).is_some()
        {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, message) = failure_response(e);
        if code > 0 && session.response_written().is_none() {
            // Naming the tier tells an operator which hop failed (edge → shield → origin).
            let body = Bytes::from(format!("cascade-{}: {message}\n", self.tier));
            if let Err(write_error) = session.respond_error_with_body(code, body).await {
                tracing::debug!(parent: &ctx.span, error = %write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let drop: Vec<HeaderName> = upstream
            .headers
            .keys()
            .filter(|n| !FORWARDED_HEADERS.contains(n))
            .cloned()
            .collect();
        for name in drop {
            upstream.remove_header(&name);
        }
        if let Some(ip) = Self::client_ip(session) {
            upstream.insert_header("x-forwarded-for", ip.to_string())?;
        }
        let proto = if Self::https_over_tcp(session) || Self::protocol(session) == "h3" {
            "https"
        } else {
            "http"
        };
        upstream.insert_header("x-forwarded-proto", proto)?;
        upstream.insert_header(header::VIA, self.via.clone())?;
        if let Some(secret) = &self.sent_fill_secret {
            upstream.insert_header(FILL_SECRET_HEADER, secret.clone())?;
        }
        // After a purge, ask the parent to revalidate rather than hand back its own copy.
        if ctx
            .key
            .as_ref()
            .is_some_and(|k| self.core.storage.recently_purged(&k.to_string()).is_some())
        {
            upstream.insert_header(header::CACHE_CONTROL, "no-cache")?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let header_bytes = header_bytes(&resp.headers);
        if header_bytes > MAX_UPSTREAM_HEADER_BYTES {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                format!(
                    "upstream response headers are {header_bytes} bytes, over the {MAX_UPSTREAM_HEADER_BYTES} limit"
                ),
            )
            .into_up());
        }
        let status = resp.status.as_u16();
        if self.failover_on_error && status >= 500 && self.next_upstream(ctx).is_some() {
            // Nothing has reached the client or the cache yet: try the next upstream instead.
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                format!("upstream answered {status}"),
            )
            .into_up();
            e.set_retry(true);
            return Err(e);
        }
        // An unstamped response comes straight from the origin: this node is its first tier.
        if !resp.headers.contains_key(FETCHED_HEADER) {
            resp.insert_header(FETCHED_HEADER, format_fetched(SystemTime::now()))?;
        }
        if let Some(started) = ctx.upstream_started {
            proxy_metrics()
                .upstream_latency
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        resp.append_header(header::VIA, self.via.clone())?;
        resp.insert_header("x-cache", cache_state(session.cache.phase()))?;
        // CORS headers only matter to browsers, which send Origin on cross-origin requests.
        let cross_origin = session.req_header().headers.contains_key(header::ORIGIN);
        if cross_origin && ctx.site.as_ref().is_some_and(|s| s.cors) {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")?;
            resp.insert_header(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Content-Length, Content-Range, Age, Date, X-Cache",
            )?;
        }
        // Browsers take an h3 alternative only from an HTTPS origin.
        if let Some(alt_svc) = &self.alt_svc
            && Self::https_over_tcp(session)
        {
            resp.insert_header(header::ALT_SVC, alt_svc.clone())?;
        }
        let held = ctx.started.elapsed();
        ctx.ttfb = Some(held);
        if self.analytics.is_some() {
            ctx.object_time_ms = resp
                .headers
                .get(CMSD_STATIC)
                .and_then(|v| v.to_str().ok())
                .and_then(cmsd::object_time_ms);
        }
        self.add_cmsd_dynamic(session, resp, held)?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        // A HEAD is filled with a GET upstream; an answer that is passed through rather than
        // stored would otherwise carry its body to the client (an HTTP/2 protocol error).
        if session.req_header().method == Method::HEAD {
            *body = None;
            return Ok(None);
        }
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let cache = if ctx.key.is_some() {
            cache_state(session.cache.phase())
        } else {
            "refused"
        };
        let protocol = Self::protocol(session);
        let m = proxy_metrics();
        m.requests
            .with_label_values(&[status_label(status), cache, protocol])
            .inc();
        m.response_bytes.inc_by(ctx.body_bytes);
        if ctx.key.is_some() {
            m.record_lookup(matches!(cache, "hit" | "stale" | "revalidated"));
        }
        if session.cache.lock_duration().is_some() {
            m.collapsed.inc();
        }
        let cmcd = ctx.cmcd.as_deref();
        if let Some(cmcd) = cmcd {
            cmcd_metrics().record(cmcd);
        }
        if let Some(collector) = &self.analytics
            && let Some(record) =
                self.analytics_record(collector, session, ctx, status, cache, protocol)
        {
            collector.offer(record);
        }
        let req = session.req_header();
        tracing::info!(
            target: "cascade::access",
            parent: &ctx.span,
            client = %Self::client_ip(session).map(|ip| ip.to_string()).unwrap_or_default(),
            method = %req.method,
            key = %ctx.key.as_ref().map(ToString::to_string).unwrap_or_default(),
            status,
            cache,
            protocol,
            bytes = ctx.body_bytes,
            upstream = %ctx.upstream.map(|a| a.to_string()).unwrap_or_default(),
            ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            error = %error.map(|e| e.to_string()).unwrap_or_default(),
            session = cmcd.and_then(|c| c.session_id.as_deref()).unwrap_or_default(),
            buffer_ms = cmcd.and_then(|c| c.buffer_length_ms),
            throughput_kbps = cmcd.and_then(|c| c.measured_throughput_kbps),
            bitrate_kbps = cmcd.and_then(|c| c.bitrate_kbps),
            object = cmcd.and_then(|c| c.object_type).map(ObjectType::label).unwrap_or_default(),
            starved = cmcd.is_some_and(|c| c.buffer_starvation),
            startup = cmcd.is_some_and(|c| c.startup),
        );
    }
}

/// The status and message a client gets when a request fails: 504 when no upstream answered
/// (unreachable or too slow), 502 when one answered with something unusable, the upstream's
/// own 5xx when every upstream answered one, 400 for a request that could not be read.
/// Status 0 means the client is gone and nothing is sent.
pub fn failure_response(e: &Error) -> (u16, &'static str) {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => (*code, "every upstream answered with a server error"),
        (
            ErrorSource::Upstream,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
            | SocketError | BindError,
        ) => (504, "no upstream could be reached"),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => {
            (504, "the upstream did not answer in time")
        }
        (ErrorSource::Upstream, _) => (502, "the upstream sent an invalid or incomplete response"),
        (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed) => (0, ""),
        (ErrorSource::Downstream, _) => (400, "the request could not be read"),
        _ => (500, "internal error"),
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        206 => "206",
        304 => "304",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        416 => "416",
        421 => "421",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "none",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
