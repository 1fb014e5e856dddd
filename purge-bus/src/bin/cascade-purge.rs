//! `cascade-purge`: asks the purge bus to invalidate content on every edge and shield.
//!
//! ```text
//! cascade-purge url https://cdn.example.com/live/abc/master.m3u8
//! cascade-purge prefix https://cdn.example.com/live/abc/ --soft
//! cascade-purge tag stream/abc
//! cascade-purge all --yes-really-all
//! ```
//!
//! The request is validated here with the same rules as the API, then sent to
//! `POST <api>/v1/purge` with the bearer token from `--token` or `CASCADE_PURGE_TOKEN`.
//! The API's answer is printed; a non-2xx answer exits with status 1.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use cascade_purge_bus::{PurgeAction, PurgeKind, PurgeRequest};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

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
    let body = serde_json::to_vec(&request)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, answer) = runtime.block_on(post(&cli.api, cli.token.as_deref(), body))?;
    println!("{answer}");
    if !(200..300).contains(&status) {
        bail!("the purge API answered {status}");
    }
    Ok(())
}

async fn post(api: &str, token: Option<&str>, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    let authority = api
        .strip_prefix("http://")
        .with_context(|| format!("--api {api:?}: only http:// is supported"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot reach the purge API at {api}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut builder = Request::post("/v1/purge")
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
