//! JSON over HTTP for the APIs (purge bus, origin management): responses, errors as
//! `{"error": "..."}`, and bounded request bodies.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};

use crate::auth::AuthError;
use hyper::{Request, Response, StatusCode};

/// `value` as pretty JSON with `status`.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json_response(status, &serde_json::json!({ "error": message.to_string() }))
}

/// The refusal for a failed authentication: 401 (with `WWW-Authenticate: Bearer`) for a
/// missing or unknown token, 403 for a token without the scope, 429 (with `Retry-After`) for
/// an address over its failure limit.
pub fn auth_refusal(error: &AuthError) -> Response<Full<Bytes>> {
    let status = match error {
        AuthError::Missing | AuthError::Unknown => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
        AuthError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut response = json_error(status, error);
    let headers = response.headers_mut();
    match error {
        AuthError::Missing | AuthError::Unknown => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        AuthError::TooManyFailures { retry_after } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        AuthError::Forbidden { .. } => {}
    }
    response
}

/// The whole body, or the 413 to send when it is over `max` bytes or cannot be read.
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
) -> Result<Bytes, Box<Response<Full<Bytes>>>> {
    Limited::new(req.into_body(), max)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| {
            Box::new(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body could not be read or is over {max} bytes: {e}"),
            ))
        })
}
