//! Events per second through the whole chain (parse, suppression check, dedupe on, time,
//! campaign, user agent, geo, privacy, serialize) on one core, over the brief's events made
//! browser-like (page with UTM, IP, one of seven user agents) with a unique `messageId` each.
//!
//! `cargo bench -p cdp-enrich --bench chain`

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdp_enrich::{Chain, Dedupe, GeoDb, Input, Outcome, State};

/// The allocator `cdp-enricher` runs with: the chain allocates per event (a JSON tree).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/geodb.rs"]
mod geodb;

const BRIEF_EVENTS: &str = include_str!("../../../tests/fixtures/brief/brief-events.json");
const USER_AGENTS: &str = include_str!("../tests/fixtures/user-agents.json");

/// The brief's five events, each sent from a browser: user agent, page, IP, client timestamps.
fn templates() -> Vec<Value> {
    let events: Vec<Value> = serde_json::from_str(BRIEF_EVENTS).expect("brief events");
    let page = events[0]["context"].clone();
    events
        .into_iter()
        .map(|mut e| {
            let ctx = e["context"].as_object().cloned().unwrap_or_default();
            let mut context = page.as_object().cloned().unwrap_or_default();
            context.extend(ctx);
            context.insert("ip".into(), json!("203.0.113.7"));
            context.insert(
                "library".into(),
                json!({"name": "analytics.js", "version": "next-1.84.0"}),
            );
            e["context"] = Value::Object(context);
            e["timestamp"] = json!("2026-12-03T06:59:55.123Z");
            e["sentAt"] = json!("2026-12-03T07:00:00.000Z");
            e["receivedAt"] = json!("2026-12-03T10:00:00.250Z");
            e
        })
        .collect()
}

fn workspace() -> cdp_workspace::Workspace {
    let doc = "sources:\n  - {id: web, write_key: k}\nenrichment:\n  web: {ip: truncate, hash_fields: [traits.email]}\nsuppressed_users: [someone-else]\n";
    cdp_workspace::parse(doc, &|_| None)
        .expect("workspace")
        .workspace
}

fn chain(c: &mut Criterion) {
    let geo = Arc::new(GeoDb::from_bytes(geodb::bytes()).expect("geo db"));
    let chain = Chain::new(&workspace(), Some(geo));
    let templates = templates();
    let agents: Vec<String> = serde_json::from_str::<Vec<Value>>(USER_AGENTS)
        .expect("user agents")
        .iter()
        .filter_map(|c| c["ua"].as_str().map(String::from))
        .collect();
    // 24 h window, bounded as in production: steady state once full, evictions included.
    let mut state = State::new(Some(Dedupe::new(86_400, 1_000_000)));
    let mut n = 0u64;
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("chain_with_dedupe", |b| {
        b.iter_custom(|iters| {
            let payloads: Vec<Vec<u8>> = (0..iters)
                .map(|i| {
                    n += 1;
                    let mut e = templates[(i % templates.len() as u64) as usize].clone();
                    e["context"]["userAgent"] = json!(agents[(n % agents.len() as u64) as usize]);
                    e["messageId"] = json!(format!("ajs-next-1733212800000-{n:032x}"));
                    serde_json::to_vec(&e).expect("json")
                })
                .collect();
            let now = Utc::now();
            let started = Instant::now();
            for p in &payloads {
                let out = chain.enrich(
                    &Input {
                        payload: p,
                        source: "web",
                        partition: 0,
                        received_at: None,
                    },
                    &mut state,
                    now,
                );
                assert!(matches!(out, Outcome::Forward { .. }));
                black_box(out);
            }
            started.elapsed()
        });
    });
    let ua = templates[0]["context"]["userAgent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    group.bench_function("user_agent_only", |b| {
        b.iter(|| black_box(cdp_enrich::useragent::parse_user_agent(black_box(&ua))))
    });
    let p = serde_json::to_vec(&templates[0]).unwrap_or_default();
    group.bench_function("json_roundtrip_only", |b| {
        b.iter(|| {
            let v: serde_json::Map<String, Value> =
                serde_json::from_slice(black_box(&p)).unwrap_or_default();
            black_box(serde_json::to_vec(&v).unwrap_or_default())
        })
    });
    group.finish();
}

criterion_group!(benches, chain);
criterion_main!(benches);
