//! The plan engine against the brief's plan and bad events, and every Protocols setting.

use cdp_protocols::{Action, Engine, Kind, Outcome, Output, PlanError, Poison, Verdict};
use cdp_workspace::{
    AllowBlock, AllowOmit, PlannedEvent, Protocols, Secret, Source, TrackingPlan, ViolationAction,
    Workspace,
};
use serde_json::{json, Value};

const BRIEF_PLAN: &str = include_str!("../../../tests/fixtures/brief/brief-tracking-plan.json");
const BRIEF_BAD: &str = include_str!("../../../tests/fixtures/brief/brief-bad-events.json");
const BRIEF_EVENTS: &str = include_str!("../../../tests/fixtures/brief/brief-events.json");

fn brief_plan() -> TrackingPlan {
    let rule: Value = serde_json::from_str(BRIEF_PLAN).expect("brief plan");
    TrackingPlan {
        id: "main".into(),
        events: vec![PlannedEvent {
            name: rule["name"].as_str().expect("name").into(),
            rules: Some(rule["rules"].clone()),
        }],
        identify: Some(
            json!({"properties": {"email": {"type": "string", "format": "email"}, "plan": {"enum": ["free", "pro"]}}}),
        ),
        group: None,
        file: None,
    }
}

fn engine(plan: TrackingPlan, protocols: Protocols) -> Engine {
    let ws = Workspace {
        sources: vec![Source {
            id: "web".into(),
            name: None,
            write_key: Secret::new("k"),
            tracking_plan: Some(plan.id.clone()),
            protocols,
        }],
        tracking_plans: vec![plan],
        ..Workspace::default()
    };
    Engine::build(&ws).expect("plan compiles")
}

fn settings(violations: ViolationAction) -> Protocols {
    Protocols {
        violations,
        ..Protocols::default()
    }
}

fn judge(engine: &Engine, event: &Value) -> Verdict {
    engine
        .evaluate("web", &serde_json::to_vec(event).expect("json"))
        .expect("a message")
}

fn output(verdict: &Verdict, input: &Value) -> Value {
    match &verdict.output {
        Output::Unchanged => input.clone(),
        Output::Rewritten(bytes) => serde_json::from_slice(bytes).expect("output is JSON"),
    }
}

#[test]
fn each_brief_bad_event_gives_the_violation_it_expects() {
    let engine = engine(brief_plan(), settings(ViolationAction::Block));
    let cases: Vec<Value> = serde_json::from_str(BRIEF_BAD).expect("fixture");
    assert_eq!(cases.len(), 6);
    for case in cases {
        let expect = case["expect"].as_str().expect("expect");
        let verdict = judge(&engine, &case["event"]);
        assert_eq!(verdict.outcome, Outcome::Blocked, "{expect}");
        let descriptions: Vec<&str> = verdict
            .violations
            .iter()
            .map(|v| v.description.as_str())
            .collect();
        assert!(
            descriptions.iter().any(|d| d.starts_with(expect)),
            "expected {expect:?}, got {descriptions:?}"
        );
        assert_eq!(verdict.records.len(), verdict.violations.len());
    }
}

#[test]
fn brief_violations_have_the_right_kind_and_field() {
    let engine = engine(brief_plan(), settings(ViolationAction::Block));
    let cases: Vec<Value> = serde_json::from_str(BRIEF_BAD).expect("fixture");
    let got: Vec<(Kind, String)> = cases
        .iter()
        .map(|c| {
            let v = &judge(&engine, &c["event"]).violations[0];
            (v.kind, v.field.clone())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Kind::InvalidType, "properties.total".into()),
            (Kind::Required, "properties.currency".into()),
            (Kind::NotInEnum, "properties.currency".into()),
            (Kind::OutOfRange, "properties.total".into()),
            (Kind::Required, "properties.products[0].price".into()),
            (Kind::InvalidType, "properties.order_id".into()),
        ]
    );
}

#[test]
fn the_brief_good_order_passes_as_the_same_bytes() {
    let engine = engine(brief_plan(), settings(ViolationAction::Block));
    let events: Vec<Value> = serde_json::from_str(BRIEF_EVENTS).expect("fixture");
    let order = events
        .iter()
        .find(|e| e["event"] == "Order Completed")
        .expect("an order in the brief");
    let verdict = judge(&engine, order);
    assert_eq!(verdict.outcome, Outcome::Valid, "{:?}", verdict.violations);
    assert_eq!(verdict.output, Output::Unchanged);
    assert!(verdict.records.is_empty());
    assert_eq!(verdict.rule.as_deref(), Some("Order Completed"));
}

fn bad_total() -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m-1",
           "properties": {"order_id": "O-1", "total": "14500", "currency": "RUB", "coupon": "X"}})
}

#[test]
fn allow_lets_the_event_through_annotated() {
    let engine = engine(brief_plan(), settings(ViolationAction::Allow));
    let input = bad_total();
    let verdict = judge(&engine, &input);
    assert_eq!(verdict.outcome, Outcome::Allowed);
    let out = output(&verdict, &input);
    assert_eq!(out["properties"], input["properties"], "nothing removed");
    let p = &out["context"]["protocols"];
    assert_eq!(p["sourceId"], "web");
    assert_eq!(p["trackingPlanId"], "main");
    assert_eq!(p["violations"][0]["type"], "Invalid Type");
    assert_eq!(p["violations"][0]["field"], "properties.total");
    assert_eq!(verdict.violations[0].action, Action::Allowed);
}

#[test]
fn block_holds_the_event_back_whole() {
    let engine = engine(brief_plan(), settings(ViolationAction::Block));
    let verdict = judge(&engine, &bad_total());
    assert_eq!(verdict.outcome, Outcome::Blocked);
    assert!(!verdict.outcome.passes());
    assert_eq!(
        verdict.output,
        Output::Unchanged,
        "blocked events keep their bytes for replay"
    );
    let record: Value = serde_json::from_slice(&verdict.records[0]).expect("record");
    assert_eq!(record["action"], "blocked");
    assert_eq!(record["messageId"], "m-1");
    assert_eq!(record["eventName"], "Order Completed");
    assert_eq!(record["code"], "invalid_type");
    assert_eq!(
        record["trackingPlanVersion"].as_str().map(str::len),
        Some(12)
    );
}

#[test]
fn omit_removes_only_the_offending_properties() {
    let engine = engine(brief_plan(), settings(ViolationAction::Omit));
    let input = bad_total();
    let verdict = judge(&engine, &input);
    assert_eq!(verdict.outcome, Outcome::Omitted);
    let out = output(&verdict, &input);
    assert_eq!(
        out["properties"],
        json!({"order_id": "O-1", "currency": "RUB", "coupon": "X"})
    );
    assert_eq!(
        out["context"]["protocols"]["omitted_on_violation"],
        json!(["total"])
    );
    assert_eq!(out["context"]["protocols"]["omitted"], json!([]));
}

#[test]
fn omit_of_a_missing_required_property_lets_the_event_on_annotated() {
    let engine = engine(brief_plan(), settings(ViolationAction::Omit));
    let input = json!({"type": "track", "event": "Order Completed", "userId": "u1",
                       "properties": {"order_id": "O-2", "total": 10}});
    let verdict = judge(&engine, &input);
    assert_eq!(verdict.outcome, Outcome::Allowed);
    assert_eq!(output(&verdict, &input)["properties"], input["properties"]);
}

#[test]
fn unplanned_properties_are_omitted_when_the_source_says_so() {
    let protocols = Protocols {
        unplanned_properties: AllowOmit::Omit,
        ..Protocols::default()
    };
    let engine = engine(brief_plan(), protocols);
    let input = json!({"type": "track", "event": "Order Completed", "userId": "u1",
        "properties": {"order_id": "O-1", "total": 1, "currency": "EUR", "coupon": "X", "debug": true}});
    let verdict = judge(&engine, &input);
    assert_eq!(verdict.outcome, Outcome::Omitted);
    let out = output(&verdict, &input);
    assert_eq!(
        out["properties"],
        json!({"order_id": "O-1", "total": 1, "currency": "EUR"})
    );
    let mut omitted: Vec<String> =
        serde_json::from_value(out["context"]["protocols"]["omitted"].clone()).expect("list");
    omitted.sort();
    assert_eq!(omitted, ["coupon", "debug"]);
    assert!(verdict
        .violations
        .iter()
        .all(|v| v.kind == Kind::UnplannedProperty));
}

#[test]
fn unplanned_properties_are_left_alone_by_default() {
    let engine = engine(brief_plan(), Protocols::default());
    let input = json!({"type": "track", "event": "Order Completed", "userId": "u1",
        "properties": {"order_id": "O-1", "total": 1, "currency": "EUR", "coupon": "X"}});
    let verdict = judge(&engine, &input);
    assert_eq!(verdict.outcome, Outcome::Valid);
    assert_eq!(verdict.output, Output::Unchanged);
}

#[test]
fn unplanned_events_are_allowed_or_blocked() {
    let input = json!({"type": "track", "event": "Order Complete", "userId": "u1"});
    let allow = engine(brief_plan(), Protocols::default());
    let verdict = judge(&allow, &input);
    assert_eq!(verdict.outcome, Outcome::Unplanned);
    assert_eq!(verdict.output, Output::Unchanged);
    assert!(verdict.rule.is_none());

    let block = engine(
        brief_plan(),
        Protocols {
            unplanned_events: AllowBlock::Block,
            ..Protocols::default()
        },
    );
    let verdict = judge(&block, &input);
    assert_eq!(verdict.outcome, Outcome::Blocked);
    assert_eq!(verdict.violations[0].kind, Kind::UnplannedEvent);
    let record: Value = serde_json::from_slice(&verdict.records[0]).expect("record");
    assert_eq!(record["eventName"], "Order Complete");
}

#[test]
fn identify_traits_are_checked_and_unplanned_traits_omitted() {
    let protocols = Protocols {
        violations: ViolationAction::Omit,
        unplanned_traits: AllowOmit::Omit,
        ..Protocols::default()
    };
    let engine = engine(brief_plan(), protocols);
    let input = json!({"type": "identify", "userId": "u1",
        "traits": {"email": "a@example.com", "plan": "gold", "shoe_size": 44}});
    let verdict = judge(&engine, &input);
    assert_eq!(verdict.outcome, Outcome::Omitted);
    let out = output(&verdict, &input);
    assert_eq!(out["traits"], json!({"email": "a@example.com"}));
    let p = &out["context"]["protocols"];
    assert_eq!(p["omitted"], json!(["shoe_size"]));
    assert_eq!(p["omitted_on_violation"], json!(["plan"]));
    let kinds: Vec<Kind> = verdict.violations.iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&Kind::NotInEnum) && kinds.contains(&Kind::UnplannedTrait));
}

#[test]
fn group_without_rules_and_other_calls_pass_unchecked() {
    let engine = engine(brief_plan(), settings(ViolationAction::Block));
    for input in [
        json!({"type": "group", "userId": "u1", "groupId": "g", "traits": {"x": 1}}),
        json!({"type": "page", "anonymousId": "a", "name": "Home"}),
        json!({"type": "alias", "userId": "u1", "previousId": "a"}),
    ] {
        let verdict = judge(&engine, &input);
        assert_eq!(verdict.outcome, Outcome::Unchecked, "{input}");
        assert_eq!(verdict.output, Output::Unchanged);
    }
}

#[test]
fn a_source_without_a_plan_passes_everything_untouched() {
    let ws = Workspace {
        sources: vec![Source {
            id: "server".into(),
            name: None,
            write_key: Secret::new("k"),
            tracking_plan: None,
            protocols: Protocols {
                violations: ViolationAction::Block,
                unplanned_events: AllowBlock::Block,
                ..Protocols::default()
            },
        }],
        ..Workspace::default()
    };
    let engine = Engine::build(&ws).expect("builds");
    let verdict = engine
        .evaluate("server", &serde_json::to_vec(&bad_total()).expect("json"))
        .expect("message");
    assert_eq!(verdict.outcome, Outcome::Unchecked);
    assert_eq!(verdict.output, Output::Unchanged);
}

#[test]
fn segment_whole_event_rules_import_without_editing() {
    // The shape of a Protocols export / Config API plan: a draft-07 schema over the whole event.
    let rules = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "context": {"type": "object", "properties": {"app": {"type": "object", "required": ["version"]}}, "required": ["app"]},
            "properties": {"type": "object", "properties": {"plan": {"type": "string"}}, "required": ["plan"]},
            "traits": {"type": "object"}
        },
        "required": ["properties"]
    });
    let plan = TrackingPlan {
        id: "seg".into(),
        events: vec![PlannedEvent {
            name: "Signed Up".into(),
            rules: Some(rules),
        }],
        identify: Some(
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "properties": {"traits": {"type": "object", "properties": {"age": {"type": "integer"}}}}}),
        ),
        group: None,
        file: None,
    };
    let engine = engine(plan, settings(ViolationAction::Block));
    let ok = json!({"type": "track", "event": "Signed Up", "userId": "u", "properties": {"plan": "pro"},
                    "context": {"app": {"version": "1.0"}}});
    assert_eq!(judge(&engine, &ok).outcome, Outcome::Valid);
    let bad = json!({"type": "track", "event": "Signed Up", "userId": "u", "properties": {"plan": 1},
                     "context": {"app": {}}});
    let fields: Vec<String> = judge(&engine, &bad)
        .violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert!(
        fields.contains(&"properties.plan".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"context.app.version".to_string()),
        "{fields:?}"
    );
    let identify = json!({"type": "identify", "userId": "u", "traits": {"age": "old"}});
    assert_eq!(judge(&engine, &identify).violations[0].field, "traits.age");
}

#[test]
fn a_plan_that_does_not_compile_names_the_plan_event_and_schema_path() {
    let plan = TrackingPlan {
        id: "main".into(),
        events: vec![PlannedEvent {
            name: "Order Completed".into(),
            rules: Some(json!({"properties": {"total": {"type": "numbr"}}})),
        }],
        identify: None,
        group: None,
        file: None,
    };
    let ws = Workspace {
        tracking_plans: vec![plan],
        ..Workspace::default()
    };
    let err: PlanError = Engine::build(&ws).expect_err("must not compile");
    assert_eq!(err.plan, "main");
    assert_eq!(err.rule, "event \"Order Completed\"");
    assert!(err.schema_path.starts_with("/properties/total"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("main") && text.contains("Order Completed"),
        "{text}"
    );
}

#[test]
fn the_plan_version_follows_its_content() {
    let a = Engine::build(&Workspace {
        tracking_plans: vec![brief_plan()],
        ..Workspace::default()
    })
    .expect("a");
    let b = Engine::build(&Workspace {
        tracking_plans: vec![brief_plan()],
        ..Workspace::default()
    })
    .expect("b");
    let mut changed = brief_plan();
    changed.events[0].rules = Some(json!({"required": ["order_id"]}));
    let c = Engine::build(&Workspace {
        tracking_plans: vec![changed],
        ..Workspace::default()
    })
    .expect("c");
    assert_eq!(a.plans()[0].version, b.plans()[0].version);
    assert_ne!(a.plans()[0].version, c.plans()[0].version);
}

#[test]
fn inputs_that_are_not_messages_are_poison() {
    let engine = engine(brief_plan(), Protocols::default());
    assert!(matches!(
        engine.evaluate("web", b"{not json"),
        Err(Poison::NotJson(_))
    ));
    assert!(matches!(
        engine.evaluate("web", b"[1,2]"),
        Err(Poison::NotAMessage(_))
    ));
    assert!(matches!(
        engine.evaluate("web", br#"{"userId":"u"}"#),
        Err(Poison::NotAMessage(_))
    ));
    assert!(matches!(
        engine.evaluate("web", br#"{"type":"track","event":5}"#),
        Err(Poison::NotAMessage(_))
    ));
}

#[test]
fn a_rewrite_changes_only_what_it_must() {
    let engine = engine(brief_plan(), settings(ViolationAction::Omit));
    let input = r#"{"type":"track","event":"Order Completed","userId":"u1","properties":{"order_id":"O-1","total":"14500","currency":"RUB","note":"a\"b é"},"context":{"ip":"203.0.113.9","protocols":{"event_version":2,"omitted":["stale"]}},"sentAt":"2026-12-03T10:00:00.000Z","n":1.50}"#;
    let verdict = engine.evaluate("web", input.as_bytes()).expect("message");
    let Output::Rewritten(bytes) = &verdict.output else {
        panic!("expected a rewrite")
    };
    let text = std::str::from_utf8(bytes).expect("utf-8");
    assert!(
        text.starts_with(r#"{"type":"track","event":"Order Completed","userId":"u1","properties":{"order_id":"O-1","currency":"RUB","note":"a\"b é"},"context":{"ip":"203.0.113.9","protocols":{"event_version":2,"sourceId":"web""#),
        "{text}"
    );
    assert!(
        text.ends_with(r#","sentAt":"2026-12-03T10:00:00.000Z","n":1.50}"#),
        "{text}"
    );
    let out: Value = serde_json::from_str(text).expect("valid JSON");
    assert_eq!(
        out["context"]["protocols"]["omitted"],
        json!([]),
        "ours replaces the client's"
    );
    assert_eq!(
        out["context"]["protocols"]["omitted_on_violation"],
        json!(["total"])
    );
}
