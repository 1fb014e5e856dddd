//! Who is watching now: the sessions heard from within the session timeout, with their last
//! figures, and the gauges the origin exports per stream and per edge. Fed with each record as
//! it is stored; rebuilt from the next records after a restart.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::record::{Identity, Record};

/// Playback samples kept per viewer for its buffer health and rebuffer figures.
const SAMPLES: usize = 32;

/// One viewer watching now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Viewer {
    /// The session.
    pub session_id: String,
    /// Who it is.
    pub identity: Identity,
    /// The rendition it fetched last.
    pub rendition: Option<String>,
    /// The bitrate it fetched last, kbit/s.
    pub bitrate_kbps: Option<u32>,
    /// Its last buffer figure, ms.
    pub buffer_ms: Option<u32>,
    /// Its last live latency, ms.
    pub latency_ms: Option<i64>,
    /// Its startup, ms, once known.
    pub startup_ms: Option<i64>,
    /// Starvations it reported.
    pub stalls: u64,
    /// First heard from, Unix ms.
    pub joined_ms: i64,
    /// Last heard from, Unix ms.
    pub last_ms: i64,
    #[serde(skip)]
    samples: VecDeque<(bool, bool)>,
    #[serde(skip)]
    starting: bool,
}

/// Gauges over the viewers of a stream or an edge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Viewers watching now.
    pub viewers: u64,
    /// Average of their last latencies, ms.
    pub average_latency_ms: Option<f64>,
    /// Share of their recent playback samples with a healthy buffer, %.
    pub buffer_health_percent: Option<f64>,
    /// Share of their recent playback samples that reported a starvation.
    pub rebuffer_ratio: Option<f64>,
}

#[derive(Default)]
struct Sums {
    viewers: u64,
    latency: (f64, u64),
    healthy: u64,
    starved: u64,
    samples: u64,
}

impl Sums {
    fn add(&mut self, v: &Viewer) {
        self.viewers += 1;
        if let Some(l) = v.latency_ms {
            self.latency.0 += l as f64;
            self.latency.1 += 1;
        }
        for (healthy, starved) in &v.samples {
            self.samples += 1;
            self.healthy += u64::from(*healthy);
            self.starved += u64::from(*starved);
        }
    }

    fn gauges(&self) -> Gauges {
        let of = |n: u64| (self.samples > 0).then(|| n as f64 / self.samples as f64);
        Gauges {
            viewers: self.viewers,
            average_latency_ms: (self.latency.1 > 0)
                .then(|| self.latency.0 / self.latency.1 as f64),
            buffer_health_percent: of(self.healthy).map(|r| r * 100.0),
            rebuffer_ratio: of(self.starved),
        }
    }
}

/// Gauges by stream, by edge, and over everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per stream, by id.
    pub streams: Vec<(String, Gauges)>,
    /// Per edge, by id.
    pub edges: Vec<(String, Gauges)>,
    /// All viewers.
    pub total: Gauges,
}

/// The viewers of every stream.
#[derive(Debug, Clone)]
pub struct LiveViewers {
    idle_ms: i64,
    healthy_buffer_ms: u32,
    streams: HashMap<String, HashMap<String, Viewer>>,
}

impl LiveViewers {
    /// Viewers leave after `idle_ms` without a request.
    pub fn new(idle_ms: i64, healthy_buffer_ms: u32) -> Self {
        Self {
            idle_ms,
            healthy_buffer_ms,
            streams: HashMap::new(),
        }
    }

    /// Takes a record in; returns the session's startup (ms) when this record completes it.
    pub fn observe(&mut self, r: &Record) -> Option<i64> {
        let viewers = self.streams.entry(r.stream.clone()).or_default();
        let v = viewers.entry(r.session.clone()).or_insert_with(|| Viewer {
            session_id: r.session.clone(),
            identity: Identity::default(),
            rendition: None,
            bitrate_kbps: None,
            buffer_ms: None,
            latency_ms: None,
            startup_ms: None,
            stalls: 0,
            joined_ms: r.at_ms,
            last_ms: r.at_ms,
            samples: VecDeque::new(),
            starting: false,
        });
        v.last_ms = v.last_ms.max(r.at_ms);
        v.joined_ms = v.joined_ms.min(r.at_ms);
        v.identity.update(r);
        if r.object.is_media() {
            if r.rendition.is_some() {
                v.rendition.clone_from(&r.rendition);
            }
            v.bitrate_kbps = r.bitrate_kbps.or(v.bitrate_kbps);
        }
        if r.buffer_ms.is_some() {
            v.buffer_ms = r.buffer_ms;
        }
        if let Some(l) = r.live_latency_ms() {
            v.latency_ms = Some(l);
        }
        v.stalls += u64::from(r.starved);
        if let Some(sample) = r.playback_sample(self.healthy_buffer_ms) {
            if v.samples.len() == SAMPLES {
                v.samples.pop_front();
            }
            v.samples.push_back(sample);
        }
        if r.startup && v.startup_ms.is_none() {
            v.starting = true;
        } else if v.starting && r.object.is_media() && !r.startup {
            v.starting = false;
            v.startup_ms = Some(r.at_ms - v.joined_ms);
            return v.startup_ms;
        }
        None
    }

    /// Forgets viewers not heard from within the timeout before `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        let idle = self.idle_ms;
        self.streams.retain(|_, viewers| {
            viewers.retain(|_, v| now_ms - v.last_ms <= idle);
            !viewers.is_empty()
        });
    }

    /// The viewers of `stream` watching at `now_ms`, longest watching first.
    pub fn viewers(&self, stream: &str, now_ms: i64) -> Vec<Viewer> {
        let mut out: Vec<Viewer> = self
            .streams
            .get(stream)
            .map(|v| {
                v.values()
                    .filter(|v| now_ms - v.last_ms <= self.idle_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.joined_ms, &a.session_id).cmp(&(b.joined_ms, &b.session_id)));
        out
    }

    /// Gauges for every stream, every edge, and all viewers together.
    pub fn gauges(&self, now_ms: i64) -> Snapshot {
        let mut streams = Vec::new();
        let mut edges: HashMap<&str, Sums> = HashMap::new();
        let mut total = Sums::default();
        for (stream, viewers) in &self.streams {
            let mut sums = Sums::default();
            for v in viewers
                .values()
                .filter(|v| now_ms - v.last_ms <= self.idle_ms)
            {
                sums.add(v);
                total.add(v);
                edges.entry(v.identity.edge.as_str()).or_default().add(v);
            }
            streams.push((stream.clone(), sums.gauges()));
        }
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        let mut edges: Vec<(String, Gauges)> = edges
            .into_iter()
            .map(|(e, s)| (e.to_owned(), s.gauges()))
            .collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            streams,
            edges,
            total: total.gauges(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Object;

    fn r(session: &str, edge: &str, at_ms: i64) -> Record {
        Record {
            at_ms,
            stream: "s".into(),
            live: true,
            rendition: Some("720p".into()),
            object: Object::Part,
            session: session.into(),
            edge: edge.into(),
            buffer_ms: Some(800),
            object_time_ms: Some(at_ms - 1_000),
            ..Record::default()
        }
    }

    #[test]
    fn viewers_come_and_go_with_their_figures() {
        let mut live = LiveViewers::new(30_000, 500);
        let mut first = r("a", "e1", 1_000);
        first.object = Object::Manifest;
        first.startup = true;
        assert_eq!(live.observe(&first), None);
        assert_eq!(live.observe(&r("a", "e1", 2_500)), Some(1_500));
        assert_eq!(live.observe(&r("a", "e1", 3_000)), None);
        let mut starved = r("b", "e2", 3_000);
        starved.starved = true;
        live.observe(&starved);
        let now = live.viewers("s", 10_000);
        assert_eq!(now.len(), 2);
        assert_eq!(now[0].session_id, "a");
        assert_eq!(now[0].latency_ms, Some(1_800));
        assert_eq!(now[0].startup_ms, Some(1_500));
        let Snapshot {
            streams,
            edges,
            total,
        } = live.gauges(10_000);
        assert_eq!(streams[0].1.viewers, 2);
        assert_eq!(total.viewers, 2);
        assert_eq!(total.average_latency_ms, Some(1_800.0));
        // a: two healthy parts; b: one starved.
        assert_eq!(total.rebuffer_ratio, Some(1.0 / 3.0));
        assert_eq!(total.buffer_health_percent, Some(2.0 / 3.0 * 100.0));
        assert_eq!(
            edges
                .iter()
                .map(|e| (e.0.as_str(), e.1.viewers))
                .collect::<Vec<_>>(),
            [("e1", 1), ("e2", 1)]
        );
        assert!(live.viewers("s", 40_000).is_empty());
        live.prune(40_000);
        assert_eq!(live.gauges(40_000).total.viewers, 0);
    }
}
