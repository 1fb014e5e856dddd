//! `cascade-edge`: serves viewers HLS and DASH from cache, filling from the shield tier.
//!
//! Run with `--help` for flags; configuration is the `[edge]` section of the Cascade config.

use std::process::ExitCode;

use cascade_service::ServiceInfo;

// Pingora allocates many small objects per request; glibc's malloc showed up at ~7% of the
// hit path's profile, mimalloc handles that pattern with less contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INFO: ServiceInfo = ServiceInfo {
    name: "edge",
    binary: "cascade-edge",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: true,
    about: "Cascade edge: serves viewers HLS and DASH from cache, filling from the shield tier",
};

fn main() -> ExitCode {
    cascade_edge::server::run(INFO, |config| {
        cascade_edge::tier::TierSettings::edge(&config.edge)
    })
}
