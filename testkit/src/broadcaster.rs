//! ffmpeg as a broadcaster: publishes a generated test picture and tone over RTMP, as OBS or
//! a hardware encoder would. Killed when dropped.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{Result, find_tool, io_err};

/// What the broadcaster sends.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// ffmpeg video encoder (`libx264`; `flv` sends Sorenson H.263).
    pub video_codec: &'static str,
    /// Send audio (AAC).
    pub audio: bool,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            fps: 30,
            video_codec: "libx264",
            audio: true,
        }
    }
}

/// A running ffmpeg publisher.
pub struct Broadcaster {
    process: ChildProcess,
    _dir: TempDir,
}

/// The ffmpeg binary (`$CASCADE_FFMPEG_BIN` or `PATH`).
pub fn ffmpeg_path() -> Result<PathBuf> {
    find_tool("ffmpeg", "CASCADE_FFMPEG_BIN", "ffmpeg")
}

impl Broadcaster {
    /// Starts publishing to `url` in real time until stopped.
    pub fn start(url: &str, options: &BroadcastOptions) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir"))?;
        let mut command = Command::new(ffmpeg_path()?);
        command.args([
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ]);
        command.arg(format!(
            "testsrc2=size={}x{}:rate={}",
            options.width, options.height, options.fps
        ));
        if options.audio {
            command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
        }
        command.args(["-c:v", options.video_codec]);
        if options.video_codec == "libx264" {
            command.args([
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-pix_fmt",
                "yuv420p",
            ]);
        }
        command.args(["-g", &options.fps.to_string()]);
        if options.audio {
            command.args(["-c:a", "aac", "-b:a", "96k"]);
        }
        command.args(["-f", "flv", url]);
        let process = ChildProcess::spawn(
            "ffmpeg broadcaster",
            command,
            &dir.path().join("ffmpeg.log"),
        )?;
        Ok(Self { process, _dir: dir })
    }

    /// Waits up to `timeout` for ffmpeg to exit by itself (refused, or disconnected).
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.process.wait_timeout(timeout)
    }

    /// Kills it at once, as a crashed encoder or a dropped network would end it.
    pub fn kill(&mut self) -> Result<()> {
        self.process.signal(9)?;
        let _ = self.process.wait_timeout(Duration::from_secs(5))?;
        Ok(())
    }

    /// ffmpeg's output so far.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Process ids whose command line contains `needle` (for checking no child is left behind).
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}
