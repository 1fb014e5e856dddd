//! QoE events from a stream's minute, in the seed platform's names: `high_latency`,
//! `buffer_underflow`, `frame_drop`, `quality_changed`, `bitrate_change`.

use crate::minute::MinuteStats;

/// When a minute deserves an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Average live latency above this, ms (seed alert: 5000).
    pub high_latency_ms: f64,
    /// Rebuffer ratio above this (seed: 3 %).
    pub rebuffer_ratio: f64,
    /// Buffer health below this, % (seed: 50).
    pub buffer_health_percent: f64,
    /// Quality score moving by at least this from the previous minute.
    pub quality_change: f64,
    /// Dropped frames at or above this.
    pub dropped_frames: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            high_latency_ms: 5_000.0,
            rebuffer_ratio: 0.03,
            buffer_health_percent: 50.0,
            quality_change: 20.0,
            dropped_frames: 30,
        }
    }
}

/// One event to add to the stream's list.
#[derive(Debug, Clone, PartialEq)]
pub struct QoeEvent {
    /// The seed's event type.
    pub event_type: &'static str,
    /// `info` or `warning`.
    pub severity: &'static str,
    /// What happened, with the figures.
    pub message: String,
}

/// The events `now` calls for, given the stream's `previous` minute (if it had viewers).
pub fn qoe_events(
    previous: Option<&MinuteStats>,
    now: &MinuteStats,
    t: &Thresholds,
) -> Vec<QoeEvent> {
    let mut out = Vec::new();
    let mut push = |event_type, severity, message: String| {
        out.push(QoeEvent {
            event_type,
            severity,
            message,
        })
    };
    if let Some(l) = now.average_latency_ms().filter(|l| *l > t.high_latency_ms) {
        push(
            "high_latency",
            "warning",
            format!(
                "average live latency {:.1} s over {:.1} s",
                l / 1000.0,
                t.high_latency_ms / 1000.0
            ),
        );
    }
    let rebuffer = now.rebuffer_ratio().filter(|r| *r > t.rebuffer_ratio);
    let health = now
        .buffer_health_percent()
        .filter(|h| *h < t.buffer_health_percent);
    if rebuffer.is_some() || health.is_some() {
        push(
            "buffer_underflow",
            "warning",
            format!(
                "{} starvations in {} playback samples ({:.1} %), buffer health {:.0} %",
                now.starved_samples,
                now.playback_samples,
                now.rebuffer_ratio().unwrap_or(0.0) * 100.0,
                now.buffer_health_percent().unwrap_or(0.0)
            ),
        );
    }
    if now.dropped_frames >= t.dropped_frames && now.dropped_frames > 0 {
        push(
            "frame_drop",
            "warning",
            format!("players dropped {} frames", now.dropped_frames),
        );
    }
    let Some(previous) = previous else {
        return out;
    };
    if let (Some(before), Some(after)) = (previous.quality_score(), now.quality_score())
        && (after - before).abs() >= t.quality_change
    {
        let severity = if after < before { "warning" } else { "info" };
        push(
            "quality_changed",
            severity,
            format!("quality score {before:.0} → {after:.0}"),
        );
    }
    if let (Some(before), Some(after)) = (
        previous.dominant_bitrate_kbps(),
        now.dominant_bitrate_kbps(),
    ) && before != after
    {
        push(
            "bitrate_change",
            "info",
            format!("most viewers moved from {before} kbit/s to {after} kbit/s"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn minute(starved: u64, latency_ms: u64, bitrate: u32) -> MinuteStats {
        MinuteStats {
            requests: 100,
            media_requests: 100,
            playback_samples: 100,
            healthy_samples: 100 - starved,
            starved_samples: starved,
            latency_sum_ms: latency_ms * 100,
            latency_count: 100,
            bitrates: BTreeMap::from([(bitrate, 100)]),
            ..MinuteStats::default()
        }
    }

    #[test]
    fn a_good_minute_raises_nothing() {
        let t = Thresholds::default();
        assert!(qoe_events(None, &minute(0, 1_500, 2_800), &t).is_empty());
        assert!(
            qoe_events(Some(&minute(1, 1_400, 2_800)), &minute(0, 1_500, 2_800), &t).is_empty()
        );
    }

    #[test]
    fn thresholds_raise_their_events() {
        let t = Thresholds::default();
        let before = minute(0, 1_500, 2_800);
        let mut bad = minute(5, 6_000, 800);
        bad.dropped_frames = 40;
        let types: Vec<_> = qoe_events(Some(&before), &bad, &t)
            .iter()
            .map(|e| (e.event_type, e.severity))
            .collect();
        assert_eq!(
            types,
            [
                ("high_latency", "warning"),
                ("buffer_underflow", "warning"),
                ("frame_drop", "warning"),
                ("quality_changed", "warning"),
                ("bitrate_change", "info"),
            ]
        );
    }
}
