//! A pipeline stage: consume one topic, turn each record into output records, produce them, and
//! store the input's offset only once every output is acknowledged (at-least-once).
//!
//! Records are processed one after another while their outputs are in flight; a second task
//! awaits the acknowledgements in consumption order and stores each input offset after all of its
//! outputs (and all earlier inputs') are durable. librdkafka commits stored offsets in the
//! background and once more on shutdown. An output the broker refuses is produced again with
//! backoff until it is stored: a broker outage stalls the stage, it never skips a record.

use futures::future::join_all;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::headers;

/// One record a stage writes for an input record.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

impl Output {
    /// A poison input, whole, for the dead-letter `topic`: its key, bytes and pipeline headers, with
    /// where it came from, the failing `stage` and why.
    pub fn dead_letter(
        message: &BorrowedMessage<'_>,
        topic: String,
        stage: &str,
        code: &str,
        reason: &str,
    ) -> Output {
        Output {
            topic,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: headers::failure(
                headers::forward(message.headers()),
                (message.topic(), message.partition(), message.offset()),
                stage,
                code,
                reason,
            ),
        }
    }
}

/// `<prefix>_consumed_total`, `<prefix>_produced_total{topic}`, `<prefix>_produce_retries_total`,
/// `<prefix>_in_flight`, `<prefix>_consumer_lag{partition}`, `<prefix>_process_seconds`.
#[derive(Clone)]
pub struct StageMetrics {
    consumed: IntCounter,
    produced: IntCounterVec,
    retries: IntCounter,
    in_flight: IntGauge,
    lag: IntGaugeVec,
    process_seconds: Histogram,
}

impl StageMetrics {
    pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let m = StageMetrics {
            consumed: IntCounter::new(
                format!("{prefix}_consumed_total"),
                "Records read from the input topic.",
            )?,
            produced: IntCounterVec::new(
                Opts::new(
                    format!("{prefix}_produced_total"),
                    "Output records acknowledged by the broker, by topic.",
                ),
                &["topic"],
            )?,
            retries: IntCounter::new(
                format!("{prefix}_produce_retries_total"),
                "Output records produced again after the broker refused or timed them out.",
            )?,
            in_flight: IntGauge::new(
                format!("{prefix}_in_flight"),
                "Input records processed whose outputs are not all acknowledged yet.",
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    format!("{prefix}_consumer_lag"),
                    "Records between this consumer's position and the partition's high watermark.",
                ),
                &["partition"],
            )?,
            process_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    format!("{prefix}_process_seconds"),
                    "Time to turn one input record into its outputs (not counting acks).",
                )
                .buckets(vec![
                    1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1,
                ]),
            )?,
        };
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.produced.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.process_seconds.clone()))?;
        Ok(m)
    }
}

/// An input record whose outputs are on their way.
struct Pending {
    partition: i32,
    offset: i64,
    outputs: Vec<(Output, DeliveryFuture)>,
}

pub struct Stage {
    pub consumer: Arc<StreamConsumer>,
    pub producer: FutureProducer,
    pub input_topic: String,
    pub metrics: StageMetrics,
    /// Input records allowed in flight before consumption waits for acknowledgements.
    pub max_in_flight: usize,
}

impl Stage {
    /// Consumes until `shutdown`, then waits for what is in flight, commits and returns.
    /// `process` runs inside a span whose parent is the input record's trace context, so outputs
    /// built with [`headers::forward`] continue the same trace.
    pub async fn run<F>(self, mut process: F, shutdown: CancellationToken) -> Result<(), KafkaError>
    where
        F: FnMut(&BorrowedMessage<'_>) -> Vec<Output>,
    {
        self.run_async(|message| std::future::ready(process(message)), shutdown)
            .await
    }

    /// Like [`Stage::run`], for work that waits (a destination delivering over HTTP): the future
    /// `process` returns is awaited before the next record is read, inside the record's span. It
    /// owns what it needs (copy the payload out of the message). When `shutdown` fires while it
    /// runs, return what you have: the record's offset is not stored and it is read again.
    pub async fn run_async<F, Fut>(
        self,
        mut process: F,
        shutdown: CancellationToken,
    ) -> Result<(), KafkaError>
    where
        F: FnMut(&BorrowedMessage<'_>) -> Fut,
        Fut: Future<Output = Vec<Output>>,
    {
        self.consumer.subscribe(&[&self.input_topic])?;
        let (tx, rx) = mpsc::channel::<Pending>(self.max_in_flight.max(1));
        let acks = tokio::spawn(
            store_when_acked(
                rx,
                self.consumer.clone(),
                self.producer.clone(),
                self.input_topic.clone(),
                self.metrics.clone(),
                shutdown.clone(),
            )
            .in_current_span(),
        );
        let lag = tokio::spawn(report_lag(
            self.consumer.clone(),
            self.metrics.lag.clone(),
            shutdown.clone(),
        ));
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    // Transport trouble; librdkafka reconnects by itself.
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
            };
            self.metrics.consumed.inc();
            let span = tracing::info_span!("process", topic = %self.input_topic,
                partition = message.partition(), offset = message.offset());
            let _ignored = span.set_parent(headers::trace_context(message.headers()));
            let started = Instant::now();
            let work = span.in_scope(|| process(&message));
            let outputs = work.instrument(span).await;
            self.metrics
                .process_seconds
                .observe(started.elapsed().as_secs_f64());
            let mut sent = Vec::with_capacity(outputs.len());
            for output in outputs {
                let delivery = send(&self.producer, &output, &shutdown).await;
                let Some(delivery) = delivery else { break };
                sent.push((output, delivery));
            }
            let pending = Pending {
                partition: message.partition(),
                offset: message.offset(),
                outputs: sent,
            };
            drop(message);
            if shutdown.is_cancelled() {
                break; // its outputs may be incomplete: leave its offset unstored
            }
            self.metrics.in_flight.inc();
            if tx.send(pending).await.is_err() {
                break;
            }
        }
        drop(tx);
        let stored = acks.await.unwrap_or_default();
        lag.abort();
        // Commit exactly what was stored (acknowledged downstream), never the consumer's position:
        // records read but not yet acknowledged are read again by whoever owns them next.
        let consumer = self.consumer.clone();
        let topic = self.input_topic.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let assigned = consumer.assignment()?;
            let mut offsets = TopicPartitionList::new();
            for (partition, offset) in stored {
                if assigned.find_partition(&topic, partition).is_some() {
                    offsets.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))?;
                }
            }
            if offsets.count() > 0 {
                tracing::debug!(?offsets, "final commit");
                consumer.commit(&offsets, CommitMode::Sync)?;
            }
            Ok::<(), KafkaError>(())
        })
        .await;
        if let Ok(Err(e)) = committed {
            tracing::warn!(error = %e, "final commit failed; the next owner re-reads from the last commit");
        }
        Ok(())
    }
}

/// Enqueues one output, waiting while the producer queue is full. `None` on shutdown.
async fn send(
    producer: &FutureProducer,
    output: &Output,
    shutdown: &CancellationToken,
) -> Option<DeliveryFuture> {
    let mut wait = Duration::from_millis(5);
    loop {
        let mut record = FutureRecord::to(&output.topic)
            .payload(&output.payload)
            .headers(output.headers.clone());
        if let Some(key) = &output.key {
            record = record.key(key);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Some(delivery),
            Err((e, _)) => {
                if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                    tracing::error!(error = %e, topic = %output.topic, "cannot enqueue output; retrying");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Awaits each input's acknowledgements in order and stores its offset; re-produces refused outputs.
async fn store_when_acked(
    mut rx: mpsc::Receiver<Pending>,
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    topic: String,
    metrics: StageMetrics,
    shutdown: CancellationToken,
) -> HashMap<i32, i64> {
    let mut stored = HashMap::new();
    while let Some(pending) = rx.recv().await {
        let Pending {
            partition,
            offset,
            outputs,
        } = pending;
        let (records, deliveries): (Vec<Output>, Vec<DeliveryFuture>) = outputs.into_iter().unzip();
        let results = join_all(deliveries).await;
        for (output, result) in records.iter().zip(results) {
            let mut result = result
                .map_err(|_| "producer dropped".to_string())
                .and_then(|r| r.map(|_| ()).map_err(|(e, _)| e.to_string()));
            let mut wait = Duration::from_millis(100);
            while let Err(error) = result {
                tracing::warn!(%error, topic = %output.topic, "output not acknowledged; producing it again");
                metrics.retries.inc();
                tokio::select! {
                    () = shutdown.cancelled() => return stored,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
                let Some(delivery) = send(&producer, output, &shutdown).await else {
                    return stored;
                };
                result = match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("producer dropped".into()),
                };
            }
            metrics.produced.with_label_values(&[&output.topic]).inc();
        }
        metrics.in_flight.dec();
        // Fails only when the partition was revoked meanwhile: its new owner re-reads the record.
        match consumer.store_offset(&topic, partition, offset) {
            Ok(()) => {
                stored.insert(partition, offset);
            }
            Err(e) => tracing::debug!(error = %e, partition, offset, "offset not stored"),
        }
    }
    stored
}

/// Consumer lag per assigned partition, every 10 s.
async fn report_lag(consumer: Arc<StreamConsumer>, lag: IntGaugeVec, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let consumer = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let position = consumer.position().ok()?;
            let mut out = Vec::new();
            for e in position.elements() {
                let Offset::Offset(at) = e.offset() else {
                    continue;
                };
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                {
                    out.push((e.partition(), (high - at).max(0)));
                }
            }
            Some(out)
        })
        .await;
        if let Ok(Some(lags)) = lags {
            for (partition, n) in lags {
                lag.with_label_values(&[&partition.to_string()]).set(n);
            }
        }
    }
}
