//! `cascade-router`: sends each viewer to the nearest healthy edge over HTTP (302 and content
//! steering) and DNS.
//!
//! Run with `--help` for flags; configuration is the `[router]` section of the Cascade config.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cascade_router::dns::DnsRouter;
use cascade_router::fetch::EdgeClient;
use cascade_router::http::HttpRouter;
use cascade_router::probe::{ProbeSchedule, first_round, keep_probing};
use cascade_router::state::Router;
use cascade_service::limits::ConnectionLimits;
use cascade_service::tls::{CertStore, http1_server_config, reload_when_renewed, root_store};
use cascade_service::{Context, ServiceInfo, admin, run_server};

const INFO: ServiceInfo = ServiceInfo {
    name: "router",
    binary: "cascade-router",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: false,
    about: "Cascade router: sends each viewer to the nearest healthy edge (HTTP 302, DNS, content steering)",
};

fn main() -> ExitCode {
    run_server(INFO, |config| &config.router, serve)
}

/// Viewers hold a connection for a redirect or a playlist, then leave for the edge.
const VIEWER_LIMITS: ConnectionLimits = ConnectionLimits {
    total: 16_384,
    per_address: 256,
};

/// Where Debian keeps the system's trusted CAs.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How often the GeoIP database file is checked for a new version.
const GEOIP_CHECK_EVERY: Duration = Duration::from_secs(5);

async fn serve(ctx: Context) -> anyhow::Result<()> {
    let section = &ctx.config.router;
    let router = Arc::new(Router::from_config(section).map_err(anyhow::Error::msg)?);
    let roots = if section.edge_ca_file.is_empty() {
        root_store("router.edge_ca_file (system roots)", Path::new(SYSTEM_ROOTS)).unwrap_or_else(|e| {
            tracing::warn!("{e}: playlists from HTTPS edges cannot be fetched for steering; viewers are redirected instead");
            rustls::RootCertStore::empty()
        })
    } else {
        root_store("router.edge_ca_file", Path::new(&section.edge_ca_file))
            .map_err(anyhow::Error::msg)?
    };
    let schedule = ProbeSchedule {
        interval: section.probe_interval.0,
        timeout: section.probe_timeout.0,
    };
    let edges = EdgeClient::new(roots, Duration::from_secs(5)).map_err(anyhow::Error::msg)?;

    let dns = if section.dns_name.is_empty() {
        None
    } else {
        let ttl = u32::try_from(section.dns_ttl.0.as_secs()).unwrap_or(u32::MAX);
        let handler = DnsRouter::new(Arc::clone(&router), &section.dns_name, ttl)
            .map_err(anyhow::Error::msg)?;
        let addr = section.dns_listen.0;
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("router.dns_listen: cannot bind UDP {addr}: {e}"))?;
        let tcp = admin::bind(addr, "router.dns_listen")
            .await
            .map_err(anyhow::Error::msg)?;
        let mut server = hickory_server::Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        tracing::info!(listen = %addr, name = %section.dns_name, "DNS answering");
        Some(server)
    };

    let listener = admin::bind(section.listen.0, "router.listen")
        .await
        .map_err(anyhow::Error::msg)?;
    let tls = if section.tls.is_enabled() {
        let certs =
            Arc::new(CertStore::single("router.tls", &section.tls).map_err(anyhow::Error::msg)?);
        tokio::spawn(reload_when_renewed(
            Arc::clone(&certs),
            Duration::from_secs(5),
        ));
        Some(http1_server_config(certs))
    } else {
        None
    };

    let admins: Vec<Vec<String>> = section
        .pops
        .iter()
        .map(|p| p.edges.iter().map(|e| e.admin.clone()).collect())
        .collect();
    first_round(&router, &admins, schedule).await;
    for (p, edges) in admins.iter().enumerate() {
        for (e, admin) in edges.iter().enumerate() {
            tokio::spawn(keep_probing(
                Arc::clone(&router),
                p,
                e,
                admin.clone(),
                schedule,
            ));
        }
    }
    if router.geoip().is_some() {
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(GEOIP_CHECK_EVERY).await;
                let router = Arc::clone(&router);
                let reloaded = tokio::task::spawn_blocking(move || {
                    router.geoip().map(|g| g.reload_if_changed())
                })
                .await;
                match reloaded {
                    Ok(Some(Ok(true))) => tracing::info!("GeoIP database reloaded"),
                    Ok(Some(Err(e))) => tracing::error!(
                        "router.geoip_database: {e}; the previous database keeps serving"
                    ),
                    _ => {}
                }
            }
        });
    }

    let http = Arc::new(HttpRouter {
        router: Arc::clone(&router),
        edges,
        steering_ttl: section.steering_ttl.0.as_secs(),
        https: tls.is_some(),
    });
    tracing::info!(listen = %section.listen, pops = section.pops.len(), https = tls.is_some(), "routing viewers");
    ctx.started.open();
    let handler = move |req| Arc::clone(&http).handle(req);
    let accept = async move {
        match tls {
            Some(tls) => admin::serve_https(listener, "router", VIEWER_LIMITS, tls, handler).await,
            None => admin::serve_http(listener, "router", VIEWER_LIMITS, handler).await,
        }
    };
    tokio::select! {
        () = accept => {}
        () = ctx.shutdown.wait() => {}
    }
    if let Some(mut dns) = dns {
        let _ = dns.shutdown_gracefully().await;
    }
    Ok(())
}
