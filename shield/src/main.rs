//! `cascade-shield`: the parent cache tier between edges and the origin.
//!
//! Run with `--help` for flags; configuration is the `[shield]` section of the Cascade config.

use std::process::ExitCode;

use cascade_service::ServiceInfo;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INFO: ServiceInfo = ServiceInfo {
    name: "shield",
    binary: "cascade-shield",
    version: env!("CARGO_PKG_VERSION"),
    upgradable: true,
    about: "Cascade shield: the parent cache tier between edges and the origin",
};

fn main() -> ExitCode {
    cascade_cache::server::run(INFO, |config| {
        cascade_cache::tier::TierSettings::shield(&config.shield)
    })
}
