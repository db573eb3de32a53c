//! Which events a destination instance receives: enabled, its sources, Segment's `integrations`
//! object, and the instance's filters. Every event not sent is counted by its reason.

use serde_json::Value;

use cdp_workspace::Destination;

/// Why an event was not sent to the destination (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The destination is disabled in the workspace.
    Disabled,
    /// Its source does not feed this destination.
    Source,
    /// The event's `integrations` object turns this destination off.
    Integrations,
    /// A destination filter dropped it.
    Filter,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Disabled => "disabled",
            Skip::Source => "source",
            Skip::Integrations => "integrations",
            Skip::Filter => "filter",
        }
    }
}

/// A destination instance's routing rules, read from the workspace.
#[derive(Debug, Clone)]
pub struct Route {
    enabled: bool,
    sources: Vec<String>,
    /// Keys of `integrations` that address this instance: the catalog name (`Webhook`) and the
    /// instance id, so two webhooks can be told apart.
    names: Vec<String>,
    filters: Vec<Filter>,
}

/// Destination filters (workspace `filters`). Unknown shapes are refused at load time.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `{drop_events: [names]}`: drop track events with these names.
    DropEvents(Vec<String>),
    /// `{allow_events: [names]}`: only track events with these names (other types pass).
    AllowEvents(Vec<String>),
    /// `{drop_types: [track, identify, ...]}`: drop these message types.
    DropTypes(Vec<String>),
}

impl Route {
    /// `catalog_name` is the destination's name in `integrations` (`Webhook`, `BigQuery`).
    pub fn new(destination: &Destination, catalog_name: &str) -> Result<Route, String> {
        let filters = destination
            .filters
            .iter()
            .map(Filter::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Route {
            enabled: destination.enabled,
            sources: destination.sources.clone(),
            names: vec![catalog_name.to_string(), destination.id.clone()],
            filters,
        })
    }

    /// `Ok` when the event goes to the destination, else why not.
    pub fn check(&self, source_id: Option<&str>, event: &Value) -> Result<(), Skip> {
        if !self.enabled {
            return Err(Skip::Disabled);
        }
        if !self.sources.is_empty()
            && !source_id.is_some_and(|s| self.sources.iter().any(|x| x == s))
        {
            return Err(Skip::Source);
        }
        if !self.integrations_allow(event.get("integrations")) {
            return Err(Skip::Integrations);
        }
        if self.filters.iter().any(|f| f.drops(event)) {
            return Err(Skip::Filter);
        }
        Ok(())
    }

    /// Segment's rule: a key naming the destination decides (`false` off; `true` or an options
    /// object on); otherwise `All` decides, and it defaults to on.
    fn integrations_allow(&self, integrations: Option<&Value>) -> bool {
        let Some(Value::Object(map)) = integrations else {
            return true;
        };
        for name in &self.names {
            if let Some(v) = map.get(name) {
                return !matches!(v, Value::Bool(false));
            }
        }
        !matches!(map.get("All"), Some(Value::Bool(false)))
    }
}

impl Filter {
    fn parse(value: &Value) -> Result<Filter, String> {
        let names = |v: &Value| -> Result<Vec<String>, String> {
            v.as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect())
                .ok_or_else(|| format!("filter {value} needs a list of strings"))
        };
        let Some(map) = value.as_object().filter(|m| m.len() == 1) else {
            return Err(format!(
                "filter {value} is not one of {{drop_events: [..]}}, {{allow_events: [..]}}, {{drop_types: [..]}}"
            ));
        };
        match map.iter().next() {
            Some((k, v)) if k == "drop_events" => Ok(Filter::DropEvents(names(v)?)),
            Some((k, v)) if k == "allow_events" => Ok(Filter::AllowEvents(names(v)?)),
            Some((k, v)) if k == "drop_types" => Ok(Filter::DropTypes(names(v)?)),
            _ => Err(format!(
                "filter {value} is not one of {{drop_events: [..]}}, {{allow_events: [..]}}, {{drop_types: [..]}}"
            )),
        }
    }

    fn drops(&self, event: &Value) -> bool {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let name = event.get("event").and_then(Value::as_str);
        match self {
            Filter::DropTypes(types) => types.iter().any(|t| t == kind),
            Filter::DropEvents(names) => {
                kind == "track" && name.is_some_and(|n| names.iter().any(|x| x == n))
            }
            Filter::AllowEvents(names) => {
                kind == "track" && !name.is_some_and(|n| names.iter().any(|x| x == n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn destination(extra: Value) -> Destination {
        let mut d = json!({"id": "hooks", "type": "webhook", "sources": ["web"]});
        if let (Some(d), Value::Object(extra)) = (d.as_object_mut(), extra) {
            d.extend(extra);
        }
        serde_json::from_value(d).expect("destination")
    }

    fn route(extra: Value) -> Route {
        Route::new(&destination(extra), "Webhook").expect("route")
    }

    #[test]
    fn only_listed_sources_feed_the_destination() {
        let r = route(json!({}));
        let e = json!({"type": "track", "event": "A"});
        assert_eq!(r.check(Some("web"), &e), Ok(()));
        assert_eq!(r.check(Some("app"), &e), Err(Skip::Source));
        assert_eq!(r.check(None, &e), Err(Skip::Source));
        let every = route(json!({"sources": []}));
        assert_eq!(every.check(Some("app"), &e), Ok(()));
    }

    #[test]
    fn the_integrations_object_follows_segment() {
        let r = route(json!({}));
        let check = |i: Value| r.check(Some("web"), &json!({"type": "track", "integrations": i}));
        assert_eq!(check(json!({})), Ok(()));
        assert_eq!(check(json!({"Webhook": false})), Err(Skip::Integrations));
        assert_eq!(check(json!({"hooks": false})), Err(Skip::Integrations));
        assert_eq!(check(json!({"All": false})), Err(Skip::Integrations));
        assert_eq!(check(json!({"All": false, "Webhook": true})), Ok(()));
        assert_eq!(check(json!({"All": false, "Webhook": {"x": 1}})), Ok(()));
        assert_eq!(check(json!({"Mixpanel": false})), Ok(()));
        // Keys are case-sensitive, as in Segment.
        assert_eq!(check(json!({"webhook": false})), Ok(()));
    }

    #[test]
    fn a_disabled_destination_receives_nothing() {
        let r = route(json!({"enabled": false}));
        assert_eq!(r.check(Some("web"), &json!({})), Err(Skip::Disabled));
    }

    #[test]
    fn filters_drop_by_event_name_and_type() {
        let r = route(json!({"filters": [{"drop_events": ["Noise"]}, {"drop_types": ["page"]}]}));
        assert_eq!(
            r.check(Some("web"), &json!({"type": "track", "event": "Noise"})),
            Err(Skip::Filter)
        );
        assert_eq!(
            r.check(Some("web"), &json!({"type": "track", "event": "Signal"})),
            Ok(())
        );
        assert_eq!(
            r.check(Some("web"), &json!({"type": "page"})),
            Err(Skip::Filter)
        );
        let allow = route(json!({"filters": [{"allow_events": ["Signal"]}]}));
        assert_eq!(
            allow.check(Some("web"), &json!({"type": "track", "event": "Noise"})),
            Err(Skip::Filter)
        );
        assert_eq!(
            allow.check(Some("web"), &json!({"type": "identify"})),
            Ok(())
        );
        assert!(Route::new(&destination(json!({"filters": [{"when": 1}]})), "Webhook").is_err());
    }
}
