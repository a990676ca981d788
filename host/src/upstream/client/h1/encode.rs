//! Encoding a request head into a reused buffer: the request line in
//! origin form, the headers as the request has them (`Host` included), and
//! one framing header weir decides itself, never both.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method};

/// How a request's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body; `Content-Length: 0` said when `say_zero`.
    Empty {
        /// Whether to say `Content-Length: 0`.
        say_zero: bool,
    },
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
}

impl Framing {
    /// The framing of a request with `headers` whose body ends at once
    /// (`empty`) or has `exact` bytes as its size hint says: an empty body
    /// says `Content-Length: 0` where its method expects a body or the
    /// request said a length; a length the request gave is kept; a length
    /// known from the body is said; otherwise chunked.
    pub(crate) fn of(
        method: &Method,
        headers: &HeaderMap,
        empty: bool,
        exact: Option<u64>,
    ) -> Self {
        let said = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if empty {
            let expects = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
            return Framing::Empty {
                say_zero: expects || said.is_some(),
            };
        }
        match said.or(exact) {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    }
}

/// Writes the head of `parts`, framed as `framing`, into `out` (cleared
/// first); `host` is said when the request has no `Host`.
pub(crate) fn head(
    out: &mut Vec<u8>,
    parts: &Parts,
    framing: Framing,
    host: &dyn Fn(&mut Vec<u8>),
) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = if parts.method == Method::CONNECT {
        parts.uri.authority().map(|a| a.as_str())
    } else {
        parts.uri.path_and_query().map(|p| p.as_str())
    };
    out.extend_from_slice(target.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST) {
        out.extend_from_slice(b"host: ");
        host(out);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Empty { say_zero: false } => {}
        Framing::Empty { say_zero: true } => out.extend_from_slice(b"content-length: 0\r\n"),
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, in `room`.
fn itoa(mut n: u64, room: &mut [u8; 20]) -> &[u8] {
    let mut at = room.len();
    loop {
        at -= 1;
        room[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &room[at..];
        }
    }
}

/// The size line of a chunk of `len` bytes, in `room`.
pub(crate) fn chunk_size(len: usize, room: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = room.len() - 2;
    room[at..].copy_from_slice(b"\r\n");
    let mut n = len;
    loop {
        at -= 1;
        room[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &room[at..];
        }
    }
}

/// Trailers as header lines.
pub(crate) fn trailer_lines(trailers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(request: http::Request<()>, framing: Framing) -> String {
        let (parts, ()) = request.into_parts();
        let mut out = b"stale".to_vec();
        head(&mut out, &parts, framing, &|out| {
            out.extend_from_slice(b"10.0.0.1:80")
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_head_is_origin_form_with_one_framing_header() {
        let request = http::Request::post("/a/b?c=d")
            .header("host", "example.com")
            .header("content-length", "5")
            .header("transfer-encoding", "chunked")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        assert_eq!(
            encoded(request, Framing::Length(5)),
            "POST /a/b?c=d HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
        );
        let get = http::Request::get("http://10.0.0.1:80/").body(()).unwrap();
        assert_eq!(
            encoded(get, Framing::Empty { say_zero: false }),
            "GET / HTTP/1.1\r\nhost: 10.0.0.1:80\r\n\r\n"
        );
        let chunked = http::Request::put("/x")
            .header("host", "h")
            .body(())
            .unwrap();
        assert_eq!(
            encoded(chunked, Framing::Chunked),
            "PUT /x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn the_framing_follows_the_request() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Framing::of(&Method::GET, &headers, true, Some(0)),
            Framing::Empty { say_zero: false }
        );
        assert_eq!(
            Framing::of(&Method::POST, &headers, true, Some(0)),
            Framing::Empty { say_zero: true }
        );
        assert_eq!(
            Framing::of(&Method::POST, &headers, false, Some(9)),
            Framing::Length(9)
        );
        assert_eq!(
            Framing::of(&Method::POST, &headers, false, None),
            Framing::Chunked
        );
        headers.insert(CONTENT_LENGTH, "12".parse().unwrap());
        assert_eq!(
            Framing::of(&Method::POST, &headers, false, None),
            Framing::Length(12)
        );
    }

    #[test]
    fn numbers_are_written_in_decimal_and_chunk_sizes_in_hex() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
        assert_eq!(chunk_size(255, &mut [0; 18]), b"ff\r\n");
        assert_eq!(chunk_size(1, &mut [0; 18]), b"1\r\n");
        assert_eq!(
            chunk_size(usize::MAX, &mut [0; 18]),
            b"ffffffffffffffff\r\n"
        );
    }
}
