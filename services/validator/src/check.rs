//! `cdp-validator check`: judge a file of events against a plan offline, the way a team's CI would
//! before shipping tracking code. Exit code 1 when any event has a violation.

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use cdp_protocols::{judge, CompiledPlan};
use cdp_workspace::{AllowBlock, AllowOmit, Protocols, ViolationAction};

pub const USAGE: &str = "\
usage: cdp-validator check --plan <plan-file|workspace.yaml> --events <events.jsonl> [--source <id>]

Judges each event (one JSON object per line) and prints every violation; exit 1 if any.
--plan     a tracking plan file (this project's shape, one {name, rules} event rule, or Segment's
           plan/rules JSON), or a workspace document.
--source   with a workspace: judge as this source does (its plan and Protocols settings).
           Without it the workspace must hold exactly one plan, judged strictly.
A plan file is judged strictly: unplanned events, properties and traits are reported too.";

/// Every setting at its strictest, so a check reports everything Protocols could act on.
fn strict() -> Protocols {
    Protocols {
        unplanned_events: AllowBlock::Block,
        violations: ViolationAction::Block,
        unplanned_properties: AllowOmit::Omit,
        unplanned_traits: AllowOmit::Omit,
    }
}

/// Runs the check; returns whether every event passed. Errors are usage or input problems.
pub fn run(args: &[String], out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut plan_path = None;
    let mut events_path = None;
    let mut source = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--plan" => plan_path = Some(value()?),
            "--events" => events_path = Some(value()?),
            "--source" => source = Some(value()?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let (Some(plan_path), Some(events_path)) = (plan_path, events_path) else {
        bail!("--plan and --events are required\n{USAGE}");
    };
    let (plan, settings, source_id) = load_plan(Path::new(&plan_path), source.as_deref())?;
    let file =
        std::fs::File::open(&events_path).with_context(|| format!("cannot open {events_path}"))?;
    let (mut events, mut failed) = (0usize, 0usize);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {events_path}"))?;
        if line.trim().is_empty() {
            continue;
        }
        events += 1;
        let at = format!("{events_path}:{}", n + 1);
        let verdict = match judge(Some(&plan), &settings, &source_id, line.as_bytes()) {
            Ok(v) => v,
            Err(poison) => {
                failed += 1;
                writeln!(out, "{at}: {poison}")?;
                continue;
            }
        };
        if verdict.violations.is_empty() {
            continue;
        }
        failed += 1;
        let name = serde_json::from_str::<Value>(&line)
            .ok()
            .map(|e| describe(&e))
            .unwrap_or_default();
        for v in &verdict.violations {
            writeln!(
                out,
                "{at}: {name}: {}: {} [{}]",
                v.field,
                v.description,
                v.kind.code()
            )?;
        }
    }
    writeln!(
        out,
        "{events} events, {failed} with violations (plan {} version {})",
        plan.id, plan.version
    )?;
    Ok(failed == 0)
}

/// `track "Order Completed"`, `identify`, with the message id when there is one.
fn describe(event: &Value) -> String {
    let kind = event["type"].as_str().unwrap_or("?");
    let mut s = match event["event"].as_str() {
        Some(name) if kind == "track" => format!("track {name:?}"),
        _ => kind.to_string(),
    };
    if let Some(id) = event["messageId"].as_str() {
        s.push_str(&format!(" ({id})"));
    }
    s
}

fn load_plan(
    path: &Path,
    source: Option<&str>,
) -> anyhow::Result<(Arc<CompiledPlan>, Protocols, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not JSON or YAML", path.display()))?;
    let is_workspace = doc.get("sources").is_some() || doc.get("tracking_plans").is_some();
    if !is_workspace {
        if source.is_some() {
            bail!("--source needs a workspace document as --plan");
        }
        let id = path
            .file_stem()
            .map_or("plan".into(), |s| s.to_string_lossy());
        let plan = cdp_workspace::import_plan(&id, &doc)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok((
            Arc::new(CompiledPlan::compile(&plan)?),
            strict(),
            "check".into(),
        ));
    }
    // Write keys do not matter here: unset `${VAR}`s stay as they are instead of failing the load.
    let ws = cdp_workspace::load_with(path, &|name| {
        Some(std::env::var(name).unwrap_or_else(|_| format!("${{{name}}}")))
    })?
    .workspace;
    match source {
        Some(id) => {
            let s = ws
                .source(id)
                .with_context(|| format!("no source {id:?} in {}", path.display()))?;
            let plan_id = s
                .tracking_plan
                .as_deref()
                .with_context(|| format!("source {id:?} has no tracking plan"))?;
            let plan = ws
                .tracking_plan(plan_id)
                .context("plan reference checked on load")?;
            Ok((
                Arc::new(CompiledPlan::compile(plan)?),
                s.protocols.clone(),
                id.to_string(),
            ))
        }
        None => match ws.tracking_plans.as_slice() {
            [plan] => Ok((
                Arc::new(CompiledPlan::compile(plan)?),
                strict(),
                "check".into(),
            )),
            plans => bail!(
                "{} holds {} tracking plans; say which source's to use with --source",
                path.display(),
                plans.len()
            ),
        },
    }
}
