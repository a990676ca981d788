//! Response bodies: the backend's body streamed through while its request is
//! still counted in flight, and weir's own short error bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use super::log::RequestLog;
use crate::upstream::{BackendBody, InFlight};

/// Body type of every response weir sends to clients.
pub type ProxyBody = BoxBody<Bytes, crate::upstream::BodyError>;

/// A backend's response body, streamed frame by frame; the request counts as
/// in flight until the body ends or is dropped, and its access log line is
/// written then, with the bytes sent.
pub(crate) struct TrackedBody {
    inner: BackendBody,
    guard: Option<InFlight>,
    log: Option<RequestLog>,
    bytes: u64,
}

impl TrackedBody {
    pub(crate) fn new(inner: BackendBody, guard: InFlight, log: Option<RequestLog>) -> Self {
        TrackedBody {
            inner,
            guard: Some(guard),
            log,
            bytes: 0,
        }
    }

    fn end(&mut self) {
        self.guard.take();
        if let Some(log) = self.log.take() {
            log.finish(self.bytes);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // The client went away, or the body was never read.
        self.end();
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::upstream::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.end(),
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A whole body in memory, as the body type weir sends and forwards.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A short plain-text response from weir itself: `STATUS Reason: message`.
pub(crate) fn plain(status: StatusCode, message: &str) -> Response<ProxyBody> {
    text(
        status,
        format!(
            "{} {}: {message}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    )
}

/// A plain-text response with `body`.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
