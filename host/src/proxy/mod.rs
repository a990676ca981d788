//! The request path: route, choose a backend, forward, retry on another
//! backend when one could not be reached, stream the answer, log it.

mod body;
mod filters;
mod headers;
mod log;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub use body::{ProxyBody, full, text};

use crate::access_log::AccessLog;
use crate::plugin::RequestView;
use crate::snapshot::Snapshot;
use crate::upstream::{Backend, BackendId, Choice, Upstream, UpstreamBody};
use body::{TrackedBody, plain};
use log::RequestLog;

/// What every request handler shares: the current snapshot and the access
/// log.
pub struct Shared {
    /// The snapshot new requests use.
    pub state: Arc<ArcSwap<Snapshot>>,
    /// Where request lines go, if anywhere.
    pub access_log: Option<Arc<AccessLog>>,
}

/// Handles one client request against the current snapshot.
pub async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // Hold the snapshot for the whole request: a reload swaps in a new one
    // for later requests while this one finishes on what it started with.
    let snapshot = shared.state.load_full();
    let (mut parts, body) = request.into_parts();
    let host = request_host(&parts).map(str::to_string);
    let mut log = shared.access_log.as_ref().map(|access| {
        RequestLog::start(
            access.clone(),
            started,
            client,
            &parts.method,
            host.as_deref(),
            parts.uri.path(),
        )
    });

    let Some(route) = snapshot.route(host.as_deref(), parts.uri.path()).cloned() else {
        tracing::debug!(host, path = parts.uri.path(), "no route");
        return local(
            &mut log,
            StatusCode::NOT_FOUND,
            "no route matches this request",
        );
    };
    let mut upstream = route.upstream.clone();
    let mut responders = Vec::new();
    if !route.filters.is_empty() {
        let mut view = lend(&mut parts, client);
        let chain = filters::run(&snapshot, &route, &mut view);
        take_back(&mut parts, view);
        responders = chain.responders;
        if let Some(log) = &mut log {
            log.filter = chain.decided_by.clone();
        }
        match chain.outcome {
            filters::Outcome::Pass => {}
            filters::Outcome::Reroute(to) => upstream = to,
            filters::Outcome::Answer(mut response) => {
                let status = response.status();
                if !responders.is_empty() {
                    let mut view = lend(&mut parts, client);
                    filters::on_response(
                        &route,
                        &responders,
                        &mut view,
                        status,
                        response.headers_mut(),
                    );
                }
                if let Some(mut log) = log.take() {
                    log.status = status.as_u16();
                    log.finish(response.body().size_hint().exact().unwrap_or(0));
                }
                return response;
            }
            filters::Outcome::Failed { quarantined } => {
                let filter = chain.decided_by.as_deref().unwrap_or("?");
                if quarantined {
                    tracing::debug!(route = route.name, filter, "503: filter quarantined");
                } else {
                    tracing::warn!(
                        route = route.name,
                        filter,
                        "503: filter failed and its on_failure is \"closed\""
                    );
                }
                return local(
                    &mut log,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a request filter failed",
                );
            }
        }
    }
    if let Some(log) = &mut log {
        log.upstream = Some(upstream.clone());
    }
    // What `on-response` hooks will see: the request as the chain left it.
    let mut passed = (!responders.is_empty()).then(|| RequestView {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        client,
        response_headers: Vec::new(),
    });

    // Only requests that can be sent again unchanged are retried: an
    // idempotent method and no body.
    let retries = upstream.retries();
    let retryable = retries > 0 && is_idempotent(&parts.method) && body.is_end_stream();
    if retries > 0 {
        upstream.stats().budget.deposit();
    }
    let template = retryable.then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    let mut body = Some(body);
    let mut tried: Vec<BackendId> = Vec::new();
    loop {
        let mut view = lend(&mut parts, client);
        let choice = upstream.choose(&mut view, &tried);
        // From this attempt's choice only: a retry chooses again.
        let added_headers = take_back(&mut parts, view);

        let (backend, chosen_by) = match choice {
            Choice::Backend(backend, by) => (backend, by),
            Choice::Unavailable(reason) => {
                tracing::warn!(upstream = upstream.name(), "503: {reason}");
                return local(&mut log, StatusCode::SERVICE_UNAVAILABLE, reason);
            }
            Choice::PluginFailed(error) => {
                // A quarantine was logged once when it began.
                if error.is_quarantined() {
                    tracing::debug!(upstream = upstream.name(), "503: {error}");
                } else {
                    tracing::warn!(
                        upstream = upstream.name(),
                        "503: balancer plugin failed and on_failure = \"fail\": {error}"
                    );
                }
                return local(
                    &mut log,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the balancer plugin failed",
                );
            }
        };
        if let Some(log) = &mut log {
            log.backend = Some(backend.clone());
            log.chosen_by = Some(chosen_by);
            log.attempts += 1;
        }
        tracing::trace!(
            upstream = upstream.name(),
            backend = backend.name,
            chosen_by = chosen_by.as_str(),
            "chosen"
        );

        let next = template.as_ref().map(|(method, uri, headers)| {
            let mut next = Request::new(()).into_parts().0;
            next.method = method.clone();
            next.uri = uri.clone();
            next.headers = headers.clone();
            next
        });
        let request_body = match body.take() {
            Some(body) if !retryable => body.boxed(),
            _ => full(Bytes::new()),
        };
        let request = match prepare(parts, request_body, &backend, host.as_deref(), client) {
            Ok(request) => request,
            Err(why) => return local(&mut log, StatusCode::BAD_REQUEST, &why),
        };
        match forward(&upstream, &backend, request).await {
            Ok((response, in_flight)) => {
                let (mut head, body) = response.into_parts();
                headers::remove_hop_by_hop(&mut head.headers);
                for (name, value) in added_headers {
                    head.headers.append(name, value);
                }
                if let Some(view) = &mut passed {
                    filters::on_response(&route, &responders, view, head.status, &mut head.headers);
                }
                if let Some(log) = &mut log {
                    log.status = head.status.as_u16();
                }
                let body = TrackedBody::new(body, in_flight, log.take()).boxed();
                return Response::from_parts(head, body);
            }
            Err(failure) => {
                let again = tried.len() < retries as usize
                    && failure.retryable
                    && next.is_some()
                    && upstream.backends().eligible().len() > tried.len() + 1;
                if again && upstream.stats().budget.withdraw(Instant::now()) {
                    upstream.stats().retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        upstream = upstream.name(),
                        backend = backend.name,
                        "retrying on another backend: {}",
                        failure.why
                    );
                    tried.push(backend.id);
                    parts = next.expect("checked above");
                    continue;
                }
                if again {
                    upstream
                        .stats()
                        .retries_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        upstream = upstream.name(),
                        "not retrying: the retry budget is spent"
                    );
                }
                return local(&mut log, failure.status, failure.why);
            }
        }
    }
}

/// Moves the request's method, URI and headers into a view for a plugin
/// call (moved, not copied; see [`take_back`]).
fn lend(parts: &mut http::request::Parts, client: SocketAddr) -> RequestView {
    RequestView {
        method: std::mem::take(&mut parts.method),
        uri: std::mem::take(&mut parts.uri),
        headers: std::mem::take(&mut parts.headers),
        client,
        response_headers: Vec::new(),
    }
}

/// Moves a lent view's request back; returns the response headers the
/// balancer asked for.
fn take_back(
    parts: &mut http::request::Parts,
    view: RequestView,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    parts.method = view.method;
    parts.uri = view.uri;
    parts.headers = view.headers;
    view.response_headers
}

/// A failed attempt: what to answer, and whether another backend may be
/// tried.
struct Failure {
    status: StatusCode,
    why: &'static str,
    /// The request never produced an answer and may be sent again (a
    /// response timeout is not retried: the backend may still be working).
    retryable: bool,
}

/// Points `parts` at `backend` and adds the proxy headers.
fn prepare(
    mut parts: http::request::Parts,
    body: UpstreamBody,
    backend: &Backend,
    host: Option<&str>,
    client: SocketAddr,
) -> Result<Request<UpstreamBody>, String> {
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(backend.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| format!("bad request target: {e}"))?;
    parts.version = Version::HTTP_11;
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(host) = host
        && !parts.headers.contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(host)
    {
        parts.headers.insert(http::header::HOST, value);
    }
    headers::set_forwarded(&mut parts.headers, client, host);
    Ok(Request::from_parts(parts, body))
}

/// Sends `request` to `backend`, counting it in flight (the returned guard
/// keeps counting until the response body ends) and recording the outcome
/// for metrics, latency and outlier detection.
async fn forward(
    upstream: &Upstream,
    backend: &Arc<Backend>,
    request: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, crate::upstream::InFlight), Failure> {
    let in_flight = backend.stats.start();
    let started = Instant::now();
    let sent = upstream.client().request(request);
    match tokio::time::timeout(upstream.request_timeout(), sent).await {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            backend.stats.record_response(status, started.elapsed());
            if status >= 500 {
                upstream.observe(backend, Some(&|| format!("status {status}")));
            } else {
                upstream.observe(backend, None);
            }
            Ok((response, in_flight))
        }
        Ok(Err(error)) => {
            backend.stats.record_failure();
            let (status, why) = classify(&error);
            let chain = error_chain(&error);
            upstream.observe(backend, Some(&|| format!("{why}: {chain}")));
            tracing::warn!(
                upstream = upstream.name(),
                backend = backend.name,
                addr = %backend.addr,
                "{}: {why}: {chain}",
                status.as_u16(),
            );
            Err(Failure {
                status,
                why,
                retryable: true,
            })
        }
        Err(_) => {
            backend.stats.record_failure();
            upstream.observe(backend, Some(&|| "no response in time".to_string()));
            tracing::warn!(
                upstream = upstream.name(),
                backend = backend.name,
                addr = %backend.addr,
                timeout = ?upstream.request_timeout(),
                "504: backend did not answer in time"
            );
            Err(Failure {
                status: StatusCode::GATEWAY_TIMEOUT,
                why: "the backend did not answer in time",
                retryable: false,
            })
        }
    }
}

/// weir's own answer, logged.
fn local(log: &mut Option<RequestLog>, status: StatusCode, why: &str) -> Response<ProxyBody> {
    let response = plain(status, why);
    if let Some(mut log) = log.take() {
        log.status = status.as_u16();
        log.finish(response.body().size_hint().exact().unwrap_or(0));
    }
    response
}

/// Methods RFC 9110 defines as idempotent: safe to send twice.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The host the client asked for: `:authority` (HTTP/2, absolute-form) or
/// the `Host` header.
fn request_host(parts: &http::request::Parts) -> Option<&str> {
    parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Status and client-facing reason for a failed backend request.
fn classify(error: &hyper_util::client::legacy::Error) -> (StatusCode, &'static str) {
    let timed_out = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    if timed_out {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "connecting to the backend timed out",
        )
    } else if error.is_connect() {
        (StatusCode::BAD_GATEWAY, "could not connect to the backend")
    } else {
        (StatusCode::BAD_GATEWAY, "the backend connection failed")
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
