//! `cascade-shield`: Cascade shield: the parent cache tier between edges and the origin
//!
//! Run with `--help` for flags; configuration is the `[shield]` section of the Cascade config.

use std::process::ExitCode;

use cascade_service::{ServiceInfo, admin_only, run_server};

const INFO: ServiceInfo = ServiceInfo {
    name: "shield",
    binary: "cascade-shield",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: false,
    about: "Cascade shield: the parent cache tier between edges and the origin",
};

fn main() -> ExitCode {
    run_server(INFO, |config| &config.shield, admin_only)
}
