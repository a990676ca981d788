//! A backend's side of a switched connection: after a `101` to an upgrade
//! request, the connection's stream, the bytes read past the head first.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::upstream::BackendStream;

/// The backend's side of a tunnel.
#[derive(Debug)]
pub struct BackendUpgrade {
    io: BackendStream,
    /// What the backend sent past the `101`'s head, read before `io`.
    pending: Bytes,
}

/// A `101` response's extension holding its [`BackendUpgrade`] until the
/// tunnel takes it.
#[derive(Debug, Clone)]
pub(crate) struct Switched(Arc<Mutex<Option<BackendUpgrade>>>);

impl Switched {
    pub(crate) fn new(io: BackendStream, pending: Bytes) -> Switched {
        Switched(Arc::new(Mutex::new(Some(BackendUpgrade { io, pending }))))
    }
}

/// The backend's side of the connection a `101` response switched, once;
/// none for any other response.
pub fn take_upgrade<B>(response: &mut http::Response<B>) -> Option<BackendUpgrade> {
    let switched = response.extensions_mut().remove::<Switched>()?;
    switched
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

impl AsyncRead for BackendUpgrade {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining());
            buf.put_slice(&self.pending[..n]);
            self.pending.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for BackendUpgrade {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        AsyncWrite::is_write_vectored(&self.io)
    }
}
