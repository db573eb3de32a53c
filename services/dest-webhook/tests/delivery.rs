//! The webhook destination against a real tansu broker and a real HTTP receiver on loopback:
//! events are produced to `cdp.events.enriched`, the receiver answers from a script, and what
//! reaches it, the retry topic and the DLQ is checked.
#![allow(clippy::unwrap_used)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use cdp_dest_webhook::{signature, Webhook};
use cdp_destination::{Config, RetryPolicy};
use cdp_kafka::{headers, KafkaConfig, TopicSpec, Topics};
use cdp_runtime::{Admin, Settings, StageSettings};
use cdp_testkit::{read, wait_for, Broker};
use cdp_workspace::ReloadMetrics;

const SECRET: &str = "s3cret";

/// One answer the receiver gives: status, `Retry-After`, body.
type Answer = (u16, Option<&'static str>, &'static str);

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<(Instant, HeaderMap, Bytes)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    r.received
        .lock()
        .unwrap()
        .push((Instant::now(), headers, body));
    let (status, retry_after, answer) = r
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, None, "ok"));
    let mut response = (StatusCode::from_u16(status).unwrap(), answer).into_response();
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

struct Harness {
    _dir: tempfile::TempDir,
    kafka: KafkaConfig,
    topics: Topics,
    receiver: Arc<Receiver>,
    admin: Admin,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    producer: FutureProducer,
    config: Config,
}

fn start_destination(
    config: Config,
) -> (
    Admin,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let admin = Admin::new();
    let metrics = ReloadMetrics::register(&admin.registry, "cdp_dest").unwrap();
    let rx = cdp_workspace::watch(
        config.common.workspace.clone(),
        Duration::from_millis(50),
        metrics,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let (task_admin, task_stop) = (admin.clone(), stop.clone());
    let task = tokio::spawn(async move {
        cdp_destination::run::<Webhook>("cdp-dest-webhook", config, rx, &task_admin, task_stop)
            .await
    });
    (admin, stop, task)
}

impl Harness {
    async fn start(broker: &Broker, script: Vec<Answer>) -> Harness {
        cdp_testkit::init_telemetry("cdp-dest-webhook-test");
        let receiver = Arc::new(Receiver::default());
        receiver.script.lock().unwrap().extend(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/in", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/in", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let workspace = json!({
            "sources": [{"id": "web", "write_key": "k1"}, {"id": "app", "write_key": "k2"}],
            "destinations": [{
                "id": "hooks", "type": "webhook", "sources": ["web"],
                "settings": {"url": url, "secret": SECRET, "allow_private": true,
                             "headers": {"Authorization": "Bearer token-1"}}
            }]
        });
        std::fs::write(dir.path().join("workspace.yaml"), workspace.to_string()).unwrap();
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let kafka = KafkaConfig {
            brokers: broker.brokers(),
            properties: Vec::new(),
        };
        let topics = Topics::new(&prefix);
        // One partition, so the receiver sees events in the order they were produced.
        kafka
            .ensure_topics(&[TopicSpec {
                name: topics.enriched(),
                partitions: 1,
                replication: 1,
                config: Vec::new(),
            }])
            .await
            .unwrap();
        let config = Config {
            common: settings(dir.path(), &broker.brokers(), &prefix),
            kafka: kafka.clone(),
            destination_id: "hooks".into(),
            from_earliest: true,
            retry: RetryPolicy {
                attempts: 3,
                backoff: Duration::from_millis(50),
                max_wait: Duration::from_secs(2),
                park_delay: Duration::from_secs(60),
            },
            stage: StageSettings {
                group: format!("cdp-dest-hooks-{prefix}"),
                max_in_flight: 1000,
                delivery_timeout: Duration::from_secs(30),
                linger: Duration::from_millis(1),
            },
        };
        let (admin, stop, task) = start_destination(config.clone());
        let producer = kafka
            .producer("test", Duration::from_secs(10), Duration::from_millis(1))
            .unwrap();
        Harness {
            _dir: dir,
            kafka,
            topics,
            receiver,
            admin,
            stop,
            task,
            producer,
            config,
        }
    }

    /// Stops the destination and starts a new one in the same consumer group.
    async fn restart(&mut self) {
        self.stop.cancel();
        (&mut self.task).await.unwrap().unwrap();
        let (admin, stop, task) = start_destination(self.config.clone());
        (self.admin, self.stop, self.task) = (admin, stop, task);
    }

    async fn send(&self, source: &str, event: &Value) {
        let received_at = chrono_now();
        let record_headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::SOURCE_ID,
                value: Some(source),
            })
            .insert(Header {
                key: headers::RECEIVED_AT,
                value: Some(&received_at),
            });
        let payload = event.to_string();
        let topic = self.topics.enriched();
        self.producer
            .send(
                FutureRecord::to(&topic)
                    .key("k")
                    .payload(&payload)
                    .headers(record_headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    fn received(&self) -> Vec<(Instant, HeaderMap, Bytes)> {
        self.receiver.received.lock().unwrap().clone()
    }

    fn wait_for_requests(&self, n: usize) {
        wait_for(Duration::from_secs(30), || self.received().len() >= n);
    }

    fn metrics(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.admin.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// Stops the destination while the broker is still up (its last commit needs it).
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn settings(dir: &Path, brokers: &str, prefix: &str) -> Settings {
    Settings {
        workspace: dir.join("workspace.yaml"),
        workspace_poll: Duration::from_millis(50),
        kafka_brokers: brokers.into(),
        topic_prefix: prefix.into(),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        create_topics: true,
        topic_partitions: 1,
        topic_replication: 1,
    }
}

fn track(id: &str) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": id,
           "properties": {"total": 10}})
}

fn has_metric(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_posted_signed_with_the_configured_headers() {
    let broker = Broker::memory();
    let h = Harness::start(&broker, Vec::new()).await;
    h.send("web", &track("m1")).await;
    h.send("web", &track("m2")).await;
    h.wait_for_requests(2);
    let received = h.received();
    for ((_, headers, body), id) in received.iter().zip(["m1", "m2"]) {
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["messageId"], id);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["authorization"], "Bearer token-1");
        let expected = format!(
            "sha256={}",
            signature::hmac_sha256_hex(SECRET.as_bytes(), body)
        );
        assert_eq!(headers["x-signature"].to_str().unwrap(), expected);
    }
    wait_for(Duration::from_secs(5), || {
        has_metric(
            &h.metrics(),
            r#"cdp_dest_events_total{destination="hooks",outcome="delivered"} 2"#,
        )
    });
    let metrics = h.metrics();
    assert!(
        has_metric(
            &metrics,
            r#"cdp_dest_end_to_end_seconds_count{destination="hooks"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        has_metric(
            &metrics,
            r#"cdp_dest_attempts_total{destination="hooks",result="delivered"} 2"#
        ),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_in_process_until_it_succeeds() {
    let broker = Broker::memory();
    let h = Harness::start(&broker, vec![(500, None, "oops"), (502, None, "oops")]).await;
    h.send("web", &track("m1")).await;
    h.wait_for_requests(3);
    wait_for(Duration::from_secs(5), || {
        has_metric(
            &h.metrics(),
            r#"cdp_dest_events_total{destination="hooks",outcome="delivered"} 1"#,
        )
    });
    let metrics = h.metrics();
    assert!(
        has_metric(
            &metrics,
            r#"cdp_dest_attempts_total{destination="hooks",result="retry"} 2"#
        ),
        "{metrics}"
    );
    assert!(read(&h.kafka, &h.topics.dest_retry("hooks"), 0)
        .await
        .is_empty());
    assert!(read(&h.kafka, &h.topics.dest_dlq("hooks"), 0)
        .await
        .is_empty());
    assert_eq!(h.received().len(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_as_long_as_retry_after_says() {
    let broker = Broker::memory();
    let h = Harness::start(&broker, vec![(429, Some("1"), "slow down")]).await;
    h.send("web", &track("m1")).await;
    h.wait_for_requests(2);
    let received = h.received();
    let waited = received[1].0 - received[0].0;
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    wait_for(Duration::from_secs(5), || {
        has_metric(
            &h.metrics(),
            r#"cdp_dest_events_total{destination="hooks",outcome="delivered"} 1"#,
        )
    });
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_goes_to_the_dlq_with_the_receivers_answer() {
    let broker = Broker::memory();
    let h = Harness::start(&broker, vec![(400, None, "field total must be a string")]).await;
    h.send("web", &track("m1")).await;
    h.send("web", &track("m2")).await;
    let dlq = read(&h.kafka, &h.topics.dest_dlq("hooks"), 1).await;
    let r = &dlq[0];
    assert_eq!(r.value["messageId"], "m1");
    assert_eq!(r.header(headers::ERROR_CODE), Some("http_400"));
    assert_eq!(r.header(headers::HTTP_STATUS), Some("400"));
    assert_eq!(
        r.header(headers::ERROR_MESSAGE),
        Some("field total must be a string")
    );
    assert_eq!(r.header(headers::STAGE), Some("dest-hooks"));
    assert_eq!(
        r.header(headers::ORIGIN_TOPIC),
        Some(h.topics.enriched().as_str())
    );
    assert_eq!(r.header(headers::ATTEMPTS), Some("1"));
    assert_eq!(r.header(headers::SOURCE_ID), Some("web"));
    // Not retried, and the next event still flows.
    h.wait_for_requests(2);
    let received = h.received();
    assert_eq!(received.len(), 2);
    let second: Value = serde_json::from_slice(&received[1].2).unwrap();
    assert_eq!(second["messageId"], "m2");
    wait_for(Duration::from_secs(5), || {
        has_metric(
            &h.metrics(),
            r#"cdp_dest_events_total{destination="hooks",outcome="dead_letter"} 1"#,
        )
    });
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_still_failing_after_the_in_process_attempts_is_parked_with_its_due_time() {
    let broker = Broker::memory();
    let h = Harness::start(&broker, vec![(503, None, "down"); 3]).await;
    h.send("web", &track("m1")).await;
    let parked = read(&h.kafka, &h.topics.dest_retry("hooks"), 1).await;
    let r = &parked[0];
    assert_eq!(r.value["messageId"], "m1");
    assert_eq!(r.header(headers::ERROR_CODE), Some("http_503"));
    assert_eq!(r.header(headers::ATTEMPTS), Some("3"));
    let due = r.header(headers::DUE_AT).unwrap().to_string();
    let first = r.header(headers::FIRST_ATTEMPT_AT).unwrap().to_string();
    // Due one park delay (60 s) later: same format, so a string comparison orders them.
    assert!(due > first, "due {due} not after {first}");
    assert_eq!(h.received().len(), 3);
    assert!(read(&h.kafka, &h.topics.dest_dlq("hooks"), 0)
        .await
        .is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_not_for_this_destination_are_skipped_and_counted() {
    let broker = Broker::memory();
    let h = Harness::start(&broker, Vec::new()).await;
    h.send("app", &track("other-source")).await;
    let mut off = track("all-false");
    off["integrations"] = json!({"All": false});
    h.send("web", &off).await;
    let mut named_off = track("webhook-false");
    named_off["integrations"] = json!({"Webhook": false});
    h.send("web", &named_off).await;
    let mut named_on = track("all-false-webhook-true");
    named_on["integrations"] = json!({"All": false, "Webhook": true});
    h.send("web", &named_on).await;
    h.send("web", &track("plain")).await;
    h.wait_for_requests(2);
    wait_for(Duration::from_secs(5), || {
        has_metric(
            &h.metrics(),
            r#"cdp_dest_events_total{destination="hooks",outcome="delivered"} 2"#,
        )
    });
    let ids: Vec<Value> = h
        .received()
        .iter()
        .map(|(_, _, body)| serde_json::from_slice::<Value>(body).unwrap()["messageId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("all-false-webhook-true"), json!("plain")]);
    let metrics = h.metrics();
    assert!(
        has_metric(
            &metrics,
            r#"cdp_dest_skipped_total{destination="hooks",reason="source"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        has_metric(
            &metrics,
            r#"cdp_dest_skipped_total{destination="hooks",reason="integrations"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        has_metric(
            &metrics,
            r#"cdp_dest_events_total{destination="hooks",outcome="skipped"} 3"#
        ),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_waiting_to_retry_leaves_the_event_to_the_next_run() {
    let broker = Broker::memory();
    let mut h = Harness::start(&broker, vec![(503, Some("2"), "busy")]).await;
    h.send("web", &track("m1")).await;
    h.wait_for_requests(1);
    // Stopped during the 2 s wait: neither delivered nor parked, so its offset is not stored.
    h.restart().await;
    h.wait_for_requests(2);
    let received = h.received();
    let second: Value = serde_json::from_slice(&received[1].2).unwrap();
    assert_eq!(second["messageId"], "m1");
    wait_for(Duration::from_secs(5), || {
        has_metric(
            &h.metrics(),
            r#"cdp_dest_events_total{destination="hooks",outcome="delivered"} 1"#,
        )
    });
    assert!(read(&h.kafka, &h.topics.dest_retry("hooks"), 0)
        .await
        .is_empty());
    h.stop().await;
}
