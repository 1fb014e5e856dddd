//! Tracing output for servers: human-readable for a terminal, JSON lines for log shippers.
//! `RUST_LOG` overrides the configured level.

use std::io::IsTerminal;

use cascade_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Parses a filter directive such as `info` or `warn,cascade_cache=debug`.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| {
        format!("{directives:?} is not a log filter ({e}); write a level such as \"info\"")
    })
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            parse_filter(&env).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => parse_filter(&config.level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Human => builder
            .with_target(true)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // An already-installed subscriber (tests, embedding) is not an error worth failing for.
    drop(result);
    Ok(())
}
