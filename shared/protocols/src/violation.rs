//! Violations: what kind, which field, a sentence a person can act on, and what happened to the event.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::ValidationError;
use serde::Serialize;
use serde_json::Value;

/// A bounded set, so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Required,
    InvalidType,
    NotInEnum,
    OutOfRange,
    PatternMismatch,
    InvalidFormat,
    InvalidLength,
    NotAllowed,
    InvalidValue,
    UnplannedEvent,
    UnplannedProperty,
    UnplannedTrait,
}

impl Kind {
    /// Metric label and `code` of a violation record.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Required => "required",
            Kind::InvalidType => "invalid_type",
            Kind::NotInEnum => "not_in_enum",
            Kind::OutOfRange => "out_of_range",
            Kind::PatternMismatch => "pattern_mismatch",
            Kind::InvalidFormat => "invalid_format",
            Kind::InvalidLength => "invalid_length",
            Kind::NotAllowed => "not_allowed",
            Kind::InvalidValue => "invalid_value",
            Kind::UnplannedEvent => "unplanned_event",
            Kind::UnplannedProperty => "unplanned_property",
            Kind::UnplannedTrait => "unplanned_trait",
        }
    }

    /// The label Segment's Protocols uses in `context.protocols.violations[].type`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Required => "Required",
            Kind::InvalidType => "Invalid Type",
            Kind::NotInEnum => "Not In Enum",
            Kind::OutOfRange => "Out Of Range",
            Kind::PatternMismatch => "Pattern Mismatch",
            Kind::InvalidFormat => "Invalid Format",
            Kind::InvalidLength => "Invalid Length",
            Kind::NotAllowed => "Not Allowed",
            Kind::InvalidValue => "Invalid Value",
            Kind::UnplannedEvent => "Unplanned Event",
            Kind::UnplannedProperty => "Unplanned Property",
            Kind::UnplannedTrait => "Unplanned Trait",
        }
    }
}

/// What the source's Protocols settings did with the event because of this violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The event went on whole, annotated in `context.protocols`.
    Allowed,
    /// The offending property or trait was removed; the rest went on.
    Omitted,
    /// The event went to the blocked topic.
    Blocked,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allowed => "allowed",
            Action::Omitted => "omitted",
            Action::Blocked => "blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: Kind,
    /// Path from the event's root: `properties.products[0].price`, `traits.email`, `event`.
    pub field: String,
    /// `products[0].price is required`, `total must be a number, not a string`.
    pub description: String,
    pub action: Action,
    /// The top-level key of `properties`/`traits` that holds the problem, if there is one: what
    /// "omit" removes.
    #[serde(skip)]
    pub(crate) top_key: Option<String>,
}

/// Turns a schema error on the object at `part` (`properties`, `traits`, `context`) into a
/// violation (its action is settled by the caller).
pub(crate) fn from_schema_error(part: &str, error: &ValidationError<'_>) -> Violation {
    let mut segments: Vec<String> = Vec::new();
    let mut dotted = String::new();
    for seg in error.instance_path().segments() {
        match seg {
            LocationSegment::Property(p) => {
                if !dotted.is_empty() {
                    dotted.push('.');
                }
                dotted.push_str(&p);
                segments.push(p.into_owned());
            }
            LocationSegment::Index(i) => {
                dotted.push_str(&format!("[{i}]"));
                segments.push(i.to_string());
            }
        }
    }
    // Omitting removes whole top-level properties or traits; context is never cut.
    let top_key = segments.first().cloned().filter(|_| part != "context");
    // `required` is reported on the parent object; the field is the missing property.
    if let ValidationErrorKind::Required { property } = error.kind() {
        let name = property
            .as_str()
            .map_or_else(|| property.to_string(), str::to_owned);
        if !dotted.is_empty() {
            dotted.push('.');
        }
        dotted.push_str(&name);
    }
    let subject = if dotted.is_empty() {
        part.to_string()
    } else {
        dotted.clone()
    };
    let (kind, what) = describe(error);
    Violation {
        kind,
        field: if dotted.is_empty() {
            part.to_string()
        } else {
            format!("{part}.{dotted}")
        },
        description: format!("{subject} {what}"),
        action: Action::Allowed,
        top_key,
    }
}

fn describe(error: &ValidationError<'_>) -> (Kind, String) {
    use ValidationErrorKind as K;
    match error.kind() {
        K::Required { .. } => (Kind::Required, "is required".into()),
        K::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => with_article(t.as_str()),
                TypeKind::Multiple(set) => {
                    let names: Vec<_> = set.iter().map(|t| t.as_str()).collect();
                    format!("one of {}", names.join(", "))
                }
            };
            (
                Kind::InvalidType,
                format!(
                    "must be {expected}, not {}",
                    with_article(type_name(error.instance()))
                ),
            )
        }
        K::Enum { options } => (Kind::NotInEnum, format!("must be one of {}", list(options))),
        K::Constant { expected_value } => (
            Kind::NotInEnum,
            format!("must be {}", plain(expected_value)),
        ),
        K::Minimum { limit } => (Kind::OutOfRange, format!("must be >= {limit}")),
        K::Maximum { limit } => (Kind::OutOfRange, format!("must be <= {limit}")),
        K::ExclusiveMinimum { limit } => (Kind::OutOfRange, format!("must be > {limit}")),
        K::ExclusiveMaximum { limit } => (Kind::OutOfRange, format!("must be < {limit}")),
        K::MultipleOf { .. } => (Kind::OutOfRange, message_tail(error)),
        K::Pattern { pattern } => (
            Kind::PatternMismatch,
            format!("must match the pattern {pattern}"),
        ),
        K::Format { format } => (Kind::InvalidFormat, format!("must be a valid {format}")),
        K::MinLength { limit } => (
            Kind::InvalidLength,
            format!("must be at least {limit} characters long"),
        ),
        K::MaxLength { limit } => (
            Kind::InvalidLength,
            format!("must be at most {limit} characters long"),
        ),
        K::MinItems { limit } => (
            Kind::InvalidLength,
            format!("must have at least {limit} items"),
        ),
        K::MaxItems { limit } => (
            Kind::InvalidLength,
            format!("must have at most {limit} items"),
        ),
        K::MinProperties { .. } | K::MaxProperties { .. } => {
            (Kind::InvalidLength, message_tail(error))
        }
        K::AdditionalProperties { unexpected } => (
            Kind::NotAllowed,
            format!("must not have the properties {}", unexpected.join(", ")),
        ),
        K::FalseSchema | K::UnevaluatedProperties { .. } | K::AdditionalItems { .. } => {
            (Kind::NotAllowed, message_tail(error))
        }
        _ => (Kind::InvalidValue, message_tail(error)),
    }
}

/// jsonschema's own sentence, for the rarer keywords.
fn message_tail(error: &ValidationError<'_>) -> String {
    format!("is invalid: {error}")
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn with_article(name: &str) -> String {
    match name {
        "null" => "null".into(),
        n if n.starts_with(['a', 'e', 'i', 'o', 'u']) => format!("an {n}"),
        n => format!("a {n}"),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list(options: &Value) -> String {
    match options {
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => plain(other),
    }
}
