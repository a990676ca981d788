//! The choose phase: the upstream's policy picks a backend for this
//! attempt, and the prepare phase: the request head as the backend gets it.

use std::sync::Arc;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderName, HeaderValue, Request, Uri};

use super::context::RequestCtx;
use super::error::ProxyError;
use super::headers;
use crate::upstream::{Backend, BackendId, Choice, UpstreamBody};

/// What the choose phase settled for one attempt.
pub(crate) struct Chosen {
    pub(crate) backend: Arc<Backend>,
    /// Response headers the balancer asked for with this backend.
    pub(crate) response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Asks the upstream for a backend not in `tried`; the request is lent to
/// its policy and taken back.
pub(crate) fn choose(
    ctx: &mut RequestCtx,
    parts: &mut Parts,
    tried: &[BackendId],
) -> Result<Chosen, ProxyError> {
    let upstream = ctx.upstream().clone();
    let mut view = ctx.lend(parts);
    let choice = upstream.choose(&mut view, tried);
    // From this attempt's choice only: a retry chooses again.
    let response_headers = RequestCtx::take_back(parts, view);
    let (backend, chosen_by) = match choice {
        Choice::Backend(backend, by) => (backend, by),
        Choice::Unavailable(reason) => return Err(ProxyError::NoBackend(reason)),
        Choice::PluginFailed(error) => return Err(ProxyError::BalancerFailed(error)),
    };
    if let Some(log) = &mut ctx.log {
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
    Ok(Chosen {
        backend,
        response_headers,
    })
}

/// Points `parts` at `backend`, in the scheme and version its upstream's
/// client speaks, and adds the proxy headers.
pub(crate) fn prepare(
    ctx: &RequestCtx,
    mut parts: Parts,
    body: UpstreamBody,
    backend: &Backend,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let client = ctx.upstream().client();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let host = ctx.host.as_str();
    let h2 = client.protocol().is_h2();
    // HTTP/2 names the host in `:authority`, from the URI (the connection
    // goes to the backend regardless); HTTP/1.1 in `Host`, the URI's
    // authority being the backend's.
    // HTTP/1.1 sends the origin form, path and query only: the connection
    // (plain or TLS) is the client's choice, so the URI carries nothing else.
    parts.uri = if h2 {
        let authority = match host.map(Authority::try_from) {
            Some(Ok(authority)) => authority,
            _ => backend.authority.clone(),
        };
        Uri::builder()
            .scheme(client.scheme())
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(ProxyError::BadTarget)?
    } else {
        Uri::from(path_and_query)
    };
    parts.version = client.version();
    let trailers = h2 && headers::accepts_trailers(&parts.headers);
    headers::remove_hop_by_hop(&mut parts.headers);
    if h2 {
        parts.headers.remove(http::header::HOST);
        if trailers {
            // The one TE value HTTP/2 allows; gRPC servers require it.
            let te = HeaderValue::from_static("trailers");
            parts.headers.insert(http::header::TE, te);
        }
    } else if let Some(host) = host
        && !parts.headers.contains_key(http::header::HOST)
        && let Ok(value) = HeaderValue::from_str(host)
    {
        parts.headers.insert(http::header::HOST, value);
    }
    headers::set_forwarded(&mut parts.headers, &ctx.conn, host);
    if let Some(call) = &ctx.grpc {
        call.stamp(&mut parts, tokio::time::Instant::now());
    }
    Ok(Request::from_parts(parts, body))
}
