//! `cascade-bench transcode`: the ABR ladder from one FLV file, run by plain ffmpeg writing
//! files and by Cascade's transcoder (the supervisor feeding ffmpeg's stdin, reading its FIFO
//! outputs and splitting fragments), alternately, so the two see the same machine load.
//! Speed is media seconds per wall-clock second; the ratio is the cost of the Rust side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use cascade_media::flv::{self, TagKind};
use cascade_media::handoff::{MediaEvent, MediaSink};
use cascade_transcoder::ladder::{self, LadderSettings, Outputs, VideoEncoder};
use cascade_transcoder::supervisor::{
    TranscodeJob, Transcoder, TranscoderOptions, TranscoderStatus,
};
use serde::Serialize;

/// What to run.
pub struct TranscodeBench {
    /// FLV input (H.264 + AAC).
    pub input: PathBuf,
    /// Ladder rung names.
    pub ladder: Vec<String>,
    /// x264 preset.
    pub preset: String,
    /// ffmpeg binary.
    pub ffmpeg: PathBuf,
    /// Alternating rounds of each.
    pub rounds: usize,
}

/// One run's result.
#[derive(Debug, Serialize)]
pub struct Run {
    /// `ffmpeg` or `cascade`.
    pub runner: &'static str,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Media seconds per wall second.
    pub speed: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Media duration of the input.
    pub media_seconds: f64,
    /// Renditions.
    pub ladder: Vec<String>,
    /// Every run in order.
    pub runs: Vec<Run>,
    /// Best speed of plain ffmpeg.
    pub ffmpeg_speed: f64,
    /// Best speed through Cascade's transcoder.
    pub cascade_speed: f64,
    /// Cascade's wall time over ffmpeg's (best runs): 1.05 means 5 % added.
    pub overhead_ratio: f64,
    /// Fragments Cascade handed over in its last run.
    pub fragments: u64,
}

struct CountingSink {
    fragments: AtomicU64,
}

impl MediaSink for CountingSink {
    fn deliver(&self, _stream: &str, _rendition: &str, event: MediaEvent) {
        if matches!(event, MediaEvent::Fragment(_)) {
            self.fragments.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn settings(bench: &TranscodeBench) -> anyhow::Result<LadderSettings> {
    let mut renditions = Vec::new();
    for name in &bench.ladder {
        renditions.push(
            ladder::rung(name)
                .with_context(|| format!("{name:?} is not a rung ({})", ladder::rung_names()))?,
        );
    }
    Ok(LadderSettings {
        renditions,
        encoder: VideoEncoder::X264,
        preset: bench.preset.clone(),
        keyframe_interval: Duration::from_secs(2),
        part_target: Duration::from_millis(500),
        audio_kbps: 128,
    })
}

fn plain_ffmpeg(
    bench: &TranscodeBench,
    settings: &LadderSettings,
    dir: &Path,
) -> anyhow::Result<f64> {
    let outputs = Outputs {
        video: (0..settings.video_outputs().len())
            .map(|i| dir.join(format!("v{i}.mp4")))
            .collect(),
        audio: Some(dir.join("audio.mp4")),
    };
    let args: Vec<String> = settings
        .ffmpeg_args(&outputs)
        .into_iter()
        .map(|a| {
            if a == "pipe:0" {
                bench.input.display().to_string()
            } else {
                a
            }
        })
        .collect();
    let started = Instant::now();
    let status = std::process::Command::new(&bench.ffmpeg)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn through_cascade(
    bench: &TranscodeBench,
    settings: &LadderSettings,
    tags: &[flv::FlvTag],
    dir: &Path,
) -> anyhow::Result<(f64, u64)> {
    let sink = Arc::new(CountingSink {
        fragments: AtomicU64::new(0),
    });
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let transcoder = Transcoder::start(
        TranscodeJob {
            stream_id: "bench".into(),
            settings: settings.clone(),
            has_audio: tags.iter().any(|t| t.kind == TagKind::Audio),
            continues_stream: false,
        },
        TranscoderOptions {
            ffmpeg: bench.ffmpeg.clone(),
            work_dir: dir.to_owned(),
            stall_timeout: Duration::from_secs(30),
            restart_delay: Duration::from_millis(200),
            max_restart_delay: Duration::from_secs(1),
            max_failures: 1,
        },
        Arc::clone(&sink) as Arc<dyn MediaSink>,
        status_tx,
    );
    for tag in tags {
        if transcoder.send(tag.clone()).await.is_err() {
            break;
        }
    }
    transcoder.finish().await;
    let seconds = started.elapsed().as_secs_f64();
    while let Ok(status) = status_rx.try_recv() {
        if let TranscoderStatus::Failed { reason } | TranscoderStatus::Restarted { reason } = status
        {
            bail!("the transcoder failed: {reason}");
        }
    }
    Ok((seconds, sink.fragments.load(Ordering::Relaxed)))
}

/// Runs the benchmark.
pub async fn run(bench: TranscodeBench) -> anyhow::Result<Report> {
    let bytes = Bytes::from(
        std::fs::read(&bench.input)
            .with_context(|| format!("cannot read {}", bench.input.display()))?,
    );
    let tags = flv::read_file(&bytes)?;
    let media_seconds = tags
        .iter()
        .filter(|t| t.kind == TagKind::Video)
        .map(|t| t.timestamp_ms)
        .max()
        .unwrap_or(0) as f64
        / 1000.0;
    if media_seconds <= 0.0 {
        bail!("{} has no video", bench.input.display());
    }
    let settings = settings(&bench)?;
    let dir = std::env::temp_dir().join(format!("cascade-bench-transcode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    let mut fragments = 0;
    for _ in 0..bench.rounds.max(1) {
        let seconds = plain_ffmpeg(&bench, &settings, &dir)?;
        runs.push(Run {
            runner: "ffmpeg",
            seconds,
            speed: media_seconds / seconds,
        });
        let (seconds, handed_over) = through_cascade(&bench, &settings, &tags, &dir).await?;
        fragments = handed_over;
        runs.push(Run {
            runner: "cascade",
            seconds,
            speed: media_seconds / seconds,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let best = |runner: &str| {
        runs.iter()
            .filter(|r| r.runner == runner)
            .map(|r| r.seconds)
            .fold(f64::INFINITY, f64::min)
    };
    let (ffmpeg_best, cascade_best) = (best("ffmpeg"), best("cascade"));
    Ok(Report {
        media_seconds,
        ladder: bench.ladder,
        ffmpeg_speed: media_seconds / ffmpeg_best,
        cascade_speed: media_seconds / cascade_best,
        overhead_ratio: cascade_best / ffmpeg_best,
        fragments,
        runs,
    })
}
