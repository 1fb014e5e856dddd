//! `cascade-bench`: load generator for Cascade and the proxies it is compared with.
//!
//! `cascade-bench http --url http://127.0.0.1:8000/live/x/1.m4s --connections 64 --duration 10s`
//! runs closed-loop HTTP/1.1 keep-alive GETs and prints request rate, throughput and latency
//! percentiles (`--json` for machines). Targets must be on loopback unless `--allow-remote`.

mod analytics;
mod collapse;
mod http_load;
mod live;
mod purge_apply;
mod stats;
mod tls_load;
mod transcode;
mod viewers;

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};
use cascade_config::HumanDuration;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cascade-bench",
    version,
    about = "Load generator for Cascade and its peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop HTTP/1.1 keep-alive GETs against one URL.
    Http {
        /// `http://host:port/path` to fetch.
        #[arg(long)]
        url: String,
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// How long to run (`10s`, `1m`).
        #[arg(long, default_value = "10s")]
        duration: HumanDuration,
        /// Per-request timeout.
        #[arg(long, default_value = "10s")]
        timeout: HumanDuration,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Allow a target that is not on loopback.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Simulated players watching an HLS or DASH stream through a scenario of ramping stages;
    /// the scenario's thresholds set the exit code (99 when one fails, as k6).
    Viewers {
        /// The multivariant playlist (`http(s)://host:port/live/<id>/master.m3u8`) or, for
        /// DASH, the manifest (`…/manifest.mpd`).
        #[arg(long)]
        url: String,
        /// Scenario file (TOML: `name`, `stages`, `thresholds`; see `bench/scenarios/`).
        #[arg(long)]
        scenario: std::path::PathBuf,
        /// HTTP/1.1, HTTP/2 or HTTP/3.
        #[arg(long, value_enum, default_value = "h1")]
        protocol: viewers::client::Protocol,
        /// PEM certificate to trust, for https:// URLs.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Write the HTML report (charts over time) here.
        #[arg(long)]
        html: Option<std::path::PathBuf>,
        /// Progress line interval (`0s`: none).
        #[arg(long, default_value = "5s")]
        progress: HumanDuration,
        /// Per-request timeout.
        #[arg(long, default_value = "15s")]
        timeout: HumanDuration,
        /// Allow a target that is not on loopback.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Closed-loop GETs over HTTP/2 (TLS) or HTTP/3 (QUIC) against one URL: connections ×
    /// concurrent streams each.
    Https {
        /// `https://host:port/path`; the host is the SNI and authority.
        #[arg(long)]
        url: String,
        /// Where to connect (loopback), e.g. `127.0.0.1:8443`.
        #[arg(long)]
        connect: SocketAddr,
        /// `h2` or `h3`.
        #[arg(long, value_enum)]
        protocol: tls_load::TlsProtocol,
        /// PEM certificate to trust (the edge's).
        #[arg(long)]
        ca: std::path::PathBuf,
        /// Connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Concurrent request streams per connection.
        #[arg(long, default_value_t = 16)]
        streams: usize,
        /// How long to run.
        #[arg(long, default_value = "10s")]
        duration: HumanDuration,
        /// Per-request timeout.
        #[arg(long, default_value = "10s")]
        timeout: HumanDuration,
    },
    /// N viewers request one not-yet-cached object at the same instant; reports the spread
    /// of their times to first byte (request collapsing).
    Collapse {
        /// `http://host:port/path` of an object nobody has fetched yet.
        #[arg(long)]
        url: String,
        /// Simultaneous viewers.
        #[arg(long, default_value_t = 1000)]
        viewers: usize,
        /// Allow a target that is not on loopback.
        #[arg(long)]
        allow_remote: bool,
        /// Ask with `Connection: close`, so the server tears each connection down right after
        /// its answer. By default viewers keep their connections open, as players do.
        #[arg(long)]
        close: bool,
        /// Each viewer reads its whole body as it arrives, as a player does. By default bodies
        /// are read only once every viewer has its first byte, so the client's reading does not
        /// compete with the server before then.
        #[arg(long)]
        read_at_once: bool,
    },
    /// Fills the caching core (in this process) with small objects and times applying purges
    /// to it as a node does: URL batches (keys/s), prefix, tag and host purges.
    PurgeApply {
        /// Objects to cache first.
        #[arg(long, default_value_t = 1_000_000)]
        objects: usize,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The ABR ladder from an FLV file, by plain ffmpeg and through Cascade's transcoder,
    /// alternately; reports speed (× real time) and the transcoder's overhead.
    Transcode {
        /// FLV input (H.264 + AAC), e.g. made by bench/scripts/transcode.
        #[arg(long)]
        input: std::path::PathBuf,
        /// Renditions.
        #[arg(long, value_delimiter = ',', default_value = "720p,480p,360p,240p")]
        ladder: Vec<String>,
        /// x264 preset (the origin's default).
        #[arg(long, default_value = "veryfast")]
        preset: String,
        /// ffmpeg binary.
        #[arg(long, default_value = "ffmpeg")]
        ffmpeg: std::path::PathBuf,
        /// Rounds of each runner.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Viewer analytics at the origin: records per second ingested (decoded and stored once)
    /// and aggregated (minutes, sessions, events) on a real SQLite registry, and in memory.
    Analytics {
        /// Records to generate.
        #[arg(long, default_value_t = 300_000)]
        records: usize,
        /// Viewer sessions they come from (each requests a part every 0.5 s).
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs a synthetic live origin and simulated viewers spread over edges (which must fill,
    /// through their shields, from this origin); reports origin offload and edge hit ratio.
    Live {
        /// Where the synthetic origin listens (loopback).
        #[arg(long, default_value = "127.0.0.1:18960")]
        origin_listen: SocketAddr,
        /// Edge addresses (`host:port`, comma-separated, loopback).
        #[arg(long, value_delimiter = ',', required = true)]
        edges: Vec<SocketAddr>,
        /// Viewers per edge.
        #[arg(long, default_value_t = 500)]
        viewers_per_edge: usize,
        /// How long viewers watch.
        #[arg(long, default_value = "20s")]
        duration: HumanDuration,
        /// Segment duration.
        #[arg(long, default_value = "1s")]
        segment_duration: HumanDuration,
        /// Bytes per segment.
        #[arg(long, default_value_t = 64 * 1024)]
        segment_bytes: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Analytics {
            records,
            sessions,
            json,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(analytics::run(records, sessions, json))
        }
        Command::Collapse {
            url,
            viewers,
            allow_remote,
            close,
            read_at_once,
        } => {
            let (addr, host, path) = load_target(&url, allow_remote)?;
            let connection = if close {
                collapse::Connection::Close
            } else {
                collapse::Connection::KeepAlive
            };
            let report = runtime()?.block_on(collapse::run(
                addr,
                &host,
                &path,
                viewers.max(1),
                connection,
                if read_at_once {
                    collapse::Drain::AtOnce
                } else {
                    collapse::Drain::AfterAllFirstBytes
                },
            ));
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Transcode {
            input,
            ladder,
            preset,
            ffmpeg,
            rounds,
        } => {
            let report = runtime()?.block_on(transcode::run(transcode::TranscodeBench {
                input,
                ladder,
                preset,
                ffmpeg,
                rounds,
            }))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Viewers {
            url,
            scenario,
            protocol,
            ca,
            json,
            html,
            progress,
            timeout,
            allow_remote,
        } => {
            let text = std::fs::read_to_string(&scenario)
                .with_context(|| format!("cannot read {}", scenario.display()))?;
            let (scenario_file, thresholds) = viewers::scenario::Scenario::parse(&text)
                .with_context(|| format!("{}", scenario.display()))?;
            let (target, path) = viewers::run::target(&url, protocol, ca.as_deref(), allow_remote)?;
            let plan = viewers::run::ViewersPlan {
                url,
                target,
                format: viewers::run::Format::of_path(&path),
                path,
                scenario: scenario_file,
                thresholds,
                progress: progress.0,
                timeout: timeout.0,
            };
            let report = runtime()?.block_on(viewers::run::run(plan))?;
            let s = &report.summary;
            println!(
                "{}: {} viewers over {} for {:.0} s (peak {}), {:.1} % played",
                s.scenario,
                s.viewers,
                s.protocol,
                s.seconds,
                s.peak_viewers,
                s.viewers_started * 100.0
            );
            let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
            println!(
                "  startup p50 {} p95 {} | live latency p50 {} p95 {} p99 {}",
                fmt(s.startup_p50),
                fmt(s.startup_p95),
                fmt(s.latency_p50),
                fmt(s.latency_p95),
                fmt(s.latency_p99)
            );
            println!(
                "  stalls {} ({:.3} per viewer-minute), rebuffer {:.3} % | requests {} errors {} ({:.3} %) | {:.1} Mbit/s | switches {}",
                s.stalls,
                s.stalls_per_viewer_minute,
                s.rebuffer_ratio * 100.0,
                s.requests,
                s.errors,
                s.error_ratio * 100.0,
                s.egress_mbps,
                s.switches
            );
            for v in &s.thresholds {
                println!(
                    "  {} {} (measured {:.4})",
                    if v.passed { "PASS" } else { "FAIL" },
                    v.threshold,
                    v.actual
                );
            }
            for step in &report.steps {
                println!(
                    "  step {:>5} viewers (s {}-{}): rebuffer {:.3} %, latency p95 {}, errors {:.3} %: {}",
                    step.viewers,
                    step.from_second,
                    step.to_second,
                    step.rebuffer_ratio * 100.0,
                    fmt(step.latency_p95),
                    step.error_ratio * 100.0,
                    if step.passed { "pass" } else { "FAIL" }
                );
            }
            if !report.steps.is_empty() {
                let words = |c| viewers::steps::describe_capacity(&report.steps, c);
                println!(
                    "  capacity: {} viewers with every step threshold met, {} ignoring live latency",
                    words(report.capacity),
                    words(report.capacity_ignoring_latency)
                );
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(path) = html {
                std::fs::write(&path, viewers::report::html(&report))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if !s.passed {
                println!("  FAILED: a threshold was not met");
                // As k6 does when a threshold fails.
                std::process::exit(99);
            }
            Ok(())
        }
        Command::Https {
            url,
            connect,
            protocol,
            ca,
            connections,
            streams,
            duration,
            timeout,
        } => {
            if !connect.ip().is_loopback() {
                bail!("{connect} is not loopback: this benchmark runs on this machine only");
            }
            if connections == 0 || streams == 0 {
                bail!("--connections and --streams must be at least 1");
            }
            let rest = url
                .strip_prefix("https://")
                .with_context(|| format!("{url} is not an https:// URL"))?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            let plan = tls_load::TlsLoadPlan {
                addr: connect,
                host: host.to_owned(),
                path: path.to_owned(),
                protocol,
                connections,
                streams,
                duration: duration.0,
                timeout: timeout.0,
                ca,
            };
            let summary = runtime()?.block_on(tls_load::run(plan))?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::PurgeApply { objects, json } => {
            runtime()?.block_on(purge_apply::run(objects, json))
        }
        Command::Live {
            origin_listen,
            edges,
            viewers_per_edge,
            duration,
            segment_duration,
            segment_bytes,
        } => {
            if let Some(remote) = edges
                .iter()
                .chain([&origin_listen])
                .find(|a| !a.ip().is_loopback())
            {
                bail!("{remote} is not loopback: the live benchmark runs on this machine only");
            }
            let plan = live::LivePlan {
                origin_listen,
                edges,
                viewers_per_edge,
                duration: duration.0,
                segment_duration: segment_duration.0,
                segment_bytes,
            };
            let report = runtime()?.block_on(live::run(plan))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Http {
            url,
            connections,
            duration,
            timeout,
            json,
            allow_remote,
        } => {
            let (addr, host, path) = load_target(&url, allow_remote)?;
            if connections == 0 {
                bail!("--connections must be at least 1");
            }
            let plan = http_load::LoadPlan {
                addr,
                host,
                path,
                connections,
                duration: duration.0,
                timeout: timeout.0,
            };
            let summary = runtime()?.block_on(http_load::run(plan));
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "{url}\n  {:.0} req/s, {:.1} MiB/s over {:.1}s ({} responses, {} errors)\n  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n  statuses: {:?}{}",
                    summary.requests_per_second,
                    summary.mebibytes_per_second,
                    summary.seconds,
                    summary.responses,
                    summary.errors,
                    summary.latency_ms.p50,
                    summary.latency_ms.p90,
                    summary.latency_ms.p99,
                    summary.latency_ms.p999,
                    summary.latency_ms.max,
                    summary.statuses,
                    if summary.error_kinds.is_empty() {
                        String::new()
                    } else {
                        format!("\n  errors: {:?}", summary.error_kinds)
                    },
                );
            }
            Ok(())
        }
    }
}

/// Resolves a load target, refusing anything off loopback unless `allow_remote`.
fn load_target(url: &str, allow_remote: bool) -> anyhow::Result<(SocketAddr, String, String)> {
    let (addr, host, path) = parse_http_url(url)?;
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "{url} resolves to {addr}, which is not loopback; pass --allow-remote to load a remote host"
        );
    }
    Ok((addr, host, path))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Splits `http://host[:port]/path` into the address to dial, the Host header and the path.
fn parse_http_url(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url:?}: no host");
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("{url:?}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url:?}: {authority} has no address"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_path() {
        let (addr, host, path) = parse_http_url("http://127.0.0.1:8000/live/a/1.m4s?x=1").unwrap();
        assert_eq!(
            (addr.to_string().as_str(), host.as_str(), path.as_str()),
            ("127.0.0.1:8000", "127.0.0.1:8000", "/live/a/1.m4s?x=1")
        );
        assert_eq!(parse_http_url("http://127.0.0.1").unwrap().2, "/");
        assert!(parse_http_url("https://127.0.0.1/").is_err());
        assert!(parse_http_url("http:///x").is_err());
    }
}
