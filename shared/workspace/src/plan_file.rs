//! Tracking plans kept in their own file, in whichever shape a team has them:
//! - this project's: `{id?, events: [{name, rules}], identify, group}`;
//! - one event rule, like the brief's: `{name, description?, rules}`;
//! - Segment's Config API plan: `{display_name, rules: {events: [{name, version, rules}], identify, group, global}}`;
//! - Segment's Public API rules: `[{key, type, version, jsonSchema}]`, or `{rules: [...]}` of them.
//!
//! Segment's rules are whole-event schemas; `cdp-protocols` reads the `properties` / `context` /
//! `traits` parts out of them, so they are kept as they are here. Where an event has several
//! versions, the oldest applies (as Segment does for events without `context.protocols.event_version`).

use serde_json::Value;

use crate::{PlannedEvent, TrackingPlan};

/// Builds a plan with id `id` from a document in any of the shapes above.
pub fn import_plan(id: &str, doc: &Value) -> Result<TrackingPlan, String> {
    let mut plan = TrackingPlan {
        id: id.to_string(),
        events: Vec::new(),
        identify: None,
        group: None,
        file: None,
    };
    match doc {
        Value::Array(rules) => public_api_rules(&mut plan, rules)?,
        Value::Object(o) => match o.get("rules") {
            Some(Value::Array(rules)) => public_api_rules(&mut plan, rules)?,
            Some(Value::Object(r))
                if r.contains_key("events")
                    || r.contains_key("identify")
                    || r.contains_key("group") =>
            {
                let events = r
                    .get("events")
                    .map(|e| versioned_events(e, "rules.events"))
                    .transpose()?;
                plan.events = events.unwrap_or_default();
                plan.identify = r.get("identify").filter(|v| !v.is_null()).cloned();
                plan.group = r.get("group").filter(|v| !v.is_null()).cloned();
            }
            Some(rules) => {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a single event rule needs a `name` beside its `rules`")?;
                plan.events.push(PlannedEvent {
                    name: name.to_string(),
                    rules: Some(rules.clone()),
                });
            }
            None => {
                if let Some(events) = o.get("events") {
                    plan.events = versioned_events(events, "events")?;
                }
                plan.identify = o.get("identify").filter(|v| !v.is_null()).cloned();
                plan.group = o.get("group").filter(|v| !v.is_null()).cloned();
                if plan.events.is_empty() && plan.identify.is_none() && plan.group.is_none() {
                    return Err(
                        "no `events`, `identify`, `group` or `rules`: not a tracking plan".into(),
                    );
                }
            }
        },
        _ => return Err("a tracking plan file holds an object or a list of rules".into()),
    }
    Ok(plan)
}

/// `[{name, rules, version?}]`, keeping the oldest version of each name.
fn versioned_events(events: &Value, at: &str) -> Result<Vec<PlannedEvent>, String> {
    let list = events.as_array().ok_or(format!("`{at}` must be a list"))?;
    let mut out: Vec<(i64, PlannedEvent)> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .ok_or(format!("`{at}[{i}]` has no `name`"))?;
        let version = e.get("version").and_then(Value::as_i64).unwrap_or(1);
        let rules = e.get("rules").filter(|r| !r.is_null()).cloned();
        keep_oldest(&mut out, name, version, rules);
    }
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

fn public_api_rules(plan: &mut TrackingPlan, rules: &[Value]) -> Result<(), String> {
    let mut events = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let kind = r.get("type").and_then(Value::as_str).unwrap_or("TRACK");
        let schema = r.get("jsonSchema").filter(|s| !s.is_null()).cloned();
        let version = r.get("version").and_then(Value::as_i64).unwrap_or(1);
        match kind.to_ascii_uppercase().as_str() {
            "TRACK" => {
                let key = r
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or(format!("rule {i} (TRACK) has no `key` (the event name)"))?;
                keep_oldest(&mut events, key, version, schema);
            }
            "IDENTIFY" => plan.identify = schema,
            "GROUP" => plan.group = schema,
            // PAGE, SCREEN and COMMON rules are not enforced here (docs/protocols.md).
            _ => {}
        }
    }
    plan.events = events.into_iter().map(|(_, e)| e).collect();
    Ok(())
}

fn keep_oldest(out: &mut Vec<(i64, PlannedEvent)>, name: &str, version: i64, rules: Option<Value>) {
    let event = PlannedEvent {
        name: name.to_string(),
        rules,
    };
    match out.iter_mut().find(|(_, e)| e.name == name) {
        Some(existing) if version < existing.0 => *existing = (version, event),
        Some(_) => {}
        None => out.push((version, event)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_brief_single_rule_loads_as_written() {
        let doc: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/brief/brief-tracking-plan.json"
        ))
        .expect("fixture");
        let plan = import_plan("brief", &doc).expect("imports");
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].name, "Order Completed");
        assert_eq!(plan.events[0].rules, Some(doc["rules"].clone()));
    }

    #[test]
    fn segment_config_api_plans_keep_the_oldest_version() {
        let doc = json!({"display_name": "Main", "rules": {
            "events": [
                {"name": "Signed Up", "version": 2, "rules": {"v": 2}},
                {"name": "Signed Up", "version": 1, "rules": {"v": 1}},
                {"name": "Order Completed", "rules": {"v": 3}}
            ],
            "identify": {"type": "object"}, "group": null, "global": {}}});
        let plan = import_plan("main", &doc).expect("imports");
        assert_eq!(plan.events.len(), 2);
        assert_eq!(plan.events[0].rules, Some(json!({"v": 1})));
        assert_eq!(plan.identify, Some(json!({"type": "object"})));
        assert_eq!(plan.group, None);
    }

    #[test]
    fn segment_public_api_rules_load() {
        let doc = json!({"rules": [
            {"key": "Order Completed", "type": "TRACK", "version": 1, "jsonSchema": {"a": 1}},
            {"key": null, "type": "IDENTIFY", "version": 1, "jsonSchema": {"b": 1}},
            {"type": "COMMON", "version": 1, "jsonSchema": {}}
        ]});
        let plan = import_plan("p", &doc).expect("imports");
        assert_eq!(plan.events[0].name, "Order Completed");
        assert_eq!(plan.identify, Some(json!({"b": 1})));
    }

    #[test]
    fn other_documents_are_refused_with_a_reason() {
        assert!(import_plan("p", &json!("x")).is_err());
        assert!(import_plan("p", &json!({"sources": []}))
            .expect_err("not a plan")
            .contains("not a tracking plan"));
        assert!(import_plan("p", &json!({"rules": {"required": []}}))
            .expect_err("no name")
            .contains("name"));
    }

    #[test]
    fn a_workspace_reads_its_plan_file_and_its_digest_follows_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("plans")).expect("mkdir");
        let plan_path = dir.path().join("plans/main.json");
        std::fs::write(
            &plan_path,
            include_str!("../../../tests/fixtures/brief/brief-tracking-plan.json"),
        )
        .expect("write plan");
        let ws = dir.path().join("workspace.yaml");
        std::fs::write(
            &ws,
            "sources: [{id: web, write_key: k, tracking_plan: main}]\n\
             tracking_plans: [{id: main, file: plans/main.json}]\n",
        )
        .expect("write workspace");
        let first = crate::load(&ws).expect("loads");
        assert_eq!(
            first.workspace.tracking_plans[0].events[0].name,
            "Order Completed"
        );
        std::fs::write(&plan_path, r#"{"name": "Order Completed", "rules": {}}"#).expect("edit");
        let second = crate::load(&ws).expect("loads");
        assert_ne!(
            first.digest, second.digest,
            "a plan file edit is a new version"
        );

        std::fs::remove_file(&plan_path).expect("rm");
        let err = crate::load(&ws).expect_err("missing file").to_string();
        assert!(err.contains("tracking_plans[0].file"), "{err}");
    }
}
