//! A real viewer: headless Chromium (Debian's package) plays Cascade's player page with hls.js
//! or dash.js, driven by `player/drive.mjs` (playwright-core under Node), and reports what the
//! viewer got: start-up, stalls, errors, live latency, renditions and the HTTP protocol used.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{HarnessError, Result, find_tool, io_err};

/// How to play.
#[derive(Debug, Clone, Default)]
pub struct PlayOptions {
    /// How long to watch.
    pub seconds: u32,
    /// Force HTTP/3 to this `host:port`.
    pub quic: Option<String>,
    /// Trust a self-signed certificate by the base64 SHA-256 of its public key.
    pub spki: Option<String>,
    /// After this many seconds of playback, pick another rendition (then back to automatic).
    pub switch_after: Option<u32>,
    /// Seconds of latency samples skipped as start-up.
    pub warmup: Option<u32>,
}

/// Live latency over the run, seconds (after the warm-up).
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// Samples taken (4 a second).
    pub samples: usize,
    /// Median.
    pub median: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// One rendition the player was offered.
#[derive(Debug, Clone, Deserialize)]
pub struct OfferedRendition {
    /// Picture height.
    pub height: u32,
    /// Advertised bitrate, bit/s.
    pub bitrate: u64,
}

/// One time the play head waited after playback began.
#[derive(Debug, Clone, Deserialize)]
pub struct Stall {
    /// Media time it began at, seconds.
    pub at: f64,
    /// How long it lasted, ms (`None` if it had not ended).
    pub ms: Option<u64>,
    /// Media buffered ahead of the play head when it began, seconds: 0 when the player ran
    /// out of data, more when the decoder fell behind (a busy machine, not the delivery).
    pub ahead: f64,
}

impl Stall {
    /// Whether the player had run out of media: what delivery causes.
    pub fn starved(&self) -> bool {
        self.ahead < 0.1
    }
}

/// A player error as the page recorded it.
#[derive(Debug, Clone, Deserialize)]
pub struct PlayerError {
    /// Unix ms.
    pub at: u64,
    /// The player's words.
    pub message: String,
}

/// What the viewer got.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayReport {
    /// The page's URL.
    pub url: String,
    /// HTTP status of the page.
    pub page_status: Option<u16>,
    /// Whether a first frame played.
    pub started: bool,
    /// `playing`, `stalled`, `ended`, `error`, ...
    pub state: String,
    /// Milliseconds from the page being asked for to the first frame.
    pub first_frame_ms: Option<u64>,
    /// Media seconds actually played (seeks excluded).
    pub played_seconds: f64,
    /// Times the play head waited for data after playback began.
    pub stalls: Option<u32>,
    /// Time spent stalled.
    pub stall_seconds: Option<f64>,
    /// The last 30 stalls.
    #[serde(default)]
    pub stall_log: Vec<Stall>,
    /// Fatal player errors.
    pub errors: Vec<PlayerError>,
    /// Errors in the page's console.
    pub console_errors: Vec<String>,
    /// Live latency (now − PROGRAM-DATE-TIME for HLS, dash.js's UTCTiming-based figure).
    pub latency: Latency,
    /// Picture heights shown.
    pub heights_seen: Vec<u32>,
    /// Renditions offered.
    pub renditions: Vec<OfferedRendition>,
    /// Whether the rendition asked for with `switch_after` was shown.
    pub switched: Option<bool>,
    /// Media and manifest requests by protocol (`http/1.1`, `h2`, `h3`).
    pub protocols: std::collections::BTreeMap<String, u32>,
    /// The play head at the end, seconds.
    #[serde(default)]
    pub current_time: Option<f64>,
    /// The media buffered at the end, as `start-end` ranges in seconds.
    #[serde(default)]
    pub buffered: String,
    /// The player's last non-fatal warnings.
    #[serde(default)]
    pub warnings: Vec<PlayerError>,
    /// The player's last fragment and part loads, to see what a failed start was given.
    #[serde(default)]
    pub trace: Vec<String>,
}

impl PlayReport {
    /// Stalls where the player had run out of media.
    pub fn starved_stalls(&self) -> usize {
        self.stall_log.iter().filter(|s| s.starved()).count()
    }

    /// Time stalled over time played.
    pub fn rebuffer_ratio(&self) -> f64 {
        let stalled = self.stall_seconds.unwrap_or(0.0);
        stalled / (stalled + self.played_seconds).max(f64::EPSILON)
    }

    /// The protocol most media requests used.
    pub fn main_protocol(&self) -> Option<&str> {
        self.protocols
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, _)| p.as_str())
    }
}

/// A player running in the background.
pub struct Viewer {
    process: ChildProcess,
    report: PathBuf,
    _dir: TempDir,
}

fn project_dir() -> PathBuf {
    // testkit/ sits at the root of the workspace.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Chromium (`$CASCADE_CHROMIUM` or `PATH`).
pub fn chromium_path() -> Result<PathBuf> {
    find_tool("chromium", "CASCADE_CHROMIUM", "chromium")
}

impl Viewer {
    /// Opens `url` (a player page) and watches for `options.seconds`.
    pub fn start(url: &str, options: &PlayOptions) -> Result<Self> {
        let node = find_tool("node", "CASCADE_NODE", "node")?;
        let chromium = chromium_path()?;
        let driver = project_dir().join("player/drive.mjs");
        if !project_dir()
            .join("player/node_modules/playwright-core")
            .is_dir()
        {
            return Err(HarnessError::NotInstalled {
                program: "playwright-core",
                searched: project_dir()
                    .join("player/node_modules")
                    .display()
                    .to_string(),
            });
        }
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir"))?;
        let report = dir.path().join("report.json");
        let mut command = Command::new(node);
        command
            .arg(driver)
            .args(["--url", url])
            .args(["--seconds", &options.seconds.max(1).to_string()])
            .arg("--chromium")
            .arg(chromium);
        if let Some(quic) = &options.quic {
            command.args(["--quic", quic]);
        }
        if let Some(spki) = &options.spki {
            command.args(["--spki", spki]);
        }
        if let Some(after) = options.switch_after {
            command.args(["--switch-after", &after.to_string()]);
        }
        if let Some(warmup) = options.warmup {
            command.args(["--warmup", &warmup.to_string()]);
        }
        command.arg("--out").arg(&report);
        let process = ChildProcess::spawn("player", command, &dir.path().join("drive.log"))?;
        Ok(Self {
            process,
            report,
            _dir: dir,
        })
    }

    /// Waits for the run to end and returns the report.
    pub fn finish(mut self, timeout: Duration) -> Result<PlayReport> {
        let status = self.process.wait_timeout(timeout)?;
        if let Some(keep) = std::env::var_os("CASCADE_KEEP_PLAYER_LOGS") {
            let name = format!("drive-{}.log", self.process.pid());
            let _ = std::fs::copy(self.process.log_path(), PathBuf::from(keep).join(name));
        }
        let text = std::fs::read_to_string(&self.report).unwrap_or_default();
        match status {
            Some(s) if s.success() => serde_json::from_str(text.trim()).map_err(|e| {
                HarnessError::Service(format!(
                    "the player's report is not JSON ({e}): {text}\n{}",
                    self.process.log_tail()
                ))
            }),
            other => Err(HarnessError::Service(format!(
                "the player ended with {other:?}; its output:\n{}",
                self.process.log_tail()
            ))),
        }
    }

    /// The driver's progress lines so far.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Plays `url` for `options.seconds` and returns the report.
pub fn play(url: &str, options: &PlayOptions) -> Result<PlayReport> {
    let limit = Duration::from_secs(u64::from(options.seconds) + 60);
    Viewer::start(url, options)?.finish(limit)
}
