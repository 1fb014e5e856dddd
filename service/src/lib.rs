//! Conventions every Cascade server shares, so each tier's binary is only its own logic. It
//! sits under every binary (origin, shield, edge, purge bus) and above `cascade-config`, and
//! knows no tier:
//!
//! - [`cli`]: `--config`, `--check`, `--help`, `--version`, and config loading with errors that
//!   name the field;
//! - [`telemetry`]: `tracing` output, human or JSON;
//! - [`admin`]: the admin listener with `/healthz`, `/readyz` and `/metrics`;
//! - [`readiness`]: the conditions `/readyz` waits for;
//! - [`shutdown`]: SIGINT/SIGTERM handling with a bounded grace period;
//! - [`run`]: the `main` that ties them together for a tokio-based server;
//! - [`clock`] and [`sync`]: the one wall clock (Unix milliseconds) and the one lock helper;
//! - [`runtime`]: the private directory for runtime files (upgrade socket, generated certificate);
//! - [`parse_refusal`]: a message for the HTTP parsers' own bare `400` answers;
//! - [`tls`]: the certificates TLS listeners present (reloaded when renewed) and the trust
//!   roots of a client of the tier above; [`x509_expiry`] reads when each expires, for
//!   `cascade_tls_certificate_expiry_timestamp_seconds`.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod http_client;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod parse_refusal;
pub mod readiness;
pub mod run;
pub mod runtime;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod x509_expiry;

pub use cli::ServiceInfo;
pub use readiness::{Gate, Readiness};
pub use run::{Context, Started, Startup, admin_only, run_server, startup};
pub use shutdown::ShutdownSignal;
