//! Test harness: a real tansu broker per test, the real router on `127.0.0.1:0`, a consumer to read
//! back what landed in Kafka.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use cdp_collector::{AppState, Config};
use cdp_kafka::{KafkaConfig, Topics};
use cdp_runtime::{Admin, Settings};
use cdp_workspace::ReloadMetrics;

pub use cdp_testkit::{wait_for, Broker, Record};

pub const WRITE_KEY: &str = "test-write-key";
pub const SOURCE_ID: &str = "web";

/// A running collector with its own topic prefix.
pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub admin: Admin,
    pub topics: Topics,
    pub kafka: KafkaConfig,
    pub workspace_path: PathBuf,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    serve: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub const WORKSPACE: &str =
    "sources:\n  - id: web\n    write_key: test-write-key\n  - id: app\n    write_key: app-key\n";

pub struct Options {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub delivery_timeout: Duration,
    /// librdkafka properties, as `CDP_RDKAFKA_*` would set them.
    pub kafka_properties: Vec<(String, String)>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trusted_proxies: Vec::new(),
            delivery_timeout: Duration::from_secs(5),
            kafka_properties: Vec::new(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
        }
    }
}

impl TestApp {
    pub async fn spawn(broker: &Broker) -> TestApp {
        Self::spawn_with(broker, Options::default()).await
    }

    pub async fn spawn_with(broker: &Broker, opts: Options) -> TestApp {
        cdp_testkit::init_telemetry("cdp-collector-test");
        let dir = tempfile::tempdir().unwrap();
        let workspace_path = dir.path().join("workspace.yaml");
        std::fs::write(&workspace_path, WORKSPACE).unwrap();
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let kafka = KafkaConfig {
            brokers: broker.brokers(),
            properties: opts.kafka_properties,
        };
        let config = Config {
            kafka: kafka.clone(),
            common: Settings {
                workspace: workspace_path.clone(),
                workspace_poll: Duration::from_millis(50),
                kafka_brokers: broker.brokers(),
                topic_prefix: prefix.clone(),
                admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                create_topics: true,
                topic_partitions: 2,
                topic_replication: 1,
            },
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            trusted_proxies: opts.trusted_proxies,
            body_timeout: Duration::from_secs(2),
            header_timeout: opts.header_timeout,
            idle_timeout: opts.idle_timeout,
            max_connections: opts.max_connections,
            delivery_timeout: opts.delivery_timeout,
            linger: Duration::from_millis(1),
        };
        let admin = Admin::new();
        let metrics = ReloadMetrics::register(&admin.registry, "cdp_collector").unwrap();
        let rx = cdp_workspace::watch(workspace_path.clone(), Duration::from_millis(50), metrics)
            .unwrap();
        let state = cdp_collector::build(config, rx, &admin).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let shutdown = CancellationToken::new();
        let serve = tokio::spawn(cdp_collector::serve(
            state.clone(),
            listener,
            shutdown.clone(),
        ));
        TestApp {
            base,
            addr,
            state,
            admin,
            topics: Topics::new(prefix),
            kafka,
            workspace_path,
            http: reqwest::Client::new(),
            shutdown,
            serve: Some(serve),
            _dir: dir,
        }
    }

    /// Starts a graceful shutdown; the returned task ends when `serve` has returned.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        self.shutdown.cancel();
        self.serve.take().expect("shut down once")
    }

    /// The value of one series in `/metrics`, e.g. `cdp_collector_http_connections_open` or
    /// `cdp_collector_http_connection_timeouts_total{reason="header"}`; `None` when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST `body` with Basic auth of the test key.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Reads `topic` from the start until `n` records are there, and checks no extra one follows.
    pub async fn read(&self, topic: &str, n: usize) -> Vec<Record> {
        cdp_testkit::read(&self.kafka, topic, n).await
    }

    pub fn metrics_text(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.admin.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    pub fn write_workspace(&self, text: &str) {
        cdp_testkit::write_atomically(&self.workspace_path, text);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
