//! `[router]`: where the router listens, which PoPs and edges it sends viewers to, and how it
//! locates viewers and probes edges.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::services::{ServiceSection, validate_service};
use crate::tls::ListenerTlsConfig;
use crate::validate::Problems;
use crate::values::{BitRate, Cidr, HumanDuration, ListenAddr};

/// `[router]`: sends each viewer to the nearest healthy edge (HTTP 302, DNS, content steering).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// HTTP listener for viewers: redirects, steering manifests, `/v1/route`.
    pub listen: ListenAddr,
    /// HTTPS on `listen`; empty: plain HTTP.
    pub tls: ListenerTlsConfig,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
    /// Authoritative DNS (UDP and TCP on this address) for `dns_name`.
    pub dns_listen: ListenAddr,
    /// The CDN's host name the DNS side answers A/AAAA for; empty turns DNS off.
    pub dns_name: String,
    /// TTL of DNS answers: short, so viewers follow health changes.
    pub dns_ttl: HumanDuration,
    /// Coverage-zone file: one `CIDR pop-id` per line; it wins over GeoIP. Empty: none.
    pub coverage_zone_file: String,
    /// MaxMind GeoIP2/GeoLite2 City database (`.mmdb`), reloaded when the file changes.
    /// Empty: none.
    pub geoip_database: String,
    /// The PoP for viewers nothing locates; empty: the first PoP listed.
    pub default_pop: String,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers are believed (CIDRs).
    pub trusted_proxies: Vec<Cidr>,
    /// How often each edge's `/readyz` and `/metrics` are polled.
    pub probe_interval: HumanDuration,
    /// How long one probe may take before it counts as failed.
    pub probe_timeout: HumanDuration,
    /// Failed probes in a row after which an edge stops getting viewers.
    pub probe_failures: u32,
    /// Good probes in a row after which a failed edge gets viewers again.
    pub probe_successes: u32,
    /// How long players keep a content-steering manifest before asking again.
    pub steering_ttl: HumanDuration,
    /// CA certificates for fetching playlists from HTTPS edges; empty: the system roots.
    pub edge_ca_file: String,
    /// The PoPs, each a group of edges in one place.
    pub pops: Vec<PopConfig>,
}

/// One `[[router.pops]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    /// Short name, also the content-steering pathway id (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// Where the PoP is, in degrees.
    pub latitude: f64,
    /// Where the PoP is, in degrees.
    pub longitude: f64,
    /// Egress the PoP may serve; above it, new viewers spill to the next nearest PoP.
    pub capacity: BitRate,
    /// The PoP's edges.
    pub edges: Vec<RouterEdgeConfig>,
}

/// One `[[router.pops.edges]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterEdgeConfig {
    /// Unique name (logs, metrics, `/v1/route`).
    pub id: String,
    /// Base URL viewers are sent to, e.g. `https://ams-1.cdn.example.com`.
    pub url: String,
    /// The edge's admin listener (`host:port`; a name is resolved at each probe), probed for
    /// `/readyz` and `/metrics`.
    pub admin: String,
    /// The address DNS answers for this edge; by default the host of `url` if it is an IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8070),
            tls: ListenerTlsConfig::default(),
            admin_listen: ListenAddr::loopback(9070),
            shutdown_grace: HumanDuration::secs(5),
            dns_listen: ListenAddr::loopback(8053),
            dns_name: "cdn.cascade.test".into(),
            dns_ttl: HumanDuration::secs(10),
            coverage_zone_file: String::new(),
            geoip_database: String::new(),
            default_pop: String::new(),
            trusted_proxies: Vec::new(),
            probe_interval: HumanDuration::secs(1),
            probe_timeout: HumanDuration::millis(500),
            probe_failures: 2,
            probe_successes: 2,
            steering_ttl: HumanDuration::secs(5),
            edge_ca_file: String::new(),
            pops: vec![PopConfig {
                id: "local".into(),
                latitude: 0.0,
                longitude: 0.0,
                capacity: BitRate(10_000_000_000),
                edges: vec![RouterEdgeConfig {
                    id: "edge-1".into(),
                    url: "http://127.0.0.1:8000".into(),
                    admin: "127.0.0.1:9000".into(),
                    address: None,
                }],
            }],
        }
    }
}

impl ServiceSection for RouterConfig {
    const NAME: &'static str = "router";
    fn admin_listen(&self) -> ListenAddr {
        self.admin_listen
    }
    fn shutdown_grace(&self) -> HumanDuration {
        self.shutdown_grace
    }
    fn listeners(&self) -> Vec<(&'static str, ListenAddr)> {
        let mut listeners = vec![("listen", self.listen), ("admin_listen", self.admin_listen)];
        if !self.dns_name.is_empty() {
            listeners.push(("dns_listen", self.dns_listen));
        }
        listeners
    }
}

/// Splits an edge's base URL into (scheme, host, port); `Err` says what is wrong with it.
pub fn parse_base_url(url: &str) -> Result<(&str, &str, Option<u16>), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL (write e.g. https://edge-1.example.com)"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?}: the scheme must be http or https"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{url:?} must be a scheme and host only (no path, query or user), e.g. https://edge-1.example.com:8443"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: an IPv6 host needs a closing ]"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: {p:?} is not a port number"))?,
        ),
        None => None,
    };
    Ok((scheme, host, port))
}

/// Splits `host:port` (`[v6]:port` for IPv6); `Err` says what is wrong.
pub fn parse_host_port(text: &str) -> Result<(&str, u16), String> {
    let bad =
        || format!("{text:?} is not host:port (e.g. 10.0.0.5:9000 or edge-1.cdn.internal:9000)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
        Some(_) => return Err(bad()),
        // An IPv6 address needs its brackets, or the port is ambiguous.
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@', '?', '#', '[', ']']) {
        return Err(bad());
    }
    Ok((host, port))
}

fn is_pathway_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl RouterConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        validate_service(self, p);
        self.tls.validate("router.tls", p);
        if !self.dns_name.is_empty() && !is_dns_name(&self.dns_name) {
            p.push(
                "router.dns_name",
                format!(
                    "{:?} is not a DNS name (letters, digits and '-' in dot-separated labels)",
                    self.dns_name
                ),
            );
        }
        if self.dns_ttl.0 > std::time::Duration::from_secs(3600) {
            p.push(
                "router.dns_ttl",
                format!(
                    "{} is too long for answers that follow health; use at most 1h",
                    self.dns_ttl
                ),
            );
        }
        if self.probe_interval.0 < std::time::Duration::from_millis(100) {
            p.push("router.probe_interval", "must be at least 100ms");
        }
        if self.probe_timeout.0 < std::time::Duration::from_millis(10) {
            p.push("router.probe_timeout", "must be at least 10ms");
        }
        if self.probe_failures == 0 {
            p.push("router.probe_failures", "must be at least 1");
        }
        if self.probe_successes == 0 {
            p.push("router.probe_successes", "must be at least 1");
        }
        if self.steering_ttl.0 < std::time::Duration::from_secs(1) {
            p.push("router.steering_ttl", "must be at least 1s");
        }
        if self.pops.is_empty() {
            p.push(
                "router.pops",
                "lists no PoP; add [[router.pops]] with at least one edge",
            );
        }
        let mut pop_ids: Vec<&str> = Vec::new();
        let mut edge_ids: Vec<&str> = Vec::new();
        for (i, pop) in self.pops.iter().enumerate() {
            let field = format!("router.pops[{i}]");
            if !is_pathway_id(&pop.id) {
                p.push(
                    format!("{field}.id"),
                    format!(
                        "{:?} must be 1-64 letters, digits, '-', '_' or '.' (it is the content-steering pathway id)",
                        pop.id
                    ),
                );
            } else if pop_ids.contains(&pop.id.as_str()) {
                p.push(
                    format!("{field}.id"),
                    format!("{:?} is listed twice", pop.id),
                );
            }
            pop_ids.push(&pop.id);
            if !(-90.0..=90.0).contains(&pop.latitude) {
                p.push(format!("{field}.latitude"), "must be between -90 and 90");
            }
            if !(-180.0..=180.0).contains(&pop.longitude) {
                p.push(format!("{field}.longitude"), "must be between -180 and 180");
            }
            if pop.capacity.0 == 0 {
                p.push(format!("{field}.capacity"), "must be more than 0");
            }
            if pop.edges.is_empty() {
                p.push(format!("{field}.edges"), "lists no edge");
            }
            for (j, edge) in pop.edges.iter().enumerate() {
                let field = format!("{field}.edges[{j}]");
                if edge.id.is_empty() {
                    p.push(format!("{field}.id"), "must not be empty");
                } else if edge_ids.contains(&edge.id.as_str()) {
                    p.push(
                        format!("{field}.id"),
                        format!("{:?} is listed twice", edge.id),
                    );
                }
                edge_ids.push(&edge.id);
                if let Err(e) = parse_base_url(&edge.url) {
                    p.push(format!("{field}.url"), e);
                }
                if let Err(e) = parse_host_port(&edge.admin) {
                    p.push(format!("{field}.admin"), e);
                }
            }
        }
        if !self.default_pop.is_empty() && !pop_ids.contains(&self.default_pop.as_str()) {
            p.push(
                "router.default_pop",
                format!(
                    "{:?} is not the id of any [[router.pops]]",
                    self.default_pop
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_base_url("https://edge-1.example.com"),
            Ok(("https", "edge-1.example.com", None))
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1:8000/"),
            Ok(("http", "127.0.0.1", Some(8000)))
        );
        assert_eq!(
            parse_base_url("http://[::1]:8000"),
            Ok(("http", "::1", Some(8000)))
        );
        for bad in [
            "edge-1",
            "ftp://edge",
            "http://edge/path",
            "http://edge?x=1",
            "http://user@edge",
            "http://edge:http",
            "http://",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn admin_addresses_are_host_and_port() {
        assert_eq!(parse_host_port("127.0.0.1:9000"), Ok(("127.0.0.1", 9000)));
        assert_eq!(
            parse_host_port("edge-0.edge.cascade.svc:9000"),
            Ok(("edge-0.edge.cascade.svc", 9000))
        );
        assert_eq!(parse_host_port("[::1]:9000"), Ok(("::1", 9000)));
        for bad in [
            "edge", "edge:", "edge:x", ":9000", "a/b:9000", "::1:9000", "edge:0",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn default_router_config_is_valid() {
        let mut p = Problems::default();
        RouterConfig::default().validate(&mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
    }

    #[test]
    fn each_router_mistake_is_named() {
        let mut config = RouterConfig {
            dns_name: "bad name".into(),
            default_pop: "nowhere".into(),
            ..RouterConfig::default()
        };
        config.pops[0].latitude = 91.0;
        config.pops[0].id = "a b".into();
        let copy = config.pops[0].edges[0].clone();
        config.pops[0].edges.push(copy);
        config.pops[0].edges[1].url = "edge".into();
        let mut p = Problems::default();
        config.validate(&mut p);
        let fields: Vec<&str> = p.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "router.dns_name",
                "router.pops[0].id",
                "router.pops[0].latitude",
                "router.pops[0].edges[1].id",
                "router.pops[0].edges[1].url",
                "router.default_pop",
            ]
        );
    }
}
