//! Every way a request can fail, mapped to its HTTP status and JSON body in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such endpoint")]
    NotFound,
    #[error("this endpoint takes POST (pixel and settings take GET)")]
    MethodNotAllowed,
    #[error("request has no write key: send it as the Basic auth user name or as `writeKey` in the body")]
    MissingWriteKey,
    #[error("write key is not known to this workspace")]
    InvalidWriteKey,
    #[error(
        "the Authorization header is not `Basic base64(<write key>:)` and the body has no writeKey"
    )]
    UnreadableAuthorization,
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("batch holds {count} messages; at most {limit} are accepted per request")]
    TooManyMessages { count: usize, limit: usize },
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("body is not valid gzip: {0}")]
    MalformedGzip(String),
    #[error("Content-Encoding {0:?} is not supported; send identity or gzip")]
    UnsupportedEncoding(String),
    #[error("body must be a JSON object{0}")]
    NotAnObject(&'static str),
    #[error("{message}")]
    InvalidMessage { code: &'static str, message: String },
    #[error("body was not received in time")]
    BodyTimeout,
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("events could not be stored right now ({0}); retry later")]
    Unavailable(&'static str),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MissingWriteKey
            | ApiError::InvalidWriteKey
            | ApiError::UnreadableAuthorization => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge { .. }
            | ApiError::TooManyMessages { .. }
            | ApiError::MalformedJson(_)
            | ApiError::MalformedGzip(_)
            | ApiError::NotAnObject(_)
            | ApiError::InvalidMessage { .. }
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Bounded code for the body and for metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::MissingWriteKey => "missing_write_key",
            ApiError::InvalidWriteKey => "invalid_write_key",
            ApiError::UnreadableAuthorization => "invalid_authorization",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::TooManyMessages { .. } => "too_many_messages",
            ApiError::MalformedJson(_) => "invalid_json",
            ApiError::MalformedGzip(_) => "invalid_gzip",
            ApiError::UnsupportedEncoding(_) => "unsupported_encoding",
            ApiError::NotAnObject(_) => "invalid_request",
            ApiError::InvalidMessage { code, .. } => code,
            ApiError::BodyTimeout => "body_timeout",
            ApiError::BodyRead(_) => "invalid_request",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

/// Seconds a client should wait before retrying a 503, sent as both headers Segment clients read.
const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"success": false, "code": self.code(), "message": self.to_string()});
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiError::Unavailable(_)) {
            let v = HeaderValue::from_static(RETRY_AFTER_SECS);
            resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
            resp.headers_mut().insert("x-ratelimit-reset", v);
        }
        resp
    }
}
