//! Typed views of the six calls, for consumers that prefer structs to a JSON map.
//!
//! Unknown fields are kept in `extra` so a typed round trip loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields every call carries (Segment spec, "Common fields").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Common {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub common: Common,
}

/// `page` and `screen` share a shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    pub previous_id: String,
    #[serde(flatten)]
    pub common: Common,
}

/// A checked message as one of the six calls, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Call {
    Track(Track),
    Identify(Identify),
    Page(View),
    Screen(View),
    Group(Group),
    Alias(Alias),
}

impl Call {
    pub fn common(&self) -> &Common {
        match self {
            Call::Track(c) => &c.common,
            Call::Identify(c) => &c.common,
            Call::Page(c) | Call::Screen(c) => &c.common,
            Call::Group(c) => &c.common,
            Call::Alias(c) => &c.common,
        }
    }
}

impl TryFrom<crate::Message> for Call {
    type Error = serde_json::Error;

    fn try_from(m: crate::Message) -> Result<Self, Self::Error> {
        serde_json::from_value(m.into_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_round_trip_keeps_unknown_fields() {
        let v = json!({
            "type": "track", "event": "Order Completed", "userId": "u1",
            "properties": {"total": 10}, "context": {"ip": "1.2.3.4"},
            "channel": "server", "_metadata": {"nodeVersion": "20"}
        });
        let call: Call = serde_json::from_value(v.clone()).expect("track parses");
        match &call {
            Call::Track(t) => assert_eq!(t.event, "Order Completed"),
            other => panic!("expected track, got {other:?}"),
        }
        assert_eq!(call.common().user_id.as_deref(), Some("u1"));
        assert_eq!(serde_json::to_value(&call).expect("serializes"), v);
    }

    #[test]
    fn screen_and_alias_parse_into_their_variants() {
        let s: Call = serde_json::from_value(json!({"type":"screen","name":"Home","userId":"u"}))
            .expect("screen");
        assert!(
            matches!(s, Call::Screen(View { ref name, .. }) if name.as_deref() == Some("Home"))
        );
        let a: Call = serde_json::from_value(json!({"type":"alias","previousId":"p","userId":"u"}))
            .expect("alias");
        assert!(matches!(a, Call::Alias(Alias { ref previous_id, .. }) if previous_id == "p"));
    }
}
