//! The router's use of the GeoIP database (`cascade-geoip`): an address's coordinates and the
//! name of its place, for [`crate::locate`].

use std::net::IpAddr;

pub use cascade_geoip::GeoDatabase;

use crate::geo::Coordinates;
use crate::locate::GeoLookup;

impl GeoLookup for GeoDatabase {
    fn locate(&self, ip: IpAddr) -> Option<(Coordinates, Option<String>)> {
        let place = self.lookup(ip)?;
        let (latitude, longitude) = place.coordinates?;
        Some((
            Coordinates {
                latitude,
                longitude,
            },
            place.city.or(place.country_name),
        ))
    }
}
