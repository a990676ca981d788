//! API key filter: a request must carry one of a configured set of keys, in
//! a header or a query parameter, or it gets `401`. The set is configured as
//! SHA-256 hashes, so the config never holds a usable key; each request's
//! key is hashed and looked up.

use std::collections::HashSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_sdk::{Changes, Decision, Filter, Request, Response};

/// Settings, from the filter's `settings` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Header carrying the key (default `x-api-key`).
    #[serde(default = "default_header")]
    header: String,
    /// Query parameter carrying the key, checked when the header is absent.
    #[serde(default)]
    query: Option<String>,
    /// Hex SHA-256 of each accepted key (`printf %s KEY | sha256sum`).
    keys_sha256: Vec<String>,
    /// Remove the key before the request goes on (default true), so
    /// backends never see it.
    #[serde(default = "yes")]
    strip: bool,
}

fn default_header() -> String {
    "x-api-key".into()
}
fn yes() -> bool {
    true
}

/// The filter.
#[derive(Debug)]
pub struct ApiKey {
    header: String,
    query: Option<String>,
    keys: HashSet<[u8; 32]>,
    strip: bool,
}

impl ApiKey {
    /// Builds the filter from its settings (JSON).
    pub fn from_settings(config: &str) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_str(config).map_err(|e| format!("invalid api-key settings: {e}"))?;
        let keys = settings
            .keys_sha256
            .iter()
            .map(|hex| {
                parse_hex(hex).ok_or_else(|| format!("{hex:?} is not 64 hex digits (a SHA-256)"))
            })
            .collect::<Result<HashSet<_>, _>>()?;
        if keys.is_empty() {
            return Err("keys_sha256 is empty: no request could pass".into());
        }
        Ok(ApiKey {
            header: settings.header.to_ascii_lowercase(),
            query: settings.query,
            keys,
            strip: settings.strip,
        })
    }

    /// Whether `key` is one of the accepted keys.
    pub fn accepts(&self, key: &str) -> bool {
        self.keys
            .contains(&<[u8; 32]>::from(Sha256::digest(key.as_bytes())))
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The value of query parameter `name` in `path`, and the path without it.
pub fn take_query(path: &str, name: &str) -> Option<(String, String)> {
    let (base, query) = path.split_once('?')?;
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == name && value.is_none() {
                value = Some(v.to_string());
                false
            } else {
                true
            }
        })
        .collect();
    let value = value?;
    let path = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Some((value, path))
}

impl Filter for ApiKey {
    fn init(config: &str) -> Result<Self, String> {
        Self::from_settings(config)
    }

    fn on_request(&mut self, request: &Request<'_>) -> Decision {
        let mut changes = Changes::new();
        let key = match request.header(&self.header) {
            Some(key) => {
                if self.strip {
                    changes = changes.remove_header(&self.header);
                }
                Some(key)
            }
            None => self.query.as_ref().and_then(|name| {
                let (key, rest) = take_query(&request.path(), name)?;
                if self.strip {
                    changes = std::mem::take(&mut changes).path(&rest);
                }
                Some(key)
            }),
        };
        match key {
            Some(key) if self.accepts(&key) => Decision::Continue(changes),
            _ => {
                weir_sdk::filter::counter("rejected", 1);
                Decision::Respond(
                    Response::new(401)
                        .header(
                            "www-authenticate",
                            &format!("ApiKey header=\"{}\"", self.header),
                        )
                        .text("a valid API key is required\n"),
                )
            }
        }
    }
}

weir_sdk::export_filter!(ApiKey);

#[cfg(test)]
mod tests {
    use super::*;

    // printf %s secret-1 | sha256sum
    const SECRET_1: &str = "f7e7c36e458e80e6b6a2c67d0a9ec09bd718dadd7bfa8d6bf6e7ad526e46c2f7";

    fn hash(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn only_configured_keys_pass() {
        let config = format!(
            r#"{{"keys_sha256": ["{}", "{}"]}}"#,
            hash("secret-1"),
            hash("secret-2")
        );
        let filter = ApiKey::from_settings(&config).unwrap();
        assert!(filter.accepts("secret-1"));
        assert!(filter.accepts("secret-2"));
        assert!(!filter.accepts("secret-3"));
        assert!(!filter.accepts(""));
    }

    #[test]
    fn hashes_are_sha256_as_sha256sum_prints_them() {
        assert_eq!(hash("secret-1"), SECRET_1);
    }

    #[test]
    fn hashes_are_checked() {
        assert!(ApiKey::from_settings(r#"{"keys_sha256": ["abc"]}"#).is_err());
        assert!(ApiKey::from_settings(r#"{"keys_sha256": []}"#).is_err());
        assert!(ApiKey::from_settings(&format!(r#"{{"keys_sha256": ["{SECRET_1}"]}}"#)).is_ok());
        assert!(ApiKey::from_settings(r#"{"keys": []}"#).is_err());
    }

    #[test]
    fn query_keys_are_taken_out_of_the_path() {
        assert_eq!(
            take_query("/a?x=1&api_key=k&y=2", "api_key"),
            Some(("k".into(), "/a?x=1&y=2".into()))
        );
        assert_eq!(
            take_query("/a?api_key=k", "api_key"),
            Some(("k".into(), "/a".into()))
        );
        assert_eq!(take_query("/a?x=1", "api_key"), None);
        assert_eq!(take_query("/a", "api_key"), None);
    }
}
