//! Canary: sends a share of requests, or the requests a header or cookie
//! marks, to another upstream; the rest go on to the route's own.

use serde::Deserialize;
use weir_sdk::rng::Rng;
use weir_sdk::{Changes, Decision, Filter, Request, cookie_value};

/// Settings, from the filter's `settings` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The canary upstream's name.
    upstream: String,
    /// Share of unmarked requests sent to the canary, in percent (0 to
    /// 100, fractions allowed).
    #[serde(default)]
    percent: f64,
    /// A header that decides for the request: `always`/`true`/`1` sends it
    /// to the canary, `never`/`false`/`0` keeps it away.
    #[serde(default)]
    header: Option<String>,
    /// A cookie that decides the same way (for sticky browser sessions).
    #[serde(default)]
    cookie: Option<String>,
}

/// What a marker says.
fn verdict(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "always" | "true" | "1" | "yes" => Some(true),
        "never" | "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The filter.
#[derive(Debug)]
pub struct Canary {
    upstream: String,
    /// Out of 1,000,000.
    threshold: u64,
    header: Option<String>,
    cookie: Option<String>,
    rng: Rng,
}

impl Canary {
    /// Builds the filter from its settings (JSON).
    pub fn from_settings(config: &str) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_str(config).map_err(|e| format!("invalid canary settings: {e}"))?;
        if !(0.0..=100.0).contains(&settings.percent) {
            return Err(format!(
                "percent {} is not within 0..=100",
                settings.percent
            ));
        }
        if settings.upstream.is_empty() {
            return Err("upstream is empty".into());
        }
        Ok(Canary {
            upstream: settings.upstream,
            threshold: (settings.percent * 10_000.0).round() as u64,
            header: settings.header.map(|h| h.to_ascii_lowercase()),
            cookie: settings.cookie,
            rng: Rng::from_entropy(),
        })
    }

    /// Whether a request with these markers goes to the canary.
    fn choose(&mut self, header: Option<&str>, cookies: Option<&str>) -> bool {
        let marked = header.and_then(verdict).or_else(|| {
            let name = self.cookie.as_deref()?;
            cookie_value(cookies?, name).and_then(verdict)
        });
        marked.unwrap_or_else(|| self.rng.below(1_000_000) < self.threshold)
    }
}

impl Filter for Canary {
    fn init(config: &str) -> Result<Self, String> {
        Self::from_settings(config)
    }

    fn on_request(&mut self, request: &Request<'_>) -> Decision {
        let header = self.header.as_ref().and_then(|h| request.header(h));
        let cookies = self
            .cookie
            .is_some()
            .then(|| request.header("cookie"))
            .flatten();
        if self.choose(header.as_deref(), cookies.as_deref()) {
            weir_sdk::filter::counter("canary", 1);
            Decision::Route {
                upstream: self.upstream.clone(),
                changes: Changes::new(),
            }
        } else {
            Decision::pass()
        }
    }
}

weir_sdk::export_filter!(Canary);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_sends_about_that_share() {
        let mut c = Canary::from_settings(r#"{"upstream": "canary", "percent": 10}"#).unwrap();
        let n = (0..100_000).filter(|_| c.choose(None, None)).count();
        assert!((9_000..=11_000).contains(&n), "{n}");
        let mut none = Canary::from_settings(r#"{"upstream": "c"}"#).unwrap();
        assert!((0..1000).all(|_| !none.choose(None, None)));
    }

    #[test]
    fn markers_decide_before_the_dice() {
        let mut c = Canary::from_settings(
            r#"{"upstream": "canary", "percent": 100, "header": "X-Canary", "cookie": "canary"}"#,
        )
        .unwrap();
        assert!(!c.choose(Some("never"), None));
        assert!(!c.choose(None, Some("a=1; canary=0")));
        assert!(c.choose(Some("garbage"), None), "unknown marker: the dice");
        let mut zero =
            Canary::from_settings(r#"{"upstream": "canary", "header": "x-canary"}"#).unwrap();
        assert!(zero.choose(Some("always"), None));
    }

    #[test]
    fn settings_are_checked() {
        assert!(Canary::from_settings(r#"{"upstream": "c", "percent": 101}"#).is_err());
        assert!(Canary::from_settings(r#"{"percent": 5}"#).is_err());
    }
}
