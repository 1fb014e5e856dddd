//! Ramp-to-break, no IO: every stage that holds its viewers steady is judged on its own, and
//! the capacity is the most viewers a step held with its thresholds met, before the first step
//! that missed them.
//!
//! Only the thresholds that mean something over a few seconds are judged per step: rebuffer
//! ratio, errors and live-latency percentiles. Start-up and "viewers that played" belong to the
//! whole run.

use serde::Serialize;

use super::figures::{Second, Verdict, quantile, sorted};
use super::scenario::{Scenario, Threshold};

/// Seconds skipped at the start of each step: viewers that joined during the ramp before it
/// are still starting up.
pub const SETTLE_SECONDS: u32 = 5;

/// The metrics a step is judged on.
const STEP_METRICS: [&str; 5] = [
    "rebuffer_ratio",
    "errors",
    "p50_live_latency",
    "p95_live_latency",
    "p99_live_latency",
];

/// A stage that keeps the viewers of the stage before it: `(viewers, from, to)` in whole
/// seconds from the start of the run.
pub fn holds(scenario: &Scenario) -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    let mut previous = 0u32;
    let mut start = 0f64;
    for stage in &scenario.stages {
        let end = start + stage.duration.0.as_secs_f64();
        if stage.viewers > 0 && stage.viewers == previous {
            out.push((stage.viewers, start.round() as u32, end.round() as u32));
        }
        previous = stage.viewers;
        start = end;
    }
    out
}

/// One held step, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Viewers held.
    pub viewers: u32,
    /// First second judged (after [`SETTLE_SECONDS`]).
    pub from_second: u32,
    /// Last second judged.
    pub to_second: u32,
    /// Viewer-seconds playing or stalled, sampled once a second.
    pub viewer_seconds: u64,
    /// Viewer-seconds stalled over viewer-seconds playing or stalled.
    pub rebuffer_ratio: f64,
    /// Failed requests over requests.
    pub error_ratio: f64,
    /// Live latency over every sample of the step, seconds.
    pub latency_p50: Option<f64>,
    /// 95th percentile.
    pub latency_p95: Option<f64>,
    /// 99th percentile.
    pub latency_p99: Option<f64>,
    /// The step's thresholds.
    pub thresholds: Vec<Verdict>,
    /// Whether some viewer played and every threshold passed.
    pub passed: bool,
}

impl Step {
    /// Whether it passed with the live-latency thresholds left out.
    pub fn passed_ignoring_latency(&self) -> bool {
        self.viewer_seconds > 0
            && self
                .thresholds
                .iter()
                .filter(|v| !v.threshold.contains("live_latency"))
                .all(|v| v.passed)
    }
}

/// Judges each hold. `series[i]` is second `i + 1` of the run and `latencies[i]` its samples.
pub fn judge_steps(
    holds: &[(u32, u32, u32)],
    series: &[Second],
    latencies: &[Vec<f64>],
    thresholds: &[Threshold],
) -> Vec<Step> {
    let mut steps = Vec::new();
    for &(viewers, from, to) in holds {
        let first = from + SETTLE_SECONDS + 1;
        if first > to {
            continue;
        }
        let range = (first as usize - 1)..(to as usize).min(series.len());
        let Some(seconds) = series.get(range.clone()) else {
            continue;
        };
        if seconds.is_empty() {
            continue;
        }
        let playing: u64 = seconds.iter().map(|s| u64::from(s.playing)).sum();
        let stalled: u64 = seconds.iter().map(|s| u64::from(s.stalled)).sum();
        let requests: u64 = seconds.iter().map(|s| s.requests).sum();
        let errors: u64 = seconds.iter().map(|s| s.errors).sum();
        let samples = sorted(
            latencies
                .get(range)
                .unwrap_or_default()
                .iter()
                .flatten()
                .copied()
                .collect(),
        );
        let mut step = Step {
            viewers,
            from_second: first,
            to_second: first + seconds.len() as u32 - 1,
            viewer_seconds: playing + stalled,
            rebuffer_ratio: stalled as f64 / ((playing + stalled) as f64).max(1e-9),
            error_ratio: errors as f64 / (requests as f64).max(1.0),
            latency_p50: quantile(&samples, 0.5),
            latency_p95: quantile(&samples, 0.95),
            latency_p99: quantile(&samples, 0.99),
            thresholds: Vec::new(),
            passed: false,
        };
        step.thresholds = thresholds
            .iter()
            .filter(|t| STEP_METRICS.contains(&t.metric.as_str()))
            .map(|t| {
                let actual = match t.metric.as_str() {
                    "rebuffer_ratio" => step.rebuffer_ratio,
                    "errors" => step.error_ratio,
                    "p50_live_latency" => step.latency_p50.unwrap_or(f64::NAN),
                    "p95_live_latency" => step.latency_p95.unwrap_or(f64::NAN),
                    _ => step.latency_p99.unwrap_or(f64::NAN),
                };
                Verdict {
                    threshold: t.line.clone(),
                    actual,
                    passed: t.passes(actual),
                }
            })
            .collect();
        step.passed = step.viewer_seconds > 0 && step.thresholds.iter().all(|v| v.passed);
        steps.push(step);
    }
    steps
}

/// The most viewers a step held while `passes`, before the first step that did not
/// (`None` if the first step already failed).
pub fn capacity(steps: &[Step], passes: impl Fn(&Step) -> bool) -> Option<u32> {
    steps
        .iter()
        .take_while(|s| passes(s))
        .map(|s| s.viewers)
        .max()
}

/// A capacity in words: `none`, `120`, or `at least 200` when every step up to the last
/// passed (the ramp ended before the server broke).
pub fn describe_capacity(steps: &[Step], capacity: Option<u32>) -> String {
    match capacity {
        None => "none".to_owned(),
        Some(c) if steps.last().map(|s| s.viewers) == Some(c) => format!("at least {c}"),
        Some(c) => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(stages: &str) -> (Scenario, Vec<Threshold>) {
        let text = format!(
            "name = \"ramp\"\nstages = [{stages}]\nthresholds = [\"rebuffer_ratio < 1%\", \"p95_live_latency < 2s\", \"startup_p95 < 2s\"]"
        );
        Scenario::parse(&text).expect("scenario")
    }

    fn second(viewers: u32, stalled: u32, requests: u64, errors: u64) -> Second {
        Second {
            viewers,
            playing: viewers - stalled,
            stalled,
            requests,
            errors,
            ..Second::default()
        }
    }

    #[test]
    fn holds_are_the_stages_that_keep_the_viewers_before_them() {
        let (s, _) = scenario(
            "{ duration = \"10s\", viewers = 20 }, { duration = \"20s\", viewers = 20 }, \
             { duration = \"10s\", viewers = 40 }, { duration = \"20s\", viewers = 40 }, \
             { duration = \"5s\", viewers = 0 }",
        );
        assert_eq!(holds(&s), vec![(20, 10, 30), (40, 40, 60)]);
    }

    #[test]
    fn each_step_is_judged_on_its_own_seconds_after_settling() {
        let (s, thresholds) = scenario(
            "{ duration = \"2s\", viewers = 10 }, { duration = \"10s\", viewers = 10 }, \
             { duration = \"2s\", viewers = 20 }, { duration = \"10s\", viewers = 20 }",
        );
        // 24 seconds: the first step is clean, the second stalls a tenth of the time and
        // falls behind; a stall during the first step's settling is not counted.
        let mut series = Vec::new();
        let mut latencies = Vec::new();
        for t in 1..=24u32 {
            let (viewers, stalled, latency) = match t {
                3 => (10, 10, 5.0),
                1..=12 => (10, 0, 1.0),
                _ => (20, 2, 3.0),
            };
            series.push(second(viewers, stalled, 100, 0));
            latencies.push(vec![latency; viewers as usize]);
        }
        let steps = judge_steps(&holds(&s), &series, &latencies, &thresholds);
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].from_second, steps[0].to_second), (8, 12));
        assert_eq!(steps[0].rebuffer_ratio, 0.0);
        assert_eq!(steps[0].latency_p95, Some(1.0));
        assert!(steps[0].passed);
        // startup_p95 is a whole-run figure: not judged per step.
        assert_eq!(steps[0].thresholds.len(), 2);
        assert!((steps[1].rebuffer_ratio - 0.1).abs() < 1e-9);
        assert_eq!(steps[1].latency_p95, Some(3.0));
        assert!(!steps[1].passed);
        assert!(!steps[1].passed_ignoring_latency());
        assert_eq!(capacity(&steps, |s| s.passed), Some(10));
    }

    #[test]
    fn capacity_stops_at_the_first_failed_step_and_can_ignore_latency() {
        let step = |viewers, rebuffer_ok, latency_ok| Step {
            viewers,
            from_second: 0,
            to_second: 0,
            viewer_seconds: 100,
            rebuffer_ratio: 0.0,
            error_ratio: 0.0,
            latency_p50: Some(1.0),
            latency_p95: Some(1.0),
            latency_p99: Some(1.0),
            thresholds: vec![
                Verdict {
                    threshold: "rebuffer_ratio < 1%".into(),
                    actual: 0.0,
                    passed: rebuffer_ok,
                },
                Verdict {
                    threshold: "p95_live_latency < 2s".into(),
                    actual: 0.0,
                    passed: latency_ok,
                },
            ],
            passed: rebuffer_ok && latency_ok,
        };
        let steps = [
            step(50, true, false),
            step(100, true, false),
            step(150, false, false),
            // Recovering later does not count: the server broke at 150.
            step(200, true, true),
        ];
        assert_eq!(capacity(&steps, |s| s.passed), None);
        assert_eq!(capacity(&steps, Step::passed_ignoring_latency), Some(100));
        assert_eq!(describe_capacity(&steps, None), "none");
        assert_eq!(describe_capacity(&steps, Some(100)), "100");
        assert_eq!(describe_capacity(&steps, Some(200)), "at least 200");
    }

    #[test]
    fn a_step_where_nobody_played_fails() {
        let (s, thresholds) =
            scenario("{ duration = \"1s\", viewers = 5 }, { duration = \"10s\", viewers = 5 }");
        let series: Vec<Second> = (0..11).map(|_| Second::default()).collect();
        let latencies = vec![Vec::new(); 11];
        let steps = judge_steps(&holds(&s), &series, &latencies, &thresholds);
        assert_eq!(steps.len(), 1);
        assert!(!steps[0].passed);
        assert!(!steps[0].passed_ignoring_latency());
    }
}
