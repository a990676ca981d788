//! Header rewriting: set, append and remove request headers before the
//! request goes on and response headers on the way back, and give every
//! request an id when it has none.

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_sdk::rng::Rng;
use weir_sdk::{Changes, Decision, Filter, HeaderOp, Request};

/// Changes to one side's headers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ops {
    /// Headers to set, replacing what is there.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Values to add.
    #[serde(default)]
    append: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    remove: Vec<String>,
}

impl Ops {
    /// As header operations: removals first, then sets, then appends.
    fn to_ops(&self) -> Vec<HeaderOp> {
        let removes = self.remove.iter().map(|k| HeaderOp::Remove(k.clone()));
        let sets = self
            .set
            .iter()
            .map(|(k, v)| HeaderOp::Set(k.clone(), v.clone()));
        let appends = self
            .append
            .iter()
            .map(|(k, v)| HeaderOp::Append(k.clone(), v.clone()));
        removes.chain(sets).chain(appends).collect()
    }
}

/// Settings, from the filter's `settings` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    request: Ops,
    #[serde(default)]
    response: Ops,
    /// A header that gets a fresh random id when the request has none
    /// (for example `x-request-id`).
    #[serde(default)]
    request_id: Option<String>,
    /// Also send the request's id back in the response, under the same
    /// header (default true when `request_id` is set).
    #[serde(default = "yes")]
    echo_request_id: bool,
    /// A request header that carries the verified TLS client certificate's
    /// subject to the backend (for example `x-client-cert-subject`). It is
    /// removed from every request first, so a client cannot forge it.
    #[serde(default)]
    client_cert_header: Option<String>,
}

fn yes() -> bool {
    true
}

/// The filter.
#[derive(Debug)]
pub struct Headers {
    request: Vec<HeaderOp>,
    response: Vec<HeaderOp>,
    request_id: Option<String>,
    echo_request_id: bool,
    client_cert_header: Option<String>,
    rng: Rng,
}

impl Headers {
    /// Builds the filter from its settings (JSON).
    pub fn from_settings(config: &str) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_str(config).map_err(|e| format!("invalid headers settings: {e}"))?;
        Ok(Headers {
            request: settings.request.to_ops(),
            response: settings.response.to_ops(),
            echo_request_id: settings.echo_request_id && settings.request_id.is_some(),
            request_id: settings.request_id.map(|h| h.to_ascii_lowercase()),
            client_cert_header: settings.client_cert_header.map(|h| h.to_ascii_lowercase()),
            rng: Rng::from_entropy(),
        })
    }

    /// A random 128-bit id, as 32 hex digits.
    fn new_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }
}

impl Filter for Headers {
    fn init(config: &str) -> Result<Self, String> {
        Self::from_settings(config)
    }

    fn wants_response(&self) -> bool {
        !self.response.is_empty() || self.echo_request_id
    }

    fn on_request(&mut self, request: &Request<'_>) -> Decision {
        let mut changes = Changes {
            headers: self.request.clone(),
            path: None,
        };
        if let Some(name) = self.request_id.clone()
            && request.header(&name).is_none()
        {
            let id = self.new_id();
            changes = changes.set_header(&name, &id);
        }
        if let Some(name) = &self.client_cert_header {
            changes.headers.push(HeaderOp::Remove(name.clone()));
            let subject = request.tls().and_then(|tls| tls.client_subject);
            if let Some(subject) = subject {
                changes
                    .headers
                    .push(HeaderOp::Set(name.clone(), header_safe(&subject)));
            }
        }
        Decision::Continue(changes)
    }

    fn on_response(
        &mut self,
        request: &Request<'_>,
        _status: u16,
        _headers: &[(String, String)],
    ) -> Vec<HeaderOp> {
        let mut ops = self.response.clone();
        // The id the request went on with: the client's, or ours.
        if self.echo_request_id
            && let Some(name) = &self.request_id
            && let Some(id) = request.header(name)
        {
            ops.push(HeaderOp::Set(name.clone(), id));
        }
        ops
    }
}

/// `text` with every byte outside printable ASCII percent-encoded (and `%`
/// itself), so any certificate subject makes a valid header value.
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

weir_sdk::export_filter!(Headers);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_ordered_operations() {
        let h = Headers::from_settings(
            r#"{"request": {"set": {"x-env": "prod"}, "remove": ["cookie"], "append": {"via": "weir"}},
                "response": {"remove": ["server"]}, "request_id": "X-Request-Id"}"#,
        )
        .unwrap();
        assert_eq!(
            h.request,
            vec![
                HeaderOp::Remove("cookie".into()),
                HeaderOp::Set("x-env".into(), "prod".into()),
                HeaderOp::Append("via".into(), "weir".into()),
            ]
        );
        assert_eq!(h.response, vec![HeaderOp::Remove("server".into())]);
        assert!(h.wants_response());
        assert_eq!(h.request_id.as_deref(), Some("x-request-id"));
    }

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let mut h = Headers::from_settings("{}").unwrap();
        let (a, b) = (h.new_id(), h.new_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(!h.wants_response());
        let echo = Headers::from_settings(r#"{"request_id": "x-request-id"}"#).unwrap();
        assert!(echo.wants_response(), "the id goes back by default");
        let quiet =
            Headers::from_settings(r#"{"request_id": "x-request-id", "echo_request_id": false}"#)
                .unwrap();
        assert!(!quiet.wants_response());
    }

    #[test]
    fn subjects_become_valid_header_values() {
        assert_eq!(header_safe("CN=alice, O=Example"), "CN=alice, O=Example");
        assert_eq!(header_safe("CN=Zoë\r\n%"), "CN=Zo%C3%AB%0D%0A%25");
    }

    #[test]
    fn unknown_settings_are_refused() {
        assert!(Headers::from_settings(r#"{"requests": {}}"#).is_err());
        assert!(Headers::from_settings(r#"{"request": {"add": {}}}"#).is_err());
    }
}
