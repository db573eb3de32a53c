//! The Protocols validator: the only way from `cdp.events.raw` into `cdp.events.valid`.
//!
//! Each raw event is judged by the tracking plan of its source (`cdp-protocols`): it goes on to the
//! valid topic (unchanged, or annotated / with properties omitted), or whole to the blocked topic;
//! every violation is also a record on the violations topic; a record that is not a Segment
//! message goes to `cdp.dlq.validator` with its origin and a reason. The raw offset is stored only
//! after all of that is acknowledged (`cdp_kafka::stage`), so a restart loses nothing.

pub mod check;
pub mod metrics;

use arc_swap::ArcSwap;
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

use cdp_kafka::headers::{self, header};
use cdp_kafka::stage::{Output, Stage, StageMetrics};
use cdp_kafka::{KafkaConfig, TopicSpec, Topics};
use cdp_protocols::{Engine, Kind, Outcome};
use cdp_runtime::{Admin, Settings, SettingsError, StageSettings};
use cdp_workspace::WorkspaceRx;

pub use metrics::Metrics;

/// One identity: package, binary, client id, default consumer group.
pub const SERVICE: &str = "cdp-validator";
const STAGE: &str = "validator";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: Settings,
    /// Brokers from `CDP_KAFKA_BROKERS` plus `CDP_RDKAFKA_*` client properties.
    pub kafka: KafkaConfig,
    /// Consumer group (default `cdp-validator`), in-flight bound (default 10000), producer timing.
    pub stage: StageSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, SettingsError> {
        let common = Settings::from_env(SERVICE)?;
        Ok(Config {
            kafka: KafkaConfig::from_env(&common.kafka_brokers),
            stage: StageSettings::from_env(SERVICE, 10_000)?,
            common,
        })
    }
}

/// Judges raw records with the current plans and says where each output goes.
pub struct Validator {
    engine: ArcSwap<Engine>,
    topics: Topics,
    metrics: Metrics,
}

impl Validator {
    /// Compiles the workspace's plans; a plan that does not compile is an error naming it.
    pub fn new(
        workspace: &cdp_workspace::Workspace,
        topics: Topics,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let engine = Engine::build(workspace)?;
        let v = Validator {
            engine: ArcSwap::from_pointee(engine),
            topics,
            metrics,
        };
        v.publish_plans();
        Ok(v)
    }

    /// Recompiles on a new workspace version; keeps the previous plans when one does not compile.
    pub fn reload(&self, workspace: &cdp_workspace::Workspace) {
        match Engine::build(workspace) {
            Ok(engine) => {
                self.engine.store(Arc::new(engine));
                self.publish_plans();
                self.metrics.plan_reloads.with_label_values(&["ok"]).inc();
                self.metrics.plan_failing.set(0);
                tracing::info!("tracking plans reloaded");
            }
            Err(e) => {
                self.metrics
                    .plan_reloads
                    .with_label_values(&["error"])
                    .inc();
                self.metrics.plan_failing.set(1);
                tracing::error!(error = %e, "tracking plans not reloaded; the previous ones stay in use");
            }
        }
    }

    fn publish_plans(&self) {
        self.metrics.plans.reset();
        for plan in self.engine.load().plans() {
            self.metrics
                .plans
                .with_label_values(&[&plan.id, &plan.version])
                .set(1);
        }
    }

    /// The outputs of one raw record.
    pub fn process(&self, message: &BorrowedMessage<'_>) -> Vec<Output> {
        let input = message.headers();
        let payload = message.payload().unwrap_or_default();
        let key = message.key().map(<[u8]>::to_vec);
        let Some(source) = headers::get(input, headers::SOURCE_ID) else {
            return vec![self.dead_letter(
                message,
                "no_source",
                "the record has no cdp-source-id header",
            )];
        };
        let engine = self.engine.load();
        if engine.source(source).is_none() {
            self.metrics.unknown_source.inc();
        }
        let started = Instant::now();
        let verdict = match engine.evaluate(source, payload) {
            Ok(v) => v,
            Err(poison) => {
                return vec![self.dead_letter(message, poison.code(), &poison.to_string())]
            }
        };
        self.metrics
            .validation_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .events
            .with_label_values(&[source, verdict.outcome.as_str()])
            .inc();
        let plan_id = verdict.plan.as_ref().map_or("", |p| p.id.as_str());
        for v in &verdict.violations {
            let event = match (&verdict.rule, v.kind) {
                (_, Kind::UnplannedEvent) | (None, _) => "(unplanned)",
                (Some(rule), _) => rule.as_str(),
            };
            self.metrics
                .violations
                .with_label_values(&[plan_id, event, v.kind.code(), v.action.as_str()])
                .inc();
        }
        let forwarded = headers::forward(input);
        let mut outputs = Vec::with_capacity(1 + verdict.records.len());
        let body = match verdict.output {
            cdp_protocols::Output::Unchanged => payload.to_vec(),
            cdp_protocols::Output::Rewritten(bytes) => bytes,
        };
        if verdict.outcome == Outcome::Blocked {
            let reason = verdict
                .violations
                .iter()
                .map(|v| v.description.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            outputs.push(Output {
                topic: self.topics.blocked(),
                key: key.clone(),
                payload: body,
                headers: forwarded
                    .clone()
                    .insert(header(headers::ERROR_CODE, "protocols_blocked"))
                    .insert(header(headers::ERROR_MESSAGE, &reason)),
            });
        } else {
            outputs.push(Output {
                topic: self.topics.valid(),
                key: key.clone(),
                payload: body,
                headers: forwarded.clone(),
            });
        }
        for record in verdict.records {
            outputs.push(Output {
                topic: self.topics.violations(),
                key: key.clone(),
                payload: record,
                headers: forwarded.clone(),
            });
        }
        outputs
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

/// Builds the validator and consumes until `shutdown`; returns after the final commit.
pub async fn run(
    config: Config,
    workspace: WorkspaceRx,
    admin: &Admin,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Ready once the plans compiled, the topics exist and the consumer is subscribed.
    admin.readiness.set("consuming", false);
    let topics = Topics::new(&config.common.topic_prefix);
    let metrics = Metrics::register(&admin.registry)?;
    let validator = Arc::new(Validator::new(
        &workspace.borrow().workspace,
        topics.clone(),
        metrics,
    )?);
    if config.common.create_topics {
        let specs: Vec<TopicSpec> = [
            topics.raw(),
            topics.valid(),
            topics.blocked(),
            topics.violations(),
            topics.stage_dlq(STAGE),
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
    let stage = Stage {
        consumer: Arc::new(config.kafka.consumer(SERVICE, &config.stage.group, true)?),
        producer: config.kafka.producer(
            SERVICE,
            config.stage.delivery_timeout,
            config.stage.linger,
        )?,
        input_topic: topics.raw(),
        metrics: StageMetrics::register(&admin.registry, "cdp_validator")?,
        max_in_flight: config.stage.max_in_flight,
    };
    tokio::spawn(follow_workspace(workspace, Arc::downgrade(&validator)));
    admin.readiness.set("consuming", true);
    tracing::info!(topic = %stage.input_topic, group = %config.stage.group, "validator consuming");
    stage
        .run(|message| validator.process(message), shutdown)
        .await?;
    Ok(())
}

async fn follow_workspace(mut rx: WorkspaceRx, validator: std::sync::Weak<Validator>) {
    while rx.changed().await.is_ok() {
        let Some(validator) = validator.upgrade() else {
            return;
        };
        let loaded = rx.borrow_and_update().clone();
        validator.reload(&loaded.workspace);
    }
}
