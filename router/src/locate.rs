//! Where a viewer is: the coverage-zone file first, then the GeoIP database, then the
//! default PoP.

use std::net::IpAddr;

use crate::choose::Located;
use crate::coverage::CoverageZones;
use crate::geo::Coordinates;

/// A source of coordinates for an address (the GeoIP database).
pub trait GeoLookup: Send + Sync {
    /// Where `ip` is, and the place's name when known; `None` when the source has no answer.
    fn locate(&self, ip: IpAddr) -> Option<(Coordinates, Option<String>)>;
}

/// Locates `ip` by trying each source in turn. `pop_index` maps a PoP id to its index.
pub fn locate(
    ip: IpAddr,
    zones: &CoverageZones,
    geo: Option<&dyn GeoLookup>,
    pop_index: impl Fn(&str) -> Option<usize>,
) -> Located {
    if let Some((network, pop)) = zones.lookup(ip)
        && let Some(pop) = pop_index(pop)
    {
        return Located::Zone {
            pop,
            network: *network,
        };
    }
    if let Some((at, place)) = geo.and_then(|g| g.locate(ip)) {
        return Located::Geo { at, place };
    }
    Located::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneCity;

    impl GeoLookup for OneCity {
        fn locate(&self, ip: IpAddr) -> Option<(Coordinates, Option<String>)> {
            let paris = Coordinates {
                latitude: 48.86,
                longitude: 2.35,
            };
            (ip.to_string().starts_with("192.0.2.")).then(|| (paris, Some("Paris".into())))
        }
    }

    #[test]
    fn zones_then_geoip_then_the_default() {
        let zones = CoverageZones::parse("192.0.2.128/25 nyc\n", |_| true).expect("zones");
        let index = |id: &str| (id == "nyc").then_some(2);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(matches!(
            locate(ip("192.0.2.200"), &zones, Some(&OneCity), index),
            Located::Zone { pop: 2, .. }
        ));
        assert!(matches!(
            locate(ip("192.0.2.1"), &zones, Some(&OneCity), index),
            Located::Geo { place: Some(ref p), .. } if p == "Paris"
        ));
        assert_eq!(
            locate(ip("198.51.100.1"), &zones, Some(&OneCity), index),
            Located::Unknown
        );
        assert_eq!(
            locate(ip("192.0.2.1"), &zones, None, index),
            Located::Unknown
        );
    }
}
