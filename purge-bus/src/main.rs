//! `cascade-purge-bus`: accepts purges from operators and fans them out to every node.
//!
//! Run with `--help` for flags; configuration is the `[purge_bus]` section of the Cascade config.

use std::process::ExitCode;
use std::sync::Arc;

use cascade_config::TokenScope;
use cascade_purge_bus::api::PurgeApi;
use cascade_purge_bus::auth::{ApiTokens, Scope};
use cascade_purge_bus::rate::RateLimiter;
use cascade_purge_bus::transport::EmbeddedLog;
use cascade_service::admin;
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
    let accept = admin::serve_http(listener, "purge API", move |req| {
        let api = Arc::clone(&api);
        async move { api.handle(req).await }
    });
    tokio::select! {
        () = accept => {}
        () = ctx.shutdown.wait() => {}
    }
    Ok(())
}
