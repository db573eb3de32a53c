//! End to end through a real tansu broker: valid records in, enriched records out, duplicates and
//! suppressed users dropped, poison records dead-lettered, and a replay after a restart removed by
//! the window rebuilt from the enriched topic.
#![allow(clippy::unwrap_used)]

#[path = "../../../shared/enrich/tests/support/geodb.rs"]
mod geodb;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use cdp_kafka::{headers, KafkaConfig, TopicSpec, Topics};
use cdp_runtime::{Admin, Settings};
use cdp_testkit::{read, wait_for, Broker, Record};
use cdp_workspace::ReloadMetrics;

const BRIEF_EVENTS: &str = include_str!("../../../tests/fixtures/brief/brief-events.json");

const WORKSPACE: &str = r#"
sources:
  - id: web
    write_key: web-key
  - id: app
    write_key: app-key
enrichment:
  web: {ip: truncate, hash_fields: [traits.email]}
suppressed_users: [usr_deleted]
"#;

struct Enricher {
    dir: tempfile::TempDir,
    kafka: KafkaConfig,
    topics: Topics,
    admin: Admin,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    producer: FutureProducer,
}

fn settings(dir: &Path, brokers: &str, prefix: &str) -> Settings {
    Settings {
        workspace: dir.join("workspace.yaml"),
        workspace_poll: Duration::from_millis(50),
        kafka_brokers: brokers.into(),
        topic_prefix: prefix.into(),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        create_topics: true,
        topic_partitions: 2,
        topic_replication: 1,
    }
}

impl Enricher {
    async fn start(broker: &Broker) -> Enricher {
        cdp_testkit::init_telemetry("cdp-enricher-test");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("workspace.yaml"), WORKSPACE).unwrap();
        std::fs::write(dir.path().join("geo.mmdb"), geodb::bytes()).unwrap();
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let kafka = KafkaConfig {
            brokers: broker.brokers(),
            properties: Vec::new(),
        };
        let topics = Topics::new(prefix);
        // The valid topic exists before anything is produced to it (as the validator makes it).
        let specs: Vec<TopicSpec> = [
            topics.valid(),
            topics.enriched(),
            topics.stage_dlq("enricher"),
        ]
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: 2,
            replication: 1,
            config: Vec::new(),
        })
        .collect();
        kafka.ensure_topics(&specs).await.unwrap();
        let producer = kafka
            .producer("test", Duration::from_secs(5), Duration::ZERO)
            .unwrap();
        let mut e = Enricher {
            dir,
            kafka,
            topics,
            admin: Admin::new(),
            stop: CancellationToken::new(),
            task: tokio::spawn(async { Ok(()) }),
            producer,
        };
        e.run("cdp-enricher");
        e
    }

    /// Starts the stage in consumer group `group` (a new group re-reads the valid topic from
    /// the start, as a replica does after a crash before its first commit).
    fn run(&mut self, group: &str) {
        let mut config = cdp_enricher::Config::from_env().unwrap();
        config.common = settings(self.dir.path(), &self.kafka.brokers, self.topics.prefix());
        config.kafka = self.kafka.clone();
        config.stage.linger = Duration::from_millis(1);
        config.stage.group = group.into();
        config.geoip_db = Some(self.dir.path().join("geo.mmdb"));
        let admin = Admin::new();
        let metrics = ReloadMetrics::register(&admin.registry, "cdp_enricher").unwrap();
        let rx = cdp_workspace::watch(
            config.common.workspace.clone(),
            Duration::from_millis(50),
            metrics,
        )
        .unwrap();
        let stop = CancellationToken::new();
        let (task_admin, task_stop) = (admin.clone(), stop.clone());
        self.task =
            tokio::spawn(
                async move { cdp_enricher::run(config, rx, &task_admin, task_stop).await },
            );
        self.admin = admin;
        self.stop = stop;
    }

    /// Stops while the broker is still up (the consumer's last commit needs it).
    async fn stop(&mut self) {
        self.stop.cancel();
        (&mut self.task).await.unwrap().unwrap();
    }

    async fn publish(&self, key: &str, source: Option<&str>, payload: &[u8]) {
        let mut h = OwnedHeaders::new().insert(Header {
            key: headers::RECEIVED_AT,
            value: Some("2026-12-03T10:00:00.000Z"),
        });
        if let Some(source) = source {
            h = h.insert(Header {
                key: headers::SOURCE_ID,
                value: Some(source),
            });
        }
        self.producer
            .send(
                FutureRecord::to(&self.topics.valid())
                    .key(key)
                    .payload(payload)
                    .headers(h),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }

    async fn publish_event(&self, source: &str, event: &Value) {
        let key = format!(
            "{source}:{}",
            event["userId"]
                .as_str()
                .or(event["anonymousId"].as_str())
                .unwrap()
        );
        self.publish(&key, Some(source), event.to_string().as_bytes())
            .await;
    }

    fn metrics(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.admin.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The value of one counter line (0 when it is not there yet).
    fn counter(&self, line_start: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Enricher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The brief's events as a browser would send them, each with its own messageId.
fn brief_events() -> Vec<Value> {
    let mut events: Vec<Value> = serde_json::from_str(BRIEF_EVENTS).unwrap();
    for (i, e) in events.iter_mut().enumerate() {
        e["messageId"] = json!(format!("brief-{i}"));
        e["receivedAt"] = json!("2026-12-03T10:00:00.000Z");
        e["sentAt"] = json!("2026-12-03T07:00:00.000Z");
        e["timestamp"] = json!("2026-12-03T06:59:50.000Z");
    }
    events
}

fn by_message_id<'a>(records: &'a [Record], id: &str) -> &'a Record {
    records
        .iter()
        .find(|r| r.value["messageId"] == id)
        .unwrap_or_else(|| panic!("no record with messageId {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_come_out_enriched_once_and_suppressed_users_never() {
    let broker = Broker::memory();
    let mut e = Enricher::start(&broker).await;
    let events = brief_events();
    for ev in &events {
        e.publish_event("web", ev).await;
    }
    // A client retry of the identify call, and a user who asked to be forgotten.
    e.publish_event("web", &events[2]).await;
    e.publish_event(
        "web",
        &json!({"type": "track", "event": "Viewed", "userId": "usr_deleted", "messageId": "gone"}),
    )
    .await;
    e.publish_event(
        "app",
        &json!({"type": "identify", "userId": "u2", "messageId": "app-1",
        "traits": {"email": "kept@example.com"}, "context": {"ip": "203.0.113.9"}}),
    )
    .await;

    let out = read(&e.kafka, &e.topics.enriched(), 6).await;
    for r in &out {
        assert!(r.header(headers::SOURCE_ID).is_some());
        assert!(r.header(headers::TRACEPARENT).is_some(), "trace carried on");
    }
    let page = by_message_id(&out, "brief-0");
    // The client clock was 3 h behind and sent 10 s after the event.
    assert_eq!(page.value["timestamp"], "2026-12-03T09:59:50.000Z");
    assert_eq!(page.value["originalTimestamp"], "2026-12-03T06:59:50.000Z");
    assert_eq!(
        page.value["context"]["campaign"],
        json!({"source": "news", "medium": "email", "name": "winter"})
    );
    assert_eq!(
        page.value["context"]["userAgentParsed"]["browser"]["name"],
        "Chrome"
    );
    let sub = by_message_id(&out, "brief-4");
    assert_eq!(sub.value["context"]["location"]["city"], "Amsterdam");
    assert_eq!(sub.value["context"]["location"]["country"], "Netherlands");
    assert_eq!(sub.value["context"]["ip"], "203.0.113.0", "web truncates");
    let identify = by_message_id(&out, "brief-2");
    assert_eq!(
        identify.value["traits"]["email"],
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
    );
    let app = by_message_id(&out, "app-1");
    assert_eq!(app.value["traits"]["email"], "kept@example.com");
    assert_eq!(app.value["context"]["ip"], "203.0.113.9");
    assert!(out.iter().all(|r| r.value["userId"] != "usr_deleted"));

    let m = e.metrics();
    for line in [
        r#"cdp_enricher_events_total{outcome="duplicate",source="web"} 1"#,
        r#"cdp_enricher_events_total{outcome="suppressed",source="web"} 1"#,
        r#"cdp_enricher_events_total{outcome="forwarded",source="web"} 5"#,
        "cdp_enricher_geo_database 1",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
    assert!(e.counter("cdp_enricher_dedupe_ids ") >= 6.0, "{m}");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_the_stage_goes_on() {
    let broker = Broker::memory();
    let mut e = Enricher::start(&broker).await;
    e.publish("web:u1", Some("web"), b"{not json").await;
    e.publish(
        "web:u1",
        None,
        br#"{"type":"track","event":"x","userId":"u1"}"#,
    )
    .await;
    e.publish_event(
        "web",
        &json!({"type": "track", "event": "After", "userId": "u1", "messageId": "after"}),
    )
    .await;

    let dlq = read(&e.kafka, &e.topics.stage_dlq("enricher"), 2).await;
    let not_json = dlq
        .iter()
        .find(|r| r.header(headers::ERROR_CODE) == Some("not_json"))
        .unwrap();
    assert_eq!(not_json.payload, b"{not json");
    assert_eq!(
        not_json.header(headers::ORIGIN_TOPIC),
        Some(e.topics.valid().as_str())
    );
    assert!(not_json.header(headers::ORIGIN_PARTITION).is_some());
    assert!(not_json.header(headers::ORIGIN_OFFSET).is_some());
    assert_eq!(not_json.header(headers::STAGE), Some("enricher"));
    assert!(dlq
        .iter()
        .any(|r| r.header(headers::ERROR_CODE) == Some("no_source")));
    let out = read(&e.kafka, &e.topics.enriched(), 1).await;
    assert_eq!(out[0].value["messageId"], "after");
    assert!(e
        .metrics()
        .contains(r#"cdp_enricher_dead_letters_total{code="not_json"} 1"#));
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_restart_is_removed_by_the_window_rebuilt_from_the_enriched_topic() {
    let broker = Broker::memory();
    let mut e = Enricher::start(&broker).await;
    let event = |i: usize| {
        json!({"type": "track", "event": "Step", "userId": format!("u{}", i % 7),
               "messageId": format!("m-{i}")})
    };
    for i in 0..40 {
        e.publish_event("web", &event(i)).await;
    }
    read(&e.kafka, &e.topics.enriched(), 40).await;
    e.stop().await;

    // A new process whose group has no committed offsets re-reads all 40 (a crash before the
    // commit), and meanwhile 10 new events and a retry of an old one arrived.
    for i in 40..50 {
        e.publish_event("web", &event(i)).await;
    }
    e.publish_event("web", &event(3)).await;
    e.run("cdp-enricher-replacement");
    wait_for(Duration::from_secs(30), || {
        e.counter(r#"cdp_enricher_events_total{outcome="duplicate",source="web"} "#) >= 41.0
            && e.counter(r#"cdp_enricher_events_total{outcome="forwarded",source="web"} "#) >= 10.0
    });
    let out = read(&e.kafka, &e.topics.enriched(), 50).await;
    let ids: std::collections::HashSet<_> =
        out.iter().map(|r| r.value["messageId"].clone()).collect();
    assert_eq!(ids.len(), 50, "every event exactly once");
    let m = e.metrics();
    assert!(
        m.contains(r#"cdp_enricher_dedupe_rebuilds_total{outcome="ok"} 2"#),
        "{m}"
    );
    assert!(
        e.counter("cdp_enricher_dedupe_rebuilt_ids_total ") >= 40.0,
        "{m}"
    );
    e.stop().await;
}
