//! A small MaxMind-format City database for tests, written with `maxminddb-writer` the same way
//! MaxMind lays GeoIP2-City records out (English names under `names.en`).

use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use maxminddb_writer::Database;
use serde_json::json;

/// 203.0.113.0/24 → Amsterdam, North Holland, Netherlands; 2001:db8::/32 → Berlin, Germany.
pub fn bytes() -> Vec<u8> {
    let mut db = Database::default();
    db.metadata.ip_version = IpVersion::V6;
    db.metadata.database_type = "Test-City".into();
    db.metadata.languages = vec!["en".into()];
    db.metadata.binary_format_major_version = 2;
    let amsterdam = db
        .insert_value(json!({
            "city": {"names": {"en": "Amsterdam"}},
            "country": {"iso_code": "NL", "names": {"en": "Netherlands"}},
            "subdivisions": [{"iso_code": "NH", "names": {"en": "North Holland"}}],
            "location": {"latitude": 52.3759, "longitude": 4.8975, "time_zone": "Europe/Amsterdam"}
        }))
        .expect("record");
    let berlin = db
        .insert_value(json!({
            "city": {"names": {"en": "Berlin"}},
            "country": {"iso_code": "DE", "names": {"en": "Germany"}}
        }))
        .expect("record");
    // IPv4 lives under ::/96 in an IPv6 tree, as in MaxMind's own files.
    db.insert_node(
        "::203.0.113.0/120".parse::<IpAddrWithMask>().expect("net"),
        amsterdam,
    );
    db.insert_node(
        "2001:db8::/32".parse::<IpAddrWithMask>().expect("net"),
        berlin,
    );
    db.write_to(Vec::new()).expect("database written")
}
