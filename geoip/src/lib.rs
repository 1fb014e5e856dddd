//! The MaxMind GeoIP2 / GeoLite2 City database: read at start (a missing or corrupt file is a
//! clear error) and re-read when the file changes. A replacement that does not read keeps the
//! last good database serving, with an error for the log. The router places viewers with it;
//! edges name their location in analytics records.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use maxminddb::Reader;
use serde::Deserialize;

/// Where an address is, as far as the database knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// Latitude and longitude, degrees, when known and in range.
    pub coordinates: Option<(f64, f64)>,
    /// The city's English name.
    pub city: Option<String>,
    /// The country's ISO 3166-1 code.
    pub country: Option<String>,
    /// The country's English name.
    pub country_name: Option<String>,
}

impl Place {
    /// `country/city`, `country`, or the city alone: a short label for records.
    pub fn label(&self) -> Option<String> {
        match (&self.country, &self.city) {
            (Some(c), Some(city)) => Some(format!("{c}/{city}")),
            (Some(c), None) => Some(c.clone()),
            (None, Some(city)) => Some(city.clone()),
            (None, None) => None,
        }
    }
}

#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    city: Option<Named<'a>>,
    #[serde(borrow, default)]
    country: Option<Named<'a>>,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

type Stamp = (Option<SystemTime>, u64);

/// The database, swapped whole on reload.
pub struct GeoDatabase {
    path: PathBuf,
    current: RwLock<Arc<Reader<Vec<u8>>>>,
    /// The file's modification time and size when last read, good or not.
    seen: std::sync::Mutex<Stamp>,
}

fn stamp(path: &Path) -> Result<Stamp, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((meta.modified().ok(), meta.len()))
}

fn load(path: &Path) -> Result<Reader<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = Reader::from_source(bytes)
        .map_err(|e| format!("{}: not a MaxMind database: {e}", path.display()))?;
    reader
        .verify()
        .map_err(|e| format!("{}: the database is corrupt: {e}", path.display()))?;
    Ok(reader)
}

impl GeoDatabase {
    /// Reads and checks the database at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let seen = stamp(path)?;
        let reader = load(path)?;
        let kind = &reader.metadata().database_type;
        if !kind.contains("City") {
            tracing::warn!(database_type = %kind, "the GeoIP database is not a City database: addresses have no coordinates or city");
        }
        Ok(Self {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(reader)),
            seen: std::sync::Mutex::new(seen),
        })
    }

    fn current(&self) -> Arc<Reader<Vec<u8>>> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the file if it changed. `Ok(true)`: a new database serves. `Err`: the file
    /// changed but does not read; the previous database keeps serving.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.path)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Ok(false);
            }
            // Remembered even if the file does not read, so a bad file is reported once.
            *seen = now;
        }
        let reader = load(&self.path)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(reader);
        Ok(true)
    }
}

impl GeoDatabase {
    /// What the database says about `ip`; `None` when it has no entry.
    pub fn lookup(&self, ip: IpAddr) -> Option<Place> {
        let db = self.current();
        let found = db.lookup(ip).ok()?;
        let record: CityRecord<'_> = found.decode().ok()??;
        let coordinates = record
            .location
            .and_then(|l| Some((l.latitude?, l.longitude?)))
            .filter(|(lat, lon)| (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon));
        let name = |n: &Option<Named<'_>>| {
            n.as_ref()
                .and_then(|n| n.names.as_ref())
                .and_then(|n| n.en)
                .map(str::to_owned)
        };
        Some(Place {
            coordinates,
            city: name(&record.city),
            country: record
                .country
                .as_ref()
                .and_then(|c| c.iso_code)
                .map(str::to_owned),
            country_name: name(&record.country),
        })
    }
}
