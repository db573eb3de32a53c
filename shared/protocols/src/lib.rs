//! Segment Protocols: tracking plans enforced on events, with no Kafka and no I/O in here.
//!
//! [`Engine::build`] compiles every tracking plan of a workspace once (a plan that does not compile
//! is a [`PlanError`] naming the plan, the rule and the schema path). [`Engine::evaluate`] takes an
//! event's raw bytes, as they arrive from Kafka, and returns a [`Verdict`]: the outcome, every
//! violation with what was done about it, the bytes to pass on and one record per violation.
//!
//! Speed comes from not doing work a valid event does not need: the envelope is read with borrowed
//! strings and the parts a plan does not check (`context`, every other field) stay unparsed raw
//! JSON; an event that passes is forwarded as the very bytes that came in, and the full message is
//! only parsed and rewritten when there is something to annotate or omit.

mod plan;
mod rewrite;
mod violation;

pub use plan::{CompiledPlan, PlanError};
pub use violation::{Action, Kind, Violation};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use cdp_workspace::{AllowBlock, AllowOmit, Protocols, ViolationAction, Workspace};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Checked against the plan and nothing was wrong.
    Valid,
    /// Not checked: the source has no plan, or the plan has no rules for this call type.
    Unchecked,
    /// A `track` event the plan does not list, let through because the source allows it.
    Unplanned,
    /// Violations, let through whole and annotated in `context.protocols`.
    Allowed,
    /// Offending or unplanned properties/traits removed, the rest let through, annotated.
    Omitted,
    /// Not let through: it goes to the blocked topic whole.
    Blocked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Unchecked => "unchecked",
            Outcome::Unplanned => "unplanned",
            Outcome::Allowed => "allowed",
            Outcome::Omitted => "omitted",
            Outcome::Blocked => "blocked",
        }
    }

    /// Whether the event goes on to the valid topic.
    pub fn passes(self) -> bool {
        self != Outcome::Blocked
    }
}

/// The bytes that go on (to the valid topic, or to the blocked topic for [`Outcome::Blocked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Exactly the input bytes.
    Unchanged,
    /// The event with properties/traits omitted and `context.protocols` added.
    Rewritten(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    pub output: Output,
    pub violations: Vec<Violation>,
    /// The plan it was judged by, when there was one.
    pub plan: Option<Arc<CompiledPlan>>,
    /// The plan rule that judged it: the planned `track` event name, `identify` or `group` (a
    /// bounded set, safe as a metric label). `None` when no rule applied.
    pub rule: Option<String>,
    /// One JSON record per violation, for the violations topic.
    pub records: Vec<Vec<u8>>,
}

/// An input that is not a Segment message at all: it cannot be judged and goes to a dead-letter
/// topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Poison {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a Segment message: {0}")]
    NotAMessage(String),
}

impl Poison {
    /// Bounded code for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Poison::NotJson(_) => "not_json",
            Poison::NotAMessage(_) => "not_a_message",
        }
    }
}

/// A source's settings and its compiled plan.
#[derive(Debug, Clone)]
pub struct SourceRules {
    pub settings: Protocols,
    pub plan: Option<Arc<CompiledPlan>>,
}

/// Every source's rules, built from one workspace version. Swap the whole engine on reload.
#[derive(Debug, Default)]
pub struct Engine {
    sources: HashMap<String, SourceRules>,
    plans: Vec<Arc<CompiledPlan>>,
}

impl Engine {
    /// Compiles every tracking plan of the workspace (each once, shared by its sources).
    pub fn build(workspace: &Workspace) -> Result<Engine, PlanError> {
        let mut plans = Vec::with_capacity(workspace.tracking_plans.len());
        let mut by_id = HashMap::new();
        for plan in &workspace.tracking_plans {
            let compiled = Arc::new(CompiledPlan::compile(plan)?);
            by_id.insert(plan.id.as_str(), compiled.clone());
            plans.push(compiled);
        }
        let sources = workspace
            .sources
            .iter()
            .map(|s| {
                let plan = s
                    .tracking_plan
                    .as_deref()
                    .and_then(|id| by_id.get(id).cloned());
                let rules = SourceRules {
                    settings: s.protocols.clone(),
                    plan,
                };
                (s.id.clone(), rules)
            })
            .collect();
        Ok(Engine { sources, plans })
    }

    pub fn plans(&self) -> &[Arc<CompiledPlan>] {
        &self.plans
    }

    pub fn source(&self, id: &str) -> Option<&SourceRules> {
        self.sources.get(id)
    }

    /// Judges one event of `source_id`. A source the workspace does not (or no longer) know has no
    /// plan, so its events pass unchecked.
    pub fn evaluate(&self, source_id: &str, bytes: &[u8]) -> Result<Verdict, Poison> {
        match self.sources.get(source_id) {
            Some(rules) => judge(rules.plan.as_ref(), &rules.settings, source_id, bytes),
            None => judge(None, &Protocols::default(), source_id, bytes),
        }
    }
}

/// The top-level fields a verdict needs, borrowed from the input; everything else is skipped.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(rename = "receivedAt", borrow, default)]
    received_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
}

/// Judges one event against `plan` with a source's `settings`.
pub fn judge(
    plan: Option<&Arc<CompiledPlan>>,
    settings: &Protocols,
    source_id: &str,
    bytes: &[u8],
) -> Result<Verdict, Poison> {
    // One UTF-8 check of the whole record (vectorised in std) instead of one per borrowed string.
    let text = std::str::from_utf8(bytes).map_err(|e| Poison::NotJson(e.to_string()))?;
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Poison::NotAMessage(e.to_string())
        } else {
            Poison::NotJson(e.to_string())
        }
    })?;
    let Some(kind) = envelope.kind.as_deref() else {
        return Err(Poison::NotAMessage("no `type`".into()));
    };
    let unchecked = || Verdict {
        outcome: Outcome::Unchecked,
        output: Output::Unchanged,
        violations: Vec::new(),
        plan: plan.cloned(),
        rule: None,
        records: Vec::new(),
    };
    let Some(plan) = plan else {
        return Ok(unchecked());
    };

    let mut violations = Vec::new();
    let rule;
    match kind {
        "track" => {
            let name = envelope.event.as_deref().unwrap_or_default();
            let Some(rules) = plan.events.get(name) else {
                if settings.unplanned_events == AllowBlock::Block {
                    violations.push(Violation {
                        kind: Kind::UnplannedEvent,
                        field: "event".into(),
                        description: format!(
                            "{name:?} is not an event of tracking plan {}",
                            plan.id
                        ),
                        action: Action::Blocked,
                        top_key: None,
                    });
                    return Ok(finish(plan, source_id, bytes, &envelope, None, violations));
                }
                return Ok(Verdict {
                    outcome: Outcome::Unplanned,
                    ..unchecked()
                });
            };
            rule = Some(name.to_string());
            check_object(
                "properties",
                envelope.properties,
                rules.properties.as_ref(),
                settings.unplanned_properties,
                Kind::UnplannedProperty,
                &mut violations,
            )?;
            if let Some(context_rules) = &rules.context {
                let context = parse_part(envelope.context)?;
                if !context_rules.is_valid(&context) {
                    violations.extend(
                        context_rules
                            .iter_errors(&context)
                            .map(|e| violation::from_schema_error("context", &e)),
                    );
                }
            }
        }
        "identify" | "group" => {
            let rules = if kind == "identify" {
                &plan.identify
            } else {
                &plan.group
            };
            let Some(rules) = rules else {
                return Ok(unchecked());
            };
            rule = Some(kind.to_string());
            check_object(
                "traits",
                envelope.traits,
                Some(rules),
                settings.unplanned_traits,
                Kind::UnplannedTrait,
                &mut violations,
            )?;
        }
        _ => return Ok(unchecked()),
    }
    if violations.is_empty() {
        return Ok(Verdict {
            outcome: Outcome::Valid,
            rule,
            ..unchecked()
        });
    }
    for v in &mut violations {
        if matches!(v.kind, Kind::UnplannedProperty | Kind::UnplannedTrait) {
            continue; // only recorded when omitted, settled in check_object
        }
        v.action = match settings.violations {
            ViolationAction::Allow => Action::Allowed,
            ViolationAction::Block => Action::Blocked,
            ViolationAction::Omit if v.top_key.is_some() => Action::Omitted,
            // A missing required property or a wrong `context` has nothing to cut: it goes on
            // annotated.
            ViolationAction::Omit => Action::Allowed,
        };
    }
    Ok(finish(plan, source_id, bytes, &envelope, rule, violations))
}

/// Validates `properties` or `traits` and lists unplanned keys when they are to be omitted.
fn check_object(
    part: &str,
    raw: Option<&RawValue>,
    rules: Option<&plan::ObjectRules>,
    unplanned: AllowOmit,
    unplanned_kind: Kind,
    violations: &mut Vec<Violation>,
) -> Result<(), Poison> {
    let value = parse_part(raw)?;
    if let Some(rules) = rules {
        if !rules.validator.is_valid(&value) {
            violations.extend(
                rules
                    .validator
                    .iter_errors(&value)
                    .map(|e| violation::from_schema_error(part, &e)),
            );
        }
    }
    if unplanned == AllowOmit::Omit {
        if let Value::Object(map) = &value {
            for key in map.keys() {
                if rules.is_some_and(|r| r.planned.contains(key)) {
                    continue;
                }
                violations.push(Violation {
                    kind: unplanned_kind,
                    field: format!("{part}.{key}"),
                    description: format!("{key} is not in the tracking plan"),
                    action: Action::Omitted,
                    top_key: Some(key.clone()),
                });
            }
        }
    }
    Ok(())
}

/// `properties` / `traits` / `context` as a value; absent or `null` is an empty object.
fn parse_part(raw: Option<&RawValue>) -> Result<Value, Poison> {
    match raw {
        None => Ok(Value::Object(Map::new())),
        Some(raw) if raw.get() == "null" => Ok(Value::Object(Map::new())),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|e| Poison::NotJson(e.to_string())),
    }
}

/// Settles the outcome, rewrites the event when it goes on with violations, builds the records.
fn finish(
    plan: &Arc<CompiledPlan>,
    source_id: &str,
    bytes: &[u8],
    envelope: &Envelope<'_>,
    rule: Option<String>,
    mut violations: Vec<Violation>,
) -> Verdict {
    let blocked = violations.iter().any(|v| v.action == Action::Blocked);
    if blocked {
        // The whole event is held back, so every violation's action is "blocked".
        for v in &mut violations {
            v.action = Action::Blocked;
        }
    }
    let omitted = violations.iter().any(|v| v.action == Action::Omitted);
    let (outcome, output) = if blocked {
        (Outcome::Blocked, Output::Unchanged)
    } else {
        let outcome = if omitted {
            Outcome::Omitted
        } else {
            Outcome::Allowed
        };
        (
            outcome,
            rewrite::annotate(
                plan,
                source_id,
                bytes,
                part_of(envelope.kind.as_deref().unwrap_or_default()),
                &violations,
            )
            .map_or(Output::Unchanged, Output::Rewritten),
        )
    };
    let event_type = envelope.kind.as_deref().unwrap_or_default();
    let event_name = envelope.event.as_deref().filter(|_| event_type == "track");
    let records = violations
        .iter()
        .map(|v| {
            serde_json::to_vec(&rewrite::Record {
                source_id,
                tracking_plan_id: &plan.id,
                tracking_plan_version: &plan.version,
                message_id: envelope.message_id.as_deref(),
                received_at: envelope.received_at.as_deref(),
                event_type,
                event_name,
                kind: v.kind.label(),
                code: v.kind.code(),
                field: &v.field,
                description: &v.description,
                action: v.action.as_str(),
            })
            .unwrap_or_default()
        })
        .collect();
    Verdict {
        outcome,
        output,
        violations,
        plan: Some(plan.clone()),
        rule,
        records,
    }
}

/// `properties` for `track`, `traits` for `identify` / `group`: the part omissions cut from.
fn part_of(event_type: &str) -> &'static str {
    if event_type == "track" {
        "properties"
    } else {
        "traits"
    }
}
