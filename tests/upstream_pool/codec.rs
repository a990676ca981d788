//! weir's own HTTP/1.1 codec against scripted hostile backends: framing
//! that reads two ways, broken chunks, a body longer than its length with
//! a smuggled response behind it, 1xx floods, an answer before the request
//! body, a backend closing between requests, a head trickled byte by byte,
//! bodies that must not be read (HEAD, 304) and one that runs to the close.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{RawBackend, metric, proxy, read_body, read_head};
use crate::support::{client, get, wait_for};

/// What a scripted backend does after reading a request's head.
#[derive(Clone)]
struct Reply {
    bytes: Vec<u8>,
    /// Read the request body before answering (else after).
    body_first: bool,
    /// A pause before each byte (a trickled answer).
    pace: Option<Duration>,
    /// Close the connection after answering.
    close: bool,
}

fn reply(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        bytes: bytes.into(),
        body_first: true,
        pace: None,
        close: false,
    }
}

/// `conn=C n=N` with its length, kept alive.
fn ok(conn: u64, n: u64) -> Reply {
    let body = format!("conn={conn} n={n}");
    reply(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

type Script = fn(u64, u64, &str) -> Option<Reply>;

/// A backend answering request `n` (from 1) of connection `conn` (from 0)
/// with `script(conn, n, head)`; `None` closes the connection unanswered.
struct Scripted;

impl Scripted {
    async fn start(script: Script) -> RawBackend {
        RawBackend::serving(move |stream, conn| run(stream, conn, script)).await
    }
}

async fn run(mut stream: TcpStream, conn: u64, script: Script) {
    let mut buf = Vec::new();
    for n in 1.. {
        let Some((end, length)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let Some(reply) = script(conn, n, &head) else {
            return;
        };
        if reply.body_first && !read_body(&mut stream, &mut buf, length).await {
            return;
        }
        let written = match reply.pace {
            None => stream.write_all(&reply.bytes).await.is_ok(),
            Some(pace) => {
                let mut all = true;
                for byte in &reply.bytes {
                    tokio::time::sleep(pace).await;
                    all = stream.write_all(&[*byte]).await.is_ok();
                    if !all {
                        break;
                    }
                }
                all
            }
        };
        if !written || reply.close {
            return;
        }
        if !reply.body_first && !read_body(&mut stream, &mut buf, length).await {
            return;
        }
    }
}

/// Every request to a backend answering as `script` gets `status`; no
/// connection is reused, each is closed, each refusal counted.
async fn refused(script: Script, status: u16) {
    let bad = Scripted::start(script).await;
    let proxy = proxy(&[bad.addr], "request_timeout_ms = 2000").await;
    for _ in 0..3 {
        let (got, body) = get(&client(), &format!("{}/", proxy.url)).await;
        assert_eq!(got.as_u16(), status, "{body}");
    }
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        0
    );
    assert_eq!(metric(&proxy, "weir_upstream_connections_idle").await, 0);
    assert_eq!(
        metric(&proxy, "weir_upstream_responses_refused_total").await,
        3
    );
    wait_for("the hostile connections closed", || {
        bad.open.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(bad.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_a_502() {
    refused(
        |_, _, _| {
            let text = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
            Some(reply(text))
        },
        502,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_are_a_502() {
    refused(
        |_, _, _| {
            Some(reply(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 50\r\n\r\nhello",
            ))
        },
        502,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_overflowing_lengths_are_a_502() {
    refused(
        |conn, _, _| {
            let length = if conn % 2 == 0 {
                "-1"
            } else {
                "184467440737095516160"
            };
            Some(reply(format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\nhello"
            )))
        },
        502,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_stream_of_1xx_is_a_502_at_its_bound() {
    refused(
        |_, _, _| {
            Some(reply(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".repeat(10_000),
            ))
        },
        502,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trickle_of_1xx_under_the_bound_ends_at_the_request_timeout() {
    let bad = Scripted::start(|_, _, _| {
        // One 1xx every 250 ms: 8 before the timeout, under the bound.
        let mut slow = reply(b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000));
        slow.pace = Some(Duration::from_millis(10));
        Some(slow)
    })
    .await;
    let proxy = proxy(&[bad.addr], "request_timeout_ms = 2000").await;
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 504);
    assert_eq!(
        metric(&proxy, "weir_upstream_responses_refused_total").await,
        0
    );
    wait_for("the connection closed", || {
        bad.open.load(Ordering::Relaxed) == 0
    })
    .await;
}

/// Each response's head goes out as a 200; the body then fails, and the
/// connection is closed, counted as refused.
async fn broken_body(script: Script) {
    let bad = Scripted::start(script).await;
    let proxy = proxy(&[bad.addr], "").await;
    for _ in 0..2 {
        let response = client()
            .get(format!("{}/", proxy.url).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await;
        assert!(body.is_err(), "a broken body must fail, not end");
    }
    assert_eq!(bad.accepted(), 2);
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        0
    );
    assert_eq!(
        metric(&proxy, "weir_upstream_responses_refused_total").await,
        2
    );
    wait_for("the connections closed", || {
        bad.open.load(Ordering::Relaxed) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_line_of_100_kb_fails_the_body() {
    broken_body(|_, _, _| {
        let mut text = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100 * 1024));
        text.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        Some(reply(text))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_that_is_not_hex_fails_the_body() {
    broken_body(|_, _, _| {
        Some(reply("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_smuggled_past_a_body_reaches_no_request() {
    let bad = Scripted::start(|conn, n, _| {
        if n > 1 {
            return Some(ok(conn, n));
        }
        let smuggled = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled";
        Some(reply(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello{smuggled}"
        )))
    })
    .await;
    let proxy = proxy(&[bad.addr], "").await;
    let client = client();
    assert_eq!(get(&client, &format!("{}/", proxy.url)).await.1, "hello");
    for _ in 0..3 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200);
        assert_ne!(body, "smuggled");
    }
    // The first connection was closed, never given the next request.
    assert!(bad.accepted() >= 2, "{}", bad.accepted());
    assert!(metric(&proxy, "weir_upstream_responses_refused_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_request_body_is_delivered_and_its_connection_closed() {
    let bad = Scripted::start(|_, _, _| {
        let mut early = reply("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!");
        early.body_first = false;
        Some(early)
    })
    .await;
    let proxy = proxy(&[bad.addr], "\n[upstreams.web.retry]\nretries = 0\n").await;
    for n in 1..=2 {
        // Far more than socket buffers hold: the backend reads none of it
        // before answering. A raw client, reading while it writes: weir
        // stops reading the body once answered, and hyper's client would
        // report its broken write instead of the answer.
        let answer =
            tokio::time::timeout(Duration::from_secs(20), post_reading(&proxy.url, 24 << 20))
                .await
                .expect("the early answer arrives");
        assert!(answer.starts_with("HTTP/1.1 413"), "request {n}: {answer}");
        assert!(answer.ends_with("big!"), "request {n}: {answer}");
    }
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        0
    );
    assert_eq!(bad.accepted(), 2);
}

/// POSTs a body of `length` bytes to `url` over a raw connection, reading
/// while writing: the answer's text once its 4-byte body is in.
async fn post_reading(url: &str, length: usize) -> String {
    use tokio::io::AsyncReadExt;
    let addr = url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n");
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..length / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"big!") {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    String::from_utf8_lossy(&got).into_owned()
}

/// Answers the first request on each connection, then closes the
/// connection when the next request's head arrives.
fn answers_once(conn: u64, n: u64, _: &str) -> Option<Reply> {
    (n == 1).then(|| ok(conn, n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_a_stale_connection_failed_is_sent_once_more() {
    let bad = Scripted::start(answers_once).await;
    let proxy = proxy(&[bad.addr], "\n[upstreams.web.retry]\nretries = 0\n").await;
    let client = client();
    for conn in 0..3 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!((status.as_u16(), body), (200, format!("conn={conn} n=1")));
    }
    assert_eq!(
        metric(&proxy, "weir_upstream_requests_resent_total").await,
        2
    );
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_opened_total").await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_post_a_stale_connection_failed_is_not_sent_again() {
    let bad = Scripted::start(answers_once).await;
    let proxy = proxy(&[bad.addr], "\n[upstreams.web.retry]\nretries = 0\n").await;
    let client = client();
    assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    // Larger than the pool buffers: streamed, so not replayable.
    let request = http::Request::post(format!("{}/", proxy.url))
        .body(Full::new(Bytes::from(vec![b'x'; 64 * 1024])))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        metric(&proxy, "weir_upstream_requests_resent_total").await,
        0
    );
    assert_eq!(bad.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_ends_at_the_request_timeout() {
    let bad = Scripted::start(|_, _, _| {
        let mut slow = reply(format!(
            "HTTP/1.1 200 OK\r\nx-slow: {}\r\n\r\n",
            "a".repeat(1000)
        ));
        slow.pace = Some(Duration::from_millis(20));
        Some(slow)
    })
    .await;
    let proxy = proxy(
        &[bad.addr],
        "request_timeout_ms = 500\n[upstreams.web.retry]\nretries = 0\n",
    )
    .await;
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 504);
    assert_eq!(metric(&proxy, "weir_upstream_connections_idle").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_304_answers_have_no_body_whatever_their_length() {
    let backend = Scripted::start(|conn, n, head| {
        if head.starts_with("HEAD ") {
            Some(reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"))
        } else if head.contains("if-none-match") {
            Some(reply(
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 100\r\n\r\n",
            ))
        } else {
            Some(ok(conn, n))
        }
    })
    .await;
    let proxy = proxy(&[backend.addr], "").await;
    let client = client();
    let head = http::Request::head(format!("{}/", proxy.url))
        .body(Full::default())
        .unwrap();
    let response = client.request(head).await.unwrap();
    assert_eq!(response.status(), 200);
    let cached = http::Request::get(format!("{}/", proxy.url))
        .header("if-none-match", "\"x\"")
        .body(Full::default())
        .unwrap();
    let response = client.request(cached).await.unwrap();
    assert_eq!(response.status(), 304);
    assert!(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    // Had either body been read, this answer would be eaten or late.
    let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "conn=0 n=3"));
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_delimited_by_the_close_is_read_whole_and_not_reused() {
    let backend = Scripted::start(|conn, _, _| {
        let mut last = reply(format!("HTTP/1.1 200 OK\r\n\r\nto the close {conn}"));
        last.close = true;
        Some(last)
    })
    .await;
    let proxy = proxy(&[backend.addr], "").await;
    for conn in 0..2 {
        let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
        assert_eq!(
            (status.as_u16(), body),
            (200, format!("to the close {conn}"))
        );
    }
    assert_eq!(backend.accepted(), 2);
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        0
    );
}
