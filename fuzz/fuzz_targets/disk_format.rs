//! The disk cache's file format: the prefix, and a header whose checksum matches (so the
//! parser behind the checksum is reached).
#![no_main]

use cascade_cache::storage::disk_format::{DiskHeader, PREFIX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data
        .get(..PREFIX_LEN)
        .and_then(|p| <&[u8; PREFIX_LEN]>::try_from(p).ok())
    {
        let _ = DiskHeader::decode_prefix(prefix);
    }
    let payload = data.get(PREFIX_LEN.min(data.len())..).unwrap_or_default();
    if let Ok(header) = DiskHeader::decode(payload, crc32fast::hash(payload)) {
        for index in 0..header.blocks().min(64) {
            let (_, len) = header.block_span(index);
            assert!(len <= 256 * 1024);
        }
        let _ = header.check_length(payload.len() as u32, u64::MAX);
        // What decodes encodes back to the same bytes.
        assert_eq!(&header.encode()[PREFIX_LEN..], payload);
    }
});
