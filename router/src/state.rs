//! The router's shared state: the topology from config, the locating sources, and the
//! probes' latest view of every edge. Decisions read a snapshot; probes replace it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use cascade_config::{Cidr, RouterConfig, parse_base_url};

use crate::choose::{Decision, Edge, EdgeStatus, Located, NoRoute, Pop, Topology};
use crate::coverage::CoverageZones;
use crate::geo::Coordinates;
use crate::geoip::GeoDatabase;
use crate::health::{EdgeHealth, Probe, State, Thresholds};
use crate::locate::{GeoLookup, locate};
use crate::metrics::RouterMetrics;

/// Everything a decision needs.
pub struct Router {
    /// PoPs and edges.
    pub topology: Topology,
    zones: CoverageZones,
    geo: Option<GeoDatabase>,
    trusted_proxies: Vec<Cidr>,
    pop_index: HashMap<String, usize>,
    thresholds: Thresholds,
    health: RwLock<Vec<Vec<EdgeHealth>>>,
    status: RwLock<Arc<Vec<Vec<EdgeStatus>>>>,
    /// Counters and gauges.
    pub metrics: RouterMetrics,
}

fn edge_address(url: &str, configured: Option<IpAddr>) -> Option<IpAddr> {
    configured.or_else(|| {
        parse_base_url(url)
            .ok()
            .and_then(|(_, host, _)| host.parse().ok())
    })
}

impl Router {
    /// Builds the router from its section: reads the coverage-zone file and the GeoIP
    /// database. Errors name the field and the problem.
    pub fn from_config(config: &RouterConfig) -> Result<Self, String> {
        let pops: Vec<Pop> = config
            .pops
            .iter()
            .map(|p| Pop {
                id: p.id.clone(),
                at: Coordinates {
                    latitude: p.latitude,
                    longitude: p.longitude,
                },
                capacity_bps: p.capacity.0 as f64,
                edges: p
                    .edges
                    .iter()
                    .map(|e| Edge {
                        id: e.id.clone(),
                        url: e.url.trim_end_matches('/').to_owned(),
                        address: edge_address(&e.url, e.address),
                    })
                    .collect(),
            })
            .collect();
        let pop_index: HashMap<String, usize> = pops
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let default_pop = if config.default_pop.is_empty() {
            0
        } else {
            pop_index.get(&config.default_pop).copied().ok_or_else(|| {
                format!("router.default_pop: {:?} is not a PoP", config.default_pop)
            })?
        };
        let zones = if config.coverage_zone_file.is_empty() {
            CoverageZones::default()
        } else {
            let path = &config.coverage_zone_file;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("router.coverage_zone_file: cannot read {path}: {e}"))?;
            CoverageZones::parse(&text, |id| pop_index.contains_key(id))
                .map_err(|e| format!("router.coverage_zone_file: {path}: {e}"))?
        };
        let geo = if config.geoip_database.is_empty() {
            None
        } else {
            Some(
                GeoDatabase::open(Path::new(&config.geoip_database))
                    .map_err(|e| format!("router.geoip_database: {e}"))?,
            )
        };
        let health = pops
            .iter()
            .map(|p| vec![EdgeHealth::default(); p.edges.len()])
            .collect();
        let status = pops
            .iter()
            .map(|p| vec![EdgeStatus::default(); p.edges.len()])
            .collect();
        let metrics = RouterMetrics::new(&pops);
        Ok(Self {
            topology: Topology { pops, default_pop },
            zones,
            geo,
            trusted_proxies: config.trusted_proxies.clone(),
            pop_index,
            thresholds: Thresholds {
                failures: config.probe_failures,
                successes: config.probe_successes,
            },
            health: RwLock::new(health),
            status: RwLock::new(Arc::new(status)),
            metrics,
        })
    }

    /// The proxies whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> &[Cidr] {
        &self.trusted_proxies
    }

    /// The GeoIP database, if configured.
    pub fn geoip(&self) -> Option<&GeoDatabase> {
        self.geo.as_ref()
    }

    /// Where `ip` is.
    pub fn locate(&self, ip: IpAddr) -> Located {
        locate(
            ip,
            &self.zones,
            self.geo.as_ref().map(|g| g as &dyn GeoLookup),
            |id| self.pop_index.get(id).copied(),
        )
    }

    /// The probes' current view of every edge.
    pub fn status(&self) -> Arc<Vec<Vec<EdgeStatus>>> {
        match self.status.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Decides for a viewer at `ip` watching `stream`.
    pub fn decide(&self, ip: IpAddr, stream: &str) -> (Located, Result<Decision, NoRoute>) {
        let located = self.locate(ip);
        let decision = self.topology.decide(&located, stream, &self.status());
        (located, decision)
    }

    /// The edge of `pop` that `stream` would use: the healthy one the hash picks, or the
    /// first in hash order when none is healthy (a pathway listed for later).
    pub fn pathway_edge(&self, pop: usize, stream: &str) -> &Edge {
        let status = self.status();
        let edges = &self.topology.pops[pop].edges;
        let chosen = status
            .get(pop)
            .and_then(|s| self.topology.edge_for(pop, stream, s))
            .unwrap_or_else(|| {
                let all_up = vec![
                    EdgeStatus {
                        up: true,
                        egress_bps: 0.0
                    };
                    edges.len()
                ];
                self.topology.edge_for(pop, stream, &all_up).unwrap_or(0)
            });
        &edges[chosen]
    }

    /// Applies a probe of edge `edge` of PoP `pop`, logs a change of state, and publishes the
    /// new view.
    pub fn record_probe(&self, pop: usize, edge: usize, probe: Probe, now: Instant) {
        let mut health = self.health.write().unwrap_or_else(|p| p.into_inner());
        let Some(record) = health.get_mut(pop).and_then(|p| p.get_mut(edge)) else {
            return;
        };
        let changed = record.record(probe, now, self.thresholds);
        let pop_id = &self.topology.pops[pop].id;
        let edge_id = &self.topology.pops[pop].edges[edge].id;
        match changed {
            Some(State::Up) => {
                tracing::info!(pop = %pop_id, edge = %edge_id, "edge is up: it takes viewers")
            }
            Some(State::Down) => tracing::warn!(
                pop = %pop_id,
                edge = %edge_id,
                error = record.last_error().unwrap_or(""),
                "edge is down: new viewers go elsewhere"
            ),
            _ => {}
        }
        self.metrics
            .edge(pop, edge, record.is_up(), record.egress_bps());
        let snapshot: Vec<Vec<EdgeStatus>> = health
            .iter()
            .map(|edges| {
                edges
                    .iter()
                    .map(|h| EdgeStatus {
                        up: h.is_up(),
                        egress_bps: h.egress_bps(),
                    })
                    .collect()
            })
            .collect();
        drop(health);
        let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
        *status = Arc::new(snapshot);
    }
}
