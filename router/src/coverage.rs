//! Coverage zones: client networks an operator assigns to a PoP by hand, which win over
//! GeoIP. The file holds one `CIDR pop-id` per line; `#` starts a comment. The longest
//! matching prefix wins, for IPv4 and IPv6 alike.

use std::collections::HashMap;
use std::net::IpAddr;

use cascade_config::Cidr;

/// The networks of one address family and prefix length, by their masked bits.
#[derive(Debug, Clone)]
struct PrefixTable {
    prefix: u8,
    v4: bool,
    networks: HashMap<u128, (Cidr, String)>,
}

/// The parsed coverage-zone file.
#[derive(Debug, Default, Clone)]
pub struct CoverageZones {
    /// Longest prefixes first, so the first match is the longest.
    tables: Vec<PrefixTable>,
    entries: usize,
}

/// Why a coverage-zone file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CoverageError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

fn key(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

fn masked(bits: u128, v4: bool, prefix: u8) -> u128 {
    let width = if v4 { 32 } else { 128 };
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX >> (128 - width))
            & !((1u128 << (width - u32::from(prefix))).wrapping_sub(1))
    }
}

impl CoverageZones {
    /// Parses the file's text. `known_pop` says whether a PoP id exists; unknown ids are errors.
    pub fn parse(text: &str, known_pop: impl Fn(&str) -> bool) -> Result<Self, CoverageError> {
        let mut zones = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let error = |message: String| CoverageError {
                line: i + 1,
                message,
            };
            let mut words = line.split_whitespace();
            let (Some(network), Some(pop), None) = (words.next(), words.next(), words.next())
            else {
                return Err(error(format!(
                    "{line:?} is not `CIDR pop-id` (e.g. `10.1.0.0/16 ams`)"
                )));
            };
            let cidr: Cidr = network.parse().map_err(error)?;
            if !known_pop(pop) {
                return Err(error(format!(
                    "{pop:?} is not the id of any [[router.pops]]"
                )));
            }
            zones.insert(cidr, pop).map_err(error)?;
        }
        Ok(zones)
    }

    fn insert(&mut self, cidr: Cidr, pop: &str) -> Result<(), String> {
        let (v4, bits) = key(cidr.network());
        let prefix = cidr.prefix();
        let at = match self
            .tables
            .iter()
            .position(|t| t.prefix == prefix && t.v4 == v4)
        {
            Some(at) => at,
            None => {
                // Keep the tables longest first.
                let at = self.tables.partition_point(|t| t.prefix > prefix);
                self.tables.insert(
                    at,
                    PrefixTable {
                        prefix,
                        v4,
                        networks: HashMap::new(),
                    },
                );
                at
            }
        };
        let networks = &mut self.tables[at].networks;
        if let Some((_, earlier)) = networks.get(&bits) {
            return Err(format!("{cidr} is already assigned to {earlier:?}"));
        }
        networks.insert(bits, (cidr, pop.to_owned()));
        self.entries += 1;
        Ok(())
    }

    /// The PoP whose longest network contains `ip`, with that network.
    pub fn lookup(&self, ip: IpAddr) -> Option<(&Cidr, &str)> {
        let (v4, bits) = key(ip);
        self.tables
            .iter()
            .filter(|t| t.v4 == v4)
            .find_map(|t| t.networks.get(&masked(bits, v4, t.prefix)))
            .map(|(cidr, pop)| (cidr, pop.as_str()))
    }

    /// How many networks the file assigns.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the file assigns nothing.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    const FILE: &str = "# operator's overrides\n\
        10.0.0.0/8      fra\n\
        10.1.0.0/16     ams   # a more specific net\n\
        10.1.2.3        nyc\n\
        2001:db8::/32   fra\n\
        2001:db8:aa::/48 ams\n\
        \n";

    fn zones() -> CoverageZones {
        CoverageZones::parse(FILE, |p| ["ams", "fra", "nyc"].contains(&p)).expect("parses")
    }

    #[test]
    fn the_longest_prefix_wins() {
        let zones = zones();
        assert_eq!(zones.len(), 5);
        let pop = |s| zones.lookup(ip(s)).map(|(_, pop)| pop);
        assert_eq!(pop("10.9.9.9"), Some("fra"));
        assert_eq!(pop("10.1.7.7"), Some("ams"));
        assert_eq!(pop("10.1.2.3"), Some("nyc"));
        assert_eq!(pop("::ffff:10.1.7.7"), Some("ams"));
        assert_eq!(pop("2001:db8:1::1"), Some("fra"));
        assert_eq!(pop("2001:db8:aa::1"), Some("ams"));
        assert_eq!(pop("192.0.2.1"), None);
        assert_eq!(pop("2001:db9::1"), None);
        let (net, _) = zones.lookup(ip("10.1.7.7")).expect("match");
        assert_eq!(net.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn a_default_route_catches_everything_of_its_family() {
        let zones = CoverageZones::parse("0.0.0.0/0 a\n", |_| true).expect("parses");
        assert!(zones.lookup(ip("203.0.113.9")).is_some());
        assert!(zones.lookup(ip("2001:db8::1")).is_none());
    }

    #[test]
    fn mistakes_name_their_line() {
        let known = |p: &str| p == "ams";
        let err = |text: &str| CoverageZones::parse(text, known).expect_err(text);
        assert_eq!(err("10.0.0.0/8 ams\n10.0.0.0/33 ams\n").line, 2);
        assert!(err("10.0.0.0/8 mars\n").message.contains("\"mars\""));
        assert!(err("10.0.0.0/8\n").message.contains("CIDR pop-id"));
        assert!(
            err("10.0.0.0/8 ams extra\n")
                .message
                .contains("CIDR pop-id")
        );
        assert!(
            err("10.0.0.0/8 ams\n10.0.0.0/8 ams\n")
                .message
                .contains("already")
        );
    }
}
