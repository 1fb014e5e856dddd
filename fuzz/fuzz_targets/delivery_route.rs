//! Delivery routes: the origin's URL parser and the LL-HLS query directives.
#![no_main]

use cascade_media::route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    if route::owns(path)
        && let Ok(parsed) = route::parse(path)
    {
        // A parsed route never names anything outside its stream's directory.
        assert!(!format!("{parsed:?}").contains(".."), "{parsed:?}");
    }
    let _ = route::playlist_query(query);
});
