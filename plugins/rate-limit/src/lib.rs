//! Rate limit: a token bucket per client address (or per value of a header),
//! answering `429 Too Many Requests` with `Retry-After` once a key's bucket
//! is empty.
//!
//! The bucket is kept as GCRA (the generic cell rate algorithm): one
//! timestamp per key, the "theoretical arrival time" of the next request,
//! stored in weir's `shared` cells and updated with compare-and-swap, so
//! every instance of the plugin (weir runs several) sees one bucket per key.
//! It allows `burst` requests at once and `rate` per second after that,
//! exactly like a token bucket of `burst` tokens refilled at `rate`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_sdk::filter::shared;
use weir_sdk::{Decision, Filter, Request, Response};

/// Settings, from the filter's `settings` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Requests per second allowed per key, sustained.
    rate: f64,
    /// Requests allowed at once (the bucket's size); default `rate`, at
    /// least 1.
    burst: Option<u32>,
    /// What a bucket is per: `client` (address, default) or `header:NAME`
    /// (requests without the header fall back to the client address).
    #[serde(default = "client")]
    key: String,
    /// Keeps this filter's buckets apart from another use of the plugin.
    #[serde(default)]
    zone: String,
}

fn client() -> String {
    "client".into()
}

/// GCRA parameters in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between requests at the sustained rate.
    pub interval: i64,
    /// How far ahead of now the arrival time may run: `(burst - 1) x
    /// interval`.
    pub tolerance: i64,
}

impl Gcra {
    /// Parameters for `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Gcra {
        let interval = (1e6 / rate).round().max(1.0) as i64;
        Gcra {
            interval,
            tolerance: interval * i64::from(burst.max(1) - 1),
        }
    }

    /// Given the stored arrival time (if any) and `now`, either the new
    /// arrival time to store (allowed) or how long until a request would be
    /// allowed (refused).
    pub fn decide(self, stored: Option<i64>, now: i64) -> Result<i64, i64> {
        let tat = stored.unwrap_or(now).max(now);
        let ahead = tat.saturating_sub(now);
        if ahead > self.tolerance {
            Err(ahead - self.tolerance)
        } else {
            Ok(tat.saturating_add(self.interval))
        }
    }
}

/// The filter.
#[derive(Debug)]
pub struct RateLimit {
    gcra: Gcra,
    header: Option<String>,
    prefix: String,
    limit: String,
}

impl RateLimit {
    /// Builds the filter from its settings (JSON).
    pub fn from_settings(config: &str) -> Result<Self, String> {
        let settings: Settings = serde_json::from_str(config)
            .map_err(|e| format!("invalid rate-limit settings: {e}"))?;
        if !(0.001..=1e6).contains(&settings.rate) {
            return Err(format!(
                "rate {} must be within 0.001..=1000000 per second",
                settings.rate
            ));
        }
        if settings.zone.len() > MAX_ZONE_BYTES {
            return Err(format!("zone is longer than {MAX_ZONE_BYTES} bytes"));
        }
        let burst = settings.burst.unwrap_or(settings.rate.ceil() as u32).max(1);
        let header = match settings.key.as_str() {
            "client" => None,
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Some(name.to_ascii_lowercase()),
                _ => {
                    return Err(format!(
                        "key {other:?} is not \"client\" or \"header:NAME\""
                    ));
                }
            },
        };
        Ok(RateLimit {
            gcra: Gcra::new(settings.rate, burst),
            header,
            prefix: format!("rl:{}:", settings.zone),
            limit: format!("{}", settings.rate),
        })
    }

    /// Takes one request from `key`'s bucket at `now` (µs); on refusal, the
    /// wait in µs.
    fn take(&self, key: &str, now: i64) -> Result<(), i64> {
        // Contention only between instances racing on one key: a few tries
        // settle it. If they do not, let the request through rather than
        // refuse it for weir's sake.
        for _ in 0..8 {
            let stored = shared::get(key);
            match self.gcra.decide(stored, now) {
                Err(wait) => return Err(wait),
                Ok(next) => {
                    let ttl_ms = ((next - now) / 1000 + 1000).clamp(1, i64::from(u32::MAX)) as u32;
                    if shared::compare_and_swap(key, stored, next, ttl_ms) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Longest `zone`: its bucket keys stay within weir's key cap.
const MAX_ZONE_BYTES: usize = 64;

/// Longest key weir stores in a shared cell; a longer one is refused.
const MAX_KEY_BYTES: usize = 256;

/// The cell of `who`'s bucket: `prefix` then `who`, or, if that would be
/// longer than weir stores, `prefix` then `who`'s SHA-256, so a long header
/// value still gets a bucket (weir would refuse its key, and the request
/// would pass unlimited).
fn bucket_key(prefix: &str, who: &str) -> String {
    if prefix.len() + who.len() <= MAX_KEY_BYTES {
        return format!("{prefix}{who}");
    }
    let digest = Sha256::digest(who.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}sha256:{hex}")
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Filter for RateLimit {
    fn init(config: &str) -> Result<Self, String> {
        Self::from_settings(config)
    }

    fn on_request(&mut self, request: &Request<'_>) -> Decision {
        let who = self
            .header
            .as_ref()
            .and_then(|h| request.header(h))
            // One bucket per client host (not per connection's port).
            .unwrap_or_else(|| request.client_ip().to_string());
        match self.take(&bucket_key(&self.prefix, &who), now_us()) {
            Ok(()) => Decision::pass(),
            Err(wait_us) => {
                weir_sdk::filter::counter("limited", 1);
                let seconds = (wait_us + 999_999) / 1_000_000;
                Decision::Respond(
                    Response::new(429)
                        .header("retry-after", &seconds.max(1).to_string())
                        .header("x-ratelimit-limit", &self.limit)
                        .text("too many requests\n"),
                )
            }
        }
    }
}

weir_sdk::export_filter!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        // 10 per second, bursts of 3.
        let gcra = Gcra::new(10.0, 3);
        let mut stored = None;
        let mut allowed = 0;
        for _ in 0..5 {
            if let Ok(next) = gcra.decide(stored, 0) {
                stored = Some(next);
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3, "the burst");
        // Refused with the time until the next token: 100 ms.
        assert_eq!(gcra.decide(stored, 0), Err(100_000));
        assert_eq!(gcra.decide(stored, 99_999), Err(1));
        assert!(gcra.decide(stored, 100_000).is_ok());
        // After a long pause the bucket is full again, not fuller.
        let later = 10_000_000;
        let mut burst = 0;
        let mut s = stored;
        while let Ok(next) = gcra.decide(s, later) {
            s = Some(next);
            burst += 1;
        }
        assert_eq!(burst, 3);
    }

    #[test]
    fn sustained_rate_is_the_rate() {
        let gcra = Gcra::new(100.0, 1);
        let mut stored = None;
        let mut allowed = 0;
        // One attempt every millisecond for 2 s.
        for ms in 0..2000 {
            if let Ok(next) = gcra.decide(stored, ms * 1000) {
                stored = Some(next);
                allowed += 1;
            }
        }
        assert_eq!(allowed, 200);
    }

    #[test]
    fn long_header_values_get_a_bucket_weir_stores() {
        let prefix = format!("rl:{}:", "z".repeat(MAX_ZONE_BYTES));
        assert_eq!(bucket_key("rl::", "10.0.0.1"), "rl::10.0.0.1");
        let long = "a".repeat(10_000);
        let hashed = bucket_key(&prefix, &long);
        assert!(hashed.len() <= MAX_KEY_BYTES, "{}", hashed.len());
        assert_ne!(hashed, bucket_key(&prefix, &"b".repeat(10_000)));
        assert_eq!(
            hashed,
            bucket_key(&prefix, &long),
            "the same bucket each time"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(RateLimit::from_settings(r#"{"rate": 5}"#).is_ok());
        assert!(RateLimit::from_settings(r#"{"rate": 5, "key": "header:x-user"}"#).is_ok());
        for bad in [
            r#"{"rate": 0}"#,
            r#"{"rate": 1e-300}"#,
            r#"{"rate": 5, "zone": 1}"#,
            r#"{"rate": 5, "key": "cookie"}"#,
            r#"{"rate": 5, "key": "header:"}"#,
            &format!(r#"{{"rate": 5, "zone": "{}"}}"#, "z".repeat(65)),
            r#"{}"#,
        ] {
            assert!(RateLimit::from_settings(bad).is_err(), "{bad}");
        }
    }
}
