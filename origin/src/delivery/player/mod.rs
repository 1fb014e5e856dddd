//! The viewers' player page: `/player/` lists the live streams, `/player/<id>` plays one live
//! stream and `/player/vod/<recording>` one recording, with hls.js or dash.js
//! (`?protocol=hls|dash`). The players come from the project's own install step (`player/`,
//! pinned in its lockfile) and are served from `origin.player_dir`; the page and its script are
//! built into the binary. Every URL the page uses is relative, so it works the same through an
//! edge, over any protocol, and under a signed-URL prefix. Script URLs carry a digest of the
//! scripts (`assets/<version>/<name>`), so tiers may keep them for good and a new release or
//! player install is never hidden behind an old cached copy.

use std::path::PathBuf;

use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::{Body, error, full, reply};
use crate::streams::model::Status;
use crate::streams::registry::{ListFilter, Registry};

const PAGE: &str = include_str!("page.html");
const LIST: &str = include_str!("list.html");
const SCRIPT: &str = include_str!("player.js");

/// `Cache-Control` of the pages: short, so a new stream shows up in the list quickly.
const PAGE_CACHE: &str = "public, max-age=2";
/// `Cache-Control` of a versioned player script: its URL changes with its content.
const VERSIONED_ASSET_CACHE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of a script asked for without a version.
const ASSET_CACHE: &str = "public, max-age=300";

/// The players under `origin.player_dir` (an npm `node_modules`), by the name the page uses.
const VENDOR: [(&str, &str); 2] = [
    ("hls.min.js", "hls.js/dist/hls.min.js"),
    ("dash.all.min.js", "dashjs/dist/modern/umd/dash.all.min.js"),
];

/// Serves the player page and its scripts.
pub struct PlayerPage {
    registry: Registry,
    vendor_dir: PathBuf,
    version: String,
}

/// What a `/player/...` path asks for.
#[derive(Debug, PartialEq, Eq)]
enum PlayerRoute<'a> {
    List,
    Live(&'a str),
    Vod(&'a str),
    Asset { versioned: bool, name: &'a str },
}

fn parse(path: &str) -> Option<PlayerRoute<'_>> {
    let rest = path.strip_prefix("/player")?;
    let rest = match rest {
        "" | "/" => return Some(PlayerRoute::List),
        r => r.strip_prefix('/')?,
    };
    let route = match rest.split_once('/') {
        None => PlayerRoute::Live(rest),
        Some(("assets", rest)) => match rest.split_once('/') {
            Some((version, name)) if plain_name(version) => PlayerRoute::Asset {
                versioned: true,
                name,
            },
            Some(_) => return None,
            None => PlayerRoute::Asset {
                versioned: false,
                name: rest,
            },
        },
        Some(("vod", id)) => PlayerRoute::Vod(id),
        Some(_) => return None,
    };
    let name = match &route {
        PlayerRoute::Live(n) | PlayerRoute::Vod(n) | PlayerRoute::Asset { name: n, .. } => *n,
        PlayerRoute::List => "",
    };
    plain_name(name).then_some(route)
}

/// An id, version or file name: no path separators, no leading dot, nothing to escape.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The player page for one stream or recording, with scripts of `version`. It does not depend
/// on the query (`?protocol=`), which is not part of a cache key: the page's script reads it.
fn page(kind: &str, id: &str, title: &str, version: &str) -> String {
    let (assets, list) = if kind == "vod" {
        (format!("../assets/{version}/"), "../")
    } else {
        (format!("assets/{version}/"), "./")
    };
    PAGE.replace("{{TITLE}}", &escape(title))
        .replace("{{KIND}}", kind)
        .replace("{{ID}}", &escape(id))
        .replace("{{ASSETS}}", &assets)
        .replace("{{LIST}}", list)
}

/// A short digest of every script the page loads.
fn scripts_version(vendor_dir: &std::path::Path) -> String {
    let mut digest = Sha256::new();
    digest.update(SCRIPT.as_bytes());
    for (_, file) in VENDOR {
        match std::fs::read(vendor_dir.join(file)) {
            Ok(bytes) => digest.update(&bytes),
            Err(_) => digest.update(b"missing"),
        }
    }
    digest.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The list page for `(id, title)` pairs of live streams.
fn list(streams: &[(String, String)]) -> String {
    let body = if streams.is_empty() {
        "<p>No stream is live. Publish one over RTMP and reload.</p>".to_owned()
    } else {
        let items: String = streams
            .iter()
            .map(|(id, title)| {
                let (id, title) = (escape(id), escape(title));
                format!(
                    "<li>{title} <a href=\"{id}\">HLS</a> <a href=\"{id}?protocol=dash\">DASH</a></li>\n"
                )
            })
            .collect();
        format!("<ul>\n{items}</ul>")
    };
    LIST.replace("{{STREAMS}}", &body)
}

impl PlayerPage {
    /// Serves pages for the streams in `registry`, players from `vendor_dir`.
    pub fn new(registry: Registry, vendor_dir: PathBuf) -> Self {
        let version = scripts_version(&vendor_dir);
        Self {
            registry,
            vendor_dir,
            version,
        }
    }

    /// Whether `path` is the player's.
    pub fn owns(path: &str) -> bool {
        path == "/player" || path.starts_with("/player/")
    }

    /// Answers one request under `/player`.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "",
                "the player answers GET and HEAD",
            );
            if let Ok(v) = "GET, HEAD".parse() {
                r.headers_mut().insert(hyper::header::ALLOW, v);
            }
            return r;
        }
        let path = req.uri().path();
        let Some(route) = parse(path) else {
            return error(StatusCode::NOT_FOUND, "", format!("nothing at {path}"));
        };
        match route {
            PlayerRoute::List => self.list().await,
            PlayerRoute::Live(id) => match self.registry.get(id).await {
                Ok(Some(stream)) => html(page("live", id, &stream.config.title, &self.version), id),
                Ok(None) => error(StatusCode::NOT_FOUND, "", format!("no stream {id}")),
                Err(e) => internal(e),
            },
            PlayerRoute::Vod(id) => match self.registry.get_recording(id).await {
                Ok(Some(rec)) if rec.status != "recording" => {
                    let title = match self.registry.get(&rec.stream_id).await {
                        Ok(Some(stream)) => format!("{} (recording)", stream.config.title),
                        _ => "recording".to_owned(),
                    };
                    html(page("vod", id, &title, &self.version), &rec.stream_id)
                }
                Ok(Some(_)) => error(
                    StatusCode::NOT_FOUND,
                    "",
                    format!("recording {id} is still being recorded; watch it live"),
                ),
                Ok(None) => error(StatusCode::NOT_FOUND, "", format!("no recording {id}")),
                Err(e) => internal(e),
            },
            PlayerRoute::Asset { versioned, name } => {
                let cache = if versioned {
                    VERSIONED_ASSET_CACHE
                } else {
                    ASSET_CACHE
                };
                if name == "player.js" {
                    reply(
                        StatusCode::OK,
                        "text/javascript; charset=utf-8",
                        cache,
                        "player",
                        full(SCRIPT),
                    )
                } else {
                    self.vendor(name, cache).await
                }
            }
        }
    }

    async fn list(&self) -> Response<Body> {
        let filter = ListFilter {
            status: Some(Status::Live),
            user_id: None,
            limit: 200,
            offset: 0,
        };
        match self.registry.list(&filter).await {
            Ok((streams, _)) => {
                let streams: Vec<(String, String)> = streams
                    .into_iter()
                    .map(|s| (s.id, s.config.title))
                    .collect();
                reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    PAGE_CACHE,
                    "player",
                    full(list(&streams)),
                )
            }
            Err(e) => internal(e),
        }
    }

    async fn vendor(&self, name: &str, cache: &str) -> Response<Body> {
        let Some((_, file)) = VENDOR.iter().find(|(n, _)| *n == name) else {
            return error(StatusCode::NOT_FOUND, "", format!("no player asset {name}"));
        };
        let path = self.vendor_dir.join(file);
        match tokio::fs::read(&path).await {
            Ok(bytes) => reply(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                cache,
                "player",
                full(bytes),
            ),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "player script missing");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "",
                    format!(
                        "the player script {name} is not installed ({}: {e}); run `npm ci` in \
                         the project's player/ folder or set origin.player_dir",
                        path.display()
                    ),
                )
            }
        }
    }
}

fn html(text: String, stream: &str) -> Response<Body> {
    reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE_CACHE,
        &format!("player stream/{stream}"),
        full(text),
    )
}

fn internal(e: impl std::fmt::Display) -> Response<Body> {
    tracing::error!(error = %e, "player page: registry lookup failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "",
        "the stream registry is unavailable",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/player"), Some(PlayerRoute::List));
        assert_eq!(parse("/player/"), Some(PlayerRoute::List));
        assert_eq!(parse("/player/abc-1"), Some(PlayerRoute::Live("abc-1")));
        assert_eq!(parse("/player/vod/r1"), Some(PlayerRoute::Vod("r1")));
        assert_eq!(
            parse("/player/assets/hls.min.js"),
            Some(PlayerRoute::Asset {
                versioned: false,
                name: "hls.min.js"
            })
        );
        assert_eq!(
            parse("/player/assets/0a1b2c/dash.all.min.js"),
            Some(PlayerRoute::Asset {
                versioned: true,
                name: "dash.all.min.js"
            })
        );
        assert_eq!(parse("/player/assets/../Cargo.toml"), None);
        assert_eq!(parse("/player/assets/v/../../x"), None);
        assert_eq!(parse("/player/a/b"), None);
        assert_eq!(parse("/player/<script>"), None);
        assert_eq!(parse("/player/.hidden"), None);
        assert_eq!(parse("/players"), None);
    }

    #[test]
    fn titles_are_escaped_and_urls_stay_relative() {
        let html = page("live", "s1", "<b>\"launch\" & more</b>", "v1");
        assert!(html.contains("&lt;b&gt;&quot;launch&quot; &amp; more&lt;/b&gt;"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("src=\"assets/v1/player.js\" data-assets=\"assets/v1/\""));
        assert!(html.contains("data-kind=\"live\" data-id=\"s1\""));
        let vod = page("vod", "r1", "t", "v1");
        assert!(vod.contains("data-assets=\"../assets/v1/\""));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn the_script_version_follows_the_installed_players() {
        let dir = tempfile::tempdir().unwrap();
        let before = scripts_version(dir.path());
        let hls = dir.path().join("hls.js/dist");
        std::fs::create_dir_all(&hls).unwrap();
        std::fs::write(hls.join("hls.min.js"), "v1").unwrap();
        let installed = scripts_version(dir.path());
        std::fs::write(hls.join("hls.min.js"), "v2").unwrap();
        let upgraded = scripts_version(dir.path());
        assert_ne!(before, installed);
        assert_ne!(installed, upgraded);
        assert_eq!(upgraded, scripts_version(dir.path()));
    }

    #[test]
    fn the_list_links_each_live_stream_in_both_protocols() {
        let html = list(&[("s1".into(), "One".into()), ("s2".into(), "<Two>".into())]);
        assert!(html.contains("<a href=\"s1\">HLS</a>"));
        assert!(html.contains("<a href=\"s2?protocol=dash\">DASH</a>"));
        assert!(html.contains("&lt;Two&gt;"));
        assert!(list(&[]).contains("No stream is live"));
    }
}
