//! Which viewer session a request belongs to. A player that sends CMCD names its session
//! (`sid`); for others the session is a keyed hash of the viewer's address and user agent, so
//! requests group together without the address being kept anywhere.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The session of a request: the player's `sid`, else `h-` and a keyed hash (HMAC-SHA256
/// under `salt`, 16 bytes in hex) of the address and user agent.
pub fn session_id(
    sid: Option<&str>,
    salt: &[u8],
    client: Option<IpAddr>,
    user_agent: &str,
) -> String {
    if let Some(sid) = sid.filter(|s| !s.is_empty()) {
        return sid.to_owned();
    }
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(salt) else {
        return "h-unknown".into();
    };
    match client {
        Some(IpAddr::V4(a)) => mac.update(&a.octets()),
        Some(IpAddr::V6(a)) => mac.update(&a.octets()),
        None => {}
    }
    mac.update(&[0]);
    mac.update(user_agent.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(34);
    out.push_str("h-");
    for b in &digest[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_players_sid_wins() {
        assert_eq!(session_id(Some("abc-123"), b"salt", None, "ua"), "abc-123");
    }

    #[test]
    fn the_hash_groups_one_viewer_and_hides_the_address() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = session_id(None, b"salt", Some(ip), "Firefox");
        assert_eq!(a, session_id(Some(""), b"salt", Some(ip), "Firefox"));
        assert!(a.starts_with("h-") && a.len() == 34);
        assert!(!a.contains("203"));
        assert_ne!(a, session_id(None, b"salt", Some(ip), "Chrome"));
        assert_ne!(a, session_id(None, b"other", Some(ip), "Firefox"));
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert_ne!(a, session_id(None, b"salt", Some(other), "Firefox"));
    }
}
