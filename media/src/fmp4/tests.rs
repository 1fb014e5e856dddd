//! Unit tests of the splitter and readers over hand-built boxes.

use super::*;

fn boxed(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len() + 8)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(fourcc);
    out.extend_from_slice(payload);
    out
}

fn large_boxed(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u64 + 16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn full(fourcc: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![version];
    p.extend_from_slice(&flags.to_be_bytes()[1..]);
    p.extend_from_slice(payload);
    boxed(fourcc, &p)
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn ftyp() -> Vec<u8> {
    boxed(b"ftyp", b"isom\0\0\x02\0isomiso6mp41")
}

fn tkhd(version: u8, track_id: u32) -> Vec<u8> {
    let mut p = Vec::new();
    if version == 1 {
        p.extend_from_slice(&[0; 16]);
    } else {
        p.extend_from_slice(&[0; 8]);
    }
    p.extend_from_slice(&track_id.to_be_bytes());
    p.extend_from_slice(&[0; 60]);
    full(b"tkhd", version, 3, &p)
}

fn mdhd(version: u8, timescale: u32) -> Vec<u8> {
    let mut p = Vec::new();
    if version == 1 {
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&timescale.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
    } else {
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&timescale.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p.extend_from_slice(&[0x55, 0xc4, 0, 0]);
    full(b"mdhd", version, 0, &p)
}

fn hdlr(handler: &[u8; 4]) -> Vec<u8> {
    let mut p = vec![0; 4];
    p.extend_from_slice(handler);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(b"Handler\0");
    full(b"hdlr", 0, 0, &p)
}

fn visual_entry(fourcc: &[u8; 4], width: u16, height: u16, children: &[u8]) -> Vec<u8> {
    let mut p = vec![0; 6];
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&[0; 16]);
    p.extend_from_slice(&width.to_be_bytes());
    p.extend_from_slice(&height.to_be_bytes());
    p.extend_from_slice(&words(&[0x0048_0000, 0x0048_0000, 0]));
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&[0; 32]);
    p.extend_from_slice(&[0x00, 0x18, 0xff, 0xff]);
    assert_eq!(p.len(), 78);
    p.extend_from_slice(children);
    boxed(fourcc, &p)
}

fn avcc() -> Vec<u8> {
    boxed(b"avcC", &[1, 0x64, 0x00, 0x1f, 0xff, 0xe0, 0x00])
}

fn audio_entry(channels: u16, rate: u32, children: &[u8]) -> Vec<u8> {
    let mut p = vec![0; 6];
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&channels.to_be_bytes());
    p.extend_from_slice(&16u16.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&(rate << 16).to_be_bytes());
    assert_eq!(p.len(), 28);
    p.extend_from_slice(children);
    boxed(b"mp4a", &p)
}

/// A descriptor, its size written in the padded four-byte form when
/// `long` (as many muxers do).
fn descriptor(tag: u8, body: &[u8], long: bool) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap();
    let mut out = vec![tag];
    if long {
        out.extend_from_slice(&[
            0x80 | (len >> 21) as u8 & 0x7f,
            0x80 | (len >> 14) as u8 & 0x7f,
            0x80 | (len >> 7) as u8 & 0x7f,
            len as u8 & 0x7f,
        ]);
    } else {
        assert!(len < 128);
        out.push(len as u8);
    }
    out.extend_from_slice(body);
    out
}

/// esds for AAC LC 48 kHz stereo, exercising all optional ES fields.
fn esds(long: bool) -> Vec<u8> {
    let dsi = descriptor(0x05, &[0x11, 0x90], long);
    let mut dc = vec![0x40, 0x15, 0, 0x10, 0];
    dc.extend_from_slice(&words(&[128_000, 128_000]));
    dc.extend_from_slice(&dsi);
    let mut es = vec![0, 1, 0xe0, 0, 2, 3, b'a', b'b', b'c', 0, 4];
    es.extend_from_slice(&descriptor(0x04, &dc, long));
    es.extend_from_slice(&descriptor(0x06, &[2], long));
    full(b"esds", 0, 0, &descriptor(0x03, &es, long))
}

fn trak(version: u8, track_id: u32, timescale: u32, handler: &[u8; 4], entry: &[u8]) -> Vec<u8> {
    let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes()[..], entry].concat());
    let stbl = boxed(b"stbl", &stsd);
    let minf = boxed(b"minf", &stbl);
    let mdia = boxed(
        b"mdia",
        &[mdhd(version, timescale), hdlr(handler), minf].concat(),
    );
    boxed(b"trak", &[tkhd(version, track_id), mdia].concat())
}

fn trex(track_id: u32, duration: u32, flags: u32) -> Vec<u8> {
    full(b"trex", 0, 0, &words(&[track_id, 1, duration, 0, flags]))
}

fn moov(trak: &[u8], trexes: &[Vec<u8>]) -> Vec<u8> {
    let mvhd = full(b"mvhd", 0, 0, &[0; 96]);
    let mvex = boxed(b"mvex", &trexes.concat());
    boxed(b"moov", &[mvhd, trak.to_vec(), mvex].concat())
}

fn video_moov(trexes: &[Vec<u8>]) -> Vec<u8> {
    let entry = visual_entry(b"avc1", 320, 240, &avcc());
    moov(&trak(0, 1, 15360, b"vide", &entry), trexes)
}

fn tfhd(track_id: u32, duration: Option<u32>, flags: Option<u32>) -> Vec<u8> {
    let mut tf = 0x02_0000;
    let mut p = track_id.to_be_bytes().to_vec();
    if let Some(d) = duration {
        tf |= TFHD_DEFAULT_DURATION;
        p.extend_from_slice(&d.to_be_bytes());
    }
    if let Some(f) = flags {
        tf |= TFHD_DEFAULT_FLAGS;
        p.extend_from_slice(&f.to_be_bytes());
    }
    full(b"tfhd", 0, tf, &p)
}

fn tfdt(version: u8, time: u64) -> Vec<u8> {
    if version == 1 {
        full(b"tfdt", 1, 0, &time.to_be_bytes())
    } else {
        full(b"tfdt", 0, 0, &u32::try_from(time).unwrap().to_be_bytes())
    }
}

fn trun(flags: u32, count: u32, first_flags: Option<u32>, table: &[u32]) -> Vec<u8> {
    let mut p = count.to_be_bytes().to_vec();
    if flags & TRUN_DATA_OFFSET != 0 {
        p.extend_from_slice(&0u32.to_be_bytes());
    }
    let flags = match first_flags {
        Some(f) => {
            p.extend_from_slice(&f.to_be_bytes());
            flags | TRUN_FIRST_SAMPLE_FLAGS
        }
        None => flags,
    };
    p.extend_from_slice(&words(table));
    full(b"trun", 0, flags, &p)
}

fn moof(sequence: u32, trafs: &[Vec<u8>]) -> Vec<u8> {
    let mfhd = full(b"mfhd", 0, 0, &sequence.to_be_bytes());
    boxed(b"moof", &[vec![mfhd], trafs.to_vec()].concat().concat())
}

fn traf(parts: &[Vec<u8>]) -> Vec<u8> {
    boxed(b"traf", &parts.concat())
}

fn mdat(len: usize) -> Vec<u8> {
    boxed(b"mdat", &vec![0xAB; len])
}

const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

fn push_all(data: &[u8]) -> Vec<Fmp4Item> {
    let mut s = Fmp4Splitter::new();
    let items = s.push(data).unwrap();
    s.finish().unwrap();
    items
}

fn fragments(items: &[Fmp4Item]) -> Vec<&Fragment> {
    items
        .iter()
        .filter_map(|i| match i {
            Fmp4Item::Fragment(f) => Some(f),
            Fmp4Item::Init(_) => None,
        })
        .collect()
}

fn init_of(items: &[Fmp4Item]) -> &InitSegment {
    match &items[0] {
        Fmp4Item::Init(init) => init,
        other => panic!("expected init, got {other:?}"),
    }
}

#[test]
fn init_avc1() {
    let data = [ftyp(), video_moov(&[trex(1, 512, 0)])].concat();
    let items = push_all(&data);
    assert_eq!(items.len(), 1);
    let init = init_of(&items);
    assert_eq!(&init.bytes[..], &data[..]);
    assert_eq!(
        init.track,
        TrackInfo {
            track_id: 1,
            timescale: 15360,
            kind: TrackKind::Video,
            codec: "avc1.64001f".to_owned(),
            width: 320,
            height: 240,
            sample_rate: 0,
            channels: 0,
        }
    );
}

#[test]
fn init_version1_headers_and_avc3() {
    let entry = visual_entry(b"avc3", 1920, 1080, &avcc());
    let data = [ftyp(), moov(&trak(1, 7, 90000, b"vide", &entry), &[])].concat();
    let track = init_of(&push_all(&data)).track.clone();
    assert_eq!(track.track_id, 7);
    assert_eq!(track.timescale, 90000);
    assert_eq!(track.codec, "avc3.64001f");
    assert_eq!((track.width, track.height), (1920, 1080));
}

#[test]
fn init_mp4a() {
    for long in [false, true] {
        let entry = audio_entry(2, 48000, &esds(long));
        let data = [ftyp(), moov(&trak(0, 2, 48000, b"soun", &entry), &[])].concat();
        let track = init_of(&push_all(&data)).track.clone();
        assert_eq!(
            track,
            TrackInfo {
                track_id: 2,
                timescale: 48000,
                kind: TrackKind::Audio,
                codec: "mp4a.40.2".to_owned(),
                width: 0,
                height: 0,
                sample_rate: 48000,
                channels: 2,
            }
        );
    }
}

#[test]
fn mp4a_variants() {
    let codec = |esds: Vec<u8>| {
        let entry = audio_entry(1, 44100, &esds);
        let data = moov(&trak(0, 1, 44100, b"soun", &entry), &[]);
        Fmp4Splitter::new()
            .push(&data)
            .map(|items| init_of(&items).track.codec.clone())
    };
    // MP3 (0x6b): no audio object type.
    let mut dc = vec![0x6b, 0x15, 0, 0, 0];
    dc.extend_from_slice(&[0; 8]);
    let es = [vec![0, 1, 0], descriptor(0x04, &dc, false)].concat();
    assert_eq!(
        codec(full(b"esds", 0, 0, &descriptor(3, &es, false))).unwrap(),
        "mp4a.6b"
    );
    // Escaped audio object type 31 -> 32 + 6 bits (here 42, USAC).
    let mut dc = vec![0x40, 0x15, 0, 0, 0];
    dc.extend_from_slice(&[0; 8]);
    dc.extend_from_slice(&descriptor(0x05, &[0xf9, 0x40], false));
    let es = [vec![0, 1, 0], descriptor(0x04, &dc, false)].concat();
    assert_eq!(
        codec(full(b"esds", 0, 0, &descriptor(3, &es, false))).unwrap(),
        "mp4a.40.42"
    );
    // No esds at all.
    assert_eq!(codec(Vec::new()).unwrap(), "mp4a");
    // Descriptor size claims more than the box holds.
    let err = codec(full(b"esds", 0, 0, &[3, 0x20, 0, 1, 0])).unwrap_err();
    assert!(
        err.to_string().contains("box 'esds'") && err.to_string().contains("descriptor body"),
        "{err}"
    );
    // DecoderConfigDescriptor shorter than its fixed fields.
    let es = [vec![0, 1, 0], descriptor(0x04, &[0x40, 0x15], false)].concat();
    let err = codec(full(b"esds", 0, 0, &descriptor(3, &es, false))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "descriptor 0x04 in box 'esds' is 4 bytes, shorter than the 15 bytes needed to read its \
         streamType, bufferSizeDB and bitrates"
    );
    // Size encoding that never terminates.
    let err = codec(full(b"esds", 0, 0, &[3, 0x80, 0x80, 0x80, 0x80, 0])).unwrap_err();
    assert!(matches!(err, Fmp4Error::Invalid { .. }), "{err}");
}

#[test]
fn init_hevc_and_unknown_entries() {
    let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 93];
    hvcc.extend_from_slice(&[0; 10]);
    let entry = visual_entry(b"hvc1", 3840, 2160, &boxed(b"hvcC", &hvcc));
    let track = init_of(&push_all(&moov(&trak(0, 1, 90000, b"vide", &entry), &[])))
        .track
        .clone();
    assert_eq!(track.codec, "hvc1.1.6.L93.B0");
    assert_eq!((track.width, track.height), (3840, 2160));

    let entry = visual_entry(b"vp09", 640, 360, &[]);
    let track = init_of(&push_all(&moov(&trak(0, 1, 90000, b"vide", &entry), &[])))
        .track
        .clone();
    assert_eq!(track.codec, "vp09");
    assert_eq!(track.width, 640);

    let entry = boxed(b"wvtt", &[0; 8]);
    let track = init_of(&push_all(&moov(&trak(0, 3, 1000, b"text", &entry), &[])))
        .track
        .clone();
    assert_eq!(track.kind, TrackKind::Other(FourCc(*b"text")));
    assert_eq!(track.codec, "wvtt");
}

#[test]
fn decode_time_is_rewritten_in_place() {
    for version in [0u8, 1] {
        let moov_box = video_moov(&[trex(1, 512, NON_SYNC)]);
        let moof_box = moof(
            7,
            &[traf(&[
                tfhd(1, None, None),
                tfdt(version, 1000),
                trun(0, 2, None, &[]),
            ])],
        );
        let fragment = fragment_of(moov_box.clone(), moof_box).unwrap();
        let moved = fragment.with_decode_time(90_000).unwrap();
        assert_eq!(moved.decode_time, 90_000);
        assert_eq!(moved.bytes.len(), fragment.bytes.len());
        // Reading the rewritten bytes again gives the new time.
        let data = [ftyp(), moov_box, moved.bytes.to_vec()].concat();
        let mut s = Fmp4Splitter::new();
        let items = s.push(&data).unwrap();
        assert_eq!(fragments(&items)[0].decode_time, 90_000);
    }
    let moov_box = video_moov(&[trex(1, 512, NON_SYNC)]);
    let moof_box = moof(
        1,
        &[traf(&[
            tfhd(1, None, None),
            tfdt(0, 0),
            trun(0, 1, None, &[]),
        ])],
    );
    let fragment = fragment_of(moov_box, moof_box).unwrap();
    assert!(fragment.with_decode_time(u64::from(u32::MAX) + 1).is_err());
}

fn fragment_of(moov_box: Vec<u8>, moof_box: Vec<u8>) -> Result<Fragment, Fmp4Error> {
    let data = [ftyp(), moov_box, moof_box, mdat(16)].concat();
    let mut s = Fmp4Splitter::new();
    let items = s.push(&data)?;
    if items.len() < 2 {
        s.push(&[])?;
    }
    Ok(fragments(&items)[0].clone())
}

#[test]
fn trun_per_sample_durations_and_flags() {
    let table = [512, 100, SYNC, 512, 50, NON_SYNC, 1024, 50, NON_SYNC];
    let moof_box = moof(
        9,
        &[traf(&[
            tfhd(1, None, None),
            tfdt(1, 1 << 40),
            trun(
                TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS,
                3,
                None,
                &table,
            ),
        ])],
    );
    let f = fragment_of(video_moov(&[trex(1, 7, SYNC)]), moof_box).unwrap();
    assert_eq!(f.sequence_number, 9);
    assert_eq!(f.decode_time, 1 << 40);
    assert_eq!(f.duration, 2048);
    assert_eq!(f.sample_count, 3);
    assert!(f.starts_with_keyframe);
    assert_eq!(f.keyframes, 1);
}

#[test]
fn tfhd_defaults_and_first_sample_flags() {
    let moof_box = moof(
        1,
        &[traf(&[
            tfhd(1, Some(1000), Some(NON_SYNC)),
            tfdt(0, 3000),
            trun(
                TRUN_DATA_OFFSET | TRUN_SIZE,
                4,
                Some(SYNC),
                &[10, 20, 30, 40],
            ),
        ])],
    );
    let f = fragment_of(video_moov(&[trex(1, 7, SYNC)]), moof_box).unwrap();
    assert_eq!(f.decode_time, 3000);
    assert_eq!(f.duration, 4000);
    assert_eq!(f.sample_count, 4);
    assert!(f.starts_with_keyframe);
    assert_eq!(f.keyframes, 1);
}

#[test]
fn first_sample_flags_override_the_table() {
    let table = [NON_SYNC, NON_SYNC, SYNC];
    let moof_box = moof(
        1,
        &[traf(&[
            tfhd(1, Some(10), None),
            trun(TRUN_FLAGS, 3, Some(SYNC), &table),
        ])],
    );
    let f = fragment_of(video_moov(&[]), moof_box).unwrap();
    assert!(f.starts_with_keyframe);
    assert_eq!(f.keyframes, 2);
    assert_eq!(f.duration, 30);
}

#[test]
fn trex_defaults() {
    let moof_box = || {
        moof(
            1,
            &[traf(&[
                tfhd(1, None, None),
                tfdt(0, 0),
                trun(0, 5, None, &[]),
            ])],
        )
    };
    let f = fragment_of(
        video_moov(&[trex(2, 1, NON_SYNC), trex(1, 1024, 0)]),
        moof_box(),
    )
    .unwrap();
    assert_eq!(f.duration, 5120);
    assert_eq!(f.keyframes, 5);
    assert!(f.starts_with_keyframe);

    let f = fragment_of(video_moov(&[trex(1, 1024, NON_SYNC)]), moof_box()).unwrap();
    assert_eq!(f.keyframes, 0);
    assert!(!f.starts_with_keyframe);

    // No trex for the track: durations unknown, flags default to sync.
    let f = fragment_of(video_moov(&[trex(2, 1024, NON_SYNC)]), moof_box()).unwrap();
    assert_eq!(f.duration, 0);
    assert_eq!(f.keyframes, 5);
}

#[test]
fn sync_sample_rules() {
    assert!(is_sync(0));
    assert!(is_sync(SYNC));
    assert!(!is_sync(NON_SYNC));
    assert!(!is_sync(0x0001_0000));
    // depends_on == 1 without the non-sync bit is still not a keyframe.
    assert!(!is_sync(0x0100_0000));
    assert!(is_sync(0x0300_0000));
}

#[test]
fn multiple_truns_and_trafs() {
    let moof_box = moof(
        4,
        &[
            traf(&[
                tfhd(1, Some(100), Some(NON_SYNC)),
                tfdt(0, 500),
                trun(0, 0, None, &[]),
                trun(TRUN_DURATION, 2, Some(SYNC), &[50, 60]),
                trun(0, 3, None, &[]),
            ]),
            traf(&[tfhd(2, Some(9999), None), trun(0, 100, None, &[])]),
        ],
    );
    let f = fragment_of(video_moov(&[]), moof_box).unwrap();
    assert_eq!(f.sample_count, 5);
    assert_eq!(f.duration, 50 + 60 + 300);
    assert!(f.starts_with_keyframe);
    assert_eq!(f.keyframes, 1);
}

#[test]
fn missing_tfdt_continues_from_previous_fragment() {
    let frag = |seq, with_tfdt: bool| {
        let mut parts = vec![tfhd(1, Some(512), None)];
        if with_tfdt {
            parts.push(tfdt(0, 10_000));
        }
        parts.push(trun(0, 3, None, &[]));
        [moof(seq, &[traf(&parts)]), mdat(4)].concat()
    };
    let data = [
        ftyp(),
        video_moov(&[]),
        frag(1, true),
        frag(2, false),
        frag(3, false),
    ]
    .concat();
    let items = push_all(&data);
    let times: Vec<u64> = fragments(&items).iter().map(|f| f.decode_time).collect();
    assert_eq!(times, [10_000, 11_536, 13_072]);
}

fn sample_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
    let init = [
        ftyp(),
        boxed(b"free", &[0; 3]),
        video_moov(&[trex(1, 512, NON_SYNC)]),
    ]
    .concat();
    let frag = |seq: u32, time: u64, first: Option<u32>| {
        moof(
            seq,
            &[traf(&[
                tfhd(1, None, None),
                tfdt(1, time),
                trun(0, 15, first, &[]),
            ])],
        )
    };
    let f1 = [
        boxed(b"styp", b"msdh\0\0\0\0msdhmsix"),
        boxed(b"sidx", &[0; 24]),
        frag(1, 0, Some(SYNC)),
        mdat(100),
    ]
    .concat();
    let f2 = [
        full(b"prft", 0, 0, &[0; 12]),
        frag(2, 7680, None),
        large_boxed(b"mdat", &[1; 50]),
    ]
    .concat();
    let stream = [
        boxed(b"free", &[]),
        init.clone(),
        f1.clone(),
        boxed(b"skip", &[7; 5]),
        f2.clone(),
    ]
    .concat();
    (stream, vec![init, f1, f2])
}

#[test]
fn splits_stream_and_attaches_extra_boxes() {
    let (stream, expected) = sample_stream();
    let items = push_all(&stream);
    assert_eq!(items.len(), 3);
    assert_eq!(&init_of(&items).bytes[..], &expected[0][..]);
    let frags = fragments(&items);
    assert_eq!(&frags[0].bytes[..], &expected[1][..]);
    assert_eq!(&frags[1].bytes[..], &expected[2][..]);
    assert_eq!(frags[0].sequence_number, 1);
    assert!(frags[0].starts_with_keyframe);
    assert_eq!(frags[0].keyframes, 1);
    assert_eq!(frags[0].duration, 7680);
    assert_eq!(frags[1].decode_time, 7680);
    assert!(!frags[1].starts_with_keyframe);
    assert_eq!(frags[1].keyframes, 0);
}

#[test]
fn chunking_does_not_change_items() {
    let (stream, _) = sample_stream();
    let whole = push_all(&stream);
    for chunk in [1, 2, 3, 7, 8, 9, 16, 100, 1000] {
        let mut s = Fmp4Splitter::new();
        let mut items = Vec::new();
        for piece in stream.chunks(chunk) {
            items.extend(s.push(piece).unwrap());
        }
        s.finish().unwrap();
        assert_eq!(items, whole, "chunk size {chunk}");
    }
}

fn first_error(data: &[u8]) -> Fmp4Error {
    let mut s = Fmp4Splitter::new();
    match s.push(data) {
        Err(e) => e,
        Ok(_) => s.push(&[]).unwrap_err(),
    }
}

#[test]
fn top_level_errors() {
    assert_eq!(
        first_error(b"\0\0\0\0mdat"),
        Fmp4Error::SizeToEndOfFile {
            fourcc: FourCc(*b"mdat")
        }
    );
    assert_eq!(
        first_error(b"\0\0\0\x04ftyp"),
        Fmp4Error::SizeSmallerThanHeader {
            fourcc: FourCc(*b"ftyp"),
            size: 4,
            header_len: 8
        }
    );
    assert_eq!(
        first_error(&[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 9]),
        Fmp4Error::SizeSmallerThanHeader {
            fourcc: FourCc(*b"mdat"),
            size: 9,
            header_len: 16
        }
    );
    let err = first_error(b"\0\0\0\x10\x01\x02\x03\x04");
    assert_eq!(
        err.to_string(),
        "top-level box type '\\x01\\x02\\x03\\x04' is not printable ASCII; the stream is corrupt"
    );
    assert!(matches!(
        first_error(&mdat(4)),
        Fmp4Error::UnexpectedBox { .. }
    ));
    let no_moof = [ftyp(), video_moov(&[]), mdat(4)].concat();
    assert_eq!(
        first_error(&no_moof).to_string(),
        "unexpected top-level box 'mdat' without a preceding 'moof'"
    );
    let m = moof(1, &[traf(&[tfhd(1, None, None)])]);
    let two_moofs = [ftyp(), video_moov(&[]), m.clone(), m].concat();
    assert!(matches!(
        first_error(&two_moofs),
        Fmp4Error::UnexpectedBox { .. }
    ));
    let second_moov = [ftyp(), video_moov(&[]), video_moov(&[])].concat();
    assert!(matches!(
        first_error(&second_moov),
        Fmp4Error::UnexpectedBox { .. }
    ));
}

#[test]
fn size_limits_apply_before_buffering() {
    let mut s = Fmp4Splitter::with_max_box_size(1000);
    // Only the header has arrived, but it already exceeds the limit.
    assert_eq!(
        s.push(b"\0\0\x13\x88mdat").unwrap_err(),
        Fmp4Error::BoxTooLarge {
            fourcc: FourCc(*b"mdat"),
            size: 5000,
            limit: 1000
        }
    );
    // Still failing: the splitter is poisoned.
    assert!(s.push(&[]).is_err());

    let mut s = Fmp4Splitter::new();
    assert!(matches!(
        s.push(&[
            0, 0, 0, 1, b'm', b'd', b'a', b't', 0xff, 0, 0, 0, 0, 0, 0, 0
        ]),
        Err(Fmp4Error::BoxTooLarge { .. })
    ));

    // Several small boxes cannot add up past the limit either.
    let mut s = Fmp4Splitter::with_max_box_size(1000);
    let err = s
        .push(&[boxed(b"uuid", &[0; 600]), boxed(b"uuid", &[0; 600])].concat())
        .unwrap_err();
    assert!(
        matches!(err, Fmp4Error::ItemTooLarge { size: 1216, .. }),
        "{err}"
    );
}

#[test]
fn truncated_boxes_are_named() {
    let moof_box = moof(1, &[traf(&[tfhd(1, None, None), full(b"trun", 0, 0, &[])])]);
    assert_eq!(
        fragment_of(video_moov(&[]), moof_box)
            .unwrap_err()
            .to_string(),
        "box 'trun' is 12 bytes, shorter than the 16 bytes needed to read its sample_count"
    );
    // sample_count promising a table that is not there.
    let moof_box = moof(
        1,
        &[traf(&[
            tfhd(1, None, None),
            trun(TRUN_DURATION, 0x4000_0000, None, &[1, 2]),
        ])],
    );
    let err = fragment_of(video_moov(&[]), moof_box).unwrap_err();
    assert!(
        matches!(
            err,
            Fmp4Error::Truncated {
                field: "sample table",
                needed: 0x1_0000_0010,
                ..
            }
        ),
        "{err}"
    );
    // Sample count overflow across truns.
    let moof_box = moof(
        1,
        &[traf(&[
            tfhd(1, None, None),
            trun(0, u32::MAX, None, &[]),
            trun(0, 1, None, &[]),
        ])],
    );
    assert!(matches!(
        fragment_of(video_moov(&[]), moof_box),
        Err(Fmp4Error::Invalid { .. })
    ));
    let moof_box = moof(
        1,
        &[traf(&[full(
            b"tfhd",
            0,
            TFHD_DEFAULT_DURATION,
            &[0, 0, 0, 1],
        )])],
    );
    assert!(matches!(
        fragment_of(video_moov(&[]), moof_box),
        Err(Fmp4Error::Truncated { .. })
    ));
    let moof_box = boxed(b"moof", &full(b"mfhd", 0, 0, &1u32.to_be_bytes()));
    assert_eq!(
        fragment_of(video_moov(&[]), moof_box).unwrap_err(),
        Fmp4Error::MissingBox {
            parent: FourCc(*b"moof"),
            child: FourCc(*b"traf")
        }
    );
}

#[test]
fn malformed_moov_errors() {
    // A trak whose declared size runs past the end of moov.
    let mut t = trak(0, 1, 1000, b"vide", &visual_entry(b"avc1", 1, 1, &[]));
    t[3] = t[3].wrapping_add(10);
    let err = first_error(&boxed(b"moov", &t));
    assert!(matches!(err, Fmp4Error::ChildOverrun { .. }), "{err}");
    // Stray non-zero trailing bytes.
    let err = first_error(&boxed(b"moov", &[1, 2, 3]));
    assert_eq!(
        err,
        Fmp4Error::TrailingBytes {
            parent: FourCc(*b"moov"),
            len: 3
        }
    );
    // No trak.
    assert!(matches!(
        first_error(&boxed(b"moov", &[])),
        Fmp4Error::MissingBox { .. }
    ));
    // Visual sample entry cut short.
    let short_entry = boxed(b"avc1", &[0; 30]);
    let err = first_error(&moov(&trak(0, 1, 1000, b"vide", &short_entry), &[]));
    assert_eq!(
        err.to_string(),
        "box 'avc1' is 38 bytes, shorter than the 86 bytes needed to read its resolution, \
         frame_count, compressorname and depth"
    );
    // Empty stsd.
    let err = first_error(&moov(&trak(0, 1, 1000, b"vide", &[]), &[]));
    assert!(matches!(err, Fmp4Error::Invalid { .. }), "{err}");
}

#[test]
fn items_before_an_error_are_delivered() {
    let data = [
        ftyp(),
        video_moov(&[]),
        b"\0\0\0\x10\xff\xff\xff\xff".to_vec(),
    ]
    .concat();
    let mut s = Fmp4Splitter::new();
    assert_eq!(s.push(&data).unwrap().len(), 1);
    assert!(matches!(s.push(&[]), Err(Fmp4Error::InvalidBoxType { .. })));
    assert!(s.finish().is_err());
}

#[test]
fn finish_reports_incomplete_data() {
    let (stream, _) = sample_stream();
    let mut s = Fmp4Splitter::new();
    s.push(&stream[..stream.len() - 1]).unwrap();
    assert!(matches!(s.finish(), Err(Fmp4Error::Incomplete { .. })));
    // A complete trailing box that was waiting for a moof is fine.
    let mut s = Fmp4Splitter::new();
    s.push(&[stream, boxed(b"mfra", &[0; 8])].concat()).unwrap();
    s.finish().unwrap();
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
}

fn feed_chunked(rng: &mut Lcg, data: &[u8]) {
    let mut s = Fmp4Splitter::with_max_box_size(1 << 20);
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(64).min(rest.len() - 1);
        let (piece, tail) = rest.split_at(n);
        if s.push(piece).is_err() {
            return;
        }
        rest = tail;
    }
    let _ = s.finish();
}

#[test]
fn fuzz_random_bytes_never_panic() {
    let mut rng = Lcg(0x5eed);
    for _ in 0..2000 {
        let len = rng.below(300);
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make some inputs look like boxes so parsing gets further.
        if data.len() >= 8 && rng.below(2) == 0 {
            data[..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            data[4..8].copy_from_slice([b"moov", b"ftyp", b"moof", b"free"][rng.below(4)]);
        }
        feed_chunked(&mut rng, &data);
    }
}

#[test]
fn fuzz_mutated_streams_never_panic() {
    let (stream, _) = sample_stream();
    let audio = [
        ftyp(),
        moov(
            &trak(0, 2, 48000, b"soun", &audio_entry(2, 48000, &esds(true))),
            &[],
        ),
    ]
    .concat();
    let mut rng = Lcg(42);
    for base in [&stream, &audio] {
        for _ in 0..3000 {
            let mut data = base.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(data.len());
                data[at] = match rng.below(3) {
                    0 => rng.next() as u8,
                    1 => data[at] ^ (1 << rng.below(8)),
                    _ => 0xff,
                };
            }
            if rng.below(4) == 0 {
                data.truncate(rng.below(data.len()));
            }
            feed_chunked(&mut rng, &data);
        }
    }
}

#[test]
fn a_stored_segment_gives_back_its_timing() {
    let init = [ftyp(), video_moov(&[trex(1, 512, NON_SYNC)])].concat();
    let fragment = |sequence, time, count| {
        [
            moof(
                sequence,
                &[traf(&[
                    tfhd(1, None, None),
                    tfdt(1, time),
                    trun(0, count, Some(0), &[]),
                ])],
            ),
            mdat(16),
        ]
        .concat()
    };
    // Two fragments of 15 and 30 samples of 512 ticks, the first starting on a keyframe.
    let segment = [fragment(3, 90_000, 15), fragment(4, 90_000 + 15 * 512, 30)].concat();
    let timing = segment_timing(&init, &segment).unwrap();
    assert_eq!(
        timing,
        SegmentTiming {
            decode_time: 90_000,
            duration: 45 * 512,
            starts_with_keyframe: true,
        }
    );
    assert!(segment_timing(&init, &segment[..segment.len() - 4]).is_err());
    assert!(segment_timing(&init, b"").is_err());
    assert!(segment_timing(b"junk", &segment).is_err());
}
