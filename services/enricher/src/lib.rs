//! The enricher: the only way from `cdp.events.valid` into `cdp.events.enriched`.
//!
//! Each valid event is checked against the workspace's suppressed users and the partition's
//! `messageId` window, then enriched (`cdp-enrich`: corrected time, campaign, user agent, geo,
//! privacy) and produced to the enriched topic; duplicates and suppressed events are dropped and
//! counted; a record that is not a Segment message goes to `cdp.dlq.enricher` with its origin and
//! a reason. The valid offset is stored only after the output is acknowledged (`cdp_kafka::stage`).

pub mod metrics;
pub mod rebuild;

use arc_swap::ArcSwap;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use cdp_enrich::{Chain, Dedupe, GeoDb, Input, Outcome, State};
use cdp_kafka::headers;
use cdp_kafka::stage::{Output, Stage, StageMetrics};
use cdp_kafka::{KafkaConfig, TopicSpec, Topics};
use cdp_runtime::{env_or, Admin, Settings, SettingsError, StageSettings};
use cdp_workspace::WorkspaceRx;

pub use metrics::Metrics;
use rebuild::Rebuilder;

/// One identity: package, binary, client id, default consumer group.
pub const SERVICE: &str = "cdp-enricher";
const STAGE: &str = "enricher";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: Settings,
    /// Brokers from `CDP_KAFKA_BROKERS` plus `CDP_RDKAFKA_*` client properties.
    pub kafka: KafkaConfig,
    /// Consumer group (default `cdp-enricher`), in-flight bound (default 10000), producer timing.
    pub stage: StageSettings,
    /// `CDP_GEOIP_DB`: a MaxMind-format database (GeoIP2/GeoLite2 City); unset: no geo.
    pub geoip_db: Option<PathBuf>,
    /// `CDP_DEDUPE_WINDOW_SECS` (default 86400); 0 turns dedupe off.
    pub dedupe_window: Duration,
    /// `CDP_DEDUPE_MAX_IDS`: ids held at most, all owned partitions together (default 10000000).
    pub dedupe_max_ids: usize,
    /// `CDP_DEDUPE_REBUILD` (default true): rebuild a partition's window from the enriched topic
    /// before processing it; false keeps windows in memory only (a restart forgets them).
    pub dedupe_rebuild: bool,
    /// `CDP_DEDUPE_REBUILD_TIMEOUT_SECS` (default 60): longest wait for one partition's rebuild.
    pub dedupe_rebuild_timeout: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, SettingsError> {
        let common = Settings::from_env(SERVICE)?;
        let geoip: String = env_or("CDP_GEOIP_DB", String::new())?;
        Ok(Config {
            kafka: KafkaConfig::from_env(&common.kafka_brokers),
            stage: StageSettings::from_env(SERVICE, 10_000)?,
            geoip_db: (!geoip.is_empty()).then(|| PathBuf::from(geoip)),
            dedupe_window: Duration::from_secs(env_or("CDP_DEDUPE_WINDOW_SECS", 86_400)?),
            dedupe_max_ids: env_or("CDP_DEDUPE_MAX_IDS", 10_000_000)?,
            dedupe_rebuild: env_or("CDP_DEDUPE_REBUILD", true)?,
            dedupe_rebuild_timeout: Duration::from_secs(env_or(
                "CDP_DEDUPE_REBUILD_TIMEOUT_SECS",
                60,
            )?),
            common,
        })
    }
}

/// Enriches valid records with the current workspace and says where each output goes.
pub struct Enricher {
    chain: ArcSwap<Chain>,
    geo: Option<Arc<GeoDb>>,
    topics: Topics,
    metrics: Metrics,
}

impl Enricher {
    pub fn new(
        workspace: &cdp_workspace::Workspace,
        geo: Option<Arc<GeoDb>>,
        topics: Topics,
        metrics: Metrics,
    ) -> Self {
        metrics.geo_database.set(i64::from(geo.is_some()));
        Enricher {
            chain: ArcSwap::from_pointee(Chain::new(workspace, geo.clone())),
            geo,
            topics,
            metrics,
        }
    }

    /// A new workspace version: privacy options and suppressed users take effect at once.
    pub fn reload(&self, workspace: &cdp_workspace::Workspace) {
        self.chain
            .store(Arc::new(Chain::new(workspace, self.geo.clone())));
        tracing::info!("enrichment settings reloaded");
    }

    /// The outputs of one valid record (none for a duplicate or a suppressed user).
    pub fn process(&self, message: &BorrowedMessage<'_>, state: &mut State) -> Vec<Output> {
        let input = message.headers();
        let Some(source) = headers::get(input, headers::SOURCE_ID) else {
            // Without its source the privacy options cannot be applied: never pass it on.
            return vec![self.dead_letter(
                message,
                "no_source",
                "the record has no cdp-source-id header",
            )];
        };
        let started = Instant::now();
        let outcome = self.chain.load().enrich(
            &Input {
                payload: message.payload().unwrap_or_default(),
                source,
                partition: message.partition(),
                received_at: headers::get(input, headers::RECEIVED_AT),
            },
            state,
            chrono::Utc::now(),
        );
        self.metrics
            .enrich_seconds
            .observe(started.elapsed().as_secs_f64());
        let count = |outcome: &str| {
            self.metrics
                .events
                .with_label_values(&[source, outcome])
                .inc();
        };
        match outcome {
            Outcome::Forward { payload, failures } => {
                count("forwarded");
                for f in failures.iter() {
                    self.metrics
                        .parse_failures
                        .with_label_values(&[f.as_str()])
                        .inc();
                }
                vec![Output {
                    topic: self.topics.enriched(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload,
                    headers: headers::forward(input),
                }]
            }
            Outcome::Duplicate => {
                count("duplicate");
                tracing::debug!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "duplicate messageId dropped"
                );
                Vec::new()
            }
            Outcome::Suppressed => {
                count("suppressed");
                Vec::new()
            }
            Outcome::Poison { code, reason } => {
                count("dead_letter");
                vec![self.dead_letter(message, code, &reason)]
            }
        }
    }

    fn dead_letter(&self, message: &BorrowedMessage<'_>, code: &str, reason: &str) -> Output {
        self.metrics.dead_letters.with_label_values(&[code]).inc();
        tracing::warn!(
            code,
            reason,
            partition = message.partition(),
            offset = message.offset(),
            "poison record sent to the dead-letter topic"
        );
        Output::dead_letter(message, self.topics.stage_dlq(STAGE), STAGE, code, reason)
    }
}

/// Which partitions' windows are current. A partition's window is (re)built before its first
/// record here, and again when its offsets jump ahead of what this replica processed (another
/// replica had it meanwhile); partitions no longer assigned are forgotten.
struct Windows {
    next_offset: HashMap<i32, i64>,
    checked: Instant,
    rebuild: Option<Rebuilder>,
    consumer: Arc<StreamConsumer>,
}

impl Windows {
    fn before(&mut self, message: &BorrowedMessage<'_>, state: &mut State, metrics: &Metrics) {
        let Some(dedupe) = state.dedupe.as_mut() else {
            return;
        };
        if self.checked.elapsed() > Duration::from_secs(5) {
            self.checked = Instant::now();
            self.drop_revoked(dedupe);
            metrics
                .dedupe_bytes
                .set(i64::try_from(dedupe.memory_bytes()).unwrap_or(i64::MAX));
        }
        let (p, offset) = (message.partition(), message.offset());
        let moved_on = self.next_offset.get(&p).is_some_and(|&next| offset > next);
        if !dedupe.has_partition(p) || moved_on {
            dedupe.reset(p);
            if let Some(rebuild) = &self.rebuild {
                rebuild_now(rebuild, p, dedupe, metrics);
            }
        }
        self.next_offset.insert(p, offset + 1);
    }

    /// Store gauges after the record's id went in.
    fn after(state: &State, metrics: &Metrics) {
        let Some(dedupe) = state.dedupe.as_ref() else {
            return;
        };
        metrics
            .dedupe_ids
            .set(i64::try_from(dedupe.len()).unwrap_or(i64::MAX));
        let evicted = dedupe.evicted();
        let counted = metrics.dedupe_evicted.get();
        if evicted > counted {
            metrics.dedupe_evicted.inc_by(evicted - counted);
        }
    }

    fn drop_revoked(&mut self, dedupe: &mut Dedupe) {
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let owned: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        for p in dedupe.partitions() {
            if !owned.contains(&p) {
                dedupe.forget(p);
                self.next_offset.remove(&p);
                tracing::info!(
                    partition = p,
                    "partition revoked; its dedupe window is dropped"
                );
            }
        }
    }
}

/// Rebuilds inside the synchronous `process` call: the partition must not move on before its
/// window is complete. Blocks this worker thread only (multi-threaded runtime).
fn rebuild_now(rebuild: &Rebuilder, partition: i32, dedupe: &mut Dedupe, metrics: &Metrics) {
    let started = Instant::now();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        // block_in_place needs other worker threads to hand this one's tasks to.
        metrics.dedupe_rebuilds.with_label_values(&["error"]).inc();
        tracing::error!(
            partition,
            "dedupe window not rebuilt: the enricher needs a multi-threaded runtime"
        );
        return;
    }
    let result =
        tokio::task::block_in_place(|| handle.block_on(rebuild.rebuild(partition, dedupe, now_ms)));
    metrics
        .dedupe_rebuild_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(ids) => {
            metrics.dedupe_rebuilds.with_label_values(&["ok"]).inc();
            metrics.dedupe_rebuilt_ids.inc_by(ids as u64);
            tracing::info!(
                partition,
                ids,
                seconds = started.elapsed().as_secs_f64(),
                "dedupe window rebuilt from the enriched topic"
            );
        }
        Err(e @ rebuild::RebuildError::Timeout { .. }) => {
            metrics
                .dedupe_rebuilds
                .with_label_values(&["timeout"])
                .inc();
            tracing::error!(error = %e, "dedupe window only partly rebuilt; replayed duplicates may pass");
        }
        Err(e) => {
            metrics.dedupe_rebuilds.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "dedupe window not rebuilt; replayed duplicates may pass");
        }
    }
    metrics
        .dedupe_bytes
        .set(i64::try_from(dedupe.memory_bytes()).unwrap_or(i64::MAX));
}

/// Opens the geo database, or says once that there is none.
pub fn open_geo(path: Option<&std::path::Path>) -> anyhow::Result<Option<Arc<GeoDb>>> {
    match path {
        Some(path) => {
            let db = GeoDb::open(path)?;
            tracing::info!(path = %path.display(), kind = db.kind(), "geo database loaded");
            Ok(Some(Arc::new(db)))
        }
        None => {
            tracing::info!("no geo database (CDP_GEOIP_DB unset): context.location is not filled");
            Ok(None)
        }
    }
}

/// Partition counts of the valid and enriched topics, which must match for rebuilds.
fn partitions(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<usize> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md.topics().first().map_or(0, |t| t.partitions().len()))
}

/// Builds the enricher and consumes until `shutdown`; returns after the final commit.
pub async fn run(
    config: Config,
    workspace: WorkspaceRx,
    admin: &Admin,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    admin.readiness.set("consuming", false);
    let topics = Topics::new(&config.common.topic_prefix);
    let metrics = Metrics::register(&admin.registry)?;
    let geo = open_geo(config.geoip_db.as_deref())?;
    let enricher = Arc::new(Enricher::new(
        &workspace.borrow().workspace,
        geo,
        topics.clone(),
        metrics.clone(),
    ));
    if config.common.create_topics {
        let specs: Vec<TopicSpec> = [topics.valid(), topics.enriched(), topics.stage_dlq(STAGE)]
            .into_iter()
            .map(|name| TopicSpec {
                name,
                partitions: config.common.topic_partitions,
                replication: config.common.topic_replication,
                config: Vec::new(),
            })
            .collect();
        config.kafka.ensure_topics(&specs).await?;
    }
    let consumer = Arc::new(config.kafka.consumer(SERVICE, &config.stage.group, true)?);
    let window = config.dedupe_window.as_secs();
    let mut rebuild = None;
    if window > 0 && config.dedupe_rebuild {
        let (valid, enriched) = (
            partitions(&consumer, &topics.valid())?,
            partitions(&consumer, &topics.enriched())?,
        );
        if valid == enriched {
            rebuild = Some(Rebuilder {
                kafka: config.kafka.clone(),
                topic: topics.enriched(),
                client_id: SERVICE.to_string(),
                timeout: config.dedupe_rebuild_timeout,
            });
        } else {
            tracing::error!(valid, enriched, "the valid and enriched topics have different partition counts: dedupe windows are kept in memory only and a restart forgets them");
        }
    }
    let mut state = State::new((window > 0).then(|| Dedupe::new(window, config.dedupe_max_ids)));
    let mut windows = Windows {
        next_offset: HashMap::new(),
        checked: Instant::now(),
        rebuild,
        consumer: consumer.clone(),
    };
    let stage = Stage {
        consumer,
        producer: config.kafka.producer(
            SERVICE,
            config.stage.delivery_timeout,
            config.stage.linger,
        )?,
        input_topic: topics.valid(),
        metrics: StageMetrics::register(&admin.registry, "cdp_enricher")?,
        max_in_flight: config.stage.max_in_flight,
    };
    tokio::spawn(follow_workspace(workspace, Arc::downgrade(&enricher)));
    admin.readiness.set("consuming", true);
    tracing::info!(topic = %stage.input_topic, group = %config.stage.group, dedupe_window_secs = window, "enricher consuming");
    stage
        .run(
            |message| {
                windows.before(message, &mut state, &metrics);
                let outputs = enricher.process(message, &mut state);
                Windows::after(&state, &metrics);
                outputs
            },
            shutdown,
        )
        .await?;
    Ok(())
}

async fn follow_workspace(mut rx: WorkspaceRx, enricher: std::sync::Weak<Enricher>) {
    while rx.changed().await.is_ok() {
        let Some(enricher) = enricher.upgrade() else {
            return;
        };
        let loaded = rx.borrow_and_update().clone();
        enricher.reload(&loaded.workspace);
    }
}
