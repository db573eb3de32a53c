//! Bounded body reading: a size cap before and after gzip, a time cap, JSON whatever the content type.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

use crate::error::ApiError;

/// Reads at most `limit` bytes of body within `timeout`, inflating gzip with the same cap on the
/// inflated size (so a small bomb cannot expand past the limit).
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let raw = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => return Err(ApiError::BodyTimeout),
        Ok(Err(e)) => return Err(classify_read_error(e, limit)),
        Ok(Ok(b)) => b,
    };
    match content_encoding(headers)?.as_deref() {
        None | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => gunzip(&raw, limit),
        Some(other) => Err(ApiError::UnsupportedEncoding(other.to_string())),
    }
}

fn classify_read_error(e: axum::Error, limit: usize) -> ApiError {
    // to_bytes reports the limit as a LengthLimitError somewhere in the source chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::TooLarge { limit };
        }
        source = err.source();
    }
    ApiError::BodyRead(e.to_string())
}

fn content_encoding(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_ascii_lowercase()))
            .map_err(|_| ApiError::UnsupportedEncoding("<not ASCII>".into())),
    }
}

fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    // Multi-member streams (concatenated gzip files) are valid gzip; read every member.
    let read = MultiGzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::MalformedGzip(e.to_string()))?;
    if read > limit {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// Parses the body as a JSON object, numeric ids kept digit for digit ([`cdp_event::parse_json`]).
/// `serde_json` refuses invalid UTF-8 and nesting deeper than 128 levels, so both come back as a
/// clear 400 instead of a crash.
pub fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match cdp_event::parse_json(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::NotAnObject("")),
        Err(e) => Err(ApiError::MalformedJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn gzip_inflates_within_the_cap_and_a_bomb_is_refused() {
        let small = gz(b"{\"a\":1}");
        assert_eq!(&gunzip(&small, 100).expect("inflates")[..], b"{\"a\":1}");
        let bomb = gz(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 20_000, "the bomb is small on the wire");
        assert!(matches!(
            gunzip(&bomb, 1000),
            Err(ApiError::TooLarge { limit: 1000 })
        ));
        assert!(matches!(
            gunzip(b"not gzip", 1000),
            Err(ApiError::MalformedGzip(_))
        ));
        let mut two = gz(b"{\"a\":");
        two.extend(gz(b"1}"));
        assert_eq!(&gunzip(&two, 100).expect("both members")[..], b"{\"a\":1}");
    }

    #[test]
    fn deep_nesting_and_bad_utf8_are_json_errors() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse_object(deep.as_bytes()),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_object(b"{\"a\":\"\xff\xfe\"}"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_object(b"[1]"),
            Err(ApiError::NotAnObject(_))
        ));
    }
}
