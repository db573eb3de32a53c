//! Publishing to Kafka: a request is answered 2xx only after the broker acknowledged every record.

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdp_kafka::headers;

use crate::error::ApiError;
use crate::ingest::Prepared;
use crate::metrics::Metrics;

/// The producer and the topics the collector writes.
#[derive(Clone)]
pub struct Sink {
    pub producer: FutureProducer,
    pub raw_topic: String,
    pub rejected_topic: String,
    pub broker: Arc<BrokerReach>,
}

/// Whether the producer can reach a broker at all, as the last probe found (see `watch_producer`).
#[derive(Debug, Default)]
pub struct BrokerReach {
    unreachable: AtomicBool,
    /// Requests whose records were all acknowledged: proof of a reachable broker that outranks a
    /// probe that failed meanwhile.
    deliveries: AtomicU64,
}

impl BrokerReach {
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Records acknowledged records, which prove a broker reachable; true if that ends an outage.
    fn delivered(&self) -> bool {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.unreachable.swap(false, Ordering::Relaxed)
    }

    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Records a probe's finding; returns the previous one.
    pub fn set_unreachable(&self, unreachable: bool) -> bool {
        self.unreachable.swap(unreachable, Ordering::Relaxed)
    }
}

impl Sink {
    /// Sends every accepted and rejected record and waits for all acknowledgements.
    ///
    /// While no broker can be reached the request is refused at once: its records would only wait
    /// out the delivery timeout in the queue (and delay the answers of the requests behind them).
    pub async fn publish(
        &self,
        prepared: &Prepared,
        source_id: &str,
        received_at: &str,
        metrics: &Metrics,
    ) -> Result<(), ApiError> {
        let nothing_to_send = prepared.accepted.is_empty() && prepared.rejected.is_empty();
        if self.broker.is_unreachable() && !nothing_to_send {
            return Err(ApiError::Unavailable("broker_unreachable"));
        }
        let started = Instant::now();
        let base = headers::with_trace_context(
            OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: headers::SOURCE_ID,
                    value: Some(source_id),
                })
                .insert(Header {
                    key: headers::RECEIVED_AT,
                    value: Some(received_at),
                }),
        );
        let mut pending = Vec::with_capacity(prepared.accepted.len() + prepared.rejected.len());
        for a in &prepared.accepted {
            let record = FutureRecord::to(&self.raw_topic)
                .key(a.key.as_bytes())
                .payload(&a.payload)
                .headers(base.clone());
            pending.push(self.enqueue(record, metrics)?);
        }
        for r in &prepared.rejected {
            let reason = r.violation.to_string();
            let hdrs = base
                .clone()
                .insert(Header {
                    key: headers::ERROR_CODE,
                    value: Some(r.violation.code()),
                })
                .insert(Header {
                    key: headers::ERROR_MESSAGE,
                    value: Some(reason.as_str()),
                })
                .insert(Header {
                    key: headers::STAGE,
                    value: Some("collector"),
                });
            let record = FutureRecord::to(&self.rejected_topic)
                .key(r.key.as_bytes())
                .payload(&r.payload)
                .headers(hdrs);
            pending.push(self.enqueue(record, metrics)?);
        }
        let results = join_all(pending).await;
        metrics
            .produce_seconds
            .observe(started.elapsed().as_secs_f64());
        for result in results {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    let reason = produce_error_reason(&e);
                    metrics.produce_errors.with_label_values(&[reason]).inc();
                    tracing::warn!(error = %e, "broker did not acknowledge a record");
                    return Err(ApiError::Unavailable(reason));
                }
                Err(_canceled) => {
                    metrics
                        .produce_errors
                        .with_label_values(&["canceled"])
                        .inc();
                    return Err(ApiError::Unavailable("canceled"));
                }
            }
        }
        if !nothing_to_send && self.broker.delivered() {
            // A request queued before the outage was detected got through: the broker is back.
            metrics.kafka_unreachable.set(0);
            tracing::info!("a Kafka broker can be reached again");
        }
        Ok(())
    }

    fn enqueue(
        &self,
        record: FutureRecord<'_, [u8], Vec<u8>>,
        metrics: &Metrics,
    ) -> Result<rdkafka::producer::DeliveryFuture, ApiError> {
        self.producer.send_result(record).map_err(|(e, _)| {
            let reason = produce_error_reason(&e);
            metrics.produce_errors.with_label_values(&[reason]).inc();
            tracing::warn!(error = %e, "cannot enqueue a record");
            ApiError::Unavailable(reason)
        })
    }

    /// Waits for every queued record to be acknowledged (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::error!(error = %e, in_flight = self.producer.in_flight_count(),
                "producer flush did not complete before shutdown");
        }
    }
}

/// A bounded label for a produce failure.
fn produce_error_reason(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => "queue_full",
        Some(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => "too_large",
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => {
            "unknown_topic"
        }
        Some(RDKafkaErrorCode::AllBrokersDown) => "brokers_down",
        _ => "broker_error",
    }
}
