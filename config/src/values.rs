//! Value types that config fields are written in: listen addresses, durations, byte sizes,
//! secrets. Each parses from the human spelling an operator types and explains what it expected
//! when it cannot.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address a listener binds to, written `IP:port` (`127.0.0.1:8000`, `[::]:8443`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub SocketAddr);

impl ListenAddr {
    /// `127.0.0.1:<port>`.
    pub const fn loopback(port: u16) -> Self {
        Self(SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port,
        ))
    }
}

impl fmt::Debug for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(Self).map_err(|_| {
            format!("{s:?} is not a socket address (write IP:port, e.g. 127.0.0.1:8000)")
        })
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<Self>::new(
            "a socket address such as \"127.0.0.1:8000\"",
        ))
    }
}

/// A span of time, written `"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"1d"`, or a bare integer of seconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A whole number of seconds.
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A whole number of milliseconds.
    pub const fn millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a duration (write e.g. \"500ms\", \"10s\", \"5m\", \"2h\")");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let ms_per_unit: u64 = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        n.checked_mul(ms_per_unit)
            .map(|ms| Self(Duration::from_millis(ms)))
            .ok_or_else(bad)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<Self>::new(
            "a duration such as \"10s\" or \"500ms\"",
        ))
    }
}

/// A number of bytes, written `"512MiB"`, `"2 GiB"`, `"64KB"` or a bare integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a size in bytes (write e.g. \"512MiB\", \"2GiB\", \"65536\")");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(bad()),
        };
        n.checked_mul(multiplier).map(Self).ok_or_else(bad)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<Self>::new("a size such as \"512MiB\""))
    }
}

/// A credential. Its `Debug` and serialized forms never show the value, so a logged or printed
/// config cannot leak it; call [`Secret::expose`] at the one place that needs it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The credential itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no credential was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A database URL. It is configuration, so it is written out as given, but its `Debug` form
/// (what logs and panics show) hides a password: `postgres://app:<redacted>@db/cascade`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The URL itself, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = self.0.split_once("://").and_then(|(scheme, rest)| {
            let authority = rest.split('/').next()?;
            let (userinfo, host) = authority.rsplit_once('@')?;
            let (user, _password) = userinfo.split_once(':')?;
            let path = &rest[authority.len()..];
            Some(format!("{scheme}://{user}:<redacted>@{host}{path}"))
        });
        write!(f, "DatabaseUrl({:?})", hidden.as_deref().unwrap_or(&self.0))
    }
}

/// Accepts a string (parsed with `FromStr`) or, for numeric types, an integer given as its
/// decimal spelling, so `shutdown_grace = 10` and `shutdown_grace = "10s"` both work.
struct FromStrVisitor<T> {
    expecting: &'static str,
    _marker: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _marker: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }
}

/// A bandwidth, written `"10Gbps"`, `"500Mbps"`, `"1.5Gbps"`, `"800kbps"`, or a bare integer of
/// bits per second.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BitRate(pub u64);

impl fmt::Debug for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1_000_000_000_000, "Tbps"),
            (1_000_000_000, "Gbps"),
            (1_000_000, "Mbps"),
            (1_000, "kbps"),
        ];
        for (size, unit) in units {
            if self.0 >= size && self.0.is_multiple_of(size / 1000) {
                let whole = self.0 / size;
                let thousandths = (self.0 % size) / (size / 1000);
                return if thousandths == 0 {
                    write!(f, "{whole}{unit}")
                } else {
                    let frac = format!("{thousandths:03}");
                    write!(f, "{whole}.{}{unit}", frac.trim_end_matches('0'))
                };
            }
        }
        write!(f, "{}bps", self.0)
    }
}

impl FromStr for BitRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a bandwidth (write e.g. \"10Gbps\", \"500Mbps\" or \"1.5Gbps\")")
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let per_unit: u64 = match unit.trim() {
            "" | "bps" => 1,
            "kbps" | "Kbps" => 1_000,
            "Mbps" => 1_000_000,
            "Gbps" => 1_000_000_000,
            "Tbps" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let thousandths: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(per_unit)
            .and_then(|w| w.checked_add(thousandths * per_unit / 1000))
            .filter(|_| per_unit >= 1000 || thousandths == 0)
            .map(Self)
            .ok_or_else(bad)
    }
}

impl Serialize for BitRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BitRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<Self>::new(
            "a bandwidth such as \"10Gbps\"",
        ))
    }
}

/// A network, written `"10.0.0.0/8"` or `"2001:db8::/32"` (a bare address is one host).
/// IPv4-mapped IPv6 addresses match the IPv4 networks.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network address (host bits cleared).
    pub fn network(&self) -> std::net::IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (std::net::IpAddr::V4(net), std::net::IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (std::net::IpAddr::V6(net), std::net::IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (t, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not a network (write e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
        })?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        let network = match addr {
            std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
            std::net::IpAddr::V6(v6) => {
                std::net::IpAddr::V6(mask_v6(u128::from(v6), prefix).into())
            }
        };
        Ok(Self { network, prefix })
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<Self>::new(
            "a network such as \"10.0.0.0/8\"",
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bit_rates_read_as_operators_write_them() {
        for (text, bits) in [
            ("10Gbps", 10_000_000_000),
            ("500Mbps", 500_000_000),
            ("1.5Gbps", 1_500_000_000),
            ("800kbps", 800_000),
            ("1200", 1200),
        ] {
            let rate: BitRate = text.parse().expect(text);
            assert_eq!(rate.0, bits, "{text}");
            assert_eq!(
                rate.to_string().parse::<BitRate>(),
                Ok(rate),
                "{text} round trip"
            );
        }
        for bad in [
            "",
            "fast",
            "10GB",
            "1.2345Gbps",
            "1.5bps",
            ".5Gbps",
            "99999999999Tbps",
        ] {
            assert!(bad.parse::<BitRate>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn networks_match_their_addresses_only() {
        let net: Cidr = "10.1.0.0/16".parse().expect("v4");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("mapped")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!v6.contains("10.1.0.1".parse().expect("ip")));
        let host: Cidr = "192.0.2.7".parse().expect("host");
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .expect("any")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "2001:db8::/129",
            "net",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
    }

    use super::*;

    #[test]
    fn debug_hides_only_the_password() {
        let url = DatabaseUrl::new("postgres://app:s3cr3t@db:5432/cascade?sslmode=require");
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(
            shown,
            "DatabaseUrl(\"postgres://app:<redacted>@db:5432/cascade?sslmode=require\")"
        );
        assert_eq!(
            url.expose(),
            "postgres://app:s3cr3t@db:5432/cascade?sslmode=require"
        );
        let file = DatabaseUrl::new("sqlite://data/origin/registry.db");
        assert_eq!(
            format!("{file:?}"),
            "DatabaseUrl(\"sqlite://data/origin/registry.db\")"
        );
    }

    #[test]
    fn durations_parse_in_every_unit() {
        let cases = [
            ("250ms", 250),
            ("10s", 10_000),
            ("10", 10_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
        ];
        for (text, ms) in cases {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap().0,
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in ["", "ten", "10 parsecs", "-1s", "1.5s"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration::secs(30).to_string(), "30s");
    }

    #[test]
    fn byte_sizes_parse_decimal_and_binary_units() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("2 GiB".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert_eq!("64KB".parse::<ByteSize>().unwrap().0, 64_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("lots".parse::<ByteSize>().is_err());
        assert!(
            "99999999999TiB".parse::<ByteSize>().is_err(),
            "overflow must be refused"
        );
        assert_eq!(ByteSize(512 << 20).to_string(), "512MiB");
    }

    #[test]
    fn listen_addr_error_says_what_to_write() {
        let err = "abc".parse::<ListenAddr>().unwrap_err();
        assert_eq!(
            err,
            "\"abc\" is not a socket address (write IP:port, e.g. 127.0.0.1:8000)"
        );
        assert_eq!("[::1]:8443".parse::<ListenAddr>().unwrap().0.port(), 8443);
    }

    #[test]
    fn secrets_never_show_in_debug_or_serialized_form() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(
            !toml::to_string(&std::collections::BTreeMap::from([("k", s.clone())]))
                .unwrap()
                .contains("hunter2")
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
