//! Which of a client's HTTP/1.1 bytes hyper may be handed now, so that
//! weir knows, without guessing, when hyper's read buffer is empty.
//!
//! hyper reads ahead: a pipelined request, or the next head behind a body,
//! lands in its buffer with the request before it. A connection is only
//! safe to hibernate (end hyper's connection with a clean EOF) when that
//! buffer holds nothing, so the stream hands hyper at most one head at a
//! time, and at most a body's `Content-Length`, keeping what lies past it
//! for hyper's next read:
//! - reading a head: up to the earliest point a head may end (`\n\r\n` or
//!   `\n\n`: httparse accepts bare LF line ends). Every real head end is
//!   such a point, so cutting at the earliest can only hand over too
//!   little, and hyper just reads again;
//! - after such a point, the service's call says what it was: a head with
//!   no body, a head with `Content-Length: k` (hand over k more), or any
//!   other framing (chunked, any `Transfer-Encoding`, an upgrade, a
//!   `CONNECT`, several lengths), which **taints** the connection: from
//!   then on everything passes through and it never hibernates. No call
//!   before hyper reads again means it was not a head end (leading empty
//!   lines), and the head goes on.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Request};

/// What the service's call said about the body behind a head: not called
/// since the last head end.
pub(super) const NOT_CALLED: u64 = u64::MAX;
/// The body's framing is anything but none or one `Content-Length`.
pub(super) const TAINTED: u64 = u64::MAX - 1;

/// The body framing of `request` as the service is called with it: its
/// length (0 when it has none), or [`TAINTED`].
pub(crate) fn body_framing<B>(request: &Request<B>) -> u64 {
    let headers = request.headers();
    if request.method() == Method::CONNECT
        || headers.contains_key(TRANSFER_ENCODING)
        || headers.contains_key(UPGRADE)
    {
        return TAINTED;
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let Some(length) = lengths.next() else {
        return 0;
    };
    if lengths.next().is_some() {
        return TAINTED;
    }
    let digits = length.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return TAINTED;
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .filter(|&k| k < TAINTED)
        .unwrap_or(TAINTED)
}

/// The last bytes of a head being scanned, as far as an end goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// Neither of the others.
    Other,
    /// A `\n`.
    Newline,
    /// `\n\r`.
    NewlineReturn,
}

/// Where the stream is in what it hands hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// In a head: its tail, and whether anything was handed over since
    /// the last head end.
    Head { tail: Tail, started: bool },
    /// A possible head end was handed over; the service's call (or its
    /// absence) says what follows.
    Ended,
    /// In a body, with this many bytes to go.
    Body(u64),
    /// Anything passes: never hibernates again.
    Tainted,
}

impl Framing {
    /// A connection that has handed hyper nothing yet.
    pub(super) const fn new() -> Framing {
        Framing::Head {
            tail: Tail::Other,
            started: false,
        }
    }

    /// Settles an [`Framing::Ended`] with what the service's call said
    /// (`called`, taken once).
    pub(super) fn settle(&mut self, called: impl FnOnce() -> u64) {
        if *self != Framing::Ended {
            return;
        }
        *self = match called() {
            NOT_CALLED => Framing::new(),
            TAINTED => Framing::Tainted,
            0 => Framing::new(),
            length => Framing::Body(length),
        };
    }

    /// How many of `bytes` (what the client sent next) hyper may have
    /// now; the state moves past them. Settle first.
    pub(super) fn admit(&mut self, bytes: &[u8]) -> usize {
        match self {
            Framing::Tainted => bytes.len(),
            Framing::Ended => 0,
            Framing::Body(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                *left -= n as u64;
                if *left == 0 {
                    *self = Framing::new();
                }
                n
            }
            Framing::Head { tail, started } => {
                *started |= !bytes.is_empty();
                // Only a `\n` can end a head, so the scan jumps from one
                // to the next (memchr) and looks back at what led to it.
                let mut state = *tail;
                let mut from = 0;
                for at in memchr::memchr_iter(b'\n', bytes) {
                    if after(state, &bytes[from..at]) != Tail::Other {
                        *self = Framing::Ended;
                        return at + 1;
                    }
                    state = Tail::Newline;
                    from = at + 1;
                }
                *tail = after(state, &bytes[from..]);
                bytes.len()
            }
        }
    }

    /// Whether hyper holds nothing it was handed: between requests, not
    /// tainted. Settle first.
    pub(super) fn is_clean(&self) -> bool {
        matches!(self, Framing::Head { started: false, .. })
    }
}

/// The tail after `run` (bytes with no `\n` in them) follows `state`.
fn after(state: Tail, run: &[u8]) -> Tail {
    match (state, run) {
        (state, []) => state,
        (Tail::Newline, [b'\r']) => Tail::NewlineReturn,
        _ => Tail::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit_all(framing: &mut Framing, mut bytes: &[u8], called: u64) -> Vec<usize> {
        let mut cuts = Vec::new();
        while !bytes.is_empty() {
            framing.settle(|| called);
            let n = framing.admit(bytes);
            cuts.push(n);
            bytes = &bytes[n..];
        }
        cuts
    }

    /// The byte-at-a-time scan `admit` replaced: where (if anywhere) a
    /// head that starts in `tail` ends in `bytes`, and the tail after.
    fn reference(mut tail: Tail, bytes: &[u8]) -> (Option<usize>, Tail) {
        for (at, &byte) in bytes.iter().enumerate() {
            tail = match (tail, byte) {
                (Tail::Newline | Tail::NewlineReturn, b'\n') => return (Some(at + 1), tail),
                (_, b'\n') => Tail::Newline,
                (Tail::Newline, b'\r') => Tail::NewlineReturn,
                _ => Tail::Other,
            };
        }
        (None, tail)
    }

    #[test]
    fn the_head_scan_cuts_where_a_byte_at_a_time_scan_does() {
        // Every string of up to 8 bytes over `a`, `\r`, `\n`, split in two
        // at every point: 9,841 strings, each cut exactly as before.
        let alphabet = [b'a', b'\r', b'\n'];
        for len in 0..=8u32 {
            for code in 0..3usize.pow(len) {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| alphabet[code / 3usize.pow(i) % 3])
                    .collect();
                for split in 0..=bytes.len() {
                    let mut framing = Framing::new();
                    let first = framing.admit(&bytes[..split]);
                    let (expected, tail) = reference(Tail::Other, &bytes);
                    let cut = if first < split || framing == Framing::Ended {
                        Some(first)
                    } else {
                        match framing.admit(&bytes[split..]) {
                            n if framing == Framing::Ended => Some(split + n),
                            _ => None,
                        }
                    };
                    assert_eq!(cut, expected, "{bytes:?} split at {split}");
                    if expected.is_none() {
                        let started = !bytes.is_empty();
                        assert_eq!(framing, Framing::Head { tail, started }, "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn pipelined_heads_are_handed_over_one_at_a_time() {
        let one = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let bare = b"GET /b HTTP/1.1\n\n";
        let two = [&one[..], &one[..], &bare[..]].concat();
        let mut framing = Framing::new();
        let cuts = admit_all(&mut framing, &two, 0);
        assert_eq!(cuts, [one.len(), one.len(), bare.len()]);
        framing.settle(|| 0);
        assert!(framing.is_clean());
    }

    #[test]
    fn a_head_end_split_anywhere_is_found_where_it_ends() {
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET";
        for split in 1..head.len() {
            let mut framing = Framing::new();
            let first = framing.admit(&head[..split]);
            let end = head.len() - 3;
            if split < end {
                assert_eq!(first, split);
                assert!(!framing.is_clean());
                assert_eq!(framing.admit(&head[split..]), end - split, "split {split}");
            } else {
                assert_eq!(first, end, "split {split}");
            }
            assert_eq!(framing, Framing::Ended);
        }
    }

    #[test]
    fn a_body_is_handed_over_to_its_length_and_the_next_head_kept() {
        let bytes = b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhe\n\nlGET / HTTP/1.1\r\n\r\n";
        let mut framing = Framing::new();
        let head = framing.admit(bytes);
        assert_eq!(&bytes[head - 4..head], b"\r\n\r\n");
        framing.settle(|| 5);
        assert_eq!(framing.admit(&bytes[head..]), 5);
        assert!(framing.is_clean(), "a finished body is between requests");
    }

    #[test]
    fn no_call_means_no_head_ended_and_odd_framing_taints() {
        let mut framing = Framing::new();
        assert_eq!(framing.admit(b"\r\n\r\nGET"), 4);
        framing.settle(|| NOT_CALLED);
        assert!(framing.is_clean(), "leading empty lines; hyper skips them");
        assert_eq!(framing.admit(b"GET"), 3);
        assert!(!framing.is_clean());
        let mut framing = Framing::Ended;
        framing.settle(|| TAINTED);
        let chunked = b"5\r\nhello\r\n0\r\n\r\nGET";
        assert_eq!(framing.admit(chunked), chunked.len());
        assert!(!framing.is_clean());
    }

    #[test]
    fn only_none_or_one_plain_length_is_a_framing_weir_follows() {
        let framing = |build: http::request::Builder| body_framing(&build.body(()).unwrap());
        assert_eq!(framing(Request::get("/")), 0);
        assert_eq!(
            framing(Request::post("/").header("content-length", "12")),
            12
        );
        for tainted in [
            Request::post("/").header("transfer-encoding", "chunked"),
            Request::post("/")
                .header("content-length", "1")
                .header("content-length", "1"),
            Request::post("/").header("content-length", "+1"),
            Request::post("/").header("content-length", "99999999999999999999999"),
            Request::get("/").header("upgrade", "websocket"),
            Request::connect("x:1"),
        ] {
            assert_eq!(framing(tainted), TAINTED);
        }
    }
}
