//! The body of a backend's response: hyper's, holding its HTTP/2 stream's
//! place on a shared connection until it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h2::Stream;

/// A backend's response body, frame by frame (data, then trailers). On an
/// HTTP/2 upstream it counts as one of its connection's streams until it
/// ends, fails or is dropped, so the pool knows how full the connection is.
pub struct BackendBody {
    inner: Incoming,
    stream: Option<Stream>,
}

impl BackendBody {
    /// An HTTP/1.1 body: its connection goes back to the pool when it ends.
    pub(super) fn http1(inner: Incoming) -> BackendBody {
        BackendBody {
            inner,
            stream: None,
        }
    }

    /// An HTTP/2 body, keeping `stream`'s place until it ends.
    pub(super) fn h2(inner: Incoming, stream: Stream) -> BackendBody {
        BackendBody {
            inner,
            stream: Some(stream),
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
        if let Poll::Ready(None | Some(Err(_))) = poll {
            self.stream.take();
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
