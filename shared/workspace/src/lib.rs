//! The workspace document: sources, tracking plans, destinations and functions.
//!
//! Every service loads it with this crate so they agree on its meaning. Loading is three steps:
//! parse YAML, resolve `${VAR}` placeholders from the environment (inside string values only, so an
//! environment value can never change the document's structure), then check references and ids.
//! Every error names the field it is about. [`watch`] re-reads the file and publishes a new version
//! only when it loads cleanly; a broken edit keeps the last good one.

mod env;
mod model;
mod plan_file;
mod validate;
mod watch;

pub use model::*;
pub use plan_file::import_plan;
pub use watch::{watch, ReloadMetrics, WorkspaceRx};

use sha2::{Digest, Sha256};
use std::path::Path;

/// Destination types this project ships a binary for.
pub const DESTINATION_TYPES: &[&str] = &[
    "webhook",
    "bigquery",
    "mixpanel",
    "amplitude",
    "intercom",
    "braze",
    "hubspot",
    "function",
];

/// A problem with the workspace document. `field` is a path such as `sources[1].write_key`.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot read workspace {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("workspace is not valid YAML or has a field of the wrong shape: {0}")]
    Syntax(String),
    #[error("workspace field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("workspace has {} problems:\n  - {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  - "))]
    Many(Vec<WorkspaceError>),
}

impl WorkspaceError {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        WorkspaceError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A loaded, validated document with a short digest of its text, for logs and metrics.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub workspace: Workspace,
    pub digest: String,
}

/// Reads and validates the document at `path`, resolving placeholders from the process environment.
pub fn load(path: &Path) -> Result<Loaded, WorkspaceError> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// [`load`] with placeholders looked up by `lookup` instead of the process environment.
pub fn load_with(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, WorkspaceError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkspaceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_in(&text, lookup, path.parent())
}

/// Parses and validates a document, looking placeholders up with `lookup`. Plan `file`s need a
/// document on disk ([`load`]).
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, WorkspaceError> {
    parse_in(text, lookup, None)
}

fn parse_in(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    dir: Option<&Path>,
) -> Result<Loaded, WorkspaceError> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| WorkspaceError::Syntax(e.to_string()))?;
    if doc.is_null() {
        // An empty file is almost always a truncated write; loading it would drop every source and
        // turn every event into a 401. (`sources: []` says it on purpose and is accepted.)
        return Err(WorkspaceError::Syntax(
            "the document is empty; an empty workspace must say so (`sources: []`)".into(),
        ));
    }
    let mut doc = doc;
    env::resolve(&mut doc, lookup)?;
    let mut workspace: Workspace = serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        WorkspaceError::field(field, e.into_inner().to_string())
    })?;
    let mut content = text.to_string();
    for (i, plan) in workspace.tracking_plans.iter_mut().enumerate() {
        if let Some(body) = read_plan_file(plan, dir)
            .map_err(|m| WorkspaceError::field(format!("tracking_plans[{i}].file"), m))?
        {
            content.push_str(&body);
        }
    }
    validate::check(&workspace)?;
    Ok(Loaded {
        workspace,
        digest: digest(&content),
    })
}

/// Fills a plan from its `file`, returning the file's text (part of the workspace's digest).
fn read_plan_file(plan: &mut TrackingPlan, dir: Option<&Path>) -> Result<Option<String>, String> {
    let Some(file) = plan.file.clone() else {
        return Ok(None);
    };
    if !plan.events.is_empty() || plan.identify.is_some() || plan.group.is_some() {
        return Err("give the plan's rules inline or in a file, not both".into());
    }
    let dir = dir.ok_or("a plan file is read relative to a workspace document on disk")?;
    let path = dir.join(&file);
    let body = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: serde_json::Value = serde_yaml_ng::from_str(&body)
        .map_err(|e| format!("{} is not JSON or YAML: {e}", path.display()))?;
    let imported = import_plan(&plan.id, &doc).map_err(|e| format!("{}: {e}", path.display()))?;
    plan.events = imported.events;
    plan.identify = imported.identify;
    plan.group = imported.group;
    Ok(Some(body))
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
