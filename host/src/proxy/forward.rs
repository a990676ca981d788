//! The forward phase: one attempt at one backend, timed, counted in
//! flight, and recorded for metrics, latency and outlier detection.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::grpc::{Deadline, attempt_timeout};
use super::refused::Refusal;
use super::request_body::BodyWatch;
use crate::error::chain;
use crate::upstream::{Backend, BackendBody, InFlight, Upstream, UpstreamBody};

/// A failed attempt: what to answer, and whether another backend may be
/// tried.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) why: &'static str,
    /// The request never produced an answer and may be sent again (a
    /// response timeout is not retried: the backend may still be working).
    pub(crate) retryable: bool,
    /// The client's request body failed, not the backend: answered with
    /// the body's refusal, never retried, not held against the backend.
    pub(crate) client: Option<Refusal>,
}

impl Failure {
    /// The attempt failed because the client's body did.
    fn client(refusal: Refusal) -> Failure {
        Failure {
            status: refusal.status(),
            why: refusal.why(),
            retryable: false,
            client: Some(refusal),
        }
    }
}

/// Sends `request` to `backend`, counting it in flight (the returned guard
/// keeps counting until the response body ends). Each failure is logged
/// here, once per attempt, with the backend and the whole error chain; a
/// failure while the client's body had failed (`body`) is the client's:
/// the send ended because its body did.
pub(crate) async fn forward(
    upstream: &Upstream,
    backend: &Arc<Backend>,
    request: Request<UpstreamBody>,
    body: &BodyWatch,
) -> Result<(Response<BackendBody>, InFlight), Failure> {
    let in_flight = backend.stats.start();
    let started = Instant::now();
    let deadline = request.extensions().get::<Deadline>().copied();
    let (timeout, client_deadline) = attempt_timeout(upstream.request_timeout(), deadline);
    // Boxed: unboxed, the send's state (over 2 KB) was copied whole into
    // the timeout, again into this future's, and a third time with the
    // request's future into its box (BENCHMARKS.md section 21).
    let sent = Box::pin(upstream.client().send(backend.addr, request));
    // The deadline from the clock read already made: one read fewer. The
    // timeout is at most `request_timeout_ms`, which config validation
    // bounds at a day, so the sum cannot overflow.
    let outcome = tokio::time::timeout_at(started + timeout, sent).await;
    if let (Err(_) | Ok(Err(_)), Some(refusal)) = (&outcome, body.fault()) {
        if let Ok(Err(error)) = &outcome {
            let status = refusal.status().as_u16();
            tracing::debug!(backend = backend.name, "{status}: {}", chain(error));
        }
        return Err(Failure::client(refusal));
    }
    match outcome {
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
            let (status, why) = (error.status(), error.reason());
            // The reason, then the hyper and io errors under it.
            let chain = chain(&error).to_string();
            upstream.observe(backend, Some(&|| chain.clone()));
            tracing::warn!(
                upstream = upstream.name(),
                backend = backend.name,
                addr = %backend.addr,
                "{}: {chain}",
                status.as_u16(),
            );
            Err(Failure {
                status,
                why,
                retryable: true,
                client: None,
            })
        }
        // The client's own deadline is not the backend's fault: not held
        // against it (a client could eject every backend with `1n`).
        Err(_) if client_deadline => {
            tracing::debug!(
                upstream = upstream.name(),
                backend = backend.name,
                ?timeout,
                "504: the gRPC call's grpc-timeout expired before the backend answered"
            );
            Err(Failure {
                status: StatusCode::GATEWAY_TIMEOUT,
                why: "the call's grpc-timeout expired before the backend answered",
                retryable: false,
                client: None,
            })
        }
        Err(_) => {
            backend.stats.record_failure();
            upstream.observe(backend, Some(&|| "no response in time".to_string()));
            tracing::warn!(
                upstream = upstream.name(),
                backend = backend.name,
                addr = %backend.addr,
                ?timeout,
                "504: backend did not answer in time"
            );
            Err(Failure {
                status: StatusCode::GATEWAY_TIMEOUT,
                why: "the backend did not answer in time",
                retryable: false,
                client: None,
            })
        }
    }
}
