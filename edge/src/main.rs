//! `cascade-edge`: serves viewers HLS and DASH from cache, filling from the shield tier.
//!
//! The caching core is `cascade-cache`, built here with its `viewers` feature. What sets the
//! edge apart (`cascade_cache::tier::TierSettings::edge`): HTTPS and HTTP/3 listeners,
//! configured sites only (421 for other hosts), signed URLs, CORS, viewers' `no-cache`
//! ignored, and misses spread over shields by consistent hashing on the cache key.
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
    cascade_cache::server::run(INFO, |config| {
        cascade_cache::tier::TierSettings::edge(&config.edge)
    })
}
