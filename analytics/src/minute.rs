//! Per stream and minute: the figures an operator reads, from the records of that minute and
//! of the session timeout around it. Definitions (also in `docs/analytics.md`):
//!
//! - **viewers**: distinct sessions with a request in the minute; **peak**: the most in any
//!   [`Settings::slot_ms`] slot; **watch time**: the slots each session was active in;
//! - **joins**: sessions with no request in the [`Settings::idle_ms`] before their first one
//!   in the minute; **leaves**: sessions with none in the timeout after their last one;
//! - **hit ratio**: cache hits (fresh, stale or revalidated) over cache lookups;
//! - **buffer health**: share of playback samples (media requests with CMCD `bl`, beacons)
//!   whose buffer was at least [`Settings::healthy_buffer_ms`] and not starved;
//! - **rebuffer ratio**: share of playback samples that reported a starvation (CMCD `bs`, a
//!   beacon's stall);
//! - **latency**: [`Record::live_latency_ms`], average and 95th percentile;
//! - **quality score**: [`MinuteStats::quality_score`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::record::{Identity, Record};

/// A minute, in ms.
pub const MINUTE_MS: i64 = 60_000;

/// How records become figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A session with no request for this long has left.
    pub idle_ms: i64,
    /// The slot in which concurrent viewers are counted.
    pub slot_ms: i64,
    /// A buffer at least this long is healthy.
    pub healthy_buffer_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            idle_ms: 30_000,
            slot_ms: 10_000,
            healthy_buffer_ms: 500,
        }
    }
}

impl Settings {
    /// The records a minute needs: `[minute - idle, minute + 60 s + idle)`.
    pub fn window(&self, minute_ms: i64) -> (i64, i64) {
        (
            minute_ms - self.idle_ms,
            minute_ms + MINUTE_MS + self.idle_ms,
        )
    }
}

/// The start of the minute holding `at_ms`.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// One stream's figures for one minute (or, merged, for a longer interval).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MinuteStats {
    /// Distinct sessions.
    pub viewers: u32,
    /// Most sessions in one slot.
    pub peak_viewers: u32,
    /// Sessions that started.
    pub joins: u32,
    /// Sessions that ended.
    pub leaves: u32,
    /// Seconds watched, over all sessions.
    pub watch_seconds: u64,
    /// Requests.
    pub requests: u64,
    /// Segment and part requests.
    pub media_requests: u64,
    /// Body bytes sent to viewers.
    pub egress_bytes: u64,
    /// Cache lookups.
    pub lookups: u64,
    /// Cache hits among them.
    pub hits: u64,
    /// Playback samples (media requests with a buffer figure, beacons).
    pub playback_samples: u64,
    /// Samples with a healthy buffer.
    pub healthy_samples: u64,
    /// Samples that reported a starvation.
    pub starved_samples: u64,
    /// Sum of reported buffer lengths, ms, and how many.
    pub buffer_sum_ms: u64,
    /// Buffer figures.
    pub buffer_count: u64,
    /// Sum of live latencies, ms.
    pub latency_sum_ms: u64,
    /// Latency figures.
    pub latency_count: u64,
    /// 95th percentile of live latency, ms.
    pub latency_p95_ms: Option<u64>,
    /// Media requests by the bitrate (kbit/s) the player said it fetched.
    pub bitrates: BTreeMap<u32, u64>,
    /// Highest bitrate the players could choose (CMCD `tb`), kbit/s.
    pub top_bitrate_kbps: Option<u32>,
    /// Failed requests.
    pub errors: u64,
    /// Frames the players said they dropped.
    pub dropped_frames: u64,
    /// Startup times of sessions that joined, ms: sum and count.
    pub startup_sum_ms: u64,
    /// Startups measured.
    pub startup_count: u64,
    /// Sum of the ingest bitrate of each minute that has one (the origin samples it), kbit/s.
    pub ingest_sum_kbps: u64,
    /// Minutes with an ingest bitrate.
    pub ingest_minutes: u64,
}

impl MinuteStats {
    /// Hits over lookups.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(self.hits, self.lookups)
    }

    /// Percentage of playback samples with a healthy buffer.
    pub fn buffer_health_percent(&self) -> Option<f64> {
        ratio(self.healthy_samples, self.playback_samples).map(|r| r * 100.0)
    }

    /// Share of playback samples that reported a starvation.
    pub fn rebuffer_ratio(&self) -> Option<f64> {
        ratio(self.starved_samples, self.playback_samples)
    }

    /// Average live latency, ms.
    pub fn average_latency_ms(&self) -> Option<f64> {
        ratio(self.latency_sum_ms, self.latency_count)
    }

    /// Average reported buffer, ms.
    pub fn average_buffer_ms(&self) -> Option<f64> {
        ratio(self.buffer_sum_ms, self.buffer_count)
    }

    /// Average startup, ms.
    pub fn average_startup_ms(&self) -> Option<f64> {
        ratio(self.startup_sum_ms, self.startup_count)
    }

    /// Average bitrate of the media fetched, kbit/s.
    pub fn average_bitrate_kbps(&self) -> Option<f64> {
        let count: u64 = self.bitrates.values().sum();
        let sum: u64 = self.bitrates.iter().map(|(b, n)| u64::from(*b) * n).sum();
        ratio(sum, count)
    }

    /// The bitrate fetched most.
    pub fn dominant_bitrate_kbps(&self) -> Option<u32> {
        self.bitrates
            .iter()
            .max_by_key(|(b, n)| (**n, **b))
            .map(|(b, _)| *b)
    }

    /// Average ingest bitrate, kbit/s.
    pub fn ingest_bitrate_kbps(&self) -> Option<f64> {
        ratio(self.ingest_sum_kbps, self.ingest_minutes)
    }

    /// Records the minute's ingest bitrate.
    pub fn set_ingest_bitrate(&mut self, kbps: Option<u32>) {
        if let Some(kbps) = kbps {
            self.ingest_sum_kbps = u64::from(kbps);
            self.ingest_minutes = 1;
        }
    }

    /// Share of requests that failed.
    pub fn error_ratio(&self) -> Option<f64> {
        ratio(self.errors, self.requests)
    }

    /// Mean egress in bit/s over `seconds`.
    pub fn egress_bits_per_second(&self, seconds: f64) -> f64 {
        self.egress_bytes as f64 * 8.0 / seconds.max(1.0)
    }

    /// 0–100, higher is better: 100, less up to 50 for rebuffering (all of it at 3 % of
    /// samples starved), up to 20 for latency (from 2 s, all of it at 10 s), up to 20 for
    /// bitrate (the average's shortfall from the top bitrate players could pick, else the
    /// highest fetched) and up to 10 for errors (all of it at 5 % of requests). Figures that
    /// are not known cost nothing; a minute with no requests has no score.
    pub fn quality_score(&self) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let mut score = 100.0;
        if let Some(r) = self.rebuffer_ratio() {
            score -= 50.0 * (r / 0.03).min(1.0);
        }
        if let Some(l) = self.average_latency_ms() {
            score -= 20.0 * ((l - 2_000.0).max(0.0) / 8_000.0).min(1.0);
        }
        let top = self
            .top_bitrate_kbps
            .or_else(|| self.bitrates.keys().next_back().copied());
        if let (Some(avg), Some(top)) = (self.average_bitrate_kbps(), top)
            && top > 0
        {
            score -= 20.0 * (1.0 - avg / f64::from(top)).clamp(0.0, 1.0);
        }
        if let Some(e) = self.error_ratio() {
            score -= 10.0 * (e / 0.05).min(1.0);
        }
        Some((score * 10.0_f64).round() / 10.0)
    }

    /// Folds a later interval into this one, for series coarser than a minute: counts add up,
    /// viewers and peaks take the highest minute, the latency p95 the highest minute's.
    pub fn merge(&mut self, other: &MinuteStats) {
        self.viewers = self.viewers.max(other.viewers);
        self.peak_viewers = self.peak_viewers.max(other.peak_viewers);
        self.joins += other.joins;
        self.leaves += other.leaves;
        self.watch_seconds += other.watch_seconds;
        self.requests += other.requests;
        self.media_requests += other.media_requests;
        self.egress_bytes += other.egress_bytes;
        self.lookups += other.lookups;
        self.hits += other.hits;
        self.playback_samples += other.playback_samples;
        self.healthy_samples += other.healthy_samples;
        self.starved_samples += other.starved_samples;
        self.buffer_sum_ms += other.buffer_sum_ms;
        self.buffer_count += other.buffer_count;
        self.latency_sum_ms += other.latency_sum_ms;
        self.latency_count += other.latency_count;
        self.latency_p95_ms = self.latency_p95_ms.max(other.latency_p95_ms);
        for (b, n) in &other.bitrates {
            *self.bitrates.entry(*b).or_default() += n;
        }
        self.top_bitrate_kbps = self.top_bitrate_kbps.max(other.top_bitrate_kbps);
        self.errors += other.errors;
        self.dropped_frames += other.dropped_frames;
        self.startup_sum_ms += other.startup_sum_ms;
        self.startup_count += other.startup_count;
        self.ingest_sum_kbps += other.ingest_sum_kbps;
        self.ingest_minutes += other.ingest_minutes;
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// What one session did in one minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionMinute {
    /// The session.
    pub session: String,
    /// Who it is.
    pub identity: Identity,
    /// First and last request in the minute, Unix ms.
    pub first_ms: i64,
    /// Last request in the minute.
    pub last_ms: i64,
    /// Requests in the minute.
    pub requests: u64,
    /// Bytes in the minute.
    pub bytes: u64,
    /// Renditions fetched.
    pub renditions: BTreeSet<String>,
    /// Starvations reported.
    pub stalls: u64,
    /// The session started in this minute.
    pub joined: bool,
    /// The session ended in this minute.
    pub left: bool,
    /// From its first request to its first media request after startup, ms.
    pub startup_ms: Option<u64>,
}

/// Figures for `minute_ms` from `window`: one stream's records covering
/// [`Settings::window`], in any order. Returns the minute and the sessions active in it.
pub fn aggregate(
    minute_ms: i64,
    window: &[Record],
    settings: &Settings,
) -> (MinuteStats, Vec<SessionMinute>) {
    let end = minute_ms + MINUTE_MS;
    let in_minute = |r: &Record| (minute_ms..end).contains(&r.at_ms);
    let mut by_session: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in window {
        by_session.entry(r.session.as_str()).or_default().push(r);
    }
    let slots = usize::try_from(MINUTE_MS / settings.slot_ms.max(1))
        .unwrap_or(1)
        .max(1);
    let mut per_slot = vec![0u32; slots];
    let mut stats = MinuteStats::default();
    let mut latencies = Vec::new();
    let mut sessions = Vec::new();
    for (session, mut records) in by_session {
        records.sort_by_key(|r| r.at_ms);
        let Some(first) = records.iter().position(|r| in_minute(r)) else {
            continue;
        };
        let Some(last) = records.iter().rposition(|r| in_minute(r)) else {
            continue;
        };
        let first_at = records[first].at_ms;
        let last_at = records[last].at_ms;
        let joined = !records[..first]
            .iter()
            .any(|r| r.at_ms >= first_at - settings.idle_ms);
        let left = !records[last + 1..]
            .iter()
            .any(|r| r.at_ms <= last_at + settings.idle_ms);
        let mut seen = SessionMinute {
            session: session.to_owned(),
            first_ms: first_at,
            last_ms: last_at,
            joined,
            left,
            ..SessionMinute::default()
        };
        if joined {
            seen.startup_ms = startup(&records[first..]);
        }
        let mut active = vec![false; slots];
        for r in &records[first..=last] {
            if !in_minute(r) {
                continue;
            }
            let slot =
                usize::try_from((r.at_ms - minute_ms) / settings.slot_ms.max(1)).unwrap_or(0);
            if let Some(a) = active.get_mut(slot) {
                *a = true;
            }
            seen.requests += 1;
            seen.bytes += r.bytes;
            seen.identity.update(r);
            if let Some(rendition) = r.rendition.as_ref().filter(|_| r.object.is_media()) {
                seen.renditions.insert(rendition.clone());
            }
            if r.starved {
                seen.stalls += 1;
            }
            count(&mut stats, &mut latencies, r, settings);
        }
        for (slot, a) in active.iter().enumerate() {
            if *a {
                per_slot[slot] += 1;
                stats.watch_seconds += u64::try_from(settings.slot_ms / 1000).unwrap_or(0);
            }
        }
        stats.viewers += 1;
        stats.joins += u32::from(joined);
        stats.leaves += u32::from(left);
        if let Some(s) = seen.startup_ms {
            stats.startup_sum_ms += s;
            stats.startup_count += 1;
        }
        sessions.push(seen);
    }
    stats.peak_viewers = per_slot.iter().copied().max().unwrap_or(0);
    stats.latency_p95_ms = percentile(&mut latencies, 0.95);
    sessions.sort_by(|a, b| a.session.cmp(&b.session));
    (stats, sessions)
}

/// One request's share of the minute's figures.
fn count(stats: &mut MinuteStats, latencies: &mut Vec<u64>, r: &Record, settings: &Settings) {
    stats.requests += 1;
    stats.egress_bytes += r.bytes;
    if r.is_lookup() {
        stats.lookups += 1;
        stats.hits += u64::from(r.is_hit());
    }
    stats.errors += u64::from(r.is_error());
    stats.dropped_frames += u64::from(r.dropped_frames.unwrap_or(0));
    if r.object.is_media() {
        stats.media_requests += 1;
        if let Some(b) = r.bitrate_kbps {
            *stats.bitrates.entry(b).or_default() += 1;
        }
    }
    if let Some(tb) = r.top_bitrate_kbps {
        stats.top_bitrate_kbps = stats.top_bitrate_kbps.max(Some(tb));
    }
    if let Some(b) = r.buffer_ms {
        stats.buffer_sum_ms += u64::from(b);
        stats.buffer_count += 1;
    }
    if let Some((healthy, starved)) = r.playback_sample(settings.healthy_buffer_ms) {
        stats.playback_samples += 1;
        stats.starved_samples += u64::from(starved);
        stats.healthy_samples += u64::from(healthy);
    }
    if let Some(l) = r.live_latency_ms() {
        let l = u64::try_from(l).unwrap_or(0);
        stats.latency_sum_ms += l;
        stats.latency_count += 1;
        latencies.push(l);
    }
}

/// A joined session's startup: from its first request to its first media request once the
/// player stopped flagging startup (CMCD `su`). Unknown for players that never flag it.
fn startup(from_first: &[&Record]) -> Option<u64> {
    let first = from_first.first()?.at_ms;
    let flagged = from_first.iter().position(|r| r.startup)?;
    let playing = from_first[flagged..]
        .iter()
        .find(|r| r.object.is_media() && !r.startup)?;
    u64::try_from(playing.at_ms - first).ok()
}

/// The `q` quantile (nearest rank) of `values`.
pub fn percentile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    values
        .get(rank.saturating_sub(1).min(values.len() - 1))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Object;

    const M: i64 = 1_800_000_000_000 / MINUTE_MS * MINUTE_MS;

    fn media(session: &str, at_ms: i64) -> Record {
        Record {
            at_ms,
            stream: "s".into(),
            live: true,
            rendition: Some("720p".into()),
            object: Object::Part,
            status: 200,
            bytes: 1000,
            cache: "hit".into(),
            protocol: "h2".into(),
            edge: "e1".into(),
            session: session.into(),
            buffer_ms: Some(1_000),
            bitrate_kbps: Some(2_800),
            top_bitrate_kbps: Some(2_800),
            object_time_ms: Some(at_ms - 500),
            ..Record::default()
        }
    }

    /// 100 sessions with known behaviour; every figure is counted by hand.
    #[test]
    fn a_hundred_sessions_give_exact_figures() {
        let settings = Settings::default();
        let mut window = Vec::new();
        // 40 sessions watch the whole minute and beyond: one request every 2 s from 20 s
        // before to 40 s after; every 10th request of theirs reports a starvation.
        for s in 0..40 {
            let session = format!("long-{s}");
            for i in 0..60 {
                let mut r = media(&session, M - 20_000 + i * 2_000 + s);
                r.starved = i % 10 == 9;
                window.push(r);
            }
        }
        // 30 sessions join at 15 s (startup 1.5 s: a playlist flagged `su`, then parts)
        // and leave after 25 s, on 360p; their first part is a miss.
        for s in 0..30 {
            let session = format!("short-{s}");
            let start = M + 15_000 + s;
            let mut playlist = media(&session, start);
            playlist.object = Object::Manifest;
            playlist.buffer_ms = None;
            playlist.object_time_ms = None;
            playlist.startup = true;
            window.push(playlist);
            for i in 0..13 {
                let mut r = media(&session, start + 1_500 + i * 2_000);
                r.rendition = Some("360p".into());
                r.bitrate_kbps = Some(800);
                r.cache = if i == 0 { "miss".into() } else { "hit".into() };
                window.push(r);
            }
        }
        // 30 sessions end at 5 s, having watched before the minute: each has one request at
        // -20 s (inside the session timeout) and one at 4 s, the latter a 404.
        for s in 0..30 {
            let session = format!("leaving-{s}");
            window.push(media(&session, M - 20_000 + s));
            let mut r = media(&session, M + 4_000 + s);
            r.status = 404;
            r.bytes = 0;
            r.cache = "miss".into();
            window.push(r);
        }
        // Records outside the minute count only for joins, leaves and startup.
        let (stats, sessions) = aggregate(M, &window, &settings);
        assert_eq!(stats.viewers, 100);
        assert_eq!(stats.joins, 30);
        // The short sessions and the leaving ones end in the minute.
        assert_eq!(stats.leaves, 60);
        // Slots of 10 s: long sessions in all 6; short ones from 15 s (joined at 15–16.5,
        // parts to 15 + 1.5 + 24 = 40.5 s) in slots 1..=4; leaving ones in slot 0.
        assert_eq!(stats.peak_viewers, 70);
        assert_eq!(stats.watch_seconds, 40 * 60 + 30 * 40 + 30 * 10);
        // In the minute: long sessions have requests at M-20 s + 2 s·i for i in 10..40.
        let long_requests = 40 * 30;
        let short_requests = 30 * 14;
        assert_eq!(stats.requests, long_requests + short_requests + 30);
        assert_eq!(
            stats.media_requests,
            long_requests + short_requests - 30 + 30
        );
        assert_eq!(stats.errors, 30);
        assert_eq!(stats.egress_bytes, (long_requests + short_requests) * 1000);
        assert_eq!(stats.lookups, stats.requests);
        assert_eq!(stats.hits, long_requests + short_requests - 30);
        // Starvations: i % 10 == 9 for i in 10..40 → i = 19, 29, 39: three per long session.
        assert_eq!(stats.starved_samples, 40 * 3);
        assert_eq!(stats.playback_samples, stats.media_requests);
        assert_eq!(stats.healthy_samples, stats.media_requests - 40 * 3);
        assert_eq!(
            stats.rebuffer_ratio(),
            Some(120.0 / (long_requests + short_requests) as f64)
        );
        // Latency 500 ms of object age + 1 s of buffer, everywhere.
        assert_eq!(stats.average_latency_ms(), Some(1_500.0));
        assert_eq!(stats.latency_p95_ms, Some(1_500));
        assert_eq!(stats.bitrates.get(&800), Some(&(30 * 13)));
        assert_eq!(stats.bitrates.get(&2_800), Some(&(long_requests + 30)));
        assert_eq!(stats.startup_count, 30);
        assert_eq!(stats.average_startup_ms(), Some(1_500.0));
        let short = sessions.iter().find(|s| s.session == "short-3").unwrap();
        assert!(short.joined && short.left);
        assert_eq!(short.renditions.iter().collect::<Vec<_>>(), ["360p"]);
        let long = sessions.iter().find(|s| s.session == "long-3").unwrap();
        assert!(!long.joined && !long.left);
        assert_eq!((long.requests, long.stalls), (30, 3));
        assert_eq!(sessions.len(), 100);
    }

    #[test]
    fn the_quality_score_follows_its_definition() {
        let perfect = MinuteStats {
            requests: 100,
            playback_samples: 100,
            healthy_samples: 100,
            latency_sum_ms: 150_000,
            latency_count: 100,
            bitrates: BTreeMap::from([(2_800, 100)]),
            ..MinuteStats::default()
        };
        assert_eq!(perfect.quality_score(), Some(100.0));
        let poor = MinuteStats {
            starved_samples: 3,
            latency_sum_ms: 600_000,
            bitrates: BTreeMap::from([(2_800, 50), (800, 50)]),
            errors: 5,
            ..perfect.clone()
        };
        // 50 (3 % starved) + 20·(4 s / 8 s) + 20·(1 − 1800/2800) + 10·(5 % errors) = 77.1
        assert_eq!(poor.quality_score(), Some(22.9));
        assert_eq!(MinuteStats::default().quality_score(), None);
    }

    #[test]
    fn merged_minutes_add_counts_and_keep_peaks() {
        let mut a = MinuteStats {
            viewers: 10,
            requests: 5,
            latency_p95_ms: Some(900),
            ..MinuteStats::default()
        };
        let b = MinuteStats {
            viewers: 7,
            requests: 6,
            latency_p95_ms: Some(1_200),
            ..MinuteStats::default()
        };
        a.merge(&b);
        assert_eq!(
            (a.viewers, a.requests, a.latency_p95_ms),
            (10, 11, Some(1_200))
        );
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.95), Some(95));
        assert_eq!(percentile(&mut [7], 0.95), Some(7));
        assert_eq!(percentile(&mut [], 0.95), None);
    }
}
