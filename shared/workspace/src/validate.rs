//! Cross-field rules serde cannot express: unique ids, known references, non-empty keys.

use std::collections::HashSet;

use crate::{Workspace, WorkspaceError, DESTINATION_TYPES};

pub(crate) fn check(ws: &Workspace) -> Result<(), WorkspaceError> {
    let mut errors = Vec::new();
    let mut err =
        |field: String, message: String| errors.push(WorkspaceError::field(field, message));

    let plan_ids: HashSet<&str> = ws.tracking_plans.iter().map(|p| p.id.as_str()).collect();
    let source_ids: HashSet<&str> = ws.sources.iter().map(|s| s.id.as_str()).collect();
    let function_ids: HashSet<&str> = ws.functions.iter().map(|f| f.id.as_str()).collect();

    let mut seen = HashSet::new();
    let mut keys = HashSet::new();
    for (i, s) in ws.sources.iter().enumerate() {
        if !valid_id(&s.id) {
            err(format!("sources[{i}].id"), id_rule(&s.id));
        }
        if !seen.insert(s.id.as_str()) {
            err(
                format!("sources[{i}].id"),
                format!("duplicate source id {:?}", s.id),
            );
        }
        let key = s.write_key.expose();
        if key.trim().is_empty() {
            err(
                format!("sources[{i}].write_key"),
                "must not be empty".into(),
            );
        } else if !keys.insert(key) {
            err(
                format!("sources[{i}].write_key"),
                "the same write key is used by another source".into(),
            );
        }
        if let Some(plan) = &s.tracking_plan {
            if !plan_ids.contains(plan.as_str()) {
                err(
                    format!("sources[{i}].tracking_plan"),
                    format!("no tracking plan with id {plan:?}"),
                );
            }
        }
    }

    let mut seen = HashSet::new();
    for (i, p) in ws.tracking_plans.iter().enumerate() {
        if !valid_id(&p.id) {
            err(format!("tracking_plans[{i}].id"), id_rule(&p.id));
        }
        if !seen.insert(p.id.as_str()) {
            err(
                format!("tracking_plans[{i}].id"),
                format!("duplicate plan id {:?}", p.id),
            );
        }
        let mut names = HashSet::new();
        for (j, e) in p.events.iter().enumerate() {
            if e.name.is_empty() {
                err(
                    format!("tracking_plans[{i}].events[{j}].name"),
                    "must not be empty".into(),
                );
            } else if !names.insert(e.name.as_str()) {
                err(
                    format!("tracking_plans[{i}].events[{j}].name"),
                    format!("event {:?} is planned twice", e.name),
                );
            }
        }
    }

    let mut seen = HashSet::new();
    for (i, d) in ws.destinations.iter().enumerate() {
        if !valid_id(&d.id) {
            err(format!("destinations[{i}].id"), id_rule(&d.id));
        }
        if !seen.insert(d.id.as_str()) {
            err(
                format!("destinations[{i}].id"),
                format!("duplicate destination id {:?}", d.id),
            );
        }
        if !DESTINATION_TYPES.contains(&d.kind.as_str()) {
            err(
                format!("destinations[{i}].type"),
                format!(
                    "unknown type {:?}; expected one of {}",
                    d.kind,
                    DESTINATION_TYPES.join(", ")
                ),
            );
        }
        for (j, s) in d.sources.iter().enumerate() {
            if !source_ids.contains(s.as_str()) {
                err(
                    format!("destinations[{i}].sources[{j}]"),
                    format!("no source with id {s:?}"),
                );
            }
        }
        if d.kind == "function" {
            match d.settings.get("function").and_then(|v| v.as_str()) {
                Some(f) if function_ids.contains(f) => {}
                Some(f) => err(
                    format!("destinations[{i}].settings.function"),
                    format!("no function with id {f:?}"),
                ),
                None => err(
                    format!("destinations[{i}].settings.function"),
                    "a function destination names its function".into(),
                ),
            }
        }
    }

    let mut seen = HashSet::new();
    for (i, f) in ws.functions.iter().enumerate() {
        if !seen.insert(f.id.as_str()) {
            err(
                format!("functions[{i}].id"),
                format!("duplicate function id {:?}", f.id),
            );
        }
        if f.code.is_some() == f.file.is_some() {
            err(
                format!("functions[{i}]"),
                "set exactly one of `code` or `file`".into(),
            );
        }
    }

    for (id, e) in &ws.enrichment {
        if !source_ids.contains(id.as_str()) {
            err(
                format!("enrichment.{id}"),
                format!("no source with id {id:?}"),
            );
        }
        let mut paths = HashSet::new();
        for (list, fields) in [
            ("drop_fields", &e.drop_fields),
            ("hash_fields", &e.hash_fields),
        ] {
            for (j, path) in fields.iter().enumerate() {
                let at = format!("enrichment.{id}.{list}[{j}]");
                if let Some(problem) = field_path_problem(path) {
                    err(at, problem);
                } else if !paths.insert(path.as_str()) {
                    err(
                        at,
                        format!("{path:?} is listed twice (drop or hash it once)"),
                    );
                }
            }
        }
    }
    let mut users = HashSet::new();
    for (i, u) in ws.suppressed_users.iter().enumerate() {
        if u.trim().is_empty() {
            err(format!("suppressed_users[{i}]"), "must not be empty".into());
        } else if !users.insert(u.as_str()) {
            err(
                format!("suppressed_users[{i}]"),
                format!("user {u:?} is listed twice"),
            );
        }
    }

    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(WorkspaceError::Many(errors)),
    }
}

/// Fields the pipeline itself needs downstream: never dropped or hashed.
const PROTECTED_FIELDS: &[&str] = &[
    "type",
    "messageId",
    "receivedAt",
    "sentAt",
    "timestamp",
    "originalTimestamp",
];

/// Why a dotted field path (`traits.email`) cannot be dropped or hashed, if it cannot.
fn field_path_problem(path: &str) -> Option<String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Some(format!(
            "{path:?} is not a field path: use dotted names such as traits.email"
        ));
    }
    if PROTECTED_FIELDS.contains(&path) {
        return Some(format!(
            "{path:?} is needed downstream and cannot be dropped or hashed"
        ));
    }
    None
}

/// Ids end up in topic names, consumer groups, metric labels and dataset names.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && id.starts_with(|c: char| c.is_ascii_lowercase())
}

fn id_rule(id: &str) -> String {
    format!(
        "{id:?} is not a valid id: use 1-64 characters of a-z, 0-9, `_` and `-`, starting with a letter"
    )
}

#[cfg(test)]
mod tests {
    use crate::parse;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn errors_name_the_field() {
        let doc = r#"
sources:
  - {id: web, write_key: k1, tracking_plan: nope}
  - {id: web, write_key: k1}
destinations:
  - {id: d1, type: carrier-pigeon, sources: [web, app]}
"#;
        let err = parse(doc, &no_env).expect_err("invalid").to_string();
        for needle in [
            "sources[0].tracking_plan",
            "sources[1].id",
            "sources[1].write_key",
            "destinations[0].type",
            "destinations[0].sources[1]",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }

    #[test]
    fn enrichment_options_are_checked_with_their_paths() {
        let doc = r#"
sources:
  - {id: web, write_key: k1}
enrichment:
  web:
    ip: truncate
    drop_fields: [traits.phone, "traits..x", messageId]
    hash_fields: [traits.email, traits.phone]
  app: {ip: drop}
suppressed_users: [u1, "", u1]
"#;
        let err = parse(doc, &no_env).expect_err("invalid").to_string();
        for needle in [
            "enrichment.web.drop_fields[1]",
            "enrichment.web.drop_fields[2]",
            "enrichment.web.hash_fields[1]",
            "enrichment.app",
            "suppressed_users[1]",
            "suppressed_users[2]",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
        assert!(!err.contains("hash_fields[0]"), "{err}");
    }

    #[test]
    fn enrichment_options_default_to_keeping_everything() {
        let doc = "sources:\n  - {id: web, write_key: k}\nenrichment:\n  web: {ip: drop, hash_fields: [traits.email]}\n";
        let ws = parse(doc, &no_env).expect("valid").workspace;
        let web = ws.enrichment("web");
        assert_eq!(web.ip, crate::IpPolicy::Drop);
        assert_eq!(web.hash_fields, ["traits.email"]);
        assert_eq!(ws.enrichment("other"), crate::SourceEnrichment::default());
        assert!(ws.suppressed_users.is_empty());
        let bad = "enrichment:\n  web: {ip: blur}\n";
        let err = parse(bad, &no_env).expect_err("bad ip").to_string();
        assert!(err.contains("blur"), "{err}");
    }

    #[test]
    fn a_wrong_enum_value_names_its_path() {
        let doc = "sources:\n  - id: web\n    write_key: k\n    protocols: {violations: blok}\n";
        let err = parse(doc, &no_env).expect_err("invalid").to_string();
        assert!(err.contains("violations"), "{err}");
        assert!(err.contains("blok"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let doc = "sources:\n  - id: web\n    write_key: k\n    wirte_key: oops\n";
        let err = parse(doc, &no_env).expect_err("invalid").to_string();
        assert!(err.contains("wirte_key"), "{err}");
    }

    #[test]
    fn an_empty_document_is_refused_but_an_explicitly_empty_one_loads() {
        let err = parse("", &no_env).expect_err("empty file").to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(parse("# only a comment\n", &no_env).is_err());
        let loaded = parse("sources: []", &no_env).expect("explicit");
        assert!(loaded.workspace.sources.is_empty());
    }
}
