//! Slow, idle and too many clients: header and idle timeouts, the connection cap, graceful shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::{Broker, Options, TestApp, WRITE_KEY};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A keep-alive `POST /v1/track` as raw HTTP/1.1.
fn track_request(message_id: &str) -> Vec<u8> {
    let (mut head, body) = track_request_parts(message_id, "");
    head.extend(body);
    head
}

/// The head (with `extra_headers`, each ending in CRLF) and body of a `POST /v1/track`.
fn track_request_parts(message_id: &str, extra_headers: &str) -> (Vec<u8>, Vec<u8>) {
    let body = format!(r#"{{"userId":"u","event":"E","messageId":"{message_id}"}}"#);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: collector\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    );
    (head.into_bytes(), body.into_bytes())
}

/// Reads one response (head and `Content-Length` body) and returns its status code.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    head[9..12].parse().unwrap()
}

/// Waits until the server closes `stream` (EOF or reset) and returns when that happened; panics
/// if it stays open for `limit`.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> Instant {
    let mut chunk = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept the connection open for {limit:?}"))
}

fn wait_for_metric(app: &TestApp, series: &str, want: f64) {
    common::wait_for(Duration::from_secs(10), || app.metric(series) == Some(want));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let broker = Broker::memory();
    let app = TestApp::spawn_with(
        &broker,
        Options {
            header_timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let opened = Instant::now();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let closed = closed_by_server(&mut silent, Duration::from_secs(5)).await;
    assert!(
        closed - opened >= Duration::from_millis(250),
        "closed early"
    );
    wait_for_metric(
        &app,
        r#"cdp_collector_http_connection_timeouts_total{reason="header"}"#,
        1.0,
    );
    wait_for_metric(&app, "cdp_collector_http_connections_open", 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_trickled_byte_by_byte_is_closed_after_the_header_timeout() {
    let broker = Broker::memory();
    let app = TestApp::spawn_with(
        &broker,
        Options {
            header_timeout: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let opened = Instant::now();
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"POST /v1/track HTTP/1.1\r\nHost: c\r\n")
        .await
        .unwrap();
    // A slowloris client: one header byte every 50 ms, each one well inside any per-read timeout.
    let trickle = tokio::spawn(async move {
        for b in b"X-Slow: ".iter().cycle() {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut chunk = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("a trickled head keeps the connection open no longer than the header timeout");
    trickle.abort();
    assert!(
        closed - opened >= Duration::from_millis(450),
        "closed early"
    );
    wait_for_metric(
        &app,
        r#"cdp_collector_http_connection_timeouts_total{reason="header"}"#,
        1.0,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let broker = Broker::memory();
    let app = TestApp::spawn_with(
        &broker,
        Options {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
            ..Options::default()
        },
    )
    .await;
    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(&track_request("ka-1")).await.unwrap();
    assert_eq!(read_response(&mut conn).await, 200);
    // Idle for twice the header timeout: idle time is not head time, so the connection stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    conn.write_all(&track_request("ka-2")).await.unwrap();
    assert_eq!(read_response(&mut conn).await, 200);
    let answered = Instant::now();
    let closed = closed_by_server(&mut conn, Duration::from_secs(6)).await;
    assert!(
        closed - answered >= Duration::from_millis(1200),
        "closed after {:?}, before the idle timeout",
        closed - answered
    );
    wait_for_metric(
        &app,
        r#"cdp_collector_http_connection_timeouts_total{reason="idle"}"#,
        1.0,
    );
    assert_eq!(
        app.metric(r#"cdp_collector_http_connection_timeouts_total{reason="header"}"#),
        Some(0.0)
    );
    app.read(&app.topics.raw(), 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_wait_in_the_backlog_until_one_closes() {
    let broker = Broker::memory();
    let app = TestApp::spawn_with(
        &broker,
        Options {
            max_connections: 2,
            ..Options::default()
        },
    )
    .await;
    let first = TcpStream::connect(app.addr).await.unwrap();
    let _second = TcpStream::connect(app.addr).await.unwrap();
    wait_for_metric(&app, "cdp_collector_http_connections_open", 2.0);

    let http = app.http.clone();
    let url = app.url("/v1/track");
    let mut third = tokio::spawn(async move {
        http.post(url)
            .basic_auth(WRITE_KEY, Some(""))
            .body(r#"{"userId":"u","event":"E"}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    // The third connection is made (the kernel completes the handshake) but not accepted.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut third)
            .await
            .is_err(),
        "a connection over the cap was served"
    );
    assert_eq!(app.metric("cdp_collector_http_connections_open"), Some(2.0));

    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_silent_connections_never_exceeds_the_cap_and_real_clients_get_through() {
    const CAP: f64 = 20.0;
    const FLOOD: usize = 200;
    let broker = Broker::memory();
    let app = TestApp::spawn_with(
        &broker,
        Options {
            max_connections: CAP as u32,
            header_timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // The collector takes the flood CAP at a time, each connection for one header timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut most = 0.0f64;
    while app.metric(r#"cdp_collector_http_connection_timeouts_total{reason="header"}"#)
        < Some(FLOOD as f64)
    {
        assert!(
            Instant::now() < deadline,
            "the flood was not drained in 30 s"
        );
        most = most.max(app.metric("cdp_collector_http_connections_open").unwrap());
        assert!(most <= CAP, "{most} connections open, cap {CAP}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most > 0.0);
    let resp = app
        .post(
            "/v1/track",
            &serde_json::json!({"userId":"u","event":"After"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let raw = app.read(&app.topics.raw(), 1).await;
    assert_eq!(raw[0].value["event"], "After");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_unused_connections_finishes_the_request_in_progress_and_flushes() {
    let broker = Broker::memory();
    let mut app = TestApp::spawn_with(
        &broker,
        Options {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..Options::default()
        },
    )
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(&track_request("before")).await.unwrap();
    assert_eq!(read_response(&mut idle).await, 200);
    // A request in progress: the handler has asked for the body (hyper says `100 Continue` then),
    // and the client has not sent it yet.
    let (head, body) = track_request_parts("during", "Expect: 100-continue\r\n");
    let mut busy = TcpStream::connect(app.addr).await.unwrap();
    busy.write_all(&head).await.unwrap();
    assert_eq!(read_response(&mut busy).await, 100);
    wait_for_metric(&app, "cdp_collector_http_connections_open", 3.0);

    let stopped = app.shutdown();
    closed_by_server(&mut silent, Duration::from_secs(5)).await;
    closed_by_server(&mut idle, Duration::from_secs(5)).await;
    assert!(
        !stopped.is_finished(),
        "returned with a request in progress"
    );
    busy.write_all(&body).await.unwrap();
    assert_eq!(read_response(&mut busy).await, 200);
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("serve returns once every connection is closed")
        .unwrap()
        .unwrap();
    let ids: Vec<_> = app
        .read(&app.topics.raw(), 2)
        .await
        .iter()
        .map(|r| r.value["messageId"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"during".to_string()), "{ids:?}");
}
