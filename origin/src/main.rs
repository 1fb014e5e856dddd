//! `cascade-origin`: Cascade origin: takes RTMP in, serves LL-HLS and DASH out
//!
//! Run with `--help` for flags; configuration is the `[origin]` section of the Cascade config.

use std::process::ExitCode;

use cascade_service::{ServiceInfo, run_server};

const INFO: ServiceInfo = ServiceInfo {
    name: "origin",
    binary: "cascade-origin",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: false,
    about: "Cascade origin: takes RTMP in, serves LL-HLS and DASH out",
};

fn main() -> ExitCode {
    run_server(INFO, |config| &config.origin, cascade_origin::server::serve)
}
