//! Kafka plumbing every service shares.
//!
//! Topic names live in [`Topics`] and nowhere else; header names in [`headers`]. Clients are built
//! from [`KafkaConfig`], which passes `CDP_RDKAFKA_*` variables straight to librdkafka so SASL and
//! TLS need no code (`CDP_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`).

pub mod headers;
pub mod stage;
mod topics;

pub use topics::{TopicSpec, Topics};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Connection settings shared by producers, consumers and the admin client.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Extra librdkafka properties (`CDP_RDKAFKA_*`), applied last so they win.
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create Kafka client: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot create topics on {brokers} (is the broker reachable?): {source}")]
    Admin {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot create topic {topic}: {error}")]
    CreateTopic { topic: String, error: String },
}

impl KafkaConfig {
    /// `brokers` plus every `CDP_RDKAFKA_<NAME>` variable as property `<name>` (lower case, `_` → `.`).
    pub fn from_env(brokers: &str) -> Self {
        let properties = std::env::vars()
            .filter_map(|(k, v)| {
                k.strip_prefix("CDP_RDKAFKA_")
                    .map(|name| (name.to_ascii_lowercase().replace('_', "."), v))
            })
            .collect();
        KafkaConfig {
            brokers: brokers.to_string(),
            properties,
        }
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id);
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A producer that only reports success once every in-sync replica has the message
    /// (`acks=all`) and never writes a message twice on its own retries (idempotence).
    /// `delivery_timeout` bounds how long a message may wait for the broker before it fails.
    pub fn producer(
        &self,
        client_id: &str,
        delivery_timeout: Duration,
        linger: Duration,
    ) -> Result<FutureProducer, KafkaSetupError> {
        let mut c = self.base(client_id);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .set("queue.buffering.max.messages", "200000")
            .set("queue.buffering.max.kbytes", "262144");
        self.finish(c).create().map_err(KafkaSetupError::Client)
    }

    /// A group consumer that commits only offsets its caller stored (`store_offset` once the work
    /// for a message is durable downstream); stored offsets are committed every few seconds.
    pub fn consumer(
        &self,
        client_id: &str,
        group_id: &str,
        from_earliest: bool,
    ) -> Result<StreamConsumer, KafkaSetupError> {
        let mut c = self.base(client_id);
        c.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "auto.offset.reset",
                if from_earliest { "earliest" } else { "latest" },
            );
        self.finish(c).create().map_err(KafkaSetupError::Client)
    }

    /// Creates the topics that are missing; existing ones are left as they are.
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), KafkaSetupError> {
        let admin: AdminClient<DefaultClientContext> = self
            .finish(self.base("cdp-admin"))
            .create()
            .map_err(KafkaSetupError::Client)?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let mut n = NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                );
                for (k, v) in &t.config {
                    n = n.set(k, v);
                }
                n
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(|source| KafkaSetupError::Admin {
                brokers: self.brokers.clone(),
                source,
            })?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaSetupError::CreateTopic {
                        topic,
                        error: code.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_and_tls_settings_pass_through_to_librdkafka() {
        // Fails at client creation when librdkafka was built without OpenSSL or SASL support.
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            properties: vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
                ("sasl.username".into(), "u".into()),
                ("sasl.password".into(), "p".into()),
            ],
        };
        let producer = cfg
            .producer("test", Duration::from_secs(1), Duration::from_millis(1))
            .expect("librdkafka accepts SASL_SSL with SCRAM");
        drop(producer);
        let bad = KafkaConfig {
            properties: vec![("security.protocol".into(), "carrier-pigeon".into())],
            ..cfg
        };
        assert!(bad
            .producer("test", Duration::from_secs(1), Duration::from_millis(1))
            .is_err());
    }
}
