//! Compiling a tracking plan: one JSON Schema validator per planned event, plus identify and group
//! traits, built once per plan version.
//!
//! Rules come in two shapes and both load without editing:
//! - the schema of the event's `properties` (the brief's and this project's own shape), and
//! - Segment's whole-event schema, whose `properties` holds only `properties`, `context` and/or
//!   `traits` sub-schemas, with `$schema` or `"type": "object"` at the top (Protocols exports, the
//!   Config API's plan JSON, the Public API's `jsonSchema` rules).

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

use cdp_workspace::TrackingPlan;

/// A plan that does not compile, naming the plan, the rule and where in its schema the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tracking plan `{plan}`, {rule}: schema at `{schema_path}`: {message}")]
pub struct PlanError {
    pub plan: String,
    /// `event "Order Completed"`, `identify traits`, `group traits`.
    pub rule: String,
    /// JSON pointer into the rule's schema (`/properties/total/type`), `/` for the whole schema.
    pub schema_path: String,
    pub message: String,
}

/// A schema over an object (`properties` or `traits`) and the keys it plans.
pub(crate) struct ObjectRules {
    pub validator: Validator,
    /// Keys listed under the schema's `properties`; everything else is unplanned.
    pub planned: HashSet<String>,
}

pub(crate) struct EventRules {
    pub properties: Option<ObjectRules>,
    pub context: Option<Validator>,
}

/// A tracking plan ready to judge events. Cheap to share (`Arc`) between threads.
pub struct CompiledPlan {
    pub id: String,
    /// Short digest of the plan's content: changes whenever any rule does.
    pub version: String,
    pub(crate) events: HashMap<String, EventRules>,
    pub(crate) identify: Option<ObjectRules>,
    pub(crate) group: Option<ObjectRules>,
}

impl std::fmt::Debug for CompiledPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPlan")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("events", &self.events.len())
            .finish()
    }
}

impl CompiledPlan {
    pub fn compile(plan: &TrackingPlan) -> Result<CompiledPlan, PlanError> {
        let err = |rule: String| {
            let plan = plan.id.clone();
            move |(schema_path, message): (String, String)| PlanError {
                plan,
                rule,
                schema_path,
                message,
            }
        };
        let mut events = HashMap::with_capacity(plan.events.len());
        for event in &plan.events {
            let rule = format!("event {:?}", event.name);
            let compiled = match &event.rules {
                None => EventRules {
                    properties: None,
                    context: None,
                },
                Some(rules) => match whole_event_parts(rules) {
                    Some(parts) => EventRules {
                        properties: parts
                            .get("properties")
                            .map(|s| object_rules(s, "/properties/properties"))
                            .transpose()
                            .map_err(err(rule.clone()))?,
                        context: parts
                            .get("context")
                            .map(|s| validator(s, "/properties/context"))
                            .transpose()
                            .map_err(err(rule.clone()))?,
                    },
                    None => EventRules {
                        properties: Some(object_rules(rules, "").map_err(err(rule.clone()))?),
                        context: None,
                    },
                },
            };
            if events.insert(event.name.clone(), compiled).is_some() {
                return Err(err(rule)((
                    "/".into(),
                    "the event is planned twice; keep one rule per event name".into(),
                )));
            }
        }
        let traits =
            |schema: &Option<Value>, rule: &str| -> Result<Option<ObjectRules>, PlanError> {
                let Some(schema) = schema else {
                    return Ok(None);
                };
                let rules = match whole_event_parts(schema) {
                    Some(parts) => match parts.get("traits") {
                        Some(t) => object_rules(t, "/properties/traits"),
                        None => return Ok(None),
                    },
                    None => object_rules(schema, ""),
                };
                rules.map(Some).map_err(err(rule.into()))
            };
        Ok(CompiledPlan {
            id: plan.id.clone(),
            version: version_of(plan),
            identify: traits(&plan.identify, "identify traits")?,
            group: traits(&plan.group, "group traits")?,
            events,
        })
    }

    /// Names of the planned `track` events.
    pub fn event_names(&self) -> impl Iterator<Item = &str> {
        self.events.keys().map(String::as_str)
    }
}

/// Segment's whole-event shape: the sub-schemas by part, or `None` for a plain properties schema.
fn whole_event_parts(schema: &Value) -> Option<&Map<String, Value>> {
    let top = schema.as_object()?;
    let marked = top.contains_key("$schema") || top.get("type") == Some(&Value::from("object"));
    let parts = top.get("properties")?.as_object()?;
    let only_parts = !parts.is_empty()
        && parts.iter().all(|(k, v)| {
            matches!(k.as_str(), "properties" | "context" | "traits") && v.is_object()
        });
    (marked && only_parts).then_some(parts)
}

fn object_rules(schema: &Value, at: &str) -> Result<ObjectRules, (String, String)> {
    let planned = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    Ok(ObjectRules {
        validator: validator(schema, at)?,
        planned,
    })
}

/// Draft-07 unless the schema names its own `$schema`; `format` is asserted, as Segment does for
/// `date-time`.
fn validator(schema: &Value, at: &str) -> Result<Validator, (String, String)> {
    let mut options = jsonschema::options().should_validate_formats(true);
    if schema.get("$schema").is_none() {
        options = options.with_draft(Draft::Draft7);
    }
    options.build(schema).map_err(|e| {
        let path = format!("{at}{}", e.instance_path());
        let path = if path.is_empty() { "/".into() } else { path };
        (path, e.to_string())
    })
}

fn version_of(plan: &TrackingPlan) -> String {
    // serde_json's maps are sorted, so equal plans give equal digests whatever the key order on disk.
    let text = serde_json::to_string(plan).unwrap_or_default();
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
