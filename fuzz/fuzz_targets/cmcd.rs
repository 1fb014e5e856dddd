//! The CMCD parser: the `CMCD` query parameter and the `CMCD-*` headers as players send them.
#![no_main]

use cascade_cmcd::{MAX_ID, from_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, header) = text.split_once('\n').unwrap_or((text, ""));
    if let Some(cmcd) = from_request(Some(query), [("CMCD-Request", header)]) {
        // Whatever arrives, ids stay within their bound and numbers are what was sent.
        for id in [&cmcd.session_id, &cmcd.content_id].into_iter().flatten() {
            assert!(id.chars().count() <= MAX_ID, "{id:?}");
        }
        if let Some(rate) = cmcd.playback_rate {
            assert!(rate.is_finite() && rate >= 0.0);
        }
    }
});
