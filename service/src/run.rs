//! The `main` of a tokio-based Cascade server: arguments, config, tracing, admin listener, the
//! service itself, and a bounded graceful shutdown. Exit codes: 0 clean stop, 1 failure or
//! grace period exceeded, 2 configuration refused, 130 stopped by a second signal.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use cascade_config::{CascadeConfig, ServiceSection};

use crate::admin::{self, AdminState};
use crate::cli::{self, ServerArgs, ServiceInfo};
use crate::readiness::{Gate, Readiness};
use crate::shutdown::{self, ShutdownSignal, SignalListener};
use crate::{metrics, telemetry};

/// What a service body receives.
pub struct Context {
    /// The validated configuration (every section).
    pub config: Arc<CascadeConfig>,
    /// Add gates for anything that must finish before the node takes traffic.
    pub readiness: Readiness,
    /// Resolves when the service must stop; finish in-flight work, then return.
    pub shutdown: ShutdownSignal,
    /// Open this once the service's listeners are bound and it can serve.
    pub started: Gate,
}

/// A server cleared to run.
pub struct Started {
    /// The validated configuration (tracing is initialised).
    pub config: CascadeConfig,
    /// `--upgrade`: take over the running instance's sockets.
    pub upgrade: bool,
}

/// What start-up decided.
pub enum Startup {
    /// Run the server.
    Run(Box<Started>),
    /// Exit now with this code (`--check` done, or the configuration was refused).
    Exit(ExitCode),
}

/// The start-up every server shares: parse arguments, load and validate the configuration,
/// answer `--check`, initialise tracing. Errors are printed one per line, prefixed by the binary.
pub fn startup(info: &ServiceInfo) -> Startup {
    let args = ServerArgs::parse(info);
    let config = match cli::load_config(&args) {
        Ok(config) => config,
        Err(message) => {
            for line in message.lines() {
                eprintln!("{}: error: {line}", info.binary);
            }
            return Startup::Exit(ExitCode::from(2));
        }
    };
    if args.check {
        println!("{}: configuration is valid", args.config_origin());
        return Startup::Exit(ExitCode::SUCCESS);
    }
    if let Err(e) = telemetry::init(&config.log) {
        eprintln!("{}: error: {e}", info.binary);
        return Startup::Exit(ExitCode::from(2));
    }
    metrics::register_service(info.name, info.version);
    Startup::Run(Box::new(Started {
        config,
        upgrade: args.upgrade,
    }))
}

/// Runs a tokio-based server: [`startup`], then the admin listener and `service`, stopped
/// gracefully on SIGINT/SIGTERM.
pub fn run_server<S, F, Fut>(
    info: ServiceInfo,
    section: fn(&CascadeConfig) -> &S,
    service: F,
) -> ExitCode
where
    S: ServiceSection,
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let config = match startup(&info) {
        Startup::Run(started) => started.config,
        Startup::Exit(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(info.name)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "{}: error: cannot start the async runtime: {e}",
                info.binary
            );
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(supervise(info, Arc::new(config), section, service));
    // Tasks still running (connections past the grace period) are dropped, not awaited.
    runtime.shutdown_background();
    code
}

async fn supervise<S, F, Fut>(
    info: ServiceInfo,
    config: Arc<CascadeConfig>,
    section: fn(&CascadeConfig) -> &S,
    service: F,
) -> ExitCode
where
    S: ServiceSection,
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let admin_addr = section(&config).admin_listen();
    let grace = section(&config).shutdown_grace();
    let mut signals = match SignalListener::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let admin_listener = match admin::bind(admin_addr.0, &format!("{}.admin_listen", S::NAME)).await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let readiness = Readiness::new();
    tokio::spawn(admin::serve(
        admin_listener,
        AdminState::new(info.name, readiness.clone()),
    ));

    let (trigger, signal) = shutdown::channel();
    let ctx = Context {
        config: Arc::clone(&config),
        readiness: readiness.clone(),
        shutdown: signal,
        started: readiness.gate("service starting"),
    };
    let mut task = tokio::spawn(service(ctx));
    tracing::info!(service = info.name, version = info.version, admin = %admin_addr, "started");

    let received = tokio::select! {
        sig = signals.next() => sig,
        finished = &mut task => return exit_for(info, finished),
    };
    tracing::info!(signal = ?received, grace = %grace, "shutting down; a second signal stops at once");
    readiness.start_draining();
    trigger.trigger();
    tokio::select! {
        finished = &mut task => exit_for(info, finished),
        _ = tokio::time::sleep(grace.0) => {
            tracing::warn!(grace = %grace, "grace period expired; stopping with work unfinished");
            ExitCode::from(1)
        }
        sig = signals.next() => {
            tracing::warn!(signal = ?sig, "second signal; stopping at once");
            ExitCode::from(130)
        }
    }
}

fn exit_for(
    info: ServiceInfo,
    finished: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> ExitCode {
    match finished {
        Ok(Ok(())) => {
            tracing::info!(service = info.name, "stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!(
                service = info.name,
                error = format!("{e:#}"),
                "service failed"
            );
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!(service = info.name, error = %e, "service task panicked");
            ExitCode::from(1)
        }
    }
}

/// Body of a server whose traffic listeners are not built yet: it is ready once the admin
/// listener is up and stops when asked. Tiers replace it with their own as they are built.
pub async fn admin_only(ctx: Context) -> anyhow::Result<()> {
    ctx.started.open();
    ctx.shutdown.wait().await;
    Ok(())
}
