//! Pipeline metadata travels in Kafka headers, never in the Segment payload.

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The source the message came in on (workspace source id).
pub const SOURCE_ID: &str = "cdp-source-id";
/// When the collector received it (RFC 3339, milliseconds, UTC).
pub const RECEIVED_AT: &str = "cdp-received-at";
/// W3C trace context of the span that produced the record.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state, when there is one.
pub const TRACESTATE: &str = "tracestate";
/// Bounded reason code on rejected / blocked / dead-letter records.
pub const ERROR_CODE: &str = "cdp-error-code";
/// A sentence a person can act on, beside the code.
pub const ERROR_MESSAGE: &str = "cdp-error-message";
/// Where a dead-letter record came from.
pub const ORIGIN_TOPIC: &str = "cdp-origin-topic";
pub const ORIGIN_PARTITION: &str = "cdp-origin-partition";
pub const ORIGIN_OFFSET: &str = "cdp-origin-offset";
/// The stage that failed (`collector`, `validator`, `enricher`, `dest-<id>`).
pub const STAGE: &str = "cdp-stage";
/// On a destination's retry record: when to attempt it again (RFC 3339, milliseconds, UTC).
pub const DUE_AT: &str = "cdp-due-at";
/// On a destination's retry / dead-letter record: delivery attempts made so far.
pub const ATTEMPTS: &str = "cdp-attempts";
/// On a destination's retry record: the first attempt (RFC 3339), where the retry window starts.
pub const FIRST_ATTEMPT_AT: &str = "cdp-first-attempt-at";
/// On a destination's dead-letter record: the vendor's HTTP status, when it answered.
pub const HTTP_STATUS: &str = "cdp-http-status";

/// A header with a UTF-8 value, for `OwnedHeaders::insert`.
pub fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// `headers` plus what a dead-letter or parked record says about its failure: the origin topic,
/// partition and offset, the stage that failed, a bounded code and a sentence.
pub fn failure(
    headers: OwnedHeaders,
    origin: (&str, i32, i64),
    stage: &str,
    code: &str,
    message: &str,
) -> OwnedHeaders {
    let (topic, partition, offset) = origin;
    headers
        .insert(header(ORIGIN_TOPIC, topic))
        .insert(header(ORIGIN_PARTITION, &partition.to_string()))
        .insert(header(ORIGIN_OFFSET, &offset.to_string()))
        .insert(header(STAGE, stage))
        .insert(header(ERROR_CODE, code))
        .insert(header(ERROR_MESSAGE, message))
}

/// Adds the current span's trace context (`traceparent`, `tracestate`).
pub fn with_trace_context(headers: OwnedHeaders) -> OwnedHeaders {
    let cx = tracing::Span::current().context();
    let mut injector = HeaderInjector(Some(headers));
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut injector));
    injector.0.unwrap_or_default()
}

struct HeaderInjector(Option<OwnedHeaders>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let headers = self.0.take().unwrap_or_default();
        self.0 = Some(headers.insert(Header {
            key,
            value: Some(&value),
        }));
    }
}

/// The value of header `name` as UTF-8, if present.
pub fn get<'a>(headers: Option<&'a BorrowedHeaders>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The trace context a record carries (its producer's span), to parent the consumer's span on.
pub fn trace_context(headers: Option<&BorrowedHeaders>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The pipeline headers of an input record, carried on to its outputs with the current span's
/// trace context in place of the input's.
pub fn forward(headers: Option<&BorrowedHeaders>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.map_or(0, |h| h.count()) + 2);
    if let Some(headers) = headers {
        for h in headers.iter() {
            if h.key != TRACEPARENT && h.key != TRACESTATE {
                out = out.insert(h);
            }
        }
    }
    with_trace_context(out)
}

struct HeaderExtractor<'a>(Option<&'a BorrowedHeaders>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        get(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|h| h.iter().map(|h| h.key).collect())
            .unwrap_or_default()
    }
}
