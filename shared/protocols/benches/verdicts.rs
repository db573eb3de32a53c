//! Events per second from an event's raw bytes (as a Kafka record value) to its verdict and output
//! bytes, against a 50-event plan, on valid and mixed files. `scripts/bench-protocols.sh` runs it
//! beside the ajv baseline (`scripts/bench/ajv-protocols.mjs`) on the same plan and events.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::PathBuf;

use cdp_protocols::{Engine, Output};
use cdp_workspace::{Protocols, Secret, Source, Workspace};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/protocols")
}

fn engine() -> Engine {
    let text = std::fs::read_to_string(fixtures().join("plan-50.json")).expect("plan-50.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("plan JSON");
    let plan = cdp_workspace::import_plan("bench", &doc).expect("plan");
    let workspace = Workspace {
        sources: vec![Source {
            id: "bench".into(),
            name: None,
            write_key: Secret::new("k"),
            tracking_plan: Some("bench".into()),
            // Allow: an event with violations is rewritten with `context.protocols` and yields one
            // record per violation, the most work a verdict can take.
            protocols: Protocols::default(),
        }],
        tracking_plans: vec![plan],
        ..Workspace::default()
    };
    Engine::build(&workspace).expect("plan compiles")
}

fn events(file: &str) -> Vec<Vec<u8>> {
    let path = fixtures().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (python3 tests/fixtures/protocols/gen.py writes it)",
            path.display()
        )
    });
    text.lines().map(|l| l.as_bytes().to_vec()).collect()
}

fn verdicts(c: &mut Criterion) {
    let engine = engine();
    let mut group = c.benchmark_group("protocols");
    for file in ["events-valid.jsonl", "events-mixed.jsonl"] {
        let events = events(file);
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(file, |b| {
            b.iter(|| {
                let mut out_bytes = 0usize;
                for event in &events {
                    let verdict = engine.evaluate("bench", event).expect("a message");
                    out_bytes += match &verdict.output {
                        Output::Unchanged => event.len(),
                        Output::Rewritten(bytes) => bytes.len(),
                    };
                    out_bytes += verdict.records.iter().map(Vec::len).sum::<usize>();
                }
                black_box(out_bytes)
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = verdicts
}
criterion_main!(benches);
