//! What sets one tier of the caching core apart from another. The edge and the shield run the
//! same proxy, storage and server; their config sections are turned into one [`TierSettings`]
//! here and nothing downstream asks which tier it is.
//!
//! - The **edge** faces viewers: it serves configured sites only (421 for other hosts), checks
//!   signed URLs, answers CORS, ignores viewers' `Cache-Control: no-cache` (a viewer must not be
//!   able to bust the cache), and spreads misses over shields by consistent hashing.
//! - The **shield** faces edges: any host (its origins are fixed, so it is not an open proxy),
//!   no tokens, optionally only requests carrying the shared fill secret, honours an edge's
//!   `no-cache` (sent after a purge), fails over from the primary origin to backups on connect
//!   errors, timeouts and 5xx, and adds a disk tier.

use std::net::SocketAddr;
use std::time::Duration;

use cascade_config::{
    CacheConfig, ClientConfig, DiskCacheConfig, EdgeAnalyticsConfig, EdgeConfig, Http3Config,
    ListenAddr, ListenerTlsConfig, PurgeFeedConfig, Secret, ShieldConfig, SiteConfig,
    UpstreamTlsConfig,
};

/// How a tier picks the upstream for a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPlan {
    /// Shields by consistent hashing on the cache key, then an optional origin as last resort.
    Hashed {
        /// `host:port` of each shield.
        shields: Vec<String>,
        /// `host:port` of the origin; empty for none.
        origin: String,
    },
    /// Origins in order of preference: the primary, then backups.
    Ordered {
        /// `host:port` of each origin.
        origins: Vec<String>,
    },
}

/// Which hosts a tier answers for.
#[derive(Debug, Clone, PartialEq)]
pub enum HostPolicy {
    /// Only the configured sites, each with its token and CORS settings.
    Sites(Vec<SiteConfig>),
    /// Any host: the upstreams are fixed, so no request can steer the tier elsewhere.
    Any,
}

/// Everything the shared server needs to run one tier.
#[derive(Debug, Clone)]
pub struct TierSettings {
    /// `edge` or `shield`: config section, `Via` token, labels.
    pub name: &'static str,
    /// The listener the tier above (or viewers over plain HTTP) reaches.
    pub listen: ListenAddr,
    /// The certificate `listen` presents, when it speaks HTTPS to the tier above.
    pub listen_tls: Option<ListenerTlsConfig>,
    /// The viewers' HTTPS listener, if the tier has one.
    pub tls_listen: Option<ListenAddr>,
    /// HTTP/3 on the UDP side of `tls_listen`, if served.
    pub http3: Option<Http3Config>,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: Duration,
    /// Proxy worker threads.
    pub threads: usize,
    /// The caching core's settings.
    pub cache: CacheConfig,
    /// Client connection timeouts.
    pub clients: ClientConfig,
    /// Disk tier, if any.
    pub disk: Option<DiskCacheConfig>,
    /// Upstream selection.
    pub upstreams: UpstreamPlan,
    /// HTTPS to the upstreams, when configured.
    pub upstream_tls: Option<UpstreamTlsConfig>,
    /// Hosts answered.
    pub hosts: HostPolicy,
    /// Requests must carry this fill secret.
    pub require_fill_secret: Option<Secret>,
    /// Fill secret sent upstream.
    pub send_fill_secret: Option<Secret>,
    /// Whether a request's `Cache-Control: no-cache` makes a cached copy revalidate.
    pub honour_request_no_cache: bool,
    /// Whether a connect error, timeout or 5xx answer moves a request on to the next upstream.
    pub failover_on_error: bool,
    /// Bearer token of the admin purge endpoint.
    pub admin_token: Secret,
    /// Socket for `--upgrade` hand-over; empty for the default.
    pub upgrade_socket: String,
    /// Following the purge bus.
    pub purge: PurgeFeedConfig,
    /// Viewer analytics records, for a viewer-facing tier.
    pub analytics: Option<EdgeAnalyticsConfig>,
}

fn non_empty(secret: &Secret) -> Option<Secret> {
    (!secret.is_empty()).then(|| secret.clone())
}

fn enabled(tls: &UpstreamTlsConfig) -> Option<UpstreamTlsConfig> {
    tls.enabled.then(|| tls.clone())
}

impl TierSettings {
    /// The edge, from `[edge]`.
    pub fn edge(edge: &EdgeConfig) -> Self {
        Self {
            name: "edge",
            listen: edge.listen,
            listen_tls: None,
            tls_listen: Some(edge.tls_listen),
            http3: edge.http3.enabled.then(|| edge.http3.clone()),
            admin_listen: edge.admin_listen,
            shutdown_grace: edge.shutdown_grace.0,
            threads: edge.threads,
            cache: edge.cache.clone(),
            clients: edge.clients.clone(),
            disk: None,
            upstreams: UpstreamPlan::Hashed {
                shields: edge.shields.clone(),
                origin: edge.origin.clone(),
            },
            upstream_tls: enabled(&edge.upstream_tls),
            hosts: HostPolicy::Sites(edge.sites.clone()),
            require_fill_secret: None,
            send_fill_secret: non_empty(&edge.fill_secret),
            honour_request_no_cache: false,
            failover_on_error: false,
            admin_token: edge.admin_token.clone(),
            upgrade_socket: edge.upgrade_socket.clone(),
            purge: edge.purge.clone(),
            analytics: Some(edge.analytics.clone()),
        }
    }

    /// The shield, from `[shield]`.
    pub fn shield(shield: &ShieldConfig) -> Self {
        Self {
            name: "shield",
            listen: shield.listen,
            listen_tls: shield.tls.is_enabled().then(|| shield.tls.clone()),
            tls_listen: None,
            http3: None,
            admin_listen: shield.admin_listen,
            shutdown_grace: shield.shutdown_grace.0,
            threads: shield.threads,
            cache: shield.cache.clone(),
            clients: shield.clients.clone(),
            disk: (!shield.disk.dir.is_empty()).then(|| shield.disk.clone()),
            upstreams: UpstreamPlan::Ordered {
                origins: shield.origins.clone(),
            },
            upstream_tls: enabled(&shield.upstream_tls),
            hosts: HostPolicy::Any,
            require_fill_secret: non_empty(&shield.fill_secret),
            send_fill_secret: None,
            honour_request_no_cache: true,
            failover_on_error: true,
            admin_token: shield.admin_token.clone(),
            upgrade_socket: shield.upgrade_socket.clone(),
            purge: shield.purge.clone(),
            analytics: None,
        }
    }

    /// Every traffic listener's address with its config field, for bind checks.
    pub fn traffic_listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut out = vec![(format!("{}.listen", self.name), self.listen.0)];
        if let Some(tls) = self.tls_listen {
            out.push((format!("{}.tls_listen", self.name), tls.0));
        }
        out
    }

    /// Every upstream's `host:port` as configured.
    pub fn upstream_names(&self) -> Vec<&str> {
        match &self.upstreams {
            UpstreamPlan::Hashed { shields, origin } => shields
                .iter()
                .chain(std::iter::once(origin))
                .filter(|s| !s.is_empty())
                .map(String::as_str)
                .collect(),
            UpstreamPlan::Ordered { origins } => origins.iter().map(String::as_str).collect(),
        }
    }

    /// How many upstreams a request may try in all.
    pub fn upstream_count(&self) -> usize {
        self.upstream_names().len()
    }
}
