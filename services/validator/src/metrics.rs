//! `cdp_validator_*` metrics: verdicts by source and outcome, violations by plan, event and kind,
//! validation latency, plan versions loaded, poison records. Consumer lag and produce counts come
//! from the shared stage (`cdp_validator_consumer_lag`, `cdp_validator_produced_total`).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub events: IntCounterVec,
    pub violations: IntCounterVec,
    pub validation_seconds: Histogram,
    pub plans: IntGaugeVec,
    pub plan_reloads: IntCounterVec,
    pub plan_failing: IntGauge,
    pub dead_letters: IntCounterVec,
    pub unknown_source: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            events: IntCounterVec::new(
                Opts::new(
                    "cdp_validator_events_total",
                    "Events judged, by source and outcome (valid, unchecked, unplanned, allowed, omitted, blocked).",
                ),
                &["source", "outcome"],
            )?,
            violations: IntCounterVec::new(
                Opts::new(
                    "cdp_validator_violations_total",
                    "Tracking-plan violations by plan, planned event (`(unplanned)` / `(identify)` / `(group)` otherwise), kind and action.",
                ),
                &["plan", "event", "kind", "action"],
            )?,
            validation_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "cdp_validator_validation_seconds",
                    "Time from an event's bytes to its verdict and output bytes.",
                )
                .buckets(vec![1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2]),
            )?,
            plans: IntGaugeVec::new(
                Opts::new(
                    "cdp_validator_plan_info",
                    "1 for each tracking plan and content version in use.",
                ),
                &["plan", "version"],
            )?,
            plan_reloads: IntCounterVec::new(
                Opts::new(
                    "cdp_validator_plan_reloads_total",
                    "Tracking-plan recompilations after a workspace change, by outcome (ok, error). On error the previous plans stay.",
                ),
                &["outcome"],
            )?,
            plan_failing: IntGauge::new(
                "cdp_validator_plan_failing",
                "1 while the workspace's tracking plans do not compile and the previous ones are in use.",
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "cdp_validator_dead_letters_total",
                    "Records sent to the validator's dead-letter topic, by reason.",
                ),
                &["code"],
            )?,
            unknown_source: IntCounter::new(
                "cdp_validator_unknown_source_total",
                "Events whose source is not (or no longer) in the workspace; passed on unchecked.",
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.violations.clone()))?;
        registry.register(Box::new(m.validation_seconds.clone()))?;
        registry.register(Box::new(m.plans.clone()))?;
        registry.register(Box::new(m.plan_reloads.clone()))?;
        registry.register(Box::new(m.plan_failing.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.unknown_source.clone()))?;
        Ok(m)
    }
}
