//! `cascade-purge-bus`: Cascade purge bus: accepts purges from operators and fans them out to every node
//!
//! Run with `--help` for flags; configuration is the `[purge_bus]` section of the Cascade config.

use std::process::ExitCode;

use cascade_service::{ServiceInfo, admin_only, run_server};

const INFO: ServiceInfo = ServiceInfo {
    name: "purge_bus",
    binary: "cascade-purge-bus",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: false,
    about: "Cascade purge bus: accepts purges from operators and fans them out to every node",
};

fn main() -> ExitCode {
    run_server(INFO, |config| &config.purge_bus, admin_only)
}
