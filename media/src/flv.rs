//! FLV container writer used to feed RTMP-ingested media to ffmpeg on stdin,
//! plus helpers that inspect the codec headers at the start of FLV/RTMP
//! audio and video tag payloads.

use bytes::Bytes;

/// The type of an FLV tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// Audio tag (type 8).
    Audio,
    /// Video tag (type 9).
    Video,
    /// Script data / AMF metadata tag (type 18).
    Script,
}

impl TagKind {
    /// The FLV tag type byte for this kind.
    pub fn type_byte(self) -> u8 {
        match self {
            TagKind::Audio => 8,
            TagKind::Video => 9,
            TagKind::Script => 18,
        }
    }
}

/// One FLV tag: its kind, timestamp and payload (as carried by RTMP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Tag type.
    pub kind: TagKind,
    /// Timestamp in milliseconds; the top 8 bits go in the extended byte.
    pub timestamp_ms: u32,
    /// Tag payload.
    pub data: Bytes,
}

/// Largest payload an FLV tag can describe (24-bit DataSize).
pub const MAX_TAG_DATA_LEN: usize = 0x00FF_FFFF;

/// Size of the FLV tag header preceding the payload.
pub const TAG_HEADER_LEN: usize = 11;

/// Errors from writing FLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The tag payload does not fit FLV's 24-bit size field.
    #[error("FLV tag payload is {len} bytes, more than the 16777215-byte maximum")]
    TagTooLarge {
        /// Payload length that was rejected.
        len: usize,
    },
}

/// Returns the 9-byte FLV file header followed by `PreviousTagSize0` (0).
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let mut flags = 0u8;
    if has_audio {
        flags |= 0x04;
    }
    if has_video {
        flags |= 0x01;
    }
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Appends `tag` to `out`: the 11-byte tag header, the payload and the
/// 32-bit PreviousTagSize (11 + payload length).
///
/// Fails (writing nothing) if the payload exceeds [`MAX_TAG_DATA_LEN`],
/// which FLV cannot represent.
pub fn encode_tag(tag: &FlvTag, out: &mut Vec<u8>) -> Result<(), FlvError> {
    let len = tag.data.len();
    if len > MAX_TAG_DATA_LEN {
        return Err(FlvError::TagTooLarge { len });
    }
    // len <= 0xFFFFFF, so both conversions are lossless.
    let size = len as u32;
    let prev = size + TAG_HEADER_LEN as u32;
    let [t3, t2, t1, t0] = tag.timestamp_ms.to_be_bytes();
    let [_, s2, s1, s0] = size.to_be_bytes();
    out.reserve(TAG_HEADER_LEN + len + 4);
    out.push(tag.kind.type_byte());
    out.extend_from_slice(&[s2, s1, s0]);
    // Lower 24 bits first, then the extended (most significant) byte.
    out.extend_from_slice(&[t2, t1, t0, t3]);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&tag.data);
    out.extend_from_slice(&prev.to_be_bytes());
    Ok(())
}

/// FLV video codec, from the low nibble of the first video tag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// AVC / H.264 (codec id 7).
    H264,
    /// Any other codec id.
    Other(u8),
}

/// What the first bytes of a video tag payload say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoInfo {
    /// Codec of the payload.
    pub codec: VideoCodec,
    /// Frame type (high nibble) is 1, i.e. a keyframe.
    pub keyframe: bool,
    /// H.264 with AVCPacketType 0: an AVCDecoderConfigurationRecord.
    pub sequence_header: bool,
}

/// Inspects a video tag payload; `None` if it is empty.
pub fn video_info(data: &[u8]) -> Option<VideoInfo> {
    let first = *data.first()?;
    let codec = match first & 0x0F {
        7 => VideoCodec::H264,
        other => VideoCodec::Other(other),
    };
    let sequence_header = codec == VideoCodec::H264 && data.get(1) == Some(&0);
    Some(VideoInfo {
        codec,
        keyframe: first >> 4 == 1,
        sequence_header,
    })
}

/// FLV audio codec, from the high nibble of the first audio tag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// AAC (sound format 10).
    Aac,
    /// Any other sound format.
    Other(u8),
}

/// What the first bytes of an audio tag payload say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioInfo {
    /// Codec of the payload.
    pub codec: AudioCodec,
    /// AAC with AACPacketType 0: an AudioSpecificConfig.
    pub sequence_header: bool,
}

/// Inspects an audio tag payload; `None` if it is empty.
pub fn audio_info(data: &[u8]) -> Option<AudioInfo> {
    let first = *data.first()?;
    let codec = match first >> 4 {
        10 => AudioCodec::Aac,
        other => AudioCodec::Other(other),
    };
    let sequence_header = codec == AudioCodec::Aac && data.get(1) == Some(&0);
    Some(AudioInfo {
        codec,
        sequence_header,
    })
}

/// Human-readable name of an FLV video codec id (12 is enhanced-RTMP HEVC).
pub fn codec_name(codec_id: u8) -> &'static str {
    match codec_id {
        2 => "Sorenson H.263",
        3 => "Screen video",
        4 => "On2 VP6",
        5 => "VP6 alpha",
        6 => "Screen video v2",
        7 => "H.264",
        12 => "HEVC",
        _ => "unknown",
    }
}

/// Why an FLV file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvReadError {
    /// The file does not start with an FLV header.
    #[error("not an FLV file (no FLV header)")]
    NotFlv,
    /// A tag runs past the end of the file.
    #[error("tag at byte {offset} runs past the end of the file")]
    Truncated {
        /// Where the tag starts.
        offset: usize,
    },
}

/// Reads every audio, video and script tag of a whole FLV file (benchmarks and tests feed
/// files to the transcoder the way RTMP ingest feeds it live tags).
pub fn read_file(bytes: &Bytes) -> Result<Vec<FlvTag>, FlvReadError> {
    if bytes.len() < 9 || &bytes[..3] != b"FLV" {
        return Err(FlvReadError::NotFlv);
    }
    let header_len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let mut offset = header_len.saturating_add(4); // header, then PreviousTagSize0
    let mut tags = Vec::new();
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + TAG_HEADER_LEN)
            .ok_or(FlvReadError::Truncated { offset })?;
        let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        let timestamp_ms = u32::from_be_bytes([header[7], header[4], header[5], header[6]]);
        let kind = match header[0] & 0x1f {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        };
        let start = offset + TAG_HEADER_LEN;
        let end = start
            .checked_add(size)
            .filter(|end| *end <= bytes.len())
            .ok_or(FlvReadError::Truncated { offset })?;
        if let Some(kind) = kind {
            tags.push(FlvTag {
                kind,
                timestamp_ms,
                data: bytes.slice(start..end),
            });
        }
        offset = end + 4; // PreviousTagSize
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u24(b: &[u8]) -> u32 {
        (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
    }

    /// Parses a stream back into (type, timestamp, data) triples, checking
    /// every PreviousTagSize along the way.
    fn parse(stream: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        assert_eq!(&stream[..3], b"FLV");
        let header_len = u32::from_be_bytes(stream[5..9].try_into().unwrap()) as usize;
        let mut pos = header_len;
        assert_eq!(&stream[pos..pos + 4], &[0, 0, 0, 0]);
        pos += 4;
        let mut tags = Vec::new();
        while pos < stream.len() {
            let h = &stream[pos..pos + 11];
            let size = u24(&h[1..4]) as usize;
            let ts = u24(&h[4..7]) | (u32::from(h[7]) << 24);
            assert_eq!(u24(&h[8..11]), 0, "stream id");
            let data = stream[pos + 11..pos + 11 + size].to_vec();
            let prev_at = pos + 11 + size;
            let prev = u32::from_be_bytes(stream[prev_at..prev_at + 4].try_into().unwrap());
            assert_eq!(prev as usize, 11 + size);
            tags.push((h[0], ts, data));
            pos = prev_at + 4;
        }
        tags
    }

    #[test]
    fn header_flags() {
        assert_eq!(
            file_header(true, true),
            [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0]
        );
        assert_eq!(file_header(true, false)[4], 4);
        assert_eq!(file_header(false, true)[4], 1);
        assert_eq!(file_header(false, false)[4], 0);
    }

    #[test]
    fn round_trip_layout() {
        let tags = [
            FlvTag {
                kind: TagKind::Script,
                timestamp_ms: 0,
                data: Bytes::from_static(b"\x02\x00\x0aonMetaData"),
            },
            FlvTag {
                kind: TagKind::Video,
                timestamp_ms: 0x0012_3456,
                data: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2]),
            },
            FlvTag {
                kind: TagKind::Audio,
                timestamp_ms: 0x1234_5678,
                data: Bytes::from_static(&[0xAF, 1, 9]),
            },
            FlvTag {
                kind: TagKind::Audio,
                timestamp_ms: u32::MAX,
                data: Bytes::new(),
            },
        ];
        let mut out = file_header(true, true).to_vec();
        for t in &tags {
            encode_tag(t, &mut out).unwrap();
        }
        let parsed = parse(&out);
        assert_eq!(parsed.len(), tags.len());
        for (t, (ty, ts, data)) in tags.iter().zip(&parsed) {
            assert_eq!(*ty, t.kind.type_byte());
            assert_eq!(*ts, t.timestamp_ms);
            assert_eq!(data.as_slice(), &t.data[..]);
        }
        // The extended byte carries the top 8 bits of a > 2^24 timestamp.
        let audio_at = 13 + (11 + tags[0].data.len() + 4) + (11 + tags[1].data.len() + 4);
        assert_eq!(&out[audio_at + 4..audio_at + 8], &[0x34, 0x56, 0x78, 0x12]);
    }

    #[test]
    fn oversized_tag_is_rejected() {
        let tag = FlvTag {
            kind: TagKind::Video,
            timestamp_ms: 0,
            data: Bytes::from(vec![0u8; MAX_TAG_DATA_LEN + 1]),
        };
        let mut out = Vec::new();
        assert_eq!(
            encode_tag(&tag, &mut out),
            Err(FlvError::TagTooLarge {
                len: MAX_TAG_DATA_LEN + 1
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn video_info_variants() {
        assert_eq!(video_info(&[]), None);
        assert_eq!(
            video_info(&[0x17, 0]),
            Some(VideoInfo {
                codec: VideoCodec::H264,
                keyframe: true,
                sequence_header: true
            })
        );
        let nalu = video_info(&[0x27, 1]).unwrap();
        assert!(!nalu.keyframe && !nalu.sequence_header);
        // Single byte: cannot be a sequence header.
        assert!(!video_info(&[0x17]).unwrap().sequence_header);
        let vp6 = video_info(&[0x14, 0]).unwrap();
        assert_eq!(vp6.codec, VideoCodec::Other(4));
        assert!(vp6.keyframe && !vp6.sequence_header);
    }

    #[test]
    fn audio_info_variants() {
        assert_eq!(audio_info(&[]), None);
        assert_eq!(
            audio_info(&[0xAF, 0]),
            Some(AudioInfo {
                codec: AudioCodec::Aac,
                sequence_header: true
            })
        );
        assert!(!audio_info(&[0xAF, 1]).unwrap().sequence_header);
        assert!(!audio_info(&[0xAF]).unwrap().sequence_header);
        let mp3 = audio_info(&[0x2F, 0]).unwrap();
        assert_eq!(mp3.codec, AudioCodec::Other(2));
        assert!(!mp3.sequence_header);
    }

    #[test]
    fn codec_names() {
        assert_eq!(codec_name(7), "H.264");
        assert_eq!(codec_name(12), "HEVC");
        assert_eq!(codec_name(2), "Sorenson H.263");
        assert_eq!(codec_name(0), "unknown");
        assert_eq!(codec_name(255), "unknown");
    }

    #[test]
    fn files_read_back_what_was_written() {
        let tags = vec![
            FlvTag {
                kind: TagKind::Video,
                timestamp_ms: 0,
                data: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2]),
            },
            FlvTag {
                kind: TagKind::Audio,
                timestamp_ms: 0x0100_0020,
                data: Bytes::from_static(&[0xaf, 1, 9]),
            },
        ];
        let mut file = file_header(true, true).to_vec();
        for tag in &tags {
            encode_tag(tag, &mut file).unwrap();
        }
        let file = Bytes::from(file);
        assert_eq!(read_file(&file).unwrap(), tags);
        assert_eq!(
            read_file(&file.slice(..file.len() - 6)),
            Err(FlvReadError::Truncated { offset: 35 })
        );
        assert_eq!(
            read_file(&Bytes::from_static(b"GIF89a...")),
            Err(FlvReadError::NotFlv)
        );
    }
}
