//! The fMP4 splitter over what a real ffmpeg writes: one init segment, then contiguous
//! fragments with the codec facts the packager needs.

#![allow(clippy::unwrap_used)]

use cascade_media::fmp4::{Fmp4Item, Fmp4Splitter, Fragment, InitSegment, TrackKind};

/// The one init segment at the head of `items`, and the fragments after it.
fn init_and_fragments(items: &[Fmp4Item]) -> (&InitSegment, Vec<&Fragment>) {
    let Some((Fmp4Item::Init(init), rest)) = items.split_first() else {
        panic!("the output does not start with an init segment: {items:?}");
    };
    let fragments = rest
        .iter()
        .map(|item| match item {
            Fmp4Item::Fragment(f) => f,
            Fmp4Item::Init(_) => panic!("a second init segment"),
        })
        .collect();
    (init, fragments)
}

/// Runs ffmpeg with the given mapping/codec options and splits its output.
fn ffmpeg_items(name: &str, codec_args: &[&str]) -> Vec<Fmp4Item> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "transcoder-pure-{}-{name}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.mp4");
    let mut args = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "4",
    ];
    args.extend_from_slice(codec_args);
    args.extend_from_slice(&[
        "-movflags",
        "+empty_moov+default_base_moof+frag_keyframe",
        "-frag_duration",
        "500000",
        "-f",
        "mp4",
    ]);
    let status = std::process::Command::new("ffmpeg")
        .args(&args)
        .arg(&out)
        .status()
        .expect("ffmpeg must be installed");
    assert!(status.success(), "ffmpeg failed: {status}");
    let data = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let mut s = Fmp4Splitter::new();
    let mut items = Vec::new();
    for chunk in data.chunks(1000) {
        items.extend(s.push(chunk).unwrap());
    }
    s.finish().unwrap();
    assert!(matches!(items[0], Fmp4Item::Init(_)));
    assert_eq!(
        items
            .iter()
            .filter(|i| matches!(i, Fmp4Item::Init(_)))
            .count(),
        1
    );
    items
}

fn assert_contiguous(frags: &[&Fragment]) {
    assert!(frags.len() > 1);
    for pair in frags.windows(2) {
        assert!(pair[1].decode_time > pair[0].decode_time);
        assert_eq!(pair[1].decode_time, pair[0].decode_time + pair[0].duration);
        assert_eq!(pair[1].sequence_number, pair[0].sequence_number + 1);
    }
}

#[test]
fn real_ffmpeg_video() {
    let items = ffmpeg_items(
        "video",
        &[
            "-map",
            "0:v",
            "-c:v",
            "libx264",
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
        ],
    );
    let (init, frags) = init_and_fragments(&items);
    let track = &init.track;
    assert!(track.codec.starts_with("avc1."), "{}", track.codec);
    assert_eq!(track.codec.len(), "avc1.64001f".len());
    assert_eq!(track.kind, TrackKind::Video);
    assert_eq!((track.width, track.height), (320, 240));
    assert!(track.timescale > 0);
    assert_contiguous(&frags);
    assert_eq!(frags.iter().map(|f| f.sample_count).sum::<u32>(), 120);
    assert_eq!(frags.iter().map(|f| f.keyframes).sum::<u32>(), 4);
    let start = frags[0].decode_time;
    assert!(frags[0].starts_with_keyframe);
    for f in &frags {
        if f.keyframes > 0 {
            // Keyframes only open fragments, once per second of media.
            assert!(f.starts_with_keyframe);
            assert_eq!(f.keyframes, 1);
            assert_eq!((f.decode_time - start) % u64::from(track.timescale), 0);
        }
    }
}

#[test]
fn real_ffmpeg_audio() {
    let items = ffmpeg_items("audio", &["-map", "1:a", "-c:a", "aac", "-b:a", "128k"]);
    let (init, frags) = init_and_fragments(&items);
    let track = &init.track;
    assert_eq!(track.codec, "mp4a.40.2");
    assert_eq!(track.kind, TrackKind::Audio);
    assert!(
        matches!(track.sample_rate, 44100 | 48000),
        "{}",
        track.sample_rate
    );
    assert!(track.channels >= 1);
    assert_eq!((track.width, track.height), (0, 0));
    assert_contiguous(&frags);
    for f in &frags {
        assert!(f.starts_with_keyframe);
        assert_eq!(f.keyframes, f.sample_count);
    }
}
