//! The request path, in phases over a per-request context
//! ([`context::RequestCtx`]): route, request filters, choose, prepare,
//! forward (retrying on another backend when one could not be reached),
//! response filters, finish. Every answer weir gives itself is a
//! [`error::ProxyError`], turned into a response and an access-log line in
//! one place.

mod body;
mod choose;
mod context;
mod error;
mod filters;
mod forward;
mod grpc;
mod headers;
mod log;
mod redirect;
mod refused;
mod request_body;
mod request_host;
mod retry;
mod tunnel;
mod upgrade;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub use body::{ProxyBody, full, text};
pub use grpc::{
    answers_by_code as grpc_answers_by_code, malformed_timeouts as grpc_malformed_timeouts,
};
pub use refused::{Refusal, RefusedRequests};
pub use tunnel::Tunnels;

use crate::access_log::AccessLog;
use crate::connection::ConnectionInfo;
use crate::snapshot::Snapshot;
use crate::upstream::InFlight;
use body::TrackedBody;
use choose::{Chosen, choose, prepare};
use context::RequestCtx;
use error::ProxyError;
use forward::forward;
use request_body::HeldBody;
use retry::Retries;

/// What every request handler shares: the current snapshot and the access
/// log.
pub struct Shared {
    /// The snapshot new requests use.
    pub state: Arc<ArcSwap<Snapshot>>,
    /// Where request lines go, if anywhere.
    pub access_log: Option<Arc<AccessLog>>,
    /// Requests refused, by reason.
    pub refused: Arc<RefusedRequests>,
    /// The listener's `body_read_timeout_ms`.
    pub body_read_timeout: std::time::Duration,
    /// The server's open tunnels (upgraded connections).
    pub tunnels: Arc<Tunnels>,
}

/// Handles one client request on `conn` against the current snapshot.
///
/// The future is several kilobytes (every phase's state, the upstream
/// send's included); a caller that hands it to hyper should box it once
/// (see `server.rs`), so it is not copied whole at every hand-over.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    conn: Arc<ConnectionInfo>,
) -> Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let mut ctx = RequestCtx::new(&shared, &parts, conn);
    let mut body = HeldBody::new(body, &parts.headers);
    let mut upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let phases = proxy(&shared, &mut ctx, &mut parts, &mut body, &mut upgrade);
    let mut response = match phases.await {
        Ok(response) => response,
        Err(error) => error.answer(&mut ctx),
    };
    if let Some(pending) = upgrade {
        upgrade::unclaimed(pending);
    }
    // One place for every answer, whoever gave it (weir, a filter, a
    // backend that answered early): a body left unread ends the
    // connection after it, and an HTTP/1.x client is told.
    let idle = ctx.body_read_timeout;
    if !body.settle(ctx.http1, idle, &ctx.refused) && ctx.http1 {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The phases, in order; each returns weir's own answer as an error.
async fn proxy(
    shared: &Shared,
    ctx: &mut RequestCtx,
    parts: &mut Parts,
    body: &mut HeldBody,
    upgrade: &mut Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Err(refusal) = refused::check_host(parts) {
        ctx.refused.count(refusal);
        return Err(ProxyError::Refused(refusal));
    }
    let route = ctx
        .snapshot
        .route(ctx.host.as_str(), parts.uri.path())
        .cloned()
        .ok_or(ProxyError::NoRoute)?;
    ctx.route = Some(route.clone());
    if let Some(port) = route.limits.redirect_https
        && ctx.conn.scheme() == http::uri::Scheme::HTTP
    {
        return Err(redirect::to_https(ctx, parts, port)?);
    }
    let max_body = route.limits.max_request_body_bytes;
    if max_body.is_some_and(|max| body.declared_over(max)) {
        ctx.refused.count(Refusal::BodyTooLarge);
        return Err(ProxyError::ClientBody(Refusal::BodyTooLarge));
    }
    if let Some(answer) = filters::request_phase(ctx, &route, parts)? {
        return Ok(answer);
    }
    let upstream = ctx.upstream().clone();
    if let Some(log) = &mut ctx.log {
        log.upstream = Some(upstream.clone());
    }
    filters::keep_for_responders(ctx, parts);
    if let Some(offer) = upgrade::requested(parts) {
        let with_body = !body.is_end_stream();
        return upgrade::open(ctx, &shared.tunnels, parts, with_body, offer, upgrade).await;
    }
    let mut retries = Retries::plan(&upstream, &parts.method, body.is_end_stream());
    let watch = body.watch().clone();
    let mut body = body.take(max_body, ctx.body_read_timeout, &ctx.refused);
    loop {
        let chosen = choose(ctx, parts, &retries.tried)?;
        let next = retries.copy(&upstream, parts);
        let head = std::mem::replace(parts, empty_head());
        let request = prepare(ctx, head, retries.body(&mut body), &chosen.backend)?;
        match forward(&upstream, &chosen.backend, request, &watch).await {
            Ok((response, _)) if response.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                let what = "a request that did not ask to upgrade";
                return Err(upgrade::bad_switch(&upstream, &chosen.backend, what));
            }
            Ok((response, in_flight)) => return Ok(finish(ctx, response, in_flight, chosen)),
            Err(failure) => *parts = retries.again(&upstream, &chosen.backend, failure, next)?,
        }
    }
}

/// The response-filter and finish phases: the backend's head cleaned of
/// hop-by-hop headers, given the balancer's headers and the filters'
/// `on-response` changes; its body streamed, counted in flight until it
/// ends, when the access-log line is written.
fn finish(
    ctx: &mut RequestCtx,
    response: Response<crate::upstream::BackendBody>,
    in_flight: InFlight,
    chosen: Chosen,
) -> Response<ProxyBody> {
    let (mut head, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut head.headers);
    for (name, value) in chosen.response_headers {
        head.headers.append(name, value);
    }
    filters::response_phase(ctx, head.status, &mut head.headers);
    if let Some(log) = &mut ctx.log {
        log.status = head.status.as_u16();
    }
    let body = TrackedBody::new(body, in_flight, ctx.log.take()).boxed();
    Response::from_parts(head, body)
}

/// A request head with nothing in it: what is left where one was moved out.
fn empty_head() -> Parts {
    Request::new(()).into_parts().0
}
