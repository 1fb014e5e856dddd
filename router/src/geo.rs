//! Points on the Earth and the great-circle distance between them.

use serde::Serialize;

/// A point, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coordinates {
    /// North positive.
    pub latitude: f64,
    /// East positive.
    pub longitude: f64,
}

/// Mean Earth radius (IUGG), in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

impl Coordinates {
    /// Great-circle distance to `other` in kilometres (haversine).
    pub fn distance_km(&self, other: &Coordinates) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Coordinates {
        Coordinates {
            latitude,
            longitude,
        }
    }

    #[test]
    fn distances_match_known_city_pairs() {
        let amsterdam = at(52.3676, 4.9041);
        let frankfurt = at(50.1109, 8.6821);
        let new_york = at(40.7128, -74.0060);
        let sydney = at(-33.8688, 151.2093);
        let within = |d: f64, expected: f64| (d - expected).abs() < expected * 0.01;
        assert!(within(amsterdam.distance_km(&frankfurt), 364.0));
        assert!(within(amsterdam.distance_km(&new_york), 5863.0));
        assert!(within(new_york.distance_km(&sydney), 15_989.0));
        assert_eq!(amsterdam.distance_km(&amsterdam), 0.0);
        assert_eq!(
            amsterdam.distance_km(&frankfurt),
            frankfurt.distance_km(&amsterdam)
        );
    }

    #[test]
    fn the_antimeridian_is_crossed_the_short_way() {
        let fiji = at(-17.7, 178.0);
        let samoa = at(-13.8, -172.0);
        assert!(fiji.distance_km(&samoa) < 1300.0);
        let antipode = at(0.0, 0.0).distance_km(&at(0.0, 180.0));
        assert!((antipode - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0);
    }
}
