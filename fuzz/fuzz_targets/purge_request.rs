//! Purge requests as the bus and nodes read them: the JSON request, the bus message, and the
//! node's selectors.
#![no_main]

use cascade_cache::server::purge_api::selectors;
use cascade_purge_follower::PurgeRequest;
use cascade_purge_follower::message::PurgeMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keyed = ["v".to_owned()];
    if let Ok(request) = serde_json::from_slice::<PurgeRequest>(data)
        && request.validate().is_ok()
    {
        // What the bus accepts, every node can apply.
        let selected = selectors(&request, &keyed).expect("a valid purge has keyable targets");
        for selector in selected {
            let _ = selector.matches("cdn.example/live/a/1.m4s", &["t".to_owned()]);
        }
    }
    if let Ok(message) = PurgeMessage::decode(data) {
        let _ = PurgeMessage::decode(&message.encode()).expect("an encoded message decodes");
    }
});
