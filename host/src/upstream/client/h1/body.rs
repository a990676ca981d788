//! A response body read off its connection by whoever polls it: data
//! frames split from the connection's buffer without a copy, the
//! connection back in the pool at a clean end (when both sides keep it
//! and nothing followed the body), closed when the body fails, is dropped
//! early or ran to the close.

use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::Home;
use super::chunked::{Chunked, Step};
use super::conn::Conn;
use super::parse::{Framing, Malformed};

/// What is left of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// Why a body failed.
#[derive(Debug, thiserror::Error)]
pub enum H1BodyError {
    /// The framing was broken or the connection closed early.
    #[error("the backend's response body was refused")]
    Malformed(#[source] Malformed),
    /// Reading the connection failed.
    #[error("reading the backend's response body failed")]
    Io(#[source] std::io::Error),
}

/// An HTTP/1.1 response body over its connection.
pub(crate) struct H1Body {
    conn: Option<Conn>,
    left: Left,
    /// Where the connection goes back to at a clean end, and where its
    /// refusals are counted.
    home: Home,
    /// Whether both sides keep the connection after this response.
    keep: bool,
    /// A failure held back one poll, so that what came before it is
    /// written out first (hyper's server writes a head with the body's
    /// first frames, and would drop them with the failure).
    failure: Option<H1BodyError>,
}

impl H1Body {
    /// The body framed as `framing` on `conn`; given back to `home` at its
    /// end if `keep`, at once when it has none.
    pub(crate) fn new(conn: Conn, framing: Framing, home: Home, keep: bool) -> H1Body {
        let left = match framing {
            Framing::Empty | Framing::Length(0) => Left::Done,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Chunked::Size),
            Framing::Close => Left::Close,
        };
        let mut body = H1Body {
            conn: Some(conn),
            left,
            home,
            keep,
            failure: None,
        };
        if left == Left::Done {
            body.ended();
        }
        body
    }

    /// The body has ended: its connection back home if it has one and
    /// nothing followed the body, closed otherwise.
    fn ended(&mut self) {
        self.left = Left::Done;
        let Some(conn) = self.conn.take() else { return };
        if !conn.buf.is_empty() {
            self.home.poisoned(Malformed::PastTheEnd);
        } else if self.keep {
            self.home.park(conn);
        }
    }

    /// The body failed: its connection closed, the failure told at the
    /// next poll (woken at once).
    fn fail(
        &mut self,
        error: H1BodyError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1BodyError>>> {
        self.left = Left::Done;
        self.conn = None;
        if let H1BodyError::Malformed(why) = &error
            && *why != Malformed::Truncated
        {
            self.home.poisoned(*why);
        }
        self.failure = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The body's next frame.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1BodyError>>> {
        if let Some(failure) = self.failure.take() {
            return Poll::Ready(Some(Err(failure)));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.left {
                Left::Done => {
                    self.ended();
                    return Poll::Ready(None);
                }
                Left::Length(left) if !conn.buf.is_empty() => {
                    let take =
                        usize::try_from(*left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
                    let data = conn.buf.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        self.ended();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Left::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Left::Chunked(state) => match state.step(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Step::End) => {
                        self.ended();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(why) => return self.fail(H1BodyError::Malformed(why), cx),
                },
                Left::Length(_) | Left::Close => {}
            }
            let read = ready!(conn.poll_fill(cx));
            match read {
                Ok(0) if self.left == Left::Close => {
                    self.ended();
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(H1BodyError::Malformed(Malformed::Truncated), cx),
                Ok(_) => {}
                Err(error) => return self.fail(H1BodyError::Io(error), cx),
            }
        }
    }

    /// Whether nothing is left to read.
    pub(crate) fn is_end_stream(&self) -> bool {
        if self.failure.is_some() {
            return false;
        }
        match self.left {
            Left::Done => true,
            Left::Chunked(state) => state.done(),
            _ => false,
        }
    }

    /// What is left, when it is known.
    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Length(n) => SizeHint::with_exact(n),
            Left::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body").field("left", &self.left).finish()
    }
}
