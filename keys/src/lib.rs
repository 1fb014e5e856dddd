//! Cache keys: what makes two requests the same object. Edges and shields key their caches
//! with it, and the purge bus checks URL targets with it, so a purge the bus accepts is one
//! every node can apply.
//!
//! A key is the lowercased host without port, the normalised path, and only the query
//! parameters that change the response (`_HLS_msn`, `_HLS_part`, `_HLS_skip` by default),
//! sorted. Viewer tokens and every other query parameter are left out, and the request sent
//! upstream is rewritten to exactly what the key names, so an unkeyed detail can never make
//! the upstream produce a different body under the same key (cache poisoning).

use std::borrow::Cow;
use std::fmt;

/// The query parameters kept by default: LL-HLS blocking reload and delta updates.
pub const DEFAULT_KEYED_QUERY: [&str; 3] = ["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// Why a request cannot be keyed (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No usable host.
    #[error("the request has no valid Host")]
    BadHost,
    /// The path is not absolute or has forbidden bytes.
    #[error("the path is malformed: {0}")]
    BadPath(&'static str),
    /// `..` would climb above the root.
    #[error("the path climbs above the root")]
    Traversal,
}

/// A normalised request identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    host: String,
    path: String,
    query: String,
}

impl RequestKey {
    /// Builds the key for a request to `host` (a Host header value, port allowed) for
    /// `path_and_query` (the request target), keeping query parameters named in `keyed_query`.
    pub fn new(host: &str, path_and_query: &str, keyed_query: &[String]) -> Result<Self, KeyError> {
        let host = normalise_host(host)?;
        let (raw_path, raw_query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path = normalise_path(raw_path)?;
        let query = raw_query
            .map(|q| keep_query(q, keyed_query))
            .unwrap_or_default();
        Ok(Self { host, path, query })
    }

    /// Lowercased host without port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Normalised absolute path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Kept query parameters, sorted, without `?` (empty when none).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The request target to send upstream: path and kept query.
    pub fn upstream_target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The bytes hashed into pingora's primary key. The host is length-prefixed so that no
    /// host/path split can collide with another.
    pub fn primary(&self) -> String {
        format!(
            "{}:{}{}",
            self.host.len(),
            self.host,
            self.upstream_target()
        )
    }
}

impl fmt::Display for RequestKey {
    /// `host/path?query`, the form purges by URL and prefix match against.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.upstream_target())
    }
}

/// Lowercases, strips the port and a trailing dot; refuses anything that is not a host name or
/// an IP literal.
pub fn normalise_host(raw: &str) -> Result<String, KeyError> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']').ok_or(KeyError::BadHost)?;
        let after = &rest[end + 1..];
        if !(after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok()))
        {
            return Err(KeyError::BadHost);
        }
        let inner = &rest[..end];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(KeyError::BadHost);
        }
        format!("[{}]", inner.to_ascii_lowercase())
    } else {
        let name = match raw.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            Some(_) => return Err(KeyError::BadHost),
            None => raw,
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(KeyError::BadHost);
        }
        name
    };
    Ok(host)
}

/// Resolves `.` and `..`, collapses repeated slashes, decodes escaped unreserved characters
/// (so `%2e%2e` is seen as `..`) and upper-cases the remaining escapes. Refuses encoded
/// slashes, backslashes, NUL and control bytes, and any climb above the root.
pub fn normalise_path(raw: &str) -> Result<String, KeyError> {
    if !raw.starts_with('/') {
        return Err(KeyError::BadPath("it must start with /"));
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in raw.split('/') {
        let segment = decode_unreserved(segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(KeyError::Traversal);
                }
            }
            _ => segments.push(segment),
        }
    }
    let trailing_slash =
        raw.len() > 1 && (raw.ends_with('/') || raw.ends_with("/.") || raw.ends_with("/.."));
    let mut path = String::with_capacity(raw.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

fn decode_unreserved(segment: &str) -> Result<String, KeyError> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(KeyError::BadPath("truncated %-escape"))?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(KeyError::BadPath("invalid %-escape"))?;
            match value {
                b'/' | b'\\' => return Err(KeyError::BadPath("encoded slash")),
                0..=0x1f | 0x7f => return Err(KeyError::BadPath("encoded control character")),
                v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    out.push(char::from(v))
                }
                v => out.push_str(&format!("%{v:02X}")),
            }
            i += 3;
        } else {
            if b == b'\\' {
                return Err(KeyError::BadPath("backslash"));
            }
            if b < 0x20 || b == 0x7f {
                return Err(KeyError::BadPath("control character"));
            }
            if b.is_ascii() {
                out.push(char::from(b));
            } else {
                // Raw UTF-8 (which HTTP/1.1 parsers let through) is keyed and sent upstream
                // in the escaped form conforming clients use, so both share one entry.
                out.push_str(&format!("%{b:02X}"));
            }
            i += 1;
        }
    }
    Ok(out)
}

fn keep_query(query: &str, keyed: &[String]) -> String {
    let mut kept: Vec<Cow<'_, str>> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !name.is_empty() && keyed.iter().any(|k| k == name)
        })
        .map(canonical_number)
        .collect();
    kept.sort_by(|a, b| {
        let name = |p: &'_ Cow<'_, str>| p.split_once('=').map_or(&**p, |(n, _)| n).to_owned();
        name(a).cmp(&name(b))
    });
    kept.dedup_by(|a, b| {
        a.split_once('=').map_or(&**a, |(n, _)| n) == b.split_once('=').map_or(&**b, |(n, _)| n)
    });
    kept.join("&")
}

/// `name=value` with a decimal value written without leading zeros (`_HLS_msn=010` is
/// `_HLS_msn=10`), so one answer is not cached, and fetched, once per spelling. Allocates only
/// for a value that had leading zeros.
fn canonical_number(pair: &str) -> Cow<'_, str> {
    match pair.split_once('=') {
        Some((name, value))
            if value.len() > 1
                && value.starts_with('0')
                && value.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let digits = value.trim_start_matches('0');
            Cow::Owned(format!(
                "{name}={}",
                if digits.is_empty() { "0" } else { digits }
            ))
        }
        _ => Cow::Borrowed(pair),
    }
}

/// Percent-decodes a query parameter value (`+` is a space); `None` when it is not UTF-8 or
/// an escape is broken. Shared by everything that reads a query value (CMCD, the router).
pub fn decode_query_value(text: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = hex(*bytes.get(i + 1)?)?;
                let low = hex(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The key of an `http://` or `https://` URL, as a URL purge names an object (the scheme
/// is optional here; the host may carry a port).
pub fn url_key(url: &str, keyed_query: &[String]) -> Result<RequestKey, KeyError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let (host, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let target = if target.is_empty() { "/" } else { target };
    RequestKey::new(host, target, keyed_query)
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded_or_refused() {
        assert_eq!(
            super::decode_query_value("live%2Fa+b"),
            Some("live/a b".into())
        );
        assert_eq!(
            super::decode_query_value("sid%3D%22x%22"),
            Some("sid=\"x\"".into())
        );
        for broken in ["%zz", "%2", "%", "%ff"] {
            assert_eq!(super::decode_query_value(broken), None, "{broken}");
        }
    }

    use super::*;

    fn keyed() -> Vec<String> {
        DEFAULT_KEYED_QUERY.iter().map(|s| s.to_string()).collect()
    }

    fn key(host: &str, target: &str) -> Result<RequestKey, KeyError> {
        RequestKey::new(host, target, &keyed())
    }

    #[test]
    fn host_is_lowercased_without_port() {
        assert_eq!(
            key("CDN.Example.com:8443", "/a").unwrap().host(),
            "cdn.example.com"
        );
        assert_eq!(
            key("cdn.example.com.", "/a").unwrap().host(),
            "cdn.example.com"
        );
        assert_eq!(key("[::1]:8000", "/a").unwrap().host(), "[::1]");
        assert_eq!(key("127.0.0.1", "/a").unwrap().host(), "127.0.0.1");
        for bad in [
            "",
            "a b",
            "evil.com/x",
            "a..b",
            "host:port",
            "[::1",
            "[zz]:1",
        ] {
            assert_eq!(key(bad, "/a"), Err(KeyError::BadHost), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_normalised() {
        let cases = [
            ("/live/a/1.m4s", "/live/a/1.m4s"),
            ("//live///a/./1.m4s", "/live/a/1.m4s"),
            ("/live/b/../a/1.m4s", "/live/a/1.m4s"),
            ("/live/%61/%2e%2E/a/1.m4s", "/live/a/1.m4s"),
            ("/live/a%20b/", "/live/a%20b/"),
            ("/live/a/%c3%a9", "/live/a/%C3%A9"),
            // Found by the cache_key fuzz target: raw UTF-8 was copied byte by byte as
            // Latin-1 characters, so the key and the upstream path named another object.
            ("/live/a/\u{e9}", "/live/a/%C3%A9"),
            ("/seg.m\u{308}", "/seg.m%CC%88"),
            ("/", "/"),
            ("/live/a/..", "/live/"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalise_path(raw).unwrap(), expected, "{raw}");
        }
    }

    #[test]
    fn traversal_and_smuggling_are_refused() {
        assert_eq!(normalise_path("/../etc/passwd"), Err(KeyError::Traversal));
        assert_eq!(
            normalise_path("/live/%2e%2e/%2e%2e/x"),
            Err(KeyError::Traversal)
        );
        assert!(normalise_path("/live%2f..%2f..%2fx").is_err());
        assert!(normalise_path("/live/a\\..\\x").is_err());
        assert!(normalise_path("/live/%00").is_err());
        assert!(normalise_path("/live/%zz").is_err());
        assert!(normalise_path("/live/%4").is_err());
        assert!(normalise_path("live").is_err());
    }

    #[test]
    fn numeric_query_values_are_canonical() {
        let a = key("h", "/p.m3u8?_HLS_msn=010&_HLS_part=00").unwrap();
        let b = key("h", "/p.m3u8?_HLS_part=0&_HLS_msn=10").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.query(), "_HLS_msn=10&_HLS_part=0");
        assert_eq!(a.upstream_target(), "/p.m3u8?_HLS_msn=10&_HLS_part=0");
        // Not a number: kept as sent, for the origin to refuse.
        let c = key("h", "/p.m3u8?_HLS_msn=+1&_HLS_skip=YES").unwrap();
        assert_eq!(c.query(), "_HLS_msn=+1&_HLS_skip=YES");
    }

    #[test]
    fn only_keyed_query_parameters_survive_sorted() {
        let k = key("h", "/p.m3u8?token=abc&_HLS_part=2&utm=x&_HLS_msn=10").unwrap();
        assert_eq!(k.query(), "_HLS_msn=10&_HLS_part=2");
        assert_eq!(k.upstream_target(), "/p.m3u8?_HLS_msn=10&_HLS_part=2");
        let same = key("H:80", "/p.m3u8?_HLS_msn=10&_HLS_part=2").unwrap();
        assert_eq!(k.primary(), same.primary());
        assert_eq!(key("h", "/p?").unwrap().upstream_target(), "/p");
        assert_eq!(
            key("h", "/p?_HLS_msn=1&_HLS_msn=2").unwrap().query(),
            "_HLS_msn=1",
            "a repeated parameter keeps its first value"
        );
    }

    #[test]
    fn primary_keys_cannot_collide_across_the_host_path_split() {
        let a = key("ab", "/c").unwrap().primary();
        let b = key("a", "/bc").unwrap().primary();
        assert_ne!(a, b);
        assert_eq!(
            key("h", "/x?_HLS_msn=1").unwrap().to_string(),
            "h/x?_HLS_msn=1"
        );
    }

    #[test]
    fn url_targets_are_keyed_like_requests() {
        let key = url_key("https://CDN.example:443/live/a/../b/1.m4s?v=2", &keyed()).unwrap();
        assert_eq!(
            key.to_string(),
            RequestKey::new("cdn.example", "/live/b/1.m4s", &keyed())
                .unwrap()
                .to_string()
        );
        assert_eq!(url_key("http://h", &keyed()).unwrap().path(), "/");
        for bad in [
            "http://h/a\\b",
            "http://h/a%zz",
            "http://h/../x",
            "http:///x",
        ] {
            assert!(url_key(bad, &keyed()).is_err(), "{bad}");
        }
    }
}
