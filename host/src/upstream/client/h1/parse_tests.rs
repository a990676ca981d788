//! Tests of `parse.rs`: response heads, framing and keep-alive.

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
    let parsed = head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert!(!parsed.keep_alive);
    assert_eq!(parsed.headers[CONNECTION], "close");
    // A switch of protocols keeps its own.
    let parsed = head(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    assert_eq!(parsed.headers[CONNECTION], "upgrade");
}
