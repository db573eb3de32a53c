//! The enrichers, as functions over a Segment message (a JSON object), with no Kafka and no I/O
//! beyond opening the geo database: unit-tested and benchmarked alone, driven by `cdp-enricher`.
//!
//! Order for one event ([`Chain::enrich`]): suppression (a listed `userId` is dropped), dedupe by
//! `messageId` in the partition's window, corrected time, campaign, user agent, geo, then privacy
//! (last, so the geo lookup still sees the full IP and nothing leaves with the originals).

pub mod campaign;
pub mod dedupe;
pub mod geo;
pub mod privacy;
pub mod time;
pub mod useragent;

use chrono::{DateTime, Utc};
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub use dedupe::Dedupe;
pub use geo::GeoDb;
pub use privacy::Privacy;

/// What one enricher did to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do (no input field, or the client already set the output).
    Skipped,
    Applied,
    /// The input was there but unreadable; the event goes on without this enrichment.
    Failed,
}

/// The enrichers, named as in the `enricher` label of the parse-failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enricher {
    Time,
    Campaign,
    UserAgent,
    Geo,
    Privacy,
}

impl Enricher {
    pub const ALL: [Enricher; 5] = [
        Enricher::Time,
        Enricher::Campaign,
        Enricher::UserAgent,
        Enricher::Geo,
        Enricher::Privacy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Enricher::Time => "time",
            Enricher::Campaign => "campaign",
            Enricher::UserAgent => "user_agent",
            Enricher::Geo => "geo",
            Enricher::Privacy => "privacy",
        }
    }
}

/// The parse failures of one event, one bit per [`Enricher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures(u8);

impl Failures {
    fn add(&mut self, e: Enricher) {
        self.0 |= 1 << e as u8;
    }

    pub fn contains(self, e: Enricher) -> bool {
        self.0 & (1 << e as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Enricher> {
        Enricher::ALL.into_iter().filter(move |e| self.contains(*e))
    }
}

/// What happens to one input record.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The enriched message, serialized, with the enrichers that could not read their input.
    Forward {
        payload: Vec<u8>,
        failures: Failures,
    },
    /// Its `messageId` was already seen on this partition within the window.
    Duplicate,
    /// Its `userId` is in the workspace's `suppressed_users`.
    Suppressed,
    /// Not a Segment message: goes to the dead-letter topic with this code and reason.
    Poison { code: &'static str, reason: String },
}

/// The workspace-derived part of the chain (rebuilt on every workspace version) and the geo
/// database (opened once).
#[derive(Default)]
pub struct Chain {
    geo: Option<Arc<GeoDb>>,
    privacy: HashMap<String, Privacy>,
    suppressed: HashSet<String>,
}

/// What the chain keeps between events of one consumer: the dedupe windows and a cache of parsed
/// user agents (few distinct strings carry most traffic; woothee takes about 2 µs a string).
pub struct State {
    pub dedupe: Option<Dedupe>,
    user_agents: HashMap<String, Option<useragent::Parsed>>,
}

/// Distinct user agents kept parsed; the cache starts over when full (bounded, no bookkeeping).
const USER_AGENT_CACHE: usize = 10_000;

impl State {
    pub fn new(dedupe: Option<Dedupe>) -> State {
        State {
            dedupe,
            user_agents: HashMap::new(),
        }
    }

    fn parse_user_agent(&mut self, ua: &str) -> Option<useragent::Parsed> {
        if let Some(p) = self.user_agents.get(ua) {
            return p.clone();
        }
        let p = useragent::parse_user_agent(ua);
        if self.user_agents.len() >= USER_AGENT_CACHE {
            self.user_agents.clear();
        }
        self.user_agents.insert(ua.to_string(), p.clone());
        p
    }
}

/// One record's input to [`Chain::enrich`].
pub struct Input<'a> {
    pub payload: &'a [u8],
    /// Workspace source id (`cdp-source-id` header).
    pub source: &'a str,
    pub partition: i32,
    /// `cdp-received-at` header, for events without `receivedAt`.
    pub received_at: Option<&'a str>,
}

impl Chain {
    pub fn new(workspace: &cdp_workspace::Workspace, geo: Option<Arc<GeoDb>>) -> Chain {
        Chain {
            geo,
            privacy: workspace
                .enrichment
                .iter()
                .map(|(id, o)| (id.clone(), Privacy::new(o)))
                .filter(|(_, p)| !p.is_noop())
                .collect(),
            suppressed: workspace.suppressed_users.iter().cloned().collect(),
        }
    }

    pub fn has_geo(&self) -> bool {
        self.geo.is_some()
    }

    /// Suppression, dedupe, then every enricher; `now` is the processing clock (dedupe window,
    /// and `receivedAt` when neither the payload nor the header has one).
    pub fn enrich(&self, input: &Input<'_>, state: &mut State, now: DateTime<Utc>) -> Outcome {
        let privacy = self.privacy.get(input.source);
        let pass =
            |key: &str| PASS_THROUGH.contains(&key) && !privacy.is_some_and(|p| p.touches(key));
        let (mut map, raw) = match split(input.payload, &pass) {
            Ok(parts) => parts,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return Outcome::Poison {
                    code: "not_an_object",
                    reason: format!(
                        "the record is JSON but not a Segment message (an object): {e}"
                    ),
                }
            }
            Err(e) => {
                return Outcome::Poison {
                    code: "not_json",
                    reason: format!("the record is not JSON: {e}"),
                }
            }
        };
        if !self.suppressed.is_empty() && self.is_suppressed(&map) {
            return Outcome::Suppressed;
        }
        if let (Some(dedupe), Some(id)) =
            (&mut state.dedupe, map.get("messageId").and_then(message_id))
        {
            let now_secs = u64::try_from(now.timestamp()).unwrap_or_default();
            if dedupe.seen(input.partition, &id, now_secs) {
                return Outcome::Duplicate;
            }
        }
        let failures = self.apply(&mut map, input.source, input.received_at, now, state);
        match join(&map, &raw, input.payload.len()) {
            Ok(payload) => Outcome::Forward { payload, failures },
            Err(e) => Outcome::Poison {
                code: "unserializable",
                reason: format!("the enriched message cannot be written as JSON: {e}"),
            },
        }
    }

    /// The enrichers alone, in place; returns which could not read their input.
    pub fn apply(
        &self,
        map: &mut Map<String, Value>,
        source: &str,
        received_at: Option<&str>,
        now: DateTime<Utc>,
        state: &mut State,
    ) -> Failures {
        let mut failures = Failures::default();
        if !time::correct(map, received_at, now) {
            failures.add(Enricher::Time);
        }
        campaign::fill(map);
        if useragent::enrich_with(map, &mut |ua| state.parse_user_agent(ua)) == Step::Failed {
            failures.add(Enricher::UserAgent);
        }
        if let Some(db) = &self.geo {
            if geo::enrich(db, map) == Step::Failed {
                failures.add(Enricher::Geo);
            }
        }
        if let Some(p) = self.privacy.get(source) {
            if p.apply(map) == Step::Failed {
                failures.add(Enricher::Privacy);
            }
        }
        failures
    }

    fn is_suppressed(&self, map: &Map<String, Value>) -> bool {
        map.get("userId")
            .and_then(message_id)
            .is_some_and(|id| self.suppressed.contains(id.as_ref()))
    }
}

/// Top-level fields no enricher reads or writes (unless a privacy path names them): kept as their
/// raw JSON text instead of being built into a tree and written out again.
const PASS_THROUGH: &[&str] = &["properties", "traits", "integrations", "_metadata"];

type Raw = BTreeMap<String, Box<RawValue>>;

/// Parses a message's top level: pass-through fields as raw text, the rest as values.
fn split(
    payload: &[u8],
    pass: &dyn Fn(&str) -> bool,
) -> Result<(Map<String, Value>, Raw), serde_json::Error> {
    struct Top<'a>(&'a dyn Fn(&str) -> bool);
    impl<'de> Visitor<'de> for Top<'_> {
        type Value = (Map<String, Value>, Raw);
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let (mut map, mut raw) = (Map::new(), Raw::new());
            while let Some(key) = access.next_key::<String>()? {
                // A key always goes to the same side, so a repeated key replaces its own value
                // (the last one wins, as with a plain parse).
                if (self.0)(&key) {
                    let v: Box<RawValue> = access.next_value()?;
                    raw.insert(key, v);
                } else {
                    let v: Value = access.next_value()?;
                    map.insert(key, v);
                }
            }
            Ok((map, raw))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parts = de.deserialize_map(Top(pass))?;
    de.end()?;
    Ok(parts)
}

/// Writes both parts back as one object, keys in order (as a `serde_json::Map` would).
fn join(
    map: &Map<String, Value>,
    raw: &Raw,
    size_hint: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(size_hint + size_hint / 2);
    out.push(b'{');
    let mut parsed = map.iter().peekable();
    let mut kept = raw.iter().peekable();
    let mut first = true;
    loop {
        let take_parsed = match (parsed.peek(), kept.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((a, _)), Some((b, _))) => a < b,
        };
        if !first {
            out.push(b',');
        }
        first = false;
        if take_parsed {
            if let Some((k, v)) = parsed.next() {
                serde_json::to_writer(&mut out, k)?;
                out.push(b':');
                serde_json::to_writer(&mut out, v)?;
            }
        } else if let Some((k, v)) = kept.next() {
            serde_json::to_writer(&mut out, k)?;
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
    Ok(out)
}

/// An id as text: strings as they are, numbers digit for digit (the collector keeps numeric ids).
fn message_id(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}
