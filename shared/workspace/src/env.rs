//! `${VAR}` and `${VAR:-default}` placeholders inside string values.

use serde_yaml_ng::Value;

use crate::WorkspaceError;

pub(crate) fn resolve(
    doc: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), WorkspaceError> {
    let mut errors = Vec::new();
    walk(doc, String::new(), lookup, &mut errors);
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(WorkspaceError::Many(errors)),
    }
}

fn walk(
    v: &mut Value,
    path: String,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<WorkspaceError>,
) {
    match v {
        Value::String(s) if s.contains("${") => match substitute(s, lookup) {
            Ok(out) => *s = out,
            Err(message) => errors.push(WorkspaceError::field(path, message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = k
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{k:?}"));
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(item, child, lookup, errors);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, lookup, errors),
        _ => {}
    }
}

/// Replaces each `${NAME}` / `${NAME:-default}`; `$${` is a literal `${`.
fn substitute(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated placeholder in {s:?}"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{expr}}}` is not a valid placeholder (use ${{NAME}})"
            ));
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (referenced as ${{{name}}})"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn placeholders_resolve_with_defaults_and_escapes() {
        assert_eq!(substitute("a${KEY}b", &env).as_deref(), Ok("as3cr3tb"));
        assert_eq!(substitute("${MISSING:-dflt}", &env).as_deref(), Ok("dflt"));
        assert_eq!(substitute("$${KEY}", &env).as_deref(), Ok("${KEY}"));
        assert_eq!(substitute("plain", &env).as_deref(), Ok("plain"));
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let err = substitute("${NOPE}", &env).expect_err("unset");
        assert!(err.contains("NOPE"), "{err}");
        assert!(substitute("${KEY", &env).is_err());
        assert!(substitute("${a b}", &env).is_err());
    }

    #[test]
    fn env_values_cannot_inject_yaml_structure() {
        let mut doc: Value = serde_yaml_ng::from_str("k: ${X}").expect("yaml");
        resolve(&mut doc, &|_| Some("{a: 1}\nb: 2".into())).expect("resolves");
        assert_eq!(doc["k"].as_str(), Some("{a: 1}\nb: 2"));
    }
}
