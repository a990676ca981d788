//! weir's own answers: every way the proxy can refuse or fail a request,
//! turned into a response, a log line and an access-log line in one place
//! ([`ProxyError::answer`]).

use http::{Response, StatusCode};
use http_body::Body;

use super::ProxyBody;
use super::body::plain;
use super::context::RequestCtx;
use crate::policy::PolicyError;

/// Why weir answered a request itself.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// The request's head breaks HTTP's host rules (400).
    Refused(super::refused::Refusal),
    /// No route matches the host and path (404).
    NoRoute,
    /// A filter failed under `on_failure = "closed"` (503).
    FilterFailed {
        /// The filter's plugin.
        filter: Option<std::sync::Arc<str>>,
        /// The filter was not even called: its quarantine was logged once.
        quarantined: bool,
    },
    /// No backend can take the request; says why (503).
    NoBackend(&'static str),
    /// The balancer plugin failed and the upstream's policy is `fail` (503).
    BalancerFailed(PolicyError),
    /// The request's target cannot be sent to a backend (400).
    BadTarget(http::Error),
    /// The client's request body broke a limit or its framing (400, 408,
    /// 413); counted when it failed.
    ClientBody(super::refused::Refusal),
    /// The route sends plain-HTTP requests to HTTPS: 308 to this
    /// `Location`.
    RedirectHttps(http::HeaderValue),
    /// The backend could not be reached or did not answer, on every attempt
    /// made (502, 504). Each attempt was logged when it failed.
    Backend {
        /// What to answer.
        status: StatusCode,
        /// The client-facing reason.
        why: &'static str,
    },
}

impl ProxyError {
    /// The status weir answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::FilterFailed { .. }
            | ProxyError::NoBackend(_)
            | ProxyError::BalancerFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadTarget(_) => StatusCode::BAD_REQUEST,
            ProxyError::Refused(refusal) | ProxyError::ClientBody(refusal) => refusal.status(),
            ProxyError::RedirectHttps(_) => StatusCode::PERMANENT_REDIRECT,
            ProxyError::Backend { status, .. } => *status,
        }
    }

    /// Logs why, and answers: the response and its access-log line.
    pub(crate) fn answer(self, ctx: &mut RequestCtx) -> Response<ProxyBody> {
        self.log(ctx);
        let status = self.status();
        if ctx.grpc.is_some() {
            return self.answer_grpc(ctx);
        }
        let mut response = match &self {
            ProxyError::Refused(refusal) | ProxyError::ClientBody(refusal) => {
                plain(status, refusal.why())
            }
            ProxyError::RedirectHttps(_) => plain(status, "use https"),
            ProxyError::NoRoute => plain(status, "no route matches this request"),
            ProxyError::FilterFailed { .. } => plain(status, "a request filter failed"),
            ProxyError::NoBackend(why) | ProxyError::Backend { why, .. } => plain(status, why),
            ProxyError::BalancerFailed(_) => plain(status, "the balancer plugin failed"),
            ProxyError::BadTarget(error) => plain(status, &format!("bad request target: {error}")),
        };
        if let ProxyError::RedirectHttps(location) = self {
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
        }
        if let Some(mut log) = ctx.log.take() {
            log.status = status.as_u16();
            log.finish(response.body().size_hint().exact().unwrap_or(0));
        }
        response
    }

    /// The answer to a gRPC request: trailers-only, its `grpc-status`
    /// mapped from the HTTP status weir meant, which the access log keeps.
    fn answer_grpc(self, ctx: &mut RequestCtx) -> Response<ProxyBody> {
        let status = self.status();
        let message = match &self {
            ProxyError::Refused(refusal) | ProxyError::ClientBody(refusal) => refusal.why(),
            ProxyError::RedirectHttps(_) => "this route is served over https only",
            ProxyError::NoRoute => "no route matches this request",
            ProxyError::FilterFailed { .. } => "a request filter failed",
            ProxyError::NoBackend(why) | ProxyError::Backend { why, .. } => why,
            ProxyError::BalancerFailed(_) => "the balancer plugin failed",
            ProxyError::BadTarget(_) => "bad request target",
        };
        let response = super::grpc::answer(super::grpc::code_of(status), message);
        if let Some(mut log) = ctx.log.take() {
            log.status = status.as_u16();
            log.finish(0);
        }
        response
    }

    /// The operator's log line. A quarantine was logged once when it began,
    /// so the refusals it causes are only debug lines.
    fn log(&self, ctx: &RequestCtx) {
        let route = ctx.route.as_ref().map(|r| r.name.as_str());
        let upstream = ctx.upstream.as_ref().map(|u| u.name());
        match self {
            ProxyError::Refused(refusal) | ProxyError::ClientBody(refusal) => {
                let status = refusal.status().as_u16();
                tracing::debug!(client = %ctx.conn.client, route, "{status}: {}", refusal.why());
            }
            ProxyError::RedirectHttps(location) => {
                tracing::trace!(route, ?location, "308 to https");
            }
            ProxyError::NoRoute => {
                tracing::debug!(host = ctx.host.as_str(), "no route");
            }
            ProxyError::FilterFailed {
                filter,
                quarantined,
            } => {
                let filter = filter.as_deref().unwrap_or("?");
                if *quarantined {
                    tracing::debug!(route, filter, "503: filter quarantined");
                } else {
                    tracing::warn!(
                        route,
                        filter,
                        "503: filter failed and its on_failure is \"closed\""
                    );
                }
            }
            ProxyError::NoBackend(reason) => tracing::warn!(upstream, "503: {reason}"),
            ProxyError::BalancerFailed(error) => {
                let why = crate::error::chain(error);
                if error.is_quarantined() {
                    tracing::debug!(upstream, "503: {why}");
                } else {
                    tracing::warn!(
                        upstream,
                        "503: balancer plugin failed and on_failure = \"fail\": {why}"
                    );
                }
            }
            ProxyError::BadTarget(error) => {
                let why = crate::error::chain(error);
                tracing::debug!(upstream, "400: bad request target: {why}");
            }
            ProxyError::Backend { status, why } => {
                tracing::debug!(upstream, "{}: {why}", status.as_u16());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status() {
        assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ProxyError::NoBackend("no healthy backend").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let bad = http::Uri::builder().authority("a b").build().unwrap_err();
        assert_eq!(ProxyError::BadTarget(bad).status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ProxyError::Backend {
                status: StatusCode::GATEWAY_TIMEOUT,
                why: "x"
            }
            .status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
