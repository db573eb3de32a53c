//! Service settings from `CDP_*` environment variables, with documented defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct SettingsError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// Reads `name`, or `default` when unset or empty. The error names the variable and the bad value.
pub fn env_or<T>(name: &str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e: T::Err| SettingsError {
            name: name.into(),
            value: v,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// Settings every service shares (docs/ARCHITECTURE.md and the README).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `CDP_WORKSPACE`: path of the workspace document.
    pub workspace: PathBuf,
    /// `CDP_WORKSPACE_POLL_MS`: how often the document is re-read (default 2000).
    pub workspace_poll: Duration,
    /// `CDP_KAFKA_BROKERS`: bootstrap servers.
    pub kafka_brokers: String,
    /// `CDP_TOPIC_PREFIX`: prefix of every topic.
    pub topic_prefix: String,
    /// `CDP_ADMIN_ADDR`: `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    /// `CDP_CREATE_TOPICS`: create the missing topics a service uses at start (default true; turn
    /// it off where a bootstrap job or the platform team owns topics).
    pub create_topics: bool,
    /// `CDP_TOPIC_PARTITIONS` (default 3) and `CDP_TOPIC_REPLICATION` (default 1) for created topics.
    pub topic_partitions: i32,
    pub topic_replication: i32,
}

/// The admin port of each service in the local stack (README service table).
fn default_admin_port(service: &str) -> u16 {
    match service {
        "cdp-collector" => 9101,
        "cdp-validator" => 9102,
        "cdp-enricher" => 9103,
        _ => 9110,
    }
}

/// Settings of a service that consumes one topic and produces to others (validator, enricher,
/// destinations), read the same way by each.
#[derive(Debug, Clone)]
pub struct StageSettings {
    /// `CDP_CONSUMER_GROUP` (the default is the service's).
    pub group: String,
    /// `CDP_MAX_IN_FLIGHT`: inputs processed whose outputs are not yet acknowledged (the default is
    /// the service's).
    pub max_in_flight: usize,
    /// `CDP_KAFKA_DELIVERY_TIMEOUT_MS`: how long an output may wait for the broker before it is
    /// produced again (default 30000).
    pub delivery_timeout: Duration,
    /// `CDP_KAFKA_LINGER_MS`: producer batching delay (default 5).
    pub linger: Duration,
}

impl StageSettings {
    pub fn from_env(
        default_group: &str,
        default_max_in_flight: usize,
    ) -> Result<Self, SettingsError> {
        Ok(StageSettings {
            group: env_or("CDP_CONSUMER_GROUP", default_group.to_string())?,
            max_in_flight: env_or("CDP_MAX_IN_FLIGHT", default_max_in_flight)?,
            delivery_timeout: Duration::from_millis(env_or(
                "CDP_KAFKA_DELIVERY_TIMEOUT_MS",
                30_000,
            )?),
            linger: Duration::from_millis(env_or("CDP_KAFKA_LINGER_MS", 5)?),
        })
    }
}

impl Settings {
    pub fn from_env(service: &str) -> Result<Self, SettingsError> {
        Ok(Settings {
            workspace: env_or("CDP_WORKSPACE", PathBuf::from("config/workspace.yaml"))?,
            workspace_poll: Duration::from_millis(env_or("CDP_WORKSPACE_POLL_MS", 2000u64)?),
            kafka_brokers: env_or("CDP_KAFKA_BROKERS", "127.0.0.1:9092".to_string())?,
            topic_prefix: env_or("CDP_TOPIC_PREFIX", "cdp".to_string())?,
            admin_addr: env_or(
                "CDP_ADMIN_ADDR",
                SocketAddr::from(([0, 0, 0, 0], default_admin_port(service))),
            )?,
            create_topics: env_or("CDP_CREATE_TOPICS", true)?,
            topic_partitions: env_or("CDP_TOPIC_PARTITIONS", 3)?,
            topic_replication: env_or("CDP_TOPIC_REPLICATION", 1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_the_variable() {
        // A name no other test or process sets.
        std::env::set_var("CDP_TEST_SETTINGS_PORT", "eighty");
        let err = env_or("CDP_TEST_SETTINGS_PORT", 80u16).expect_err("not a number");
        assert!(err.to_string().contains("CDP_TEST_SETTINGS_PORT"), "{err}");
        assert!(err.to_string().contains("eighty"), "{err}");
        assert_eq!(env_or("CDP_TEST_SETTINGS_UNSET", 7u16).expect("default"), 7);
    }
}
