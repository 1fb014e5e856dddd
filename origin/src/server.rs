//! The `cascade-origin` service body: opens the registry, binds the HTTP listener (management
//! API and media delivery), the RTMP listener, the packager and the archive, and stops them
//! on shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, anyhow};
use cascade_analytics::transport::COLLECTOR_PATH;
use cascade_config::OriginConfig;
use cascade_media::handoff::MediaSink;
use cascade_service::admin::{serve_http, serve_https};
use cascade_service::auth::ApiTokens;
use cascade_service::json::json_error;
use cascade_service::limits::ConnectionLimits;
use cascade_service::run::Context;
use cascade_service::tls::{CertStore, http1_server_config, reload_when_renewed};
use cascade_transcoder::supervisor::TranscoderOptions;
use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::analytics::Analytics;
use crate::analytics::store::AnalyticsStore;
use crate::archive::Archive;
use crate::archive::spool::Spool;
use crate::archive::store;
use crate::delivery::Delivery;
use crate::delivery::player::PlayerPage;
use crate::delivery::thumbnail::Thumbnails;
use crate::http::boxed;
use crate::ingest;
use crate::packaging::LivePackager;
use crate::streams::api::{PublicUrls, StreamApi};
use crate::streams::live::{Live, LiveOptions};
use crate::streams::monitor::IngestMonitor;
use crate::streams::registry::Registry;

/// Connections the origin's HTTP listener holds: shields fill through many at once, so one
/// address may hold many.
const HTTP_LIMITS: ConnectionLimits = ConnectionLimits {
    total: 4096,
    per_address: 512,
};

/// Runs the origin until shutdown.
pub async fn serve(ctx: Context) -> anyhow::Result<()> {
    let config = ctx.config.origin.clone();
    let registry = Registry::open(config.database_url.expose()).await?;
    let store =
        store::open(&ctx.config.storage).context("storage: cannot open the object store")?;
    let spool = open_spool(&ctx.config.storage)?;
    let (archive_tx, archive_rx) = mpsc::unbounded_channel();
    let packager = Arc::new(LivePackager::new(Some(archive_tx)));
    let archive = Archive::new(
        store,
        registry.clone(),
        Arc::clone(&packager),
        config.recording_retention.0,
        spool,
    );
    archive
        .recover()
        .await
        .context("cannot finish the recordings left open by the previous run")?;
    let archive_task = tokio::spawn(Arc::clone(&archive).run(archive_rx));
    let spool_task = tokio::spawn(Arc::clone(&archive).drain_spool());
    let retention_task = tokio::spawn(Arc::clone(&archive).retention_loop(RETENTION_EVERY));
    let memory_task = tokio::spawn(Arc::clone(&packager).report_memory(MEMORY_EVERY));
    let player = Arc::new(PlayerPage::new(
        registry.clone(),
        PathBuf::from(&config.player_dir),
    ));
    let analytics = Arc::new(Analytics::new(
        AnalyticsStore::new(registry.pool().clone()),
        &config.analytics,
        !ctx.config.kafka.is_embedded(),
    ));
    let live = Live::new(
        registry,
        live_options(&config),
        Arc::new(IngestMonitor::new(Some(
            Arc::clone(&packager) as Arc<dyn MediaSink>
        ))),
        Arc::clone(&packager),
    );
    live.resume_after_restart()
        .await
        .context("cannot read the streams left live by the previous run")?;

    analytics.spawn(Arc::clone(&live), &ctx.config.kafka);

    let nvenc = Arc::new(AtomicBool::new(false));
    tokio::spawn(probe_nvenc(
        config.transcoder.ffmpeg.clone(),
        Arc::clone(&nvenc),
    ));

    let http = TcpListener::bind(config.listen.0)
        .await
        .with_context(|| format!("origin.listen: cannot listen on {}", config.listen))?;
    let rtmp = TcpListener::bind(config.rtmp_listen.0)
        .await
        .with_context(|| {
            format!(
                "origin.rtmp_listen: cannot listen on {}",
                config.rtmp_listen
            )
        })?;

    let api = Arc::new(StreamApi::new(
        ApiTokens::from_config(&config.tokens),
        Arc::clone(&live),
        public_urls(&config),
        nvenc,
        Arc::clone(&archive),
        Arc::clone(&analytics),
    ));
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&packager),
        Arc::clone(&archive),
        Thumbnails::new(&config.transcoder.ffmpeg),
    ));
    let route = move |req: hyper::Request<hyper::body::Incoming>| {
        let api = Arc::clone(&api);
        let analytics = Arc::clone(&analytics);
        let delivery = Arc::clone(&delivery);
        let player = Arc::clone(&player);
        async move {
            let path = req.uri().path();
            if Delivery::owns(path) {
                delivery.handle(req).await
            } else if PlayerPage::owns(path) {
                player.handle(req).await
            } else if path == COLLECTOR_PATH {
                if req.method() == hyper::Method::POST {
                    analytics.collect(req).await.map(boxed)
                } else {
                    json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST").map(boxed)
                }
            } else if StreamApi::owns(path) {
                api.handle(req).await.map(boxed)
            } else {
                let message = format!("nothing at {path}");
                json_error(StatusCode::NOT_FOUND, message).map(boxed)
            }
        }
    };
    let (http_task, reload_task) = if config.tls.is_enabled() {
        let certs = Arc::new(CertStore::single("origin.tls", &config.tls).map_err(|e| anyhow!(e))?);
        let tls = http1_server_config(Arc::clone(&certs));
        (
            tokio::spawn(serve_https(http, "origin", HTTP_LIMITS, tls, route)),
            Some(tokio::spawn(reload_when_renewed(certs, RELOAD_EVERY))),
        )
    } else {
        (
            tokio::spawn(serve_http(http, "origin", HTTP_LIMITS, route)),
            None,
        )
    };
    let rtmp_task = tokio::spawn(ingest::serve(rtmp, Arc::clone(&live), ctx.shutdown.clone()));
    tracing::info!(http = %config.listen, rtmp = %config.rtmp_listen, "origin listening");
    ctx.started.open();

    ctx.shutdown.wait().await;
    rtmp_task.abort();
    live.disconnect_all();
    // Give publisher sessions a moment to drain their transcoders, and the archive a moment
    // to store what they completed.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    http_task.abort();
    if let Some(task) = reload_task {
        task.abort();
    }
    retention_task.abort();
    memory_task.abort();
    archive_task.abort();
    spool_task.abort();
    Ok(())
}

/// The archive's spool, when `storage.spool_dir` is set, with what a previous run left in it.
fn open_spool(storage: &cascade_config::StorageConfig) -> anyhow::Result<Option<Arc<Spool>>> {
    if storage.spool_dir.as_os_str().is_empty() {
        tracing::warn!(
            "storage.spool_dir is empty: a store outage longer than 10 minutes loses recorded segments"
        );
        return Ok(None);
    }
    let dir = std::path::absolute(&storage.spool_dir).with_context(|| {
        format!(
            "storage.spool_dir: cannot resolve {}",
            storage.spool_dir.display()
        )
    })?;
    let spool = Spool::open(&dir, storage.spool_capacity.0)
        .map_err(|e| anyhow!("storage.spool_dir: {e}"))?;
    let (objects, bytes) = spool.usage();
    tracing::info!(dir = %dir.display(), capacity = %storage.spool_capacity, objects, bytes, "archive spool");
    Ok(Some(Arc::new(spool)))
}

/// How often `origin.tls` files are checked for a renewal.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the packager's memory gauge is refreshed.
const MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often expired recordings are looked for.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn live_options(config: &OriginConfig) -> LiveOptions {
    let t = &config.transcoder;
    LiveOptions {
        reconnect_grace: config.reconnect_grace.0,
        max_live_streams: config.max_live_streams as usize,
        transcoder: TranscoderOptions {
            ffmpeg: PathBuf::from(&t.ffmpeg),
            work_dir: if t.work_dir.is_empty() {
                std::env::temp_dir()
            } else {
                PathBuf::from(&t.work_dir)
            },
            stall_timeout: t.stall_timeout.0,
            restart_delay: t.restart_delay.0,
            max_restart_delay: t.max_restart_delay.0,
            max_failures: t.max_failures,
        },
        preset: t.preset.clone(),
    }
}

fn public_urls(config: &OriginConfig) -> PublicUrls {
    let host = if config.public_host.is_empty() {
        match config.listen.0.ip() {
            ip if ip.is_unspecified() => cascade_config::hostname(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    } else {
        config.public_host.clone()
    };
    PublicUrls {
        rtmp_base: format!(
            "rtmp://{host}:{}/{}",
            config.rtmp_listen.0.port(),
            ingest::APP
        ),
        http_base: format!(
            "{}://{host}:{}",
            if config.tls.is_enabled() {
                "https"
            } else {
                "http"
            },
            config.listen.0.port()
        ),
    }
}

/// Checks once whether ffmpeg can encode with h264_nvenc here (a GPU and its driver).
async fn probe_nvenc(ffmpeg: String, available: Arc<AtomicBool>) {
    let probe = tokio::process::Command::new(&ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=size=256x256:duration=0.1",
            "-c:v",
            "h264_nvenc",
            "-f",
            "null",
            "-",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let works = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(20), probe).await,
        Ok(Ok(status)) if status.success()
    );
    tracing::info!(nvenc = works, "h264_nvenc probe");
    available.store(works, Ordering::Relaxed);
}
