//! A tier's process (edge or shield): a pingora server running the caching proxy on the traffic
//! listeners, the shared admin listener, the upstream health checker and the purge bus consumer
//! as background services, and a drain
//! on SIGINT/SIGTERM that waits for in-flight requests (bounded by `shutdown_grace`) instead of
//! pingora's fixed grace sleep.

pub mod downstream;
pub mod purge_api;
#[cfg(feature = "viewers")]
mod viewers;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use cascade_config::CascadeConfig;
use cascade_service::admin::{self, AdminState};
use cascade_service::limits::ConnectionLimits;
use cascade_service::shutdown::SignalListener;
use cascade_service::tls::CertStore;
use cascade_service::{Gate, Readiness, ServiceInfo, Startup};
use http::HeaderValue;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};
use pingora_core::services::listening::Service;

use crate::metrics::{StorageCollector, proxy_metrics};
use crate::policy::token::TokenKey;
use crate::policy::ttl::TtlPolicy;
use crate::policy::upstream::Upstreams;
use crate::proxy::{CacheCore, CachingProxy, Site, Sites, TIER_HEADER, UpstreamTimeouts};
use crate::server::downstream::{ClientLimits, ClientStreamApp, TlsTermination};
use crate::server::purge_api::{BusApplier, PurgeEndpoint};
use crate::storage::TieredStorage;
use crate::storage::disk::DiskTier;
use crate::tier::{HostPolicy, TierSettings, UpstreamPlan};
use cascade_analytics::transport::Collector;
use cascade_purge_follower::follow;
use cascade_purge_follower::node::FeedSource;
use sha2::{Digest, Sha256};

/// Runs a tier (`cascade-edge`, `cascade-shield`) until it is stopped; `tier` picks its
/// settings out of the loaded configuration. Returns the process exit code.
pub fn run(info: ServiceInfo, tier: fn(&CascadeConfig) -> TierSettings) -> ExitCode {
    without_transparent_huge_pages();
    let config = match cascade_service::startup(&info) {
        Startup::Run(started) => started,
        Startup::Exit(code) => return code,
    };
    let settings = tier(&config.config);
    match serve(info, &settings, &config.config, config.upgrade) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{}: error: {e:#}", info.binary);
            ExitCode::from(1)
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks for them, and then every
/// first touch of a fresh 2 MiB region is zeroed whole: a thousand viewers arriving at a cold
/// edge made it spend a fifth of its CPU zeroing pages (a first 1000-viewer collapse of a
/// 128 KiB object: 390–490 ms of edge CPU with them, 140–170 ms in most runs without). Hit
/// throughput measured the same either way.
fn without_transparent_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!("could not turn transparent huge pages off: {e}");
    }
}

fn resolve(field: &str, host_port: &str) -> anyhow::Result<SocketAddr> {
    host_port
        .to_socket_addrs()
        .with_context(|| format!("{field}: cannot resolve {host_port:?}"))?
        .next()
        .ok_or_else(|| anyhow!("{field}: {host_port:?} has no address"))
}

/// The tier's upstreams, resolved, with the configured `host:port` of each address.
pub struct ResolvedUpstreams {
    /// The addresses, in the tier's plan.
    pub upstreams: Upstreams,
    /// What the configuration called each address.
    pub names: HashMap<SocketAddr, String>,
}

/// Resolves the tier's upstreams.
pub fn build_upstreams(tier: &TierSettings) -> anyhow::Result<ResolvedUpstreams> {
    let mut names = HashMap::new();
    let mut resolve_all = |field: String, host_ports: &[String]| {
        host_ports
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = resolve(&format!("{field}[{i}]"), s)?;
                names.insert(addr, s.clone());
                Ok(addr)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let upstreams = match &tier.upstreams {
        UpstreamPlan::Hashed { shields, origin } => {
            let shields = resolve_all(format!("{}.shields", tier.name), shields)?;
            let origin = if origin.is_empty() {
                None
            } else {
                let addr = resolve(&format!("{}.origin", tier.name), origin)?;
                names.insert(addr, origin.clone());
                Some(addr)
            };
            Upstreams::new(shields, origin)
        }
        UpstreamPlan::Ordered { origins } => {
            Upstreams::ordered(resolve_all(format!("{}.origins", tier.name), origins)?)
        }
    };
    Ok(ResolvedUpstreams { upstreams, names })
}

/// The name each upstream's certificate must carry, when the tier fills over TLS. The trust
/// roots are checked here, so a bad CA file stops start-up with a message instead of failing
/// every fill.
fn upstream_tls_names(
    tier: &TierSettings,
    resolved: &ResolvedUpstreams,
) -> anyhow::Result<Option<HashMap<SocketAddr, String>>> {
    let Some(tls) = &tier.upstream_tls else {
        if let Some(secret) = &tier.send_fill_secret
            && !secret.is_empty()
            && resolved.names.keys().any(|a| !a.ip().is_loopback())
        {
            tracing::warn!(
                "{0}.fill_secret is sent in clear over the network: set {0}.upstream_tls to encrypt fills",
                tier.name
            );
        }
        return Ok(None);
    };
    if !tls.ca_file.as_os_str().is_empty() {
        cascade_service::tls::root_store(
            &format!("{}.upstream_tls.ca_file", tier.name),
            &tls.ca_file,
        )
        .map_err(|e| anyhow!(e))?;
    }
    Ok(Some(
        resolved
            .names
            .iter()
            .map(|(addr, host_port)| {
                let name = tls.name_for(host_port);
                let name = if name.is_empty() {
                    addr.ip().to_string()
                } else {
                    name
                };
                (*addr, name)
            })
            .collect(),
    ))
}

/// Builds the proxy of a tier over `storage`.
pub fn build_proxy(
    tier: &TierSettings,
    storage: &'static TieredStorage,
    inflight: Arc<AtomicUsize>,
) -> anyhow::Result<CachingProxy> {
    let cache = &tier.cache;
    let resolved = build_upstreams(tier)?;
    // A fill may legitimately wait at the upstream as long as the read timeout (LL-HLS
    // blocking requests), so the lock must not be considered abandoned before that.
    let lock_age = cache.upstream_read_timeout.0.max(cache.collapse_timeout.0);
    let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(lock_age));
    let sites = Arc::new(match &tier.hosts {
        HostPolicy::Any => Sites::any_host(Site {
            token: None,
            cors: false,
        }),
        HostPolicy::Sites(configured) => {
            let mut sites = Sites::default();
            for site in configured {
                let token = (!site.token_secret.is_empty()).then(|| {
                    TokenKey::new(site.token_secret.expose().as_bytes())
                        .with_max_lifetime(site.token_max_lifetime.0.as_secs())
                });
                sites.insert(
                    &site.hosts,
                    Site {
                        token,
                        cors: site.cors,
                    },
                );
            }
            sites
        }
    });
    let sent_fill_secret = match &tier.send_fill_secret {
        Some(secret) => {
            let mut value = HeaderValue::from_str(secret.expose())
                .map_err(|_| anyhow!("{}.fill_secret: must be visible ASCII", tier.name))?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let ttl = TtlPolicy {
        stale_if_error: cache.stale_if_error.0,
        playlist_stale_if_error: cache.live_stale_if_error.0,
        live_playlist_fresh: cache.live_playlist_fresh.0,
        ..TtlPolicy::default()
    };
    Ok(CachingProxy {
        tier: tier.name,
        core: CacheCore {
            storage,
            lock,
            ttl,
            keyed_query: cache.keyed_query.clone(),
            max_object_size: usize::try_from(cache.max_object_size.0).unwrap_or(usize::MAX),
            collapse_timeout: cache.collapse_timeout.0,
        },
        sites,
        upstream_tls: upstream_tls_names(tier, &resolved)?.map(Arc::new),
        upstreams: Arc::new(resolved.upstreams),
        timeouts: UpstreamTimeouts {
            connect: cache.upstream_connect_timeout.0,
            read: cache.upstream_read_timeout.0,
        },
        inflight,
        alt_svc: None,
        via: HeaderValue::from_str(&format!("1.1 cascade-{}", tier.name))?,
        required_fill_secret: tier
            .require_fill_secret
            .as_ref()
            .map(|s| Sha256::digest(s.expose().as_bytes()).into()),
        sent_fill_secret,
        honour_request_no_cache: tier.honour_request_no_cache,
        failover_on_error: tier.failover_on_error,
        keepalive_secs: tier.clients.keepalive_timeout.0.as_secs().max(1),
        node_id: Arc::from(tier.purge.node_id_or_default(tier.name)),
        read_cmcd: tier.analytics.as_ref().is_some_and(|a| a.enabled),
        analytics: None,
    })
}

fn serve(
    info: ServiceInfo,
    tier: &TierSettings,
    config: &CascadeConfig,
    upgrade: bool,
) -> anyhow::Result<ExitCode> {
    let inflight = Arc::new(AtomicUsize::new(0));
    let storage = open_storage(tier)?;
    StorageCollector::register(storage);
    let mut proxy = build_proxy(tier, storage, Arc::clone(&inflight))?;
    if let Some(analytics) = &tier.analytics {
        proxy.analytics = Collector::start(analytics, &config.kafka, proxy.node_id.to_string())
            .map_err(|e| anyhow!("{}.analytics: {e}", tier.name))?
            .map(Arc::new);
        if proxy.analytics.is_none() {
            tracing::info!(
                "no [kafka] brokers and no {}.analytics.collector_url: viewer analytics are counted, not sent",
                tier.name
            );
        }
    }
    let upstreams = Arc::clone(&proxy.upstreams);
    let purge = PurgeEndpoint::new(storage, &tier.admin_token, tier.cache.keyed_query.clone());
    proxy_metrics();

    let admin_listener = bind_ports(tier, upgrade)?;
    #[cfg(feature = "viewers")]
    let http3 = viewers::bind_http3(tier, upgrade, &mut proxy)?;
    #[cfg(not(feature = "viewers"))]
    if let Some(tls_listen) = tier.tls_listen {
        anyhow::bail!(
            "{}.tls_listen ({tls_listen}): this binary serves no HTTPS; viewers' listeners are the edge's",
            tier.name
        );
    }

    let readiness = Readiness::new();
    let started = readiness.gate("traffic listener starting");
    let mut server = pingora_server(tier, upgrade)?;
    // Requests are GET/HEAD/OPTIONS with headers of a few hundred bytes: plain connections read
    // straight into the request parser's buffer. Pingora's default 64 KiB read buffer per
    // connection cost a thousand viewers arriving at once 64 MiB of freshly zeroed pages.
    // Writes are buffered by the `ClientStream` each connection is wrapped in.
    let listen_buffer = if tier.listen_tls.is_some() {
        L4BufferSettings::default().read(TLS_READ_BUFFER)
    } else {
        L4BufferSettings::unbuffered()
    };
    #[cfg_attr(not(feature = "viewers"), allow(unused_mut))]
    let mut tls_termination = listen_tls(&mut server, tier)?;
    #[cfg_attr(not(feature = "viewers"), allow(unused_mut))]
    let mut listeners = vec![ListenerConfig::tcp(tier.listen.to_string()).l4_buffer(listen_buffer)];
    #[cfg(feature = "viewers")]
    if let Some(viewers) = viewers::start(&mut server, tier, config, &proxy, http3, &mut listeners)?
    {
        anyhow::ensure!(
            tls_termination.is_none(),
            "{}: HTTPS on both listen and tls_listen is not supported",
            tier.name
        );
        tls_termination = Some(viewers);
    }
    let proxy_service = traffic_service(&server, tier, proxy, listeners, tls_termination);
    server.add_service(proxy_service);
    server.add_service(background_service(
        "admin",
        AdminTask {
            listener: Mutex::new(admin_listener),
            admin_addr: tier.admin_listen.0,
            state: AdminState {
                extension: Some(Arc::new(purge)),
                ..AdminState::new(info.name, readiness.clone())
            },
            traffic: tier.listen.0,
            traffic_is_tls: tier.listen_tls.is_some(),
            tier: tier.name,
            started: Mutex::new(Some(started)),
        },
    ));
    if let Some(source) = feed_source(tier, config) {
        let node_id = tier.purge.node_id_or_default(tier.name);
        tracing::info!(node = %node_id, "following the purge bus");
        server.add_service(background_service(
            "purge-feed",
            PurgeFeed {
                node_id,
                source,
                applier: Arc::new(BusApplier {
                    storage,
                    keyed_query: tier.cache.keyed_query.clone(),
                }),
                caught_up: Mutex::new(Some(readiness.gate("catching up with the purge bus"))),
            },
        ));
    }
    server.add_service(background_service(
        "health",
        HealthCheck {
            upstreams,
            interval: tier.cache.health_check_interval.0,
            timeout: tier.cache.upstream_connect_timeout.0,
        },
    ));

    let exit = Arc::new(AtomicU8::new(0));
    let drain = Drain {
        readiness,
        inflight,
        grace: tier.shutdown_grace,
        exit: Arc::clone(&exit),
    };
    tracing::info!(service = info.name, version = info.version, listen = %tier.listen, admin = %tier.admin_listen, "started");
    server.run(RunArgs {
        shutdown_signal: Box::new(drain),
    });
    tracing::info!(service = info.name, "stopped");
    Ok(ExitCode::from(exit.load(Ordering::Acquire)))
}

/// The memory tier, with the disk tier below it when the tier has one.
fn open_storage(tier: &TierSettings) -> anyhow::Result<&'static TieredStorage> {
    let Some(disk) = &tier.disk else {
        return Ok(TieredStorage::leak(tier.cache.capacity.0));
    };
    let field = format!("{}.disk.dir", tier.name);
    let opened = Instant::now();
    let disk_tier = DiskTier::open(Path::new(&disk.dir), disk.capacity.0)
        .map_err(|e| anyhow!("{field}: cannot use {:?} as the disk cache: {e}", disk.dir))?;
    tracing::info!(
        dir = %disk.dir,
        objects = disk_tier.entry_count(),
        bytes = disk_tier.weighted_size(),
        ms = opened.elapsed().as_millis() as u64,
        "disk tier indexed"
    );
    Ok(TieredStorage::leak_with_disk(
        tier.cache.capacity.0,
        disk_tier,
    )?)
}

/// Binds what it can before pingora starts, so a taken port is a clear error, not a panic;
/// returns the admin listener. When upgrading, the running instance still holds the ports: its
/// traffic sockets arrive through the upgrade socket, and the admin port is free once it exits.
fn bind_ports(tier: &TierSettings, upgrade: bool) -> anyhow::Result<Option<std::net::TcpListener>> {
    if upgrade {
        return Ok(None);
    }
    let admin_field = format!("{}.admin_listen", tier.name);
    let listener = std::net::TcpListener::bind(tier.admin_listen.0).map_err(|e| {
        anyhow!(
            "{admin_field}: cannot listen on {}: {e} (is another process using the port?)",
            tier.admin_listen
        )
    })?;
    listener.set_nonblocking(true)?;
    for (field, addr) in tier.traffic_listeners() {
        drop(std::net::TcpListener::bind(addr).map_err(|e| {
            anyhow!("{field}: cannot listen on {addr}: {e} (is another process using the port?)")
        })?);
    }
    Ok(Some(listener))
}

/// The pingora server of one tier, bootstrapped (or waiting for the running instance's
/// sockets when upgrading).
fn pingora_server(tier: &TierSettings, upgrade: bool) -> anyhow::Result<Server> {
    // No fixed grace sleep: `Drain` waits for in-flight requests before asking for shutdown.
    let conf = ServerConf {
        threads: tier.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        max_retries: tier.upstream_count() + 2,
        upgrade_sock: upgrade_socket(tier)?,
        // Trust roots for upstreams over TLS; none: the system's.
        ca_file: tier
            .upstream_tls
            .as_ref()
            .filter(|tls| !tls.ca_file.as_os_str().is_empty())
            .map(|tls| tls.ca_file.display().to_string()),
        ..ServerConf::default()
    };
    if upgrade {
        tracing::info!(socket = %conf.upgrade_sock, "waiting for the running instance's sockets; send it SIGQUIT");
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    Ok(server)
}

/// The traffic service: the caching proxy on every listener, under the connection layer
/// that enforces the client deadlines and terminates TLS.
fn traffic_service(
    server: &Server,
    tier: &TierSettings,
    proxy: CachingProxy,
    listeners: Vec<ListenerConfig>,
    tls_termination: Option<TlsTermination>,
) -> Service<ClientStreamApp<pingora_proxy::HttpProxy<CachingProxy>>> {
    let mut http_proxy = pingora_proxy::http_proxy(&server.configuration, proxy);
    let mut server_options = HttpServerOptions::default();
    server_options.h2_idle_timeout = Some(tier.clients.keepalive_timeout.0);
    http_proxy.server_options = Some(server_options);
    let metrics = proxy_metrics();
    let mut proxy_service = Service::new(
        tier.name.to_string(),
        ClientStreamApp::new(
            http_proxy,
            ClientLimits {
                header: tier.clients.header_timeout.0,
                handshake: tier.clients.handshake_timeout.0,
                write: tier.clients.write_timeout.0,
                connections: ConnectionLimits {
                    total: tier.clients.max_connections,
                    per_address: tier.clients.max_connections_per_address,
                },
            },
            tls_termination,
            metrics,
        ),
    );
    for listener in listeners {
        proxy_service.add_listener(listener);
    }
    proxy_service
}

/// Read buffer of a TLS connection: one TLS record.
const TLS_READ_BUFFER: usize = 16 * 1024 + 256;

/// HTTPS on the tier's `listen`, for the tier above, when `<tier>.tls` is configured.
fn listen_tls(server: &mut Server, tier: &TierSettings) -> anyhow::Result<Option<TlsTermination>> {
    let Some(tls) = &tier.listen_tls else {
        return Ok(None);
    };
    let certs =
        Arc::new(CertStore::single(&format!("{}.tls", tier.name), tls).map_err(|e| anyhow!(e))?);
    // Certificate paths are ignored when a resolver is set.
    let mut settings = TlsSettings::intermediate("", "").map_err(|e| anyhow!("tls: {e}"))?;
    settings.set_cert_resolver(Arc::clone(&certs) as Arc<dyn rustls::server::ResolvesServerCert>);
    server.add_service(background_service("tls-reload", CertReloader::new(certs)));
    tracing::info!(listen = %tier.listen, "{}.listen speaks HTTPS only", tier.name);
    Ok(Some(TlsTermination {
        listen: tier.listen.0,
        acceptor: settings.build(),
    }))
}

/// Reloads renewed certificate files until the server stops.
pub(crate) struct CertReloader(Arc<CertStore>);

impl CertReloader {
    pub(crate) fn new(certs: Arc<CertStore>) -> Self {
        Self(certs)
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let every = Duration::from_secs(5);
        tokio::select! {
            () = cascade_service::tls::reload_when_renewed(Arc::clone(&self.0), every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The hand-over socket for `--upgrade`.
fn upgrade_socket(tier: &TierSettings) -> anyhow::Result<String> {
    if !tier.upgrade_socket.is_empty() {
        return Ok(tier.upgrade_socket.clone());
    }
    let dir = cascade_service::runtime::dir()
        .map_err(|e| anyhow!("{}.upgrade_socket is empty and {e}", tier.name))?;
    Ok(dir
        .join(format!(
            "{}-{}.upgrade.sock",
            tier.name,
            tier.listen.0.port()
        ))
        .display()
        .to_string())
}

/// Serves the admin listener and opens the readiness gate once the traffic port accepts.
struct AdminTask {
    /// Bound before start-up; `None` when upgrading, as the old instance still holds the port.
    listener: Mutex<Option<std::net::TcpListener>>,
    admin_addr: SocketAddr,
    state: AdminState,
    traffic: SocketAddr,
    /// The traffic listener speaks HTTPS: readiness checks that it accepts, not that it
    /// answers a plain request.
    traffic_is_tls: bool,
    tier: &'static str,
    started: Mutex<Option<Gate>>,
}

#[async_trait]
impl BackgroundService for AdminTask {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let prebound = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let listener = match prebound {
            Some(std_listener) => match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serve the admin listener");
                    return;
                }
            },
            // Upgrading: the port frees up when the old instance exits.
            None => loop {
                match tokio::net::TcpListener::bind(self.admin_addr).await {
                    Ok(l) => break l,
                    Err(_) => {
                        if !pause(Duration::from_millis(100), &mut shutdown).await {
                            return;
                        }
                    }
                }
            },
        };
        let gate = self
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (traffic, tier, tls) = (self.traffic, self.tier, self.traffic_is_tls);
        let open_when_listening = async move {
            loop {
                let up = if tls {
                    accepts(traffic).await
                } else {
                    proxy_answers(traffic, tier).await
                };
                if up {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(gate) = gate {
                gate.open();
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = admin::serve(listener, self.state.clone()) => {}
            () = open_when_listening => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// True when something accepts TCP connections on `addr`. A connection to a port in the
/// ephemeral range that nothing listens on can connect to itself (TCP simultaneous open when
/// the kernel picks the same port as source): that is not a listener.
async fn accepts(addr: SocketAddr) -> bool {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(stream) => stream.local_addr().ok() != Some(addr),
        Err(_) => false,
    }
}

/// True when our own proxy answers HTTP on `addr` (its 204 to `OPTIONS *`, naming the tier),
/// not merely something accepting TCP there.
async fn proxy_answers(addr: SocketAddr, tier: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        if stream.local_addr().ok() == Some(addr) {
            return None;
        }
        stream
            .write_all(
                b"OPTIONS * HTTP/1.1\r\nHost: cascade-readiness-probe\r\nConnection: close\r\n\r\n",
            )
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let signature = format!("{TIER_HEADER}: {tier}\r\n");
        Some(answer.starts_with("http/1.1 204") && answer.contains(&signature))
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Sleeps for `period`; false if the server started shutting down meanwhile.
pub(crate) async fn pause(period: Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}

/// Probes every shield with a TCP connect and records the verdict.
struct HealthCheck {
    upstreams: Arc<Upstreams>,
    interval: Duration,
    timeout: Duration,
}

#[async_trait]
impl BackgroundService for HealthCheck {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.upstreams.nodes().is_empty() {
            return;
        }
        loop {
            for &addr in self.upstreams.nodes() {
                let up = tokio::time::timeout(self.timeout, accepts(addr))
                    .await
                    .unwrap_or(false);
                if self.upstreams.set_healthy(addr, up) {
                    proxy_metrics().upstream_health_changes.inc();
                    if up {
                        tracing::info!(upstream = %addr, "upstream healthy again");
                    } else {
                        tracing::warn!(upstream = %addr, "upstream failed its health check");
                    }
                }
            }
            if !pause(self.interval, &mut shutdown).await {
                return;
            }
        }
    }
}

/// Which purge bus the tier follows: the Kafka purge topic when brokers are configured, else
/// the embedded bus at `purge.bus_url`, else none.
fn feed_source(tier: &TierSettings, config: &CascadeConfig) -> Option<FeedSource> {
    if !config.kafka.is_embedded() {
        return Some(FeedSource::Kafka(config.kafka.clone()));
    }
    if tier.purge.bus_url.is_empty() {
        tracing::info!(
            "no [kafka] brokers and no {}.purge.bus_url: not following a purge bus",
            tier.name
        );
        return None;
    }
    Some(FeedSource::Embedded {
        url: tier.purge.bus_url.clone(),
        token: (!tier.purge.bus_token.is_empty()).then(|| tier.purge.bus_token.expose().to_owned()),
    })
}

/// Follows the purge bus; the node is not ready until it caught up.
struct PurgeFeed {
    node_id: String,
    source: FeedSource,
    applier: Arc<BusApplier>,
    caught_up: Mutex<Option<Gate>>,
}

#[async_trait]
impl BackgroundService for PurgeFeed {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let gate = self
            .caught_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let on_caught_up: Box<dyn FnOnce() + Send> = Box::new(move || {
            if let Some(gate) = gate {
                gate.open();
            }
        });
        tokio::select! {
            () = follow(self.node_id.clone(), self.source.clone(), self.applier.clone(), on_caught_up) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Turns the first SIGINT/SIGTERM into a drain: unready at once, then wait for in-flight
/// requests up to the grace period (a second signal cuts it short), then stop.
struct Drain {
    readiness: Readiness,
    inflight: Arc<AtomicUsize>,
    grace: Duration,
    exit: Arc<AtomicU8>,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        let mut signals = match SignalListener::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers; stopping");
                self.exit.store(1, Ordering::Release);
                return ShutdownSignal::FastShutdown;
            }
        };
        let mut quit = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit()) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGQUIT handler; stopping");
                self.exit.store(1, Ordering::Release);
                return ShutdownSignal::FastShutdown;
            }
        };
        let signal = tokio::select! {
            s = signals.next() => s,
            _ = quit.recv() => {
                // Pingora hands the listening sockets to the instance started with --upgrade,
                // keeps serving in-flight requests for a few seconds, then stops.
                tracing::info!("SIGQUIT: handing the listening sockets to the new instance");
                self.readiness.start_draining();
                return ShutdownSignal::GracefulUpgrade;
            }
        };
        let grace = cascade_config::HumanDuration(self.grace);
        tracing::info!(?signal, %grace, "shutting down; a second signal stops at once");
        self.readiness.start_draining();
        let deadline = Instant::now() + self.grace;
        loop {
            let inflight = self.inflight.load(Ordering::Acquire);
            if inflight == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(inflight, %grace, "grace period expired; stopping with requests unfinished");
                self.exit.store(1, Ordering::Release);
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                second = signals.next() => {
                    tracing::warn!(signal = ?second, inflight, "second signal; stopping at once");
                    self.exit.store(130, Ordering::Release);
                    break;
                }
            }
        }
        ShutdownSignal::FastShutdown
    }
}
