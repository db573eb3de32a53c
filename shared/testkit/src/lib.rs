//! Test support for every crate's integration tests: a real tansu broker per test (never a mock),
//! reading a topic back, waiting on a condition with a deadline.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdp_kafka::KafkaConfig;

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

/// Reads `topic` from the start until `n` records are there (panics after 20 s), then checks for a
/// moment that no extra record follows.
pub async fn read(kafka: &KafkaConfig, topic: &str, n: usize) -> Vec<Record> {
    let consumer = reader(kafka, topic);
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

/// A consumer assigned every partition of `topic` from the beginning: no consumer group to join,
/// so reading back starts at once.
pub fn reader(kafka: &KafkaConfig, topic: &str) -> StreamConsumer {
    let group = format!("test-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka.consumer("test", &group, true).unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    assert!(assignment.count() > 0, "topic {topic} has no partitions");
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Installs the same telemetry as the binaries (once per test process), so records carry trace
/// context.
pub fn init_telemetry(service: &'static str) {
    static GUARD: std::sync::OnceLock<cdp_runtime::telemetry::TelemetryGuard> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| cdp_runtime::telemetry::init(service).unwrap());
}

/// Replaces a file the way a ConfigMap update or an editor's save does: whole, never half-written.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    /// The payload as JSON (`Null` when it is not JSON; see `payload`).
    pub value: serde_json::Value,
    pub payload: Vec<u8>,
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
            value: serde_json::from_slice(m.payload().unwrap_or_default())
                .unwrap_or(serde_json::Value::Null),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}
