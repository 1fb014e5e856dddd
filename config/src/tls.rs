//! `[tls]`: certificates that HTTPS and HTTP/3 listeners present, chosen by SNI.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// Certificates for the TLS listeners.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chains with their keys, each for a set of host names.
    pub certificates: Vec<CertificateConfig>,
    /// With no certificates configured, generate a self-signed one for `localhost` and
    /// `127.0.0.1` at start-up (local development). Production sets this to false.
    pub self_signed: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            self_signed: true,
        }
    }
}

/// One `[[tls.certificates]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// SNI names this certificate answers for (`*.example.com` allowed).
    pub hosts: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        for (i, c) in self.certificates.iter().enumerate() {
            if c.hosts.is_empty() || c.hosts.iter().any(|h| h.trim().is_empty()) {
                p.push(
                    format!("tls.certificates[{i}].hosts"),
                    "must list at least one non-empty host name",
                );
            }
            for (field, path) in [("cert", &c.cert), ("key", &c.key)] {
                if let Err(e) = std::fs::metadata(path) {
                    p.push(
                        format!("tls.certificates[{i}].{field}"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            }
        }
        if self.certificates.is_empty() && !self.self_signed {
            p.push("tls.certificates", "is empty and tls.self_signed is false: configure a certificate or allow a self-signed one");
        }
    }
}

/// `[shield.tls]`, `[origin.tls]`: the certificate a tier's listener presents to the tier
/// above it (edges to a shield, shields to an origin). With both paths empty the listener
/// speaks plain HTTP; with them set it speaks only HTTPS.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl ListenerTlsConfig {
    /// Whether the listener speaks HTTPS.
    pub fn is_enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty() || !self.key.as_os_str().is_empty()
    }

    pub(crate) fn validate(&self, field: &str, p: &mut Problems) {
        if !self.is_enabled() {
            return;
        }
        for (name, path) in [("cert", &self.cert), ("key", &self.key)] {
            if path.as_os_str().is_empty() {
                p.push(
                    format!("{field}.{name}"),
                    "is empty: set both cert and key, or neither for plain HTTP",
                );
            } else if let Err(e) = std::fs::metadata(path) {
                p.push(
                    format!("{field}.{name}"),
                    format!("cannot read {}: {e}", path.display()),
                );
            }
        }
    }
}

/// `[edge.upstream_tls]`, `[shield.upstream_tls]`: HTTPS to the tier this one fills from,
/// which then also carries the fill secret encrypted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Connect to every upstream over TLS and verify its certificate.
    pub enabled: bool,
    /// PEM file of the certificate authorities trusted for upstreams (a private CA); empty:
    /// the system's roots.
    pub ca_file: PathBuf,
    /// Name the upstreams' certificates must carry; empty: the host of each upstream's
    /// `host:port` (a DNS name or an IP address).
    pub server_name: String,
}

impl UpstreamTlsConfig {
    pub(crate) fn validate(&self, field: &str, p: &mut Problems) {
        let has_ca = !self.ca_file.as_os_str().is_empty();
        if !self.enabled {
            if has_ca || !self.server_name.is_empty() {
                p.push(
                    format!("{field}.enabled"),
                    "is false while ca_file or server_name is set: set enabled = true to use TLS",
                );
            }
            return;
        }
        if has_ca && let Err(e) = std::fs::metadata(&self.ca_file) {
            p.push(
                format!("{field}.ca_file"),
                format!("cannot read {}: {e}", self.ca_file.display()),
            );
        }
        if self.server_name.contains(['/', ':', ' ', '@']) {
            p.push(
                format!("{field}.server_name"),
                format!(
                    "{:?} is not a host name or IP address (no scheme, port or path)",
                    self.server_name
                ),
            );
        }
    }

    /// The name `upstream`'s certificate must carry: `server_name`, else the host of its
    /// `host:port` (without IPv6 brackets).
    pub fn name_for(&self, upstream: &str) -> String {
        if !self.server_name.is_empty() {
            return self.server_name.clone();
        }
        let host = upstream
            .rsplit_once(':')
            .map_or(upstream, |(host, _port)| host);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(check: impl FnOnce(&mut Problems)) -> Vec<String> {
        let mut p = Problems::default();
        check(&mut p);
        p.0.into_iter()
            .map(|x| format!("{}: {}", x.field, x.message))
            .collect()
    }

    #[test]
    fn listener_tls_needs_both_files() {
        assert!(!ListenerTlsConfig::default().is_enabled());
        assert!(problems(|p| ListenerTlsConfig::default().validate("shield.tls", p)).is_empty());
        let half = ListenerTlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: PathBuf::new(),
        };
        let found = problems(|p| half.validate("shield.tls", p));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("shield.tls.cert: cannot read"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("shield.tls.key: is empty"),
            "{found:?}"
        );
    }

    #[test]
    fn upstream_tls_settings_are_checked_and_name_the_upstream() {
        let off_with_ca = UpstreamTlsConfig {
            ca_file: "/etc/ssl/ca.pem".into(),
            ..UpstreamTlsConfig::default()
        };
        let found = problems(|p| off_with_ca.validate("edge.upstream_tls", p));
        assert!(
            found[0].starts_with("edge.upstream_tls.enabled: is false"),
            "{found:?}"
        );
        let bad = UpstreamTlsConfig {
            enabled: true,
            ca_file: "/nonexistent/ca.pem".into(),
            server_name: "https://shield".into(),
        };
        let found = problems(|p| bad.validate("edge.upstream_tls", p));
        assert_eq!(found.len(), 2, "{found:?}");
        let on = UpstreamTlsConfig {
            enabled: true,
            ..UpstreamTlsConfig::default()
        };
        assert!(problems(|p| on.validate("edge.upstream_tls", p)).is_empty());
        assert_eq!(on.name_for("shield-0.shields:8081"), "shield-0.shields");
        assert_eq!(on.name_for("10.0.0.5:8081"), "10.0.0.5");
        assert_eq!(on.name_for("[::1]:8081"), "::1");
        let named = UpstreamTlsConfig {
            server_name: "shield.internal".into(),
            ..on
        };
        assert_eq!(named.name_for("10.0.0.5:8081"), "shield.internal");
    }
}
