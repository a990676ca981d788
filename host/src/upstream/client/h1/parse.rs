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
#[path = "parse_tests.rs"]
mod tests;
