//! `cascade-purge-bus`: accepts purges from operators and fans them out to every node.
//!
//! Run with `--help` for flags; configuration is the `[purge_bus]` section of the Cascade config.

use std::process::ExitCode;
use std::sync::Arc;

use cascade_purge_bus::api::{NodeFeed, PurgeApi};
use cascade_purge_bus::auth::{ApiTokens, BearerSecret};
use cascade_purge_bus::kafka::{KafkaTransport, follow_reports, keep_topics};
use cascade_purge_bus::rate::RateLimiter;
use cascade_purge_bus::transport::{EmbeddedLog, LogLimits, PurgeTransport};
use cascade_service::admin;
use cascade_service::limits::ConnectionLimits;
use cascade_service::{Context, ServiceInfo, run_server};

const INFO: ServiceInfo = ServiceInfo {
    name: "purge_bus",
    binary: "cascade-purge-bus",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: false,
    about: "Cascade purge bus: accepts purges from operators and fans them out to every node",
};

fn main() -> ExitCode {
    run_server(INFO, |config| &config.purge_bus, serve)
}

/// Connections the purge API holds: operators, and one long poll per node.
const API_LIMITS: ConnectionLimits = ConnectionLimits {
    total: 1024,
    per_address: 64,
};

async fn serve(ctx: Context) -> anyhow::Result<()> {
    let section = &ctx.config.purge_bus;
    let tokens = ApiTokens::from_config(&section.tokens);
    if section.tokens.is_empty() {
        tracing::warn!("no [[purge_bus.tokens]] configured: the purge API refuses every request");
    }
    let kafka = &ctx.config.kafka;
    let (transport, feed): (Arc<dyn PurgeTransport>, Option<NodeFeed>) = if kafka.is_embedded() {
        tracing::info!(
            "no [kafka] brokers: purges go to the embedded log, nodes follow GET /v1/feed"
        );
        let limits = LogLimits {
            max_entries: section.log_max_entries as usize,
            max_age: section.log_retention.0,
        };
        let log = Arc::new(if section.log_dir.is_empty() {
            tracing::warn!(
                "purge_bus.log_dir is empty: the purge log is in memory, and a restart forgets purges nodes have not read"
            );
            EmbeddedLog::in_memory(limits)
        } else {
            let dir = std::path::absolute(&section.log_dir).map_err(|e| {
                anyhow::anyhow!(
                    "purge_bus.log_dir: cannot resolve {:?}: {e}",
                    section.log_dir
                )
            })?;
            EmbeddedLog::open(&dir, limits)
                .map_err(|e| anyhow::anyhow!("purge_bus.log_dir: {e}"))?
        });
        let token = (!section.node_token.is_empty())
            .then(|| BearerSecret::new(section.node_token.expose()));
        (Arc::clone(&log) as _, Some(NodeFeed { log, token }))
    } else {
        let producer = KafkaTransport::new(kafka).map_err(anyhow::Error::msg)?;
        (Arc::new(producer), None)
    };
    let api = Arc::new(PurgeApi::new(
        tokens,
        RateLimiter::new(
            f64::from(section.rate_limit_per_second),
            f64::from(section.rate_limit_burst),
        ),
        transport,
        section.nodes.clone(),
        feed,
    ));
    if !kafka.is_embedded() {
        let topics = ctx.readiness.gate("creating the Kafka topics");
        tokio::spawn(keep_topics(kafka.clone(), move || topics.open()));
        let group = format!("cascade-purge-bus-{}", cascade_config::hostname());
        let api = Arc::clone(&api);
        tokio::spawn(follow_reports(kafka.clone(), group, move |report| {
            api.record_report(&report)
        }));
    }
    let listener = admin::bind(section.listen.0, "purge_bus.listen")
        .await
        .map_err(anyhow::Error::msg)?;
    ctx.started.open();
    tracing::info!(listen = %section.listen, "purge API listening");
    let accept = admin::serve_http(listener, "purge API", API_LIMITS, move |req| {
        let api = Arc::clone(&api);
        async move { api.handle(req).await }
    });
    tokio::select! {
        () = accept => {}
        () = ctx.shutdown.wait() => {}
    }
    Ok(())
}
