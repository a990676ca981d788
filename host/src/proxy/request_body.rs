//! The client's request body on its way to a backend: counted against the
//! route's `max_request_body_bytes`, timed against the listener's
//! `body_read_timeout_ms`, and its framing errors told apart from the
//! backend's. When the body fails, [`ClientBody`] records why in a
//! [`BodyWatch`] the forward phase reads: a failed send whose request body
//! failed is the client's doing (400, 408, 413), never a 502, and the
//! backend is not blamed for it. The body's error aborts the upstream
//! client's request, which closes that backend connection instead of
//! returning it to the pool. [`HeldBody`] holds the body until the forward
//! phase takes it and, after the answer, settles a body left unread:
//! thrown away to keep the connection, or the connection closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::refused::{Refusal, RefusedRequests};

/// What the phases know of a client's request body, shared with the
/// [`ClientBody`] that reads it: why it failed, once it has, and whether
/// it ended or was put down unread. The default has no slot: for a request
/// without a body, which can neither fail nor be left unread (most
/// requests: no allocation for them).
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyWatch(Option<Arc<Watched>>);

#[derive(Debug, Default)]
struct Watched {
    fault: OnceLock<Refusal>,
    /// [`UNREAD`], [`READING`] or [`ENDED`].
    state: AtomicU8,
}

/// Nothing reads the body (not yet, or no more) and it has not ended.
const UNREAD: u8 = 0;
/// A [`ClientBody`] holds it.
const READING: u8 = 1;
/// Its last frame was read.
const ENDED: u8 = 2;

impl BodyWatch {
    /// The watch of a body that is `ended` already (no slot) or is still
    /// to come (a slot shared by every clone).
    pub(crate) fn for_body(ended: bool) -> BodyWatch {
        BodyWatch((!ended).then(Arc::default))
    }

    /// What went wrong with the body, if anything.
    pub(crate) fn fault(&self) -> Option<Refusal> {
        self.0.as_deref()?.fault.get().copied()
    }

    /// Whether the body is left unread: it has not ended and nothing reads
    /// it any more (weir answered without it, it failed, or an HTTP/1.1
    /// backend answered before taking it all). Its connection cannot carry
    /// another request after the answer, and an HTTP/1.x client must be
    /// told so.
    pub(crate) fn left_unread(&self) -> bool {
        self.0
            .as_deref()
            .is_some_and(|slot| slot.state.load(Ordering::Acquire) == UNREAD)
    }

    /// Records `refusal`; true if it is the body's first (a body without
    /// a slot cannot fail, and is told so each time if it did).
    fn set(&self, refusal: Refusal) -> bool {
        self.0
            .as_deref()
            .is_none_or(|slot| slot.fault.set(refusal).is_ok())
    }

    /// Moves the body from `from` to `to`; an ended body stays ended.
    fn mark(&self, from: u8, to: u8) {
        if let Some(slot) = self.0.as_deref() {
            let _ = slot
                .state
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The longest body, by its `Content-Length`, that weir reads and throws
/// away after answering without it, to keep the connection (as nginx
/// discards a body it did not need); a longer one, or one of unknown
/// length, closes the connection instead.
pub(crate) const DISCARD_MAX: u64 = 64 << 10;

/// The client's request body while the request path holds it: unread until
/// the forward phase takes it, and settled after the answer, whoever gave
/// it (see [`HeldBody::settle`]).
pub(crate) struct HeldBody {
    body: Option<Incoming>,
    watch: BodyWatch,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
}

impl HeldBody {
    /// The body of a request whose headers are `headers` (looked at only
    /// when there is a body: most requests have none).
    pub(crate) fn new(body: Incoming, headers: &http::HeaderMap) -> HeldBody {
        let ended = body.is_end_stream();
        HeldBody {
            watch: BodyWatch::for_body(ended),
            expects_continue: !ended && headers.contains_key(http::header::EXPECT),
            body: Some(body),
        }
    }

    /// The request has no body still to come.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    /// Its declared length passes `max`.
    pub(crate) fn declared_over(&self, max: u64) -> bool {
        self.body
            .as_ref()
            .is_some_and(|b| b.size_hint().lower() > max)
    }

    /// What is known of the body, for the forward phase.
    pub(crate) fn watch(&self) -> &BodyWatch {
        &self.watch
    }

    /// The body to forward, checked as it streams (see [`ClientBody::new`]);
    /// none once taken.
    pub(crate) fn take(
        &mut self,
        limit: Option<u64>,
        idle: Duration,
        refused: &Arc<RefusedRequests>,
    ) -> Option<ClientBody> {
        let body = self.body.take()?;
        Some(ClientBody::new(
            body,
            limit,
            idle,
            self.watch.clone(),
            refused.clone(),
        ))
    }

    /// After the answer: true if the connection can carry the client's next
    /// request. A body read to its end, or none, leaves it so. A body never
    /// taken is read and thrown away in a task of its own, keeping the
    /// connection, when it is an HTTP/1.x body of a known length up to
    /// [`DISCARD_MAX`] whose client is not waiting for `100 Continue`
    /// (hyper would send that after the answer); otherwise it is dropped,
    /// and hyper closes the connection after the answer. So is a body taken
    /// and put down before its end: it failed, or an HTTP/1.1 backend
    /// answered before taking it all. A discarded body that stalls or
    /// breaks fails as a forwarded one would, and hyper closes then.
    pub(crate) fn settle(
        self,
        http1: bool,
        idle: Duration,
        refused: &Arc<RefusedRequests>,
    ) -> bool {
        let Some(body) = self.body else {
            return !self.watch.left_unread();
        };
        if body.is_end_stream() {
            return true;
        }
        let remaining = body.size_hint().exact();
        if !http1 || self.expects_continue || remaining.is_none_or(|n| n > DISCARD_MAX) {
            return false;
        }
        let mut discard = ClientBody::new(body, None, idle, self.watch, refused.clone());
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            while let Some(Ok(_)) = discard.frame().await {}
        });
        true
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
    watch: BodyWatch,
    refused: Arc<RefusedRequests>,
}

impl ClientBody {
    /// `inner` with at most `limit` bytes and at most `idle` between its
    /// frames; failures are recorded in `watch` and counted in `refused`,
    /// and `watch` knows it is read until it ends or is dropped.
    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        idle: Duration,
        watch: BodyWatch,
        refused: Arc<RefusedRequests>,
    ) -> ClientBody {
        watch.mark(UNREAD, READING);
        ClientBody {
            inner,
            limit,
            idle,
            wait: None,
            waiting: false,
            seen: 0,
            watch,
            refused,
        }
    }

    fn fail(&mut self, refusal: Refusal, source: Option<hyper::Error>) -> ClientBodyError {
        // Only the first failure counts: the body ends with it.
        if self.watch.set(refusal) {
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
                if this.inner.is_end_stream() {
                    this.watch.mark(READING, ENDED);
                }
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
            Poll::Ready(None) => {
                this.watch.mark(READING, ENDED);
                Poll::Ready(None)
            }
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

impl Drop for ClientBody {
    /// A body dropped before its end is put down unread.
    fn drop(&mut self) {
        self.watch.mark(READING, UNREAD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_left_unread_until_read_and_stays_ended_once_ended() {
        assert!(!BodyWatch::for_body(true).left_unread(), "no body");
        assert!(!BodyWatch::default().left_unread());
        let watch = BodyWatch::for_body(false);
        assert!(watch.left_unread(), "nothing reads it yet");
        watch.mark(UNREAD, READING);
        assert!(!watch.left_unread(), "a reader holds it");
        watch.mark(READING, UNREAD);
        assert!(watch.left_unread(), "put down before its end");
        watch.mark(UNREAD, READING);
        watch.mark(READING, ENDED);
        watch.mark(READING, UNREAD);
        assert!(!watch.left_unread(), "read to its end, then dropped");
    }

    #[test]
    fn only_the_first_fault_is_kept() {
        let watch = BodyWatch::for_body(false);
        assert_eq!(watch.fault(), None);
        assert!(watch.set(Refusal::BodyTooLarge));
        assert!(!watch.clone().set(Refusal::BodyTimeout));
        assert_eq!(watch.fault(), Some(Refusal::BodyTooLarge));
    }
}
