//! Typed configuration for every Cascade service.
//!
//! One TOML file may hold every section (`[origin]`, `[shield]`, `[edge]`, `[purge_bus]`, `[router]`,
//! `[kafka]`, `[storage]`, `[tls]`, `[log]`); every field has a default, so no file at all runs
//! the local stack. `CASCADE_<SECTION>__<FIELD>` environment variables override single fields.
//! Unknown keys are errors. Every error names where the value came from (file or variable),
//! the field, and what to write instead, on one line.
//!
//! Where it sits: at the bottom of the crate graph. Every binary (origin, shield, edge, purge
//! bus) reads its section through `cascade-service`'s CLI; this crate does no other IO and
//! knows no other Cascade crate.

mod analytics;
mod env;
mod http3;
mod kafka;
mod log;
mod router;
mod services;
mod storage;
mod tls;
mod validate;
mod values;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use analytics::{EdgeAnalyticsConfig, OriginAnalyticsConfig};
pub use http3::{CongestionController, Http3Config, MAX_HTTP3_STREAMS};
pub use kafka::{KafkaConfig, SecurityProtocol};
pub use log::{LogConfig, LogFormat};
pub use router::{PopConfig, RouterConfig, RouterEdgeConfig, parse_base_url, parse_host_port};
pub use services::{
    ApiTokenConfig, CacheConfig, ClientConfig, DiskCacheConfig, EdgeConfig, MAX_SHUTDOWN_GRACE,
    OriginConfig, PurgeBusConfig, PurgeFeedConfig, ServiceSection, ShieldConfig, SiteConfig,
    TokenScope, TranscoderConfig, hostname,
};
pub use storage::{FsStorageConfig, S3StorageConfig, StorageBackend, StorageConfig};
pub use tls::{CertificateConfig, ListenerTlsConfig, TlsConfig, UpstreamTlsConfig};
pub use validate::Problem;
pub use values::{BitRate, ByteSize, Cidr, DatabaseUrl, HumanDuration, ListenAddr, Secret};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeConfig {
    /// `[log]`
    pub log: LogConfig,
    /// `[origin]`
    pub origin: OriginConfig,
    /// `[shield]`
    pub shield: ShieldConfig,
    /// `[edge]`
    pub edge: EdgeConfig,
    /// `[purge_bus]`
    pub purge_bus: PurgeBusConfig,
    /// `[router]`
    pub router: RouterConfig,
    /// `[kafka]`
    pub kafka: KafkaConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[tls]`
    pub tls: TlsConfig,
}

/// Why a configuration was refused. `Display` gives one line per problem, each starting with
/// where the value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the config file: {source} (check the --config path)")]
    Read {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{origin}: line {line}, column {column}: {message} (the file is not valid TOML)")]
    Syntax {
        /// File name.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A value has the wrong type or spelling, or a key is unknown.
    #[error("{origin}: {field}: {message}")]
    Field {
        /// File name or environment variable.
        origin: String,
        /// Dotted field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is malformed.
    #[error("{0}")]
    Environment(String),
    /// Values parsed but do not make sense together.
    #[error("{}", .0.iter().map(|(origin, p)| format!("{origin}: {}: {}", p.field, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<(String, Problem)>),
}

impl CascadeConfig {
    /// Loads `file` (or only defaults when `None`), applies `CASCADE_*__*` variables from the
    /// process environment and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`CascadeConfig::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (origin, text) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                (path.display().to_string(), text)
            }
            None => ("built-in defaults".to_owned(), String::new()),
        };
        Self::parse_with_env(&origin, &text, env)
    }

    /// Parses TOML `text` (named `origin` in errors), applies the overrides in `env` and validates.
    pub fn parse_with_env(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| syntax_error(origin, text, &e))?;
        // Deserialize the file alone first, so a bad file is blamed on the file.
        let mut config = deserialize(doc.clone(), |_| origin.to_owned())?;
        let overrides = env::collect(env).map_err(ConfigError::Environment)?;
        if !overrides.is_empty() {
            let defaults = toml::Table::try_from(Self::default()).map_err(|e| {
                ConfigError::Environment(format!("internal: defaults do not serialize: {e}"))
            })?;
            let merged =
                env::apply(doc, &overrides, &defaults).map_err(ConfigError::Environment)?;
            config = deserialize(merged, |field| blame_override(&overrides, field, origin))?;
        }
        config.validate().map_err(|problems| {
            ConfigError::Invalid(
                problems
                    .into_iter()
                    .map(|p| (blame_override(&overrides, &p.field, origin), p))
                    .collect(),
            )
        })?;
        Ok(config)
    }

    /// Checks that the values make sense together; returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut p = validate::Problems::default();
        self.log.validate(&mut p);
        self.origin.validate(&mut p);
        self.shield.validate(&mut p);
        self.edge.validate(&mut p);
        self.purge_bus.validate(&mut p);
        self.router.validate(&mut p);
        self.kafka.validate(&mut p);
        self.storage.validate(&mut p);
        self.tls.validate(&mut p);
        if p.0.is_empty() { Ok(()) } else { Err(p.0) }
    }
}

fn deserialize(
    doc: toml::Table,
    origin_of: impl Fn(&str) -> String,
) -> Result<CascadeConfig, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." || p.is_empty() => "(top level)".to_owned(),
            p => p,
        };
        ConfigError::Field {
            origin: origin_of(&field),
            message: e.into_inner().message().trim().to_owned(),
            field,
        }
    })
}

/// Names the environment variable that set `field` (or a parent/child of it), else the file.
fn blame_override(overrides: &[env::Override], field: &str, file_origin: &str) -> String {
    overrides
        .iter()
        .find(|o| {
            let dotted = o.dotted();
            field == dotted
                || field.starts_with(&format!("{dotted}."))
                || field.starts_with(&format!("{dotted}["))
                || dotted.starts_with(&format!("{field}."))
        })
        .map(|o| format!("environment {}", o.var))
        .unwrap_or_else(|| file_origin.to_owned())
}

fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    ConfigError::Syntax {
        origin: origin.to_owned(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}
