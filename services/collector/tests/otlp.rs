//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the request span is exported over OTLP/HTTP and
//! its trace id is the one in the record's `traceparent` header, so the next stage joins the trace.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Bytes;
use axum::routing::post;
use common::{Broker, TestApp};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_request_span_is_exported_with_the_trace_id_carried_in_kafka() {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = received.clone();
    let otlp = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| async move {
            sink.lock().unwrap().push(body);
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, otlp).await });
    // This test binary's telemetry is initialised by the first TestApp, after these are set.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");

    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let resp = app
        .post("/v1/track", &json!({"userId": "u", "event": "Traced"}))
        .await;
    assert_eq!(resp.status(), 200);
    let record = app.read(&app.topics.raw(), 1).await.remove(0);
    let traceparent = record.header("traceparent").unwrap().to_string();
    let trace_hex = traceparent.split('-').nth(1).unwrap();
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();

    common::wait_for(Duration::from_secs(15), || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|body| contains(body, &trace_id) && contains(body, b"http.request"))
    });
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
