//! Corrected time (segment-spec §1.9): the client's `timestamp` becomes `originalTimestamp`, and
//! `timestamp = receivedAt − (sentAt − originalTimestamp)`, so a client clock hours off still
//! yields the moment the event happened by the server's clock.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// ISO-8601 UTC with milliseconds, the one shape every timestamp leaves this stage in.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 / ISO-8601 with an offset, or without one (read as UTC, as browsers' `toISOString`
/// always sends UTC anyway). Numbers and other shapes are not timestamps.
pub fn parse(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// Whether a field was there but could not be read as a time (it is then treated as absent).
fn read(map: &Map<String, Value>, field: &str, unreadable: &mut bool) -> Option<DateTime<Utc>> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => {
            let t = parse(v);
            *unreadable |= t.is_none();
            t
        }
    }
}

/// Sets `originalTimestamp`, `timestamp`, `sentAt` and `receivedAt`. `received_fallback` is the
/// collector's `cdp-received-at` header, used when the payload lacks `receivedAt`; `now` when
/// both lack it. Returns false when a client field was present but unreadable (counted as a parse
/// failure; the field is then treated as missing, per the documented fallbacks).
pub fn correct(
    map: &mut Map<String, Value>,
    received_fallback: Option<&str>,
    now: DateTime<Utc>,
) -> bool {
    let mut unreadable = false;
    let received = read(map, "receivedAt", &mut unreadable)
        .or_else(|| received_fallback.and_then(|h| parse(&Value::String(h.into()))))
        .unwrap_or(now);
    // A client's `timestamp` is relabelled; an `originalTimestamp` alone (a replay of an already
    // corrected event, or a library that sends it) is kept.
    let original = match map.get("timestamp") {
        Some(v) if !v.is_null() => read(map, "timestamp", &mut unreadable),
        _ => read(map, "originalTimestamp", &mut unreadable),
    };
    let sent = read(map, "sentAt", &mut unreadable);
    let timestamp = match (original, sent) {
        (Some(o), Some(s)) => received - (s - o),
        // Missing sentAt: treated as receivedAt, so the client's time stands uncorrected.
        (Some(o), None) => o,
        (None, _) => received,
    };
    let original = original.unwrap_or(received);
    map.insert("originalTimestamp".into(), Value::String(format(original)));
    map.insert("timestamp".into(), Value::String(format(timestamp)));
    map.insert("receivedAt".into(), Value::String(format(received)));
    if let Some(s) = sent {
        map.insert("sentAt".into(), Value::String(format(s)));
    }
    !unreadable
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse(&json!("2026-12-03T10:00:00Z")).unwrap()
    }

    fn corrected(v: Value) -> (Map<String, Value>, bool) {
        let mut m = v.as_object().unwrap().clone();
        let ok = correct(&mut m, None, now());
        (m, ok)
    }

    #[test]
    fn a_client_clock_hours_behind_still_yields_the_server_time_of_the_event() {
        // The phone thinks it is 07:00; it recorded the event 5 s before sending.
        let (m, ok) = corrected(json!({
            "timestamp": "2026-12-03T06:59:55.000Z",
            "sentAt": "2026-12-03T07:00:00.000Z",
            "receivedAt": "2026-12-03T10:00:00.250Z"}));
        assert!(ok);
        assert_eq!(m["originalTimestamp"], "2026-12-03T06:59:55.000Z");
        assert_eq!(m["timestamp"], "2026-12-03T09:59:55.250Z");
        assert_eq!(m["receivedAt"], "2026-12-03T10:00:00.250Z");
    }

    #[test]
    fn offsets_and_missing_milliseconds_are_normalised_to_utc_millis() {
        let (m, _) = corrected(json!({
            "timestamp": "2026-12-03T12:59:55+03:00",
            "sentAt": "2026-12-03T13:00:00+03:00",
            "receivedAt": "2026-12-03T10:00:00Z"}));
        assert_eq!(m["originalTimestamp"], "2026-12-03T09:59:55.000Z");
        assert_eq!(m["sentAt"], "2026-12-03T10:00:00.000Z");
        assert_eq!(m["timestamp"], "2026-12-03T09:59:55.000Z");
    }

    #[test]
    fn a_missing_sent_at_leaves_the_client_time_uncorrected() {
        let (m, ok) = corrected(json!({
            "timestamp": "2026-12-03T09:00:00.123Z",
            "receivedAt": "2026-12-03T10:00:00.000Z"}));
        assert!(ok);
        assert_eq!(m["timestamp"], "2026-12-03T09:00:00.123Z");
        assert_eq!(m["originalTimestamp"], "2026-12-03T09:00:00.123Z");
        assert!(m.get("sentAt").is_none());
    }

    #[test]
    fn a_missing_client_timestamp_falls_back_to_received_at() {
        let (m, ok) = corrected(json!({
            "sentAt": "2026-12-03T07:00:00.000Z",
            "receivedAt": "2026-12-03T10:00:00.500Z"}));
        assert!(ok);
        assert_eq!(m["timestamp"], "2026-12-03T10:00:00.500Z");
        assert_eq!(m["originalTimestamp"], "2026-12-03T10:00:00.500Z");
    }

    #[test]
    fn received_at_comes_from_the_header_and_then_the_clock() {
        let mut m = Map::new();
        assert!(correct(&mut m, Some("2026-12-03T08:00:00.000Z"), now()));
        assert_eq!(m["receivedAt"], "2026-12-03T08:00:00.000Z");
        let mut m = Map::new();
        assert!(correct(&mut m, None, now()));
        assert_eq!(m["receivedAt"], "2026-12-03T10:00:00.000Z");
        assert_eq!(m["timestamp"], "2026-12-03T10:00:00.000Z");
    }

    #[test]
    fn an_existing_original_timestamp_is_kept_when_there_is_no_client_timestamp() {
        let (m, _) = corrected(json!({
            "originalTimestamp": "2026-12-03T09:59:00Z",
            "sentAt": "2026-12-03T09:59:30Z",
            "receivedAt": "2026-12-03T10:00:00Z"}));
        assert_eq!(m["originalTimestamp"], "2026-12-03T09:59:00.000Z");
        assert_eq!(m["timestamp"], "2026-12-03T09:59:30.000Z");
    }

    #[test]
    fn an_unreadable_timestamp_is_reported_and_treated_as_missing() {
        let (m, ok) = corrected(json!({
            "timestamp": "yesterday",
            "sentAt": 1733212800,
            "receivedAt": "2026-12-03T10:00:00Z"}));
        assert!(!ok);
        assert_eq!(m["timestamp"], "2026-12-03T10:00:00.000Z");
        assert_eq!(m["originalTimestamp"], "2026-12-03T10:00:00.000Z");
        assert_eq!(m["sentAt"], 1733212800, "left as the client sent it");
    }
}
