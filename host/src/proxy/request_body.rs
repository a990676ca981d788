//! The client's request body on its way to a backend: counted against the
//! route's `max_request_body_bytes`, timed against the listener's
//! `body_read_timeout_ms`, and its framing errors told apart from the
//! backend's. When the body fails, [`ClientBody`] records why in a
//! [`BodyFault`] the forward phase reads: a failed send whose request body
//! failed is the client's doing (400, 408, 413), never a 502, and the
//! backend is not blamed for it. The body's error aborts the upstream
//! client's request, which closes that backend connection instead of
//! returning it to the pool.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::refused::{Refusal, RefusedRequests};

/// Why a client's request body failed, once it has; shared by the body and
/// the forward phase. The default has no slot: for a request without a
/// body, which cannot fail (most requests: no allocation for them).
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyFault(Option<Arc<OnceLock<Refusal>>>);

impl BodyFault {
    /// The fault of a body that is `ended` already (no slot) or is still to
    /// come (a slot shared by every clone).
    pub(crate) fn for_body(ended: bool) -> BodyFault {
        BodyFault((!ended).then(Arc::default))
    }

    /// What went wrong with the body, if anything.
    pub(crate) fn get(&self) -> Option<Refusal> {
        self.0.as_deref()?.get().copied()
    }

    /// Records `refusal`; true if it is the body's first (a body without
    /// a slot cannot fail, and is told so each time if it did).
    fn set(&self, refusal: Refusal) -> bool {
        self.0
            .as_deref()
            .is_none_or(|slot| slot.set(refusal).is_ok())
    }
}

/// The error a failed client body ends the upstream request with.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {}", .refusal.why())]
pub(crate) struct ClientBodyError {
    refusal: Refusal,
    #[source]
    source: Option<hyper::Error>,
}

/// The body a route forwards: the client's, checked as it streams.
pub(crate) struct ClientBody {
    inner: Incoming,
    limit: Option<u64>,
    idle: Duration,
    /// Armed while the client keeps the body waiting; made the first time
    /// it does, so a request without a body (or one that never waits)
    /// allocates no timer.
    wait: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    seen: u64,
    fault: BodyFault,
    refused: Arc<RefusedRequests>,
}

impl ClientBody {
    /// `inner` with at most `limit` bytes and at most `idle` between its
    /// frames; failures are recorded in `fault` and counted in `refused`.
    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        idle: Duration,
        fault: BodyFault,
        refused: Arc<RefusedRequests>,
    ) -> ClientBody {
        ClientBody {
            inner,
            limit,
            idle,
            wait: None,
            waiting: false,
            seen: 0,
            fault,
            refused,
        }
    }

    fn fail(&mut self, refusal: Refusal, source: Option<hyper::Error>) -> ClientBodyError {
        // Only the first failure counts: the body ends with it.
        if self.fault.set(refusal) {
            self.refused.count(refusal);
            let cause = source.as_ref().map(|e| crate::error::chain(e).to_string());
            tracing::debug!(cause, "client request body failed: {}", refusal.why());
        }
        ClientBodyError { refusal, source }
    }
}

/// What a body error from the client's connection means.
fn classify(error: &hyper::Error) -> Refusal {
    // A connection closed mid-body (mid-chunk: an unexpected EOF), or an
    // HTTP/2 stream the client reset.
    let chain = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    });
    let ended = chain.into_iter().any(|e| {
        e.downcast_ref::<h2::Error>()
            .is_some_and(h2::Error::is_remote)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
    });
    if error.is_incomplete_message() || ended {
        Refusal::BodyIncomplete
    } else {
        Refusal::BadBody
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.limit.is_some_and(|limit| this.seen > limit) {
                        return Poll::Ready(Some(Err(this.fail(Refusal::BodyTooLarge, None))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let refusal = classify(&error);
                Poll::Ready(Some(Err(this.fail(refusal, Some(error)))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = || Instant::now() + this.idle;
                let wait = match &mut this.wait {
                    Some(wait) => {
                        if !this.waiting {
                            wait.as_mut().reset(deadline());
                        }
                        wait
                    }
                    None => this
                        .wait
                        .insert(Box::pin(tokio::time::sleep_until(deadline()))),
                };
                this.waiting = true;
                match wait.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(this.fail(Refusal::BodyTimeout, None))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
