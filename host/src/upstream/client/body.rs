//! The body of a backend's response: hyper's, holding its HTTP/2 stream's
//! place on a shared connection until it ends or is dropped, or its
//! HTTP/1.1 connection until it ends (then back to the pool).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h2::Stream;
use super::http1::Lent;

/// A backend's response body, frame by frame (data, then trailers). On an
/// HTTP/2 upstream it counts as one of its connection's streams until it
/// ends, fails or is dropped, so the pool knows how full the connection is;
/// on HTTP/1.1 its connection goes back to the pool when it ends, and is
/// closed when it fails or is dropped before its end.
pub struct BackendBody {
    inner: Incoming,
    stream: Option<Stream>,
    lent: Option<Lent>,
}

impl BackendBody {
    /// An HTTP/1.1 body: its connection, if `lent` (kept alive), goes
    /// back to the pool when it ends; at once when it is empty.
    pub(super) fn http1(inner: Incoming, lent: Option<Lent>) -> BackendBody {
        let mut body = BackendBody {
            inner,
            stream: None,
            lent,
        };
        body.ended_if_at_end();
        body
    }

    /// Gives the HTTP/1.1 connection back when nothing is left to read.
    fn ended_if_at_end(&mut self) {
        if self.inner.is_end_stream()
            && let Some(lent) = self.lent.take()
        {
            lent.give_back();
        }
    }

    /// An HTTP/2 body, keeping `stream`'s place until it ends.
    pub(super) fn h2(inner: Incoming, stream: Stream) -> BackendBody {
        BackendBody {
            inner,
            stream: Some(stream),
            lent: None,
        }
    }
}

impl std::fmt::Debug for BackendBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendBody")
            .field("h2", &self.stream.is_some())
            .finish()
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Err(_))) => {
                // Failed mid-body: the connection is not given back.
                self.stream.take();
                self.lent.take();
            }
            Poll::Ready(None) => {
                self.stream.take();
                if let Some(lent) = self.lent.take() {
                    lent.give_back();
                }
            }
            Poll::Ready(Some(Ok(_))) => self.ended_if_at_end(),
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
