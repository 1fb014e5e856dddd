//! The HTTP answers every origin listener shares: the body type, whole-body replies with the
//! delivery headers (CORS, surrogate keys), plain-text errors, and the cache lifetimes of
//! media and VOD playlists.

use std::convert::Infallible;

use bytes::Bytes;
use cascade_media::packager::Rendition;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// Response body of the delivery listener: whole or streamed. A streamed body that cannot
/// finish ends with an error, so the client sees a truncated transfer, not a short object.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// `Cache-Control` of init segments, segments and parts: they never change.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of VOD playlists and manifests.
pub const VOD_PLAYLIST: &str = "public, max-age=86400";

/// A whole-body response.
pub fn full(body: impl Into<Bytes>) -> Body {
    boxed(Full::new(body.into()))
}

/// A [`Full`] body as a delivery body.
pub fn boxed(body: Full<Bytes>) -> Body {
    body.map_err(|never: Infallible| match never {}).boxed()
}

/// A response with the delivery headers every answer carries (CORS, surrogate keys).
pub fn reply(
    status: StatusCode,
    content_type: &str,
    cache_control: &str,
    surrogate_key: &str,
    body: Body,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, cache_control),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Age, Content-Length, Date, Surrogate-Key",
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    if !surrogate_key.is_empty()
        && let Ok(value) = HeaderValue::from_str(surrogate_key)
    {
        headers.insert("surrogate-key", value);
    }
    response
}

/// A plain-text error.
pub fn error(
    status: StatusCode,
    surrogate_key: &str,
    message: impl Into<String>,
) -> Response<Body> {
    let cache = match status {
        // A missing object may appear later; let tiers hold the answer only briefly.
        StatusCode::NOT_FOUND => "public, max-age=1",
        _ => "no-store",
    };
    let mut text = message.into();
    text.push('\n');
    reply(
        status,
        "text/plain; charset=utf-8",
        cache,
        surrogate_key,
        full(text),
    )
}

/// Surrogate keys of a live asset: the stream, and the rendition when there is one.
pub fn surrogate_key(kind: &str, id: &str, rendition: Option<&str>) -> String {
    match rendition {
        Some(r) => format!("{kind}/{id} rendition/{id}/{r}"),
        None => format!("{kind}/{id}"),
    }
}

/// Content type of a rendition's media.
pub fn media_type(rendition: &Rendition) -> &'static str {
    match rendition.track.kind {
        cascade_media::fmp4::TrackKind::Audio => "audio/mp4",
        _ => "video/mp4",
    }
}
