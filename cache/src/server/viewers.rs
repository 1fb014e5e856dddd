//! Assembly of the viewers' listeners into a tier's server (feature `viewers`): HTTP/3's UDP
//! socket bound up front, the HTTPS listener with its certificate store and reloader, and the
//! HTTP/3 listener driving a clone of the proxy.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use cascade_config::{CascadeConfig, Http3Config};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;

use super::downstream::TlsTermination;
use super::{CertReloader, TLS_READ_BUFFER};
use crate::proxy::CachingProxy;
use crate::tier::TierSettings;
use crate::viewers::http3::{Http3Limits, Http3Listener, alt_svc, bind_udp, server_config};
use cascade_service::tls::CertStore;

/// HTTP/3's UDP side, bound before the server starts.
pub struct PendingHttp3<'a> {
    settings: &'a Http3Config,
    addr: SocketAddr,
    /// `None` when upgrading: the running instance still holds the port.
    socket: Option<UdpSocket>,
}

/// Binds HTTP/3's UDP socket on the HTTPS port number, if the tier serves HTTP/3, and makes
/// the proxy advertise it with `Alt-Svc`.
pub fn bind_http3<'a>(
    tier: &'a TierSettings,
    upgrade: bool,
    proxy: &mut CachingProxy,
) -> anyhow::Result<Option<PendingHttp3<'a>>> {
    let (Some(settings), Some(tls_listen)) = (&tier.http3, tier.tls_listen) else {
        return Ok(None);
    };
    let socket = if upgrade {
        None
    } else {
        Some(bind_udp(tls_listen.0).map_err(|e| {
            anyhow!(
                "{}.tls_listen: cannot listen for HTTP/3 on UDP {tls_listen}: {e} (is another process using the port?)",
                tier.name
            )
        })?)
    };
    proxy.alt_svc = alt_svc(tls_listen.0.port(), settings.alt_svc_max_age.0);
    Ok(Some(PendingHttp3 {
        settings,
        addr: tls_listen.0,
        socket,
    }))
}

/// Adds the HTTPS listener to `listeners` and the HTTP/3 listener and certificate reloader to
/// `server`; returns how the traffic service terminates TLS. Nothing when the tier has no
/// `tls_listen`.
pub fn start(
    server: &mut Server,
    tier: &TierSettings,
    config: &CascadeConfig,
    proxy: &CachingProxy,
    http3: Option<PendingHttp3<'_>>,
    listeners: &mut Vec<ListenerConfig>,
) -> anyhow::Result<Option<TlsTermination>> {
    let Some(tls_listen) = tier.tls_listen else {
        return Ok(None);
    };
    let certs = Arc::new(CertStore::from_config(&config.tls).map_err(|e| anyhow!(e))?);
    if let Some(http3) = http3 {
        // The HTTP/3 listener drives a clone of the proxy: same storage, lock, sites and
        // upstreams.
        let h3_proxy = Arc::new(pingora_proxy::http_proxy(
            &server.configuration,
            CachingProxy {
                alt_svc: None,
                ..proxy.clone()
            },
        ));
        let quic = server_config(Arc::clone(&certs), http3.settings)?;
        server.add_service(background_service(
            "http3",
            Http3Listener::new(
                http3.socket,
                http3.addr,
                quic,
                h3_proxy,
                Http3Limits {
                    max_connections: usize::try_from(http3.settings.max_connections)
                        .unwrap_or(usize::MAX),
                    per_address: tier.clients.max_connections_per_address,
                    header: tier.clients.header_timeout.0,
                },
            ),
        ));
    }
    if let Some(pem) = certs.self_signed_pem() {
        let path = cascade_service::runtime::dir()
            .map_err(|e| anyhow!("tls: no certificate is configured and {e}"))?
            .join(format!("{}-{}.pem", tier.name, tls_listen.0.port()));
        std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
        tracing::warn!(
            certificate = %path.display(),
            "serving HTTPS with a generated self-signed certificate for localhost; trust it with `curl --cacert {}`",
            path.display()
        );
        if let (Some(spki), Some(_)) = (certs.self_signed_spki_sha256(), &tier.http3) {
            let port = tls_listen.0.port();
            tracing::warn!(
                spki_sha256 = spki,
                "HTTP/3 uses the same certificate; in Chromium: `chromium --origin-to-force-quic-on=localhost:{port} --ignore-certificate-errors-spki-list={spki} https://localhost:{port}/`"
            );
        }
    }
    // Certificate paths are ignored when a resolver is set: the store picks by SNI.
    let mut tls = TlsSettings::intermediate("", "").map_err(|e| anyhow!("tls: {e}"))?;
    tls.set_cert_resolver(Arc::clone(&certs) as Arc<dyn rustls::server::ResolvesServerCert>);
    tls.enable_h2();
    // The listener accepts TCP; `ClientStreamApp` runs the handshake under its own limit.
    // TLS reads a record (at most 16 KiB) at a time; a buffer of one record saves syscalls.
    listeners.push(
        ListenerConfig::tcp(tls_listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(TLS_READ_BUFFER)),
    );
    server.add_service(background_service("tls-reload", CertReloader::new(certs)));
    Ok(Some(TlsTermination {
        listen: tls_listen.0,
        acceptor: tls.build(),
    }))
}
