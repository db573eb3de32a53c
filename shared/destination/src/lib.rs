//! The delivery runtime every destination shares, for one destination *instance* per process
//! (`CDP_DESTINATION_ID`, consumer group `cdp-dest-<id>`).
//!
//! Each event of `cdp.events.enriched` is routed ([`routing`]), delivered by the destination's
//! [`Connector`], and its attempts classified ([`Outcome`]): delivered; retried in process with
//! exponential backoff and jitter (or the wait the destination asked for), then parked in
//! `cdp.dest.<id>.retry` with its due time; or, when it can never succeed, dead-lettered in
//! `cdp.dest.<id>.dlq` with the destination's answer. Delivery happens inside the consumer loop and
//! the park record is the stage's output, so the input offset is stored only once the event is
//! delivered or its park record is acknowledged (`cdp_kafka::stage`).

pub mod metrics;
pub mod outcome;
pub mod routing;

use arc_swap::ArcSwap;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use cdp_kafka::headers::{self, header};
use cdp_kafka::stage::{Output, Stage, StageMetrics};
use cdp_kafka::{KafkaConfig, TopicSpec, Topics};
use cdp_runtime::{env_or, Admin, Settings, SettingsError, StageSettings};
use cdp_workspace::WorkspaceRx;

pub use metrics::Metrics;
pub use outcome::{Failure, Outcome};
pub use routing::{Route, Skip};

/// One destination type: its settings, built from the workspace, and how it delivers one event.
pub trait Connector: Sized + Send + Sync + 'static {
    /// The workspace `type` it serves (`webhook`).
    const TYPE: &'static str;
    /// Its name in Segment's `integrations` object (`Webhook`).
    const CATALOG_NAME: &'static str;

    /// Reads and checks the instance's settings; the error names the setting.
    fn from_workspace(destination: &cdp_workspace::Destination) -> Result<Self, String>;

    /// One attempt to deliver one event (the enriched Segment message as JSON).
    fn deliver(&self, payload: &[u8]) -> impl Future<Output = Outcome> + Send;
}

/// In-process retries before an event is parked in the retry topic.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// `CDP_DEST_ATTEMPTS`: attempts in process, the first included (default 3).
    pub attempts: u32,
    /// `CDP_DEST_BACKOFF_MS`: first backoff, doubled each attempt, with jitter (default 200).
    pub backoff: Duration,
    /// `CDP_DEST_MAX_WAIT_MS`: the longest wait in process (default 5000); a longer `Retry-After`
    /// parks the event at once, so the partition keeps flowing.
    pub max_wait: Duration,
    /// `CDP_DEST_PARK_DELAY_MS`: due delay of a parked event without `Retry-After` (default 60000).
    pub park_delay: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (1-based `attempt`): `backoff · 2^(attempt-1)`,
    /// capped by `max_wait`, times a random factor in [0.5, 1) so a crowd of consumers spreads out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
        exp.min(self.max_wait).mul_f64(rand::random_range(0.5..1.0))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: Settings,
    pub kafka: KafkaConfig,
    /// `CDP_DESTINATION_ID`: the workspace destination this process serves (required).
    pub destination_id: String,
    /// `CDP_DEST_START`: where a new consumer group starts, `now` (default) or `earliest`
    /// (backfill every retained event). A group with committed offsets resumes from them.
    pub from_earliest: bool,
    pub retry: RetryPolicy,
    /// Consumer group (default `cdp-dest-<id>`), in-flight bound (default 1000), producer timing.
    pub stage: StageSettings,
}

impl Config {
    pub fn from_env(service: &str) -> Result<Self, SettingsError> {
        let common = Settings::from_env(service)?;
        let destination_id: String = env_or("CDP_DESTINATION_ID", String::new())?;
        if destination_id.is_empty() {
            return Err(SettingsError {
                name: "CDP_DESTINATION_ID".into(),
                value: String::new(),
                reason: "required: the id of the workspace destination this process serves".into(),
            });
        }
        let start: String = env_or("CDP_DEST_START", "now".to_string())?;
        let from_earliest = match start.as_str() {
            "now" => false,
            "earliest" => true,
            _ => {
                return Err(SettingsError {
                    name: "CDP_DEST_START".into(),
                    value: start,
                    reason: "expected now or earliest".into(),
                })
            }
        };
        Ok(Config {
            kafka: KafkaConfig::from_env(&common.kafka_brokers),
            stage: StageSettings::from_env(&format!("cdp-dest-{destination_id}"), 1000)?,
            destination_id,
            from_earliest,
            retry: RetryPolicy {
                attempts: env_or("CDP_DEST_ATTEMPTS", 3u32)?.max(1),
                backoff: Duration::from_millis(env_or("CDP_DEST_BACKOFF_MS", 200)?),
                max_wait: Duration::from_millis(env_or("CDP_DEST_MAX_WAIT_MS", 5000)?),
                park_delay: Duration::from_millis(env_or("CDP_DEST_PARK_DELAY_MS", 60_000)?),
            },
            common,
        })
    }
}

/// The instance as the workspace currently describes it.
struct Instance<C> {
    route: Route,
    connector: Arc<C>,
}

impl<C: Connector> Instance<C> {
    fn build(workspace: &cdp_workspace::Workspace, id: &str) -> Result<Self, String> {
        let d = workspace
            .destination(id)
            .ok_or_else(|| format!("destination {id:?} is not in the workspace"))?;
        if d.kind != C::TYPE {
            return Err(format!(
                "destination {id:?} has type {:?}, this process serves {:?}",
                d.kind,
                C::TYPE
            ));
        }
        let route =
            Route::new(d, C::CATALOG_NAME).map_err(|e| format!("destination {id:?}: {e}"))?;
        let connector =
            C::from_workspace(d).map_err(|e| format!("destination {id:?} settings: {e}"))?;
        Ok(Instance {
            route,
            connector: Arc::new(connector),
        })
    }
}

/// What the delivery of one record needs, copied out of the consumed message.
struct Input {
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    /// The pipeline headers with this span's trace context.
    headers: OwnedHeaders,
    source_id: Option<String>,
    received_at: Option<String>,
    origin: (String, i32, i64),
}

/// Delivers one destination instance's events.
pub struct Runtime<C> {
    id: String,
    stage_name: String,
    instance: ArcSwap<Instance<C>>,
    topics: Topics,
    retry: RetryPolicy,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl<C: Connector> Runtime<C> {
    fn input(message: &BorrowedMessage<'_>) -> Input {
        let h = message.headers();
        Input {
            payload: message.payload().unwrap_or_default().to_vec(),
            key: message.key().map(<[u8]>::to_vec),
            headers: headers::forward(h),
            source_id: headers::get(h, headers::SOURCE_ID).map(String::from),
            received_at: headers::get(h, headers::RECEIVED_AT).map(String::from),
            origin: (
                message.topic().to_string(),
                message.partition(),
                message.offset(),
            ),
        }
    }

    /// Routes and delivers one event; the outputs are its park record, if any. Empty on
    /// shutdown mid-retry too: the stage then leaves the offset unstored.
    async fn handle(&self, input: Input) -> Vec<Output> {
        let id = self.id.as_str();
        let event: serde_json::Value = match serde_json::from_slice(&input.payload) {
            Ok(v) => v,
            Err(e) => {
                let failure = Failure {
                    code: "not_json".into(),
                    status: None,
                    message: format!("the record is not JSON: {e}"),
                };
                return vec![self.park(&input, &failure, 0, None)];
            }
        };
        let instance = self.instance.load_full();
        if let Err(skip) = instance.route.check(input.source_id.as_deref(), &event) {
            self.metrics
                .skipped
                .with_label_values(&[id, skip.as_str()])
                .inc();
            self.metrics
                .events
                .with_label_values(&[id, "skipped"])
                .inc();
            return Vec::new();
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let outcome = instance.connector.deliver(&input.payload).await;
            self.metrics
                .delivery_seconds
                .with_label_values(&[id])
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .attempts
                .with_label_values(&[id, outcome.label()])
                .inc();
            match outcome {
                Outcome::Delivered => {
                    self.metrics
                        .events
                        .with_label_values(&[id, "delivered"])
                        .inc();
                    if let Some(age) = age(input.received_at.as_deref(), &event) {
                        self.metrics
                            .end_to_end_seconds
                            .with_label_values(&[id])
                            .observe(age);
                    }
                    return Vec::new();
                }
                Outcome::Invalid { failure } => {
                    tracing::warn!(destination = id, code = %failure.code, answer = %failure.message,
                        "event refused by the destination; dead-lettered");
                    return vec![self.park(&input, &failure, attempt, None)];
                }
                Outcome::Retry { after, failure } => {
                    let wait = after.unwrap_or_else(|| self.retry.backoff(attempt));
                    if attempt >= self.retry.attempts || wait > self.retry.max_wait {
                        let due = after.unwrap_or(self.retry.park_delay);
                        tracing::info!(destination = id, code = %failure.code, attempt,
                            due_in_s = due.as_secs(), "delivery failing; parked in the retry topic");
                        return vec![self.park(&input, &failure, attempt, Some(due))];
                    }
                    tracing::debug!(destination = id, code = %failure.code, attempt,
                        wait_ms = wait.as_millis() as u64, "delivery failed; retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Vec::new(),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// The retry record (`due` set) or the dead-letter record of an event.
    fn park(
        &self,
        input: &Input,
        failure: &Failure,
        attempts: u32,
        due: Option<Duration>,
    ) -> Output {
        let id = self.id.as_str();
        let now = chrono::Utc::now();
        let (topic, outcome) = match due {
            Some(_) => (self.topics.dest_retry(id), "parked_retry"),
            None => (self.topics.dest_dlq(id), "dead_letter"),
        };
        self.metrics.events.with_label_values(&[id, outcome]).inc();
        let (origin_topic, partition, offset) = &input.origin;
        let mut h = headers::failure(
            input.headers.clone(),
            (origin_topic, *partition, *offset),
            &self.stage_name,
            &failure.code,
            &failure.message,
        )
        .insert(header(headers::ATTEMPTS, &attempts.to_string()))
        .insert(header(headers::FIRST_ATTEMPT_AT, &rfc3339(now)));
        if let Some(status) = failure.status {
            h = h.insert(header(headers::HTTP_STATUS, &status.to_string()));
        }
        if let Some(due) = due {
            let at = now + chrono::Duration::from_std(due).unwrap_or(chrono::Duration::zero());
            h = h.insert(header(headers::DUE_AT, &rfc3339(at)));
        }
        Output {
            topic,
            key: input.key.clone(),
            payload: input.payload.clone(),
            headers: h,
        }
    }

    /// Rebuilds the instance on a new workspace version; keeps the previous one when it fails.
    fn reload(&self, workspace: &cdp_workspace::Workspace) {
        match Instance::build(workspace, &self.id) {
            Ok(instance) => {
                self.instance.store(Arc::new(instance));
                tracing::info!(destination = %self.id, "destination settings reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "destination not reloaded; the previous settings stay in use");
            }
        }
    }
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seconds since the collector received the event (header, else the payload's `receivedAt`).
fn age(header: Option<&str>, event: &serde_json::Value) -> Option<f64> {
    let at = header.or_else(|| event.get("receivedAt").and_then(serde_json::Value::as_str))?;
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let age = chrono::Utc::now() - at.with_timezone(&chrono::Utc);
    Some(age.num_milliseconds().max(0) as f64 / 1000.0)
}

/// Builds the instance named by `CDP_DESTINATION_ID` and delivers until `shutdown`; returns after
/// the final commit. `service` is the binary's name (`cdp-dest-webhook`): client id and logs.
pub async fn run<C: Connector>(
    service: &str,
    config: Config,
    workspace: WorkspaceRx,
    admin: &Admin,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    admin.readiness.set("consuming", false);
    let topics = Topics::new(&config.common.topic_prefix);
    let id = config.destination_id.clone();
    let instance = Instance::<C>::build(&workspace.borrow().workspace, &id)
        .map_err(|e| anyhow::anyhow!("CDP_DESTINATION_ID={id}: {e}"))?;
    if config.common.create_topics {
        let specs: Vec<TopicSpec> = [
            topics.enriched(),
            topics.dest_retry(&id),
            topics.dest_dlq(&id),
        ]
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
    let runtime = Arc::new(Runtime {
        stage_name: format!("dest-{id}"),
        id,
        instance: ArcSwap::from_pointee(instance),
        topics: topics.clone(),
        retry: config.retry.clone(),
        metrics: Metrics::register(&admin.registry)?,
        shutdown: shutdown.clone(),
    });
    let stage = Stage {
        consumer: Arc::new(config.kafka.consumer(
            service,
            &config.stage.group,
            config.from_earliest,
        )?),
        producer: config.kafka.producer(
            service,
            config.stage.delivery_timeout,
            config.stage.linger,
        )?,
        input_topic: topics.enriched(),
        metrics: StageMetrics::register(&admin.registry, "cdp_dest")?,
        // Delivery is sequential; park records only need a few acknowledgements in flight.
        max_in_flight: config.stage.max_in_flight,
    };
    tokio::spawn(follow_workspace(workspace, Arc::downgrade(&runtime)));
    admin.readiness.set("consuming", true);
    tracing::info!(topic = %stage.input_topic, group = %config.stage.group, destination = %runtime.id,
        "destination consuming");
    stage
        .run_async(
            |message| {
                let input = Runtime::<C>::input(message);
                let runtime = runtime.clone();
                async move { runtime.handle(input).await }
            },
            shutdown,
        )
        .await?;
    Ok(())
}

async fn follow_workspace<C: Connector>(mut rx: WorkspaceRx, runtime: std::sync::Weak<Runtime<C>>) {
    while rx.changed().await.is_ok() {
        let Some(runtime) = runtime.upgrade() else {
            return;
        };
        let loaded = rx.borrow_and_update().clone();
        runtime.reload(&loaded.workspace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_wait: Duration::from_millis(1000),
            park_delay: Duration::from_secs(60),
        };
        for _ in 0..50 {
            let first = p.backoff(1);
            assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(100));
            let third = p.backoff(3);
            assert!(third >= Duration::from_millis(200) && third < Duration::from_millis(400));
            assert!(p.backoff(30) < Duration::from_millis(1000));
        }
    }

    #[test]
    fn age_comes_from_the_header_or_the_payload() {
        let now = rfc3339(chrono::Utc::now() - chrono::Duration::seconds(2));
        let a = age(Some(&now), &serde_json::Value::Null).unwrap_or_default();
        assert!((1.9..10.0).contains(&a), "{a}");
        let b = age(None, &serde_json::json!({"receivedAt": now})).unwrap_or_default();
        assert!((1.9..10.0).contains(&b), "{b}");
        assert_eq!(age(None, &serde_json::json!({})), None);
    }
}
