//! Delivery URLs, parsed and checked without IO: which stream or recording, which asset, and
//! the LL-HLS query directives. Anything that could name a file outside the store (`..`,
//! percent-encoding, odd characters) is refused before any lookup.

use crate::hls::Skip;

/// A delivery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/time`: the origin's clock for DASH `UTCTiming`.
    Time,
    /// `/live/<stream>/...`.
    Live {
        /// Stream id.
        stream: String,
        /// What is asked for.
        asset: Asset,
    },
    /// `/vod/<recording>/...`.
    Vod {
        /// Recording id.
        recording: String,
        /// What is asked for.
        asset: Asset,
    },
}

/// One asset of a stream or recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asset {
    /// `master.m3u8`.
    Multivariant,
    /// `manifest.mpd`.
    Manifest,
    /// `thumbnail.jpg`.
    Thumbnail,
    /// `<rendition>/playlist.m3u8`.
    MediaPlaylist {
        /// Rendition name.
        rendition: String,
    },
    /// `<rendition>/init.mp4` (id 0) or `<rendition>/init-<id>.mp4`.
    Init {
        /// Rendition name.
        rendition: String,
        /// Init version.
        id: u32,
    },
    /// `<rendition>/<msn>.m4s`.
    Segment {
        /// Rendition name.
        rendition: String,
        /// Media sequence number.
        msn: u64,
    },
    /// `<rendition>/<msn>.<part>.m4s`.
    Part {
        /// Rendition name.
        rendition: String,
        /// Media sequence number.
        msn: u64,
        /// Part index within the segment.
        part: usize,
    },
}

impl Asset {
    /// The rendition the asset belongs to, if any.
    pub fn rendition(&self) -> Option<&str> {
        match self {
            Asset::MediaPlaylist { rendition }
            | Asset::Init { rendition, .. }
            | Asset::Segment { rendition, .. }
            | Asset::Part { rendition, .. } => Some(rendition),
            _ => None,
        }
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Malformed: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Well formed but nothing is served there: 404.
    #[error("{0}")]
    NotFound(String),
}

/// Whether `path` is a delivery URL (the rest belongs to the API).
pub fn owns(path: &str) -> bool {
    path == "/time" || path.starts_with("/live/") || path.starts_with("/vod/")
}

/// Parses a delivery path.
pub fn parse(path: &str) -> Result<Route, RouteError> {
    if path == "/time" {
        return Ok(Route::Time);
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| RouteError::BadRequest("the path must start with '/'".into()))?;
    let parts: Vec<&str> = rest.split('/').collect();
    for part in &parts {
        check_segment(part)?;
    }
    match parts.as_slice() {
        ["live", stream, asset @ ..] => Ok(Route::Live {
            stream: id(stream, "stream id")?,
            asset: parse_asset(asset)?,
        }),
        ["vod", recording, asset @ ..] => Ok(Route::Vod {
            recording: id(recording, "recording id")?,
            asset: parse_asset(asset)?,
        }),
        _ => Err(RouteError::NotFound(format!("nothing is served at {path}"))),
    }
}

fn check_segment(segment: &str) -> Result<(), RouteError> {
    if segment.is_empty() {
        return Err(RouteError::BadRequest(
            "empty path segment ('//' or a trailing '/')".into(),
        ));
    }
    if segment == "." || segment == ".." {
        return Err(RouteError::BadRequest(
            "'.' and '..' are not allowed in paths".into(),
        ));
    }
    if segment.contains('%') {
        return Err(RouteError::BadRequest(
            "percent-encoded characters are not allowed in media paths".into(),
        ));
    }
    if let Some(bad) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(RouteError::BadRequest(format!(
            "character {bad:?} is not allowed in media paths"
        )));
    }
    Ok(())
}

fn id(value: &str, what: &str) -> Result<String, RouteError> {
    if value.len() > 64 || value.contains('.') {
        return Err(RouteError::NotFound(format!("no {what} {value:?}")));
    }
    Ok(value.to_owned())
}

fn parse_asset(asset: &[&str]) -> Result<Asset, RouteError> {
    match asset {
        ["master.m3u8"] => Ok(Asset::Multivariant),
        ["manifest.mpd"] => Ok(Asset::Manifest),
        ["thumbnail.jpg"] => Ok(Asset::Thumbnail),
        [rendition, file] => {
            let rendition = id(rendition, "rendition")?;
            parse_rendition_file(rendition, file)
        }
        _ => Err(RouteError::NotFound(format!(
            "no such asset {:?}",
            asset.join("/")
        ))),
    }
}

fn parse_rendition_file(rendition: String, file: &str) -> Result<Asset, RouteError> {
    if file == "playlist.m3u8" {
        return Ok(Asset::MediaPlaylist { rendition });
    }
    if file == "init.mp4" {
        return Ok(Asset::Init { rendition, id: 0 });
    }
    if let Some(id) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        let id = number(id).ok_or_else(|| RouteError::NotFound(format!("no init {file:?}")))?;
        let id =
            u32::try_from(id).map_err(|_| RouteError::NotFound(format!("no init {file:?}")))?;
        return Ok(Asset::Init { rendition, id });
    }
    let Some(stem) = file.strip_suffix(".m4s") else {
        return Err(RouteError::NotFound(format!("no such file {file:?}")));
    };
    let not_media =
        || RouteError::NotFound(format!("{file:?} is not <msn>.m4s or <msn>.<part>.m4s"));
    match stem.split_once('.') {
        None => Ok(Asset::Segment {
            rendition,
            msn: number(stem).ok_or_else(not_media)?,
        }),
        Some((msn, part)) => Ok(Asset::Part {
            rendition,
            msn: number(msn).ok_or_else(not_media)?,
            part: usize::try_from(number(part).ok_or_else(not_media)?).map_err(|_| not_media())?,
        }),
    }
}

/// A plain decimal number (no sign, no leading '+', at most 19 digits).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The LL-HLS directives of a media playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaylistQuery {
    /// `_HLS_msn`.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<usize>,
    /// `_HLS_skip`.
    pub skip: Skip,
}

/// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string; other parameters are
/// ignored. Malformed directives are a 400.
pub fn playlist_query(query: Option<&str>) -> Result<PlaylistQuery, RouteError> {
    let mut out = PlaylistQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => {
                out.msn = Some(number(value).ok_or_else(|| {
                    RouteError::BadRequest(format!(
                        "_HLS_msn={value:?} is not a non-negative integer"
                    ))
                })?);
            }
            "_HLS_part" => {
                let part = number(value).and_then(|v| usize::try_from(v).ok());
                out.part = Some(part.ok_or_else(|| {
                    RouteError::BadRequest(format!(
                        "_HLS_part={value:?} is not a non-negative integer"
                    ))
                })?);
            }
            "_HLS_skip" => {
                out.skip = match value {
                    "YES" => Skip::Yes,
                    "v2" => Skip::V2,
                    _ => {
                        return Err(RouteError::BadRequest(format!(
                            "_HLS_skip={value:?} must be YES or v2"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    if out.part.is_some() && out.msn.is_none() {
        return Err(RouteError::BadRequest("_HLS_part needs _HLS_msn".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn live(asset: Asset) -> Route {
        Route::Live {
            stream: "abc".into(),
            asset,
        }
    }

    #[test]
    fn delivery_urls() {
        assert_eq!(parse("/time").unwrap(), Route::Time);
        assert_eq!(
            parse("/live/abc/master.m3u8").unwrap(),
            live(Asset::Multivariant)
        );
        assert_eq!(
            parse("/live/abc/manifest.mpd").unwrap(),
            live(Asset::Manifest)
        );
        assert_eq!(
            parse("/live/abc/thumbnail.jpg").unwrap(),
            live(Asset::Thumbnail)
        );
        let r = || "720p".to_string();
        assert_eq!(
            parse("/live/abc/720p/playlist.m3u8").unwrap(),
            live(Asset::MediaPlaylist { rendition: r() })
        );
        assert_eq!(
            parse("/live/abc/720p/init.mp4").unwrap(),
            live(Asset::Init {
                rendition: r(),
                id: 0
            })
        );
        assert_eq!(
            parse("/live/abc/720p/init-3.mp4").unwrap(),
            live(Asset::Init {
                rendition: r(),
                id: 3
            })
        );
        assert_eq!(
            parse("/live/abc/720p/17.m4s").unwrap(),
            live(Asset::Segment {
                rendition: r(),
                msn: 17
            })
        );
        assert_eq!(
            parse("/live/abc/720p/17.2.m4s").unwrap(),
            live(Asset::Part {
                rendition: r(),
                msn: 17,
                part: 2
            })
        );
        assert_eq!(
            parse("/vod/rec1/audio/3.m4s").unwrap(),
            Route::Vod {
                recording: "rec1".into(),
                asset: Asset::Segment {
                    rendition: "audio".into(),
                    msn: 3
                }
            }
        );
    }

    #[test]
    fn traversal_and_junk_are_refused() {
        for path in [
            "/live/abc/../secret",
            "/live/../../etc/passwd",
            "/live/abc/%2e%2e/720p/1.m4s",
            "/live/abc/720p/%2E%2E%2Fx",
            "/live/abc//720p/1.m4s",
            "/live/abc/720p/1.m4s/",
            "/live/abc/./master.m3u8",
            "/live/a\\b/master.m3u8",
            "/vod/x/720p/a b.m4s",
            "/live/abc/720p/+1.m4s",
        ] {
            assert!(
                matches!(parse(path), Err(RouteError::BadRequest(_))),
                "{path} gives {:?}",
                parse(path)
            );
        }
        for path in [
            "/live/abc",
            "/live/abc/720p/-1.m4s",
            "/live/abc/720p/1.x.m4s",
            "/live/abc/720p/1.2.3.m4s",
            "/live/abc/720p/99999999999999999999.m4s",
            "/live/abc/720p/init-x.mp4",
            "/live/abc/720p/file.txt",
            "/live/abc/a/b/c",
            "/other",
        ] {
            assert!(
                matches!(parse(path), Err(RouteError::NotFound(_))),
                "{path} gives {:?}",
                parse(path)
            );
        }
    }

    #[test]
    fn playlist_directives() {
        assert_eq!(playlist_query(None).unwrap(), PlaylistQuery::default());
        let q = playlist_query(Some("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&token=x")).unwrap();
        assert_eq!(q.msn, Some(12));
        assert_eq!(q.part, Some(3));
        assert_eq!(q.skip, Skip::Yes);
        assert_eq!(playlist_query(Some("_HLS_skip=v2")).unwrap().skip, Skip::V2);
        for bad in [
            "_HLS_msn=-1",
            "_HLS_msn=abc",
            "_HLS_msn=",
            "_HLS_msn=1&_HLS_part=-2",
            "_HLS_part=1",
            "_HLS_skip=NO",
            "_HLS_msn=1.5",
        ] {
            assert!(
                matches!(playlist_query(Some(bad)), Err(RouteError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
