//! Write-key lookup: which source a request belongs to.
//!
//! Keys are looked up by their SHA-256 digest, so the time a lookup takes does not depend on how
//! many leading characters of a guess match a real key; the final comparison is constant-time too.

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use cdp_workspace::Workspace;

/// The source a write key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub id: Arc<str>,
}

#[derive(Default)]
pub struct KeyIndex {
    by_digest: HashMap<[u8; 32], (Vec<u8>, SourceRef)>,
}

impl KeyIndex {
    pub fn build(ws: &Workspace) -> Self {
        let by_digest = ws
            .sources
            .iter()
            .map(|s| {
                let key = s.write_key.expose().as_bytes().to_vec();
                (
                    digest(&key),
                    (
                        key,
                        SourceRef {
                            id: Arc::from(s.id.as_str()),
                        },
                    ),
                )
            })
            .collect();
        KeyIndex { by_digest }
    }

    pub fn lookup(&self, key: &str) -> Option<&SourceRef> {
        let (stored, source) = self.by_digest.get(&digest(key.as_bytes()))?;
        bool::from(stored.as_slice().ct_eq(key.as_bytes())).then_some(source)
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// The write key from `Authorization: Basic base64(key:)`, the way Segment's libraries send it
/// (the trailing colon is optional, as Segment also accepts it without).
pub fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ws() -> Workspace {
        cdp_workspace::parse(
            "sources: [{id: web, write_key: k-web}, {id: app, write_key: k-app}]",
            &|_| None,
        )
        .expect("valid")
        .workspace
    }

    #[test]
    fn keys_map_to_their_source_and_guesses_do_not() {
        let idx = KeyIndex::build(&ws());
        assert_eq!(idx.lookup("k-web").map(|s| &*s.id), Some("web"));
        assert_eq!(idx.lookup("k-app").map(|s| &*s.id), Some("app"));
        assert!(idx.lookup("k-we").is_none());
        assert!(idx.lookup("").is_none());
    }

    #[test]
    fn basic_auth_user_is_the_write_key_with_or_without_colon() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic ay13ZWI6"),
        ); // k-web:
        assert_eq!(basic_user(&h).as_deref(), Some("k-web"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic ay13ZWI="),
        ); // k-web
        assert_eq!(basic_user(&h).as_deref(), Some("k-web"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(basic_user(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_user(&h), None);
    }
}
