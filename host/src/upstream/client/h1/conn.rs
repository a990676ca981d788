//! One HTTP/1.1 connection to a backend, driven by whoever uses it (no
//! task of its own): its stream, its read buffer (response heads and
//! bodies are split off it without a copy) and its reused head buffer; one
//! exchange writes a request and reads its response head, watching the
//! read side while it writes so that an early answer is seen.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body::Body;
use tokio::io::AsyncWrite;

use super::encode::{self, Framing, trailer_lines};
use super::out::Out;
use super::parse::{self, Head, MAX_INFORMATIONAL, Malformed};
use crate::upstream::{BackendStream, UpstreamBody};

/// Read at least this much room at a time.
const READ_SIZE: usize = 8192;
/// Below this much room left, the buffer grows (or is reclaimed).
const MIN_ROOM: usize = 1024;

/// An open connection.
pub(crate) struct Conn {
    pub(crate) io: BackendStream,
    /// Bytes read and not yet handed out.
    pub(crate) buf: BytesMut,
    /// The request head being written (kept for the next).
    head: Vec<u8>,
    /// Decrements the pool's open gauge when the connection closes.
    pub(crate) _open: super::OpenGuard,
}

/// Why an exchange failed, and whether it may be sent again elsewhere.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: Error,
    /// No response byte had arrived: a pooled connection's failure may
    /// mean it was stale, and a replayable request can go out again.
    pub(crate) before_response: bool,
}

/// What failed in an exchange.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Reading or writing the connection.
    #[error("the backend connection failed")]
    Io(#[source] io::Error),
    /// The backend closed the connection before a whole response head.
    #[error("the backend closed the connection before a whole response head")]
    Closed,
    /// The response was refused.
    #[error("the backend's response was refused")]
    Malformed(#[source] Malformed),
    /// The client's request body failed.
    #[error("the request body failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request body was longer or shorter than its `Content-Length`.
    #[error("the request body did not match its Content-Length")]
    BodyLength,
}

/// A response head, and whether it came while the request's body was
/// still going out (the connection then is not reusable).
pub(crate) struct Answer {
    pub(crate) head: Head,
    pub(crate) early: bool,
}

/// How a request's body goes out.
pub(crate) enum Outgoing {
    /// Nothing, or all of it buffered: written with the head.
    Buffered(Option<Bytes>),
    /// Streamed from the client, framed as `Framing`, after the part of
    /// it already taken.
    Streamed(Bytes, UpstreamBody, Framing),
}

impl Conn {
    /// A new connection over `io`.
    pub(crate) fn new(io: BackendStream, open: super::OpenGuard) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            _open: open,
        }
    }

    /// Reads what the backend sent into the buffer: how many bytes (0 at
    /// its end).
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// The stream, for a tunnel (the buffer taken first).
    pub(crate) fn into_io(self) -> BackendStream {
        self.io
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Whether an idle connection is still fit to carry a request: nothing
    /// to read and not closed (a read that would block).
    pub(crate) fn idle_and_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending) && self.buf.is_empty()
    }

    /// Encodes the head of `parts` framed as `framing` (`host` said when it
    /// has no `Host`).
    pub(crate) fn encode(
        &mut self,
        parts: &http::request::Parts,
        framing: Framing,
        host: &dyn Fn(&mut Vec<u8>),
    ) {
        encode::head(&mut self.head, parts, framing, host);
    }

    /// Writes the encoded head and `outgoing` body, then reads the final
    /// response head to a `method` request (1xx responses skipped, at most
    /// [`MAX_INFORMATIONAL`]).
    pub(crate) async fn exchange(
        &mut self,
        method: &Method,
        outgoing: Outgoing,
    ) -> Result<Answer, Failed> {
        // A write the backend refused (it answered and closed) still lets
        // its answer be read; the write's error is told if none is there.
        let mut refused_write = None;
        let early = match self.send(outgoing).await {
            Ok(early) => early,
            Err(Error::Io(error)) => {
                refused_write = Some(error);
                true
            }
            Err(error) => {
                return Err(Failed {
                    before_response: self.buf.is_empty(),
                    error,
                });
            }
        };
        let mut informational = 0;
        let mut scanned = 0;
        loop {
            if head_may_end(&self.buf, scanned) {
                match parse::parse(&mut self.buf, method) {
                    Ok(Some(head))
                        if head.status.is_informational()
                            && head.status != http::StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        informational += 1;
                        if informational > MAX_INFORMATIONAL {
                            return Err(self.refused(Malformed::TooManyInformational));
                        }
                        scanned = 0;
                        continue;
                    }
                    Ok(Some(head)) => return Ok(Answer { head, early }),
                    Ok(None) => {}
                    Err(why) => return Err(self.refused(why)),
                }
            } else if self.buf.len() >= parse::MAX_HEAD_BYTES {
                return Err(self.refused(Malformed::TooLarge));
            }
            scanned = self.buf.len();
            let before_response = self.buf.is_empty() && informational == 0;
            let error = match self.fill().await {
                Ok(0) => Error::Closed,
                Ok(_) => continue,
                Err(error) => Error::Io(error),
            };
            return Err(Failed {
                error: refused_write.take().map_or(error, Error::Io),
                before_response,
            });
        }
    }

    fn refused(&self, why: Malformed) -> Failed {
        Failed {
            error: Error::Malformed(why),
            before_response: false,
        }
    }

    /// Writes the request; true when a final answer came before its body
    /// was all sent (the rest is then not sent).
    async fn send(&mut self, outgoing: Outgoing) -> Result<bool, Error> {
        let head = std::mem::take(&mut self.head);
        let mut sent = match outgoing {
            Outgoing::Buffered(body) => {
                let body = body.unwrap_or_default();
                self.write(&[&head, &body[..]]).await
            }
            Outgoing::Streamed(prefix, body, framing) => {
                self.stream(&head, prefix, body, framing).await
            }
        };
        self.head = head;
        if let Ok(false) = sent {
            sent = self.flush().await.map(|()| false);
        }
        sent
    }

    /// Writes the head, then the body frame by frame as it comes, in
    /// chunks for `Framing::Chunked`, holding it to its length otherwise.
    async fn stream(
        &mut self,
        head: &[u8],
        prefix: Bytes,
        mut body: UpstreamBody,
        framing: Framing,
    ) -> Result<bool, Error> {
        // A prefix comes only with a length (it was to be buffered).
        let mut left = match framing {
            Framing::Length(n) => Some(
                n.checked_sub(prefix.len() as u64)
                    .ok_or(Error::BodyLength)?,
            ),
            _ => None,
        };
        if self.write(&[head, &prefix]).await? {
            return Ok(true);
        }
        loop {
            let frame = match self.next_frame(&mut body).await? {
                Next::Early => return Ok(true),
                Next::Frame(frame) => frame,
                Next::End => break,
            };
            let data = match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => data,
                Err(frame) => {
                    if let (Ok(trailers), None) = (frame.into_trailers(), left) {
                        let lines = trailer_lines(&trailers);
                        return self.write(&[b"0\r\n", &lines, b"\r\n"]).await;
                    }
                    continue;
                }
            };
            let early = match &mut left {
                Some(left) => {
                    *left = left
                        .checked_sub(data.len() as u64)
                        .ok_or(Error::BodyLength)?;
                    self.write(&[&data]).await?
                }
                None => {
                    let mut room = [0; 18];
                    let size = encode::chunk_size(data.len(), &mut room);
                    self.write(&[size, &data, b"\r\n"]).await?
                }
            };
            if early {
                return Ok(true);
            }
        }
        match left {
            Some(0) => Ok(false),
            Some(_) => Err(Error::BodyLength),
            None => self.write(&[b"0\r\n\r\n"]).await,
        }
    }

    /// The body's next frame, or an early answer while waiting for it.
    async fn next_frame(&mut self, body: &mut UpstreamBody) -> Result<Next, Error> {
        poll_fn(|cx| {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Ok(Next::Frame(frame))),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(Error::Body(error))),
                Poll::Ready(None) => return Poll::Ready(Ok(Next::End)),
                Poll::Pending => {}
            }
            self.poll_watch(cx).map_ok(|()| Next::Early)
        })
        .await
    }

    /// Reads while a write waits: ready with an early final answer
    /// (whole in the buffer), or an error; pending otherwise.
    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if final_head_buffered(&self.buf) {
                return Poll::Ready(Ok(()));
            }
            if self.buf.len() >= parse::MAX_HEAD_BYTES {
                return Poll::Ready(Err(Error::Malformed(Malformed::TooLarge)));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(Error::Closed)),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(Error::Io(error))),
            }
        }
    }

    /// Writes all of `parts` in as few writes as the stream takes, while
    /// watching for an early answer: true if one came first.
    async fn write(&mut self, parts: &[&[u8]]) -> Result<bool, Error> {
        let mut out = Out::new(parts);
        poll_fn(|cx| {
            while !out.done() {
                let mut slices = [IoSlice::new(&[]); 3];
                let count = out.slices(&mut slices);
                match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => out.advance(n),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(Error::Io(error))),
                    Poll::Pending => return self.poll_watch(cx).map_ok(|()| true),
                }
            }
            Poll::Ready(Ok(false))
        })
        .await
    }

    /// Flushes the stream (TLS buffers its records).
    async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx))
            .await
            .map_err(Error::Io)
    }
}

/// The next thing from a request body.
enum Next {
    Frame(http_body::Frame<Bytes>),
    End,
    Early,
}

/// Whether `buf` may hold a head's end (an empty line) past `scanned`
/// (less the three bytes before it): parsing again only then keeps a head
/// trickled byte by byte from costing quadratic time.
fn head_may_end(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(3);
    // One pass, stopping at the head's end: two `windows` scans went over
    // the whole buffer, the body that came with the head included.
    buf.get(from..).is_some_and(|tail| {
        memchr::memchr_iter(b'\n', tail)
            .any(|at| matches!(&tail[at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
    })
}

/// Whether `buf` holds a whole final (not 1xx) response head, after any
/// whole 1xx ones.
fn final_head_buffered(buf: &[u8]) -> bool {
    let mut at = 0;
    for _ in 0..=MAX_INFORMATIONAL {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; parse::MAX_HEADERS];
        let (response, parsed) = parse::parse_head(&buf[at..], &mut slots);
        match parsed {
            Ok(httparse::Status::Complete(len)) => match response.code {
                Some(code) if (100..200).contains(&code) && code != 101 => at += len,
                _ => return true,
            },
            // A head that cannot parse is an answer too: read as one.
            Err(_) => return true,
            Ok(httparse::Status::Partial) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_end_is_looked_for_only_in_what_is_new() {
        assert!(!head_may_end(b"HTTP/1.1 200 OK\r\nx: y\r\n", 0));
        assert!(head_may_end(b"HTTP/1.1 200 OK\r\n\r\n", 0));
        assert!(head_may_end(b"HTTP/1.1 200 OK\r\n\r\n", 17));
        assert!(!head_may_end(b"HTTP/1.1 200 OK\r\n\r\nabc", 40));
        assert!(head_may_end(b"HTTP/1.0 200 OK\n\n", 15));
    }

    #[test]
    fn an_early_answer_is_a_whole_final_head() {
        assert!(!final_head_buffered(b""));
        assert!(!final_head_buffered(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!final_head_buffered(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413"
        ));
        assert!(final_head_buffered(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\n\r\n"
        ));
        assert!(final_head_buffered(b"\x00garbage"));
    }
}
