//! `cdp-validator check`: the offline plan check teams run in CI.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn brief(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/brief")
        .join(name)
        .display()
        .to_string()
}

/// The brief's bad events, one JSON object per line.
fn bad_events(dir: &Path) -> PathBuf {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(brief("brief-bad-events.json")).unwrap())
            .unwrap();
    let lines: Vec<String> = cases.iter().map(|c| c["event"].to_string()).collect();
    let path = dir.join("bad.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn check(args: &[&str]) -> (anyhow::Result<bool>, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let result = cdp_validator::check::run(&args, &mut out);
    (result, String::from_utf8(out).unwrap())
}

#[test]
fn each_bad_event_of_the_brief_is_reported_and_the_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let events = bad_events(dir.path());
    let (passed, out) = check(&[
        "--plan",
        &brief("brief-tracking-plan.json"),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(!passed.unwrap(), "{out}");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(brief("brief-bad-events.json")).unwrap())
            .unwrap();
    for (i, case) in cases.iter().enumerate() {
        let expect = case["expect"].as_str().unwrap();
        let line = format!("bad.jsonl:{}: track \"Order Completed\"", i + 1);
        assert!(
            out.lines().any(|l| l.contains(&line) && l.contains(expect)),
            "line {} should say {expect:?}:\n{out}",
            i + 1
        );
    }
    assert!(out.contains("6 events, 6 with violations"), "{out}");
}

#[test]
fn good_events_pass_and_a_workspace_source_is_judged_by_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("good.jsonl");
    std::fs::write(
        &events,
        r#"{"type":"track","event":"Order Completed","userId":"u","properties":{"order_id":"O","total":1,"currency":"USD","coupon":"X"}}
{"type":"page","anonymousId":"a","name":"Home"}
"#,
    )
    .unwrap();
    // Judged strictly as a plan file, the unplanned `coupon` is reported.
    let (passed, out) = check(&[
        "--plan",
        &brief("brief-tracking-plan.json"),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(!passed.unwrap(), "{out}");
    assert!(
        out.contains("properties.coupon: coupon is not in the tracking plan [unplanned_property]"),
        "{out}"
    );

    // As a source that allows unplanned properties, everything passes.
    std::fs::create_dir(dir.path().join("plans")).unwrap();
    std::fs::copy(
        brief("brief-tracking-plan.json"),
        dir.path().join("plans/shop.json"),
    )
    .unwrap();
    let ws = dir.path().join("workspace.yaml");
    std::fs::write(
        &ws,
        "sources: [{id: web, write_key: \"${WEB_KEY}\", tracking_plan: shop}]\ntracking_plans: [{id: shop, file: plans/shop.json}]\n",
    )
    .unwrap();
    let (passed, out) = check(&[
        "--plan",
        ws.to_str().unwrap(),
        "--source",
        "web",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(passed.unwrap(), "{out}");
    assert!(
        out.contains("2 events, 0 with violations (plan shop"),
        "{out}"
    );
}

#[test]
fn usage_and_input_errors_are_errors_not_verdicts() {
    let (r, _) = check(&["--plan", "x.json"]);
    assert!(r.unwrap_err().to_string().contains("--events"));
    let (r, _) = check(&["--plan", "/nonexistent/plan.json", "--events", "e.jsonl"]);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("cannot read /nonexistent/plan.json"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("plan.json");
    std::fs::write(
        &bad,
        r#"{"name": "E", "rules": {"properties": {"n": {"type": "numbr"}}}}"#,
    )
    .unwrap();
    let (r, _) = check(&["--plan", bad.to_str().unwrap(), "--events", "e.jsonl"]);
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("event \"E\"") && err.contains("/properties/n"),
        "{err}"
    );
}
