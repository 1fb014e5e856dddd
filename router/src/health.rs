//! Edge health and load as probes see them: an edge leaves after `failures` failed probes in a
//! row and returns after `successes` good ones; its egress comes from the byte counter its
//! `/metrics` exports, as a rate between probes. Pure: probes and clocks are passed in.

use std::time::Instant;

/// The counter edges export for body bytes sent to viewers.
pub const EGRESS_COUNTER: &str = "cascade_proxy_response_body_bytes_total";

/// What one probe of an edge found.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `/readyz` answered 200; the egress counter, if `/metrics` had it.
    Ready {
        /// [`EGRESS_COUNTER`] summed over its series.
        egress_bytes_total: Option<u64>,
    },
    /// Not ready, not reachable or too slow.
    Failed(String),
}

/// Whether an edge takes viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not probed yet: takes no viewers.
    Unknown,
    /// Takes viewers.
    Up,
    /// Takes no viewers until enough good probes in a row.
    Down,
}

/// One edge's health record.
#[derive(Debug, Clone)]
pub struct EdgeHealth {
    state: State,
    good_in_a_row: u32,
    failed_in_a_row: u32,
    last_counter: Option<(u64, Instant)>,
    egress_bps: f64,
    last_error: Option<String>,
    /// Whether it was ever up: an edge still starting comes up on its first good probe.
    was_up: bool,
}

impl Default for EdgeHealth {
    fn default() -> Self {
        Self {
            was_up: false,
            state: State::Unknown,
            good_in_a_row: 0,
            failed_in_a_row: 0,
            last_counter: None,
            egress_bps: 0.0,
            last_error: None,
        }
    }
}

/// How many probes in a row change an edge's state.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Failed probes before an up edge leaves.
    pub failures: u32,
    /// Good probes before a down edge returns.
    pub successes: u32,
}

impl EdgeHealth {
    /// Whether the edge takes viewers.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Egress in bits per second, smoothed over the last probes.
    pub fn egress_bps(&self) -> f64 {
        self.egress_bps
    }

    /// Why the last probe failed, while the edge is not up.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Applies one probe's result; returns the new state when it changed. The first probe
    /// decides at once, and an edge that was never up (still starting when first probed)
    /// comes up on its first good probe: streaks guard against flapping, not against start-up.
    pub fn record(&mut self, probe: Probe, now: Instant, limits: Thresholds) -> Option<State> {
        let before = self.state;
        match probe {
            Probe::Ready { egress_bytes_total } => {
                self.good_in_a_row = self.good_in_a_row.saturating_add(1);
                self.failed_in_a_row = 0;
                if let Some(total) = egress_bytes_total {
                    self.update_egress(total, now);
                }
                if self.state == State::Unknown
                    || (self.state == State::Down
                        && (!self.was_up || self.good_in_a_row >= limits.successes))
                {
                    self.state = State::Up;
                    self.was_up = true;
                    self.last_error = None;
                }
            }
            Probe::Failed(why) => {
                self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
                self.good_in_a_row = 0;
                self.last_error = Some(why);
                if self.state == State::Unknown
                    || (self.state == State::Up && self.failed_in_a_row >= limits.failures)
                {
                    self.state = State::Down;
                    self.egress_bps = 0.0;
                    self.last_counter = None;
                }
            }
        }
        (self.state != before).then_some(self.state)
    }

    fn update_egress(&mut self, total: u64, now: Instant) {
        if let Some((previous, at)) = self.last_counter {
            let seconds = now.saturating_duration_since(at).as_secs_f64();
            if seconds > 0.0 {
                // A smaller total means the edge restarted and counts from zero again.
                let bytes = if total >= previous {
                    total - previous
                } else {
                    total
                };
                let rate = bytes as f64 * 8.0 / seconds;
                self.egress_bps = if self.egress_bps == 0.0 {
                    rate
                } else {
                    0.5 * self.egress_bps + 0.5 * rate
                };
            }
        }
        self.last_counter = Some((total, now));
    }
}

/// The sum of every series of counter `name` in a Prometheus text exposition.
pub fn counter_total(exposition: &str, name: &str) -> Option<u64> {
    let mut total: Option<f64> = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.rsplit_once('}').map(|(_, value)| value)
        } else {
            rest.starts_with(' ').then_some(rest)
        };
        let Some(value) = value.and_then(|v| v.split_whitespace().next()) else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>()
            && v.is_finite()
            && v >= 0.0
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total.map(|t| t as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: Thresholds = Thresholds {
        failures: 2,
        successes: 3,
    };

    fn ready(total: u64) -> Probe {
        Probe::Ready {
            egress_bytes_total: Some(total),
        }
    }

    #[test]
    fn the_first_probe_decides_then_streaks_do() {
        let t = Instant::now();
        let mut edge = EdgeHealth::default();
        assert_eq!(edge.state(), State::Unknown);
        assert_eq!(edge.record(ready(0), t, LIMITS), Some(State::Up));
        assert_eq!(
            edge.record(Probe::Failed("refused".into()), t, LIMITS),
            None
        );
        assert!(edge.is_up(), "one failure is not enough");
        assert_eq!(edge.record(ready(0), t, LIMITS), None);
        assert_eq!(
            edge.record(Probe::Failed("refused".into()), t, LIMITS),
            None
        );
        assert_eq!(
            edge.record(Probe::Failed("refused".into()), t, LIMITS),
            Some(State::Down)
        );
        assert_eq!(edge.last_error(), Some("refused"));
        assert_eq!(edge.record(ready(0), t, LIMITS), None);
        assert_eq!(edge.record(ready(0), t, LIMITS), None);
        assert_eq!(edge.record(ready(0), t, LIMITS), Some(State::Up));
        assert_eq!(edge.last_error(), None);

        let mut dead = EdgeHealth::default();
        assert_eq!(
            dead.record(Probe::Failed("timeout".into()), t, LIMITS),
            Some(State::Down)
        );
    }

    #[test]
    fn egress_is_the_counter_rate_in_bits() {
        let t = Instant::now();
        let mut edge = EdgeHealth::default();
        edge.record(ready(1_000), t, LIMITS);
        assert_eq!(edge.egress_bps(), 0.0);
        edge.record(ready(1_000 + 125_000), t + Duration::from_secs(1), LIMITS);
        assert_eq!(edge.egress_bps(), 1_000_000.0);
        edge.record(ready(1_000 + 125_000), t + Duration::from_secs(2), LIMITS);
        assert_eq!(
            edge.egress_bps(),
            500_000.0,
            "smoothed towards the idle second"
        );
        // A restart resets the counter: the new total is what was sent since.
        edge.record(ready(100_000), t + Duration::from_secs(3), LIMITS);
        assert_eq!(edge.egress_bps(), 0.5 * 500_000.0 + 0.5 * 800_000.0);
    }

    #[test]
    fn counters_are_summed_over_their_series() {
        let text = "# HELP cascade_proxy_response_body_bytes_total Body bytes\n\
            # TYPE cascade_proxy_response_body_bytes_total counter\n\
            cascade_proxy_response_body_bytes_total{listener=\"h1\"} 1000\n\
            cascade_proxy_response_body_bytes_total{listener=\"h3\"} 2.5e3\n\
            cascade_proxy_response_body_bytes_total_other 99\n\
            cascade_proxy_requests_total 7\n";
        assert_eq!(counter_total(text, EGRESS_COUNTER), Some(3500));
        assert_eq!(counter_total("x 1\n", EGRESS_COUNTER), None);
        assert_eq!(
            counter_total(
                "cascade_proxy_response_body_bytes_total 42\n",
                EGRESS_COUNTER
            ),
            Some(42)
        );
        assert_eq!(
            counter_total(
                "cascade_proxy_response_body_bytes_total NaN\n",
                EGRESS_COUNTER
            ),
            None
        );
    }
}
