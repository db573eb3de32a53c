//! `context.location` from `context.ip` with a MaxMind-format database (GeoIP2 / GeoLite2 City or
//! Country, DB-IP's free MMDB files): `country`, `region` (the largest subdivision), `city`,
//! `latitude`, `longitude`, English names. Keys the client already set are kept.

use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::net::IpAddr;
use std::path::Path;

use crate::Step;

/// An opened database, read whole into memory (lookups never touch the disk).
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the geo database {path}: {source}")]
pub struct GeoOpenError {
    pub path: String,
    #[source]
    pub source: maxminddb::MaxMindDbError,
}

/// What a lookup found for one address.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Location {
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, GeoOpenError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoOpenError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(GeoDb { reader })
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, maxminddb::MaxMindDbError> {
        Ok(GeoDb {
            reader: maxminddb::Reader::from_source(bytes)?,
        })
    }

    /// `database_type` from the file's metadata (`GeoLite2-City`, …), for the start-up log.
    pub fn kind(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// `None` when the address is not in the database (or its record is not City-shaped).
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let found = self.reader.lookup(ip).ok()?;
        let rec: Record<'_> = found.decode().ok().flatten()?;
        let en = |n: Named<'_>| n.names.en.map(String::from);
        let loc = Location {
            country: en(rec.country),
            region: rec.subdivisions.into_iter().next().and_then(en),
            city: en(rec.city),
            latitude: rec.location.latitude,
            longitude: rec.location.longitude,
        };
        (loc != Location::default()).then_some(loc)
    }
}

/// The part of a GeoIP2 City record used here; the decoder skips the rest (other languages,
/// postal codes, confidence scores), which keeps a lookup cheap.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    city: Named<'a>,
    #[serde(borrow, default)]
    country: Named<'a>,
    #[serde(borrow, default)]
    subdivisions: Vec<Named<'a>>,
    #[serde(default)]
    location: Coordinates,
}

#[derive(Deserialize, Default)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: English<'a>,
}

#[derive(Deserialize, Default)]
struct English<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct Coordinates {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

/// Looks `context.ip` up and fills `context.location`'s missing keys.
pub fn enrich(db: &GeoDb, map: &mut Map<String, Value>) -> Step {
    let Some(Value::Object(context)) = map.get_mut("context") else {
        return Step::Skipped;
    };
    let Some(ip) = context.get("ip").and_then(Value::as_str) else {
        return Step::Skipped;
    };
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return Step::Failed;
    };
    let Some(found) = db.lookup(ip) else {
        return Step::Skipped;
    };
    let location = context
        .entry("location")
        .or_insert_with(|| Value::Object(Map::new()));
    if location.is_null() {
        *location = Value::Object(Map::new());
    }
    let Value::Object(location) = location else {
        return Step::Skipped; // a client value of another shape is left as it is
    };
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            location.entry(key).or_insert(v);
        }
    };
    put("country", found.country.map(Value::String));
    put("region", found.region.map(Value::String));
    put("city", found.city.map(Value::String));
    put(
        "latitude",
        found.latitude.and_then(Number::from_f64).map(Value::Number),
    );
    put(
        "longitude",
        found
            .longitude
            .and_then(Number::from_f64)
            .map(Value::Number),
    );
    Step::Applied
}
