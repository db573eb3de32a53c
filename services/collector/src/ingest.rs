//! From a request body to Kafka records: explode batches, stamp server fields, check the spec.
//! Pure functions, no I/O, so every rule here is unit-tested without a broker.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use cdp_event::{Message, MessageType, SpecViolation, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES};

use crate::error::ApiError;

/// What the server knows about the request, stamped on each message.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub source_id: &'a str,
    /// RFC 3339 UTC with milliseconds; one value for every message of a request.
    pub received_at: &'a str,
    /// The client's address, for `context.ip` when the message has none.
    pub ip: Option<&'a str>,
}

/// A message ready for `events.raw`.
#[derive(Debug)]
pub struct Accepted {
    pub kind: MessageType,
    pub key: String,
    pub payload: Vec<u8>,
}

/// A message for `events.rejected`, with the reason.
#[derive(Debug)]
pub struct Rejected {
    pub index: usize,
    pub message_id: Option<String>,
    pub violation: SpecViolation,
    pub key: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Prepared {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejected>,
}

/// A batch body as clients send it. Items stay raw so each one's size is its size on the wire.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchBody<'a> {
    #[serde(borrow)]
    pub batch: Vec<&'a RawValue>,
    #[serde(default)]
    pub write_key: Option<Value>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub integrations: Option<Value>,
    #[serde(default)]
    pub sent_at: Option<Value>,
}

impl<'a> BatchBody<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::NotAnObject(
                " with `batch`, an array of messages (and optional writeKey, context, integrations, sentAt)",
            ),
            _ => ApiError::MalformedJson(e.to_string()),
        })
    }

    /// The body-level write key, else the first message's (browsers put it in each message).
    pub fn write_key(&self) -> Option<String> {
        if let Some(Value::String(k)) = &self.write_key {
            return Some(k.clone());
        }
        #[derive(Deserialize)]
        struct KeyOnly {
            #[serde(rename = "writeKey")]
            write_key: Option<String>,
        }
        let first = self.batch.first()?;
        serde_json::from_str::<KeyOnly>(first.get()).ok()?.write_key
    }
}

/// The write key of a single message body.
pub fn body_write_key(body: &Map<String, Value>) -> Option<String> {
    body.get("writeKey")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// One message posted to `/v1/<call>` (or a short path): the route decides its `type`.
pub fn prepare_single(body: Map<String, Value>, kind: MessageType, env: &Envelope<'_>) -> Prepared {
    let mut out = Prepared::default();
    let mut map = body;
    map.insert("type".into(), Value::String(kind.as_str().into()));
    out.push(0, map, env, &Defaults::default());
    out
}

/// A batch (`/v1/batch`, `/v1/import`, `/v1/b`): every item is checked on its own, so one bad
/// message does not sink the others.
pub fn prepare_batch(body: &BatchBody<'_>, env: &Envelope<'_>) -> Result<Prepared, ApiError> {
    if body.batch.len() > MAX_BATCH_MESSAGES {
        return Err(ApiError::TooManyMessages {
            count: body.batch.len(),
            limit: MAX_BATCH_MESSAGES,
        });
    }
    let defaults = Defaults {
        context: body.context.as_ref().and_then(Value::as_object),
        integrations: body.integrations.as_ref().and_then(Value::as_object),
        sent_at: body.sent_at.as_ref().filter(|v| !v.is_null()),
    };
    let mut out = Prepared {
        accepted: Vec::with_capacity(body.batch.len()),
        rejected: Vec::new(),
    };
    for (index, raw) in body.batch.iter().enumerate() {
        let text = raw.get();
        // The body was scanned as raw JSON, which has no nesting limit; parsing an item does, so
        // a too-deep item is refused here as the whole body would be on a single-message route.
        let parsed = cdp_event::parse_json_str(text)
            .map_err(|e| ApiError::MalformedJson(format!("batch[{index}]: {e}")))?;
        let map = match parsed {
            Value::Object(m) => m,
            other => {
                out.reject(index, SpecViolation::NotAnObject, env, other);
                continue;
            }
        };
        if text.len() > MAX_MESSAGE_BYTES {
            out.reject(
                index,
                SpecViolation::TooLarge {
                    limit: MAX_MESSAGE_BYTES,
                },
                env,
                Value::Object(map),
            );
            continue;
        }
        out.push(index, map, env, &defaults);
    }
    Ok(out)
}

/// Batch-level fields merged into each item; an item's own values win.
#[derive(Default)]
struct Defaults<'a> {
    context: Option<&'a Map<String, Value>>,
    integrations: Option<&'a Map<String, Value>>,
    sent_at: Option<&'a Value>,
}

impl Prepared {
    fn push(
        &mut self,
        index: usize,
        mut map: Map<String, Value>,
        env: &Envelope<'_>,
        defaults: &Defaults<'_>,
    ) {
        map.remove("writeKey");
        merge_defaults(&mut map, "context", defaults.context);
        merge_defaults(&mut map, "integrations", defaults.integrations);
        if let Some(sent_at) = defaults.sent_at {
            if map.get("sentAt").is_none_or(Value::is_null) {
                map.insert("sentAt".into(), sent_at.clone());
            }
        }
        stamp(&mut map, env);
        let mut msg = match Message::from_value(Value::Object(map)) {
            Ok(m) => m,
            Err(v) => return self.reject(index, v, env, Value::Null),
        };
        match msg.check() {
            Ok(kind) => {
                let key = partition_key(env.source_id, msg.identity());
                self.accepted.push(Accepted {
                    kind,
                    key,
                    payload: to_vec(&msg.into_value()),
                });
            }
            Err(violation) => self.reject(index, violation, env, msg.into_value()),
        }
    }

    fn reject(&mut self, index: usize, violation: SpecViolation, env: &Envelope<'_>, value: Value) {
        let msg = Message::from_value(value.clone()).ok();
        let message_id = msg.as_ref().and_then(|m| m.message_id()).map(str::to_owned);
        let key = partition_key(env.source_id, msg.as_ref().and_then(Message::identity));
        self.rejected.push(Rejected {
            index,
            message_id,
            violation,
            key,
            payload: to_vec(&value),
        });
    }
}

fn to_vec(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its keys are strings and it holds no foreign types.
    serde_json::to_vec(v).unwrap_or_default()
}

/// docs/ARCHITECTURE.md: key = source id + (userId, else anonymousId), so one user's events keep their order
/// on one partition and a client's retries of one message land where the first copy did.
pub fn partition_key(source_id: &str, identity: Option<&str>) -> String {
    let identity = identity.unwrap_or("");
    let mut key = String::with_capacity(source_id.len() + 1 + identity.len());
    key.push_str(source_id);
    key.push(':');
    key.push_str(identity);
    key
}

fn merge_defaults(
    map: &mut Map<String, Value>,
    field: &str,
    defaults: Option<&Map<String, Value>>,
) {
    let Some(defaults) = defaults.filter(|d| !d.is_empty()) else {
        return;
    };
    match map.get_mut(field) {
        Some(Value::Object(own)) => {
            for (k, v) in defaults {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        None | Some(Value::Null) => {
            map.insert(field.into(), Value::Object(defaults.clone()));
        }
        // A non-object is left for `check()` to reject with the field named.
        Some(_) => {}
    }
}

/// Server-set fields: `receivedAt` always, `messageId` and `context.ip` when the client sent none.
fn stamp(map: &mut Map<String, Value>, env: &Envelope<'_>) {
    map.insert("receivedAt".into(), Value::String(env.received_at.into()));
    let absent = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
    if map.get("messageId").is_none_or(absent) {
        map.insert(
            "messageId".into(),
            Value::String(format!("cdp-{}", uuid::Uuid::new_v4())),
        );
    }
    if let Some(ip) = env.ip {
        let context = map
            .entry("context")
            .and_modify(|c| {
                if c.is_null() {
                    *c = Value::Object(Map::new());
                }
            })
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ctx) = context {
            if ctx.get("ip").is_none_or(Value::is_null) {
                ctx.insert("ip".into(), Value::String(ip.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENV: Envelope<'static> = Envelope {
        source_id: "web",
        received_at: "2026-12-03T10:00:00.000Z",
        ip: Some("203.0.113.9"),
    };

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    fn payload(a: &Accepted) -> Value {
        serde_json::from_slice(&a.payload).expect("json")
    }

    #[test]
    fn single_route_sets_type_and_server_fields_and_strips_the_key() {
        let body = obj(json!({"event":"E","userId":"u1","writeKey":"k","type":"identify"}));
        let p = prepare_single(body, MessageType::Track, &ENV);
        assert!(p.rejected.is_empty());
        let m = payload(&p.accepted[0]);
        assert_eq!(m["type"], "track");
        assert_eq!(m["receivedAt"], ENV.received_at);
        assert_eq!(m["context"]["ip"], "203.0.113.9");
        assert!(m["messageId"]
            .as_str()
            .is_some_and(|s| s.starts_with("cdp-")));
        assert!(m.get("writeKey").is_none());
        assert_eq!(p.accepted[0].key, "web:u1");
    }

    #[test]
    fn an_empty_message_id_is_replaced_like_a_missing_one() {
        let body = obj(json!({"userId":"u","messageId":"  "}));
        let m = payload(&prepare_single(body, MessageType::Page, &ENV).accepted[0]);
        assert!(m["messageId"]
            .as_str()
            .is_some_and(|s| s.starts_with("cdp-")));
    }

    #[test]
    fn client_values_win_over_server_defaults() {
        let body = obj(
            json!({"userId":"u","messageId":"m1","context":{"ip":"1.1.1.1"},
            "receivedAt":"1999-01-01T00:00:00Z"}),
        );
        let p = prepare_single(body, MessageType::Page, &ENV);
        let m = payload(&p.accepted[0]);
        assert_eq!(m["messageId"], "m1");
        assert_eq!(m["context"]["ip"], "1.1.1.1");
        assert_eq!(m["receivedAt"], ENV.received_at, "receivedAt is server-set");
    }

    #[test]
    fn batch_merges_envelope_fields_and_isolates_bad_items() {
        let text = json!({
            "writeKey": "k", "sentAt": "2026-12-03T09:59:59.000Z",
            "context": {"library": {"name": "x"}, "locale": "en"},
            "integrations": {"Mixpanel": false},
            "batch": [
                {"type":"track","event":"A","anonymousId":"a1","context":{"locale":"fr"}},
                {"type":"track","userId":"u2"},
                {"type":"group","userId":"u3","groupId":"g","sentAt":"2026-12-03T09:00:00.000Z"},
                "not an object"
            ]
        })
        .to_string();
        let body = BatchBody::parse(text.as_bytes()).expect("parses");
        assert_eq!(body.write_key().as_deref(), Some("k"));
        let p = prepare_batch(&body, &ENV).expect("prepared");
        assert_eq!(p.accepted.len(), 2);
        let first = payload(&p.accepted[0]);
        assert_eq!(first["context"]["locale"], "fr");
        assert_eq!(first["context"]["library"]["name"], "x");
        assert_eq!(first["integrations"]["Mixpanel"], false);
        assert_eq!(first["sentAt"], "2026-12-03T09:59:59.000Z");
        assert_eq!(
            payload(&p.accepted[1])["sentAt"],
            "2026-12-03T09:00:00.000Z"
        );
        let codes: Vec<_> = p
            .rejected
            .iter()
            .map(|r| (r.index, r.violation.code()))
            .collect();
        assert_eq!(codes, [(1, "missing_event"), (3, "not_an_object")]);
        assert_eq!(p.rejected[0].key, "web:u2");
    }

    #[test]
    fn an_oversize_item_is_rejected_alone() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let text = json!({"batch":[
            {"type":"track","event":"big","userId":"u","properties":{"b":big}},
            {"type":"track","event":"small","userId":"u"}
        ]})
        .to_string();
        let body = BatchBody::parse(text.as_bytes()).expect("parses");
        let p = prepare_batch(&body, &ENV).expect("prepared");
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.rejected[0].violation.code(), "message_too_large");
    }

    #[test]
    fn too_many_messages_is_refused_whole() {
        let items: Vec<Value> = (0..=MAX_BATCH_MESSAGES)
            .map(|_| json!({"type":"page","userId":"u"}))
            .collect();
        let text = json!({ "batch": items }).to_string();
        let body = BatchBody::parse(text.as_bytes()).expect("parses");
        assert!(matches!(
            prepare_batch(&body, &ENV),
            Err(ApiError::TooManyMessages { .. })
        ));
    }

    #[test]
    fn a_batch_body_without_an_array_is_a_clear_error() {
        assert!(matches!(
            BatchBody::parse(b"{\"batch\":{}}"),
            Err(ApiError::NotAnObject(_))
        ));
        assert!(matches!(
            BatchBody::parse(b"{\"batch\":["),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn the_first_item_key_authenticates_a_browser_batch() {
        let text = br#"{"batch":[{"writeKey":"kb","type":"page","userId":"u"}]}"#;
        let body = BatchBody::parse(text).expect("parses");
        assert_eq!(body.write_key().as_deref(), Some("kb"));
    }
}
