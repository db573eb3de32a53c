//! The collector's Prometheus metrics. Labels come from bounded sets only: route templates, status
//! codes, call types, configured source ids and reason codes.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub request_bytes: HistogramVec,
    pub events: IntCounterVec,
    pub batch_size: Histogram,
    pub rejected: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub produce_seconds: Histogram,
    pub produce_errors: IntCounterVec,
    pub producer_queue: IntGauge,
    pub client_metrics: IntCounter,
    pub connections_open: IntGauge,
    pub connection_timeouts: IntCounterVec,
    pub accept_errors: IntCounter,
    pub kafka_unreachable: IntGauge,
}

impl Metrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("cdp_collector_http_requests_total", "HTTP requests by route template and status."),
                &["route", "status"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new("cdp_collector_http_request_duration_seconds",
                    "Time from request start to response, broker acknowledgement included.")
                    .buckets(exponential_buckets(0.0005, 2.0, 16)?),
                &["route"],
            )?,
            request_bytes: HistogramVec::new(
                HistogramOpts::new("cdp_collector_http_request_body_bytes",
                    "Request body size as received (before gzip inflation).")
                    .buckets(exponential_buckets(128.0, 4.0, 8)?),
                &["route"],
            )?,
            events: IntCounterVec::new(
                Opts::new("cdp_collector_events_total", "Messages accepted into the raw topic, by call type and source."),
                &["type", "source"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("cdp_collector_batch_messages", "Messages per request.")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0]),
            )?,
            rejected: IntCounterVec::new(
                Opts::new("cdp_collector_rejected_total",
                    "Messages or requests refused, by reason code. Refused messages are in the rejected topic."),
                &["reason"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new("cdp_collector_auth_failures_total", "Requests without a known write key."),
                &["reason"],
            )?,
            produce_seconds: Histogram::with_opts(
                HistogramOpts::new("cdp_collector_produce_duration_seconds",
                    "Time for the broker to acknowledge every record of a request.")
                    .buckets(exponential_buckets(0.0005, 2.0, 16)?),
            )?,
            produce_errors: IntCounterVec::new(
                Opts::new("cdp_collector_produce_errors_total", "Records the broker did not take, by reason; the request got a 503."),
                &["reason"],
            )?,
            producer_queue: IntGauge::new("cdp_collector_producer_queue_depth",
                "Records waiting in the producer for a broker acknowledgement.")?,
            client_metrics: IntCounter::new("cdp_collector_client_metric_series_total",
                "Metric series received from browser clients on /v1/m.")?,
            connections_open: IntGauge::new("cdp_collector_http_connections_open",
                "Client connections open now (at most CDP_MAX_CONNECTIONS).")?,
            connection_timeouts: IntCounterVec::new(
                Opts::new("cdp_collector_http_connection_timeouts_total",
                    "Connections closed for a timeout: `header` (request line and headers too slow), `idle` (keep-alive unused)."),
                &["reason"],
            )?,
            accept_errors: IntCounter::new("cdp_collector_http_accept_errors_total",
                "Failures to accept a connection, e.g. out of file descriptors; the listener backs off and retries.")?,
            kafka_unreachable: IntGauge::new("cdp_collector_kafka_unreachable",
                "1 while no broker connection can be made; requests are then answered 503 without queueing.")?,
        };
        for reason in ["header", "idle"] {
            m.connection_timeouts.with_label_values(&[reason]);
        }
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.request_seconds.clone()))?;
        r.register(Box::new(m.request_bytes.clone()))?;
        r.register(Box::new(m.events.clone()))?;
        r.register(Box::new(m.batch_size.clone()))?;
        r.register(Box::new(m.rejected.clone()))?;
        r.register(Box::new(m.auth_failures.clone()))?;
        r.register(Box::new(m.produce_seconds.clone()))?;
        r.register(Box::new(m.produce_errors.clone()))?;
        r.register(Box::new(m.producer_queue.clone()))?;
        r.register(Box::new(m.client_metrics.clone()))?;
        r.register(Box::new(m.connections_open.clone()))?;
        r.register(Box::new(m.connection_timeouts.clone()))?;
        r.register(Box::new(m.accept_errors.clone()))?;
        r.register(Box::new(m.kafka_unreachable.clone()))?;
        Ok(m)
    }
}
