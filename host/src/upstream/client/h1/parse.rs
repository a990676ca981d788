//! A backend's response head, parsed with `httparse` within hyper's old
//! limits (100 headers, a head of at most 408 KiB), and its body's framing
//! decided strictly: where two readings of the framing could disagree (a
//! smuggling attempt), the response is refused.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

/// At most this many headers in a response head (hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;
/// At most this many bytes in a response head (hyper's default read
/// buffer limit: 8 KiB and 100 lines of 4 KiB).
pub(crate) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// At most this many `1xx` responses before the final one.
pub(crate) const MAX_INFORMATIONAL: usize = 32;

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: `HEAD`, `1xx`, `204`, `304`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes the connection (never reusable).
    Close,
}

/// Why a backend's response was refused (answered 502, its connection
/// closed). Also the body's failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not an HTTP/1.x response head.
    #[error("the response head is not valid HTTP/1.1")]
    Syntax,
    /// The head is larger than [`MAX_HEAD_BYTES`].
    #[error("the response head is larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    /// More than [`MAX_HEADERS`] headers.
    #[error("the response has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// More than [`MAX_INFORMATIONAL`] `1xx` responses.
    #[error("the backend sent more than {MAX_INFORMATIONAL} 1xx responses")]
    TooManyInformational,
    /// Both `Transfer-Encoding` and `Content-Length`.
    #[error("the response has both Transfer-Encoding and Content-Length")]
    LengthAndEncoding,
    /// A `Content-Length` that is not one decimal number.
    #[error("the response's Content-Length is malformed or given twice with different values")]
    BadLength,
    /// `chunked` twice, not last, or on an HTTP/1.0 response.
    #[error("the response's Transfer-Encoding is malformed")]
    BadEncoding,
    /// A chunk size line that is not hex, too long, or overflows.
    #[error("the response body's chunk framing is malformed")]
    BadChunk,
    /// Chunked trailers past their bound or malformed.
    #[error("the response body's trailers are malformed or too large")]
    BadTrailers,
    /// The connection ended before the body did.
    #[error("the backend closed the connection before the body's end")]
    Truncated,
    /// The backend sent bytes past the response's end.
    #[error("the backend sent bytes past the response's end")]
    PastTheEnd,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the backend keeps the connection open after this response.
    pub(crate) keep_alive: bool,
}

/// httparse's parse of the response head at the start of `buf`, into
/// `slots` left uninitialised: zeroing 100 slots (3.2 KiB) was a memset
/// per response, the largest single item of a proxied request's
/// instructions.
pub(crate) fn parse_head<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> (httparse::Response<'h, 'b>, httparse::Result<usize>) {
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        slots,
    );
    (response, parsed)
}

/// The head at the start of `buf`, answering a `method` request, split
/// off `buf` once it is whole (its header values share those bytes);
/// `None` while it is not, an error when it never can be.
pub(crate) fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Malformed> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (response, parsed) = parse_head(buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(Malformed::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed::TooManyHeaders),
        Err(_) => return Err(Malformed::Syntax),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Malformed::TooLarge);
    }
    let status = StatusCode::from_u16(response.code.ok_or(Malformed::Syntax)?)
        .map_err(|_| Malformed::Syntax)?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(Malformed::Syntax),
    };
    // Where each name and value lies in the head (on the stack: offsets
    // within the head, which is at most MAX_HEAD_BYTES long), then the head
    // split off: the values become slices of it, without a copy.
    const _: () = assert!(MAX_HEAD_BYTES <= u32::MAX as usize);
    let base = buf.as_ptr() as usize;
    let offset = |at: *const u8| (at as usize - base) as u32;
    let mut places = [[0u32; 4]; MAX_HEADERS];
    let count = response.headers.len();
    for (place, header) in places.iter_mut().zip(response.headers.iter()) {
        let name = offset(header.name.as_ptr());
        let value = offset(header.value.as_ptr());
        *place = [
            name,
            name + header.name.len() as u32,
            value,
            value + header.value.len() as u32,
        ];
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    // The framing headers are read as the map is built: no lookups after.
    let mut seen = Seen::default();
    for place in &places[..count] {
        let [name_at, name_end, value_at, value_end] = place.map(|at| at as usize);
        let name =
            HeaderName::from_bytes(&head[name_at..name_end]).map_err(|_| Malformed::Syntax)?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_end))
            .map_err(|_| Malformed::Syntax)?;
        let only_hop_by_hop = seen.header(&name, value.as_bytes());
        if only_hop_by_hop && !status.is_informational() {
            // `Connection: keep-alive`: read, then left out, as the proxy
            // would strip it and everything it names anyway; removing it
            // from the map cost more than leaving it out. A 1xx (a 101
            // switching protocols) keeps its own.
            continue;
        }
        headers.append(name, value);
    }
    let framing = framing(status, version, &headers, method, &seen)?;
    let keep_alive = framing != Framing::Close && seen.keeps_alive(version);
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// What a head's framing headers said, read as its map is built.
#[derive(Debug, Default)]
struct Seen {
    /// A `Transfer-Encoding` header is there.
    encoded: bool,
    /// The one `Content-Length` (repeated only with the same value), or
    /// the first reason it is not one.
    length: Option<Result<u64, Malformed>>,
    /// `Connection` named `close`, `keep-alive`.
    close: bool,
    keep_alive: bool,
}

impl Seen {
    /// Notes the header `name: value`; true when it is a `Connection`
    /// whose every token names a hop-by-hop header (`keep-alive`, as most
    /// responses say): it then names nothing that removing the fixed
    /// hop-by-hop list does not remove.
    fn header(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if name == TRANSFER_ENCODING {
            self.encoded = true;
        } else if name == CONTENT_LENGTH {
            for part in value.split(|&b| b == b',') {
                self.length = Some(match (self.length, decimal(part.trim_ascii())) {
                    (Some(Err(why)), _) | (_, Err(why)) => Err(why),
                    (Some(Ok(found)), Ok(n)) if found != n => Err(Malformed::BadLength),
                    (_, Ok(n)) => Ok(n),
                });
            }
        } else if name == CONNECTION {
            let mut only_hop_by_hop = true;
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                only_hop_by_hop &= token.is_empty() || crate::framing::names_hop_by_hop(token);
            }
            return only_hop_by_hop;
        }
        false
    }

    fn content_length(&self) -> Result<Option<u64>, Malformed> {
        self.length.transpose()
    }

    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    fn keeps_alive(&self, version: Version) -> bool {
        match version {
            Version::HTTP_11 => !self.close,
            Version::HTTP_10 => self.keep_alive,
            _ => false,
        }
    }
}

/// The body's framing (RFC 9112 section 6.3), refusing what could be read
/// two ways.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    method: &Method,
    seen: &Seen,
) -> Result<Framing, Malformed> {
    let encoded = seen.encoded;
    let length = seen.content_length()?;
    if encoded && length.is_some() {
        // Even where no body follows: a backend saying both is either
        // broken or probing for a parser that reads the other one.
        return Err(Malformed::LengthAndEncoding);
    }
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if encoded {
        if version == Version::HTTP_10 {
            return Err(Malformed::BadEncoding);
        }
        let codings: Vec<&[u8]> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .collect();
        let chunked = codings
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count();
        return match (chunked, codings.last()) {
            (1, Some(last)) if last.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            // Other codings without chunked: the body runs to the close.
            (0, Some(_)) => Ok(Framing::Close),
            _ => Err(Malformed::BadEncoding),
        };
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Digits only (no sign, no space inside), without overflow.
fn decimal(text: &[u8]) -> Result<u64, Malformed> {
    if text.is_empty() || text.len() > 19 {
        return Err(Malformed::BadLength);
    }
    text.iter()
        .try_fold(0u64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
        })
        .ok_or(Malformed::BadLength)
}

/// Whether a message with `headers` keeps its connection open: HTTP/1.1
/// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
pub(crate) fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut seen = Seen::default();
    for value in headers.get_all(CONNECTION) {
        seen.header(&CONNECTION, value.as_bytes());
    }
    seen.keeps_alive(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, Malformed> {
        head_for(text, &Method::GET)
    }

    fn head_for(text: &str, method: &Method) -> Result<Head, Malformed> {
        let mut buf = BytesMut::from(text.as_bytes());
        buf.extend_from_slice(b"body");
        let parsed = parse(&mut buf, method).map(|h| h.expect("a whole head"));
        if parsed.is_ok() {
            assert_eq!(&buf[..], b"body", "{text:?}");
        }
        parsed
    }

    fn head_len(text: &[u8]) -> Result<Option<()>, Malformed> {
        parse(&mut BytesMut::from(text), &Method::GET).map(|h| h.map(drop))
    }

    #[test]
    fn the_framing_follows_rfc_9112() {
        let framing = |text: &str| head(text).map(|h| h.framing);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 7\r\ncontent-length: 7, 7\r\n\r\n"),
            Ok(Framing::Length(7))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            Ok(Framing::Close)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Ok(Framing::Close));
        for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
            let text = format!("HTTP/1.1 {status}\r\ncontent-length: 10\r\n\r\n");
            assert_eq!(framing(&text), Ok(Framing::Empty), "{status}");
        }
        let head_request = head_for(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(head_request.unwrap().framing, Framing::Empty);
    }

    #[test]
    fn framing_that_reads_two_ways_is_refused() {
        for (text, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Malformed::LengthAndEncoding,
            ),
            (
                "HTTP/1.1 204 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                Malformed::LengthAndEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1 2\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\n",
                Malformed::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Malformed::BadEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
                Malformed::BadEncoding,
            ),
            (
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Malformed::BadEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: ,\r\n\r\n",
                Malformed::BadEncoding,
            ),
        ] {
            assert_eq!(head(text).map(|h| h.framing), Err(why), "{text:?}");
        }
    }

    #[test]
    fn the_largest_length_parses_and_one_more_digit_does_not() {
        assert_eq!(
            decimal(b"9999999999999999999"),
            Ok(9_999_999_999_999_999_999)
        );
        assert_eq!(decimal(b"18446744073709551616"), Err(Malformed::BadLength));
        assert_eq!(decimal(b"0"), Ok(0));
        assert_eq!(decimal(b""), Err(Malformed::BadLength));
    }

    #[test]
    fn keep_alive_follows_the_connection_header_and_version() {
        let keeps = |text: &str| head(text).unwrap().keep_alive;
        assert!(keeps("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!keeps(
            "HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!keeps("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(keeps(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
        // Read to the close: never kept, whatever it says.
        assert!(!keeps("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn heads_past_the_limits_are_refused() {
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None));
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("x-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(head_len(many.as_bytes()), Err(Malformed::TooManyHeaders));
        let mut big = String::from("HTTP/1.1 200 OK\r\nx-big: ");
        big.push_str(&"a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head_len(big.as_bytes()), Err(Malformed::TooLarge));
        assert_eq!(head_len(b"\x00\x01garbage\r\n\r\n"), Err(Malformed::Syntax));
        assert_eq!(head_len(b"HTTP/2.0 200 OK\r\n\r\n"), Err(Malformed::Syntax));
    }

    #[test]
    fn header_values_share_the_head_and_keep_their_order() {
        let parsed =
            head("HTTP/1.1 404 Not Found\r\nSet-Cookie: a\r\nset-cookie: b\r\nx-y:  z \r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        assert_eq!(parsed.status, StatusCode::NOT_FOUND);
        assert_eq!(parsed.version, Version::HTTP_11);
        let cookies: Vec<_> = parsed.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a", "b"]);
        assert_eq!(parsed.headers["x-y"], "z");
    }

    #[test]
    fn a_connection_header_naming_only_hop_by_hop_headers_is_left_out() {
        let parsed = head("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, TE\r\nKeep-Alive: timeout=5\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert!(parsed.keep_alive);
        assert!(!parsed.headers.contains_key(CONNECTION));
        // What it named is hop-by-hop: the proxy strips it with the rest.
        assert!(crate::framing::is_hop_by_hop(&HeaderName::from_static(
            "keep-alive"
        )));
        // Naming another header, or closing, it stays for the proxy to read.
        let parsed = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(parsed.headers[CONNECTION], "keep-alive, x-a");
        // Of two, only the one naming nothing else is left out.
        let parsed = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        let kept: Vec<_> = parsed.headers.get_all(CONNECTION).iter().collect();
        assert_eq!(kept, ["x-a"]);
        assert!(parsed.keep_alive);
        let parsed =
            head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert!(!parsed.keep_alive);
        assert_eq!(parsed.headers[CONNECTION], "close");
        // A switch of protocols keeps its own.
        let parsed = head(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert_eq!(parsed.headers[CONNECTION], "upgrade");
    }
}
