//! The HTTP/1.1 parsers under every listener (Pingora's on edges and shields, hyper's on the
//! origin, purge bus and admin listeners) refuse a request they cannot parse with a bare
//! `400 Bad Request` (Pingora: `405` for `CONNECT`, `431` for a huge header block): no body,
//! and no hook for the server to say why. [`explain`] turns that answer, as it is about to be
//! written, into one whose body says what was wrong, so every refusal carries a message.

/// The body of an explained `400` parser refusal.
pub const EXPLANATION: &str = "400 Bad Request: this is not a valid HTTP/1.1 request. A request \
is `METHOD /path HTTP/1.1`, then `Name: value` header lines (no space before the colon, no NUL \
or other control bytes, one Host, one valid Content-Length), then an empty line (RFC 9112).\n";

/// What a bare refusal with `status` means.
fn explanation(status: &[u8]) -> Option<&'static str> {
    match status {
        b"400" => Some(EXPLANATION),
        b"405" => Some(
            "405 Method Not Allowed: this server does not open tunnels (CONNECT); it answers \
             GET, HEAD and OPTIONS.\n",
        ),
        b"431" => Some(
            "431 Request Header Fields Too Large: the request's header block is larger than \
             this server reads; send fewer or shorter headers.\n",
        ),
        _ => None,
    }
}

/// The answer to write instead of `head`, when `head` is a whole bare `400`, `405` or `431`
/// (no body and no content type: every answer Cascade writes itself has both); `None`
/// otherwise.
pub fn explain(head: &[u8]) -> Option<Vec<u8>> {
    let body = explanation(head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?)?;
    if !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let lines: Vec<&str> = text[..text.len() - 4].split("\r\n").collect();
    let mut bare = false;
    for line in &lines[1..] {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if value.trim() != "0" {
                return None;
            }
            bare = true;
        }
    }
    if !bare {
        return None;
    }
    let mut answer = String::with_capacity(head.len() + body.len() + 64);
    answer.push_str(lines[0]);
    answer.push_str("\r\n");
    for line in &lines[1..] {
        let name = line.split_once(':').map_or("", |(n, _)| n.trim());
        if !name.eq_ignore_ascii_case("content-length") {
            answer.push_str(line);
            answer.push_str("\r\n");
        }
    }
    answer.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    answer.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    answer.push_str(body);
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_parser_400_gets_a_body_saying_what_was_wrong() {
        let pingora = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\nCache-Control: private, no-store\r\nConnection: close\r\n\r\n";
        let explained = String::from_utf8(explain(pingora).unwrap()).unwrap();
        let (head, body) = explained.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, EXPLANATION);
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        assert!(!head.contains("Content-Length: 0"), "{head}");
        let hyper = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n";
        assert!(explain(hyper).is_some());
        let connect = explain(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        assert!(
            String::from_utf8(connect.unwrap())
                .unwrap()
                .contains("CONNECT")
        );
    }

    #[test]
    fn answers_with_a_body_a_type_or_another_status_are_left_alone() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 31\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n{\"error\":1}",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n",
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
        ] {
            assert_eq!(explain(head), None, "{}", String::from_utf8_lossy(head));
        }
    }
}
