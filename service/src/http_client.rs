//! A minimal HTTP/1.1 client between Cascade's own services on a private network or loopback:
//! the `cascade-purge` CLI and nodes following the embedded purge bus, edges sending analytics
//! to the origin. One connection per request, `http://` only.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Largest answer read.
const MAX_ANSWER: usize = 16 << 20;

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `host:port` of an `http://host:port[/]` base URL.
pub fn authority(base: &str) -> Result<&str, String> {
    base.strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| format!("{base:?}: expected http://host:port"))
}

/// Sends one request to `base` (`http://host:port`) and reads the whole answer within
/// `timeout`. `body` is sent as JSON.
pub async fn send(
    base: &str,
    method: hyper::Method,
    path_and_query: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Answer, String> {
    let body = body.map(|b| ("application/json", b));
    send_typed(base, method, path_and_query, token, body, timeout).await
}

/// As [`send`], with the body's content type given.
pub async fn send_typed(
    base: &str,
    method: hyper::Method,
    path_and_query: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
) -> Result<Answer, String> {
    let authority = authority(base)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot reach {base}: {e}"))?;
        stream.set_nodelay(true).ok();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, authority);
        let body = match body {
            Some((content_type, body)) => {
                builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
                body
            }
            None => Vec::new(),
        };
        if let Some(token) = token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{base}{path_and_query}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{base}{path_and_query}: {e}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{base}{path_and_query}: reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{base}{path_and_query}: no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls_are_taken() {
        assert_eq!(authority("http://127.0.0.1:8090/"), Ok("127.0.0.1:8090"));
        assert!(authority("https://bus:8090").is_err());
        assert!(authority("http://bus:8090/v1").is_err());
        assert!(authority("http://").is_err());
    }
}
