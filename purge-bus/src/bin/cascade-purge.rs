//! `cascade-purge`: asks the purge bus to invalidate content on every edge and shield.
//!
//! ```text
//! cascade-purge url https://cdn.example.com/live/abc/master.m3u8
//! cascade-purge prefix https://cdn.example.com/live/abc/ --soft
//! cascade-purge tag stream/abc
//! cascade-purge all --yes-really-all
//! cascade-purge host cdn.example.com --wait --timeout 10s
//! ```
//!
//! The request is validated here with the same rules as the API, then sent to
//! `POST <api>/v1/purge` with the bearer token from `--token` or `CASCADE_PURGE_TOKEN`.
//! The API's answer is printed; a non-2xx answer exits with status 1. With `--wait` it then
//! polls `GET <api>/v1/purge/<id>` until every expected node applied the purge, prints the
//! latency, and exits with status 1 if that takes longer than `--timeout`.

use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_config::HumanDuration;
use cascade_purge_follower::client;
use cascade_purge_follower::{PurgeAction, PurgeKind, PurgeRequest};
use clap::{Parser, ValueEnum};
use hyper::Method;

#[derive(Debug, Parser)]
#[command(
    name = "cascade-purge",
    version,
    about = "Purge content from every Cascade edge and shield"
)]
struct Cli {
    /// What the targets are.
    kind: Kind,
    /// URLs, URL prefixes, hosts or surrogate tags (none for `all`).
    targets: Vec<String>,
    /// Expire instead of delete: nodes revalidate and may reuse unchanged bodies.
    #[arg(long)]
    soft: bool,
    /// Required with `all`.
    #[arg(long)]
    yes_really_all: bool,
    /// Purge API base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8090",
        env = "CASCADE_PURGE_API"
    )]
    api: String,
    /// Bearer token for the purge API.
    #[arg(long, env = "CASCADE_PURGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Wait until every expected node applied the purge; print the latency.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits before giving up (exit status 1).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: HumanDuration,
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    s.parse()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Url,
    Prefix,
    Host,
    Tag,
    All,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cascade-purge: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let request = PurgeRequest {
        kind: match cli.kind {
            Kind::Url => PurgeKind::Url,
            Kind::Prefix => PurgeKind::Prefix,
            Kind::Host => PurgeKind::Host,
            Kind::Tag => PurgeKind::Tag,
            Kind::All => PurgeKind::All,
        },
        targets: cli.targets,
        action: if cli.soft {
            PurgeAction::Expire
        } else {
            PurgeAction::Delete
        },
        confirm_all: cli.yes_really_all,
    };
    request.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    client::authority(&cli.api).map_err(|e| anyhow::anyhow!("--api {e}"))?;
    let body = serde_json::to_vec(&request)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let token = cli.token.as_deref();
        let answer = client::send(
            &cli.api,
            Method::POST,
            "/v1/purge",
            token,
            Some(body),
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        println!("{}", answer.text().trim_end());
        if !answer.is_success() {
            bail!("the purge API answered {}", answer.status);
        }
        if !cli.wait {
            return Ok(());
        }
        let accepted: serde_json::Value =
            serde_json::from_slice(&answer.body).context("the purge API's answer is not JSON")?;
        let id = accepted["id"]
            .as_str()
            .context("the purge API's answer has no id")?
            .to_owned();
        wait_for(&cli.api, token, &id, cli.timeout).await
    })
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls the purge's status until every expected node applied it or `timeout` passes.
async fn wait_for(
    api: &str,
    token: Option<&str>,
    id: &str,
    timeout: HumanDuration,
) -> anyhow::Result<()> {
    let timeout = timeout.0;
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    while started.elapsed() < timeout {
        let answer = client::send(
            api,
            Method::GET,
            &format!("/v1/purge/{id}"),
            token,
            None,
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        if !answer.is_success() {
            bail!(
                "the purge API answered {} for the status: {}",
                answer.status,
                answer.text().trim()
            );
        }
        last = serde_json::from_slice(&answer.body).context("the purge status is not JSON")?;
        if last["complete"].as_bool() == Some(true) {
            let expected = last["expected"].as_array().map_or(0, Vec::len);
            let latency = last["latency_ms"].as_u64().unwrap_or(0);
            println!("purge {id}: applied on all {expected} nodes in {latency} ms");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: Vec<&str> = last["expected"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|n| last["applied"].get(n).is_none())
        .collect();
    bail!(
        "purge {id}: not applied everywhere within {}; still waiting for: {}",
        HumanDuration(timeout),
        missing.join(", ")
    )
}
