//! Running a route's filter chain on a request, and the `on-response` hooks
//! of the filters it passed on the way back.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;

use super::ProxyBody;
use super::context::RequestCtx;
use super::error::ProxyError;
use crate::config::FilterFailure;
use crate::plugin::{CallError, FilterDecision, RequestView};
use crate::snapshot::{Route, Snapshot};
use crate::upstream::Upstream;

/// How a request left the chain.
enum Outcome {
    /// Every filter let it pass: on to the route's upstream.
    Pass,
    /// A filter sent it to another upstream.
    Reroute(Arc<Upstream>),
    /// A filter answered it.
    Answer(Response<ProxyBody>),
    /// A filter failed under `on_failure = "closed"`: answer 503.
    /// `quarantined`: the filter was not even called (its quarantine was
    /// logged once; the 503s it causes are not logged again one by one).
    Failed {
        /// Whether the failure was the pool's quarantine.
        quarantined: bool,
    },
}

/// The chain's result, and what the access log and the way back need.
struct ChainRun {
    outcome: Outcome,
    /// Indices of the filters passed that want `on-response`.
    responders: Vec<usize>,
    /// The filter that rerouted, answered or failed, if one did.
    decided_by: Option<Arc<str>>,
}

/// Runs `route`'s filters on `request` in order, applying each one's
/// changes before the next sees it. A filter's own answer to a `grpc`
/// request is made a gRPC answer.
fn run(snapshot: &Snapshot, route: &Route, request: &mut RequestView, grpc: bool) -> ChainRun {
    let mut responders = Vec::new();
    for (i, stage) in route.filters.iter().enumerate() {
        let name = || Some(stage.pool.plugin().name_arc());
        // A failed call (an unknown reroute target included) is counted
        // and logged by the pool.
        let decision = stage
            .pool
            .on_request(request, |name| snapshot.upstream(name).is_some());
        match decision {
            Ok(FilterDecision::Continue(changes)) => {
                changes.apply(request);
                if stage.pool.wants_response() {
                    responders.push(i);
                }
            }
            Ok(FilterDecision::Route { upstream, changes }) => {
                changes.apply(request);
                if stage.pool.wants_response() {
                    responders.push(i);
                }
                // The pool checked the target against this snapshot.
                if let Some(upstream) = snapshot.upstream(&upstream).cloned() {
                    return ChainRun {
                        outcome: Outcome::Reroute(upstream),
                        responders,
                        decided_by: name(),
                    };
                }
                if stage.on_failure == FilterFailure::Closed {
                    return ChainRun {
                        outcome: Outcome::Failed { quarantined: false },
                        responders,
                        decided_by: name(),
                    };
                }
            }
            Ok(FilterDecision::Respond {
                status,
                headers,
                body,
            }) => {
                let response = if grpc {
                    super::grpc::from_filter(status, headers, &body)
                } else {
                    let mut response = Response::new(super::full(body));
                    *response.status_mut() = status;
                    for (name, value) in headers {
                        response.headers_mut().append(name, value);
                    }
                    response
                };
                return ChainRun {
                    outcome: Outcome::Answer(response),
                    responders,
                    decided_by: name(),
                };
            }
            Err(error) => match stage.on_failure {
                FilterFailure::Open => continue,
                FilterFailure::Closed => {
                    let quarantined = matches!(error, CallError::Quarantined(_));
                    return ChainRun {
                        outcome: Outcome::Failed { quarantined },
                        responders,
                        decided_by: name(),
                    };
                }
            },
        }
    }
    ChainRun {
        outcome: Outcome::Pass,
        responders,
        decided_by: None,
    }
}

/// Runs the `on-response` hooks of the filters in `responders`, last first,
/// on a response's headers. A hook that fails changes nothing (logged by its
/// pool): the response is already on its way.
fn on_response(
    route: &Route,
    responders: &[usize],
    request: &mut RequestView,
    status: StatusCode,
    headers: &mut HeaderMap,
) {
    for &i in responders.iter().rev() {
        if let Ok(ops) = route.filters[i].pool.on_response(request, status, headers) {
            for op in &ops {
                op.apply(headers);
            }
        }
    }
}

/// The request-filter phase: runs the route's chain on the request and
/// settles the upstream (the route's, or a filter's reroute). A filter's
/// own answer comes back as `Some`, already through the `on-response`
/// hooks of the filters it passed and logged.
pub(crate) fn request_phase(
    ctx: &mut RequestCtx,
    route: &Route,
    parts: &mut Parts,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    ctx.upstream = Some(route.upstream.clone());
    if route.filters.is_empty() {
        return Ok(None);
    }
    let mut view = ctx.lend(parts);
    let chain = run(&ctx.snapshot, route, &mut view, ctx.grpc.is_some());
    RequestCtx::take_back(parts, view);
    ctx.responders = chain.responders;
    if let Some(log) = &mut ctx.log {
        log.filter = chain.decided_by.clone();
    }
    match chain.outcome {
        Outcome::Pass => Ok(None),
        Outcome::Reroute(to) => {
            ctx.upstream = Some(to);
            Ok(None)
        }
        Outcome::Answer(mut response) => {
            let status = response.status();
            if !ctx.responders.is_empty() {
                let mut view = ctx.lend(parts);
                on_response(
                    route,
                    &ctx.responders,
                    &mut view,
                    status,
                    response.headers_mut(),
                );
            }
            if let Some(mut log) = ctx.log.take() {
                log.status = status.as_u16();
                log.finish(response.body().size_hint().exact().unwrap_or(0));
            }
            Ok(Some(response))
        }
        Outcome::Failed { quarantined } => Err(ProxyError::FilterFailed {
            filter: chain.decided_by,
            quarantined,
        }),
    }
}

/// Keeps what the `on-response` hooks will see, when any filter wants
/// them: the request as the chain left it.
pub(crate) fn keep_for_responders(ctx: &mut RequestCtx, parts: &Parts) {
    if !ctx.responders.is_empty() {
        ctx.passed = Some(RequestView {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            client: ctx.conn.client,
            tls: ctx.conn.tls.clone(),
            response_headers: Vec::new(),
        });
    }
}

/// The response-filter phase: the `on-response` hooks of the filters the
/// request passed, on the backend's response head.
pub(crate) fn response_phase(ctx: &mut RequestCtx, status: StatusCode, headers: &mut HeaderMap) {
    if let (Some(route), Some(view)) = (&ctx.route, &mut ctx.passed) {
        on_response(route, &ctx.responders, view, status, headers);
    }
}
