//! The transcoder's async shell with real ffmpeg: an FLV file fed tag by tag, as RTMP ingest
//! feeds it, comes out as init segments and fragments per rendition through the hand-off.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cascade_media::flv;
use cascade_media::handoff::{MediaEvent, MediaSink};
use cascade_transcoder::ladder::{self, LadderSettings, VideoEncoder};
use cascade_transcoder::supervisor::{
    TranscodeJob, Transcoder, TranscoderOptions, TranscoderStatus,
};

#[derive(Default)]
struct Recorder {
    events: Mutex<BTreeMap<String, Vec<MediaEvent>>>,
}

impl MediaSink for Recorder {
    fn deliver(&self, _stream: &str, rendition: &str, event: MediaEvent) {
        self.events
            .lock()
            .unwrap()
            .entry(rendition.to_owned())
            .or_default()
            .push(event);
    }
}

fn input_flv(dir: &Path) -> Bytes {
    let path = dir.join("input.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=30")
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg is installed (.ci/install-tools)");
    assert!(status.success());
    Bytes::from(std::fs::read(path).unwrap())
}

fn settings() -> LadderSettings {
    LadderSettings {
        renditions: vec![ladder::rung("360p").unwrap(), ladder::rung("240p").unwrap()],
        encoder: VideoEncoder::X264,
        preset: "ultrafast".into(),
        keyframe_interval: Duration::from_secs(2),
        part_target: Duration::from_millis(500),
        audio_kbps: 128,
    }
}

fn options(ffmpeg: PathBuf, dir: &Path) -> TranscoderOptions {
    TranscoderOptions {
        ffmpeg,
        work_dir: dir.to_owned(),
        stall_timeout: Duration::from_secs(10),
        restart_delay: Duration::from_millis(50),
        max_restart_delay: Duration::from_millis(200),
        max_failures: 3,
    }
}

#[tokio::test]
async fn a_file_fed_tag_by_tag_comes_out_as_aligned_fragments_per_rendition() {
    let dir = tempfile::tempdir().unwrap();
    let tags = flv::read_file(&input_flv(dir.path())).unwrap();
    let recorder = Arc::new(Recorder::default());
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let transcoder = Transcoder::start(
        TranscodeJob {
            stream_id: "s1".into(),
            settings: settings(),
            has_audio: true,
            continues_stream: false,
        },
        options("ffmpeg".into(), dir.path()),
        Arc::clone(&recorder) as Arc<dyn MediaSink>,
        status_tx,
    );
    for tag in tags {
        transcoder.send(tag).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), transcoder.finish())
        .await
        .expect("ffmpeg drains and exits");

    let mut statuses = Vec::new();
    while let Ok(s) = status_rx.try_recv() {
        statuses.push(s);
    }
    assert!(
        statuses
            .iter()
            .any(|s| matches!(s, TranscoderStatus::Progress(_)))
    );
    assert_eq!(statuses.last(), Some(&TranscoderStatus::Finished));
    assert!(
        !statuses
            .iter()
            .any(|s| matches!(s, TranscoderStatus::Restarted { .. }))
    );

    let events = recorder.events.lock().unwrap();
    assert_eq!(events.keys().collect::<Vec<_>>(), ["240p", "360p", "audio"]);
    let mut keyframes_by_rendition = Vec::new();
    for (name, list) in events.iter() {
        let MediaEvent::Init { init, .. } = &list[0] else {
            panic!("{name} starts with {:?}", list[0]);
        };
        assert!(matches!(list.last(), Some(MediaEvent::End)), "{name}");
        let fragments: Vec<_> = list
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Fragment(f) => Some(f),
                _ => None,
            })
            .collect();
        let media: u64 = fragments.iter().map(|f| f.duration).sum();
        let seconds = media as f64 / f64::from(init.track.timescale);
        assert!(
            (5.5..=6.5).contains(&seconds),
            "{name}: {seconds} s of media"
        );
        for pair in fragments.windows(2) {
            assert_eq!(
                pair[0].decode_time + pair[0].duration,
                pair[1].decode_time,
                "{name}"
            );
        }
        if name != "audio" {
            let scale = f64::from(init.track.timescale);
            let keyframes: Vec<f64> = fragments
                .iter()
                .filter(|f| f.starts_with_keyframe)
                .map(|f| f.decode_time as f64 / scale)
                .collect();
            assert_eq!(keyframes.len(), 3, "{name}: keyframes at {keyframes:?}");
            keyframes_by_rendition.push(keyframes);
        }
    }
    assert_eq!(keyframes_by_rendition[0], keyframes_by_rendition[1]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cascade-"))
        .collect();
    assert!(leftovers.is_empty(), "FIFO directories are removed");
}

#[tokio::test]
async fn an_ffmpeg_that_keeps_failing_is_restarted_then_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing-ffmpeg");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'Unknown input format: nonsense' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let transcoder = Transcoder::start(
        TranscodeJob {
            stream_id: "s2".into(),
            settings: settings(),
            has_audio: false,
            continues_stream: false,
        },
        options(failing, dir.path()),
        Arc::clone(&recorder) as Arc<dyn MediaSink>,
        status_tx,
    );
    let mut restarts = 0;
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(20), status_rx.recv()).await {
            Ok(Some(TranscoderStatus::Restarted { .. })) => restarts += 1,
            Ok(Some(TranscoderStatus::Failed { reason })) => break reason,
            Ok(Some(_)) => {}
            other => panic!("no failure reported: {other:?}"),
        }
    };
    assert_eq!(
        restarts, 2,
        "max_failures 3: two restarts, then it gives up"
    );
    assert!(reason.contains("Unknown input format"), "{reason}");
    assert!(
        transcoder
            .send(flv::FlvTag {
                kind: flv::TagKind::Video,
                timestamp_ms: 0,
                data: Bytes::from_static(&[0x17, 1]),
            })
            .await
            .is_err()
    );
    let events = recorder.events.lock().unwrap();
    let discontinuities = events["360p"]
        .iter()
        .filter(|e| matches!(e, MediaEvent::Discontinuity))
        .count();
    assert_eq!(discontinuities, 2, "one per restart");
    assert!(matches!(events["360p"].last(), Some(MediaEvent::End)));
}

#[tokio::test]
async fn a_missing_ffmpeg_is_reported_not_hung_on() {
    let dir = tempfile::tempdir().unwrap();
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let _transcoder = Transcoder::start(
        TranscodeJob {
            stream_id: "s3".into(),
            settings: settings(),
            has_audio: true,
            continues_stream: false,
        },
        options(dir.path().join("no-such-ffmpeg"), dir.path()),
        Arc::new(Recorder::default()) as Arc<dyn MediaSink>,
        status_tx,
    );
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(20), status_rx.recv()).await {
            Ok(Some(TranscoderStatus::Failed { reason })) => break reason,
            Ok(Some(_)) => {}
            other => panic!("no failure reported: {other:?}"),
        }
    };
    assert!(reason.contains("cannot start"), "{reason}");
}

#[tokio::test]
async fn an_ffmpeg_that_takes_input_but_makes_no_progress_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    // Swallows its input and never reports progress: a hung encoder.
    let hung = dir.path().join("hung-ffmpeg");
    std::fs::write(&hung, "#!/bin/sh\nexec cat > /dev/null\n").unwrap();
    std::fs::set_permissions(&hung, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut options = options(hung, dir.path());
    options.stall_timeout = Duration::from_secs(1);
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let transcoder = Transcoder::start(
        TranscodeJob {
            stream_id: "s4".into(),
            settings: settings(),
            has_audio: false,
            continues_stream: false,
        },
        options,
        Arc::new(Recorder::default()) as Arc<dyn MediaSink>,
        status_tx,
    );
    let keyframe = flv::FlvTag {
        kind: flv::TagKind::Video,
        timestamp_ms: 0,
        data: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1]),
    };
    let reason = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let _ = transcoder.send(keyframe.clone()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Ok(status) = status_rx.try_recv() {
                if let TranscoderStatus::Restarted { reason } = status {
                    return reason;
                }
            }
        }
    })
    .await
    .expect("a stalled ffmpeg is restarted");
    assert!(reason.contains("no progress"), "{reason}");
    transcoder.stop().await;
}
