//! The whole chain on the brief's events and on fixtures: geo from a test MaxMind database,
//! suppression, dedupe, privacy after geo, poison records.
#![allow(clippy::unwrap_used)]

mod support {
    pub mod geodb;
}

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

use cdp_enrich::{geo, Chain, Dedupe, Enricher, GeoDb, Input, Outcome, State};

const BRIEF_EVENTS: &str = include_str!("../../../tests/fixtures/brief/brief-events.json");
const USER_AGENTS: &str = include_str!("fixtures/user-agents.json");

fn now() -> DateTime<Utc> {
    "2026-12-03T10:00:00Z".parse().unwrap()
}

fn geo_db() -> Arc<GeoDb> {
    Arc::new(GeoDb::from_bytes(support::geodb::bytes()).unwrap())
}

fn workspace(yaml: &str) -> cdp_workspace::Workspace {
    cdp_workspace::parse(yaml, &|_| None).unwrap().workspace
}

const WORKSPACE: &str = r#"
sources:
  - {id: web, write_key: k1}
  - {id: app, write_key: k2}
enrichment:
  web: {ip: truncate, hash_fields: [traits.email], drop_fields: [context.app]}
suppressed_users: [usr_forget_me, "42"]
"#;

fn enrich(chain: &Chain, state: &mut State, source: &str, event: &Value) -> Outcome {
    let payload = serde_json::to_vec(event).unwrap();
    chain.enrich(
        &Input {
            payload: &payload,
            source,
            partition: 0,
            received_at: Some("2026-12-03T10:00:00.000Z"),
        },
        state,
        now(),
    )
}

fn forwarded(o: Outcome) -> Value {
    match o {
        Outcome::Forward { payload, .. } => serde_json::from_slice(&payload).unwrap(),
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn an_ip_in_the_test_database_gets_its_country_region_and_city() {
    let db = geo_db();
    let loc = db.lookup("203.0.113.7".parse().unwrap()).unwrap();
    assert_eq!(loc.country.as_deref(), Some("Netherlands"));
    assert_eq!(loc.region.as_deref(), Some("North Holland"));
    assert_eq!(loc.city.as_deref(), Some("Amsterdam"));
    assert!(db.lookup("198.51.100.1".parse().unwrap()).is_none());

    let mut m = json!({"context": {"ip": "2001:db8::1", "location": {"city": "Client City"}}})
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(geo::enrich(&db, &mut m), cdp_enrich::Step::Applied);
    assert_eq!(
        m["context"]["location"],
        json!({"city": "Client City", "country": "Germany"}),
        "client keys win, missing ones are filled"
    );
}

#[test]
fn the_brief_events_come_out_with_time_campaign_agent_and_geo() {
    let chain = Chain::new(&workspace(WORKSPACE), Some(geo_db()));
    let events: Vec<Value> = serde_json::from_str(BRIEF_EVENTS).unwrap();
    let out: Vec<Value> = events
        .iter()
        .map(|e| forwarded(enrich(&chain, &mut State::new(None), "app", e)))
        .collect();
    for e in &out {
        assert_eq!(e["receivedAt"], "2026-12-03T10:00:00.000Z");
        assert_eq!(e["timestamp"], "2026-12-03T10:00:00.000Z");
        assert_eq!(e["originalTimestamp"], "2026-12-03T10:00:00.000Z");
    }
    let page = &out[0]["context"];
    assert_eq!(
        page["campaign"],
        json!({"source": "news", "medium": "email", "name": "winter"})
    );
    assert_eq!(page["userAgentParsed"]["browser"]["name"], "Chrome");
    assert_eq!(page["os"]["name"], "Windows 10");
    let sub = &out[4]["context"];
    assert_eq!(sub["ip"], "203.0.113.7", "app keeps the ip");
    assert_eq!(
        sub["location"],
        json!({"country": "Netherlands", "region": "North Holland", "city": "Amsterdam",
               "latitude": 52.3759, "longitude": 4.8975})
    );
}

#[test]
fn privacy_runs_after_geo_and_only_for_its_source() {
    let chain = Chain::new(&workspace(WORKSPACE), Some(geo_db()));
    let events: Vec<Value> = serde_json::from_str(BRIEF_EVENTS).unwrap();
    let sub = forwarded(enrich(&chain, &mut State::new(None), "web", &events[4]));
    assert_eq!(sub["context"]["ip"], "203.0.113.0");
    assert_eq!(sub["context"]["location"]["city"], "Amsterdam");
    let identify = forwarded(enrich(&chain, &mut State::new(None), "web", &events[2]));
    assert_eq!(
        identify["traits"]["email"],
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
    );
    let page = forwarded(enrich(&chain, &mut State::new(None), "web", &events[0]));
    assert!(page["context"].get("app").is_none());
    let identify = forwarded(enrich(&chain, &mut State::new(None), "app", &events[2]));
    assert_eq!(identify["traits"]["email"], "user@example.com");
}

#[test]
fn suppressed_users_are_dropped_by_string_or_numeric_id() {
    let chain = Chain::new(&workspace(WORKSPACE), None);
    let e = json!({"type": "track", "event": "x", "userId": "usr_forget_me"});
    assert_eq!(
        enrich(&chain, &mut State::new(None), "web", &e),
        Outcome::Suppressed
    );
    let e = json!({"type": "track", "event": "x", "userId": 42});
    assert_eq!(
        enrich(&chain, &mut State::new(None), "web", &e),
        Outcome::Suppressed
    );
    let e = json!({"type": "track", "event": "x", "userId": "usr_12345"});
    forwarded(enrich(&chain, &mut State::new(None), "web", &e));
}

#[test]
fn a_second_message_id_is_a_duplicate_and_the_first_goes_on() {
    let chain = Chain::new(&workspace(WORKSPACE), None);
    let mut dedupe = State::new(Some(Dedupe::new(86_400, 1000)));
    let e = json!({"type": "track", "event": "x", "userId": "u", "messageId": "m-1"});
    forwarded(enrich(&chain, &mut dedupe, "web", &e));
    assert_eq!(enrich(&chain, &mut dedupe, "web", &e), Outcome::Duplicate);
    let other = json!({"type": "track", "event": "x", "userId": "u", "messageId": "m-2"});
    forwarded(enrich(&chain, &mut dedupe, "web", &other));
}

#[test]
fn records_that_are_not_segment_messages_are_poison() {
    let chain = Chain::default();
    let input = |payload: &'static [u8]| Input {
        payload,
        source: "web",
        partition: 0,
        received_at: None,
    };
    assert!(matches!(
        chain.enrich(&input(b"{oops"), &mut State::new(None), now()),
        Outcome::Poison {
            code: "not_json",
            ..
        }
    ));
    assert!(matches!(
        chain.enrich(&input(b"[1,2]"), &mut State::new(None), now()),
        Outcome::Poison {
            code: "not_an_object",
            ..
        }
    ));
}

#[test]
fn unreadable_inputs_are_reported_per_enricher() {
    let chain = Chain::new(&workspace(WORKSPACE), Some(geo_db()));
    let e = json!({"type": "track", "event": "x", "userId": "u", "timestamp": "soon",
                   "context": {"ip": "999.1.1.1", "userAgent": "???"}});
    let Outcome::Forward { failures, .. } = enrich(&chain, &mut State::new(None), "web", &e) else {
        panic!("forwarded")
    };
    let names: Vec<&str> = failures.iter().map(Enricher::as_str).collect();
    assert_eq!(names, ["time", "user_agent", "geo", "privacy"]);
}

#[test]
fn known_user_agents_from_the_fixture_are_parsed() {
    let cases: Vec<Value> = serde_json::from_str(USER_AGENTS).unwrap();
    for case in cases {
        let ua = case["ua"].as_str().unwrap();
        let p = cdp_enrich::useragent::parse_user_agent(ua).unwrap();
        assert_eq!(p.browser.as_deref(), case["browser"].as_str(), "{ua}");
        if let Some(os) = case["os"].as_str() {
            assert_eq!(p.os.as_deref(), Some(os), "{ua}");
        }
        assert_eq!(p.device_type.as_deref(), case["device"].as_str(), "{ua}");
    }
}

#[test]
fn the_example_workspace_document_loads_with_its_enrichment_options() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/workspace.yaml");
    // Each placeholder reads as its own name, so write keys stay distinct.
    let ws = cdp_workspace::load_with(std::path::Path::new(path), &|name| Some(name.into()))
        .unwrap()
        .workspace;
    assert_eq!(ws.enrichment("web").ip, cdp_workspace::IpPolicy::Truncate);
    assert_eq!(ws.enrichment("web").hash_fields[0], "traits.email");
}

#[test]
fn untouched_properties_pass_through_byte_for_byte() {
    let chain = Chain::new(&workspace(WORKSPACE), None);
    let payload = br#"{"type":"track","event":"Paid","userId":"u","messageId":"m","properties":{"total":1.50,"id":12345678901234567890123,"z":1,"a":2},"context":{"ip":"198.51.100.1"}}"#;
    let out = chain.enrich(
        &Input {
            payload,
            source: "app",
            partition: 0,
            received_at: None,
        },
        &mut State::new(None),
        now(),
    );
    let Outcome::Forward { payload, .. } = out else {
        panic!("forwarded")
    };
    let text = String::from_utf8(payload).unwrap();
    assert!(
        text.contains(r#""properties":{"total":1.50,"id":12345678901234567890123,"z":1,"a":2}"#),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["context"]["ip"], "198.51.100.1");
    assert_eq!(v["timestamp"], "2026-12-03T10:00:00.000Z");
}
