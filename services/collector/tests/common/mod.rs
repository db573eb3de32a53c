//! Test harness: a real tansu broker per test, the real router on `127.0.0.1:0`, a consumer to read
//! back what landed in Kafka.
#![allow(dead_code, clippy::unwrap_used)]

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use cdp_collector::{AppState, Config};
use cdp_kafka::{KafkaConfig, Topics};
use cdp_runtime::{Admin, Settings};
use cdp_workspace::ReloadMetrics;

pub const WRITE_KEY: &str = "test-write-key";
pub const SOURCE_ID: &str = "web";

/// A tansu broker process, stopped when dropped.
///
/// `port` is what clients use. A durable broker sits behind a small TCP forwarder on that port, the
/// way a Kubernetes Service fronts a pod: a killed broker leaves its port in TIME_WAIT, and tansu
/// cannot bind it again straight away, so a restarted broker listens on a new port behind the same
/// address (and advertises that address).
pub struct Broker {
    pub port: u16,
    listen_port: Arc<AtomicU16>,
    storage: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// In-memory storage: fast, gone with the process.
    pub fn memory() -> Broker {
        let port = free_port();
        Self::start("memory://tansu/".into(), port, port)
    }

    /// SQLite storage in a temp dir, behind a forwarder: survives a restart, for outage tests.
    /// Needs a Tokio runtime.
    pub async fn durable() -> Broker {
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = front.local_addr().unwrap().port();
        let b = Self::start("sqlite://tansu.db".into(), port, free_port());
        tokio::spawn(forward(front, b.listen_port.clone()));
        b
    }

    fn start(storage: String, port: u16, listen_port: u16) -> Broker {
        let mut b = Broker {
            port,
            listen_port: Arc::new(AtomicU16::new(listen_port)),
            storage,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.spawn_process();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts the broker again on the same storage (durable brokers only keep their data).
    pub fn restart(&mut self) {
        self.stop();
        if self.listen_port.load(Ordering::SeqCst) != self.port {
            self.listen_port.store(free_port(), Ordering::SeqCst);
        }
        self.spawn_process();
    }

    fn spawn_process(&mut self) {
        let listen_port = self.listen_port.load(Ordering::SeqCst);
        let listen = format!("tcp://127.0.0.1:{listen_port}");
        let advertised = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(self.dir.path())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu on PATH (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        wait_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", listen_port)).is_ok()
        });
    }
}

/// Forwards each connection to the broker's current port; refuses (closes) while it is down.
async fn forward(front: tokio::net::TcpListener, backend: Arc<AtomicU16>) {
    while let Ok((mut client, _)) = front.accept().await {
        let port = backend.load(Ordering::SeqCst);
        tokio::spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let _copied = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("TANSU_BIN").map_or_else(|| PathBuf::from("tansu"), PathBuf::from)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 20 ms until it holds; panics after `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
        init_telemetry();
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
            create_topics: true,
            topic_partitions: 2,
            topic_replication: 1,
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

    /// Reads `topic` from the start until `n` records are there (panics after 20 s), then checks
    /// for a moment that no extra record follows.
    pub async fn read(&self, topic: &str, n: usize) -> Vec<Record> {
        let group = format!("test-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = self.kafka.consumer("test", &group, true).unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {n} records arrived in {topic}",
                out.len()
            );
            if let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await {
                out.push(Record::from(&m));
            }
        }
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await {
            panic!("unexpected extra record in {topic}: {:?}", Record::from(&m));
        }
        out
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
        write_atomically(&self.workspace_path, text);
    }
}

/// Installs the same telemetry as the binary (once per test process), so records carry trace context.
fn init_telemetry() {
    static GUARD: std::sync::OnceLock<cdp_runtime::telemetry::TelemetryGuard> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| cdp_runtime::telemetry::init("cdp-collector-test").unwrap());
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: serde_json::Value,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl From<&BorrowedMessage<'_>> for Record {
    fn from(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            value: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
            headers,
        }
    }
}
