//! Signed URLs. The token travels in the path (`/t/<token>/live/...`) so that relative URIs
//! in playlists keep it. It is an HMAC-SHA256 over its expiry, the path prefix it grants and,
//! when bound, the viewer's IP; it is checked in constant time and removed before the cache key
//! and the upstream request are formed.
//!
//! Token text: `<expiry unix secs>.<a|i>.<base64url(prefix)>.<base64url(mac)>`, where `i`
//! means bound to the client IP.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's token was refused (answered with 403, message in the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The path has no `/t/<token>/` prefix.
    #[error("this site needs a signed URL (/t/<token>/...)")]
    Missing,
    /// The token does not parse.
    #[error("the URL token is malformed")]
    Malformed,
    /// The signature does not match.
    #[error("the URL token's signature is wrong")]
    BadSignature,
    /// Past its expiry.
    #[error("the URL token has expired")]
    Expired,
    /// The path is outside the prefix the token grants.
    #[error("the URL token does not cover this path")]
    WrongPath,
    /// Bound to another client address.
    #[error("the URL token is bound to another client address")]
    WrongClient,
    /// Valid for longer than the site allows.
    #[error("the URL token expires further ahead than this site allows")]
    TooLong,
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
    /// Longest lifetime accepted, in seconds (`None`: any).
    max_lifetime: Option<u64>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// The path prefix `/t/` that carries tokens.
const TOKEN_PREFIX: &str = "/t/";

impl TokenKey {
    /// A key from a secret (any length; 32+ random bytes recommended).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = HmacSha256::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self {
            mac,
            max_lifetime: None,
        }
    }

    /// The same key, refusing tokens that expire more than `seconds` after the check.
    pub fn with_max_lifetime(mut self, seconds: u64) -> Self {
        self.max_lifetime = Some(seconds);
        self
    }

    /// A token granting `prefix` until `expiry` (unix seconds), optionally only to `client`.
    pub fn sign(&self, prefix: &str, expiry: u64, client: Option<IpAddr>) -> String {
        let bound = if client.is_some() { "i" } else { "a" };
        let mac = self.mac_for(expiry, bound, prefix, client);
        format!(
            "{expiry}.{bound}.{}.{}",
            URL_SAFE_NO_PAD.encode(prefix),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// Splits `/t/<token>/rest` into the token and `/rest`. The caller normalises `/rest`
    /// and passes it to [`TokenKey::check`]: checking the raw path would let `..` climb out
    /// of the granted prefix.
    pub fn split(path: &str) -> Result<(&str, &str), TokenError> {
        let rest = path.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Missing)?;
        match rest.find('/') {
            Some(i) if i > 0 => Ok((&rest[..i], &rest[i..])),
            _ => Err(TokenError::Malformed),
        }
    }

    /// Checks `token` for a request of the normalised `path` at `now` (unix seconds) from
    /// `client`.
    pub fn check(
        &self,
        token: &str,
        path: &str,
        now: u64,
        client: Option<IpAddr>,
    ) -> Result<(), TokenError> {
        let mut parts = token.split('.');
        let (Some(expiry), Some(bound), Some(prefix), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let prefix_bytes = URL_SAFE_NO_PAD
            .decode(prefix)
            .map_err(|_| TokenError::Malformed)?;
        let prefix = std::str::from_utf8(&prefix_bytes).map_err(|_| TokenError::Malformed)?;
        let given = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        let bound_client = match bound {
            "a" => None,
            "i" => Some(client.ok_or(TokenError::WrongClient)?),
            _ => return Err(TokenError::Malformed),
        };
        let mut mac = self.mac.clone();
        feed(&mut mac, expiry, bound, prefix, bound_client);
        // verify_slice compares in constant time.
        mac.verify_slice(&given).map_err(|_| {
            if bound_client.is_some() {
                TokenError::WrongClient
            } else {
                TokenError::BadSignature
            }
        })?;
        if now > expiry {
            return Err(TokenError::Expired);
        }
        if self
            .max_lifetime
            .is_some_and(|max| expiry > now.saturating_add(max))
        {
            return Err(TokenError::TooLong);
        }
        if !covers(prefix, path) {
            return Err(TokenError::WrongPath);
        }
        Ok(())
    }

    fn mac_for(&self, expiry: u64, bound: &str, prefix: &str, client: Option<IpAddr>) -> Vec<u8> {
        let mut mac = self.mac.clone();
        feed(&mut mac, expiry, bound, prefix, client);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Whether a token granting `prefix` covers `path`: the prefix itself, or what lies below it
/// at a `/` boundary (a token for `/live/abc` opens `/live/abc/1.m4s`, not `/live/abcd/`).
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn feed(mac: &mut HmacSha256, expiry: u64, bound: &str, prefix: &str, client: Option<IpAddr>) {
    // Newline-separated fields: none of them can contain a newline (paths with control bytes
    // are refused before tokens are checked), so the encoding is unambiguous.
    mac.update(b"cascade-url-token-v1\n");
    mac.update(expiry.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(bound.as_bytes());
    mac.update(b"\n");
    mac.update(prefix.as_bytes());
    mac.update(b"\n");
    if let Some(ip) = client {
        mac.update(ip.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// What the proxy does: split, (normalise), check.
    fn verify<'p>(
        key: &TokenKey,
        path: &'p str,
        now: u64,
        client: Option<IpAddr>,
    ) -> Result<&'p str, TokenError> {
        let (token, rest) = TokenKey::split(path)?;
        key.check(token, rest, now, client).map(|()| rest)
    }

    #[test]
    fn a_valid_token_is_stripped() {
        let key = TokenKey::new(b"secret");
        let token = key.sign("/live/abc/", NOW + 60, None);
        let path = format!("/t/{token}/live/abc/720p/12.m4s");
        assert_eq!(verify(&key, &path, NOW, None), Ok("/live/abc/720p/12.m4s"));
        assert_eq!(
            verify(&key, &path, NOW, ip("10.1.1.1")),
            Ok("/live/abc/720p/12.m4s"),
            "an unbound token works from anywhere"
        );
    }

    #[test]
    fn a_token_living_longer_than_the_site_allows_is_refused() {
        let key = TokenKey::new(b"secret").with_max_lifetime(3_600);
        let hour = key.sign("/live/", NOW + 3_600, None);
        assert!(verify(&key, &format!("/t/{hour}/live/a.m3u8"), NOW, None).is_ok());
        let decade = key.sign("/live/", NOW + 10 * 365 * 86_400, None);
        assert_eq!(
            verify(&key, &format!("/t/{decade}/live/a.m3u8"), NOW, None),
            Err(TokenError::TooLong)
        );
        // Closer to its expiry, the same token is within the limit.
        let day = key.sign("/live/", NOW + 86_400, None);
        assert_eq!(
            verify(&key, &format!("/t/{day}/live/a.m3u8"), NOW, None),
            Err(TokenError::TooLong)
        );
        assert!(
            verify(
                &key,
                &format!("/t/{day}/live/a.m3u8"),
                NOW + 86_400 - 60,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn a_prefix_grants_only_at_a_path_boundary() {
        let key = TokenKey::new(b"secret");
        let open = key.sign("/live/abc", NOW + 60, None);
        assert_eq!(
            verify(&key, &format!("/t/{open}/live/abc/720p/1.m4s"), NOW, None),
            Ok("/live/abc/720p/1.m4s")
        );
        assert_eq!(
            verify(&key, &format!("/t/{open}/live/abc"), NOW, None),
            Ok("/live/abc")
        );
        assert_eq!(
            verify(&key, &format!("/t/{open}/live/abcd/720p/1.m4s"), NOW, None),
            Err(TokenError::WrongPath)
        );
        let slash = key.sign("/live/abc/", NOW + 60, None);
        assert_eq!(
            verify(&key, &format!("/t/{slash}/live/abcd/1.m4s"), NOW, None),
            Err(TokenError::WrongPath)
        );
    }

    #[test]
    fn every_failure_has_its_reason() {
        let key = TokenKey::new(b"secret");
        let good = key.sign("/live/abc/", NOW + 60, None);
        assert_eq!(
            verify(&key, "/live/abc/1.m4s", NOW, None),
            Err(TokenError::Missing)
        );
        assert_eq!(
            verify(&key, &format!("/t/{good}"), NOW, None),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(&key, "/t/garbage/live/abc/1.m4s", NOW, None),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(&key, &format!("/t/{good}/live/abc/1.m4s"), NOW + 61, None),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&key, &format!("/t/{good}/live/other/1.m4s"), NOW, None),
            Err(TokenError::WrongPath)
        );
        let other_key = TokenKey::new(b"other secret");
        assert_eq!(
            verify(&other_key, &format!("/t/{good}/live/abc/1.m4s"), NOW, None),
            Err(TokenError::BadSignature)
        );
        // Tampering with the prefix or expiry breaks the signature.
        let parts: Vec<&str> = good.split('.').collect();
        let widened = format!(
            "{}.a.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode("/"),
            parts[3]
        );
        assert_eq!(
            verify(&key, &format!("/t/{widened}/live/other/1.m4s"), NOW, None),
            Err(TokenError::BadSignature)
        );
        let extended = format!("{}.a.{}.{}", NOW + 999_999, parts[2], parts[3]);
        assert_eq!(
            verify(&key, &format!("/t/{extended}/live/abc/1.m4s"), NOW, None),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn ip_bound_tokens_only_work_from_that_address() {
        let key = TokenKey::new(b"secret");
        let token = key.sign("/live/", NOW + 60, ip("192.0.2.7"));
        let path = format!("/t/{token}/live/x.m3u8");
        assert_eq!(
            verify(&key, &path, NOW, ip("192.0.2.7")),
            Ok("/live/x.m3u8")
        );
        assert_eq!(
            verify(&key, &path, NOW, ip("192.0.2.8")),
            Err(TokenError::WrongClient)
        );
        assert_eq!(verify(&key, &path, NOW, None), Err(TokenError::WrongClient));
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        assert_eq!(
            format!("{:?}", TokenKey::new(b"hunter2")),
            "TokenKey(<redacted>)"
        );
    }
}
