//! The fMP4 reader: ffmpeg's output cut into init segments and fragments, in arbitrary
//! pieces, and each fragment moved on the timeline as the packager does.
#![no_main]

use cascade_media::fmp4::{Fmp4Item, Fmp4Splitter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut splitter = Fmp4Splitter::with_max_box_size(1 << 20);
    let step = usize::from(split).max(1);
    for piece in rest.chunks(step) {
        match splitter.push(piece) {
            Ok(items) => {
                for item in items {
                    if let Fmp4Item::Fragment(fragment) = item {
                        let _ = fragment.with_decode_time(u64::from(split) << 33);
                        let _ = fragment.with_decode_time(7);
                    }
                }
            }
            Err(_) => return,
        }
    }
    let _ = splitter.finish();
});
