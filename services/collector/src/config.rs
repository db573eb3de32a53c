//! Collector settings (`CDP_*` environment variables) beside the shared ones.

use ipnet::IpNet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use cdp_kafka::KafkaConfig;
use cdp_runtime::{env_or, Settings, SettingsError};

#[derive(Debug, Clone)]
pub struct Config {
    pub common: Settings,
    /// Brokers from `CDP_KAFKA_BROKERS` plus `CDP_RDKAFKA_*` client properties.
    pub kafka: KafkaConfig,
    /// `CDP_HTTP_ADDR` (default `0.0.0.0:8080`).
    pub http_addr: SocketAddr,
    /// `CDP_PUBLIC_URL`: the collector's address as browsers reach it (e.g. `https://cdp.example.com`).
    /// Without it the settings document points browsers at the request's `Host`.
    pub public_url: Option<String>,
    /// `CDP_TRUSTED_PROXIES`: comma-separated CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `CDP_BODY_TIMEOUT_MS`: a body must arrive within this time (default 10000).
    pub body_timeout: Duration,
    /// `CDP_HEADER_TIMEOUT_MS`: a request's line and headers must arrive within this time, counted
    /// from the connection's opening for its first request and from the first byte of each later
    /// one (default 10000). A connection that misses it is closed.
    pub header_timeout: Duration,
    /// `CDP_IDLE_TIMEOUT_MS`: a keep-alive connection with no request in progress is closed after
    /// this time (default 75000, above the 60 s idle timeout of common load balancers, so they
    /// close first and never reuse a connection the collector is closing).
    pub idle_timeout: Duration,
    /// `CDP_MAX_CONNECTIONS`: open client connections at most; further ones wait in the listen
    /// backlog until one closes (default 10000, lowered to fit the open-file limit).
    pub max_connections: u32,
    /// `CDP_KAFKA_DELIVERY_TIMEOUT_MS`: how long a record may wait for the broker before the request
    /// gets a 503 (default 5000; SDKs time out at 10 s).
    pub delivery_timeout: Duration,
    /// `CDP_KAFKA_LINGER_MS`: producer batching delay (default 2).
    pub linger: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, SettingsError> {
        let proxies: String = env_or("CDP_TRUSTED_PROXIES", String::new())?;
        let trusted_proxies = proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_net)
            .collect::<Result<_, _>>()
            .map_err(|reason| SettingsError {
                name: "CDP_TRUSTED_PROXIES".into(),
                value: proxies.clone(),
                reason,
            })?;
        let public_url: String = env_or("CDP_PUBLIC_URL", String::new())?;
        let common = Settings::from_env(crate::SERVICE)?;
        Ok(Config {
            kafka: KafkaConfig::from_env(&common.kafka_brokers),
            common,
            http_addr: env_or("CDP_HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            public_url: (!public_url.is_empty())
                .then(|| public_url.trim_end_matches('/').to_string()),
            trusted_proxies,
            body_timeout: Duration::from_millis(env_or("CDP_BODY_TIMEOUT_MS", 10_000u64)?),
            header_timeout: positive_millis("CDP_HEADER_TIMEOUT_MS", 10_000)?,
            idle_timeout: positive_millis("CDP_IDLE_TIMEOUT_MS", 75_000)?,
            max_connections: env_or("CDP_MAX_CONNECTIONS", NonZeroU32::MIN.saturating_add(9_999))?
                .get(),
            delivery_timeout: Duration::from_millis(env_or(
                "CDP_KAFKA_DELIVERY_TIMEOUT_MS",
                5_000u64,
            )?),
            linger: Duration::from_millis(env_or("CDP_KAFKA_LINGER_MS", 2u64)?),
        })
    }
}

/// A duration in milliseconds that must not be zero (zero would close every connection at once).
fn positive_millis(name: &str, default: u64) -> Result<Duration, SettingsError> {
    let ms: u64 = env_or(name, default)?;
    if ms == 0 {
        return Err(SettingsError {
            name: name.into(),
            value: "0".into(),
            reason: "must be at least 1 millisecond".into(),
        });
    }
    Ok(Duration::from_millis(ms))
}

/// A CIDR, or a bare address meaning just that host.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
}
