//! Decoding a chunked response body from the connection's buffer: chunk
//! size lines of at most 4 KiB (extensions included, and ignored), data
//! handed out as slices of the buffer, trailers of at most 16 KiB.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::parse::{MAX_HEADERS, Malformed};

/// At most this many bytes in a chunk size line, extensions included.
pub(crate) const MAX_SIZE_LINE: usize = 4096;
/// At most this many bytes of trailers.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Before a chunk size line.
    Size,
    /// Inside a chunk, with this much of it left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailers' end.
    Trailers,
    /// The body has ended.
    Done,
}

/// What one step of decoding found.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The trailers (then the end).
    Trailers(HeaderMap),
    /// The body's end.
    End,
    /// More bytes are needed.
    More,
}

impl Chunked {
    /// Whether the body has ended.
    pub(crate) fn done(self) -> bool {
        self == Chunked::Done
    }

    /// Decodes from the start of `buf`, consuming what it decodes.
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(size) = size_line(buf)? else {
                        return Ok(Step::More);
                    };
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::BadChunk);
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => return self.trailers(buf),
                Chunked::Done => return Ok(Step::End),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        if buf.len() >= 2 && &buf[..2] == b"\r\n" {
            let _ = buf.split_to(2);
            *self = Chunked::Done;
            return Ok(Step::End);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, parsed) = match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => return Ok(Step::More),
            _ => return Err(Malformed::BadTrailers),
        };
        if len > MAX_TRAILERS {
            return Err(Malformed::BadTrailers);
        }
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for header in parsed {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| Malformed::BadTrailers)?;
            let value =
                HeaderValue::from_bytes(header.value).map_err(|_| Malformed::BadTrailers)?;
            trailers.append(name, value);
        }
        let _ = buf.split_to(len);
        *self = Chunked::Done;
        Ok(Step::Trailers(trailers))
    }
}

/// The size of the chunk whose size line starts `buf`, consumed with its
/// CRLF, once the line is whole.
fn size_line(buf: &mut BytesMut) -> Result<Option<u64>, Malformed> {
    let window = &buf[..buf.len().min(MAX_SIZE_LINE)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_SIZE_LINE {
            Err(Malformed::BadChunk)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..end];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Malformed::BadChunk);
    }
    // After the digits: optional whitespace, then `;` extensions, which
    // may hold neither control characters nor a bare CR or LF.
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()..];
    let extensions_ok = rest.is_empty()
        || (rest[0] == b';' && rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
    if !extensions_ok {
        return Err(Malformed::BadChunk);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| Malformed::BadChunk)?;
    let size = u64::from_str_radix(text, 16).map_err(|_| Malformed::BadChunk)?;
    let _ = buf.split_to(end + 2);
    Ok(Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input`, fed in pieces of `piece` bytes.
    fn decode(
        input: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, usize), Malformed> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match state.step(&mut buf)? {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::Trailers(t) => trailers = Some(t),
                Step::End => return Ok((body, trailers, buf.len())),
                Step::More if fed < input.len() => {
                    let next = (fed + piece).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
                Step::More => return Err(Malformed::Truncated),
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_pieces_they_arrive_in() {
        let input = b"5\r\nhello\r\n7;name=\"v\"\r\n, world\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, 1000] {
            let (body, trailers, left) = decode(input, piece).unwrap();
            assert_eq!(body, b"hello, world", "{piece}");
            assert!(trailers.is_none());
            assert_eq!(left, 0);
        }
        let (body, trailers, _) =
            decode(b"A\r\n0123456789\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n", 4).unwrap();
        assert_eq!(body, b"0123456789");
        let trailers = trailers.unwrap();
        assert_eq!(
            (&trailers["grpc-status"], &trailers["x"]),
            (
                &"0".parse::<HeaderValue>().unwrap(),
                &"y".parse::<HeaderValue>().unwrap()
            )
        );
    }

    #[test]
    fn bytes_past_the_end_are_left_for_the_caller_to_see() {
        let (_, _, left) = decode(b"0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 1000).unwrap();
        assert_eq!(left, 19);
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for input in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\nhello\r\n",
        ] {
            assert!(
                matches!(decode(input, 1000), Err(Malformed::BadChunk)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn size_lines_and_trailers_are_bounded() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', 100 * 1024));
        assert_eq!(decode(&long, 8192).unwrap_err(), Malformed::BadChunk);
        let mut trailers = b"0\r\n".to_vec();
        for i in 0..2000 {
            trailers.extend_from_slice(format!("x-{i}: yyyyyyyy\r\n").as_bytes());
        }
        assert_eq!(decode(&trailers, 8192).unwrap_err(), Malformed::BadTrailers);
        // The largest size parses; reading it then needs that many bytes.
        assert_eq!(
            decode(b"ffffffffffffffff\r\nabc", 1000).unwrap_err(),
            Malformed::Truncated
        );
    }
}
