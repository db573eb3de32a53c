//! The edge collector: Segment's HTTP Tracking API in front of Kafka.
//!
//! Guarantees (see `README.md` beside this crate): a 2xx means the broker acknowledged every record
//! of the request (`acks=all`, idempotent producer); broker trouble is a 503 with `Retry-After`;
//! messages that break the spec go to the rejected topic with a reason and are listed in the
//! response; the write key never leaves this service.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod ingest;
pub mod metrics;
mod routes;
mod server;
pub mod sink;

use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use cdp_kafka::{KafkaConfig, TopicSpec, Topics};
use cdp_runtime::Admin;
use cdp_workspace::WorkspaceRx;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;

pub use config::Config;
pub use routes::router;

/// One identity: package, binary, metric prefix, client id.
pub const SERVICE: &str = "cdp-collector";

/// Shared state of every request handler.
pub struct AppState {
    pub config: Config,
    pub keys: ArcSwap<auth::KeyIndex>,
    pub sink: sink::Sink,
    pub metrics: metrics::Metrics,
}

/// Builds the collector: topics, producer, write-key index kept in step with the workspace.
pub async fn build(
    config: Config,
    workspace: WorkspaceRx,
    admin: &Admin,
) -> anyhow::Result<Arc<AppState>> {
    admin.readiness.set("kafka", false);
    let kafka = &config.kafka;
    let topics = Topics::new(&config.common.topic_prefix);
    if config.common.create_topics {
        let specs: Vec<TopicSpec> = topics
            .pipeline()
            .into_iter()
            .map(|name| TopicSpec {
                name,
                partitions: config.common.topic_partitions,
                replication: config.common.topic_replication,
                config: Vec::new(),
            })
            .collect();
        kafka.ensure_topics(&specs).await?;
    }
    let producer =
        producer_config(kafka).producer(SERVICE, config.delivery_timeout, config.linger)?;
    let metrics = metrics::Metrics::register(&admin.registry)?;
    let state = Arc::new(AppState {
        keys: ArcSwap::from_pointee(auth::KeyIndex::build(&workspace.borrow().workspace)),
        sink: sink::Sink {
            producer,
            raw_topic: topics.raw(),
            rejected_topic: topics.rejected(),
            broker: Arc::new(sink::BrokerReach::default()),
        },
        metrics,
        config,
    });
    tokio::spawn(follow_workspace(workspace, Arc::downgrade(&state)));
    tokio::spawn(watch_producer(Arc::downgrade(&state), admin.clone()));
    Ok(state)
}

/// Rebuilds the key index on every new workspace version.
async fn follow_workspace(mut rx: WorkspaceRx, state: std::sync::Weak<AppState>) {
    while rx.changed().await.is_ok() {
        let Some(state) = state.upgrade() else { return };
        let index = auth::KeyIndex::build(&rx.borrow_and_update().workspace);
        state.keys.store(Arc::new(index));
    }
}

/// The producer's connection settings: the shared ones, with a shorter cap on the reconnect
/// backoff (librdkafka's default grows to 10 s) so a broker that comes back is used within about a
/// second. `CDP_RDKAFKA_RECONNECT_BACKOFF_MAX_MS` still wins.
fn producer_config(kafka: &KafkaConfig) -> KafkaConfig {
    let mut kafka = kafka.clone();
    kafka
        .properties
        .insert(0, ("reconnect.backoff.max.ms".into(), "1000".into()));
    kafka
}

/// How long a probe waits for a broker connection and its metadata answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a probe that got an answer, and after one that did not (look again soon).
const PROBE_PAUSE: Duration = Duration::from_secs(1);
const PROBE_PAUSE_FAILED: Duration = Duration::from_millis(200);

/// What one metadata probe says about the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Answered,
    /// No answer, but no proof that every broker is out of reach either (a slow broker, or a
    /// connection that dropped under the request, as in a rolling restart).
    Failed,
    /// No broker connection came up for the whole timeout, and no record was acknowledged meanwhile.
    Unreachable,
}

impl Probe {
    /// librdkafka waits up to the timeout for any broker connection and reports a transport failure
    /// when none came up; a failure before that means a request was sent and lost, and a timeout
    /// means a connected broker was slow. Only the first proves the brokers out of reach.
    fn judge(result: &Result<(), KafkaError>, took: Duration, delivered_meanwhile: bool) -> Probe {
        let Err(e) = result else {
            return Probe::Answered;
        };
        let no_connection = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        );
        if no_connection
            && took + Duration::from_millis(100) >= PROBE_TIMEOUT
            && !delivered_meanwhile
        {
            Probe::Unreachable
        } else {
            Probe::Failed
        }
    }
}

/// Producer queue depth for `/metrics`; broker reachability for `/readyz` and for [`sink::Sink`],
/// which refuses requests at once while no broker can be reached (instead of letting their records
/// wait out the delivery timeout). While brokers are unreachable the probe runs back to back, and a
/// probe returns as soon as a connection is up again, so a returning broker is used within about
/// the reconnect backoff.
async fn watch_producer(state: std::sync::Weak<AppState>, admin: Admin) {
    loop {
        let Some(app) = state.upgrade() else { return };
        let producer = app.sink.producer.clone();
        app.metrics
            .producer_queue
            .set(i64::from(producer.in_flight_count()));
        let topic = app.sink.raw_topic.clone();
        let deliveries = app.sink.broker.deliveries();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), PROBE_TIMEOUT)
                .map(drop)
        })
        .await;
        let probe = match result {
            Ok(result) => Probe::judge(
                &result,
                started.elapsed(),
                app.sink.broker.deliveries() != deliveries,
            ),
            Err(e) => {
                tracing::error!(error = %e, "broker probe task failed");
                Probe::Failed
            }
        };
        admin.readiness.set("kafka", probe == Probe::Answered);
        let reach = &app.sink.broker;
        let was_unreachable = match probe {
            Probe::Answered => reach.set_unreachable(false),
            Probe::Unreachable => reach.set_unreachable(true),
            Probe::Failed => reach.is_unreachable(),
        };
        let unreachable = reach.is_unreachable();
        app.metrics.kafka_unreachable.set(i64::from(unreachable));
        if unreachable && !was_unreachable {
            tracing::warn!("no Kafka broker can be reached; answering 503 at once until one can");
        } else if was_unreachable && !unreachable {
            tracing::info!("a Kafka broker can be reached again");
        }
        drop(app);
        let pause = if probe == Probe::Answered {
            PROBE_PAUSE
        } else {
            PROBE_PAUSE_FAILED
        };
        tokio::time::sleep(pause).await;
    }
}

/// Serves the API until `shutdown` (closing unused connections and letting requests in progress
/// finish), then flushes the producer.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = server::Limits {
        header_timeout: state.config.header_timeout,
        idle_timeout: state.config.idle_timeout,
        max_connections: state.config.max_connections,
    };
    server::run(
        router(state.clone()),
        listener,
        limits,
        &state.metrics,
        shutdown,
    )
    .await?;
    state.sink.flush(Duration::from_secs(10));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_probe_that_found_no_connection_for_its_whole_timeout_means_unreachable() {
        let transport = Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        let timed_out = Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::OperationTimedOut,
        ));
        let full = PROBE_TIMEOUT;
        let judge = Probe::judge;
        assert_eq!(judge(&Ok(()), full, false), Probe::Answered);
        assert_eq!(judge(&transport, full, false), Probe::Unreachable);
        // A request lost with its connection (a broker restarting among others).
        assert_eq!(
            judge(&transport, Duration::from_millis(30), false),
            Probe::Failed
        );
        // A connected but slow broker.
        assert_eq!(judge(&timed_out, full, false), Probe::Failed);
        // A record was acknowledged while the probe waited: the probe is stale.
        assert_eq!(judge(&transport, full, true), Probe::Failed);
    }
}
