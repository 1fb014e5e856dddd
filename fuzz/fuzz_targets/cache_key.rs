//! The cache-key normaliser: host, path and query as edges and shields key them.
#![no_main]

use cascade_cache::policy::key::{RequestKey, normalise_host, normalise_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, target) = text.split_once('\n').unwrap_or(("cdn.example", text));
    let keyed = [
        "_HLS_msn".to_owned(),
        "_HLS_part".to_owned(),
        "v".to_owned(),
    ];
    if let Ok(key) = RequestKey::new(host, target, &keyed) {
        // A key is stable: normalising what it produced gives the same key.
        let again = RequestKey::new(key.host(), &key.upstream_target(), &keyed)
            .expect("a normalised key normalises again");
        assert_eq!(again, key);
        let _ = key.primary();
    }
    if let Ok(path) = normalise_path(target) {
        assert!(!path.split('/').any(|segment| segment == ".."), "{path}");
    }
    let _ = normalise_host(host);
});
