//! The client stream as HTTP sees it ([`Watched`]): it tells the
//! connection's [`Activity`] when bytes arrive, holds the listener slot,
//! and, on a connection that may hibernate, hands hyper only what
//! [`Framing`] allows, keeping the rest in a small stash, so that weir
//! knows when hyper's buffers are empty and can end hyper's connection
//! with a made-up EOF (see [`super::hibernate`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;
use super::framing::Framing;

/// Bytes read from the client that hyper may not have yet: allocated
/// only when a client pipelines (or for the bytes sniffed for the HTTP/2
/// preface), freed when drained.
#[derive(Debug, Default)]
struct Stash {
    bytes: Vec<u8>,
    /// How many of `bytes` are already handed over.
    taken: usize,
}

impl Stash {
    fn is_empty(&self) -> bool {
        self.taken == self.bytes.len()
    }

    fn pending(&self) -> &[u8] {
        &self.bytes[self.taken..]
    }

    fn take(&mut self, n: usize) {
        self.taken += n;
        if self.is_empty() {
            *self = Stash::default();
        }
    }

    /// Puts `bytes` before what is pending.
    fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut joined = Vec::with_capacity(bytes.len() + self.pending().len());
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(self.pending());
        *self = Stash {
            bytes: joined,
            taken: 0,
        };
    }
}

/// A client stream that tells its connection's [`Activity`] when bytes
/// arrive, and holds its listener slot (`max_connections`) for as long as
/// it lives: through HTTP, then through a tunnel if it is upgraded.
pub(crate) struct Watched<IO> {
    inner: IO,
    activity: Arc<Activity>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// What hyper may be handed; none: everything (a connection that
    /// never hibernates).
    framing: Option<Framing>,
    stash: Stash,
    /// Nothing written since a flush completed: hyper's write buffer is
    /// empty (hyper flushes the stream only once it has written it all).
    flushed: bool,
    /// hyper's connection was ended with a made-up EOF, to hibernate.
    hibernated: bool,
}

impl<IO> Watched<IO> {
    /// `inner`, watched for `activity`, holding `slot`.
    pub(crate) fn new(
        inner: IO,
        activity: Arc<Activity>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Watched<IO> {
        Watched {
            inner,
            activity,
            _slot: slot,
            framing: None,
            stash: Stash::default(),
            flushed: true,
            hibernated: false,
        }
    }

    /// The stream itself.
    pub(super) fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// The stream itself, to close it (see [`super::linger`]).
    pub(super) fn get_mut(&mut self) -> &mut IO {
        &mut self.inner
    }

    /// Hands hyper only what [`Framing`] allows from now on, so that the
    /// connection may hibernate. Before any byte is handed over.
    pub(super) fn frame(&mut self) {
        self.framing = Some(Framing::new());
    }

    /// Gives `bytes` (read from the client) back, to be read again first.
    pub(super) fn unread(&mut self, bytes: &[u8]) {
        self.stash.unread(bytes);
    }

    /// Whether hyper's connection was ended to hibernate: true once, then
    /// the stream reads on as before.
    pub(super) fn take_hibernated(&mut self) -> bool {
        std::mem::take(&mut self.hibernated)
    }

    /// Whether hyper holds nothing of the client's and has written all it
    /// had, between requests, and the stream under it holds nothing
    /// either: it may be ended now.
    fn may_hibernate(&mut self) -> bool
    where
        IO: 'static,
    {
        let Some(framing) = &mut self.framing else {
            return false;
        };
        framing.settle(|| self.activity.take_called());
        self.activity.hibernation_asked()
            && framing.is_clean()
            && self.stash.is_empty()
            && self.flushed
            && self.activity.is_idle()
            && super::hibernate::drained(&mut self.inner)
    }
}

impl<IO: AsyncRead + Unpin + 'static> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.hibernated {
            return Poll::Ready(Ok(()));
        }
        if this.may_hibernate() {
            this.activity.ask_to_hibernate(false);
            this.hibernated = true;
            return Poll::Ready(Ok(()));
        }
        if !this.stash.is_empty() {
            let pending = this.stash.pending();
            let n = pending.len().min(buf.remaining());
            let n = match &mut this.framing {
                Some(framing) => framing.admit(&pending[..n]),
                None => n,
            };
            buf.put_slice(&pending[..n]);
            this.stash.take(n);
            this.activity.received();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if let Some(framing) = &mut this.framing {
                let read = &buf.filled()[before..];
                let n = framing.admit(read);
                if n < read.len() {
                    this.stash.unread(&read[n..]);
                    buf.set_filled(before + n);
                }
            }
            this.activity.received();
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.flushed = false;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(poll, Poll::Ready(Ok(()))) {
            self.flushed = true;
        }
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.hibernated {
            // hyper closes what it took for the client's EOF: the stream
            // stays open, to be served again.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.flushed = false;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
