//! `[origin]`, `[shield]`, `[edge]`, `[purge_bus]`: where each server listens and how it stops.
//! Later capabilities add their own fields to these sections.

use serde::{Deserialize, Serialize};

use crate::kafka::is_host_port;
use crate::validate::Problems;
use crate::values::{ByteSize, HumanDuration, ListenAddr, Secret};

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
    /// RTMP ingest.
    pub rtmp_listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8080),
            rtmp_listen: ListenAddr::loopback(1935),
            admin_listen: ListenAddr::loopback(9080),
            shutdown_grace: HumanDuration::secs(10),
        }
    }
}

/// `[shield]`: the parent cache tier between edges and the origin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShieldConfig {
    /// HTTP listener that edges fill from.
    pub listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8081),
            admin_listen: ListenAddr::loopback(9081),
            shutdown_grace: HumanDuration::secs(10),
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
    /// Memory cache size (bodies plus a small per-object overhead).
    pub cache_capacity: ByteSize,
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
    /// How often unhealthy shields are probed.
    pub health_check_interval: HumanDuration,
    /// Bearer token for the admin purge endpoint; empty disables the endpoint.
    pub admin_token: Secret,
    /// Sites (host names) this edge serves; requests for any other host get 421.
    pub sites: Vec<SiteConfig>,
    /// Unix socket through which a new instance started with `--upgrade` receives this one's
    /// listening sockets; empty: `/tmp/cascade-edge-<listen port>.upgrade.sock`.
    pub upgrade_socket: String,
}

/// One `[[edge.sites]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// Host names of the site (no port).
    pub hosts: Vec<String>,
    /// Secret for signed URLs (`/t/<token>/...`); empty: no token needed.
    pub token_secret: Secret,
    /// Answer CORS preflights and add `Access-Control-Allow-Origin: *` (players need it).
    pub cors: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            token_secret: Secret::default(),
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
            cache_capacity: ByteSize(512 << 20),
            max_object_size: ByteSize(64 << 20),
            keyed_query: vec!["_HLS_msn".into(), "_HLS_part".into(), "_HLS_skip".into()],
            upstream_connect_timeout: HumanDuration::secs(2),
            upstream_read_timeout: HumanDuration::secs(30),
            collapse_timeout: HumanDuration::secs(30),
            health_check_interval: HumanDuration::secs(2),
            admin_token: Secret::default(),
            sites: vec![SiteConfig {
                hosts: vec!["localhost".into(), "127.0.0.1".into()],
                ..SiteConfig::default()
            }],
            upgrade_socket: String::new(),
        }
    }
}

impl EdgeConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        validate_service(self, p);
        if self.threads == 0 || self.threads > 1024 {
            p.push(
                "edge.threads",
                format!("{} is not between 1 and 1024", self.threads),
            );
        }
        for (i, shield) in self.shields.iter().enumerate() {
            if !is_host_port(shield) {
                p.push(
                    format!("edge.shields[{i}]"),
                    format!("{shield:?} is not host:port (e.g. \"10.0.0.5:8081\")"),
                );
            }
        }
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
        if self.cache_capacity.0 < 1 << 20 {
            p.push(
                "edge.cache_capacity",
                format!("{} is below the 1MiB minimum", self.cache_capacity),
            );
        }
        if self.max_object_size.0 == 0 || self.max_object_size > self.cache_capacity {
            p.push(
                "edge.max_object_size",
                format!(
                    "{} must be above 0 and at most edge.cache_capacity",
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
                p.push(format!("edge.{field}"), "must be longer than 0s");
            }
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
}

impl Default for PurgeBusConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8090),
            admin_listen: ListenAddr::loopback(9090),
            shutdown_grace: HumanDuration::secs(10),
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
