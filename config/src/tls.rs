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
