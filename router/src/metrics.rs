//! The router's Prometheus metrics: decisions by answer kind and locating source, refusals,
//! and each edge's health and egress as the probes see them.

use cascade_service::metrics::must;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::choose::Pop;

/// Registered once per process.
pub struct RouterMetrics {
    decisions: IntCounterVec,
    no_route: IntCounterVec,
    bad_requests: IntCounterVec,
    decision_seconds: HistogramVec,
    edge_up: IntGaugeVec,
    edge_egress: GaugeVec,
    labels: Vec<Vec<[String; 2]>>,
}

impl RouterMetrics {
    /// Defines the metrics for `pops` and registers them in the default registry.
    pub fn new(pops: &[Pop]) -> Self {
        let m = Self {
            decisions: must(IntCounterVec::new(
                Opts::new(
                    "cascade_router_decisions_total",
                    "Viewers routed, by answer (redirect, playlist, steering, dns) and how they were located",
                ),
                &["answer", "located_by"],
            )),
            no_route: must(IntCounterVec::new(
                Opts::new(
                    "cascade_router_no_route_total",
                    "Requests refused because no edge was healthy, by answer",
                ),
                &["answer"],
            )),
            bad_requests: must(IntCounterVec::new(
                Opts::new(
                    "cascade_router_bad_requests_total",
                    "Malformed requests refused, by listener (http, dns)",
                ),
                &["listener"],
            )),
            decision_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "cascade_router_decision_seconds",
                    "Time to locate a viewer and choose an edge",
                )
                .buckets(vec![
                    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3,
                ]),
                &["answer"],
            )),
            edge_up: must(IntGaugeVec::new(
                Opts::new("cascade_router_edge_up", "1 while the edge takes viewers"),
                &["pop", "edge"],
            )),
            edge_egress: must(GaugeVec::new(
                Opts::new(
                    "cascade_router_edge_egress_bits_per_second",
                    "The edge's egress as its metrics show, smoothed",
                ),
                &["pop", "edge"],
            )),
            labels: pops
                .iter()
                .map(|p| {
                    p.edges
                        .iter()
                        .map(|e| [p.id.clone(), e.id.clone()])
                        .collect()
                })
                .collect(),
        };
        for collector in [
            Box::new(m.decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.no_route.clone()),
            Box::new(m.bad_requests.clone()),
            Box::new(m.decision_seconds.clone()),
            Box::new(m.edge_up.clone()),
            Box::new(m.edge_egress.clone()),
        ] {
            // Taken names mean a second router in one process (tests); it keeps its own copies.
            let _ = prometheus::register(collector);
        }
        for (p, edges) in m.labels.iter().enumerate() {
            for e in 0..edges.len() {
                m.edge(p, e, false, 0.0);
            }
        }
        m
    }

    /// Counts one routed viewer.
    pub fn decided(&self, answer: &str, located_by: &str, seconds: f64) {
        self.decisions
            .with_label_values(&[answer, located_by])
            .inc();
        self.decision_seconds
            .with_label_values(&[answer])
            .observe(seconds);
    }

    /// Counts one refusal for want of a healthy edge.
    pub fn no_route(&self, answer: &str) {
        self.no_route.with_label_values(&[answer]).inc();
    }

    /// Counts one malformed request.
    pub fn bad_request(&self, listener: &str) {
        self.bad_requests.with_label_values(&[listener]).inc();
    }

    /// Publishes one edge's health and egress.
    pub fn edge(&self, pop: usize, edge: usize, up: bool, egress_bps: f64) {
        if let Some([p, e]) = self.labels.get(pop).and_then(|edges| edges.get(edge)) {
            self.edge_up
                .with_label_values(&[p.as_str(), e.as_str()])
                .set(i64::from(up));
            self.edge_egress
                .with_label_values(&[p.as_str(), e.as_str()])
                .set(egress_bps);
        }
    }
}
