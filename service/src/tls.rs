//! Certificates that TLS listeners present: the edge's viewer listeners (`[tls]`, several
//! certificates chosen by SNI: an exact host name first, then a `*.` wildcard one label up,
//! then the first configured certificate), and the one certificate a shield or origin presents
//! to the tier below (`[shield.tls]`, `[origin.tls]`). Files are re-read when they change, so
//! certificates are renewed without a restart; a renewal that fails to load keeps the previous
//! certificates and is reported. With none configured and `tls.self_signed`, the edge
//! generates a certificate for `localhost` and `127.0.0.1` at start-up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

#[cfg(feature = "self-signed")]
use base64::Engine as _;
use cascade_config::{CertificateConfig, ListenerTlsConfig, TlsConfig};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
#[cfg(feature = "self-signed")]
use sha2::{Digest, Sha256};

/// What is loaded now.
#[derive(Default)]
struct Loaded {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Modification times of every (cert, key) file, to notice renewals.
    stamps: Vec<(Option<SystemTime>, Option<SystemTime>)>,
}

/// The certificates of a listener.
pub struct CertStore {
    /// Each source with the config field it came from (`tls.certificates[0]`, `shield.tls`),
    /// which load errors name.
    sources: Vec<(String, CertificateConfig)>,
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

fn load_one(origin: &str, source: &CertificateConfig) -> Result<Arc<CertifiedKey>, String> {
    let field = |f: &str| format!("{origin}.{f}");
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
    match crate::x509_expiry::not_after(certs[0].as_ref()) {
        Some(expiry) => crate::metrics::set_certificate_expiry(origin, expiry),
        None => tracing::warn!(certificate = %origin, "cannot read the certificate's expiry date"),
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

fn load_all(sources: &[(String, CertificateConfig)]) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    for (origin, source) in sources {
        let certified = load_one(origin, source)?;
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
            #[cfg(feature = "self-signed")]
            return Self::self_signed(&["localhost", "127.0.0.1"]);
            #[cfg(not(feature = "self-signed"))]
            return Err(
                "tls.certificates: none configured, and this binary does not generate \
                        self-signed certificates"
                    .into(),
            );
        }
        let sources = tls
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("tls.certificates[{i}]"), c.clone()))
            .collect();
        Self::load(sources)
    }

    /// One certificate for every client, from `field` (e.g. `shield.tls`): what a tier's
    /// listener presents to the tier below.
    pub fn single(field: &str, tls: &ListenerTlsConfig) -> Result<Self, String> {
        let source = CertificateConfig {
            hosts: Vec::new(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        };
        Self::load(vec![(field.to_owned(), source)])
    }

    fn load(sources: Vec<(String, CertificateConfig)>) -> Result<Self, String> {
        let loaded = load_all(&sources)?;
        Ok(Self {
            sources,
            loaded: RwLock::new(loaded),
            self_signed: None,
        })
    }

    /// A store with one freshly generated self-signed certificate for `names`.
    #[cfg(feature = "self-signed")]
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
        if let Some(expiry) = crate::x509_expiry::not_after(generated.cert.der()) {
            crate::metrics::set_certificate_expiry("tls (self-signed)", expiry);
        }
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
            .map(|(_, s)| (modified(&s.cert), modified(&s.key)))
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
            .flat_map(|(_, s)| [s.cert.clone(), s.key.clone()])
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Re-reads the store's files every `every` when they were renewed, until dropped; a renewal
/// that fails to load is logged and the previous certificates stay in use.
pub async fn reload_when_renewed(certs: Arc<CertStore>, every: std::time::Duration) {
    if certs.files().is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(every).await;
        match certs.reload_if_changed() {
            Ok(true) => tracing::info!(files = ?certs.files(), "reloaded renewed TLS certificates"),
            Ok(false) => {}
            Err(e) => tracing::error!("{e}; still serving the previous certificates"),
        }
    }
}

/// The trust roots in the PEM file `ca_file`, for a client of the tier above; errors name
/// `field` and the file.
pub fn root_store(field: &str, ca_file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("{field}: cannot read {}: {e}", ca_file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| {
            format!(
                "{field}: {} is not a PEM certificate file: {e}",
                ca_file.display()
            )
        })?;
        roots.add(cert).map_err(|e| {
            format!(
                "{field}: {} holds a certificate that cannot be a trust root: {e}",
                ca_file.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{field}: {} holds no certificate",
            ca_file.display()
        ));
    }
    Ok(roots)
}

/// A rustls server configuration presenting the certificates of `store`, speaking HTTP/1.1.
pub fn http1_server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
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
    #[cfg(feature = "self-signed")]
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

    #[test]
    fn a_single_certificate_is_served_to_every_client_and_errors_name_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["shield.internal"]);
        let tls = ListenerTlsConfig {
            cert: a.cert.clone(),
            key: a.key.clone(),
        };
        let store = CertStore::single("shield.tls", &tls).unwrap();
        assert!(same(
            &store.certificate_for(Some("anything.example")),
            &store.certificate_for(None)
        ));
        assert_eq!(store.files(), vec![a.cert.clone(), a.key.clone()]);
        std::fs::write(&a.key, "nonsense").unwrap();
        let err = CertStore::single("shield.tls", &tls).unwrap_err();
        assert!(err.starts_with("shield.tls.key: "), "{err}");
    }

    #[test]
    fn trust_roots_come_from_a_pem_file_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["origin.internal"]);
        assert_eq!(root_store("x.ca_file", &a.cert).unwrap().len(), 1);
        let err = root_store("x.ca_file", &dir.path().join("missing.pem")).unwrap_err();
        assert!(err.starts_with("x.ca_file: cannot read"), "{err}");
        let err = root_store("x.ca_file", &a.key).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
