use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

use crate::MAX_MESSAGE_ID_CHARS;

/// The six Segment calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub const ALL: [MessageType; 6] = [
        MessageType::Track,
        MessageType::Identify,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
    ];

    /// The value of the `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Track => "track",
            MessageType::Identify => "identify",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    /// Parses a `type` value. Segment's values are lower case; anything else is not a call.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The browser library's one-letter path (`/v1/t`, `/v1/i`, ...).
    pub fn short_path(self) -> &'static str {
        &self.as_str()[..1]
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message breaks the Segment spec. `code()` is a bounded string, safe for metric labels and
/// Kafka headers; `Display` is the sentence a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecViolation {
    #[error("message is not a JSON object")]
    NotAnObject,
    #[error("message has no `type`")]
    MissingType,
    #[error("`type` must be one of track, identify, page, screen, group, alias")]
    InvalidType,
    #[error("message needs a `userId` or an `anonymousId` (a non-empty string)")]
    MissingIdentity,
    #[error("`{0}` must be a string")]
    InvalidIdentity(&'static str),
    #[error("track needs an `event` name (a non-empty string)")]
    MissingEvent,
    #[error("group needs a `groupId`")]
    MissingGroupId,
    #[error("alias needs a `previousId`")]
    MissingPreviousId,
    #[error("alias needs a `userId`")]
    MissingAliasUserId,
    #[error("`messageId` must be a string")]
    InvalidMessageId,
    #[error("`messageId` must be shorter than {MAX_MESSAGE_ID_CHARS} characters")]
    MessageIdTooLong,
    #[error("`{0}` must be an object")]
    NotAnObjectField(&'static str),
    #[error("message is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl SpecViolation {
    pub fn code(&self) -> &'static str {
        match self {
            SpecViolation::NotAnObject => "not_an_object",
            SpecViolation::MissingType => "missing_type",
            SpecViolation::InvalidType => "invalid_type",
            SpecViolation::MissingIdentity => "no_user_anon_id",
            SpecViolation::InvalidIdentity(_) => "invalid_identity",
            SpecViolation::MissingEvent => "missing_event",
            SpecViolation::MissingGroupId => "missing_group_id",
            SpecViolation::MissingPreviousId => "missing_previous_id",
            SpecViolation::MissingAliasUserId => "missing_user_id",
            SpecViolation::InvalidMessageId => "invalid_message_id",
            SpecViolation::MessageIdTooLong => "message_id_too_long",
            SpecViolation::NotAnObjectField(_) => "invalid_field_type",
            SpecViolation::TooLarge { .. } => "message_too_large",
        }
    }
}

/// Identifiers Segment accepts as JSON numbers; [`Message::check`] turns them into strings.
const ID_FIELDS: [&str; 4] = ["userId", "anonymousId", "groupId", "previousId"];

/// Parses a message's JSON text like `serde_json::from_slice::<Value>`, except that a numeric
/// `userId`, `anonymousId`, `groupId` or `previousId` of a top-level object becomes a string of the
/// digits exactly as sent.
///
/// serde_json (without `arbitrary_precision`, which would change every number in the process)
/// reads an integer beyond the 64-bit range as a float, so `12345678901234567890123` would become
/// `"1.2345678901234568e22"` and the user's events would scatter over a made-up identity. The
/// identifiers are read as raw text instead; every other field parses as usual, with the same
/// nesting limit.
pub fn parse_json(bytes: &[u8]) -> serde_json::Result<Value> {
    if !starts_an_object(bytes) {
        return serde_json::from_slice(bytes);
    }
    serde_json::from_slice::<ExactIds>(bytes).map(|m| Value::Object(m.0))
}

/// [`parse_json`] for text already known to be UTF-8 (a batch item), which spares checking it again.
pub fn parse_json_str(text: &str) -> serde_json::Result<Value> {
    if !starts_an_object(text.as_bytes()) {
        return serde_json::from_str(text);
    }
    serde_json::from_str::<ExactIds>(text).map(|m| Value::Object(m.0))
}

fn starts_an_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

/// A JSON object whose identifier fields keep the text of a number.
struct ExactIds(Map<String, Value>);

impl<'de> Deserialize<'de> for ExactIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ExactIdsVisitor)
    }
}

struct ExactIdsVisitor;

impl<'de> Visitor<'de> for ExactIdsVisitor {
    type Value = ExactIds;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<ExactIds, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = if ID_FIELDS.contains(&key.as_str()) {
                let raw: &'de RawValue = access.next_value()?;
                id_value(raw).map_err(de::Error::custom)?
            } else {
                access.next_value::<Value>()?
            };
            map.insert(key, value);
        }
        Ok(ExactIds(map))
    }
}

/// A number's text as a string; any other value parsed as usual (for `check` to judge).
fn id_value(raw: &RawValue) -> serde_json::Result<Value> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(Value::String(text.to_owned())),
        _ => serde_json::from_str(text),
    }
}

/// One Segment message, held as its JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Message(Map<String, Value>);

impl Message {
    pub fn from_value(value: Value) -> Result<Self, SpecViolation> {
        match value {
            Value::Object(map) => Ok(Message(map)),
            _ => Err(SpecViolation::NotAnObject),
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A string field; JSON `null` and the empty string count as absent.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    pub fn message_type(&self) -> Option<MessageType> {
        self.str_field("type").and_then(MessageType::parse)
    }

    pub fn user_id(&self) -> Option<&str> {
        self.str_field("userId")
    }

    pub fn anonymous_id(&self) -> Option<&str> {
        self.str_field("anonymousId")
    }

    pub fn message_id(&self) -> Option<&str> {
        self.str_field("messageId")
    }

    /// The identity that orders a user's events: `userId`, else `anonymousId`.
    pub fn identity(&self) -> Option<&str> {
        self.user_id().or_else(|| self.anonymous_id())
    }

    /// Checks the spec's required fields and returns the call type.
    ///
    /// Identifiers sent as JSON numbers (common from hand-written HTTP calls) are turned into strings
    /// first, as Segment's libraries do, so downstream code sees one type. A number that was already
    /// parsed into a `Value` is exact only within 64 bits; text parsed with [`parse_json`] keeps
    /// every digit.
    pub fn check(&mut self) -> Result<MessageType, SpecViolation> {
        let kind = match self.0.get("type") {
            None | Some(Value::Null) => return Err(SpecViolation::MissingType),
            Some(Value::String(s)) => MessageType::parse(s).ok_or(SpecViolation::InvalidType)?,
            Some(_) => return Err(SpecViolation::InvalidType),
        };
        for key in ID_FIELDS {
            self.stringify_id(key)?;
        }
        if self.identity().is_none() {
            return Err(SpecViolation::MissingIdentity);
        }
        match self.0.get("messageId") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.chars().count() >= MAX_MESSAGE_ID_CHARS => {
                return Err(SpecViolation::MessageIdTooLong)
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err(SpecViolation::InvalidMessageId),
        }
        for key in ["context", "integrations", "properties", "traits"] {
            self.require_object_or_absent(key)?;
        }
        match kind {
            MessageType::Track if self.str_field("event").is_none() => {
                return Err(SpecViolation::MissingEvent)
            }
            MessageType::Group if self.str_field("groupId").is_none() => {
                return Err(SpecViolation::MissingGroupId)
            }
            MessageType::Alias if self.str_field("previousId").is_none() => {
                return Err(SpecViolation::MissingPreviousId)
            }
            MessageType::Alias if self.user_id().is_none() => {
                return Err(SpecViolation::MissingAliasUserId)
            }
            _ => {}
        }
        Ok(kind)
    }

    fn stringify_id(&mut self, key: &'static str) -> Result<(), SpecViolation> {
        match self.0.get_mut(key) {
            None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
            Some(v @ Value::Number(_)) => {
                *v = Value::String(v.to_string());
                Ok(())
            }
            Some(_) => Err(SpecViolation::InvalidIdentity(key)),
        }
    }

    fn require_object_or_absent(&self, key: &'static str) -> Result<(), SpecViolation> {
        match self.0.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(SpecViolation::NotAnObjectField(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<MessageType, SpecViolation> {
        Message::from_value(v)?.check()
    }

    #[test]
    fn every_call_type_with_its_required_fields_passes() {
        let ok = [
            json!({"type":"track","userId":"u","event":"E"}),
            json!({"type":"identify","anonymousId":"a"}),
            json!({"type":"page","userId":"u"}),
            json!({"type":"screen","userId":"u","name":"Home"}),
            json!({"type":"group","userId":"u","groupId":"g"}),
            json!({"type":"alias","userId":"u","previousId":"p"}),
        ];
        for (v, t) in ok.into_iter().zip(MessageType::ALL) {
            assert_eq!(check(v), Ok(t));
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        let cases = [
            (json!({"type":"track","event":"E"}), "no_user_anon_id"),
            (json!({"type":"track","userId":"u"}), "missing_event"),
            (
                json!({"type":"track","userId":"u","event":""}),
                "missing_event",
            ),
            (json!({"type":"group","userId":"u"}), "missing_group_id"),
            (json!({"type":"alias","userId":"u"}), "missing_previous_id"),
            (
                json!({"type":"alias","anonymousId":"a","previousId":"p"}),
                "missing_user_id",
            ),
            (json!({"userId":"u"}), "missing_type"),
            (
                json!({"type":"TRACK","userId":"u","event":"E"}),
                "invalid_type",
            ),
            (
                json!({"type":"track","userId":"u","event":"E","properties":[1]}),
                "invalid_field_type",
            ),
            (
                json!({"type":"identify","userId":{"a":1}}),
                "invalid_identity",
            ),
            (
                json!({"type":"identify","userId":"u","messageId":7}),
                "invalid_message_id",
            ),
            (json!([1, 2]), "not_an_object"),
        ];
        for (v, code) in cases {
            let err = check(v.clone()).expect_err(&v.to_string());
            assert_eq!(err.code(), code, "{v}");
        }
    }

    #[test]
    fn null_anonymous_id_beside_a_user_id_is_absent_not_an_error() {
        // segment-analytics-python sends `"anonymousId": null` with a userId.
        let v = json!({"type":"identify","userId":"u","anonymousId":null});
        assert_eq!(check(v), Ok(MessageType::Identify));
        let v = json!({"type":"identify","userId":null,"anonymousId":null});
        assert_eq!(check(v), Err(SpecViolation::MissingIdentity));
    }

    #[test]
    fn numeric_ids_become_strings() {
        let mut m =
            Message::from_value(json!({"type":"group","userId":42,"groupId":7})).expect("object");
        assert_eq!(m.check(), Ok(MessageType::Group));
        assert_eq!(m.user_id(), Some("42"));
        assert_eq!(m.str_field("groupId"), Some("7"));
    }

    #[test]
    fn numeric_ids_beyond_64_bits_keep_every_digit_when_parsed_from_text() {
        let text = br#" {"type":"group","userId": 12345678901234567890123,
            "anonymousId":-98765432109876543210, "groupId":9007199254740993,
            "previousId": 1.50e3, "traits":{"n":1}} "#;
        let parsed = parse_json(text).expect("parses");
        let from_str = parse_json_str(std::str::from_utf8(text).expect("utf-8")).expect("parses");
        assert_eq!(parsed, from_str);
        let mut m = Message::from_value(parsed).expect("object");
        assert_eq!(m.check(), Ok(MessageType::Group));
        assert_eq!(m.user_id(), Some("12345678901234567890123"));
        assert_eq!(m.anonymous_id(), Some("-98765432109876543210"));
        assert_eq!(m.str_field("groupId"), Some("9007199254740993"));
        assert_eq!(m.str_field("previousId"), Some("1.50e3"));
        assert_eq!(m.get("traits"), Some(&serde_json::json!({"n": 1})));
    }

    #[test]
    fn parse_json_otherwise_reads_json_as_serde_json_does() {
        let v = parse_json(br#"{"userId":"u","anonymousId":null,"groupId":{"a":[1]}}"#)
            .expect("parses");
        assert_eq!(
            v,
            serde_json::json!({"userId":"u","anonymousId":null,"groupId":{"a":[1]}})
        );
        assert_eq!(
            parse_json(b"[1, 2]").expect("array"),
            serde_json::json!([1, 2])
        );
        assert!(parse_json(b"{\"userId\": 12,}").is_err());
        assert!(parse_json(b"{\"userId\": 12").is_err());
        let deep = format!(
            "{{\"userId\":1,\"p\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(
            parse_json(deep.as_bytes()).is_err(),
            "nesting stays limited"
        );
        let deep_id = format!("{{\"userId\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(parse_json(deep_id.as_bytes()).is_err(), "also inside an id");
    }

    #[test]
    fn message_id_must_be_under_one_hundred_characters() {
        let id99 = "x".repeat(99);
        let id100 = "x".repeat(100);
        assert!(check(json!({"type":"page","userId":"u","messageId":id99})).is_ok());
        assert_eq!(
            check(json!({"type":"page","userId":"u","messageId":id100})),
            Err(SpecViolation::MessageIdTooLong)
        );
    }

    #[test]
    fn identity_prefers_user_id() {
        let m = Message::from_value(json!({"userId":"u","anonymousId":"a"})).expect("object");
        assert_eq!(m.identity(), Some("u"));
        let m = Message::from_value(json!({"userId":"","anonymousId":"a"})).expect("object");
        assert_eq!(m.identity(), Some("a"));
    }

    #[test]
    fn short_paths_are_first_letters() {
        let paths: Vec<_> = MessageType::ALL.iter().map(|t| t.short_path()).collect();
        assert_eq!(paths, ["t", "i", "p", "s", "g", "a"]);
    }
}
