//! `cdp_dest_*` metrics, labelled by destination instance id (a bounded set: the workspace's).
//! Consumed counts, processing time and consumer lag come from the shared stage
//! (`cdp_dest_consumed_total`, `cdp_dest_produced_total{topic}`, `cdp_dest_process_seconds`,
//! `cdp_dest_consumer_lag`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub events: IntCounterVec,
    pub skipped: IntCounterVec,
    pub attempts: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    pub end_to_end_seconds: HistogramVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            events: IntCounterVec::new(
                Opts::new(
                    "cdp_dest_events_total",
                    "Events by destination and final outcome: delivered, parked_retry (to the retry topic), dead_letter (to the DLQ), skipped (routing or filters).",
                ),
                &["destination", "outcome"],
            )?,
            skipped: IntCounterVec::new(
                Opts::new(
                    "cdp_dest_skipped_total",
                    "Events not sent, by destination and reason: disabled, source, integrations, filter.",
                ),
                &["destination", "reason"],
            )?,
            attempts: IntCounterVec::new(
                Opts::new(
                    "cdp_dest_attempts_total",
                    "Delivery attempts by destination and result: delivered, retry, invalid.",
                ),
                &["destination", "result"],
            )?,
            delivery_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "cdp_dest_delivery_seconds",
                    "Duration of one delivery attempt (request to answer or failure).",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["destination"],
            )?,
            end_to_end_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "cdp_dest_end_to_end_seconds",
                    "From the collector's receivedAt to delivery.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 14400.0]),
                &["destination"],
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.attempts.clone()))?;
        registry.register(Box::new(m.delivery_seconds.clone()))?;
        registry.register(Box::new(m.end_to_end_seconds.clone()))?;
        Ok(m)
    }
}
