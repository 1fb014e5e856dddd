//! One HTTP/3 request stream seen by Pingora as a downstream session.
//!
//! Pingora has no HTTP/3, but its proxy accepts "custom" downstream sessions: anything that
//! implements [`pingora_core::protocols::http::custom::server::Session`]. [`H3Session`] is that
//! adapter over an `h3` request stream, so an HTTP/3 request runs through exactly the same
//! `CachingProxy` filters, cache, lock and upstream selection as an H1/H2 one, with no hop in
//! between. The conversions between h3's and Pingora's header types are pure functions
//! ([`request_header`], [`h3_response`]) tested here; the session only moves bytes.
//!
//! Request bodies are not read: the edge answers GET, HEAD and OPTIONS only (anything else is
//! refused with 405 before an upstream is involved), so the request is complete once its
//! header is.

use std::net::SocketAddr as InetAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use h3::error::Code;
use http::header::{self, HeaderName};
use http::{HeaderMap, Request, Response, Version};
use pingora_core::protocols::Digest;
use pingora_core::protocols::http::HttpTask;
use pingora_core::protocols::http::custom::CustomMessageWrite;
use pingora_core::protocols::http::custom::server::Session;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

/// The h3 request stream over quinn.
pub type H3Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// How long one write may wait for a client that does not read (flow control closed). QUIC's
/// idle timeout does not catch this: the client still acknowledges packets.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an HTTP/3 request cannot be handed to the proxy.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedRequest(pub String);

impl std::fmt::Display for MalformedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns an HTTP/3 request head into Pingora's request header: `:authority` becomes `Host`
/// (what the proxy and an HTTP/1.1 upstream expect), and a `Host` that disagrees with
/// `:authority` is malformed (RFC 9114 §4.3.1).
pub fn request_header(
    request: Request<()>,
) -> std::result::Result<RequestHeader, MalformedRequest> {
    let (mut parts, ()) = request.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    match (parts.headers.get(header::HOST), authority) {
        (Some(host), Some(authority)) if host.as_bytes() != authority.as_bytes() => {
            return Err(MalformedRequest(format!(
                "Host {host:?} differs from :authority {authority:?}"
            )));
        }
        (None, Some(authority)) => {
            let value = http::HeaderValue::from_str(&authority).map_err(|_| {
                MalformedRequest(format!(":authority {authority:?} is not a valid host"))
            })?;
            parts.headers.insert(header::HOST, value);
        }
        (None, None) => return Err(MalformedRequest("the request has no :authority".into())),
        _ => {}
    }
    if parts.headers.contains_key(header::CONNECTION)
        || parts.headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(MalformedRequest(
            "connection-specific header fields are not allowed in HTTP/3".into(),
        ));
    }
    parts.version = Version::HTTP_3;
    Ok(RequestHeader::from(parts))
}

/// Header fields that only make sense on one HTTP/1.1 connection; HTTP/3 forbids them.
fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The HTTP/3 form of a response header Pingora produced (for an H1 client it may carry
/// `Transfer-Encoding` or `Connection`, which HTTP/3 does not allow).
pub fn h3_response(resp: &ResponseHeader) -> Response<()> {
    let mut out = Response::new(());
    *out.status_mut() = resp.status;
    let headers = out.headers_mut();
    headers.reserve(resp.headers.len());
    for (name, value) in &resp.headers {
        if !is_connection_specific(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    out
}

/// Runs one write to the client, bounded by `limit`; errors are the client's (downstream).
async fn bounded<T, E>(
    limit: Duration,
    context: &'static str,
    write: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(limit, write).await {
        Ok(result) => {
            result.map_err(|e| Error::because(ErrorType::WriteError, context, e).into_down())
        }
        Err(_) => Err(Error::explain(
            ErrorType::WriteTimedout,
            format!("{context}: the client read nothing for {limit:?}"),
        )
        .into_down()),
    }
}

/// An HTTP/3 request stream as Pingora's downstream session.
pub struct H3Session {
    request: RequestHeader,
    stream: H3Stream,
    client: SocketAddr,
    server: SocketAddr,
    response: Option<ResponseHeader>,
    head_only: bool,
    /// The response was ended (finished, or reset after a failure): nothing more is sent.
    ended: bool,
    body_sent: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
}

impl H3Session {
    /// A session for one request received from `client` on the listener at `server`.
    pub fn new(
        request: RequestHeader,
        stream: H3Stream,
        client: InetAddr,
        server: InetAddr,
    ) -> Self {
        let head_only = request.method == http::Method::HEAD;
        Self {
            request,
            stream,
            client: SocketAddr::Inet(client),
            server: SocketAddr::Inet(server),
            response: None,
            head_only,
            ended: false,
            body_sent: 0,
            read_timeout: None,
            write_timeout: None,
            drain_timeout: None,
        }
    }

    fn write_limit(&self) -> Duration {
        self.write_timeout.unwrap_or(WRITE_STALL_TIMEOUT)
    }

    async fn send_head(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        if resp.status.is_informational() {
            // 1xx responses are not relayed (Pingora drops 100-continue for GETs anyway).
            return Ok(());
        }
        if self.response.is_some() {
            return Error::e_explain(
                ErrorType::InternalError,
                "a response header was already sent",
            );
        }
        let limit = self.write_limit();
        bounded(
            limit,
            "sending the HTTP/3 response header",
            self.stream.send_response(h3_response(resp)),
        )
        .await?;
        self.response = Some(resp.clone());
        if end || self.head_only {
            self.end_stream().await?;
        }
        Ok(())
    }

    async fn send_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if self.ended {
            // A HEAD response ended with its header; a GET's body after the end is a bug upstream.
            return if self.head_only {
                Ok(())
            } else {
                Err(
                    Error::explain(ErrorType::WriteError, "body after the end of the response")
                        .into_down(),
                )
            };
        }
        if !data.is_empty() {
            let len = data.len();
            let limit = self.write_limit();
            bounded(
                limit,
                "sending HTTP/3 response data",
                self.stream.send_data(data),
            )
            .await?;
            self.body_sent += len;
        }
        if end {
            self.end_stream().await?;
        }
        Ok(())
    }

    /// Ends the response cleanly (FIN after the last frame).
    async fn end_stream(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let limit = self.write_limit();
        bounded(limit, "finishing the HTTP/3 response", self.stream.finish()).await
    }

    /// Resets the response so the client cannot take what it received for a whole message.
    fn reset(&mut self, code: Code) {
        if !self.ended {
            self.ended = true;
            self.stream.stop_stream(code);
        }
    }
}

impl Drop for H3Session {
    fn drop(&mut self) {
        // quinn finishes a dropped send stream, which would pass a cut body off as complete.
        self.reset(Code::H3_INTERNAL_ERROR);
    }
}

#[async_trait]
impl Session for H3Session {
    fn req_header(&self) -> &RequestHeader {
        &self.request
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.request
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, end: bool) -> Result<()> {
        self.send_head(&resp, end).await
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.send_head(resp, end).await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.send_body(data, end).await
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.ended || self.head_only {
            return Ok(());
        }
        let limit = self.write_limit();
        bounded(
            limit,
            "sending HTTP/3 trailers",
            self.stream.send_trailers(trailers),
        )
        .await
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut end_stream = false;
        for task in tasks {
            let end = match task {
                HttpTask::Header(head, end) => {
                    self.send_head(&head, end).await?;
                    end
                }
                HttpTask::Body(data, end) => {
                    if let Some(data) = data {
                        self.send_body(data, false).await?;
                    }
                    end
                }
                HttpTask::UpgradedBody(..) => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "upgraded body on an HTTP/3 session",
                    );
                }
                HttpTask::Trailer(Some(trailers)) => {
                    self.write_trailers(*trailers).await?;
                    true
                }
                HttpTask::Trailer(None) | HttpTask::Done => true,
                HttpTask::Failed(e) => {
                    self.reset(Code::H3_INTERNAL_ERROR);
                    return Err(e);
                }
            };
            end_stream |= end;
        }
        if end_stream {
            self.end_stream().await?;
        }
        Ok(end_stream)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    fn request_summary(&self) -> String {
        format!(
            "{} {}, Host: {} (h3)",
            self.request.method,
            self.request
                .uri
                .path_and_query()
                .map(|pq| pq.as_str())
                .unwrap_or("/"),
            self.request
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
        )
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_ref()
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        self.reset(Code::H3_INTERNAL_ERROR);
    }

    async fn abandon(&mut self, _ctx: &str) {
        self.reset(Code::H3_INTERNAL_ERROR);
    }

    fn is_body_done(&mut self) -> bool {
        true
    }

    async fn finish(&mut self) -> Result<()> {
        if self.response.is_some() {
            self.end_stream().await
        } else {
            // Nothing was answered (the client went away, or the proxy gave up): say so.
            self.reset(Code::H3_REQUEST_CANCELLED);
            Ok(())
        }
    }

    fn is_body_empty(&mut self) -> bool {
        true
    }

    async fn read_body_or_idle(&mut self, _no_body_expected: bool) -> Result<Option<Bytes>> {
        // The request is complete with its header; there is nothing to read while the response
        // is produced (Pingora only polls this while it expects request body).
        std::future::pending().await
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        0
    }

    fn digest(&self) -> Option<&Digest> {
        None
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        None
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        Some(&self.client)
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        Some(&self.server)
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_slice(self.request.method.as_str().as_bytes());
        buf.put_u8(b' ');
        buf.put_slice(self.request.raw_path());
        buf.put_slice(b" HTTP/1.1\r\n");
        self.request.header_to_h1_wire(&mut buf);
        buf.put_slice(b"\r\n");
        buf.freeze()
    }

    fn enable_retry_buffering(&mut self) {}

    fn retry_buffer_truncated(&self) -> bool {
        false
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        None
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>> {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _reader: Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
    ) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method("GET")
            .uri(uri)
            .version(Version::HTTP_3);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn authority_becomes_host() {
        let req = request_header(request(
            "https://edge.example:8443/live/a/index.m3u8?x=1",
            &[],
        ))
        .unwrap();
        assert_eq!(req.headers.get(header::HOST).unwrap(), "edge.example:8443");
        assert_eq!(
            req.uri.path_and_query().unwrap().as_str(),
            "/live/a/index.m3u8?x=1"
        );
        assert_eq!(req.version, Version::HTTP_3);
    }

    #[test]
    fn a_host_that_disagrees_with_the_authority_is_malformed() {
        let ok = request_header(request("https://a.example/x", &[("host", "a.example")]));
        assert!(ok.is_ok());
        let err =
            request_header(request("https://a.example/x", &[("host", "b.example")])).unwrap_err();
        assert!(err.0.contains("differs from :authority"), "{err}");
    }

    #[test]
    fn connection_specific_request_fields_are_malformed() {
        let err =
            request_header(request("https://a.example/x", &[("connection", "close")])).unwrap_err();
        assert!(err.0.contains("connection-specific"), "{err}");
    }

    #[test]
    fn responses_lose_connection_specific_fields_and_keep_the_rest() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("transfer-encoding", "chunked").unwrap();
        resp.insert_header("connection", "keep-alive").unwrap();
        resp.insert_header("keep-alive", "timeout=5").unwrap();
        resp.insert_header("content-type", "video/mp4").unwrap();
        resp.append_header("via", "1.1 cascade-shield").unwrap();
        resp.append_header("via", "1.1 cascade-edge").unwrap();
        let out = h3_response(&resp);
        assert_eq!(out.status(), 200);
        assert!(out.headers().get("transfer-encoding").is_none());
        assert!(out.headers().get("connection").is_none());
        assert!(out.headers().get("keep-alive").is_none());
        assert_eq!(out.headers().get("content-type").unwrap(), "video/mp4");
        assert_eq!(out.headers().get_all("via").iter().count(), 2);
    }
}
