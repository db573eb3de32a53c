//! Rebuilding a partition's dedupe window from the enriched topic, before its first record is
//! processed by this replica (start-up, restart, or a partition moved here by a rebalance).
//!
//! The enriched topic carries the same key as the valid topic, so with equal partition counts
//! (checked at start) partition N of one holds the outputs of partition N of the other: the tail
//! of enriched partition N since `now − window` is exactly the set of ids already let through.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::time::{Duration, Instant};

use cdp_enrich::Dedupe;
use cdp_kafka::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading {topic} partition {partition} back: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error(
        "{topic} partition {partition} not read to its end within {timeout:?}; {ids} ids rebuilt"
    )]
    Timeout {
        topic: String,
        partition: i32,
        timeout: Duration,
        ids: usize,
    },
}

pub struct Rebuilder {
    pub kafka: KafkaConfig,
    pub topic: String,
    pub client_id: String,
    pub timeout: Duration,
}

/// Only the field needed; serde skips the rest of the event without building it.
#[derive(serde::Deserialize)]
struct IdOnly {
    #[serde(rename = "messageId", default)]
    message_id: Option<Value>,
}

impl Rebuilder {
    /// Reads the partition's tail into `dedupe` (already reset for it); returns the ids read.
    pub async fn rebuild(
        &self,
        partition: i32,
        dedupe: &mut Dedupe,
        now_ms: i64,
    ) -> Result<usize, RebuildError> {
        let err = |source| RebuildError::Kafka {
            topic: self.topic.clone(),
            partition,
            source,
        };
        let mut kafka = self.kafka.clone();
        // The end of the partition is reported as an event rather than guessed from watermarks.
        kafka
            .properties
            .push(("enable.partition.eof".into(), "true".into()));
        kafka
            .properties
            .push(("enable.auto.commit".into(), "false".into()));
        let group = format!("{}-rebuild", self.client_id);
        let consumer: StreamConsumer =
            kafka
                .consumer(&self.client_id, &group, true)
                .map_err(|e| match e {
                    cdp_kafka::KafkaSetupError::Client(k) => err(k),
                    other => err(KafkaError::ClientCreation(other.to_string())),
                })?;
        let window_ms = i64::try_from(dedupe.window_secs())
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        let since = now_ms.saturating_sub(window_ms);
        let start = self.start_offset(&consumer, partition, since);
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, partition, start)
            .map_err(err)?;
        consumer.assign(&assignment).map_err(err)?;
        let deadline = Instant::now() + self.timeout;
        let mut ids = 0usize;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, consumer.recv()).await;
            let message = match next {
                Err(_) => {
                    return Err(RebuildError::Timeout {
                        topic: self.topic.clone(),
                        partition,
                        timeout: self.timeout,
                        ids,
                    })
                }
                Ok(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
                Ok(Err(KafkaError::PartitionEOF(_))) => continue,
                Ok(Err(e)) => {
                    // Transient fetch errors are retried by librdkafka; keep reading until the deadline.
                    tracing::debug!(error = %e, partition, "rebuild read error");
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            let at_ms = message.timestamp().to_millis().unwrap_or(now_ms);
            if at_ms < since {
                continue;
            }
            let id = message
                .payload()
                .and_then(|p| serde_json::from_slice::<IdOnly>(p).ok())
                .and_then(|r| r.message_id)
                .and_then(|v| match v {
                    Value::String(s) if !s.is_empty() => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            if let Some(id) = id {
                let at_secs = u64::try_from(at_ms / 1000).unwrap_or_default();
                dedupe.remember(partition, &id, at_secs);
                ids += 1;
            }
        }
        dedupe.expire(partition, u64::try_from(now_ms / 1000).unwrap_or_default());
        Ok(ids)
    }

    /// The first offset written at or after `since_ms`, or the beginning when the broker cannot
    /// say (older brokers, or no timestamp index): reading more is safe, only slower.
    fn start_offset(&self, consumer: &StreamConsumer, partition: i32, since_ms: i64) -> Offset {
        let mut query = TopicPartitionList::new();
        if query
            .add_partition_offset(&self.topic, partition, Offset::Offset(since_ms))
            .is_err()
        {
            return Offset::Beginning;
        }
        match consumer.offsets_for_times(query, Duration::from_secs(10)) {
            Ok(found) => match found
                .find_partition(&self.topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
                // No record at or after `since`: nothing in the window.
                Some(Offset::End) => Offset::End,
                _ => Offset::Beginning,
            },
            Err(e) => {
                tracing::debug!(error = %e, partition, "offsets_for_times failed; reading from the beginning");
                Offset::Beginning
            }
        }
    }
}
