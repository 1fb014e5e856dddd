//! `cascade-bench purge-apply`: how fast a node applies purges with a large cache. Fills the
//! edge's own storage (the caching core, in this process) with N small objects, then applies
//! purges exactly as a node applies them from the bus ([`BusApplier`]): batches of URL purges
//! (keys per second), prefix and tag purges of one title, a prefix purge over a tenth of the
//! cache, and a host purge over all that is left.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use cascade_cache::server::purge_api::BusApplier;
use cascade_cache::storage::TieredStorage;
use cascade_purge_follower::message::PurgeMessage;
use cascade_purge_follower::node::PurgeApplier;
use cascade_purge_follower::{PurgeAction, PurgeKind, PurgeRequest};
use pingora_cache::CacheMeta;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_http::ResponseHeader;
use serde::Serialize;

/// Objects per title (one directory, one surrogate tag).
const PER_TITLE: usize = 1000;

const HOST: &str = "bench.example";

fn key(i: usize) -> String {
    format!(
        "{HOST}/vod/t{:04}/seg{:04}.m4s",
        i / PER_TITLE,
        i % PER_TITLE
    )
}

#[derive(Debug, Serialize)]
struct Measure {
    what: String,
    objects_hit: usize,
    ms: f64,
    keys_per_sec: Option<f64>,
}

fn message(kind: PurgeKind, targets: Vec<String>) -> PurgeMessage {
    let issued_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    PurgeMessage {
        id: "bench".into(),
        request: PurgeRequest {
            kind,
            targets,
            action: PurgeAction::Delete,
            confirm_all: false,
        },
        issued_ms,
    }
}

fn timed(
    applier: &BusApplier,
    what: &str,
    messages: &[PurgeMessage],
    keys: Option<usize>,
) -> anyhow::Result<Measure> {
    let started = Instant::now();
    let mut hit = 0;
    for m in messages {
        hit += applier.apply(m).map_err(anyhow::Error::msg)?;
    }
    let elapsed = started.elapsed();
    Ok(Measure {
        what: what.into(),
        objects_hit: hit,
        ms: elapsed.as_secs_f64() * 1000.0,
        keys_per_sec: keys.map(|k| k as f64 / elapsed.as_secs_f64()),
    })
}

/// Runs the benchmark over `objects` cached objects.
pub async fn run(objects: usize, json: bool) -> anyhow::Result<()> {
    let titles = objects.div_ceil(PER_TITLE);
    anyhow::ensure!(
        titles >= 20,
        "--objects must be at least {}",
        20 * PER_TITLE
    );
    let storage = TieredStorage::leak(u64::try_from(objects).unwrap_or(u64::MAX) * 4096);
    let filled = Instant::now();
    let body = Bytes::from_static(b"segment");
    let span = Span::inactive().handle();
    for i in 0..objects {
        let k = key(i);
        let mut header = ResponseHeader::build(200, None).context("header")?;
        header
            .insert_header("surrogate-key", format!("title/{}", i / PER_TITLE))
            .context("header")?;
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header);
        let mut writer = storage
            .get_miss_handler(&CacheKey::new(k.as_str(), k.as_str()), &meta, &span)
            .await
            .map_err(|e| anyhow::anyhow!("fill {k}: {e}"))?;
        writer
            .write_body(body.clone(), true)
            .await
            .map_err(|e| anyhow::anyhow!("fill {k}: {e}"))?;
        writer
            .finish()
            .await
            .map_err(|e| anyhow::anyhow!("fill {k}: {e}"))?;
    }
    let fill_secs = filled.elapsed().as_secs_f64();
    anyhow::ensure!(
        storage.indexed() == objects,
        "only {} of {objects} objects were cached",
        storage.indexed()
    );
    let applier = BusApplier {
        storage,
        keyed_query: Vec::new(),
    };

    let mut results = Vec::new();
    // URL purges in bus-sized batches (1,000 targets a message), spread over the cache.
    let url_keys = 10_000.min(objects / 2);
    let stride = objects / url_keys;
    let urls: Vec<PurgeMessage> = (0..url_keys)
        .map(|n| format!("https://{}", key(n * stride + 1)))
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| message(PurgeKind::Url, c.to_vec()))
        .collect();
    results.push(timed(
        &applier,
        "url purges, 1,000 targets a message",
        &urls,
        Some(url_keys),
    )?);
    // One title by prefix, another by tag.
    results.push(timed(
        &applier,
        "prefix purge of one title",
        &[message(
            PurgeKind::Prefix,
            vec![format!("https://{HOST}/vod/t0003/")],
        )],
        None,
    )?);
    results.push(timed(
        &applier,
        "tag purge of one title",
        &[message(PurgeKind::Tag, vec!["title/4".into()])],
        None,
    )?);
    // A tenth of the cache by prefix (titles t00xx), then the whole host.
    results.push(timed(
        &applier,
        "prefix purge over a tenth of the cache",
        &[message(
            PurgeKind::Prefix,
            vec![format!("https://{HOST}/vod/t00")],
        )],
        None,
    )?);
    results.push(timed(
        &applier,
        "host purge of everything left",
        &[message(PurgeKind::Host, vec![HOST.into()])],
        None,
    )?);

    if json {
        println!(
            "{}",
            serde_json::json!({ "objects": objects, "fill_secs": fill_secs, "results": results })
        );
    } else {
        println!("{objects} objects cached in {fill_secs:.1}s");
        for r in &results {
            let rate = r
                .keys_per_sec
                .map(|k| format!("  {k:.0} keys/s"))
                .unwrap_or_default();
            println!(
                "{:<45} {:>8} objects {:>10.1} ms{rate}",
                r.what, r.objects_hit, r.ms
            );
        }
    }
    Ok(())
}
