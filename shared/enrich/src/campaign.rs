//! `context.campaign` from the page's `utm_*` parameters when the client did not set it, the way
//! analytics.js does (segment-spec §1.11): `utm_campaign` → `name`, every other `utm_x` → `x`.

use serde_json::{Map, Value};

/// Fills `context.campaign` from `context.page.search`, else the query of `context.page.url`.
/// Returns whether a campaign was added.
pub fn fill(map: &mut Map<String, Value>) -> bool {
    let Some(Value::Object(context)) = map.get_mut("context") else {
        return false;
    };
    if context.get("campaign").is_some_and(|c| !c.is_null()) {
        return false;
    }
    let Some(Value::Object(page)) = context.get("page") else {
        return false;
    };
    let search = page.get("search").and_then(Value::as_str).unwrap_or("");
    let query = if search.contains("utm_") {
        search
    } else {
        page.get("url").and_then(Value::as_str).map_or("", query_of)
    };
    let campaign = from_query(query);
    if campaign.is_empty() {
        return false;
    }
    context.insert("campaign".into(), Value::Object(campaign));
    true
}

/// The query string of a URL, without the fragment.
fn query_of(url: &str) -> &str {
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    url.split_once('?').map_or("", |(_, q)| q)
}

/// `utm_*` pairs of a query string (`?` optional, values percent- and `+`-decoded). The first
/// occurrence of a parameter wins.
pub fn from_query(query: &str) -> Map<String, Value> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut campaign = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let Some(name) = k.strip_prefix("utm_").filter(|n| !n.is_empty()) else {
            continue;
        };
        let name = if name == "campaign" { "name" } else { name };
        if !campaign.contains_key(name) {
            campaign.insert(name.to_string(), Value::String(v.into_owned()));
        }
    }
    campaign
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn campaign_of(context: Value) -> Value {
        let mut m = json!({"type": "page", "context": context})
            .as_object()
            .unwrap()
            .clone();
        fill(&mut m);
        m["context"].get("campaign").cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn utm_parameters_in_the_search_string_become_the_campaign() {
        let c = campaign_of(json!({"page": {
            "search": "?utm_source=news&utm_medium=email&utm_campaign=winter&utm_term=boots&utm_content=hero&page=2"}}));
        assert_eq!(
            c,
            json!({"source": "news", "medium": "email", "name": "winter", "term": "boots", "content": "hero"})
        );
    }

    #[test]
    fn the_url_query_is_used_when_there_is_no_search() {
        let c = campaign_of(json!({"page": {
            "url": "https://shop.example/p?utm_source=ads&utm_campaign=spring%20sale#utm_medium=x"}}));
        assert_eq!(c, json!({"source": "ads", "name": "spring sale"}));
    }

    #[test]
    fn a_search_without_question_mark_plus_signs_and_custom_parameters_are_read() {
        let c = campaign_of(
            json!({"page": {"search": "utm_campaign=black+friday&utm_id=42&utm_=x&utm_source=a&utm_source=b"}}),
        );
        assert_eq!(
            c,
            json!({"name": "black friday", "id": "42", "source": "a"})
        );
    }

    #[test]
    fn a_campaign_the_client_set_is_left_alone() {
        let c = campaign_of(json!({"campaign": {"name": "mine"},
            "page": {"search": "?utm_campaign=theirs"}}));
        assert_eq!(c, json!({"name": "mine"}));
    }

    #[test]
    fn no_utm_parameters_means_no_campaign() {
        assert_eq!(
            campaign_of(json!({"page": {"url": "https://a.example/?q=1", "search": "?q=1"}})),
            Value::Null
        );
        assert_eq!(campaign_of(json!({})), Value::Null);
    }

    #[test]
    fn the_brief_page_event_gets_its_winter_campaign() {
        let events: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/brief/brief-events.json"
        ))
        .unwrap();
        let mut page = events[0].as_object().unwrap().clone();
        assert!(fill(&mut page));
        assert_eq!(
            page["context"]["campaign"],
            json!({"source": "news", "medium": "email", "name": "winter"})
        );
    }
}
