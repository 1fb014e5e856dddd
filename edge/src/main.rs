//! `cascade-edge`: serves viewers HLS and DASH from cache, filling from the shield tier.
//!
//! Run with `--help` for flags; configuration is the `[edge]` section of the Cascade config.

use std::process::ExitCode;

use cascade_service::ServiceInfo;

const INFO: ServiceInfo = ServiceInfo {
    name: "edge",
    binary: "cascade-edge",
    version: env!("CARGO_PKG_VERSION"),
    about: "Cascade edge: serves viewers HLS and DASH from cache, filling from the shield tier",
};

fn main() -> ExitCode {
    cascade_edge::server::run(INFO)
}
