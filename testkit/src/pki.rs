//! A private certificate authority for tests of TLS between tiers: a CA certificate, and a
//! server certificate it signed for `localhost` and `127.0.0.1`, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::{HarnessError, Result, io_err};

/// PEM files of one test CA and the server certificate it issued.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate: what clients trust (`upstream_tls.ca_file`).
    pub ca: PathBuf,
    /// The server's certificate chain (`tls.cert`).
    pub cert: PathBuf,
    /// The server's private key (`tls.key`).
    pub key: PathBuf,
}

fn generation_failed(e: rcgen::Error) -> HarnessError {
    HarnessError::Service(format!("cannot generate test certificates: {e}"))
}

impl TestPki {
    /// Generates a CA named `name` and a server certificate for `localhost` and `127.0.0.1`
    /// into `dir` (`<name>-ca.pem`, `<name>-server.pem`, `<name>-server.key`).
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        let ca_key = KeyPair::generate().map_err(generation_failed)?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(generation_failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_cert = ca_params.self_signed(&ca_key).map_err(generation_failed)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().map_err(generation_failed)?;
        let server_cert =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .and_then(|params| params.signed_by(&server_key, &issuer))
                .map_err(generation_failed)?;
        let pki = Self {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-server.pem")),
            key: dir.join(format!("{name}-server.key")),
        };
        for (path, text) in [
            (&pki.ca, ca_cert.pem()),
            (&pki.cert, server_cert.pem()),
            (&pki.key, server_key.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))?;
        }
        Ok(pki)
    }
}
