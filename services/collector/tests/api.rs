//! The collector against a real broker: routes, auth, limits, encodings, bad input, metadata.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::{Broker, Options, TestApp, SOURCE_ID, WRITE_KEY};
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use std::io::Write;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_route_and_short_path_stores_its_type_in_the_raw_topic() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let calls = [
        ("track", "t", json!({"event": "Clicked"})),
        ("identify", "i", json!({"traits": {"email": "a@b.c"}})),
        ("page", "p", json!({"name": "Home"})),
        ("screen", "s", json!({"name": "Main"})),
        ("group", "g", json!({"groupId": "g1"})),
        ("alias", "a", json!({"previousId": "anon-1"})),
    ];
    let mut sent = Vec::new();
    for (long, short, fields) in &calls {
        for path in [format!("/v1/{long}"), format!("/v1/{short}")] {
            let mut msg = fields.clone();
            let id = format!("{long}-{}", path.len());
            msg["userId"] = json!("u1");
            msg["messageId"] = json!(id);
            let (status, b) = body(app.post(&path, &msg).await).await;
            assert_eq!((status, b), (200, json!({"success": true})), "{path}");
            sent.push((id, *long));
        }
    }
    let records = app.read(&app.topics.raw(), sent.len()).await;
    for (id, kind) in sent {
        let r = records
            .iter()
            .find(|r| r.value["messageId"] == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(r.value["type"], kind);
        assert_eq!(r.key, format!("{SOURCE_ID}:u1"));
        assert_eq!(r.header("cdp-source-id"), Some(SOURCE_ID));
        assert!(r
            .header("cdp-received-at")
            .is_some_and(|v| v.ends_with('Z')));
        let tp = r.header("traceparent").expect("traceparent header");
        assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
        assert_eq!(r.value["receivedAt"].as_str(), r.header("cdp-received-at"));
        assert!(r.value.get("writeKey").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_import_and_browser_batch_routes_store_every_item() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    for (i, path) in ["/v1/batch", "/v1/import", "/v1/b"].iter().enumerate() {
        let batch = json!({
            "writeKey": WRITE_KEY,
            "context": {"library": {"name": "test-lib"}},
            "batch": [
                {"type": "track", "event": "A", "anonymousId": format!("anon-{i}"), "messageId": format!("{i}-a")},
                {"type": "identify", "userId": format!("user-{i}"), "messageId": format!("{i}-b")},
            ]
        });
        // The browser batch carries the key in the body only.
        let resp = app
            .http
            .post(app.url(path))
            .header("content-type", "text/plain")
            .body(batch.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(body(resp).await, (200, json!({"success": true})), "{path}");
    }
    let records = app.read(&app.topics.raw(), 6).await;
    for r in &records {
        assert_eq!(r.value["context"]["library"]["name"], "test-lib");
        assert_eq!(r.value["context"]["ip"], "127.0.0.1");
    }
    let anon = records
        .iter()
        .find(|r| r.value["messageId"] == "2-a")
        .unwrap();
    assert_eq!(anon.key, "web:anon-2");
}

#[tokio::test(flavor = "multi_thread")]
async fn write_keys_are_accepted_as_basic_auth_or_in_the_body_and_others_are_401() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let msg = json!({"userId": "u", "event": "E"});
    let url = app.url("/v1/track");

    let basic = app
        .http
        .post(&url)
        .basic_auth(WRITE_KEY, Some(""))
        .body(msg.to_string());
    assert_eq!(basic.send().await.unwrap().status(), 200);
    // Basic without the trailing colon, as older clients send it.
    let bare = base64::engine::general_purpose::STANDARD.encode(WRITE_KEY);
    let resp = app
        .http
        .post(&url)
        .header("authorization", format!("Basic {bare}"))
        .body(msg.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut in_body = msg.clone();
    in_body["writeKey"] = json!("app-key");
    assert_eq!(
        app.http
            .post(&url)
            .body(in_body.to_string())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (status, b) = body(
        app.http
            .post(&url)
            .body(msg.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (401, Some("missing_write_key"))
    );
    assert_eq!(b["success"], false);
    let wrong = app
        .http
        .post(&url)
        .basic_auth("nope", Some(""))
        .body(msg.to_string());
    let (status, b) = body(wrong.send().await.unwrap()).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (401, Some("invalid_write_key"))
    );
    let bearer = app
        .http
        .post(&url)
        .bearer_auth("token")
        .body(msg.to_string());
    let (status, b) = body(bearer.send().await.unwrap()).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (401, Some("invalid_authorization"))
    );

    let records = app.read(&app.topics.raw(), 3).await;
    let sources: Vec<_> = records
        .iter()
        .map(|r| r.header("cdp-source-id").unwrap())
        .collect();
    assert_eq!(sources.iter().filter(|s| **s == "app").count(), 1);
    let text = app.metrics_text();
    assert!(
        text.contains(r#"cdp_collector_auth_failures_total{reason="missing"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cdp_collector_auth_failures_total{reason="unknown"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_bodies_and_batches_get_400_with_a_code() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let big = "x".repeat(33 * 1024);
    let (s, b) = body(
        app.post(
            "/v1/track",
            &json!({"userId":"u","event":"E","properties":{"b":big}}),
        )
        .await,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("payload_too_large")));

    let items: Vec<Value> = (0..20)
        .map(|_| json!({"type":"track","userId":"u","event":"E","properties":{"b":"y".repeat(30_000)}}))
        .collect();
    let (s, b) = body(app.post("/v1/batch", &json!({"batch": items})).await).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("payload_too_large")));

    let items: Vec<Value> = (0..2501)
        .map(|_| json!({"type":"page","userId":"u"}))
        .collect();
    let (s, b) = body(app.post("/v1/batch", &json!({"batch": items})).await).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("too_many_messages")));

    // 2,500 is allowed.
    let items: Vec<Value> = (0..2500)
        .map(|_| json!({"type":"page","userId":"u"}))
        .collect();
    assert_eq!(
        app.post("/v1/batch", &json!({"batch": items}))
            .await
            .status(),
        200
    );
    assert_eq!(app.read(&app.topics.raw(), 2500).await.len(), 2500);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_items_in_a_batch_are_rejected_with_reasons_and_the_good_ones_stored() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "Good", "messageId": "good-1"},
        {"type": "track", "event": "No identity", "messageId": "bad-1"},
        {"type": "track", "userId": "u", "messageId": "bad-2"},
        {"type": "group", "userId": "u", "messageId": "bad-3"},
        {"type": "alias", "userId": "u", "messageId": "bad-4"},
        {"type": "page", "userId": "u", "messageId": "m".repeat(100)},
        {"type": "identify", "userId": "u", "messageId": "good-2"},
    ]});
    let (s, b) = body(app.post("/v1/batch", &batch).await).await;
    assert_eq!(s, 200);
    assert_eq!(b["accepted"], 2);
    let codes: Vec<(u64, &str)> = b["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            (1, "no_user_anon_id"),
            (2, "missing_event"),
            (3, "missing_group_id"),
            (4, "missing_previous_id"),
            (5, "message_id_too_long"),
        ]
    );
    let raw = app.read(&app.topics.raw(), 2).await;
    let mut ids: Vec<_> = raw
        .iter()
        .map(|r| r.value["messageId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["good-1", "good-2"]);
    let rejected = app.read(&app.topics.rejected(), 5).await;
    let bad1 = rejected
        .iter()
        .find(|r| r.value["messageId"] == "bad-1")
        .unwrap();
    assert_eq!(bad1.header("cdp-error-code"), Some("no_user_anon_id"));
    assert!(bad1
        .header("cdp-error-message")
        .unwrap()
        .contains("anonymousId"));
    assert_eq!(bad1.header("cdp-source-id"), Some(SOURCE_ID));
    assert!(app
        .metrics_text()
        .contains(r#"cdp_collector_rejected_total{reason="missing_event"} 1"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_message_that_breaks_the_spec_is_a_400_and_is_kept_in_rejected() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let (s, b) = body(
        app.post(
            "/v1/track",
            &json!({"userId": "u", "messageId": "no-event"}),
        )
        .await,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("missing_event")));
    assert!(b["message"].as_str().unwrap().contains("event"));
    let rejected = app.read(&app.topics.rejected(), 1).await;
    assert_eq!(rejected[0].value["messageId"], "no-event");
    let text = app.metrics_text();
    assert!(
        text.contains(r#"cdp_collector_rejected_total{reason="missing_event"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bodies_are_inflated_and_bombs_and_garbage_are_refused() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let batch =
        json!({"batch": [{"type":"track","userId":"u","event":"Zipped","messageId":"gz-1"}]});
    let send = |bytes: Vec<u8>| {
        app.http
            .post(app.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-encoding", "gzip")
            .body(bytes)
            .send()
    };
    assert_eq!(
        send(gzip(batch.to_string().as_bytes()))
            .await
            .unwrap()
            .status(),
        200
    );
    // 10 MB of spaces inside a valid JSON body compresses to ~10 KB.
    let bomb = format!("{{\"batch\":[]{}}}", " ".repeat(10_000_000));
    let (s, b) = body(send(gzip(bomb.as_bytes())).await.unwrap()).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("payload_too_large")));
    let (s, b) = body(send(b"definitely not gzip".to_vec()).await.unwrap()).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_gzip")));
    let resp = app
        .http
        .post(app.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(body(resp).await.1["code"], "unsupported_encoding");
    let raw = app.read(&app.topics.raw(), 1).await;
    assert_eq!(raw[0].value["event"], "Zipped");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_get_clear_errors_and_the_service_stays_healthy() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let deep = format!(
        "{{\"batch\":[{}{}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/v1/track", b"{\"userId\": ".to_vec(), "invalid_json"),
        (
            "/v1/track",
            b"{\"userId\":\"\xff\xfe\",\"event\":\"E\"}".to_vec(),
            "invalid_json",
        ),
        ("/v1/track", b"[1,2,3]".to_vec(), "invalid_request"),
        ("/v1/track", b"".to_vec(), "invalid_json"),
        ("/v1/batch", deep.clone().into_bytes(), "invalid_json"),
        ("/v1/batch", b"{\"batch\": 5}".to_vec(), "invalid_request"),
        ("/v1/batch", b"{}".to_vec(), "invalid_request"),
        ("/v1/identify", b"null".to_vec(), "invalid_request"),
    ];
    for (path, bytes, code) in cases {
        let resp = app
            .http
            .post(app.url(path))
            .basic_auth(WRITE_KEY, Some(""))
            .body(bytes)
            .send()
            .await
            .unwrap();
        let (s, b) = body(resp).await;
        assert_eq!((s, b["code"].as_str()), (400, Some(code)), "{path}");
        assert_eq!(b["success"], false);
        assert!(!b["message"].as_str().unwrap().is_empty());
    }
    // Still serving, and nothing from the bad requests landed anywhere.
    let ok = app
        .post("/v1/track", &json!({"userId":"u","event":"After"}))
        .await;
    assert_eq!(ok.status(), 200);
    let raw = app.read(&app.topics.raw(), 1).await;
    assert_eq!(raw[0].value["event"], "After");
    let nf = app.http.get(app.url("/v1/nope")).send().await.unwrap();
    assert_eq!(body(nf).await.1["code"], "not_found");
    let get = app.http.get(app.url("/v1/track")).send().await.unwrap();
    let (s, b) = body(get).await;
    assert_eq!((s, b["code"].as_str()), (405, Some("method_not_allowed")));
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_allows_the_headers_the_browser_library_sends() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let resp = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/v1/t"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization,x-retry-count",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["content-type", "authorization", "x-retry-count"] {
        assert!(allowed.contains(needed), "{allowed}");
    }
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    // And the actual request carries the allow-origin header too.
    let resp = app
        .http
        .post(app.url("/v1/t"))
        .header("origin", "https://shop.example")
        .header("content-type", "text/plain")
        .body(json!({"writeKey": WRITE_KEY, "userId": "u", "event": "E"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_document_points_the_browser_library_back_at_the_collector() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let resp = app
        .http
        .get(app.url(&format!("/v1/projects/{WRITE_KEY}/settings")))
        .send()
        .await
        .unwrap();
    let host = app.base.trim_start_matches("http://").to_string();
    let (s, b) = body(resp).await;
    assert_eq!(s, 200);
    let seg = &b["integrations"]["Segment.io"];
    assert_eq!(seg["apiHost"], format!("{host}/v1"));
    assert_eq!(seg["protocol"], "http");
    assert_eq!(seg["apiKey"], WRITE_KEY);
    assert_eq!(b["metrics"]["host"], format!("{host}/v1"));
    let unknown = app
        .http
        .get(app.url("/v1/projects/nope/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    // A forged Host cannot put markup into the (cacheable) document.
    let forged = app
        .http
        .get(app.url(&format!("/v1/projects/{WRITE_KEY}/settings")))
        .header("host", "evil.example/\"><script>")
        .send()
        .await
        .unwrap();
    let (_, b) = body(forged).await;
    assert_eq!(
        b["integrations"]["Segment.io"]["apiHost"],
        "localhost:8080/v1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pixel_always_answers_a_gif_and_stores_valid_events() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let data = base64::engine::general_purpose::STANDARD.encode(
        json!({"writeKey": WRITE_KEY, "userId": "reader", "event": "Email Opened", "messageId": "px-1"})
            .to_string(),
    );
    for query in [
        "data=a&data=b".to_string(),
        format!("data={data}"),
        "data=%%%".to_string(),
        String::new(),
    ] {
        let resp = app
            .http
            .get(app.url(&format!("/v1/pixel/track?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/gif");
        assert!(resp.bytes().await.unwrap().starts_with(b"GIF89a"));
    }
    let raw = app.read(&app.topics.raw(), 1).await;
    assert_eq!(raw[0].value["event"], "Email Opened");
    assert_eq!(raw[0].value["type"], "track");
    let text = app.metrics_text();
    assert!(
        text.contains(
            r#"cdp_collector_http_requests_total{route="/v1/pixel/{kind}",status="200"} 4"#
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_telemetry_is_accepted_and_counted() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let m = json!({"series": [
        {"type": "Counter", "metric": "analytics_js.invoke.track", "value": 1, "tags": {}},
        {"type": "Counter", "metric": "analytics_js.invoke.page", "value": 1, "tags": {}},
    ]});
    let resp = app
        .http
        .post(app.url("/v1/m"))
        .body(m.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(app
        .metrics_text()
        .contains("cdp_collector_client_metric_series_total 2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let broker = Broker::memory();
    let untrusted = TestApp::spawn(&broker).await;
    let trusted = TestApp::spawn_with(
        &broker,
        Options {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            ..Options::default()
        },
    )
    .await;
    for app in [&untrusted, &trusted] {
        let resp = app
            .http
            .post(app.url("/v1/track"))
            .basic_auth(WRITE_KEY, Some(""))
            .header("x-forwarded-for", "198.51.100.7, 127.0.0.2")
            .body(json!({"userId": "u", "event": "E"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        untrusted.read(&untrusted.topics.raw(), 1).await[0].value["context"]["ip"],
        "127.0.0.1"
    );
    assert_eq!(
        trusted.read(&trusted.topics.raw(), 1).await[0].value["context"]["ip"],
        "198.51.100.7"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_write_key_works_after_a_workspace_reload_and_a_broken_edit_changes_nothing() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    let send = |key: &'static str| {
        app.http
            .post(app.url("/v1/track"))
            .basic_auth(key, Some(""))
            .body(json!({"userId": "u", "event": "E"}).to_string())
            .send()
    };
    assert_eq!(send("rotated-key").await.unwrap().status(), 401);
    app.write_workspace("sources:\n  - id: web\n    write_key: rotated-key\n");
    common::wait_for(std::time::Duration::from_secs(10), || {
        app.state.keys.load().lookup("rotated-key").is_some()
    });
    assert_eq!(send("rotated-key").await.unwrap().status(), 200);
    assert_eq!(send(WRITE_KEY).await.unwrap().status(), 401);

    app.write_workspace("sources:\n  - id: web\n    write_key: ''\n");
    common::wait_for(std::time::Duration::from_secs(10), || {
        app.metrics_text()
            .contains(r#"cdp_collector_workspace_reloads_total{outcome="error"} 1"#)
    });
    assert_eq!(send("rotated-key").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_ids_beyond_2_pow_53_land_in_kafka_digit_for_digit() {
    let broker = Broker::memory();
    let app = TestApp::spawn(&broker).await;
    // Raw text: a JSON number this large cannot pass through a serde_json Value without change.
    let post = |path: &'static str, text: &'static str| {
        app.http
            .post(app.url(path))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "application/json")
            .body(text)
            .send()
    };
    let single = r#"{"userId": 12345678901234567890123, "event": "E", "messageId": "big-1"}"#;
    assert_eq!(post("/v1/track", single).await.unwrap().status(), 200);
    let batch = r#"{"batch": [{"type": "group", "messageId": "big-2",
        "anonymousId": 98765432109876543210, "groupId": -123456789012345678901234567890}]}"#;
    assert_eq!(post("/v1/batch", batch).await.unwrap().status(), 200);

    let records = app.read(&app.topics.raw(), 2).await;
    let by_id = |id: &str| records.iter().find(|r| r.value["messageId"] == id).unwrap();
    let track = by_id("big-1");
    assert_eq!(track.value["userId"], "12345678901234567890123");
    assert_eq!(track.key, format!("{SOURCE_ID}:12345678901234567890123"));
    let group = by_id("big-2");
    assert_eq!(group.value["anonymousId"], "98765432109876543210");
    assert_eq!(group.value["groupId"], "-123456789012345678901234567890");
    assert_eq!(group.key, format!("{SOURCE_ID}:98765432109876543210"));
}
