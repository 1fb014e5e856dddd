//! Which address a request comes from: the socket's peer, unless the peer is a trusted proxy,
//! in which case `Forwarded` (RFC 7239) or else `X-Forwarded-For` says. Proxies are walked
//! from the nearest hop outwards, so a viewer cannot choose its own address by sending the
//! header itself.

use std::net::IpAddr;

use cascade_config::Cidr;

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|net| net.contains(ip))
}

/// One `for=` value of `Forwarded`: `192.0.2.1`, `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`.
fn forwarded_for(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    v.parse().ok().or_else(|| {
        v.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|(ip, _)| ip.parse().ok())
    })
}

/// The hops a `Forwarded` header lists, nearest last; `None` if any element is unreadable.
fn forwarded_hops(header: &str) -> Option<Vec<IpAddr>> {
    header
        .split(',')
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| forwarded_for(value))
            })?
        })
        .collect()
}

fn x_forwarded_hops(header: &str) -> Option<Vec<IpAddr>> {
    header.split(',').map(forwarded_for).collect()
}

/// The viewer's address. `forwarded` and `x_forwarded_for` are the headers' values (all of
/// them joined with `,` when repeated). Unreadable headers from a trusted proxy are ignored:
/// the proxy itself is then the client.
pub fn client_address(
    peer: IpAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted_proxies: &[Cidr],
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, trusted_proxies) {
        return peer;
    }
    let hops = forwarded
        .and_then(forwarded_hops)
        .or_else(|| x_forwarded_for.and_then(x_forwarded_hops));
    let Some(hops) = hops else { return peer };
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = hop.to_canonical();
        if !trusted(client, trusted_proxies) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn proxies() -> Vec<Cidr> {
        vec!["10.0.0.0/8".parse().expect("cidr")]
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got = client_address(
            ip("203.0.113.5"),
            Some("for=198.51.100.1"),
            Some("198.51.100.2"),
            &proxies(),
        );
        assert_eq!(got, ip("203.0.113.5"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let p = proxies();
        assert_eq!(
            client_address(ip("10.0.0.1"), None, Some("198.51.100.2"), &p),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                Some("for=\"[2001:db8::7]:4711\";proto=https"),
                None,
                &p
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                Some("For=\"192.0.2.60:443\""),
                Some("198.51.100.2"),
                &p
            ),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn a_spoofed_leftmost_hop_is_not_believed() {
        // The viewer sent "X-Forwarded-For: 1.2.3.4"; our proxy appended the real address.
        let got = client_address(
            ip("10.0.0.1"),
            None,
            Some("1.2.3.4, 198.51.100.9, 10.0.0.2"),
            &proxies(),
        );
        assert_eq!(got, ip("198.51.100.9"));
    }

    #[test]
    fn unreadable_headers_leave_the_proxy_as_client() {
        let p = proxies();
        assert_eq!(
            client_address(ip("10.0.0.1"), None, Some("not-an-ip"), &p),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), Some("for=_hidden"), None, &p),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), None, Some(""), &p),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), None, Some("192.0.2.1"), &p),
            ip("192.0.2.1")
        );
    }
}
