//! `cdp_enricher_*` metrics. Consumed / produced counts, per-record processing time and consumer
//! lag come from the shared stage (`cdp_enricher_consumed_total`, `cdp_enricher_produced_total`,
//! `cdp_enricher_process_seconds`, `cdp_enricher_consumer_lag`).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub events: IntCounterVec,
    pub parse_failures: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub enrich_seconds: Histogram,
    pub dedupe_ids: IntGauge,
    pub dedupe_bytes: IntGauge,
    pub dedupe_evicted: IntCounter,
    pub dedupe_rebuilds: IntCounterVec,
    pub dedupe_rebuilt_ids: IntCounter,
    pub dedupe_rebuild_seconds: Histogram,
    pub geo_database: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            events: IntCounterVec::new(
                Opts::new(
                    "cdp_enricher_events_total",
                    "Events by source and outcome: forwarded, duplicate (messageId seen in the window), suppressed (userId in suppressed_users), dead_letter.",
                ),
                &["source", "outcome"],
            )?,
            parse_failures: IntCounterVec::new(
                Opts::new(
                    "cdp_enricher_parse_failures_total",
                    "Events forwarded without one enrichment because its input was unreadable, by enricher (time, user_agent, geo, privacy).",
                ),
                &["enricher"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "cdp_enricher_dead_letters_total",
                    "Records sent to the enricher's dead-letter topic, by reason.",
                ),
                &["code"],
            )?,
            enrich_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "cdp_enricher_enrich_seconds",
                    "Time from a record's bytes to its enriched bytes (parse, dedupe, enrichers, serialize).",
                )
                .buckets(vec![1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2]),
            )?,
            dedupe_ids: IntGauge::new(
                "cdp_enricher_dedupe_ids",
                "messageIds held in the dedupe windows of the partitions this replica owns.",
            )?,
            dedupe_bytes: IntGauge::new(
                "cdp_enricher_dedupe_bytes",
                "Memory held by the dedupe windows (from their capacities).",
            )?,
            dedupe_evicted: IntCounter::new(
                "cdp_enricher_dedupe_evicted_total",
                "messageIds forgotten before their window ended because CDP_DEDUPE_MAX_IDS was reached.",
            )?,
            dedupe_rebuilds: IntCounterVec::new(
                Opts::new(
                    "cdp_enricher_dedupe_rebuilds_total",
                    "Partition windows rebuilt from the enriched topic, by outcome (ok, timeout, error).",
                ),
                &["outcome"],
            )?,
            dedupe_rebuilt_ids: IntCounter::new(
                "cdp_enricher_dedupe_rebuilt_ids_total",
                "messageIds read back from the enriched topic while rebuilding windows.",
            )?,
            dedupe_rebuild_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "cdp_enricher_dedupe_rebuild_seconds",
                    "Time to rebuild one partition's window (the partition waits meanwhile).",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0]),
            )?,
            geo_database: IntGauge::new(
                "cdp_enricher_geo_database",
                "1 when a geo database (CDP_GEOIP_DB) is loaded, 0 when context.location is not filled.",
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.parse_failures.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.enrich_seconds.clone()))?;
        registry.register(Box::new(m.dedupe_ids.clone()))?;
        registry.register(Box::new(m.dedupe_bytes.clone()))?;
        registry.register(Box::new(m.dedupe_evicted.clone()))?;
        registry.register(Box::new(m.dedupe_rebuilds.clone()))?;
        registry.register(Box::new(m.dedupe_rebuilt_ids.clone()))?;
        registry.register(Box::new(m.dedupe_rebuild_seconds.clone()))?;
        registry.register(Box::new(m.geo_database.clone()))?;
        Ok(m)
    }
}
