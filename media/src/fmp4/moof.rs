//! Media fragments: `moof` with its `tfhd`, `tfdt` and `trun` boxes.

use super::*;

#[derive(Debug, Default)]
pub(super) struct FragmentFields {
    pub(super) sequence_number: u32,
    pub(super) decode_time: Option<u64>,
    pub(super) duration: u64,
    pub(super) sample_count: u32,
    pub(super) starts_with_keyframe: bool,
    pub(super) keyframes: u32,
}

pub(super) const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
pub(super) const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
pub(super) const TFHD_DEFAULT_DURATION: u32 = 0x08;
pub(super) const TFHD_DEFAULT_SIZE: u32 = 0x10;
pub(super) const TFHD_DEFAULT_FLAGS: u32 = 0x20;

pub(super) const TRUN_DATA_OFFSET: u32 = 0x01;
pub(super) const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x04;
pub(super) const TRUN_DURATION: u32 = 0x100;
pub(super) const TRUN_SIZE: u32 = 0x200;
pub(super) const TRUN_FLAGS: u32 = 0x400;
pub(super) const TRUN_CTS_OFFSET: u32 = 0x800;

/// A sample is sync when sample_is_non_sync_sample is clear and
/// sample_depends_on is not 1 ("depends on others").
pub(super) fn is_sync(flags: u32) -> bool {
    flags & 0x0001_0000 == 0 && (flags >> 24) & 0x3 != 1
}

pub(super) fn parse_moof(payload: &[u8], trex: &[Trex]) -> Result<FragmentFields, Fmp4Error> {
    let mfhd = require_child(payload, FourCc::MOOF, FourCc::MFHD)?;
    let mut r = mfhd.reader();
    r.version_flags()?;
    let mut fields = FragmentFields {
        sequence_number: r.u32("sequence_number")?,
        ..FragmentFields::default()
    };

    // Only the first traf is read; we produce one track per output.
    let traf = require_child(payload, FourCc::MOOF, FourCc::TRAF)?;
    let tfhd = require_child(traf.payload, FourCc::TRAF, FourCc::TFHD)?;
    let mut r = tfhd.reader();
    let (_, flags) = r.version_flags()?;
    let track_id = r.u32("track_ID")?;
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        r.skip(8, "base_data_offset")?;
    }
    if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        r.skip(4, "sample_description_index")?;
    }
    let tfhd_duration = if flags & TFHD_DEFAULT_DURATION != 0 {
        Some(r.u32("default_sample_duration")?)
    } else {
        None
    };
    if flags & TFHD_DEFAULT_SIZE != 0 {
        r.skip(4, "default_sample_size")?;
    }
    let tfhd_flags = if flags & TFHD_DEFAULT_FLAGS != 0 {
        Some(r.u32("default_sample_flags")?)
    } else {
        None
    };
    let trex = trex.iter().find(|t| t.track_id == track_id);
    let default_duration = tfhd_duration.or(trex.map(|t| t.duration)).unwrap_or(0);
    let default_flags = tfhd_flags.or(trex.map(|t| t.flags)).unwrap_or(0);

    let mut first_sample_seen = false;
    for child in children(traf.payload, FourCc::TRAF) {
        let child = child?;
        if child.fourcc == FourCc::TFDT {
            let mut r = child.reader();
            let (version, _) = r.version_flags()?;
            fields.decode_time = Some(r.sized(version, "baseMediaDecodeTime")?);
        } else if child.fourcc == FourCc::TRUN {
            read_trun(
                &child,
                default_duration,
                default_flags,
                &mut first_sample_seen,
                &mut fields,
            )?;
        }
    }
    Ok(fields)
}

pub(super) fn read_trun(
    trun: &Child<'_>,
    default_duration: u32,
    default_flags: u32,
    first_sample_seen: &mut bool,
    fields: &mut FragmentFields,
) -> Result<(), Fmp4Error> {
    let overflow = |what: &str| Fmp4Error::Invalid {
        fourcc: FourCc::TRUN,
        detail: format!("{what} overflows"),
    };
    let mut r = trun.reader();
    let (_, flags) = r.version_flags()?;
    let count = r.u32("sample_count")?;
    if flags & TRUN_DATA_OFFSET != 0 {
        r.skip(4, "data_offset")?;
    }
    let first_flags = if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
        Some(r.u32("first_sample_flags")?)
    } else {
        None
    };
    let has_duration = flags & TRUN_DURATION != 0;
    let has_flags = flags & TRUN_FLAGS != 0;
    let per_sample = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTS_OFFSET]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count()
        * 4;
    // Check the whole table up front so a bogus count fails fast.
    let table_len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(per_sample))
        .unwrap_or(usize::MAX);
    if table_len > r.remaining() {
        return Err(r.short(table_len, "sample table"));
    }

    fields.sample_count = fields
        .sample_count
        .checked_add(count)
        .ok_or_else(|| overflow("sample count"))?;
    let mut duration: u64 = 0;
    let mut keyframes: u32 = 0;
    if per_sample == 0 {
        // No table: every sample uses the defaults, so no need to loop.
        duration = u64::from(default_duration) * u64::from(count);
        if count > 0 {
            let first = first_flags.unwrap_or(default_flags);
            keyframes = u32::from(is_sync(first));
            if is_sync(default_flags) {
                keyframes += count - 1;
            }
            if !*first_sample_seen {
                fields.starts_with_keyframe = is_sync(first);
            }
        }
    } else {
        for i in 0..count {
            let sample_duration = if has_duration {
                r.u32("sample_duration")?
            } else {
                default_duration
            };
            if flags & TRUN_SIZE != 0 {
                r.skip(4, "sample_size")?;
            }
            let table_flags = if has_flags {
                Some(r.u32("sample_flags")?)
            } else {
                None
            };
            if flags & TRUN_CTS_OFFSET != 0 {
                r.skip(4, "sample_composition_time_offset")?;
            }
            let sample_flags = match (i, first_flags, table_flags) {
                (0, Some(first), _) => first,
                (_, _, Some(f)) => f,
                _ => default_flags,
            };
            let sync = is_sync(sample_flags);
            if i == 0 && !*first_sample_seen {
                fields.starts_with_keyframe = sync;
            }
            // Bounded by count, which is a u32, and by u64 for durations.
            duration += u64::from(sample_duration);
            keyframes += u32::from(sync);
        }
    }
    if count > 0 {
        *first_sample_seen = true;
    }
    fields.duration = fields
        .duration
        .checked_add(duration)
        .ok_or_else(|| overflow("fragment duration"))?;
    fields.keyframes = fields
        .keyframes
        .checked_add(keyframes)
        .ok_or_else(|| overflow("keyframe count"))?;
    Ok(())
}
