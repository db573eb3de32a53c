//! Per-source privacy, applied last so nothing leaves the stage with the originals: `context.ip`
//! kept, truncated (IPv4 /24, IPv6 /48) or dropped after the geo lookup; named fields dropped or
//! replaced by their SHA-256.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

use cdp_workspace::{IpPolicy, SourceEnrichment};

use crate::Step;

/// A source's options with the field paths split once, not per event.
#[derive(Debug, Clone, Default)]
pub struct Privacy {
    ip: IpPolicy,
    drop: Vec<Vec<String>>,
    hash: Vec<Vec<String>>,
}

fn split(paths: &[String]) -> Vec<Vec<String>> {
    paths
        .iter()
        .map(|p| p.split('.').map(String::from).collect())
        .collect()
}

impl Privacy {
    pub fn new(options: &SourceEnrichment) -> Privacy {
        Privacy {
            ip: options.ip,
            drop: split(&options.drop_fields),
            hash: split(&options.hash_fields),
        }
    }

    /// Whether a drop or hash path starts at this top-level field.
    pub fn touches(&self, top: &str) -> bool {
        self.drop
            .iter()
            .chain(&self.hash)
            .any(|p| p.first().is_some_and(|f| f == top))
    }

    pub fn is_noop(&self) -> bool {
        self.ip == IpPolicy::Keep && self.drop.is_empty() && self.hash.is_empty()
    }

    /// `Failed` when an IP to truncate could not be read (it is then dropped: never kept whole).
    pub fn apply(&self, map: &mut Map<String, Value>) -> Step {
        if self.is_noop() {
            return Step::Skipped;
        }
        let mut step = Step::Applied;
        if self.ip != IpPolicy::Keep {
            if let Some(Value::Object(context)) = map.get_mut("context") {
                match (self.ip, context.get("ip")) {
                    (_, None) | (IpPolicy::Keep, _) => {}
                    (IpPolicy::Drop, Some(_)) => {
                        context.remove("ip");
                    }
                    (IpPolicy::Truncate, Some(ip)) => {
                        match ip.as_str().and_then(|s| s.trim().parse().ok()) {
                            Some(ip) => {
                                context.insert("ip".into(), Value::String(truncate(ip)));
                            }
                            None => {
                                context.remove("ip");
                                step = Step::Failed;
                            }
                        }
                    }
                }
            }
        }
        for path in &self.drop {
            remove(map, path);
        }
        for path in &self.hash {
            if let Some(v) = get_mut(map, path) {
                if !v.is_null() {
                    *v = Value::String(sha256_hex(v));
                }
            }
        }
        step
    }
}

/// The network part only: /24 for IPv4, /48 for IPv6.
pub fn truncate(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            std::net::Ipv4Addr::new(a, b, c, 0).to_string()
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[6..].fill(0);
            std::net::Ipv6Addr::from(o).to_string()
        }
    }
}

/// SHA-256 of a string's UTF-8 bytes (other values: of their JSON text), lower-case hex.
pub fn sha256_hex(v: &Value) -> String {
    let digest = match v {
        Value::String(s) => Sha256::digest(s.as_bytes()),
        other => Sha256::digest(other.to_string().as_bytes()),
    };
    let mut out = String::with_capacity(64);
    for b in digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

fn get_mut<'a>(map: &'a mut Map<String, Value>, path: &[String]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    let mut v = map.get_mut(first)?;
    for key in rest {
        v = v.as_object_mut()?.get_mut(key)?;
    }
    Some(v)
}

fn remove(map: &mut Map<String, Value>, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if parents.is_empty() {
        map.remove(last);
    } else if let Some(Value::Object(parent)) = get_mut(map, parents) {
        parent.remove(last);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn privacy(ip: IpPolicy, drop: &[&str], hash: &[&str]) -> Privacy {
        Privacy::new(&SourceEnrichment {
            ip,
            drop_fields: drop.iter().map(|s| s.to_string()).collect(),
            hash_fields: hash.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn apply(p: &Privacy, v: Value) -> (Value, Step) {
        let mut m = v.as_object().unwrap().clone();
        let step = p.apply(&mut m);
        (Value::Object(m), step)
    }

    #[test]
    fn ips_are_truncated_to_their_network() {
        assert_eq!(truncate("203.0.113.7".parse().unwrap()), "203.0.113.0");
        assert_eq!(
            truncate("2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap()),
            "2001:db8:85a3::"
        );
        let (v, step) = apply(
            &privacy(IpPolicy::Truncate, &[], &[]),
            json!({"context": {"ip": "198.51.100.23"}}),
        );
        assert_eq!(v["context"]["ip"], "198.51.100.0");
        assert_eq!(step, Step::Applied);
    }

    #[test]
    fn an_unreadable_ip_is_dropped_rather_than_kept_whole() {
        let (v, step) = apply(
            &privacy(IpPolicy::Truncate, &[], &[]),
            json!({"context": {"ip": "not-an-ip"}}),
        );
        assert!(v["context"].get("ip").is_none());
        assert_eq!(step, Step::Failed);
    }

    #[test]
    fn ip_drop_removes_it_and_keep_leaves_it() {
        let (v, _) = apply(
            &privacy(IpPolicy::Drop, &[], &[]),
            json!({"context": {"ip": "198.51.100.23", "locale": "en"}}),
        );
        assert_eq!(v["context"], json!({"locale": "en"}));
        let (v, step) = apply(
            &privacy(IpPolicy::Keep, &[], &[]),
            json!({"context": {"ip": "198.51.100.23"}}),
        );
        assert_eq!(v["context"]["ip"], "198.51.100.23");
        assert_eq!(step, Step::Skipped);
    }

    #[test]
    fn named_fields_are_hashed_with_sha256() {
        let (v, _) = apply(
            &privacy(
                IpPolicy::Keep,
                &[],
                &[
                    "traits.email",
                    "context.traits.email",
                    "properties.n",
                    "traits.absent",
                ],
            ),
            json!({"traits": {"email": "user@example.com", "name": "Test User"},
                   "context": {"traits": {"email": null}}, "properties": {"n": 5}}),
        );
        // `printf %s user@example.com | sha256sum`
        assert_eq!(
            v["traits"]["email"],
            "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
        );
        assert_eq!(v["traits"]["name"], "Test User");
        assert_eq!(
            v["context"]["traits"]["email"],
            Value::Null,
            "null stays null"
        );
        assert_eq!(v["properties"]["n"], sha256_hex(&json!(5)));
        assert!(v["traits"].get("absent").is_none(), "nothing is invented");
    }

    #[test]
    fn named_fields_are_dropped_at_any_depth() {
        let (v, _) = apply(
            &privacy(
                IpPolicy::Keep,
                &["traits.phone", "context.traits", "anonymousId"],
                &[],
            ),
            json!({"anonymousId": "a", "userId": "u", "traits": {"phone": "+1", "plan": "pro"},
                   "context": {"traits": {"phone": "+1"}, "locale": "en"}}),
        );
        assert_eq!(
            v,
            json!({"userId": "u", "traits": {"plan": "pro"}, "context": {"locale": "en"}})
        );
    }
}
