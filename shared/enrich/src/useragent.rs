//! `context.userAgent` parsed into browser, OS and device (woothee: its data is compiled into the
//! binary, nothing is fetched at run time). Client Hints (`context.userAgentData`) win where they
//! say something, since a frozen Chrome user-agent string no longer carries the real OS version.
//!
//! Output, always `context.userAgentParsed`:
//! `{browser: {name, version}, os: {name, version}, device: {type, vendor}, category}` (keys only
//! when known), and `context.os` / `context.device.type` filled when the client did not set them,
//! which is where destinations (Mixpanel `$os`, Amplitude `os_name`, `device_type`) look.

use serde_json::{Map, Value};

use crate::Step;

/// What one parse found; `None` fields were not recognised.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    /// `desktop`, `mobile`, `bot`, `appliance` or `other`.
    pub device_type: Option<String>,
    pub vendor: Option<String>,
    /// woothee's category (`pc`, `smartphone`, `mobilephone`, `crawler`, `appliance`, `misc`).
    pub category: Option<String>,
}

fn known(s: &str) -> Option<String> {
    (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then(|| s.to_string())
}

/// Parses a user-agent string; `None` when woothee recognises nothing in it.
pub fn parse_user_agent(ua: &str) -> Option<Parsed> {
    let r = woothee::parser::Parser::new().parse(ua)?;
    let p = Parsed {
        browser: known(r.name),
        browser_version: known(r.version),
        os: known(r.os),
        os_version: known(&r.os_version),
        device_type: match r.category {
            "pc" => Some("desktop".into()),
            "smartphone" | "mobilephone" => Some("mobile".into()),
            "crawler" => Some("bot".into()),
            "appliance" => Some("appliance".into()),
            "misc" => Some("other".into()),
            _ => None,
        },
        vendor: known(r.vendor),
        category: known(r.category),
    };
    (p != Parsed::default()).then_some(p)
}

/// Brands Chrome adds to defeat sniffing ("Not A(Brand", "Not_A Brand"), never a real browser.
fn is_grease(brand: &str) -> bool {
    brand.starts_with("Not") && brand.contains("Brand")
}

/// Overlays Client Hints: the brand (not `Chromium` when a branded one is listed), its full
/// version when high-entropy hints were asked for, the platform and its version, `mobile`.
pub fn apply_client_hints(p: &mut Parsed, hints: &Map<String, Value>) {
    let list = |key: &str| -> Vec<(String, Option<String>)> {
        hints
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|b| {
                        let brand = b.get("brand")?.as_str()?;
                        let version = b.get("version").and_then(Value::as_str);
                        (!is_grease(brand)).then(|| (brand.to_string(), version.map(String::from)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let pick = |brands: Vec<(String, Option<String>)>| {
        brands
            .iter()
            .find(|(b, _)| b != "Chromium")
            .or(brands.first())
            .cloned()
    };
    if let Some((brand, version)) = pick(list("fullVersionList")).or_else(|| pick(list("brands"))) {
        p.browser = Some(brand);
        if version.is_some() {
            p.browser_version = version;
        }
    }
    if let Some(platform) = hints
        .get("platform")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if p.os.as_deref() != Some(platform) {
            p.os_version = None;
        }
        p.os = Some(platform.to_string());
    }
    if let Some(v) = hints
        .get("platformVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        p.os_version = Some(v.to_string());
    }
    match hints.get("mobile").and_then(Value::as_bool) {
        Some(true) => p.device_type = Some("mobile".into()),
        Some(false) if p.device_type.as_deref() == Some("mobile") => {
            p.device_type = Some("desktop".into());
        }
        Some(false) if p.device_type.is_none() => p.device_type = Some("desktop".into()),
        _ => {}
    }
}

/// Parses the event's user agent into its context. `Failed` when there was a user agent (or hints)
/// and nothing could be read from it; `Skipped` when there was nothing to parse.
pub fn enrich(map: &mut Map<String, Value>) -> Step {
    enrich_with(map, &mut |ua| parse_user_agent(ua))
}

/// [`enrich`] with the string parser given (a cache in front of [`parse_user_agent`]).
pub fn enrich_with(
    map: &mut Map<String, Value>,
    parse: &mut dyn FnMut(&str) -> Option<Parsed>,
) -> Step {
    let Some(Value::Object(context)) = map.get_mut("context") else {
        return Step::Skipped;
    };
    let ua = context.get("userAgent").and_then(Value::as_str);
    let hints = context.get("userAgentData").and_then(Value::as_object);
    if ua.is_none() && hints.is_none() {
        return Step::Skipped;
    }
    let mut parsed = ua.and_then(parse).unwrap_or_default();
    if let Some(hints) = hints {
        apply_client_hints(&mut parsed, hints);
    }
    if parsed == Parsed::default() {
        return Step::Failed;
    }
    let pair = |name: &Option<String>, version: &Option<String>| {
        let mut m = Map::new();
        if let Some(n) = name {
            m.insert("name".into(), Value::String(n.clone()));
        }
        if let Some(v) = version {
            m.insert("version".into(), Value::String(v.clone()));
        }
        m
    };
    let mut out = Map::new();
    let browser = pair(&parsed.browser, &parsed.browser_version);
    let os = pair(&parsed.os, &parsed.os_version);
    let mut device = Map::new();
    if let Some(t) = &parsed.device_type {
        device.insert("type".into(), Value::String(t.clone()));
    }
    if let Some(v) = &parsed.vendor {
        device.insert("vendor".into(), Value::String(v.clone()));
    }
    if !browser.is_empty() {
        out.insert("browser".into(), Value::Object(browser));
    }
    if !os.is_empty() {
        out.insert("os".into(), Value::Object(os.clone()));
        if context.get("os").is_none_or(Value::is_null) {
            context.insert("os".into(), Value::Object(os));
        }
    }
    if !device.is_empty() {
        out.insert("device".into(), Value::Object(device));
    }
    if let Some(c) = &parsed.category {
        out.insert("category".into(), Value::String(c.clone()));
    }
    if let Some(t) = &parsed.device_type {
        match context.get_mut("device") {
            Some(Value::Object(d)) => {
                d.entry("type").or_insert_with(|| Value::String(t.clone()));
            }
            None | Some(Value::Null) => {
                let mut d = Map::new();
                d.insert("type".into(), Value::String(t.clone()));
                context.insert("device".into(), Value::Object(d));
            }
            Some(_) => {}
        }
    }
    context.insert("userAgentParsed".into(), Value::Object(out));
    Step::Applied
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn context_of(context: Value) -> (Value, Step) {
        let mut m = json!({"type": "page", "context": context})
            .as_object()
            .unwrap()
            .clone();
        let r = enrich(&mut m);
        (m["context"].clone(), r)
    }

    #[test]
    fn known_user_agents_are_recognised() {
        let p = parse_user_agent(CHROME_WINDOWS).unwrap();
        assert_eq!(p.browser.as_deref(), Some("Chrome"));
        assert_eq!(p.browser_version.as_deref(), Some("120.0.0.0"));
        assert_eq!(p.os.as_deref(), Some("Windows 10"));
        assert_eq!(p.device_type.as_deref(), Some("desktop"));

        let p = parse_user_agent(SAFARI_IPHONE).unwrap();
        assert_eq!(p.browser.as_deref(), Some("Safari"));
        assert_eq!(p.os.as_deref(), Some("iPhone"));
        assert_eq!(p.os_version.as_deref(), Some("17.2"));
        assert_eq!(p.device_type.as_deref(), Some("mobile"));

        let p = parse_user_agent(FIREFOX_LINUX).unwrap();
        assert_eq!(p.browser.as_deref(), Some("Firefox"));
        assert_eq!(p.os.as_deref(), Some("Linux"));

        let p = parse_user_agent(GOOGLEBOT).unwrap();
        assert_eq!(p.browser.as_deref(), Some("Googlebot"));
        assert_eq!(p.device_type.as_deref(), Some("bot"));
    }

    #[test]
    fn the_parsed_agent_lands_in_the_context() {
        let (c, r) = context_of(json!({"userAgent": CHROME_WINDOWS}));
        assert_eq!(r, Step::Applied);
        assert_eq!(
            c["userAgentParsed"],
            json!({"browser": {"name": "Chrome", "version": "120.0.0.0"},
                   "os": {"name": "Windows 10", "version": "NT 10.0"},
                   "device": {"type": "desktop", "vendor": "Google"}, "category": "pc"})
        );
        assert_eq!(c["os"], json!({"name": "Windows 10", "version": "NT 10.0"}));
        assert_eq!(c["device"], json!({"type": "desktop"}));
    }

    #[test]
    fn client_set_os_and_device_are_kept() {
        let (c, _) = context_of(json!({"userAgent": SAFARI_IPHONE,
            "os": {"name": "iOS", "version": "17.2.1"}, "device": {"model": "iPhone15,2"}}));
        assert_eq!(c["os"], json!({"name": "iOS", "version": "17.2.1"}));
        assert_eq!(
            c["device"],
            json!({"model": "iPhone15,2", "type": "mobile"})
        );
        assert_eq!(c["userAgentParsed"]["os"]["name"], "iPhone");
    }

    #[test]
    fn client_hints_are_preferred_over_the_frozen_string() {
        let (c, r) = context_of(json!({"userAgent": CHROME_WINDOWS, "userAgentData": {
            "brands": [{"brand": "Not_A Brand", "version": "8"}, {"brand": "Chromium", "version": "120"},
                       {"brand": "Microsoft Edge", "version": "120"}],
            "fullVersionList": [{"brand": "Not_A Brand", "version": "8.0.0.0"},
                                {"brand": "Chromium", "version": "120.0.6099.130"},
                                {"brand": "Microsoft Edge", "version": "120.0.2210.91"}],
            "mobile": false, "platform": "Windows", "platformVersion": "15.0.0"}}));
        assert_eq!(r, Step::Applied);
        let p = &c["userAgentParsed"];
        assert_eq!(
            p["browser"],
            json!({"name": "Microsoft Edge", "version": "120.0.2210.91"})
        );
        assert_eq!(p["os"], json!({"name": "Windows", "version": "15.0.0"}));
        assert_eq!(p["device"]["type"], "desktop");
    }

    #[test]
    fn low_entropy_hints_alone_still_give_browser_os_and_mobile() {
        let (c, r) = context_of(json!({"userAgentData": {
            "brands": [{"brand": "Chromium", "version": "121"}, {"brand": "Not A(Brand", "version": "99"}],
            "mobile": true, "platform": "Android"}}));
        assert_eq!(r, Step::Applied);
        let p = &c["userAgentParsed"];
        assert_eq!(p["browser"], json!({"name": "Chromium", "version": "121"}));
        assert_eq!(p["os"], json!({"name": "Android"}));
        assert_eq!(p["device"]["type"], "mobile");
    }

    #[test]
    fn an_unrecognisable_agent_is_a_parse_failure_and_no_agent_is_not() {
        let (c, r) = context_of(json!({"userAgent": "curl-ish/0"}));
        assert_eq!(r, Step::Failed);
        assert!(c.get("userAgentParsed").is_none());
        assert_eq!(context_of(json!({})).1, Step::Skipped);
    }
}
