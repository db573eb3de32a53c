//! HTTP routes: Segment's Tracking API, the browser library's short paths and settings document.

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tracing::Instrument;

use cdp_event::{MessageType, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};

use crate::auth::{self, SourceRef};
use crate::body;
use crate::error::ApiError;
use crate::ingest::{self, BatchBody, Envelope, Prepared};
use crate::AppState;

type AppRef = Arc<AppState>;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Single(MessageType),
    Batch,
}

pub fn router(state: AppRef) -> Router {
    let mut r = Router::new();
    for t in MessageType::ALL {
        r = r
            .route(&format!("/v1/{t}"), ingest_route(Kind::Single(t)))
            .route(
                &format!("/v1/{}", t.short_path()),
                ingest_route(Kind::Single(t)),
            );
    }
    r.route("/v1/batch", ingest_route(Kind::Batch))
        .route("/v1/import", ingest_route(Kind::Batch))
        .route("/v1/b", ingest_route(Kind::Batch))
        .route("/v1/m", post(client_metrics))
        .route("/v1/pixel/{kind}", get(pixel))
        .route("/v1/projects/{write_key}/settings", get(settings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(cors())
        .with_state(state)
}

fn ingest_route(kind: Kind) -> MethodRouter<AppRef> {
    post(
        move |State(app): State<AppRef>,
              ConnectInfo(peer): ConnectInfo<SocketAddr>,
              headers: HeaderMap,
              body: Body| async move {
            match ingest(&app, peer, &headers, body, kind).await {
                Ok(resp) => resp,
                Err(e) => {
                    // A refused message was counted by its violation when it was stored.
                    if !matches!(e, ApiError::InvalidMessage { .. }) {
                        app.metrics.rejected.with_label_values(&[e.code()]).inc();
                    }
                    e.into_response()
                }
            }
        },
    )
}

/// Browsers post cross-origin with `Authorization` and `X-Retry-Count`, so answer the preflight for
/// any origin and any requested header; no cookies are involved.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(86_400))
}

async fn ingest(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ApiError> {
    let limit = match kind {
        Kind::Single(_) => MAX_MESSAGE_BYTES,
        Kind::Batch => MAX_BATCH_BYTES,
    };
    let bytes = body::read(headers, body, limit, app.config.body_timeout).await?;
    let basic = auth::basic_user(headers);
    let authorization_sent = headers.contains_key(header::AUTHORIZATION);
    let received_at = now_rfc3339();
    let ip = client_ip(app, peer, headers).to_string();
    let (source, prepared) = match kind {
        Kind::Single(t) => {
            let map = body::parse_object(&bytes)?;
            let source = authenticate(
                app,
                basic.or_else(|| ingest::body_write_key(&map)),
                authorization_sent,
            )?;
            let env = envelope(&source, &received_at, &ip);
            (source.clone(), ingest::prepare_single(map, t, &env))
        }
        Kind::Batch => {
            let batch = BatchBody::parse(&bytes)?;
            let source =
                authenticate(app, basic.or_else(|| batch.write_key()), authorization_sent)?;
            let env = envelope(&source, &received_at, &ip);
            (source.clone(), ingest::prepare_batch(&batch, &env)?)
        }
    };
    app.sink
        .publish(&prepared, &source.id, &received_at, &app.metrics)
        .await?;
    record_outcome(app, &source, &prepared);
    respond(kind, prepared)
}

fn envelope<'a>(source: &'a SourceRef, received_at: &'a str, ip: &'a str) -> Envelope<'a> {
    Envelope {
        source_id: &source.id,
        received_at,
        ip: Some(ip),
    }
}

/// `authorization_sent`: an `Authorization` header came but held no readable Basic key, which
/// deserves its own answer when the body has no key either.
fn authenticate(
    app: &AppState,
    key: Option<String>,
    authorization_sent: bool,
) -> Result<SourceRef, ApiError> {
    let key = key.filter(|k| !k.is_empty()).ok_or_else(|| {
        if authorization_sent {
            app.metrics
                .auth_failures
                .with_label_values(&["unreadable"])
                .inc();
            return ApiError::UnreadableAuthorization;
        }
        app.metrics
            .auth_failures
            .with_label_values(&["missing"])
            .inc();
        ApiError::MissingWriteKey
    })?;
    app.keys.load().lookup(&key).cloned().ok_or_else(|| {
        app.metrics
            .auth_failures
            .with_label_values(&["unknown"])
            .inc();
        ApiError::InvalidWriteKey
    })
}

fn record_outcome(app: &AppState, source: &SourceRef, prepared: &Prepared) {
    let m = &app.metrics;
    m.batch_size
        .observe((prepared.accepted.len() + prepared.rejected.len()) as f64);
    for a in &prepared.accepted {
        m.events
            .with_label_values(&[a.kind.as_str(), &source.id])
            .inc();
    }
    for r in &prepared.rejected {
        m.rejected.with_label_values(&[r.violation.code()]).inc();
    }
}

/// 200 when everything was stored. A single message that breaks the spec is a 400 naming the
/// problem; in a batch, the refused items are listed and the rest are stored (both kinds of refusal
/// are in the rejected topic already).
fn respond(kind: Kind, prepared: Prepared) -> Result<Response, ApiError> {
    if prepared.rejected.is_empty() {
        return Ok(Json(json!({"success": true})).into_response());
    }
    if let Kind::Single(_) = kind {
        let r = &prepared.rejected[0];
        return Err(ApiError::InvalidMessage {
            code: r.violation.code(),
            message: r.violation.to_string(),
        });
    }
    let rejected: Vec<Value> = prepared
        .rejected
        .iter()
        .map(|r| {
            json!({"index": r.index, "messageId": r.message_id,
                   "code": r.violation.code(), "message": r.violation.to_string()})
        })
        .collect();
    Ok(Json(json!({
        "success": false,
        "accepted": prepared.accepted.len(),
        "rejected": rejected,
    }))
    .into_response())
}

/// The connecting address, or the first untrusted hop of `X-Forwarded-For` when the connection
/// comes from a configured trusted proxy.
fn client_ip(app: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let proxies = &app.config.trusted_proxies;
    let trusted = |ip: &IpAddr| proxies.iter().any(|n| n.contains(ip));
    let peer_ip = peer.ip().to_canonical();
    if !trusted(&peer_ip) {
        return peer_ip;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer_ip)
}

fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `/v1/m`: the browser library's own counters. Accepted and counted; nothing is stored.
async fn client_metrics(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = body::read(&headers, body, MAX_MESSAGE_BYTES, app.config.body_timeout).await?;
    let map = body::parse_object(&bytes)?;
    let series = map
        .get("series")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    app.metrics.client_metrics.inc_by(series as u64);
    Ok(Json(json!({"success": true})))
}

/// The pixel's query as pairs, so a repeated or odd parameter cannot turn the GIF into an error.
type PixelQuery = Vec<(String, String)>;

/// A transparent 1×1 GIF.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// `GET /v1/pixel/{type}?data=<base64 JSON>`: always a GIF, as Segment's pixel API; failures are
/// counted (and spec violations stored in the rejected topic) rather than shown to the email client.
async fn pixel(
    State(app): State<AppRef>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(kind): Path<String>,
    Query(q): Query<PixelQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = pixel_event(&app, peer, &kind, q, &headers).await {
        app.metrics.rejected.with_label_values(&[e.code()]).inc();
        tracing::debug!(error = %e, "pixel event not stored");
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
        ],
        GIF,
    )
        .into_response()
}

async fn pixel_event(
    app: &AppState,
    peer: SocketAddr,
    kind: &str,
    q: PixelQuery,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let t = MessageType::parse(kind).ok_or(ApiError::InvalidMessage {
        code: "invalid_type",
        message: format!("unknown pixel type {kind:?}"),
    })?;
    let data = q
        .into_iter()
        .find_map(|(k, v)| (k == "data").then_some(v))
        .ok_or(ApiError::NotAnObject(" in the `data` query parameter"))?;
    let bytes = decode_base64(&data)
        .ok_or_else(|| ApiError::MalformedJson("`data` is not base64".into()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::TooLarge {
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let map = body::parse_object(&bytes)?;
    let source = authenticate(app, ingest::body_write_key(&map), false)?;
    let received_at = now_rfc3339();
    let ip = client_ip(app, peer, headers).to_string();
    let prepared = ingest::prepare_single(map, t, &envelope(&source, &received_at, &ip));
    app.sink
        .publish(&prepared, &source.id, &received_at, &app.metrics)
        .await?;
    record_outcome(app, &source, &prepared);
    Ok(())
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s.trim()).ok())
}

/// The settings analytics-next loads from `{cdnURL}/v1/projects/{writeKey}/settings`. Its
/// `Segment.io` integration points `apiHost` back here, so setting `cdnURL` is all a site changes.
async fn settings(
    State(app): State<AppRef>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&app, Some(write_key.clone()), false)?;
    let (protocol, host) = public_origin(&app, &headers);
    let api_host = format!("{host}/v1");
    let doc = json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]}
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}}
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0.1, "host": api_host, "protocol": protocol},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    });
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(doc)).into_response())
}

/// (`protocol`, `host[:port]`) browsers should use to reach this collector.
fn public_origin(app: &AppState, headers: &HeaderMap) -> (String, String) {
    if let Some(url) = &app.config.public_url {
        if let Some((scheme, host)) = url.split_once("://") {
            return (scheme.to_string(), host.to_string());
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_plain_host(h))
        .unwrap_or("localhost:8080");
    ("http".to_string(), host.to_string())
}

/// `name[:port]` or `[v6]:port` and nothing else, so a forged `Host` cannot put markup or paths
/// into a cacheable settings document.
fn is_plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts every request by route template (never the raw path) and status, and times it.
async fn record_request(State(app): State<AppRef>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let body_bytes = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok());
    let started = Instant::now();
    let span = tracing::info_span!("http.request", http.route = %route, http.status = tracing::field::Empty);
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.status", resp.status().as_u16());
    let m = &app.metrics;
    m.requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    if let Some(n) = body_bytes {
        m.request_bytes.with_label_values(&[&route]).observe(n);
    }
    resp
}
