//! Rewriting an event that goes on with violations, without parsing what does not change.
//!
//! The top level is read as ordered (key, raw JSON) pairs; only `properties`/`traits` (when keys are
//! cut) and `context` (to add `protocols`) are opened, the same way, one level deep. Every other
//! value is copied as the bytes it arrived as, and key order is kept.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use crate::plan::CompiledPlan;
use crate::violation::{Action, Kind, Violation};

/// A JSON object as its members in order, values left raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn members(raw: &str) -> Option<Members<'_>> {
    serde_json::from_str(raw).ok()
}

fn push_key(out: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    // Writing a string into a Vec cannot fail.
    let _infallible = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

#[derive(Serialize)]
struct Listed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    field: &'a str,
    description: &'a str,
}

/// The event without the omitted keys of `part`, with `context.protocols` recording what happened.
pub(crate) fn annotate(
    plan: &CompiledPlan,
    source_id: &str,
    bytes: &[u8],
    part: &str,
    violations: &[Violation],
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let top = members(text)?;
    let mut omitted: Vec<&str> = Vec::new();
    let mut omitted_on_violation: Vec<&str> = Vec::new();
    for v in violations.iter().filter(|v| v.action == Action::Omitted) {
        let Some(key) = v.top_key.as_deref() else {
            continue;
        };
        if omitted.contains(&key) || omitted_on_violation.contains(&key) {
            continue;
        }
        if matches!(v.kind, Kind::UnplannedProperty | Kind::UnplannedTrait) {
            omitted.push(key);
        } else {
            omitted_on_violation.push(key);
        }
    }

    let mut out = Vec::with_capacity(bytes.len() + 256);
    out.push(b'{');
    let mut first = true;
    let mut had_context = false;
    for (key, value) in &top.0 {
        push_key(&mut out, &mut first, key);
        if key == part && !(omitted.is_empty() && omitted_on_violation.is_empty()) {
            match members(value.get()) {
                Some(object) => {
                    out.push(b'{');
                    let mut f = true;
                    for (k, v) in &object.0 {
                        if omitted.contains(&k.as_ref())
                            || omitted_on_violation.contains(&k.as_ref())
                        {
                            continue;
                        }
                        push_key(&mut out, &mut f, k);
                        out.extend_from_slice(v.get().as_bytes());
                    }
                    out.push(b'}');
                }
                None => out.extend_from_slice(value.get().as_bytes()),
            }
        } else if key == "context" {
            had_context = true;
            let context = members(value.get()).unwrap_or(Members(Vec::new()));
            out.push(b'{');
            let mut f = true;
            let mut earlier = None;
            for (k, v) in &context.0 {
                if k == "protocols" {
                    earlier = Some(*v);
                    continue;
                }
                push_key(&mut out, &mut f, k);
                out.extend_from_slice(v.get().as_bytes());
            }
            push_key(&mut out, &mut f, "protocols");
            write_protocols(
                &mut out,
                earlier,
                plan,
                source_id,
                &omitted,
                &omitted_on_violation,
                violations,
            );
            out.push(b'}');
        } else {
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    if !had_context {
        push_key(&mut out, &mut first, "context");
        out.push(b'{');
        let mut f = true;
        push_key(&mut out, &mut f, "protocols");
        write_protocols(
            &mut out,
            None,
            plan,
            source_id,
            &omitted,
            &omitted_on_violation,
            violations,
        );
        out.push(b'}');
    }
    out.push(b'}');
    Some(out)
}

/// Segment's `context.protocols` fields, after any the client set that are not ours
/// (`event_version`, for one).
fn write_protocols(
    out: &mut Vec<u8>,
    earlier: Option<&RawValue>,
    plan: &CompiledPlan,
    source_id: &str,
    omitted: &[&str],
    omitted_on_violation: &[&str],
    violations: &[Violation],
) {
    const OURS: [&str; 6] = [
        "sourceId",
        "trackingPlanId",
        "trackingPlanVersion",
        "omitted",
        "omitted_on_violation",
        "violations",
    ];
    out.push(b'{');
    let mut first = true;
    if let Some(earlier) = earlier.and_then(|e| members(e.get())) {
        for (k, v) in &earlier.0 {
            if !OURS.contains(&k.as_ref()) {
                push_key(out, &mut first, k);
                out.extend_from_slice(v.get().as_bytes());
            }
        }
    }
    let listed: Vec<Listed<'_>> = violations
        .iter()
        .map(|v| Listed {
            kind: v.kind.label(),
            field: &v.field,
            description: &v.description,
        })
        .collect();
    let mut put = |key: &str, value: &dyn erased::Json| {
        push_key(out, &mut first, key);
        value.write(out);
    };
    put("sourceId", &source_id);
    put("trackingPlanId", &plan.id.as_str());
    put("trackingPlanVersion", &plan.version.as_str());
    put("omitted", &omitted);
    put("omitted_on_violation", &omitted_on_violation);
    put("violations", &listed.as_slice());
    out.push(b'}');
}

/// Serializes values of different types through one closure.
mod erased {
    pub(super) trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Writing into a Vec cannot fail, and these types always serialize.
            let _infallible = serde_json::to_writer(out, self);
        }
    }
}

/// One record of the violations topic.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record<'a> {
    pub source_id: &'a str,
    pub tracking_plan_id: &'a str,
    pub tracking_plan_version: &'a str,
    pub message_id: Option<&'a str>,
    pub received_at: Option<&'a str>,
    pub event_type: &'a str,
    pub event_name: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    pub field: &'a str,
    pub description: &'a str,
    pub action: &'static str,
}
