//! The body of a backend's response: on HTTP/2 hyper's, holding its
//! stream's place on a shared connection until it ends or is dropped; on
//! HTTP/1.1 weir's own codec's, holding its connection until it ends (then
//! back to the pool).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::H1Body;
use super::h2::Stream;

/// Why a backend's response body failed: hyper's error (HTTP/2), or the
/// HTTP/1.1 codec's ([`super::h1::H1BodyError`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A backend's response body, frame by frame (data, then trailers). On an
/// HTTP/2 upstream it counts as one of its connection's streams until it
/// ends, fails or is dropped, so the pool knows how full the connection is;
/// on HTTP/1.1 its connection goes back to the pool when it ends, and is
/// closed when it fails or is dropped before its end.
pub struct BackendBody {
    inner: Inner,
}

enum Inner {
    H2 {
        body: Incoming,
        stream: Option<Stream>,
    },
    H1(H1Body),
    Empty,
}

impl BackendBody {
    /// An HTTP/1.1 body.
    pub(super) fn h1(body: H1Body) -> BackendBody {
        BackendBody {
            inner: Inner::H1(body),
        }
    }

    /// No body (a `101`).
    pub(super) fn empty() -> BackendBody {
        BackendBody {
            inner: Inner::Empty,
        }
    }

    /// An HTTP/2 body, keeping `stream`'s place until it ends.
    pub(super) fn h2(body: Incoming, stream: Stream) -> BackendBody {
        BackendBody {
            inner: Inner::H2 {
                body,
                stream: Some(stream),
            },
        }
    }
}

impl std::fmt::Debug for BackendBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendBody")
            .field("h2", &matches!(self.inner, Inner::H2 { .. }))
            .finish()
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.inner {
            Inner::H1(body) => body.poll_frame(cx).map_err(Into::into),
            Inner::Empty => Poll::Ready(None),
            Inner::H2 { body, stream } => {
                let poll = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None | Some(Err(_))) = &poll {
                    stream.take();
                }
                poll.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(body) => body.is_end_stream(),
            Inner::Empty => true,
            Inner::H2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(body) => body.size_hint(),
            Inner::Empty => SizeHint::with_exact(0),
            Inner::H2 { body, .. } => body.size_hint(),
        }
    }
}
