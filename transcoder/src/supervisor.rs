//! The async shell around one live stream's ffmpeg: feeds it FLV on stdin, reads one
//! fragmented MP4 per rendition from FIFOs, hands init segments and fragments to the
//! [`MediaSink`], turns `-progress` output into [`TranscoderStatus::Progress`], and restarts a
//! crashed or stalled ffmpeg with capped exponential backoff (the packager sees a
//! discontinuity). Stopping, or dropping the [`Transcoder`], kills the child.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ladder::{AUDIO_RENDITION, LadderSettings, Outputs};
use crate::progress::{Progress, ProgressParser};
use cascade_media::flv::{self, FlvTag, TagKind};
use cascade_media::fmp4::{Fmp4Item, Fmp4Splitter};
use cascade_media::handoff::{MediaEvent, MediaSink};

/// How the supervisor runs ffmpeg.
#[derive(Debug, Clone)]
pub struct TranscoderOptions {
    /// The ffmpeg binary.
    pub ffmpeg: PathBuf,
    /// Directory for the per-run FIFO directories.
    pub work_dir: PathBuf,
    /// No progress for this long while input flows: ffmpeg is restarted.
    pub stall_timeout: Duration,
    /// First restart delay; doubles per failure.
    pub restart_delay: Duration,
    /// Cap of the restart delay.
    pub max_restart_delay: Duration,
    /// Failures in a row without output after which the transcoder gives up.
    pub max_failures: u32,
}

/// What the transcoder reports about itself.
#[derive(Debug, Clone, PartialEq)]
pub enum TranscoderStatus {
    /// A `-progress` block.
    Progress(Progress),
    /// ffmpeg failed and is being restarted.
    Restarted {
        /// Why it failed (exit status and its last error lines, or the stall).
        reason: String,
    },
    /// ffmpeg failed `max_failures` times in a row without output: the transcoder stopped.
    Failed {
        /// The last failure.
        reason: String,
    },
    /// The input ended (or the transcoder was stopped) and every output was handed over.
    Finished,
}

/// What a live stream needs to start its transcoder.
pub struct TranscodeJob {
    /// The stream's id (passed to the sink, used in FIFO names).
    pub stream_id: String,
    /// The ladder.
    pub settings: LadderSettings,
    /// Whether the input carries audio (an audio rendition is made).
    pub has_audio: bool,
    /// Tell the sink about a discontinuity before the first init segment (the stream
    /// continues from an earlier publisher).
    pub continues_stream: bool,
}

/// Input tags queued for ffmpeg; a full queue slows the publisher down (TCP backpressure).
const INPUT_QUEUE: usize = 512;
/// How long a finishing ffmpeg may take to flush its outputs.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Error lines of ffmpeg kept for failure reasons.
const STDERR_TAIL: usize = 8;

/// The ffmpeg child of one live stream, restarted as needed. Dropping it kills the child.
pub struct Transcoder {
    input: Option<mpsc::Sender<FlvTag>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The transcoder has ended (it gave up, or was stopped); no more input is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the transcoder has stopped")]
pub struct TranscoderGone;

impl Transcoder {
    /// Starts the transcoder task; ffmpeg itself starts at once.
    pub fn start(
        job: TranscodeJob,
        options: TranscoderOptions,
        sink: Arc<dyn MediaSink>,
        status: mpsc::UnboundedSender<TranscoderStatus>,
    ) -> Self {
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let supervisor = Supervisor {
            job,
            options,
            sink,
            status,
            headers: HeaderTags::default(),
            runs: 0,
        };
        let task = tokio::spawn(supervisor.run(input_rx, stop_rx));
        Self {
            input: Some(input_tx),
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Queues one tag for ffmpeg, waiting while the queue is full.
    pub async fn send(&self, tag: FlvTag) -> Result<(), TranscoderGone> {
        match &self.input {
            Some(input) => input.send(tag).await.map_err(|_| TranscoderGone),
            None => Err(TranscoderGone),
        }
    }

    /// Ends the input: ffmpeg flushes what it has and exits, the sink gets the last
    /// fragments and an `End` per rendition. Returns once that is done.
    pub async fn finish(mut self) {
        self.input = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops at once: ffmpeg is killed, the sink gets `End` per rendition.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // The task owns the child with kill_on_drop: aborting it kills ffmpeg.
            task.abort();
        }
    }
}

/// The tags a restarted ffmpeg needs before any media: metadata and codec configurations.
#[derive(Default)]
struct HeaderTags {
    metadata: Option<FlvTag>,
    video_config: Option<FlvTag>,
    audio_config: Option<FlvTag>,
}

impl HeaderTags {
    /// Remembers `tag` if it is a header; returns whether it was.
    fn remember(&mut self, tag: &FlvTag) -> bool {
        let slot = match tag.kind {
            TagKind::Script => &mut self.metadata,
            TagKind::Video if flv::video_info(&tag.data).is_some_and(|v| v.sequence_header) => {
                &mut self.video_config
            }
            TagKind::Audio if flv::audio_info(&tag.data).is_some_and(|a| a.sequence_header) => {
                &mut self.audio_config
            }
            _ => return false,
        };
        *slot = Some(tag.clone());
        true
    }

    fn encode(&self, has_audio: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(&flv::file_header(has_audio, true));
        for tag in [&self.metadata, &self.video_config, &self.audio_config]
            .into_iter()
            .flatten()
        {
            let _ = flv::encode_tag(tag, out);
        }
    }
}

enum Outcome {
    InputEnded,
    Stopped,
    Failed(String),
}

struct Supervisor {
    job: TranscodeJob,
    options: TranscoderOptions,
    sink: Arc<dyn MediaSink>,
    status: mpsc::UnboundedSender<TranscoderStatus>,
    headers: HeaderTags,
    runs: u64,
}

/// One ffmpeg process with its output readers.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    progress: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    readers: Vec<JoinHandle<()>>,
    dir: PathBuf,
    produced_output: Arc<AtomicBool>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl Supervisor {
    fn renditions(&self) -> Vec<(String, u32)> {
        let mut names: Vec<(String, u32)> = self
            .job
            .settings
            .video_outputs()
            .iter()
            .map(|r| (r.name.to_owned(), r.video_kbps.saturating_mul(1000)))
            .collect();
        if self.job.has_audio {
            names.push((
                AUDIO_RENDITION.to_owned(),
                self.job.settings.audio_kbps.saturating_mul(1000),
            ));
        }
        names
    }

    fn tell_all(&self, event: impl Fn() -> MediaEvent) {
        for (name, _) in self.renditions() {
            self.sink.deliver(&self.job.stream_id, &name, event());
        }
    }

    async fn run(mut self, mut input: mpsc::Receiver<FlvTag>, mut stop: oneshot::Receiver<()>) {
        let mut failures = 0u32;
        let mut delay = self.options.restart_delay;
        let mut discontinuity = self.job.continues_stream;
        loop {
            if discontinuity {
                self.tell_all(|| MediaEvent::Discontinuity);
            }
            let outcome = match self.spawn() {
                Ok(mut run) => {
                    let outcome = self.feed(&mut run, &mut input, &mut stop).await;
                    let produced = run.produced_output.load(Ordering::Relaxed);
                    let errors = self
                        .end_run(run, matches!(outcome, Outcome::InputEnded))
                        .await;
                    if produced {
                        failures = 0;
                        delay = self.options.restart_delay;
                    }
                    match outcome {
                        // ffmpeg's own last words say more than an exit status.
                        Outcome::Failed(reason) => Outcome::Failed(format!("{reason}{errors}")),
                        other => other,
                    }
                }
                Err(reason) => Outcome::Failed(reason),
            };
            match outcome {
                Outcome::InputEnded | Outcome::Stopped => {
                    self.tell_all(|| MediaEvent::End);
                    let _ = self.status.send(TranscoderStatus::Finished);
                    return;
                }
                Outcome::Failed(reason) => {
                    failures += 1;
                    if failures >= self.options.max_failures {
                        tracing::warn!(stream = %self.job.stream_id, %reason, failures, "transcoder gives up");
                        self.tell_all(|| MediaEvent::End);
                        let _ = self.status.send(TranscoderStatus::Failed { reason });
                        return;
                    }
                    tracing::warn!(stream = %self.job.stream_id, %reason, ?delay, "restarting ffmpeg");
                    let _ = self.status.send(TranscoderStatus::Restarted { reason });
                    // Input that arrives while ffmpeg is down is dropped, headers excepted.
                    let resume = tokio::time::Instant::now() + delay;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(resume) => break,
                            _ = &mut stop => {
                                self.tell_all(|| MediaEvent::End);
                                let _ = self.status.send(TranscoderStatus::Finished);
                                return;
                            }
                            tag = input.recv() => match tag {
                                Some(tag) => { self.headers.remember(&tag); }
                                None => {
                                    self.tell_all(|| MediaEvent::End);
                                    let _ = self.status.send(TranscoderStatus::Finished);
                                    return;
                                }
                            },
                        }
                    }
                    delay = (delay * 2).min(self.options.max_restart_delay);
                    discontinuity = true;
                }
            }
        }
    }

    fn spawn(&mut self) -> Result<Run, String> {
        self.runs += 1;
        let dir = self.options.work_dir.join(format!(
            "cascade-{}-{}-{}",
            sanitise(&self.job.stream_id),
            std::process::id(),
            self.runs
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let renditions = self.renditions();
        let mut paths = Vec::with_capacity(renditions.len());
        for (name, _) in &renditions {
            let path = dir.join(format!("{name}.mp4"));
            nix::unistd::mkfifo(
                &path,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .map_err(|e| format!("cannot create the FIFO {}: {e}", path.display()))?;
            paths.push(path);
        }
        let outputs = Outputs {
            video: paths[..self.job.settings.video_outputs().len()].to_vec(),
            audio: self.job.has_audio.then(|| paths[paths.len() - 1].clone()),
        };

        let produced_output = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::with_capacity(paths.len());
        for ((name, bandwidth), path) in renditions.into_iter().zip(&paths) {
            let receiver = tokio::net::unix::pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(|e| format!("cannot open the FIFO {}: {e}", path.display()))?;
            readers.push(tokio::spawn(read_output(
                receiver,
                OutputTarget {
                    stream_id: self.job.stream_id.clone(),
                    rendition: name,
                    bandwidth,
                    sink: Arc::clone(&self.sink),
                    produced_output: Arc::clone(&produced_output),
                },
            )));
        }

        let args = self.job.settings.ffmpeg_args(&outputs);
        let mut child = Command::new(&self.options.ffmpeg)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                for reader in &readers {
                    reader.abort();
                }
                format!("cannot start {}: {e}", self.options.ffmpeg.display())
            })?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_task = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(keep_tail(stderr, Arc::clone(&stderr_tail))));
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| "ffmpeg has no stdout".to_owned())?;
        let stdin = child.stdin.take();
        tracing::debug!(stream = %self.job.stream_id, ?args, "ffmpeg started");
        Ok(Run {
            child,
            stdin,
            progress: BufReader::new(stdout).lines(),
            readers,
            dir,
            produced_output,
            stderr_tail,
            stderr_task,
        })
    }

    async fn feed(
        &mut self,
        run: &mut Run,
        input: &mut mpsc::Receiver<FlvTag>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Outcome {
        let mut buffer = Vec::with_capacity(64 * 1024);
        self.headers.encode(self.job.has_audio, &mut buffer);
        if let Err(reason) = self.write(run, &buffer).await {
            return Outcome::Failed(why_input_failed(run, reason).await);
        }
        let started = Instant::now();
        let mut last_progress = started;
        let mut last_input = started;
        let mut waiting_for_keyframe = true;
        let mut progress = ProgressParser::new();
        let mut progress_open = true;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                tag = input.recv() => {
                    let Some(tag) = tag else { return Outcome::InputEnded };
                    // Headers go through as they come (a restart replays the latest ones);
                    // media waits for a keyframe, the first thing a decoder can start on.
                    let header = self.headers.remember(&tag);
                    if !header && waiting_for_keyframe {
                        match tag.kind {
                            TagKind::Video if flv::video_info(&tag.data).is_some_and(|v| v.keyframe) => {
                                waiting_for_keyframe = false;
                            }
                            _ => continue,
                        }
                    }
                    buffer.clear();
                    if flv::encode_tag(&tag, &mut buffer).is_err() {
                        continue; // over FLV's 16 MiB tag limit: RTMP cannot carry it either
                    }
                    if let Err(reason) = self.write(run, &buffer).await {
                        return Outcome::Failed(why_input_failed(run, reason).await);
                    }
                    last_input = Instant::now();
                }
                line = run.progress.next_line(), if progress_open => match line {
                    Ok(Some(line)) => {
                        if let Some(snapshot) = progress.line(&line) {
                            last_progress = Instant::now();
                            let _ = self.status.send(TranscoderStatus::Progress(snapshot));
                        }
                    }
                    _ => progress_open = false,
                },
                exit = run.child.wait() => {
                    let status = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    return Outcome::Failed(format!("ffmpeg exited ({status})"));
                }
                _ = tick.tick() => {
                    let input_flows = last_input.elapsed() < Duration::from_secs(2);
                    if input_flows && last_progress.elapsed() > self.options.stall_timeout {
                        return Outcome::Failed(format!(
                            "ffmpeg made no progress for {:?} while input kept arriving",
                            self.options.stall_timeout
                        ));
                    }
                }
                _ = &mut *stop => return Outcome::Stopped,
            }
        }
    }

    async fn write(&self, run: &mut Run, bytes: &[u8]) -> Result<(), String> {
        let Some(stdin) = run.stdin.as_mut() else {
            return Err("ffmpeg's input is closed".into());
        };
        match tokio::time::timeout(self.options.stall_timeout, stdin.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("ffmpeg stopped reading its input ({e})")),
            Err(_) => Err(format!(
                "ffmpeg took no input for {:?}",
                self.options.stall_timeout
            )),
        }
    }

    /// Ends a run: on a clean end of input ffmpeg is given time to flush; otherwise it is
    /// killed. The FIFO directory is removed. Returns ffmpeg's last error lines (`: a | b`).
    async fn end_run(&self, mut run: Run, drain: bool) -> String {
        run.stdin = None;
        let flushed = drain
            && tokio::time::timeout(FINISH_TIMEOUT, async {
                let _ = run.child.wait().await;
                for reader in &mut run.readers {
                    let _ = reader.await;
                }
            })
            .await
            .is_ok();
        if !flushed {
            let _ = run.child.kill().await;
            for reader in &run.readers {
                reader.abort();
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&run.dir) {
            tracing::warn!(dir = %run.dir.display(), error = %e, "cannot remove the FIFO directory");
        }
        if let Some(task) = run.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        tail_text(&run.stderr_tail)
    }
}

/// Why writing to ffmpeg failed: most often ffmpeg died (a broken pipe), and then its exit
/// status (a signal, a code) says more than the pipe does.
async fn why_input_failed(run: &mut Run, write_error: String) -> String {
    match tokio::time::timeout(Duration::from_millis(500), run.child.wait()).await {
        Ok(Ok(status)) => format!("ffmpeg exited ({status})"),
        _ => write_error,
    }
}

struct OutputTarget {
    stream_id: String,
    rendition: String,
    bandwidth: u32,
    sink: Arc<dyn MediaSink>,
    produced_output: Arc<AtomicBool>,
}

/// Reads one output FIFO to its end, handing each init segment and fragment to the sink.
async fn read_output(mut receiver: tokio::net::unix::pipe::Receiver, target: OutputTarget) {
    let mut splitter = Fmp4Splitter::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut writer_seen = false;
    loop {
        let n = match receiver.read(&mut buffer).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(stream = %target.stream_id, rendition = %target.rendition, error = %e, "cannot read a transcoder output");
                return;
            }
        };
        if n == 0 {
            if writer_seen {
                return;
            }
            // No writer has opened the FIFO yet (ffmpeg is still probing its input).
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        writer_seen = true;
        let items = match splitter.push(&buffer[..n]) {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(stream = %target.stream_id, rendition = %target.rendition, error = %e, "malformed transcoder output");
                return;
            }
        };
        for item in items {
            target.produced_output.store(true, Ordering::Relaxed);
            let event = match item {
                Fmp4Item::Init(init) => MediaEvent::Init {
                    bandwidth: target.bandwidth,
                    init,
                },
                Fmp4Item::Fragment(fragment) => MediaEvent::Fragment(fragment),
            };
            target
                .sink
                .deliver(&target.stream_id, &target.rendition, event);
        }
    }
}

async fn keep_tail(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    match tail.lock() {
        Ok(tail) if !tail.is_empty() => {
            format!(": {}", tail.iter().cloned().collect::<Vec<_>>().join(" | "))
        }
        _ => String::new(),
    }
}

fn sanitise(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}
