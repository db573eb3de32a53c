//! Logs and traces. Spans always carry real trace ids (so `traceparent` headers join one event's
//! journey across Kafka); they are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes buffered spans when dropped at the end of `main`.
pub struct TelemetryGuard(SdkTracerProvider);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), text logs or JSON
/// (`CDP_LOG_FORMAT=json`), and the OpenTelemetry layer.
pub fn init(service: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build(),
    );
    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty());
    if exporting {
        // The exporter reads the endpoint (and appends /v1/traces) from the standard variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    // Separate filters: quieting logs (RUST_LOG=warn) must not remove the spans whose ids travel
    // in `traceparent` headers; `CDP_TRACE_FILTER` (default `info`) selects those.
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let trace_filter =
        EnvFilter::try_from_env("CDP_TRACE_FILTER").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("CDP_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        // Colours only on a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt::layer().with_ansi(ansi).boxed()
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter))
        .with(otel.with_filter(trace_filter))
        .try_init()?;
    tracing::info!(service, otlp_export = exporting, "telemetry ready");
    Ok(TelemetryGuard(provider))
}
