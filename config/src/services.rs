//! `[origin]`, `[shield]`, `[edge]`, `[purge_bus]`: where each server listens and how it stops.
//! Later capabilities add their own fields to these sections.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analytics::{EdgeAnalyticsConfig, OriginAnalyticsConfig};
use crate::http3::Http3Config;
use crate::kafka::is_host_port;
use crate::tls::{ListenerTlsConfig, UpstreamTlsConfig};
use crate::validate::Problems;
use crate::values::{ByteSize, DatabaseUrl, HumanDuration, ListenAddr, Secret};

/// The longest graceful shutdown we accept: a stuck drain must not hold a deploy for ever.
pub const MAX_SHUTDOWN_GRACE: HumanDuration = HumanDuration::secs(600);

/// What the shared runtime needs from any server's section.
pub trait ServiceSection {
    /// Section name in the file, e.g. `edge`.
    const NAME: &'static str;
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`).
    fn admin_listen(&self) -> ListenAddr;
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    fn shutdown_grace(&self) -> HumanDuration;
    /// Every listener of the service with its field name, for clash checks and printing.
    fn listeners(&self) -> Vec<(&'static str, ListenAddr)>;
}

/// `[origin]`: ingest, packaging and delivery of live and on-demand streams.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Delivery (HLS, DASH) and the management API.
    pub listen: ListenAddr,
    /// HTTPS on `listen` (shields then set `shield.upstream_tls`); empty: plain HTTP.
    pub tls: ListenerTlsConfig,
    /// RTMP ingest.
    pub rtmp_listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
    /// Host name put in ingest and playback URLs; empty: the host of `listen`.
    pub public_host: String,
    /// Stream registry: `sqlite://path` (embedded, created if missing) or `postgres://...`.
    pub database_url: DatabaseUrl,
    /// Management API tokens (`read` lists and gets, `write` also changes); with none, the
    /// API refuses every request.
    pub tokens: Vec<ApiTokenConfig>,
    /// A publisher that reconnects with the same key within this time continues its stream.
    pub reconnect_grace: HumanDuration,
    /// Most streams live at once; further publishers are refused.
    pub max_live_streams: u32,
    /// How long a finished recording is kept before retention deletes it (recordings
    /// converted to VOD are kept until deleted).
    pub recording_retention: HumanDuration,
    /// Where the player page's hls.js and dash.js are installed (an npm `node_modules`; the
    /// project's `player/` install step puts them in `player/node_modules`). A relative path
    /// is taken from the working directory.
    pub player_dir: String,
    /// The transcoder.
    pub transcoder: TranscoderConfig,
    /// Viewer analytics: collection, aggregation, retention.
    pub analytics: OriginAnalyticsConfig,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8080),
            tls: ListenerTlsConfig::default(),
            rtmp_listen: ListenAddr::loopback(1935),
            admin_listen: ListenAddr::loopback(9080),
            shutdown_grace: HumanDuration::secs(10),
            public_host: String::new(),
            database_url: DatabaseUrl::new("sqlite://data/origin/registry.db"),
            tokens: Vec::new(),
            reconnect_grace: HumanDuration::secs(30),
            max_live_streams: 100,
            recording_retention: HumanDuration::secs(7 * 86_400),
            player_dir: "player/node_modules".into(),
            transcoder: TranscoderConfig::default(),
            analytics: OriginAnalyticsConfig::default(),
        }
    }
}

impl OriginConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        validate_service(self, p);
        validate_tokens("origin.tokens", &self.tokens, p);
        self.tls.validate("origin.tls", p);
        let url = self.database_url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            p.push(
                "origin.database_url",
                "must start with sqlite: (embedded) or postgres://",
            );
        }
        if self.max_live_streams == 0 {
            p.push("origin.max_live_streams", "must be at least 1");
        }
        if self.public_host.contains(['/', ' ', '@']) {
            p.push(
                "origin.public_host",
                "must be a bare host name or address (no scheme, path or spaces)",
            );
        }
        self.transcoder.validate(p);
        self.analytics.validate(p);
    }
}

/// `[origin.transcoder]`: the ffmpeg child each live stream gets.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscoderConfig {
    /// The ffmpeg binary (a path, or a name looked up in PATH).
    pub ffmpeg: String,
    /// Where the per-stream output FIFOs go; empty: the system temporary directory.
    pub work_dir: String,
    /// An ffmpeg that reports no progress for this long while input flows is restarted.
    pub stall_timeout: HumanDuration,
    /// First delay before restarting a failed ffmpeg; doubles up to `max_restart_delay`.
    pub restart_delay: HumanDuration,
    /// Longest delay between restarts.
    pub max_restart_delay: HumanDuration,
    /// Failures in a row without any output after which the stream ends with an error.
    pub max_failures: u32,
    /// x264 preset (`ultrafast` .. `veryslow`); faster presets use less CPU per stream.
    pub preset: String,
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        Self {
            ffmpeg: "ffmpeg".into(),
            work_dir: String::new(),
            stall_timeout: HumanDuration::secs(10),
            restart_delay: HumanDuration::millis(500),
            max_restart_delay: HumanDuration::secs(10),
            max_failures: 5,
            preset: "veryfast".into(),
        }
    }
}

impl TranscoderConfig {
    fn validate(&self, p: &mut Problems) {
        if self.ffmpeg.is_empty() {
            p.push("origin.transcoder.ffmpeg", "must name the ffmpeg binary");
        }
        for (field, d) in [
            ("stall_timeout", self.stall_timeout),
            ("restart_delay", self.restart_delay),
        ] {
            if d.0.is_zero() {
                p.push(
                    format!("origin.transcoder.{field}"),
                    "must be longer than 0s",
                );
            }
        }
        if self.max_restart_delay < self.restart_delay {
            p.push(
                "origin.transcoder.max_restart_delay",
                "must be at least origin.transcoder.restart_delay",
            );
        }
        if self.max_failures == 0 {
            p.push("origin.transcoder.max_failures", "must be at least 1");
        }
        const PRESETS: [&str; 9] = [
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
        ];
        if !PRESETS.contains(&self.preset.as_str()) {
            p.push(
                "origin.transcoder.preset",
                format!(
                    "{:?} is not an x264 preset ({})",
                    self.preset,
                    PRESETS.join(", ")
                ),
            );
        }
    }
}

/// `[edge.cache]` and `[shield.cache]`: the caching core both tiers share.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory cache size (bodies plus a small per-object overhead).
    pub capacity: ByteSize,
    /// Largest object that is cached; larger ones are passed through.
    pub max_object_size: ByteSize,
    /// Query parameters that are part of the cache key; all others are dropped.
    pub keyed_query: Vec<String>,
    /// Timeout for connecting to an upstream.
    pub upstream_connect_timeout: HumanDuration,
    /// Timeout for each read from an upstream; longer than an LL-HLS blocking request.
    pub upstream_read_timeout: HumanDuration,
    /// How long requests for an object being fetched wait for it before fetching themselves.
    pub collapse_timeout: HumanDuration,
    /// How often upstreams are probed.
    pub health_check_interval: HumanDuration,
    /// How long a stale copy is served while every upstream fails (unless the upstream said).
    pub stale_if_error: HumanDuration,
    /// The same for live playlists and MPDs: short, so players see the outage instead of
    /// freezing on a live edge that no longer moves.
    pub live_stale_if_error: HumanDuration,
    /// Longest a live playlist or MPD stays fresh here, whatever the upstream allows. A viewer
    /// who joins from a cached copy starts that much further behind the live edge (an LL-HLS
    /// player starts a fixed hold-back behind the newest part it is shown), and `max-age` can
    /// say no less than a second. A playlist the upstream keeps fresh for under a minute counts
    /// as live. The default, 60 s, caps nothing: with 250 ms, hls.js through the tiers
    /// sometimes never started (under investigation).
    pub live_playlist_fresh: HumanDuration,
}

impl CacheConfig {
    fn with_capacity(capacity: ByteSize) -> Self {
        Self {
            capacity,
            max_object_size: ByteSize(64 << 20),
            keyed_query: vec!["_HLS_msn".into(), "_HLS_part".into(), "_HLS_skip".into()],
            upstream_connect_timeout: HumanDuration::secs(2),
            upstream_read_timeout: HumanDuration::secs(30),
            collapse_timeout: HumanDuration::secs(30),
            health_check_interval: HumanDuration::secs(2),
            stale_if_error: HumanDuration::secs(300),
            live_stale_if_error: HumanDuration::secs(6),
            live_playlist_fresh: HumanDuration::secs(60),
        }
    }

    fn validate(&self, section: &str, p: &mut Problems) {
        if self.capacity.0 < 1 << 20 {
            p.push(
                format!("{section}.cache.capacity"),
                format!("{} is below the 1MiB minimum", self.capacity),
            );
        }
        if self.max_object_size.0 == 0 || self.max_object_size > self.capacity {
            p.push(
                format!("{section}.cache.max_object_size"),
                format!(
                    "{} must be above 0 and at most {section}.cache.capacity",
                    self.max_object_size
                ),
            );
        }
        for (field, d) in [
            ("upstream_connect_timeout", self.upstream_connect_timeout),
            ("upstream_read_timeout", self.upstream_read_timeout),
            ("collapse_timeout", self.collapse_timeout),
            ("health_check_interval", self.health_check_interval),
        ] {
            if d.0.is_zero() {
                p.push(format!("{section}.cache.{field}"), "must be longer than 0s");
            }
        }
        if self.live_playlist_fresh.0 > std::time::Duration::from_secs(60) {
            p.push(
                format!("{section}.cache.live_playlist_fresh"),
                format!("{} is longer than a minute", self.live_playlist_fresh),
            );
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self::with_capacity(ByteSize(512 << 20))
    }
}

/// `[edge.clients]` and `[shield.clients]`: how long a client connection may hold a proxy
/// worker without making progress.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// A request header must be complete this long after its first byte arrived (after the
    /// connection opened, for the first request); slower clients are disconnected.
    pub header_timeout: HumanDuration,
    /// A keep-alive connection with no new request for this long is closed (whole seconds).
    pub keepalive_timeout: HumanDuration,
    /// A TLS handshake must be complete this long after the connection was accepted (applies
    /// where the tier has a TLS listener: the edge's `tls_listen`).
    pub handshake_timeout: HumanDuration,
    /// A response write that makes no progress for this long (a client that stopped reading)
    /// closes the connection (HTTP/1.1 and HTTP/2; HTTP/3 has its own 30 s idle timeout).
    pub write_timeout: HumanDuration,
    /// Client connections open at once on the tier's listeners; more are refused.
    pub max_connections: usize,
    /// Client connections open at once from one address (an IPv4 address or an IPv6 /64):
    /// generous, since carrier NAT puts many viewers behind one address.
    pub max_connections_per_address: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            header_timeout: HumanDuration::secs(10),
            keepalive_timeout: HumanDuration::secs(60),
            handshake_timeout: HumanDuration::secs(10),
            write_timeout: HumanDuration::secs(30),
            max_connections: 100_000,
            max_connections_per_address: 1_000,
        }
    }
}

impl ClientConfig {
    fn validate(&self, section: &str, p: &mut Problems) {
        let hour = Duration::from_secs(3600);
        if self.header_timeout.0 < Duration::from_millis(100) || self.header_timeout.0 > hour {
            p.push(
                format!("{section}.clients.header_timeout"),
                format!("{} must be between 100ms and 1h", self.header_timeout),
            );
        }
        if self.handshake_timeout.0 < Duration::from_millis(100) || self.handshake_timeout.0 > hour
        {
            p.push(
                format!("{section}.clients.handshake_timeout"),
                format!("{} must be between 100ms and 1h", self.handshake_timeout),
            );
        }
        if self.keepalive_timeout.0 < Duration::from_secs(1) || self.keepalive_timeout.0 > hour {
            p.push(
                format!("{section}.clients.keepalive_timeout"),
                format!("{} must be between 1s and 1h", self.keepalive_timeout),
            );
        }
        if self.write_timeout.0 < Duration::from_secs(1) || self.write_timeout.0 > hour {
            p.push(
                format!("{section}.clients.write_timeout"),
                format!("{} must be between 1s and 1h", self.write_timeout),
            );
        }
        if self.max_connections == 0 {
            p.push(
                format!("{section}.clients.max_connections"),
                "must be at least 1".to_owned(),
            );
        }
        if self.max_connections_per_address == 0
            || self.max_connections_per_address > self.max_connections
        {
            p.push(
                format!("{section}.clients.max_connections_per_address"),
                format!(
                    "{} must be between 1 and max_connections ({})",
                    self.max_connections_per_address, self.max_connections
                ),
            );
        }
    }
}

/// `[shield.disk]`: the shield's disk tier.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskCacheConfig {
    /// Directory holding the disk tier; empty disables it.
    pub dir: String,
    /// Most bytes the disk tier keeps (least recently used objects go first).
    pub capacity: ByteSize,
}

impl Default for DiskCacheConfig {
    fn default() -> Self {
        Self {
            dir: "data/shield-cache".into(),
            capacity: ByteSize(10 << 30),
        }
    }
}

/// `[edge.purge]` / `[shield.purge]`: how a node follows the purge bus. With `[kafka]` brokers
/// configured the node consumes the purge topic; otherwise it follows the embedded bus at
/// `bus_url`, or no bus at all when that is empty.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PurgeFeedConfig {
    /// This node's id: its Kafka consumer group and the name its acks carry. Empty:
    /// `<tier>-<hostname>`.
    pub node_id: String,
    /// Embedded mode only: the purge bus's API (`http://host:port`); empty: follow no bus.
    pub bus_url: String,
    /// Embedded mode only: sent as the bearer token to the bus (its `purge_bus.node_token`).
    pub bus_token: Secret,
}

impl PurgeFeedConfig {
    fn validate(&self, section: &str, p: &mut Problems) {
        if !self
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || self.node_id.len() > 200
        {
            p.push(
                format!("{section}.purge.node_id"),
                format!(
                    "{:?} must be up to 200 letters, digits, '.', '_' or '-'",
                    self.node_id
                ),
            );
        }
        if !self.bus_url.is_empty()
            && !self
                .bus_url
                .strip_prefix("http://")
                .is_some_and(|rest| is_host_port(rest.trim_end_matches('/')))
        {
            p.push(
                format!("{section}.purge.bus_url"),
                format!(
                    "{:?} is not http://host:port (e.g. \"http://127.0.0.1:8090\")",
                    self.bus_url
                ),
            );
        }
    }

    /// The node id, `<tier>-<hostname>` when none is configured.
    pub fn node_id_or_default(&self, tier: &str) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        format!("{tier}-{}", hostname())
    }
}

/// This machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `[shield]`: the parent cache tier between edges and the origin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShieldConfig {
    /// HTTP listener that edges fill from.
    pub listen: ListenAddr,
    /// HTTPS on `listen` (edges then set `edge.upstream_tls`); empty: plain HTTP.
    pub tls: ListenerTlsConfig,
    /// Admin listener (also serves the authenticated purge endpoint).
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
    /// Worker threads for the proxy.
    pub threads: usize,
    /// Origins (`host:port`): the first is the primary, the rest are backups in order.
    pub origins: Vec<String>,
    /// HTTPS to the origins.
    pub upstream_tls: UpstreamTlsConfig,
    /// When set, only requests carrying it in `X-Cascade-Fill-Secret` are served (edges send
    /// their `edge.fill_secret`).
    pub fill_secret: Secret,
    /// Bearer token for the admin purge endpoint; empty disables the endpoint.
    pub admin_token: Secret,
    /// Memory tier and fill behaviour.
    pub cache: CacheConfig,
    /// Client connection timeouts.
    pub clients: ClientConfig,
    /// Disk tier.
    pub disk: DiskCacheConfig,
    /// Unix socket for `--upgrade` hand-over; empty: `<runtime dir>/shield-<listen port>.upgrade.sock` (see `cascade_service::runtime`).
    pub upgrade_socket: String,
    /// Following the purge bus.
    pub purge: PurgeFeedConfig,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8081),
            tls: ListenerTlsConfig::default(),
            admin_listen: ListenAddr::loopback(9081),
            shutdown_grace: HumanDuration::secs(10),
            threads: 2,
            origins: vec!["127.0.0.1:8080".into()],
            upstream_tls: UpstreamTlsConfig::default(),
            fill_secret: Secret::default(),
            admin_token: Secret::default(),
            cache: CacheConfig::with_capacity(ByteSize(1 << 30)),
            clients: ClientConfig::default(),
            disk: DiskCacheConfig::default(),
            upgrade_socket: String::new(),
            purge: PurgeFeedConfig::default(),
        }
    }
}

impl ShieldConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        validate_service(self, p);
        validate_threads("shield", self.threads, p);
        if self.origins.is_empty() {
            p.push(
                "shield.origins",
                "is empty: the shield needs at least one origin to fill from",
            );
        }
        validate_upstreams("shield.origins", &self.origins, p);
        self.tls.validate("shield.tls", p);
        self.upstream_tls.validate("shield.upstream_tls", p);
        if self.fill_secret.is_empty() && !self.listen.0.ip().is_loopback() {
            p.push(
                "shield.fill_secret",
                format!(
                    "is required when shield.listen ({}) is not a loopback address: without it, \
                     anyone who reaches the shield can make it fetch from the origin",
                    self.listen
                ),
            );
        }
        self.cache.validate("shield", p);
        self.clients.validate("shield", p);
        self.purge.validate("shield", p);
        if !self.disk.dir.is_empty() && self.disk.capacity.0 < 1 << 20 {
            p.push(
                "shield.disk.capacity",
                format!("{} is below the 1MiB minimum", self.disk.capacity),
            );
        }
    }
}

fn validate_threads(section: &str, threads: usize, p: &mut Problems) {
    if threads == 0 || threads > 1024 {
        p.push(
            format!("{section}.threads"),
            format!("{threads} is not between 1 and 1024"),
        );
    }
}

fn validate_upstreams(field: &str, upstreams: &[String], p: &mut Problems) {
    for (i, upstream) in upstreams.iter().enumerate() {
        if !is_host_port(upstream) {
            p.push(
                format!("{field}[{i}]"),
                format!("{upstream:?} is not host:port (e.g. \"10.0.0.5:8081\")"),
            );
        }
    }
}

/// `[edge]`: the viewer-facing cache.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Plain HTTP listener.
    pub listen: ListenAddr,
    /// HTTPS (TCP) and HTTP/3 (UDP) listener.
    pub tls_listen: ListenAddr,
    /// Admin listener (also serves the authenticated purge endpoint).
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
    /// Worker threads for the proxy.
    pub threads: usize,
    /// Shields to fill from (`host:port`), spread by consistent hashing on the cache key.
    pub shields: Vec<String>,
    /// Origin (`host:port`) to fill from when no shield is healthy; empty for none.
    pub origin: String,
    /// HTTPS to the shields (and to the origin, when the edge falls back to it).
    pub upstream_tls: UpstreamTlsConfig,
    /// Sent to shields in `X-Cascade-Fill-Secret` (their `shield.fill_secret`); empty: none.
    pub fill_secret: Secret,
    /// Memory cache and fill behaviour.
    pub cache: CacheConfig,
    /// Client connection timeouts.
    pub clients: ClientConfig,
    /// Bearer token for the admin purge endpoint; empty disables the endpoint.
    pub admin_token: Secret,
    /// Sites (host names) this edge serves; requests for any other host get 421.
    pub sites: Vec<SiteConfig>,
    /// Unix socket through which a new instance started with `--upgrade` receives this one's
    /// listening sockets; empty: `<runtime dir>/edge-<listen port>.upgrade.sock` (see `cascade_service::runtime`).
    pub upgrade_socket: String,
    /// Following the purge bus.
    pub purge: PurgeFeedConfig,
    /// HTTP/3 on the UDP side of `tls_listen`.
    pub http3: Http3Config,
    /// Viewer analytics records.
    pub analytics: EdgeAnalyticsConfig,
}

/// One `[[edge.sites]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// Host names of the site (no port).
    pub hosts: Vec<String>,
    /// Secret for signed URLs (`/t/<token>/...`); empty: no token needed.
    pub token_secret: Secret,
    /// Longest a signed URL may stay valid: a token expiring further ahead is refused, so a
    /// leaked signing mistake cannot hand out a URL that works for years.
    pub token_max_lifetime: HumanDuration,
    /// Answer CORS preflights and add `Access-Control-Allow-Origin: *` (players need it).
    pub cors: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            token_secret: Secret::default(),
            token_max_lifetime: HumanDuration::secs(86_400),
            cors: true,
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8000),
            tls_listen: ListenAddr::loopback(8443),
            admin_listen: ListenAddr::loopback(9000),
            shutdown_grace: HumanDuration::secs(10),
            threads: 2,
            shields: vec!["127.0.0.1:8081".into()],
            origin: String::new(),
            upstream_tls: UpstreamTlsConfig::default(),
            fill_secret: Secret::default(),
            cache: CacheConfig::default(),
            clients: ClientConfig::default(),
            admin_token: Secret::default(),
            sites: vec![SiteConfig {
                hosts: vec!["localhost".into(), "127.0.0.1".into()],
                ..SiteConfig::default()
            }],
            upgrade_socket: String::new(),
            purge: PurgeFeedConfig::default(),
            http3: Http3Config::default(),
            analytics: EdgeAnalyticsConfig::default(),
        }
    }
}

impl EdgeConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        validate_service(self, p);
        validate_threads("edge", self.threads, p);
        self.purge.validate("edge", p);
        self.http3.validate(p);
        self.analytics.validate(p);
        validate_upstreams("edge.shields", &self.shields, p);
        self.upstream_tls.validate("edge.upstream_tls", p);
        if !self.origin.is_empty() && !is_host_port(&self.origin) {
            p.push(
                "edge.origin",
                format!("{:?} is not host:port (or leave it empty)", self.origin),
            );
        }
        if self.shields.is_empty() && self.origin.is_empty() {
            p.push(
                "edge.shields",
                "is empty and edge.origin is empty: the edge needs an upstream to fill from",
            );
        }
        self.cache.validate("edge", p);
        self.clients.validate("edge", p);
        if self.tls_listen.0.port() == 0 {
            // Connections are told to be TLS by the port they arrived on.
            p.push(
                "edge.tls_listen",
                format!("{}: give the TLS listener a fixed port", self.tls_listen),
            );
        }
        if self.sites.is_empty() {
            p.push(
                "edge.sites",
                "is empty: configure at least one site, or the edge refuses every request",
            );
        }
        let mut seen: Vec<String> = Vec::new();
        for (i, site) in self.sites.iter().enumerate() {
            if site.hosts.is_empty() {
                p.push(
                    format!("edge.sites[{i}].hosts"),
                    "must list at least one host name",
                );
            }
            if site.token_max_lifetime.0.is_zero() {
                p.push(
                    format!("edge.sites[{i}].token_max_lifetime"),
                    "must be longer than 0s",
                );
            }
            for host in &site.hosts {
                let lower = host.to_ascii_lowercase();
                if lower.is_empty() || lower.contains(['/', ':', ' ']) {
                    p.push(
                        format!("edge.sites[{i}].hosts"),
                        format!("{host:?} is not a host name (no scheme, port or path)"),
                    );
                } else if seen.contains(&lower) {
                    p.push(
                        format!("edge.sites[{i}].hosts"),
                        format!("{host:?} is already listed by another site"),
                    );
                }
                seen.push(lower);
            }
        }
    }
}

/// What a purge-bus API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Read status and lists.
    Read,
    /// Change things (submit purges, manage streams) and read.
    Write,
}

/// One `[[purge_bus.tokens]]` or `[[origin.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Who holds it (logs, rate-limit key).
    pub name: String,
    /// The bearer token.
    pub token: Secret,
    /// What it may do.
    pub scope: TokenScope,
}

/// `[purge_bus]`: the operators' purge API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PurgeBusConfig {
    /// Purge API listener.
    pub listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
    /// API tokens; with none, the API refuses every request.
    pub tokens: Vec<ApiTokenConfig>,
    /// Requests a second each token may make on average.
    pub rate_limit_per_second: u32,
    /// Requests a token may make in a burst.
    pub rate_limit_burst: u32,
    /// Node ids expected to apply every purge (edges and shields), besides the nodes that
    /// report in by heartbeat.
    pub nodes: Vec<String>,
    /// Embedded mode: the bearer token nodes present to follow the bus (`GET /v1/feed`,
    /// `POST /v1/reports`). Empty: only nodes on loopback addresses are served.
    pub node_token: Secret,
    /// Embedded mode: where the purge log is kept, so a restart loses no accepted purge
    /// (relative paths are taken from the working directory at start). Empty: in memory only.
    pub log_dir: String,
    /// Embedded mode: most purges the log keeps; older ones are trimmed.
    pub log_max_entries: u32,
    /// Embedded mode: how long a purge stays in the log. A node that is away for longer
    /// misses the purges trimmed meanwhile (it logs a warning when it is back).
    pub log_retention: HumanDuration,
}

impl Default for PurgeBusConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8090),
            admin_listen: ListenAddr::loopback(9090),
            shutdown_grace: HumanDuration::secs(10),
            tokens: Vec::new(),
            rate_limit_per_second: 100,
            rate_limit_burst: 1000,
            nodes: Vec::new(),
            node_token: Secret::default(),
            log_dir: "data/purge-bus".into(),
            log_max_entries: 100_000,
            log_retention: HumanDuration::secs(7 * 86_400),
        }
    }
}

impl PurgeBusConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        validate_service(self, p);
        if self.rate_limit_per_second == 0 {
            p.push("purge_bus.rate_limit_per_second", "must be at least 1");
        }
        if self.rate_limit_burst == 0 {
            p.push("purge_bus.rate_limit_burst", "must be at least 1");
        }
        if !self.node_token.is_empty() && self.node_token.expose().len() < 16 {
            p.push(
                "purge_bus.node_token",
                "is shorter than 16 characters; use a long random string",
            );
        }
        validate_tokens("purge_bus.tokens", &self.tokens, p);
        if self.log_max_entries == 0 {
            p.push("purge_bus.log_max_entries", "must be at least 1");
        }
        if self.log_retention.0 < Duration::from_secs(60) {
            p.push(
                "purge_bus.log_retention",
                format!(
                    "{} is too short: nodes away for longer miss purges; use at least 1m, and \
                     more than the longest node outage",
                    self.log_retention
                ),
            );
        }
    }
}

fn validate_tokens(field: &str, tokens: &[ApiTokenConfig], p: &mut Problems) {
    for (i, token) in tokens.iter().enumerate() {
        if token.name.is_empty() {
            p.push(format!("{field}[{i}].name"), "must not be empty");
        }
        if token.token.expose().len() < 16 {
            p.push(
                format!("{field}[{i}].token"),
                "is shorter than 16 characters; use a long random string",
            );
        }
    }
}

macro_rules! service_section {
    ($ty:ty, $name:literal, [$($field:ident),*]) => {
        impl ServiceSection for $ty {
            const NAME: &'static str = $name;
            fn admin_listen(&self) -> ListenAddr {
                self.admin_listen
            }
            fn shutdown_grace(&self) -> HumanDuration {
                self.shutdown_grace
            }
            fn listeners(&self) -> Vec<(&'static str, ListenAddr)> {
                vec![$((stringify!($field), self.$field)),*]
            }
        }
    };
}

service_section!(OriginConfig, "origin", [listen, rtmp_listen, admin_listen]);
service_section!(ShieldConfig, "shield", [listen, admin_listen]);
service_section!(EdgeConfig, "edge", [listen, tls_listen, admin_listen]);
service_section!(PurgeBusConfig, "purge_bus", [listen, admin_listen]);

/// Checks that apply to every server section: distinct listeners, a sane grace period.
pub(crate) fn validate_service<S: ServiceSection>(section: &S, p: &mut Problems) {
    let listeners = section.listeners();
    for (i, (field, addr)) in listeners.iter().enumerate() {
        if let Some((earlier, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
            p.push(
                format!("{}.{field}", S::NAME),
                format!(
                    "{addr} is also {}.{earlier}; give each listener its own port",
                    S::NAME
                ),
            );
        }
    }
    if section.shutdown_grace() > MAX_SHUTDOWN_GRACE {
        p.push(
            format!("{}.shutdown_grace", S::NAME),
            format!(
                "{} is longer than the {MAX_SHUTDOWN_GRACE} maximum",
                section.shutdown_grace()
            ),
        );
    }
}
