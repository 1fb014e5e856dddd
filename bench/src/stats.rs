//! Summaries of a load run: request rate, throughput, latency percentiles, status counts.
//! Pure: workers record into a [`Recorder`] each, the recorders are merged and summarised.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// What one worker saw.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    body_bytes: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    /// One completed response.
    pub fn response(&mut self, status: u16, latency: Duration, body_bytes: u64) {
        self.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        *self.statuses.entry(status).or_default() += 1;
        self.body_bytes += body_bytes;
    }

    /// One failed request (connect error, reset, timeout).
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Folds another worker's observations into this one.
    pub fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.body_bytes += other.body_bytes;
    }

    /// The summary over `elapsed` wall time.
    pub fn summarise(mut self, elapsed: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        let responses = self.latencies_us.len() as u64;
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            // Nearest-rank percentile.
            let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
            f64::from(self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1]) / 1000.0
        };
        Summary {
            seconds: secs,
            responses,
            errors: self.errors.values().sum(),
            requests_per_second: responses as f64 / secs,
            mebibytes_per_second: self.body_bytes as f64 / secs / (1 << 20) as f64,
            latency_ms: Latency {
                p50: pct(50.0),
                p90: pct(90.0),
                p99: pct(99.0),
                p999: pct(99.9),
                max: pct(100.0),
            },
            statuses: self.statuses,
            error_kinds: self.errors,
        }
    }
}

/// Result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Wall time measured.
    pub seconds: f64,
    /// Responses received (any status).
    pub responses: u64,
    /// Requests that got no response.
    pub errors: u64,
    /// Responses per second.
    pub requests_per_second: f64,
    /// Body bytes per second, in MiB.
    pub mebibytes_per_second: f64,
    /// Latency percentiles in milliseconds.
    pub latency_ms: Latency,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_rates_and_merging() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for ms in 1..=50 {
            a.response(200, Duration::from_millis(ms), 1024);
        }
        for ms in 51..=100 {
            b.response(
                if ms == 100 { 503 } else { 200 },
                Duration::from_millis(ms),
                1024,
            );
        }
        b.error("connect");
        a.merge(b);
        let s = a.summarise(Duration::from_secs(2));
        assert_eq!(s.responses, 100);
        assert_eq!(s.errors, 1);
        assert_eq!(s.requests_per_second, 50.0);
        assert_eq!(
            (
                s.latency_ms.p50,
                s.latency_ms.p90,
                s.latency_ms.p99,
                s.latency_ms.max
            ),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.statuses[&200], 99);
        assert_eq!(s.statuses[&503], 1);
        assert!((s.mebibytes_per_second - 100.0 * 1024.0 / 2.0 / 1048576.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_run_has_zero_latency_not_a_panic() {
        let s = Recorder::default().summarise(Duration::from_secs(1));
        assert_eq!((s.responses, s.latency_ms.p99), (0, 0.0));
    }
}
