//! The admin API: a small JSON API over the running upstreams and backends,
//! Prometheus metrics, and a reload trigger, on its own listener (loopback
//! by default), optionally behind a bearer token.
//!
//! | Method and path                                   | Does |
//! |---------------------------------------------------|------|
//! | `GET /healthz`                                    | `ok` (no token needed) |
//! | `GET /metrics`                                    | Prometheus text |
//! | `GET /upstreams`                                  | every upstream and its backends |
//! | `GET /upstreams/U`                                | one upstream |
//! | `POST /upstreams/U/backends`                      | add a backend (JSON body) |
//! | `DELETE /upstreams/U/backends/B`                  | remove a backend |
//! | `PATCH /upstreams/U/backends/B`                   | `{"weight": N}` and/or `{"state": "draining" \| "enabled"}` |
//! | `POST /upstreams/U/backends/B/drain` or `/enable` | drain or re-enable |
//! | `POST /reload`                                    | what SIGHUP does |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access_log::AccessLog;
use crate::backend::Backend;
use crate::metrics::{self, ProcessCounters};
use crate::plugin::{Calls, LoadedPlugin};
use crate::proxy::{ProxyBody, text};
use crate::reload::{ReloadKind, Reloader};
use crate::snapshot::Snapshot;
use crate::upstream::{AdminError, NewBackend, Upstream};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// What the admin API reads and changes.
pub struct Admin {
    /// Builds and swaps snapshots; holds the current one.
    pub reloader: Arc<Reloader>,
    /// For its dropped-lines counter.
    pub access_log: Option<Arc<AccessLog>>,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Requests the proxy refused before routing, by reason.
    pub refused: Arc<crate::proxy::RefusedRequests>,
    /// Each TLS listener's address and handshake counters.
    pub handshakes: Vec<(String, Arc<crate::listener::HandshakeStats>)>,
}

impl Admin {
    /// Answers one admin request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        if parts.method == Method::GET && segments == ["healthz"] {
            return text(StatusCode::OK, "ok\n");
        }
        if !self.authorized(&parts.headers) {
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
            return response;
        }
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return error_from(StatusCode::PAYLOAD_TOO_LARGE, "reading the body", &*e);
            }
        };
        let response = self.route(&parts.method, &segments, &body).await;
        if parts.method != Method::GET {
            tracing::info!(
                method = %parts.method,
                path,
                status = response.status().as_u16(),
                "admin request"
            );
        }
        response
    }

    async fn route(&self, method: &Method, segments: &[&str], body: &Bytes) -> Response<ProxyBody> {
        let snapshot = self.reloader.current();
        let upstream = |name: &str| snapshot.upstream(name).cloned();
        match (method, segments) {
            (&Method::GET, ["metrics"]) => {
                let counters = ProcessCounters {
                    reloads: self.reloader.reloads(),
                    reload_failures: self.reloader.failures(),
                    plugin_rejections: self.reloader.store().rejections(),
                    access_log_dropped: self.access_log.as_ref().map_or(0, |l| l.dropped()),
                    plugin_counters: self.reloader.store().runtime().counters(),
                    plugin_refusals: self.reloader.store().runtime().refusals(),
                    plugin_log_dropped: self.reloader.store().runtime().log_dropped(),
                    log_dropped: crate::logging::dropped_lines(),
                    requests_refused: self.refused.by_reason(),
                    hibernated: crate::listener::hibernation_counts(),
                    handshakes: self
                        .handshakes
                        .iter()
                        .map(|(listener, stats)| metrics::Handshakes {
                            listener: listener.clone(),
                            done: stats.done(),
                            failed: stats.failed(),
                        })
                        .collect(),
                };
                let mut response = text(StatusCode::OK, metrics::render(&snapshot, &counters));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    metrics::CONTENT_TYPE.parse().expect("valid header"),
                );
                response
            }
            (&Method::GET, ["plugins"]) => json_response(
                StatusCode::OK,
                &json!({ "pools": describe_pools(&snapshot) }),
            ),
            (&Method::GET, ["upstreams"]) => {
                let all: Vec<Value> = snapshot
                    .upstreams()
                    .map(|(_, u)| describe_upstream(u))
                    .collect();
                json_response(StatusCode::OK, &json!({ "upstreams": all }))
            }
            (&Method::GET, ["upstreams", name]) => match upstream(name) {
                Some(u) => json_response(StatusCode::OK, &describe_upstream(&u)),
                None => no_upstream(name),
            },
            (&Method::POST, ["upstreams", name, "backends"]) => {
                let Some(u) = upstream(name) else {
                    return no_upstream(name);
                };
                let new: NewBackend = match serde_json::from_slice(body) {
                    Ok(new) => new,
                    Err(e) => {
                        return error_from(StatusCode::BAD_REQUEST, "invalid backend", &e);
                    }
                };
                let backend = new.name.clone().unwrap_or_else(|| new.address.clone());
                let result = u.add_backend(new);
                answer(&u, &backend, result, StatusCode::CREATED)
            }
            (&Method::DELETE, ["upstreams", name, "backends", backend]) => {
                let Some(u) = upstream(name) else {
                    return no_upstream(name);
                };
                match u.remove_backend(backend) {
                    Ok(()) => json_response(StatusCode::OK, &json!({ "removed": backend })),
                    Err(e) => admin_error(e),
                }
            }
            (&Method::PATCH, ["upstreams", name, "backends", backend]) => {
                let Some(u) = upstream(name) else {
                    return no_upstream(name);
                };
                let patch: Patch = match serde_json::from_slice(body) {
                    Ok(patch) => patch,
                    Err(e) => {
                        return error_from(StatusCode::BAD_REQUEST, "invalid change", &e);
                    }
                };
                let mut result = Ok(());
                if let Some(weight) = patch.weight {
                    result = u.set_weight(backend, weight);
                }
                if let (Ok(()), Some(state)) = (&result, patch.state) {
                    result = u.set_draining(backend, state == AdminState::Draining);
                }
                answer(&u, backend, result, StatusCode::OK)
            }
            (
                &Method::POST,
                [
                    "upstreams",
                    name,
                    "backends",
                    backend,
                    action @ ("drain" | "enable"),
                ],
            ) => {
                let Some(u) = upstream(name) else {
                    return no_upstream(name);
                };
                let result = u.set_draining(backend, *action == "drain");
                answer(&u, backend, result, StatusCode::OK)
            }
            (&Method::POST, ["reload"]) => match self.reloader.reload(ReloadKind::Config).await {
                Ok(()) => json_response(
                    StatusCode::OK,
                    &json!({ "reloaded": true, "reloads": self.reloader.reloads() }),
                ),
                Err(e) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &crate::error::chain(&e).to_string(),
                ),
            },
            _ => error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint (see the README's admin API section)",
            ),
        }
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }
}

/// A `PATCH` of one backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    weight: Option<u32>,
    state: Option<AdminState>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum AdminState {
    Draining,
    Enabled,
}

fn answer(
    upstream: &Upstream,
    backend: &str,
    result: Result<(), AdminError>,
    ok: StatusCode,
) -> Response<ProxyBody> {
    if let Err(e) = result {
        return admin_error(e);
    }
    let set = upstream.backends();
    match set.iter().find(|b| b.name == backend) {
        Some(b) => json_response(ok, &describe_backend(upstream, b)),
        None => json_response(ok, &json!({})),
    }
}

fn admin_error(e: AdminError) -> Response<ProxyBody> {
    let status = match e {
        AdminError::NoSuchBackend { .. } => StatusCode::NOT_FOUND,
        AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, &crate::error::chain(&e).to_string())
}

fn no_upstream(name: &str) -> Response<ProxyBody> {
    error(StatusCode::NOT_FOUND, &format!("no upstream {name:?}"))
}

/// An upstream and its backends as JSON.
pub fn describe_upstream(upstream: &Upstream) -> Value {
    let set = upstream.backends();
    let stats = upstream.stats();
    json!({
        "name": upstream.name(),
        "plugin": upstream.balancer().map(|b| b.pool.plugin().name()),
        "generation": set.generation(),
        "eligible": set.eligible().len(),
        "retries": stats.retries.load(Ordering::Relaxed),
        "backends": set.iter().map(|b| describe_backend(upstream, b)).collect::<Vec<_>>(),
    })
}

/// Every plugin pool (a plugin version serving an upstream or a place in
/// a route's chain): calls, failures, time in calls, quarantine.
pub fn describe_pools(snapshot: &Snapshot) -> Vec<Value> {
    snapshot
        .plugin_pools()
        .map(|(plugin, owner, calls)| describe_pool(plugin, &owner, calls))
        .collect()
}

fn describe_pool(plugin: &LoadedPlugin, owner: &str, calls: &Calls) -> Value {
    json!({
        "plugin": plugin.name(),
        "world": plugin.world(),
        "version": format!("{:016x}", plugin.digest()),
        "owner": owner,
        "calls": calls.calls(),
        "failures": calls.failures(),
        "busy_ms": calls.busy().as_secs_f64() * 1000.0,
        "quarantined": calls.quarantined_for().is_some(),
        "quarantined_for_ms": calls.quarantined_for().map(|d| d.as_millis() as u64),
        "quarantines": calls.quarantines(),
    })
}

fn describe_backend(upstream: &Upstream, b: &Backend) -> Value {
    json!({
        "id": b.id,
        "name": b.name,
        "address": b.addr.to_string(),
        "weight": b.weight,
        "configured_weight": b.base_weight,
        "health": b.health.as_str(),
        "reason": b.reason,
        "in_flight": b.stats.in_flight(),
        "tunnels_open": b.stats.tunnels.open(),
        "max_in_flight": upstream.max_in_flight(b),
        "ewma_latency_ms": f64::from(b.stats.ewma_latency_us()) / 1000.0,
        "requests": b.stats.requests(),
        "failures": b.stats.failures(),
        "responses": {
            "1xx": b.stats.responses(1), "2xx": b.stats.responses(2), "3xx": b.stats.responses(3),
            "4xx": b.stats.responses(4), "5xx": b.stats.responses(5),
        },
        "ejections": b.state.ejections(),
        "checks": { "passed": b.state.checks_passed(), "failed": b.state.checks_failed() },
        "metadata": b.metadata.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    let mut response = text(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("valid header"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "error": message }))
}

/// An error answer saying what weir was `doing` and why it failed: the
/// error and its causes.
fn error_from(
    status: StatusCode,
    doing: &str,
    e: &(dyn std::error::Error + 'static),
) -> Response<ProxyBody> {
    error(status, &format!("{doing}: {}", crate::error::chain(e)))
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` escapes in a path segment (backend names may hold any
/// character).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[tokio::test]
    async fn an_error_answer_carries_its_causes() {
        let parse = serde_json::from_slice::<Patch>(b"{\"weight\": \"x\"}").unwrap_err();
        let response = error_from(StatusCode::BAD_REQUEST, "invalid change", &parse);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["error"], format!("invalid change: {parse}"));
        assert!(answer["error"].as_str().unwrap().contains("invalid type"));
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("10.0.0.1%3A80"), "10.0.0.1:80");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
