//! The request path: route, choose a backend, forward, stream the answer.

mod body;
mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub use body::ProxyBody;

use crate::plugin::RequestView;
use crate::snapshot::Snapshot;
use crate::upstream::{Backend, Choice, ChosenBy, Upstream};
use body::{TrackedBody, plain};

/// Handles one client request against the current snapshot.
pub async fn handle(
    state: &ArcSwap<Snapshot>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<ProxyBody> {
    // Hold the snapshot for the whole request: a reload swaps in a new one
    // for later requests while this one finishes on what it started with.
    let snapshot = state.load_full();
    let (mut parts, body) = request.into_parts();
    let host = request_host(&parts).map(str::to_string);

    let Some(upstream) = snapshot.route(host.as_deref(), parts.uri.path()) else {
        tracing::debug!(host, path = parts.uri.path(), "no route");
        return plain(StatusCode::NOT_FOUND, "no route matches this request");
    };

    let mut view = RequestView {
        method: std::mem::take(&mut parts.method),
        uri: std::mem::take(&mut parts.uri),
        headers: std::mem::take(&mut parts.headers),
        client,
    };
    let choice = upstream.choose(&mut view);
    parts.method = view.method;
    parts.uri = view.uri;
    parts.headers = view.headers;

    let (backend, chosen_by) = match choice {
        Choice::Backend(backend, by) => (backend, by),
        Choice::Unavailable(reason) => {
            tracing::warn!(upstream = upstream.name(), "503: {reason}");
            return plain(StatusCode::SERVICE_UNAVAILABLE, reason);
        }
        Choice::PluginFailed(error) => {
            tracing::warn!(
                upstream = upstream.name(),
                "503: balancer plugin failed and on_failure = \"fail\": {error}"
            );
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the balancer plugin failed",
            );
        }
    };

    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = match Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(backend.authority.clone())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad request target: {e}")),
    };
    parts.version = Version::HTTP_11;
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(host) = &host
        && !parts.headers.contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(host)
    {
        parts.headers.insert(http::header::HOST, value);
    }
    headers::set_forwarded(&mut parts.headers, client, host.as_deref());

    forward(
        &upstream,
        &backend,
        chosen_by,
        Request::from_parts(parts, body.boxed()),
    )
    .await
}

async fn forward(
    upstream: &Upstream,
    backend: &Arc<Backend>,
    chosen_by: ChosenBy,
    request: Request<crate::upstream::UpstreamBody>,
) -> Response<ProxyBody> {
    let in_flight = backend.stats.start();
    let started = Instant::now();
    let sent = upstream.client().request(request);
    let outcome = tokio::time::timeout(upstream.request_timeout(), sent).await;
    let fields = (upstream.name(), backend.name.as_str(), chosen_by.as_str());
    match outcome {
        Ok(Ok(response)) => {
            backend.stats.record_success(started.elapsed());
            tracing::debug!(
                upstream = fields.0,
                backend = fields.1,
                chosen_by = fields.2,
                status = response.status().as_u16(),
                "proxied"
            );
            let (mut parts, body) = response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, TrackedBody::new(body, in_flight).boxed())
        }
        Ok(Err(error)) => {
            backend.stats.record_failure();
            let (status, why) = classify(&error);
            tracing::warn!(
                upstream = fields.0,
                backend = fields.1,
                addr = %backend.addr,
                chosen_by = fields.2,
                "{}: {why}: {}",
                status.as_u16(),
                error_chain(&error)
            );
            plain(status, why)
        }
        Err(_) => {
            backend.stats.record_failure();
            tracing::warn!(
                upstream = fields.0,
                backend = fields.1,
                addr = %backend.addr,
                chosen_by = fields.2,
                timeout = ?upstream.request_timeout(),
                "504: backend did not answer in time"
            );
            plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the backend did not answer in time",
            )
        }
    }
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
