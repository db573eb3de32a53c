//! What one delivery attempt came to, classified in one place for every HTTP destination.

use std::time::Duration;

/// The result of one attempt to hand an event to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination has it.
    Delivered,
    /// It may succeed later (5xx, 408, 429, timeouts, connection errors). `after` is the wait the
    /// destination asked for (`Retry-After`), if any.
    Retry {
        after: Option<Duration>,
        failure: Failure,
    },
    /// It will never succeed as sent (other 4xx): dead-lettered with the destination's answer.
    Invalid { failure: Failure },
}

/// Why an attempt failed: a bounded code for headers and metrics, and the destination's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `http_<status>`, `timeout`, `connect`, `request`, `config`.
    pub code: String,
    /// The HTTP status, when the destination answered.
    pub status: Option<u16>,
    /// The answer (body, truncated) or the transport error.
    pub message: String,
}

/// How much of a destination's answer is kept in headers and logs.
pub const MAX_ANSWER_BYTES: usize = 1024;

impl Outcome {
    /// Classifies an HTTP answer. Retried: 408, 423, 429 and 5xx except 501 (Segment's Actions
    /// rules, segment-spec §5.4 and §7.1). Any other non-2xx is invalid.
    pub fn from_http(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
        if (200..300).contains(&status) {
            return Outcome::Delivered;
        }
        let failure = Failure {
            code: format!("http_{status}"),
            status: Some(status),
            message: truncate(&String::from_utf8_lossy(body)),
        };
        let retryable = matches!(status, 408 | 423 | 429) || (status >= 500 && status != 501);
        if retryable {
            Outcome::Retry {
                after: retry_after.and_then(parse_retry_after),
                failure,
            }
        } else {
            Outcome::Invalid { failure }
        }
    }

    /// A transport failure (no answer): always worth retrying.
    pub fn transport(code: &str, message: impl Into<String>) -> Outcome {
        Outcome::Retry {
            after: None,
            failure: Failure {
                code: code.into(),
                status: None,
                message: truncate(&message.into()),
            },
        }
    }

    /// Bounded label for metrics: `delivered`, `retry`, `invalid`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Invalid { .. } => "invalid",
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ANSWER_BYTES {
        return s.to_string();
    }
    let mut end = MAX_ANSWER_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_like_segment_actions() {
        assert_eq!(Outcome::from_http(200, None, b""), Outcome::Delivered);
        assert_eq!(Outcome::from_http(204, None, b""), Outcome::Delivered);
        for s in [408, 423, 429, 500, 502, 503, 504, 599] {
            assert_eq!(Outcome::from_http(s, None, b"").label(), "retry", "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422, 501] {
            assert_eq!(Outcome::from_http(s, None, b"").label(), "invalid", "{s}");
        }
    }

    #[test]
    fn the_answer_is_kept_truncated() {
        let body = "x".repeat(5000);
        let Outcome::Invalid { failure } = Outcome::from_http(400, None, body.as_bytes()) else {
            panic!("400 is invalid");
        };
        assert_eq!(failure.code, "http_400");
        assert_eq!(failure.status, Some(400));
        assert!(failure.message.len() <= MAX_ANSWER_BYTES + 3);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let wait = parse_retry_after(&later).unwrap_or_default();
        assert!(wait > Duration::from_secs(100), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
        let Outcome::Retry { after, .. } = Outcome::from_http(429, Some("2"), b"slow down") else {
            panic!("429 is retried");
        };
        assert_eq!(after, Some(Duration::from_secs(2)));
    }
}
