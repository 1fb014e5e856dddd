//! Incremental parser for the `key=value` reports ffmpeg writes with
//! `-progress pipe:1`. Each report is a block of lines terminated by
//! `progress=continue` or `progress=end`.

/// One progress report from ffmpeg.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Frames output so far (`frame`).
    pub frame: u64,
    /// Current output frame rate (`fps`).
    pub fps: f64,
    /// Output bitrate in kbit/s (`bitrate`); `None` while ffmpeg reports N/A.
    pub bitrate_kbps: Option<f64>,
    /// Bytes output so far (`total_size`).
    pub total_size: u64,
    /// Output position in microseconds (`out_time_us`, falling back to
    /// `out_time_ms`, which despite its name is also microseconds, then to
    /// `out_time`). Negative early in some streams; `None` while N/A.
    pub out_time_us: Option<i64>,
    /// Frames duplicated to keep the output rate (`dup_frames`).
    pub dup_frames: u64,
    /// Frames dropped to keep the output rate (`drop_frames`).
    pub drop_frames: u64,
    /// Processing speed relative to real time (`speed`); `None` while N/A.
    pub speed: Option<f64>,
    /// The block ended with `progress=end`: ffmpeg is finishing.
    pub ended: bool,
}

/// Where the current block's output time came from; a better source in the
/// same block wins regardless of line order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
enum TimeSource {
    #[default]
    None,
    OutTime,
    OutTimeMs,
    OutTimeUs,
}

/// Feeds ffmpeg progress lines one at a time and yields a [`Progress`]
/// snapshot whenever a block completes. Values persist across blocks, so a
/// key that is missing or unparsable keeps its previous value.
#[derive(Debug, Clone, Default)]
pub struct ProgressParser {
    current: Progress,
    time_source: TimeSource,
}

impl ProgressParser {
    /// Creates a parser with every value zero / unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes one line (with or without its line ending). Returns a
    /// snapshot when the line is `progress=...`, which ends a block.
    pub fn line(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        let value = value.trim();
        let p = &mut self.current;
        match key {
            "frame" => set_parsed(&mut p.frame, value),
            "fps" => {
                if let Some(v) = parse_f64(value) {
                    p.fps = v;
                }
            }
            "bitrate" => set_optional(&mut p.bitrate_kbps, value, |v| {
                parse_f64(v.strip_suffix("kbits/s")?.trim_end())
            }),
            "total_size" => set_parsed(&mut p.total_size, value),
            "out_time_us" => self.set_time(TimeSource::OutTimeUs, value, parse_i64),
            "out_time_ms" => self.set_time(TimeSource::OutTimeMs, value, parse_i64),
            "out_time" => self.set_time(TimeSource::OutTime, value, parse_clock),
            "dup_frames" => set_parsed(&mut p.dup_frames, value),
            "drop_frames" => set_parsed(&mut p.drop_frames, value),
            "speed" => set_optional(&mut p.speed, value, |v| {
                parse_f64(v.strip_suffix('x')?.trim_end())
            }),
            "progress" => {
                p.ended = value == "end";
                self.time_source = TimeSource::None;
                return Some(self.current.clone());
            }
            _ => {}
        }
        None
    }

    fn set_time(&mut self, source: TimeSource, value: &str, parse: fn(&str) -> Option<i64>) {
        if source < self.time_source {
            return;
        }
        if value == "N/A" {
            self.current.out_time_us = None;
            self.time_source = source;
        } else if let Some(v) = parse(value) {
            self.current.out_time_us = Some(v);
            self.time_source = source;
        }
    }
}

fn set_parsed(slot: &mut u64, value: &str) {
    if let Ok(v) = value.parse() {
        *slot = v;
    }
}

/// "N/A" clears the value; anything else unparsable leaves it alone.
fn set_optional(slot: &mut Option<f64>, value: &str, parse: impl Fn(&str) -> Option<f64>) {
    if value == "N/A" {
        *slot = None;
    } else if let Some(v) = parse(value) {
        *slot = Some(v);
    }
}

fn parse_f64(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn parse_i64(value: &str) -> Option<i64> {
    value.parse().ok()
}

/// Parses ffmpeg's `[-]HH:MM:SS.micro` clock into microseconds.
fn parse_clock(value: &str) -> Option<i64> {
    let (negative, rest) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let mut parts = rest.splitn(3, ':');
    let hours: i64 = parse_digits(parts.next()?)?;
    let minutes: i64 = parse_digits(parts.next()?)?;
    let sec_part = parts.next()?;
    let (secs, frac) = sec_part.split_once('.').unwrap_or((sec_part, ""));
    let seconds: i64 = parse_digits(secs)?;
    let mut micros: i64 = 0;
    let mut digits = 0;
    for c in frac.chars() {
        let d = i64::from(c.to_digit(10)?);
        if digits < 6 {
            micros = micros * 10 + d;
            digits += 1;
        }
    }
    for _ in digits..6 {
        micros *= 10;
    }
    let total = hours
        .checked_mul(3600)?
        .checked_add(minutes.checked_mul(60)?)?
        .checked_add(seconds)?
        .checked_mul(1_000_000)?
        .checked_add(micros)?;
    Some(if negative { -total } else { total })
}

fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(parser: &mut ProgressParser, text: &str) -> Vec<Progress> {
        text.lines().filter_map(|l| parser.line(l)).collect()
    }

    const BLOCK: &str = "frame=120\nfps=29.97\nstream_0_0_q=28.0\nbitrate=2794.3kbits/s\n\
total_size=1398101\nout_time_us=4003000\nout_time_ms=4003000\nout_time=00:00:04.003000\n\
dup_frames=1\ndrop_frames=2\nspeed=1.52x\nprogress=continue\n";

    #[test]
    fn parses_a_real_block() {
        let mut p = ProgressParser::new();
        let got = feed(&mut p, BLOCK);
        assert_eq!(
            got,
            vec![Progress {
                frame: 120,
                fps: 29.97,
                bitrate_kbps: Some(2794.3),
                total_size: 1_398_101,
                out_time_us: Some(4_003_000),
                dup_frames: 1,
                drop_frames: 2,
                speed: Some(1.52),
                ended: false,
            }]
        );
    }

    #[test]
    fn no_snapshot_until_progress_line() {
        let mut p = ProgressParser::new();
        assert_eq!(p.line("frame=5"), None);
        assert_eq!(p.line("fps=25"), None);
        let snap = p.line("progress=end\r\n").unwrap();
        assert_eq!(snap.frame, 5);
        assert!(snap.ended);
    }

    #[test]
    fn not_available_values() {
        let mut p = ProgressParser::new();
        feed(&mut p, BLOCK);
        let got = feed(
            &mut p,
            "frame=0\nfps=0.00\nbitrate=N/A\ntotal_size=N/A\nout_time_us=N/A\n\
out_time_ms=N/A\nout_time=N/A\nspeed=N/A\nprogress=continue\n",
        );
        let snap = &got[0];
        assert_eq!(snap.frame, 0);
        assert_eq!(snap.fps, 0.0);
        assert_eq!(snap.bitrate_kbps, None);
        // total_size has no "unknown" state: keeps the previous value.
        assert_eq!(snap.total_size, 1_398_101);
        assert_eq!(snap.out_time_us, None);
        assert_eq!(snap.speed, None);
    }

    #[test]
    fn garbage_is_ignored() {
        let mut p = ProgressParser::new();
        feed(&mut p, BLOCK);
        let got = feed(
            &mut p,
            "garbage\n=\n==\nframe=-3\nframe=abc\nfps=nan\nfps=inf\nbitrate=12kbit\n\
bitrate=kbits/s\nspeed=fastx\nspeed=2.0\nout_time_us=1e3\nout_time=12:xx:00.0\n\
dup_frames=18446744073709551616\nunknown_key=1\n\u{1F600}=\u{0}\nprogress=continue\n",
        );
        assert_eq!(got.len(), 1);
        let snap = &got[0];
        assert_eq!(snap.frame, 120);
        assert_eq!(snap.fps, 29.97);
        assert_eq!(snap.bitrate_kbps, Some(2794.3));
        assert_eq!(snap.speed, Some(1.52));
        assert_eq!(snap.out_time_us, Some(4_003_000));
        assert_eq!(snap.dup_frames, 1);
    }

    #[test]
    fn out_time_sources() {
        let mut p = ProgressParser::new();
        // Only out_time_ms: it is microseconds despite the name.
        let got = feed(&mut p, "out_time_ms=1500000\nprogress=continue\n");
        assert_eq!(got[0].out_time_us, Some(1_500_000));
        // out_time_us wins over out_time regardless of order.
        let got = feed(
            &mut p,
            "out_time_us=2000000\nout_time=00:00:09.000000\nprogress=continue\n",
        );
        assert_eq!(got[0].out_time_us, Some(2_000_000));
        // Clock-only fallback, including negative values ffmpeg prints early.
        let got = feed(&mut p, "out_time=01:02:03.5\nprogress=continue\n");
        assert_eq!(got[0].out_time_us, Some(3_723_500_000));
        let got = feed(&mut p, "out_time=-00:00:00.250000\nprogress=continue\n");
        assert_eq!(got[0].out_time_us, Some(-250_000));
        let got = feed(&mut p, "out_time_us=-250000\nprogress=continue\n");
        assert_eq!(got[0].out_time_us, Some(-250_000));
    }

    #[test]
    fn speed_with_padding_and_end() {
        let mut p = ProgressParser::new();
        let got = feed(&mut p, "speed= 0.998x\nprogress=end\n");
        assert_eq!(got[0].speed, Some(0.998));
        assert!(got[0].ended);
        let got = feed(&mut p, "progress=continue\n");
        assert!(!got[0].ended);
    }

    #[test]
    fn clock_parser_edges() {
        assert_eq!(parse_clock("00:00:00.000000"), Some(0));
        assert_eq!(parse_clock("00:00:01.1234567"), Some(1_123_456));
        assert_eq!(parse_clock("00:00:01"), Some(1_000_000));
        assert_eq!(parse_clock("1:2"), None);
        assert_eq!(parse_clock("::."), None);
        assert_eq!(parse_clock("99999999999999999:00:00.0"), None);
        assert_eq!(parse_clock("00:00:01.+1"), None);
    }
}
