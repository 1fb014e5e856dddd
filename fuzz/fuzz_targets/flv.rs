//! FLV: whole files as benchmarks read them, and tag payloads as RTMP ingest inspects them.
#![no_main]

use bytes::Bytes;
use cascade_media::flv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = flv::video_info(data);
    let _ = flv::audio_info(data);
    if let Ok(tags) = flv::read_file(&Bytes::copy_from_slice(data)) {
        let mut out = Vec::new();
        for tag in &tags {
            let _ = flv::encode_tag(tag, &mut out);
        }
    }
});
