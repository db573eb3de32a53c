//! The workspace document's shape. Extend it; do not rename fields (docs/ARCHITECTURE.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub tracking_plans: Vec<TrackingPlan>,
    #[serde(default)]
    pub destinations: Vec<Destination>,
    #[serde(default)]
    pub functions: Vec<Function>,
    /// The enricher's per-source privacy options, by source id. Kept beside the sources rather
    /// than inside them so a source without options reads exactly as before.
    #[serde(default)]
    pub enrichment: BTreeMap<String, SourceEnrichment>,
    /// User ids (`userId`) whose events the enricher drops and counts: deletion and
    /// do-not-track requests. Applies to every source.
    #[serde(default)]
    pub suppressed_users: Vec<String>,
}

impl Workspace {
    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.id == id)
    }

    pub fn destination(&self, id: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.id == id)
    }

    pub fn tracking_plan(&self, id: &str) -> Option<&TrackingPlan> {
        self.tracking_plans.iter().find(|p| p.id == id)
    }

    /// A source's enrichment options (the defaults when it has none).
    pub fn enrichment(&self, source_id: &str) -> SourceEnrichment {
        self.enrichment.get(source_id).cloned().unwrap_or_default()
    }
}

/// What the enricher does to a source's events before they leave it (privacy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEnrichment {
    /// What happens to `context.ip` after the geo lookup.
    #[serde(default)]
    pub ip: IpPolicy,
    /// Dotted paths removed from each event (`traits.email`, `context.traits.phone`).
    #[serde(default)]
    pub drop_fields: Vec<String>,
    /// Dotted paths whose value is replaced by its SHA-256 (lower-case hex).
    #[serde(default)]
    pub hash_fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPolicy {
    /// Leave `context.ip` as it came.
    #[default]
    Keep,
    /// Zero the host part: the last octet of IPv4 (/24), all but the first 48 bits of IPv6.
    Truncate,
    /// Remove `context.ip`.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Stable id: Kafka headers, metric labels, the BigQuery dataset.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub write_key: Secret,
    #[serde(default)]
    pub tracking_plan: Option<String>,
    #[serde(default)]
    pub protocols: Protocols,
}

/// Segment's schema controls. Defaults allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    #[serde(default)]
    pub unplanned_events: AllowBlock,
    #[serde(default)]
    pub violations: ViolationAction,
    #[serde(default)]
    pub unplanned_properties: AllowOmit,
    #[serde(default)]
    pub unplanned_traits: AllowOmit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowBlock {
    #[default]
    Allow,
    Block,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ViolationAction {
    #[default]
    Allow,
    Block,
    Omit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowOmit {
    #[default]
    Allow,
    Omit,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingPlan {
    pub id: String,
    #[serde(default)]
    pub events: Vec<PlannedEvent>,
    /// JSON Schema of identify traits.
    #[serde(default)]
    pub identify: Option<Value>,
    /// JSON Schema of group traits.
    #[serde(default)]
    pub group: Option<Value>,
    /// Or a file holding the plan (JSON or YAML, this project's shape or Segment's), relative to
    /// the workspace document. Its content replaces `events`, `identify` and `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedEvent {
    pub name: String,
    /// JSON Schema of the event's properties.
    #[serde(default)]
    pub rules: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Sources feeding this destination; empty means every source.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub filters: Vec<Value>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    pub id: String,
    /// Inline JavaScript.
    #[serde(default)]
    pub code: Option<String>,
    /// Or a file holding it, relative to the workspace document.
    #[serde(default)]
    pub file: Option<String>,
}

/// A string that never shows in logs or `Debug` output (write keys, tokens).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
