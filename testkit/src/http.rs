//! A deliberately small blocking HTTP/1.1 client for probing services in tests (admin
//! endpoints, raw requests). Real client behaviour is tested with real clients elsewhere.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result, io_err};

/// A parsed response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_request(addr, request.as_bytes())
}

/// `method path` with an optional bearer `token` and a JSON `body` (empty for none).
pub fn json_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<HttpResponse> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, request.as_bytes())
}

/// Sends `request` bytes as they are and parses the answer.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(io_err(format!("connect to {addr}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io_err("set read timeout"))?;
    stream
        .write_all(request)
        .map_err(io_err(format!("send to {addr}")))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(io_err(format!("read from {addr}")))?;
    parse_response(&raw)
}

/// Reads until the peer closes the connection, or `limit` passes; returns the bytes read and
/// how long the close took (`None`: still open). The caller gives the stream a short read
/// timeout, so a silent peer is noticed; a reset counts as a close.
pub fn read_until_closed(stream: &mut impl Read, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (received, Some(started.elapsed())),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (received, Some(started.elapsed())),
        }
    }
    (received, None)
}

/// Parses a raw HTTP/1.1 response (Content-Length, chunked or read-to-close body).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let bad = |why: &str| {
        HarnessError::Service(format!(
            "malformed HTTP response ({why}): {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ))
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("broken chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `curl` over HTTPS to `url`, trusting the CA certificate in `ca`, with `args` before the URL
/// (method, headers, body): `(status, body)`.
pub fn curl_https(ca: &std::path::Path, url: &str, args: &[&str]) -> Result<(u16, Vec<u8>)> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .map_err(io_err("run curl"))?;
    let mut body = out.stdout;
    let status = body
        .iter()
        .rposition(|&b| b == b'\n')
        .and_then(|split| {
            let status = std::str::from_utf8(&body[split + 1..]).ok()?.parse().ok()?;
            body.truncate(split);
            Some(status)
        })
        .ok_or_else(|| {
            HarnessError::Service(format!(
                "curl {url} gave no status: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.header("x-a"), r.text().as_str()),
            (503, Some("b"), "abc")
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.text(), "abcde");
        assert!(parse_response(b"garbage").is_err());
    }
}
