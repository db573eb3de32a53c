//! The webhook destination: each event is POSTed as JSON to the instance's `settings.url`, with its
//! configured headers and, when `settings.secret` is set, an HMAC-SHA256 signature of the body so
//! the receiver can check it came from here. Private and loopback addresses are refused unless
//! `settings.allow_private` is true (SSRF guard). Routing, retries, parking and metrics are the
//! shared runtime's (`cdp-destination`).

pub mod guard;
pub mod signature;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

use cdp_destination::{Connector, Outcome};

/// One identity: package, binary, client id.
pub const SERVICE: &str = "cdp-dest-webhook";

/// How much of the receiver's answer is read (the rest is not needed to classify it).
const MAX_ANSWER: usize = 4096;

/// A webhook instance, from its workspace settings.
pub struct Webhook {
    url: reqwest::Url,
    headers: HeaderMap,
    secret: Option<Vec<u8>>,
    signature_header: HeaderName,
    client: reqwest::Client,
}

impl Webhook {
    /// Settings: `url` (required), `headers` (map), `secret`, `signature_header` (default
    /// `X-Signature`), `timeout_ms` (default 10000), `allow_private` (default false).
    pub fn from_settings(settings: &serde_json::Map<String, Value>) -> Result<Self, String> {
        let url = settings
            .get("url")
            .and_then(Value::as_str)
            .ok_or("settings.url is required (the receiver's http(s) URL)")?;
        let url = reqwest::Url::parse(url).map_err(|e| format!("settings.url {url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "settings.url must be http or https, not {}",
                url.scheme()
            ));
        }
        let allow_private = match settings.get("allow_private") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "settings.allow_private must be true or false, not {other}"
                ))
            }
        };
        if !allow_private {
            guard::check_url(&url)?;
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(configured) = settings.get("headers") {
            let map = configured
                .as_object()
                .ok_or("settings.headers must be a map of header name to value")?;
            for (name, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("settings.headers.{name} must be a string"))?;
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("settings.headers: {name:?} is not a header name: {e}"))?;
                let mut value = HeaderValue::from_str(value)
                    .map_err(|_| format!("settings.headers.{name}: not a valid header value"))?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let secret = match settings.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
            Some(_) => return Err("settings.secret must be a string".into()),
        };
        let signature_header = match settings.get("signature_header").and_then(Value::as_str) {
            None => HeaderName::from_static("x-signature"),
            Some(n) => HeaderName::try_from(n)
                .map_err(|e| format!("settings.signature_header {n:?}: {e}"))?,
        };
        let timeout = match settings.get("timeout_ms") {
            None => Duration::from_secs(10),
            Some(v) => Duration::from_millis(
                v.as_u64()
                    .filter(|ms| *ms > 0)
                    .ok_or("settings.timeout_ms must be a positive number of milliseconds")?,
            ),
        };
        let mut client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(SERVICE)
            // A redirect could point anywhere, the guard's addresses included.
            .redirect(reqwest::redirect::Policy::none());
        if !allow_private {
            client = client.dns_resolver(Arc::new(guard::PublicOnly));
        }
        let client = client.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Webhook {
            url,
            headers,
            secret,
            signature_header,
            client,
        })
    }

    async fn post(&self, body: &[u8]) -> Outcome {
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body.to_vec());
        if let Some(secret) = &self.secret {
            request = request.header(
                self.signature_header.clone(),
                format!("sha256={}", signature::hmac_sha256_hex(secret, body)),
            );
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                // The status decides; a body cut short does not change it.
                Ok(None) | Err(_) => break,
            }
        }
        answer.truncate(MAX_ANSWER);
        Outcome::from_http(status, retry_after.as_deref(), &answer)
    }
}

/// A request that got no answer: refused by the guard (never retried), or a transport failure.
fn classify(e: &reqwest::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<guard::Refused>() {
            return Outcome::Invalid {
                failure: cdp_destination::Failure {
                    code: "private_address".into(),
                    status: None,
                    message: refused.to_string(),
                },
            };
        }
        source = s.source();
    }
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    Outcome::transport(code, error_chain(e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Connector for Webhook {
    const TYPE: &'static str = "webhook";
    const CATALOG_NAME: &'static str = "Webhook";

    fn from_workspace(destination: &cdp_workspace::Destination) -> Result<Self, String> {
        Webhook::from_settings(&destination.settings)
    }

    fn deliver(&self, payload: &[u8]) -> impl std::future::Future<Output = Outcome> + Send {
        self.post(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn settings_are_checked_with_errors_naming_them() {
        let err = |v: Value| {
            Webhook::from_settings(&settings(v))
                .err()
                .unwrap_or_default()
        };
        assert!(err(json!({})).contains("settings.url"));
        assert!(err(json!({"url": "ftp://x"})).contains("http or https"));
        assert!(err(json!({"url": "http://127.0.0.1:9/in"})).contains("private"));
        assert!(err(json!({"url": "http://10.1.2.3/in"})).contains("private"));
        assert!(err(json!({"url": "http://[::1]/in"})).contains("private"));
        assert!(
            err(json!({"url": "https://example.com", "headers": {"bad name": "x"}}))
                .contains("settings.headers")
        );
        assert!(err(json!({"url": "https://example.com", "timeout_ms": 0})).contains("timeout_ms"));
        assert!(Webhook::from_settings(&settings(
            json!({"url": "http://127.0.0.1:9/in", "allow_private": true, "secret": "s"})
        ))
        .is_ok());
        assert!(
            Webhook::from_settings(&settings(json!({"url": "https://example.com/hook"}))).is_ok()
        );
    }
}
