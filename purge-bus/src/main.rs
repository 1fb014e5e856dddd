//! `cascade-purge-bus`: accepts purges from operators and fans them out to every node.
//!
//! Run with `--help` for flags; configuration is the `[purge_bus]` section of the Cascade config.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cascade_config::TokenScope;
use cascade_purge_bus::api::PurgeApi;
use cascade_purge_bus::auth::{ApiTokens, Scope};
use cascade_purge_bus::rate::RateLimiter;
use cascade_purge_bus::transport::EmbeddedLog;
use cascade_service::admin;
use cascade_service::{Context, ServiceInfo, run_server};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};

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

async fn serve(ctx: Context) -> anyhow::Result<()> {
    let section = &ctx.config.purge_bus;
    let mut tokens = ApiTokens::default();
    for token in &section.tokens {
        let scope = match token.scope {
            TokenScope::Read => Scope::Read,
            TokenScope::Write => Scope::Write,
        };
        tokens.add(&token.name, token.token.expose(), scope);
    }
    if section.tokens.is_empty() {
        tracing::warn!("no [[purge_bus.tokens]] configured: the purge API refuses every request");
    }
    let api = Arc::new(PurgeApi::new(
        tokens,
        RateLimiter::new(
            f64::from(section.rate_limit_per_second),
            f64::from(section.rate_limit_burst),
        ),
        Arc::new(EmbeddedLog::default()),
        section.nodes.clone(),
    ));
    let listener = admin::bind(section.listen.0, "purge_bus.listen")
        .await
        .map_err(anyhow::Error::msg)?;
    ctx.started.open();
    tracing::info!(listen = %section.listen, "purge API listening");
    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "purge API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let api = Arc::clone(&api);
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "purge API connection ended with an error");
                }
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = ctx.shutdown.wait() => {}
    }
    Ok(())
}
