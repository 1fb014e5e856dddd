//! RTMP as the origin reads a publisher after the handshake: the chunk limits and the
//! session (`cascade-rtmp`), then the FLV inspection of any audio or video it yields.
#![no_main]

use std::sync::Once;

use cascade_media::flv;
use cascade_rtmp::PublisherSession;
use cascade_rtmp::limits::Bounds;
use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::{ServerSessionEvent, ServerSessionResult};

static QUIET_PANICS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libFuzzer's hook aborts on any panic, even one the session wrapper catches (as the
    // origin does); a panic that escapes the wrapper still fails the run.
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let bounds = Bounds {
        max_message: 64 * 1024,
        max_chunk_size: 64 * 1024,
    };
    let Ok((mut session, _)) = PublisherSession::new(bounds) else {
        return;
    };
    for piece in rest.chunks(usize::from(split).max(1)) {
        let Ok(results) = session.input(piece) else {
            return;
        };
        for result in results {
            if let ServerSessionResult::RaisedEvent(event) = result {
                match event {
                    ServerSessionEvent::VideoDataReceived { data, .. } => {
                        let _ = flv::video_info(&data);
                    }
                    ServerSessionEvent::AudioDataReceived { data, .. } => {
                        let _ = flv::audio_info(&data);
                    }
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                        let _ = session.accept(request_id);
                    }
                    _ => {}
                }
            }
        }
    }
});
