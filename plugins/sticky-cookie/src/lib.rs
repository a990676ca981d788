//! Sticky cookie: session affinity through a cookie. A request whose cookie
//! names an eligible backend goes to it; any other request is balanced
//! round robin, and its response gets a `Set-Cookie` naming the backend
//! chosen, so the client's next requests follow (HAProxy's `cookie ...
//! insert`). When that backend is drained or down, the client is moved to
//! another and gets a new cookie.
//!
//! The cookie holds a hash of the backend's name, not the name: it stays
//! valid across weir restarts and reloads (names are stable, ids need not
//! be across restarts) and tells the client nothing about the servers.

use std::collections::HashMap;

use serde::Deserialize;
use weir_sdk::{BackendId, Backends, Balancer, Request, cookie_value};

/// Settings, from the upstream's `settings` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The cookie's name.
    #[serde(default = "default_cookie")]
    cookie: String,
    /// `Max-Age` in seconds; absent: a session cookie.
    #[serde(default)]
    max_age_s: Option<u64>,
    /// The cookie's `Path`.
    #[serde(default = "root")]
    path: String,
    /// Add `Secure` (for sites served over HTTPS in front of weir).
    #[serde(default)]
    secure: bool,
}

fn default_cookie() -> String {
    "weir_sticky".into()
}
fn root() -> String {
    "/".into()
}

/// The cookie value for a backend called `name`: FNV-1a, 16 hex digits.
pub fn token(name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The policy.
#[derive(Debug)]
pub struct StickyCookie {
    name: String,
    attributes: String,
    by_token: HashMap<String, BackendId>,
    tokens: HashMap<BackendId, String>,
    next: usize,
}

impl StickyCookie {
    /// Builds the policy from its settings (JSON).
    pub fn from_settings(config: &str) -> Result<Self, String> {
        let s: Settings = serde_json::from_str(config)
            .map_err(|e| format!("invalid sticky-cookie settings: {e}"))?;
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if s.cookie.is_empty() || !s.cookie.chars().all(token_char) {
            return Err(format!(
                "cookie name {:?} is not a valid cookie name",
                s.cookie
            ));
        }
        if !s.path.starts_with('/') || s.path.contains(';') {
            return Err(format!(
                "path {:?} must start with '/' and hold no ';'",
                s.path
            ));
        }
        let mut attributes = format!("; Path={}; HttpOnly; SameSite=Lax", s.path);
        if let Some(age) = s.max_age_s {
            attributes.push_str(&format!("; Max-Age={age}"));
        }
        if s.secure {
            attributes.push_str("; Secure");
        }
        Ok(StickyCookie {
            name: s.cookie,
            attributes,
            by_token: HashMap::new(),
            tokens: HashMap::new(),
            next: 0,
        })
    }

    /// The backend for a request carrying `cookie_value` (if any), and the
    /// `Set-Cookie` value to send when the client must be (re)pinned.
    pub fn pick(
        &mut self,
        cookie_value: Option<&str>,
        backends: &Backends,
    ) -> Option<(BackendId, Option<String>)> {
        if let Some(id) = cookie_value.and_then(|v| self.by_token.get(v)).copied()
            && backends.get(id).is_some_and(|b| b.is_eligible())
        {
            return Some((id, None));
        }
        let eligible = backends.eligible();
        if self.next >= eligible.len() {
            self.next = 0;
        }
        let chosen = eligible.get(self.next)?.id;
        self.next += 1;
        let set_cookie = format!(
            "{}={}{}",
            self.name,
            self.tokens.get(&chosen)?,
            self.attributes
        );
        Some((chosen, Some(set_cookie)))
    }
}

impl Balancer for StickyCookie {
    fn init(config: &str) -> Result<Self, String> {
        Self::from_settings(config)
    }

    fn backends_changed(&mut self, backends: &Backends) {
        self.tokens = backends
            .all()
            .iter()
            .map(|b| (b.id, token(&b.name)))
            .collect();
        self.by_token = self.tokens.iter().map(|(id, t)| (t.clone(), *id)).collect();
    }

    fn select(&mut self, request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        let header = request.header("cookie");
        let value = header.as_deref().and_then(|h| cookie_value(h, &self.name));
        let (id, set_cookie) = self.pick(value, backends)?;
        if let Some(set_cookie) = set_cookie {
            weir_sdk::response::add_header("set-cookie", &set_cookie);
        }
        Some(id)
    }
}

weir_sdk::export_balancer!(StickyCookie);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::{Backend, Health};

    fn backends(health: &[Health]) -> Backends {
        Backends::new(
            health
                .iter()
                .enumerate()
                .map(|(i, &h)| Backend {
                    name: format!("b{i}"),
                    health: h,
                    ..Backend::new(i as BackendId, "10.0.0.1:80")
                })
                .collect(),
        )
    }

    fn policy(settings: &str, set: &Backends) -> StickyCookie {
        let mut p = StickyCookie::from_settings(settings).unwrap();
        p.backends_changed(set);
        p
    }

    #[test]
    fn new_clients_are_balanced_and_pinned() {
        let set = backends(&[Health::Healthy; 3]);
        let mut p = policy(r#"{"max_age_s": 3600}"#, &set);
        let (first, cookie) = p.pick(None, &set).unwrap();
        assert_eq!(first, 0);
        assert_eq!(
            cookie.unwrap(),
            format!(
                "weir_sticky={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600",
                token("b0")
            )
        );
        assert_eq!(p.pick(None, &set).unwrap().0, 1);
        // A pinned client stays, and gets no new cookie.
        let pinned = token("b2");
        for _ in 0..5 {
            assert_eq!(p.pick(Some(&pinned), &set), Some((2, None)));
        }
    }

    #[test]
    fn clients_of_an_ineligible_backend_move_and_are_repinned() {
        let set = backends(&[Health::Healthy, Health::Draining]);
        let mut p = policy("{}", &set);
        let (id, cookie) = p.pick(Some(&token("b1")), &set).unwrap();
        assert_eq!(id, 0);
        assert!(
            cookie
                .unwrap()
                .starts_with(&format!("weir_sticky={};", token("b0")))
        );
        // An unknown or forged value is treated like no cookie.
        assert!(p.pick(Some("nonsense"), &set).unwrap().1.is_some());
        assert_eq!(p.pick(None, &backends(&[Health::Unhealthy])), None);
    }

    #[test]
    fn cookie_headers_parse_and_settings_are_checked() {
        assert!(StickyCookie::from_settings(r#"{"cookie": "bad name"}"#).is_err());
        assert!(StickyCookie::from_settings(r#"{"path": "x"}"#).is_err());
        assert!(
            StickyCookie::from_settings(r#"{"secure": true}"#)
                .unwrap()
                .attributes
                .ends_with("; Secure")
        );
        assert_eq!(token("b0"), token("b0"));
        assert_ne!(token("b0"), token("b1"));
    }
}
