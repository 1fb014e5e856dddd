//! The routing decision: which PoP, which edge, and in which order the other PoPs follow.
//!
//! PoPs are ordered by great-circle distance from where the viewer is (a coverage zone puts
//! its PoP first). The first PoP with a healthy edge and headroom under its capacity wins;
//! one over capacity spills to the next. Inside a PoP, rendezvous hashing on the stream
//! sends one stream's viewers to one edge, so it fills once, unless that edge carries well
//! over its share of the PoP's load, when the stream's next edge in hash order takes over.

use std::fmt::Write as _;
use std::net::IpAddr;

use cascade_config::Cidr;
use serde::Serialize;

use crate::geo::Coordinates;

/// An edge as the router knows it.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Unique name.
    pub id: String,
    /// Base URL viewers are sent to, without a trailing `/`.
    pub url: String,
    /// The address DNS answers with, when known.
    pub address: Option<IpAddr>,
}

/// A group of edges in one place.
#[derive(Debug, Clone)]
pub struct Pop {
    /// Name and content-steering pathway id.
    pub id: String,
    /// Where it is.
    pub at: Coordinates,
    /// Egress it may serve, in bits per second.
    pub capacity_bps: f64,
    /// Its edges.
    pub edges: Vec<Edge>,
}

/// Every PoP, and the one for viewers nothing locates.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The PoPs, in configuration order.
    pub pops: Vec<Pop>,
    /// Index of the default PoP.
    pub default_pop: usize,
}

/// What the probes say about one edge right now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EdgeStatus {
    /// Takes viewers.
    pub up: bool,
    /// Current egress, bits per second.
    pub egress_bps: f64,
}

/// Where the viewer is, and how the router knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Located {
    /// The coverage-zone file assigns the viewer's network to a PoP.
    Zone {
        /// The PoP's index.
        pop: usize,
        /// The matching network.
        network: Cidr,
    },
    /// The GeoIP database places the viewer.
    Geo {
        /// Where.
        at: Coordinates,
        /// City or country, if the database names one.
        place: Option<String>,
    },
    /// Nothing knows: the default PoP.
    Unknown,
}

/// A routing decision (the sentence an operator reads in `/v1/route` is [`Topology::explain`],
/// built only when asked for: redirects and DNS answers do not pay for it).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Chosen PoP.
    pub pop: usize,
    /// Chosen edge inside it.
    pub edge: usize,
    /// Every PoP, best first now: healthy with headroom, then healthy over capacity, then
    /// those without a healthy edge. Content steering's pathway priority.
    pub pathways: Vec<usize>,
}

/// No PoP has a healthy edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no edge is healthy in any PoP")]
pub struct NoRoute;

/// An edge takes over a stream from the one before it in hash order only when it carries
/// more than this multiple of the PoP's mean load per edge...
const LOAD_BOUND: f64 = 1.25;
/// ...and more than this share of its part of the PoP's capacity (light load is not moved).
const LOAD_FLOOR: f64 = 0.25;

/// The routing key of a delivery path: `live/<id>` or `vod/<id>`, after an optional signed-URL
/// prefix `/t/<token>`. Other paths hash as a whole.
pub fn stream_key(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = match path.strip_prefix("t/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, after)| after),
        None => path,
    };
    let mut end = 0;
    for (i, segment) in path.split('/').take(2).enumerate() {
        end += segment.len() + usize::from(i > 0);
    }
    &path[..end.min(path.len())]
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finish): every router, whatever its build,
/// ranks edges the same way.
fn rank(edge: &str, stream: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in edge.bytes().chain([0xff]).chain(stream.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn mbps(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.1} Gbps", bps / 1e9)
    } else {
        format!("{:.1} Mbps", bps / 1e6)
    }
}

impl Topology {
    /// PoP indices nearest first from where the viewer is.
    pub fn by_distance(&self, located: &Located) -> Vec<usize> {
        let (from, first) = match located {
            Located::Zone { pop, .. } => (self.pops[*pop].at, Some(*pop)),
            Located::Geo { at, .. } => (*at, None),
            Located::Unknown => (self.pops[self.default_pop].at, Some(self.default_pop)),
        };
        let mut order: Vec<(bool, f64, usize)> = self
            .pops
            .iter()
            .enumerate()
            .map(|(i, pop)| (Some(i) != first, from.distance_km(&pop.at), i))
            .collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        order.into_iter().map(|(_, _, i)| i).collect()
    }

    /// The edge of `pop` for `stream`, given each edge's status; `None` when none is up.
    pub fn edge_for(&self, pop: usize, stream: &str, status: &[EdgeStatus]) -> Option<usize> {
        let edges = &self.pops[pop].edges;
        let mut ranked: Vec<usize> = (0..edges.len())
            .filter(|&i| status.get(i).is_some_and(|s| s.up))
            .collect();
        if ranked.is_empty() {
            return None;
        }
        ranked.sort_by_key(|&i| std::cmp::Reverse(rank(&edges[i].id, stream)));
        let total: f64 = ranked.iter().map(|&i| status[i].egress_bps).sum();
        let mean = total / ranked.len() as f64;
        let floor = LOAD_FLOOR * self.pops[pop].capacity_bps / edges.len() as f64;
        let overloaded = |i: usize| {
            let load = status[i].egress_bps;
            load > LOAD_BOUND * mean && load > floor
        };
        ranked
            .iter()
            .copied()
            .find(|&i| !overloaded(i))
            .or(ranked.first().copied())
    }

    /// Decides for a viewer `located` watching `stream`. `status[pop][edge]` is the probes'
    /// view of each edge.
    pub fn decide(
        &self,
        located: &Located,
        stream: &str,
        status: &[Vec<EdgeStatus>],
    ) -> Result<Decision, NoRoute> {
        let order = self.by_distance(located);
        let healthy = |p: usize| healthy(status, p);
        let headroom = |p: usize| load(status, p) < self.pops[p].capacity_bps;
        let mut pathways: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&p| healthy(p) && headroom(p))
            .collect();
        pathways.extend(
            order
                .iter()
                .copied()
                .filter(|&p| healthy(p) && !headroom(p)),
        );
        pathways.extend(order.iter().copied().filter(|&p| !healthy(p)));
        let pop = pathways
            .first()
            .copied()
            .filter(|&p| healthy(p))
            .ok_or(NoRoute)?;
        let edge = self
            .edge_for(pop, stream, status.get(pop).map_or(&[], Vec::as_slice))
            .ok_or(NoRoute)?;
        Ok(Decision {
            pop,
            edge,
            pathways,
        })
    }

    /// Why `decision` was made for a viewer `located`, in a sentence: where the viewer is,
    /// which nearer PoPs were skipped and why, and where it goes.
    pub fn explain(
        &self,
        located: &Located,
        decision: &Decision,
        status: &[Vec<EdgeStatus>],
    ) -> String {
        let (pop, edge) = (decision.pop, decision.edge);
        let order = self.by_distance(located);
        let mut reason = match located {
            Located::Zone { pop, network } => {
                format!("coverage zone {network} assigns {}", self.pops[*pop].id)
            }
            Located::Geo { at, place } => format!(
                "GeoIP places the viewer at {:.2},{:.2}{}",
                at.latitude,
                at.longitude,
                place
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ),
            Located::Unknown => format!(
                "nothing locates the viewer: default PoP {}",
                self.pops[self.default_pop].id
            ),
        };
        for &skipped in order.iter().take_while(|&&p| p != pop) {
            let id = &self.pops[skipped].id;
            if !healthy(status, skipped) {
                let _ = write!(reason, "; {id} has no healthy edge");
            } else {
                let _ = write!(
                    reason,
                    "; {id} is over capacity ({} of {})",
                    mbps(load(status, skipped)),
                    mbps(self.pops[skipped].capacity_bps)
                );
            }
        }
        let distance = match located {
            Located::Geo { at, .. } => format!(", {:.0} km", at.distance_km(&self.pops[pop].at)),
            _ => String::new(),
        };
        let _ = write!(
            reason,
            "; {} {}{distance}, edge {}",
            if order.first() == Some(&pop) {
                "nearest PoP"
            } else {
                "spilled to"
            },
            self.pops[pop].id,
            self.pops[pop].edges[edge].id
        );
        reason
    }
}

/// Whether PoP `p` has an edge up.
fn healthy(status: &[Vec<EdgeStatus>], p: usize) -> bool {
    status
        .get(p)
        .is_some_and(|edges| edges.iter().any(|e| e.up))
}

/// PoP `p`'s egress over its edges that are up, bits per second.
fn load(status: &[Vec<EdgeStatus>], p: usize) -> f64 {
    status.get(p).map_or(0.0, |edges| {
        edges.iter().filter(|e| e.up).map(|e| e.egress_bps).sum()
    })
}

/// What `/v1/route` shows of a decision.
#[derive(Debug, Serialize)]
pub struct DecisionReport<'a> {
    /// The viewer address decided for.
    pub client: IpAddr,
    /// The routing key.
    pub stream: &'a str,
    /// `coverage-zone`, `geoip` or `default`.
    pub located_by: &'static str,
    /// Chosen PoP id.
    pub pop: &'a str,
    /// Chosen edge id.
    pub edge: &'a str,
    /// Where the viewer is sent.
    pub url: &'a str,
    /// PoP ids, best first.
    pub pathways: Vec<&'a str>,
    /// Why.
    pub reason: &'a str,
}

impl Located {
    /// The name of the source that located the viewer.
    pub fn source(&self) -> &'static str {
        match self {
            Located::Zone { .. } => "coverage-zone",
            Located::Geo { .. } => "geoip",
            Located::Unknown => "default",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Coordinates {
        Coordinates {
            latitude,
            longitude,
        }
    }

    fn pop(id: &str, at: Coordinates, edges: usize) -> Pop {
        Pop {
            id: id.into(),
            at,
            capacity_bps: 1e9,
            edges: (0..edges)
                .map(|i| Edge {
                    id: format!("{id}-{i}"),
                    url: format!("http://{id}-{i}.test"),
                    address: None,
                })
                .collect(),
        }
    }

    /// Amsterdam, Frankfurt, New York; default Frankfurt.
    fn world() -> Topology {
        Topology {
            pops: vec![
                pop("ams", at(52.37, 4.90), 3),
                pop("fra", at(50.11, 8.68), 2),
                pop("nyc", at(40.71, -74.01), 1),
            ],
            default_pop: 1,
        }
    }

    fn all_up(t: &Topology) -> Vec<Vec<EdgeStatus>> {
        t.pops
            .iter()
            .map(|p| {
                vec![
                    EdgeStatus {
                        up: true,
                        egress_bps: 0.0
                    };
                    p.edges.len()
                ]
            })
            .collect()
    }

    const LONDON: Coordinates = Coordinates {
        latitude: 51.51,
        longitude: -0.13,
    };

    #[test]
    fn the_nearest_healthy_pop_wins() {
        let t = world();
        let status = all_up(&t);
        let geo = |c| Located::Geo { at: c, place: None };
        let d = t.decide(&geo(LONDON), "live/a", &status).expect("route");
        assert_eq!(t.pops[d.pop].id, "ams");
        assert_eq!(d.pathways, [0, 1, 2]);
        let why = t.explain(&geo(LONDON), &d, &status);
        assert!(why.contains("nearest PoP ams, 358 km"), "{}", why);
        let boston = at(42.36, -71.06);
        assert_eq!(
            t.decide(&geo(boston), "live/a", &status).map(|d| d.pop),
            Ok(2)
        );
        assert_eq!(
            t.decide(&Located::Unknown, "live/a", &status)
                .map(|d| d.pop),
            Ok(1)
        );
    }

    #[test]
    fn a_coverage_zone_beats_distance() {
        let t = world();
        let zone = Located::Zone {
            pop: 2,
            network: "10.0.0.0/8".parse().expect("cidr"),
        };
        let d = t.decide(&zone, "live/a", &all_up(&t)).expect("route");
        assert_eq!(d.pop, 2);
        let why = t.explain(&zone, &d, &all_up(&t));
        assert!(
            why.starts_with("coverage zone 10.0.0.0/8 assigns nyc"),
            "{}",
            why
        );
        // After nyc, the PoPs nearest to nyc.
        assert_eq!(d.pathways, [2, 0, 1]);
    }

    #[test]
    fn a_pop_without_healthy_edges_or_headroom_is_skipped() {
        let t = world();
        let london = Located::Geo {
            at: LONDON,
            place: Some("London".into()),
        };
        let mut status = all_up(&t);
        for e in &mut status[0] {
            e.up = false;
        }
        let d = t.decide(&london, "live/a", &status).expect("route");
        assert_eq!(d.pop, 1);
        assert_eq!(d.pathways, [1, 2, 0]);
        let why = t.explain(&london, &d, &status);
        assert!(
            why.contains("(London); ams has no healthy edge; spilled to fra"),
            "{}",
            why
        );

        let mut status = all_up(&t);
        status[0][0].egress_bps = 0.6e9;
        status[0][1].egress_bps = 0.5e9;
        let d = t.decide(&london, "live/a", &status).expect("route");
        assert_eq!(d.pop, 1);
        assert_eq!(
            d.pathways,
            [1, 2, 0],
            "over capacity comes after healthy with headroom"
        );
        let why = t.explain(&london, &d, &status);
        assert!(
            why.contains("ams is over capacity (1.1 Gbps of 1.0 Gbps)"),
            "{}",
            why
        );

        let dead: Vec<Vec<EdgeStatus>> = t
            .pops
            .iter()
            .map(|p| vec![EdgeStatus::default(); p.edges.len()])
            .collect();
        assert_eq!(t.decide(&london, "live/a", &dead), Err(NoRoute));
        // Everything over capacity: the nearest still serves.
        let mut full = all_up(&t);
        for edges in &mut full {
            for e in edges {
                e.egress_bps = 2e9;
            }
        }
        assert_eq!(t.decide(&london, "live/a", &full).map(|d| d.pop), Ok(0));
    }

    #[test]
    fn one_streams_viewers_share_an_edge_and_streams_spread() {
        let t = world();
        let status = all_up(&t);
        let edge = |stream: &str| t.edge_for(0, stream, &status[0]).expect("edge");
        assert_eq!(edge("live/a"), edge("live/a"));
        let mut used = [0usize; 3];
        for i in 0..300 {
            used[edge(&format!("live/{i}"))] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "{used:?}");
    }

    #[test]
    fn a_dead_or_overloaded_edge_hands_its_streams_on() {
        let t = world();
        let mut status = all_up(&t);
        let first = t.edge_for(0, "live/a", &status[0]).expect("edge");
        status[0][first].up = false;
        let second = t.edge_for(0, "live/a", &status[0]).expect("edge");
        assert_ne!(first, second);
        // Only the dead edge's streams move: one that hashed elsewhere stays put.
        let others: Vec<String> = (0..50)
            .map(|i| format!("live/{i}"))
            .filter(|s| t.edge_for(0, s, &all_up(&t)[0]) != Some(first))
            .collect();
        for s in &others {
            assert_eq!(
                t.edge_for(0, s, &status[0]),
                t.edge_for(0, s, &all_up(&t)[0]),
                "{s}"
            );
        }
        let mut status = all_up(&t);
        status[0][first].egress_bps = 0.3e9;
        assert_ne!(
            t.edge_for(0, "live/a", &status[0]),
            Some(first),
            "overloaded"
        );
        status[0][first].egress_bps = 0.05e9;
        assert_eq!(
            t.edge_for(0, "live/a", &status[0]),
            Some(first),
            "light load is not moved"
        );
    }

    #[test]
    fn stream_keys_ignore_tokens_and_files() {
        assert_eq!(stream_key("/live/abc/720p/12.m4s"), "live/abc");
        assert_eq!(
            stream_key("/t/123.a.xx.yy/live/abc/master.m3u8"),
            "live/abc"
        );
        assert_eq!(stream_key("/vod/rec1/manifest.mpd"), "vod/rec1");
        assert_eq!(stream_key("/live"), "live");
        assert_eq!(stream_key("/"), "");
        assert_eq!(stream_key("/t/"), "");
        assert_eq!(stream_key("/player/abc"), "player/abc");
    }
}
