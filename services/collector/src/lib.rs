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

use cdp_kafka::{TopicSpec, Topics};
use cdp_runtime::Admin;
use cdp_workspace::WorkspaceRx;
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
    if config.create_topics {
        let specs: Vec<TopicSpec> = topics
            .pipeline()
            .into_iter()
            .map(|name| TopicSpec {
                name,
                partitions: config.topic_partitions,
                replication: config.topic_replication,
                config: Vec::new(),
            })
            .collect();
        kafka.ensure_topics(&specs).await?;
    }
    let producer = kafka.producer(SERVICE, config.delivery_timeout, config.linger)?;
    let metrics = metrics::Metrics::register(&admin.registry)?;
    let state = Arc::new(AppState {
        keys: ArcSwap::from_pointee(auth::KeyIndex::build(&workspace.borrow().workspace)),
        sink: sink::Sink {
            producer,
            raw_topic: topics.raw(),
            rejected_topic: topics.rejected(),
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

/// Producer queue depth for `/metrics`, and broker reachability for `/readyz`.
async fn watch_producer(state: std::sync::Weak<AppState>, admin: Admin) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let producer = state.sink.producer.clone();
        state
            .metrics
            .producer_queue
            .set(i64::from(producer.in_flight_count()));
        let reachable = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        admin.readiness.set("kafka", reachable);
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
