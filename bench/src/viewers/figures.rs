//! The figures a run is measured in, no IO: one second over all viewers, a threshold's
//! verdict, and nearest-rank quantiles. The whole-run summary (`report`) and the ramp's
//! steps (`steps`) are both made of these.

use serde::Serialize;

/// One second of the run, over all viewers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds since the run began.
    pub t: u32,
    /// Viewers joined and not yet left.
    pub viewers: u32,
    /// Of which playing.
    pub playing: u32,
    /// Of which stalled.
    pub stalled: u32,
    /// Requests answered (or failed) during the second.
    pub requests: u64,
    /// Failed during the second.
    pub errors: u64,
    /// Body bytes received during the second.
    pub bytes: u64,
    /// Stalls that began during the second.
    pub new_stalls: u32,
    /// Live latency over the viewers playing: median and 95th percentile, seconds.
    pub latency_p50: Option<f64>,
    /// 95th percentile.
    pub latency_p95: Option<f64>,
    /// Viewers per variant (index as in `Report::variants`).
    pub variants: Vec<u32>,
}

/// A threshold's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The line.
    pub threshold: String,
    /// The figure measured.
    pub actual: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// The `q` quantile of `sorted` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Sorts figures for [`quantile`].
pub fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    values
}
