//! Real services for integration tests, each started on free loopback ports in its own
//! temporary directory and stopped when its handle is dropped:
//!
//! - [`CascadeProcess`]: one of the project's own server binaries with a generated config;
//! - [`Tansu`]: a Kafka-protocol broker, plus helpers to create topics;
//! - [`Garage`]: an S3-compatible object store with a bucket and a key;
//! - [`TestUpstream`]: a programmable HTTP upstream for proxy tests;
//! - [`Broadcaster`]: ffmpeg publishing a test picture and tone over RTMP;
//! - [`Postgres`]: a PostgreSQL server with a fresh cluster;
//! - [`Viewer`]: headless Chromium playing the player page with hls.js or dash.js;
//! - [`TestPki`]: a private CA and a server certificate, for TLS between tiers.
//!
//! External tools are found through `CASCADE_TANSU_BIN` / `CASCADE_GARAGE_BIN` (exported by
//! `.ci/install-tools`), then the install cache, then `PATH`. A missing tool fails the test
//! with the command that installs it: these tests never pass by skipping.

mod broadcaster;
mod cascade;
mod garage;
mod http;
mod pki;
mod player;
mod postgres;
mod process;
mod tansu;
mod upstream;

pub use broadcaster::{BroadcastOptions, Broadcaster, ffmpeg_path, processes_with_arg};
pub use cascade::{CascadeProcess, binary_path};
pub use garage::Garage;
pub use http::{
    HttpResponse, curl_https, http_get, json_request, parse_response, raw_request,
    read_until_closed,
};
pub use pki::TestPki;
pub use player::{Latency, PlayOptions, PlayReport, Viewer, chromium_path, play};
pub use postgres::Postgres;
pub use process::{ChildProcess, free_port, wait_for_tcp};
pub use tansu::Tansu;
pub use upstream::{Route, SeenRequest, TestUpstream};

/// Polls `done` every 20 ms; panics naming `what` if it is not true within `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, done: impl FnMut() -> bool) {
    wait_for_or_explain(what, timeout, done, String::new);
}

/// [`wait_for`], whose panic also carries `explain()`: what the system reported instead.
pub fn wait_for_or_explain(
    what: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what} {}", explain());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Why a service could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A required program is not installed.
    #[error("{program} not found ({searched}); install it with `.ci/install-tools`")]
    NotInstalled {
        /// Program name.
        program: &'static str,
        /// Where we looked.
        searched: String,
    },
    /// Spawning, waiting or talking to a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The service did not come up or misbehaved; includes its log's tail.
    #[error("{0}")]
    Service(String),
}

/// Shorthand used across the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// Finds an external tool: `$env_var`, then `<cache>/<cached>`, then `PATH`.
fn find_tool(program: &'static str, env_var: &str, cached: &str) -> Result<std::path::PathBuf> {
    let mut searched = Vec::new();
    if let Some(path) = std::env::var_os(env_var) {
        let path = std::path::PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        searched.push(format!("${env_var}={}", path.display()));
    }
    let cache = std::env::var_os("CASCADE_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| std::path::PathBuf::from(d).join("cascade"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/cascade"))
        });
    if let Some(cache) = cache {
        let path = cache.join(cached);
        if path.is_file() {
            return Ok(path);
        }
        searched.push(path.display().to_string());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join(program);
            if path.is_file() {
                return Ok(path);
            }
        }
        searched.push("PATH".into());
    }
    Err(HarnessError::NotInstalled {
        program,
        searched: searched.join(", "),
    })
}
