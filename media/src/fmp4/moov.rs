//! The initialization segment: `moov`, its track and sample entry, codec strings and `trex`
//! defaults.

use super::*;

/// Per-track defaults from `mvex/trex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trex {
    pub(super) track_id: u32,
    pub(super) duration: u32,
    pub(super) flags: u32,
}

pub(super) fn parse_moov(payload: &[u8]) -> Result<(TrackInfo, Vec<Trex>), Fmp4Error> {
    let mut track = None;
    let mut trex = Vec::new();
    for child in children(payload, FourCc::MOOV) {
        let child = child?;
        if child.fourcc == FourCc::TRAK && track.is_none() {
            track = Some(parse_trak(child.payload)?);
        } else if child.fourcc == FourCc::MVEX {
            for entry in children(child.payload, FourCc::MVEX) {
                let entry = entry?;
                if entry.fourcc == FourCc::TREX {
                    trex.push(parse_trex(&entry)?);
                }
            }
        }
    }
    let track = track.ok_or(Fmp4Error::MissingBox {
        parent: FourCc::MOOV,
        child: FourCc::TRAK,
    })?;
    Ok((track, trex))
}

pub(super) fn parse_trex(child: &Child<'_>) -> Result<Trex, Fmp4Error> {
    let mut r = child.reader();
    r.version_flags()?;
    let track_id = r.u32("track_ID")?;
    r.skip(4, "default_sample_description_index")?;
    let duration = r.u32("default_sample_duration")?;
    r.skip(4, "default_sample_size")?;
    let flags = r.u32("default_sample_flags")?;
    Ok(Trex {
        track_id,
        duration,
        flags,
    })
}

pub(super) fn parse_trak(trak: &[u8]) -> Result<TrackInfo, Fmp4Error> {
    let tkhd = require_child(trak, FourCc::TRAK, FourCc::TKHD)?;
    let mut r = tkhd.reader();
    let (version, _) = r.version_flags()?;
    r.sized(version, "creation_time")?;
    r.sized(version, "modification_time")?;
    let track_id = r.u32("track_ID")?;

    let mdia = require_child(trak, FourCc::TRAK, FourCc::MDIA)?;
    let mdhd = require_child(mdia.payload, FourCc::MDIA, FourCc::MDHD)?;
    let mut r = mdhd.reader();
    let (version, _) = r.version_flags()?;
    r.sized(version, "creation_time")?;
    r.sized(version, "modification_time")?;
    let timescale = r.u32("timescale")?;

    let hdlr = require_child(mdia.payload, FourCc::MDIA, FourCc::HDLR)?;
    let mut r = hdlr.reader();
    r.version_flags()?;
    r.skip(4, "pre_defined")?;
    let kind = match r.array("handler_type")? {
        [b'v', b'i', b'd', b'e'] => TrackKind::Video,
        [b's', b'o', b'u', b'n'] => TrackKind::Audio,
        other => TrackKind::Other(FourCc(other)),
    };

    let minf = require_child(mdia.payload, FourCc::MDIA, FourCc::MINF)?;
    let stbl = require_child(minf.payload, FourCc::MINF, FourCc::STBL)?;
    let stsd = require_child(stbl.payload, FourCc::STBL, FourCc::STSD)?;
    let mut r = stsd.reader();
    r.version_flags()?;
    r.u32("entry_count")?;
    let entry = children(r.rest(), FourCc::STSD)
        .next()
        .transpose()?
        .ok_or_else(|| Fmp4Error::Invalid {
            fourcc: FourCc::STSD,
            detail: "no sample entry".to_owned(),
        })?;

    let mut info = TrackInfo {
        track_id,
        timescale,
        kind,
        codec: entry.fourcc.to_string(),
        width: 0,
        height: 0,
        sample_rate: 0,
        channels: 0,
    };
    match kind {
        TrackKind::Video => read_visual_entry(&entry, &mut info)?,
        TrackKind::Audio => read_audio_entry(&entry, &mut info)?,
        TrackKind::Other(_) => {}
    }
    Ok(info)
}

/// VisualSampleEntry: 78 payload bytes before its child boxes.
pub(super) fn read_visual_entry(entry: &Child<'_>, info: &mut TrackInfo) -> Result<(), Fmp4Error> {
    let mut r = entry.reader();
    r.skip(24, "reserved and pre_defined fields")?;
    info.width = r.u16("width")?;
    info.height = r.u16("height")?;
    r.skip(50, "resolution, frame_count, compressorname and depth")?;
    match &entry.fourcc.0 {
        b"avc1" | b"avc3" => {
            if let Some(avcc) = find_child(r.rest(), entry.fourcc, FourCc::AVCC)? {
                let mut a = avcc.reader();
                a.skip(1, "configurationVersion")?;
                let [profile, compat, level] = a.array("profile and level")?;
                info.codec = format!("{}.{profile:02x}{compat:02x}{level:02x}", entry.fourcc);
            }
        }
        b"hvc1" | b"hev1" => {
            if let Some(hvcc) = find_child(r.rest(), entry.fourcc, FourCc::HVCC)? {
                info.codec = hevc_codec(entry.fourcc, &hvcc)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Codec string per ISO/IEC 14496-15 annex E, e.g. `hvc1.1.6.L93.B0`.
pub(super) fn hevc_codec(fourcc: FourCc, hvcc: &Child<'_>) -> Result<String, Fmp4Error> {
    let mut r = hvcc.reader();
    r.skip(1, "configurationVersion")?;
    let b = r.u8("general_profile_idc")?;
    let compat = r.u32("general_profile_compatibility_flags")?;
    let constraints: [u8; 6] = r.array("general_constraint_indicator_flags")?;
    let level = r.u8("general_level_idc")?;
    let space = match b >> 6 {
        0 => "",
        1 => "A",
        2 => "B",
        _ => "C",
    };
    let tier = if b & 0x20 != 0 { 'H' } else { 'L' };
    let mut codec = format!(
        "{fourcc}.{space}{}.{:X}.{tier}{level}",
        b & 0x1f,
        compat.reverse_bits()
    );
    let used = constraints
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |i| i + 1);
    for c in constraints.iter().take(used) {
        codec.push_str(&format!(".{c:X}"));
    }
    Ok(codec)
}

/// AudioSampleEntry: 28 payload bytes before its child boxes (version 0),
/// plus the QuickTime version 1/2 extensions.
pub(super) fn read_audio_entry(entry: &Child<'_>, info: &mut TrackInfo) -> Result<(), Fmp4Error> {
    let mut r = entry.reader();
    r.skip(8, "reserved and data_reference_index")?;
    let version = r.u16("version")?;
    r.skip(6, "reserved")?;
    info.channels = r.u16("channelcount")?;
    r.skip(6, "samplesize and pre_defined")?;
    info.sample_rate = r.u32("samplerate")? >> 16;
    match version {
        1 => r.skip(16, "QuickTime v1 fields")?,
        2 => {
            r.skip(4, "sizeOfStructOnly")?;
            let rate = f64::from_bits(r.u64("audioSampleRate")?);
            info.sample_rate = if rate.is_finite() && rate >= 0.0 && rate <= f64::from(u32::MAX) {
                // Range checked above, so the cast cannot saturate.
                rate.round() as u32
            } else {
                0
            };
            info.channels = u16::try_from(r.u32("numAudioChannels")?).unwrap_or(u16::MAX);
            r.skip(20, "QuickTime v2 fields")?;
        }
        _ => {}
    }
    match &entry.fourcc.0 {
        b"mp4a" => {
            if let Some(esds) = find_child(r.rest(), entry.fourcc, FourCc::ESDS)? {
                info.codec = mp4a_codec(&esds)?;
            }
        }
        b"Opus" => info.codec = "opus".to_owned(),
        b"fLaC" => info.codec = "flac".to_owned(),
        _ => {}
    }
    Ok(())
}

/// Reads one descriptor (tag, 7-bit-continuation size, body).
pub(super) fn read_descriptor<'a>(r: &mut Reader<'a>) -> Result<(u8, Reader<'a>), Fmp4Error> {
    let tag = r.u8("descriptor tag")?;
    let mut size: u32 = 0;
    let mut size_len = 0;
    loop {
        let b = r.u8("descriptor size")?;
        size_len += 1;
        size = (size << 7) | u32::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
        if size_len == 4 {
            return Err(Fmp4Error::Invalid {
                fourcc: r.fourcc(),
                detail: format!("descriptor 0x{tag:02x} size is longer than 4 bytes"),
            });
        }
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let body = r.take(size, "descriptor body")?;
    Ok((
        tag,
        Reader {
            data: body,
            pos: 0,
            scope: Scope::Descriptor {
                fourcc: r.fourcc(),
                tag,
            },
            header_len: 1 + size_len,
        },
    ))
}

pub(super) fn find_descriptor<'a>(
    r: &mut Reader<'a>,
    want: u8,
) -> Result<Option<Reader<'a>>, Fmp4Error> {
    while r.remaining() > 0 {
        let (tag, body) = read_descriptor(r)?;
        if tag == want {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

/// `mp4a.<objectTypeIndication hex>[.<audio object type>]` from `esds`.
pub(super) fn mp4a_codec(esds: &Child<'_>) -> Result<String, Fmp4Error> {
    let mut r = esds.reader();
    r.version_flags()?;
    let Some(mut es) = find_descriptor(&mut r, 0x03)? else {
        return Ok("mp4a".to_owned());
    };
    es.skip(2, "ES_ID")?;
    let flags = es.u8("ES flags")?;
    if flags & 0x80 != 0 {
        es.skip(2, "dependsOn_ES_ID")?;
    }
    if flags & 0x40 != 0 {
        let len = es.u8("URLlength")?;
        es.skip(usize::from(len), "URLstring")?;
    }
    if flags & 0x20 != 0 {
        es.skip(2, "OCR_ES_Id")?;
    }
    let Some(mut config) = find_descriptor(&mut es, 0x04)? else {
        return Ok("mp4a".to_owned());
    };
    let oti = config.u8("objectTypeIndication")?;
    config.skip(12, "streamType, bufferSizeDB and bitrates")?;
    if oti != 0x40 {
        return Ok(format!("mp4a.{oti:02x}"));
    }
    let aot = match find_descriptor(&mut config, 0x05)? {
        Some(dsi) => audio_object_type(dsi.rest()),
        None => None,
    };
    Ok(match aot {
        Some(aot) => format!("mp4a.40.{aot}"),
        None => "mp4a.40".to_owned(),
    })
}

/// Audio object type from the start of an AudioSpecificConfig: 5 bits, with
/// 31 escaping to 32 + the next 6 bits.
pub(super) fn audio_object_type(asc: &[u8]) -> Option<u8> {
    let first = *asc.first()?;
    let aot = first >> 3;
    if aot != 31 {
        return Some(aot);
    }
    let second = *asc.get(1)?;
    Some(32 + (((first & 0x07) << 3) | (second >> 5)))
}
