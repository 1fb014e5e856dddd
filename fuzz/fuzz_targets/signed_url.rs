//! Signed URLs: splitting `/t/<token>/...` and checking the token against the path.
#![no_main]

use cascade_cache::policy::token::TokenKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = TokenKey::new(b"fuzz-secret-0123456789abcdef").with_max_lifetime(86_400);
    if let Ok((token, rest)) = TokenKey::split(text) {
        let _ = key.check(token, rest, 1_000, None);
        let _ = key.check(token, rest, 1_000, "192.0.2.1".parse().ok());
    }
    // A token the key signed opens its prefix and nothing beside it.
    let prefix = text.split('\n').next().unwrap_or_default();
    // Prefixes as an operator signs them: normalised paths.
    if prefix.starts_with('/')
        && !prefix.contains(['.', '?', '#', '%', '\\'])
        && !prefix.contains("//")
    {
        let signed = key.sign(prefix, 2_000, None);
        let inside = format!("{}/x", prefix.trim_end_matches('/'));
        assert!(key.check(&signed, &inside, 1_000, None).is_ok(), "{prefix}");
        let sibling = format!("{}x/y", prefix.trim_end_matches('/'));
        if !prefix.ends_with('/') && prefix != "/" {
            assert!(
                key.check(&signed, &sibling, 1_000, None).is_err(),
                "{prefix}"
            );
        }
    }
});
