//! Scenarios and thresholds, no IO: how many viewers watch over time (ramping stages, as k6's
//! `ramping-vus`), and the pass/fail lines a run is judged by (`rebuffer_ratio < 1%`).

use std::time::Duration;

use serde::Deserialize;

/// One stage: ramp linearly from the previous stage's viewers to `viewers` over `duration`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// How long the stage lasts (`30s`, `2m`).
    pub duration: cascade_config::HumanDuration,
    /// Viewers at the end of the stage.
    pub viewers: u32,
}

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name for reports.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Pass/fail lines, `<metric> <op> <value>` (see [`Threshold`]).
    #[serde(default)]
    pub thresholds: Vec<String>,
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, or fields missing or unknown.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// No stage, or none with viewers.
    #[error("a scenario needs at least one stage with viewers")]
    Empty,
    /// A threshold line that does not read.
    #[error("threshold {line:?}: {why}")]
    Threshold {
        /// The line.
        line: String,
        /// What is wrong.
        why: String,
    },
}

impl Scenario {
    /// Reads a scenario file's text and checks it.
    pub fn parse(text: &str) -> Result<(Self, Vec<Threshold>), ScenarioError> {
        let scenario: Self = toml::from_str(text)?;
        if scenario.stages.iter().all(|s| s.viewers == 0) {
            return Err(ScenarioError::Empty);
        }
        let thresholds = scenario
            .thresholds
            .iter()
            .map(|line| Threshold::parse(line))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((scenario, thresholds))
    }

    /// The whole run.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration.0).sum()
    }

    /// Viewers that should be watching `at` into the run.
    pub fn viewers_at(&self, at: Duration) -> u32 {
        let mut from = 0u32;
        let mut start = Duration::ZERO;
        for stage in &self.stages {
            let end = start + stage.duration.0;
            if at < end {
                let span = stage.duration.0.as_secs_f64();
                let done = if span > 0.0 {
                    (at - start).as_secs_f64() / span
                } else {
                    1.0
                };
                let v = f64::from(from) + (f64::from(stage.viewers) - f64::from(from)) * done;
                return v.round() as u32;
            }
            from = stage.viewers;
            start = end;
        }
        0
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Below,
    /// `<=`
    AtMost,
    /// `>`
    Above,
    /// `>=`
    AtLeast,
}

/// One pass/fail line: `rebuffer_ratio < 1%`, `p95_live_latency < 2s`, `errors < 0.1%`.
///
/// Metrics: `rebuffer_ratio`, `errors` (failed share of requests), `startup_p95`,
/// `p50_live_latency`, `p95_live_latency`, `p99_live_latency`, `stalls_per_viewer_minute`,
/// `viewers_started` (share of viewers that played). Values take `%` (share), `s` or `ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The line as written.
    pub line: String,
    /// Which figure.
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The bound, in the metric's unit (a share as 0–1, times in seconds).
    pub value: f64,
}

/// The metrics thresholds can name.
pub const METRICS: [&str; 8] = [
    "rebuffer_ratio",
    "errors",
    "startup_p95",
    "p50_live_latency",
    "p95_live_latency",
    "p99_live_latency",
    "stalls_per_viewer_minute",
    "viewers_started",
];

impl Threshold {
    /// Reads one line.
    pub fn parse(line: &str) -> Result<Self, ScenarioError> {
        let bad = |why: &str| ScenarioError::Threshold {
            line: line.to_owned(),
            why: why.to_owned(),
        };
        let mut words = line.split_whitespace();
        let (Some(metric), Some(op), Some(value), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad("write it as `<metric> <op> <value>`"));
        };
        if !METRICS.contains(&metric) {
            return Err(bad(&format!(
                "unknown metric; known: {}",
                METRICS.join(", ")
            )));
        }
        let op = match op {
            "<" => Op::Below,
            "<=" => Op::AtMost,
            ">" => Op::Above,
            ">=" => Op::AtLeast,
            _ => return Err(bad("the operator is one of < <= > >=")),
        };
        let (number, scale) = if let Some(n) = value.strip_suffix('%') {
            (n, 0.01)
        } else if let Some(n) = value.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = value.strip_suffix('s') {
            (n, 1.0)
        } else {
            (value, 1.0)
        };
        let number: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| bad("the value is not a number"))?;
        Ok(Self {
            line: line.to_owned(),
            metric: metric.to_owned(),
            op,
            value: number * scale,
        })
    }

    /// Whether `actual` passes.
    pub fn passes(&self, actual: f64) -> bool {
        match self.op {
            Op::Below => actual < self.value,
            Op::AtMost => actual <= self.value,
            Op::Above => actual > self.value,
            Op::AtLeast => actual >= self.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOAD: &str = r#"
name = "load"
stages = [
  { duration = "10s", viewers = 100 },
  { duration = "20s", viewers = 100 },
  { duration = "10s", viewers = 0 },
]
thresholds = ["rebuffer_ratio < 1%", "p95_live_latency < 2s", "errors <= 0.1%", "startup_p95 < 1500ms"]
"#;

    #[test]
    fn stages_ramp_linearly_from_the_previous_target() {
        let (s, _) = Scenario::parse(LOAD).unwrap();
        assert_eq!(s.duration(), Duration::from_secs(40));
        assert_eq!(s.viewers_at(Duration::ZERO), 0);
        assert_eq!(s.viewers_at(Duration::from_secs(5)), 50);
        assert_eq!(s.viewers_at(Duration::from_secs(15)), 100);
        assert_eq!(s.viewers_at(Duration::from_secs(35)), 50);
        assert_eq!(s.viewers_at(Duration::from_secs(41)), 0);
    }

    #[test]
    fn thresholds_read_units_and_judge() {
        let (_, t) = Scenario::parse(LOAD).unwrap();
        assert_eq!(t[0].metric, "rebuffer_ratio");
        assert!((t[0].value - 0.01).abs() < 1e-12);
        assert!(t[0].passes(0.009) && !t[0].passes(0.01));
        assert_eq!(t[1].value, 2.0);
        assert!(t[2].passes(0.001) && !t[2].passes(0.0011));
        assert!((t[3].value - 1.5).abs() < 1e-12);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let err = |text: &str| Scenario::parse(text).unwrap_err().to_string();
        assert!(err("name = \"x\"\nstages = []").contains("at least one stage"));
        assert!(err("name = \"x\"\nstages = [{ duration = \"1s\", viewers = 1 }]\nthresholds = [\"latency < 2s\"]").contains("unknown metric"));
        assert!(err("name = \"x\"\nstages = [{ duration = \"1s\", viewers = 1 }]\nthresholds = [\"errors ~ 2\"]").contains("operator"));
        assert!(err("name = \"x\"\nstages = [{ duration = \"1s\", viewers = 1 }]\nthresholds = [\"errors < two\"]").contains("not a number"));
        assert!(
            err("name = \"x\"\nstages = [{ duration = \"soon\", viewers = 1 }]")
                .contains("duration")
        );
        assert!(err("name = \"x\"\nstage = []").contains("stage"));
    }
}
