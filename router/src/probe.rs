//! Polls every edge's admin listener: `/readyz` for health, `/metrics` for egress. A failed
//! probe is confirmed sooner than the interval, so a dead edge leaves within about one
//! interval plus the confirmations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::health::{EGRESS_COUNTER, Probe, counter_total};
use crate::state::Router;

/// Largest `/metrics` body read.
const MAX_METRICS_BYTES: usize = 8 << 20;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// How probes run.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSchedule {
    /// Between good probes.
    pub interval: Duration,
    /// For one probe (both requests).
    pub timeout: Duration,
}

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

async fn get(client: &HttpClient, admin: &str, path: &str) -> Result<(u16, Bytes), String> {
    let uri: hyper::Uri = format!("http://{admin}{path}")
        .parse()
        .map_err(|e| format!("bad probe URL: {e}"))?;
    let response = client.get(uri).await.map_err(|e| {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            message = format!("{message}: {inner}");
            source = inner.source();
        }
        message
    })?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_METRICS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading {path}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// One probe of the edge whose admin listener is `admin`.
pub async fn probe_once(client: &HttpClientHandle, admin: &str, timeout: Duration) -> Probe {
    let work = async {
        let (status, _) = get(&client.0, admin, "/readyz").await?;
        if status != 200 {
            return Err(format!("/readyz answered {status}"));
        }
        let egress = match get(&client.0, admin, "/metrics").await {
            Ok((200, body)) => counter_total(&String::from_utf8_lossy(&body), EGRESS_COUNTER),
            _ => None,
        };
        Ok(egress)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(egress_bytes_total)) => Probe::Ready { egress_bytes_total },
        Ok(Err(e)) => Probe::Failed(e),
        Err(_) => Probe::Failed(format!("no answer within {timeout:?}")),
    }
}

/// A probe client, shared by every edge's loop.
#[derive(Clone)]
pub struct HttpClientHandle(HttpClient);

impl Default for HttpClientHandle {
    fn default() -> Self {
        Self(client())
    }
}

/// Probes every edge once, concurrently; the router is ready to decide after this.
pub async fn first_round(router: &Arc<Router>, admins: &[Vec<String>], schedule: ProbeSchedule) {
    let client = HttpClientHandle::default();
    let mut probes = tokio::task::JoinSet::new();
    for (p, edges) in admins.iter().enumerate() {
        for (e, admin) in edges.iter().enumerate() {
            let (client, admin) = (client.clone(), admin.clone());
            probes
                .spawn(async move { (p, e, probe_once(&client, &admin, schedule.timeout).await) });
        }
    }
    while let Some(Ok((p, e, probe))) = probes.join_next().await {
        router.record_probe(p, e, probe, Instant::now());
    }
}

/// Probes edge `edge` of PoP `pop` forever.
pub async fn keep_probing(
    router: Arc<Router>,
    pop: usize,
    edge: usize,
    admin: String,
    schedule: ProbeSchedule,
) {
    let client = HttpClientHandle::default();
    let confirm = (schedule.interval / 4).max(Duration::from_millis(50));
    let mut wait = schedule.interval;
    loop {
        tokio::time::sleep(wait).await;
        let probe = probe_once(&client, &admin, schedule.timeout).await;
        wait = if matches!(probe, Probe::Failed(_)) {
            confirm
        } else {
            schedule.interval
        };
        router.record_probe(pop, edge, probe, Instant::now());
    }
}
