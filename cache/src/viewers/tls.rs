//! Certificates for the edge's TLS listeners, chosen by SNI: an exact host name first, then a
//! `*.` wildcard one label up, then the first configured certificate. Files are re-read when
//! they change, so certificates are renewed without a restart; a renewal that fails to load
//! keeps the previous certificates and is reported. With none configured and
//! `tls.self_signed`, a certificate for `localhost` and `127.0.0.1` is generated at start-up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use cascade_config::{CertificateConfig, TlsConfig};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// What is loaded now.
#[derive(Default)]
struct Loaded {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Modification times of every (cert, key) file, to notice renewals.
    stamps: Vec<(Option<SystemTime>, Option<SystemTime>)>,
}

/// The certificates of a node.
pub struct CertStore {
    sources: Vec<CertificateConfig>,
    loaded: RwLock<Loaded>,
    self_signed: Option<SelfSigned>,
}

/// A certificate generated at start-up, and what a client needs to trust it.
struct SelfSigned {
    pem: String,
    spki_sha256: String,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_one(i: usize, source: &CertificateConfig) -> Result<Arc<CertifiedKey>, String> {
    let field = |f: &str| format!("tls.certificates[{i}].{f}");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert)
        .map_err(|e| {
            format!(
                "{}: cannot read {}: {e}",
                field("cert"),
                source.cert.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{}: {} is not a PEM certificate chain: {e}",
                field("cert"),
                source.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{}: {} holds no certificate",
            field("cert"),
            source.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&source.key).map_err(|e| {
        format!(
            "{}: cannot read a PEM private key from {}: {e}",
            field("key"),
            source.key.display()
        )
    })?;
    let signing = any_supported_type(&key)
        .map_err(|e| format!("{}: unsupported private key: {e}", field("key")))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{}: the key does not belong to the certificate: {e}",
            field("key")
        )
    })?;
    Ok(Arc::new(certified))
}

fn load_all(sources: &[CertificateConfig]) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    for (i, source) in sources.iter().enumerate() {
        let certified = load_one(i, source)?;
        for host in &source.hosts {
            loaded
                .by_name
                .insert(host.trim().to_ascii_lowercase(), Arc::clone(&certified));
        }
        loaded.default.get_or_insert(certified);
        loaded
            .stamps
            .push((modified(&source.cert), modified(&source.key)));
    }
    Ok(loaded)
}

impl CertStore {
    /// Loads the `[tls]` section; errors name the field and file.
    pub fn from_config(tls: &TlsConfig) -> Result<Self, String> {
        if tls.certificates.is_empty() {
            if !tls.self_signed {
                return Err(
                    "tls.certificates: none configured and tls.self_signed is false".into(),
                );
            }
            return Self::self_signed(&["localhost", "127.0.0.1"]);
        }
        let loaded = load_all(&tls.certificates)?;
        Ok(Self {
            sources: tls.certificates.clone(),
            loaded: RwLock::new(loaded),
            self_signed: None,
        })
    }

    /// A store with one freshly generated self-signed certificate for `names`.
    pub fn self_signed(names: &[&str]) -> Result<Self, String> {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .map_err(|e| format!("tls: cannot generate a self-signed certificate: {e}"))?;
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
            .map_err(|e| format!("tls: generated key is unusable: {e}"))?;
        let signing =
            any_supported_type(&key).map_err(|e| format!("tls: generated key is unusable: {e}"))?;
        let certified = Arc::new(CertifiedKey::new(
            vec![generated.cert.der().clone()],
            signing,
        ));
        let spki = rcgen::PublicKeyData::subject_public_key_info(&generated.signing_key);
        let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki));
        let loaded = Loaded {
            default: Some(certified),
            ..Loaded::default()
        };
        Ok(Self {
            sources: Vec::new(),
            loaded: RwLock::new(loaded),
            self_signed: Some(SelfSigned {
                pem: generated.cert.pem(),
                spki_sha256,
            }),
        })
    }

    /// The generated certificate in PEM, when self-signed (clients trust it with this).
    pub fn self_signed_pem(&self) -> Option<&str> {
        self.self_signed.as_ref().map(|s| s.pem.as_str())
    }

    /// Base64 SHA-256 of the generated certificate's public key, when self-signed: what
    /// Chromium's `--ignore-certificate-errors-spki-list` takes (its QUIC stack ignores
    /// locally added roots).
    pub fn self_signed_spki_sha256(&self) -> Option<&str> {
        self.self_signed.as_ref().map(|s| s.spki_sha256.as_str())
    }

    /// Re-reads the files if any changed. `Ok(true)` when new certificates were loaded; on an
    /// error the previous certificates stay in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        if self.sources.is_empty() {
            return Ok(false);
        }
        let stamps: Vec<_> = self
            .sources
            .iter()
            .map(|s| (modified(&s.cert), modified(&s.key)))
            .collect();
        if stamps == self.read().stamps {
            return Ok(false);
        }
        let loaded = load_all(&self.sources)?;
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(true)
    }

    /// The certificate for a client that sent `sni`.
    pub fn certificate_for(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.read();
        let by_sni = sni.map(str::to_ascii_lowercase).and_then(|name| {
            loaded.by_name.get(&name).cloned().or_else(|| {
                let parent = name.split_once('.').map(|(_, rest)| rest)?;
                loaded.by_name.get(&format!("*.{parent}")).cloned()
            })
        });
        by_sni.or_else(|| loaded.default.clone())
    }

    /// Files to watch (for logs).
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .flat_map(|s| [s.cert.clone(), s.key.clone()])
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certificate_for(client_hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str, hosts: &[&str]) -> CertificateConfig {
        let generated = rcgen::generate_simple_self_signed(
            hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        CertificateConfig {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cert,
            key,
        }
    }

    fn config(certificates: Vec<CertificateConfig>) -> TlsConfig {
        TlsConfig {
            certificates,
            self_signed: false,
        }
    }

    fn same(a: &Option<Arc<CertifiedKey>>, b: &Option<Arc<CertifiedKey>>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.cert == b.cert,
            _ => false,
        }
    }

    #[test]
    fn certificates_are_chosen_by_sni_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["a.example"]);
        let wild = write_cert(dir.path(), "wild", &["*.b.example"]);
        let store = CertStore::from_config(&config(vec![a, wild])).unwrap();
        let a_cert = store.certificate_for(Some("a.example"));
        let wild_cert = store.certificate_for(Some("x.b.example"));
        assert!(!same(&a_cert, &wild_cert));
        assert!(
            same(&store.certificate_for(Some("A.EXAMPLE")), &a_cert),
            "SNI is case-insensitive"
        );
        assert!(
            same(&store.certificate_for(Some("y.x.b.example")), &a_cert),
            "wildcards cover one label; otherwise the default"
        );
        assert!(
            same(&store.certificate_for(None), &a_cert),
            "no SNI gets the first certificate"
        );
    }

    #[test]
    fn renewed_files_are_picked_up_and_broken_ones_keep_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["a.example"]);
        let store = CertStore::from_config(&config(vec![a.clone()])).unwrap();
        let before = store.certificate_for(Some("a.example"));
        assert_eq!(store.reload_if_changed(), Ok(false));
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_cert(dir.path(), "a", &["a.example"]);
        assert_eq!(store.reload_if_changed(), Ok(true));
        let after = store.certificate_for(Some("a.example"));
        assert!(!same(&before, &after), "the renewed certificate is served");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&a.cert, "not a certificate").unwrap();
        let err = store.reload_if_changed().unwrap_err();
        assert!(err.contains("tls.certificates[0].cert"), "{err}");
        assert!(
            same(&store.certificate_for(Some("a.example")), &after),
            "a broken renewal keeps the old certificate"
        );
    }

    #[test]
    fn load_errors_name_the_field_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["a.example"]);
        let b = write_cert(dir.path(), "b", &["b.example"]);
        let mismatched = CertificateConfig {
            key: b.key.clone(),
            ..a.clone()
        };
        let err = CertStore::from_config(&config(vec![mismatched])).unwrap_err();
        assert!(
            err.starts_with("tls.certificates[0].key: the key does not belong"),
            "{err}"
        );
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let empty = CertificateConfig {
            cert: dir.path().join("empty.pem"),
            ..a
        };
        let err = CertStore::from_config(&config(vec![empty])).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
    }

    #[test]
    fn self_signed_when_nothing_is_configured() {
        let store = CertStore::from_config(&TlsConfig::default()).unwrap();
        assert!(store.certificate_for(Some("localhost")).is_some());
        assert!(
            store
                .self_signed_pem()
                .is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE-----"))
        );
        assert!(CertStore::from_config(&config(vec![])).is_err());
    }
}
