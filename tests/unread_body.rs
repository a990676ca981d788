//! An answer given while the client's request body is left unread says
//! `Connection: close`, whoever gave it (a filter's deny, weir's own `413`
//! before or while the body streams, a refused upgrade with a body), and
//! the client's upload is taken whole by the lingering close rather than
//! reset; a body read whole keeps its connection. Raw keep-alive sockets
//! against the real weir binary's library on port 0, real backends, the
//! compiled plugins. (A backend's early answer is in `upstream_pool.rs`.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RR: &str = "[upstreams.web.balancer]\nplugin = \"round-robin\"\n";

/// A proxy to `backend` with `route` lines in its route.
async fn proxy(backend: SocketAddr, route: &str) -> TestProxy {
    proxy_with(backend, "", route).await
}

/// A proxy to `backend` with `listener` lines in its listener, `route`
/// lines in its route, and an admin API.
async fn proxy_with(backend: SocketAddr, listener: &str, route: &str) -> TestProxy {
    let text = with_lines(&config_text(&[backend], RR, ""), listener, route);
    TestProxy::start(&format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n")).await
}

/// A route filter that denies every request (403).
const DENY: &str =
    "[[routes.filters]]\nplugin = \"ip-filter\"\nsettings = { allow = [\"10.0.0.0/8\"] }\n";

/// How a test upload frames its 4 MiB body.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length,
    Chunked,
}

const UPLOAD: usize = 4 << 20;

/// Sends a keep-alive POST with `head_extra` lines and a 4 MiB body while
/// it reads the answer until weir closes (at most 30 s). Returns the
/// answer and how the upload's writes ended.
async fn upload(addr: SocketAddr, head_extra: &str, framing: Framing) -> (String, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut reading, mut writing) = tcp.into_split();
    let framing_line = match framing {
        Framing::Length => format!("content-length: {UPLOAD}"),
        Framing::Chunked => "transfer-encoding: chunked".to_string(),
    };
    let head = format!("POST / HTTP/1.1\r\nhost: x\r\n{head_extra}{framing_line}\r\n\r\n");
    let sending = tokio::spawn(async move {
        writing.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..UPLOAD / chunk.len() {
            if let Framing::Chunked = framing {
                writing.write_all(b"10000\r\n").await?;
                writing.write_all(&chunk).await?;
                writing.write_all(b"\r\n").await?;
            } else {
                writing.write_all(&chunk).await?;
            }
        }
        if let Framing::Chunked = framing {
            writing.write_all(b"0\r\n\r\n").await?;
        }
        writing.shutdown().await
    });
    let text = read_to_close(&mut reading).await;
    let sent = sending.await.unwrap();
    (text, format!("{sent:?}"))
}

/// Everything weir sends until it closes the connection (at most 30 s),
/// which it must close cleanly, not reset.
async fn read_to_close(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got))
        .await
        .expect("weir closes the connection");
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(read.is_ok(), "{read:?} after {text:?}");
    text
}

/// The answer says `Connection: close` and the upload was not reset.
fn told_and_taken(answer: &str, sent: &str, status: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    let lower = answer.to_ascii_lowercase();
    assert_eq!(
        lower.matches("\r\nconnection: close\r\n").count(),
        1,
        "the client is told once that the connection closes: {answer}"
    );
    assert_eq!(sent, "Ok(())", "the upload was taken whole, not reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filters_deny_before_the_body_says_the_connection_closes() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let deny =
        "[[routes.filters]]\nplugin = \"ip-filter\"\nsettings = { allow = [\"10.0.0.0/8\"] }\n";
    let proxy = proxy(backend.addr, deny).await;
    let addr = proxy.server.local_addrs()[0];
    for framing in [Framing::Length, Framing::Chunked] {
        let (answer, sent) = upload(addr, "", framing).await;
        told_and_taken(&answer, &sent, "403");
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_before_or_while_the_body_streams_says_the_connection_closes() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let proxy = proxy(backend.addr, "max_request_body_bytes = 1000").await;
    let addr = proxy.server.local_addrs()[0];
    // Declared over the limit: refused before a byte of it is read.
    let (answer, sent) = upload(addr, "", Framing::Length).await;
    told_and_taken(&answer, &sent, "413");
    assert_eq!(backend.requests(), 0);
    // Chunked: cut when the count passes the limit, mid-stream.
    let (answer, sent) = upload(addr, "", Framing::Chunked).await;
    told_and_taken(&answer, &sent, "413");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_with_a_body_says_the_connection_closes() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let proxy = proxy(backend.addr, "").await;
    let addr = proxy.server.local_addrs()[0];
    let upgrade = "connection: upgrade\r\nupgrade: websocket\r\n";
    let (answer, sent) = upload(addr, upgrade, Framing::Length).await;
    told_and_taken(&answer, &sent, "400");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_whole_keeps_its_connection() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    // A filter that lets the request through, and a limit it fits in.
    let allow = "max_request_body_bytes = 100000\n[[routes.filters]]\nplugin = \"ip-filter\"\nsettings = { allow = [\"127.0.0.0/8\", \"::1\"] }\n";
    let proxy = proxy(backend.addr, allow).await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = "b".repeat(50_000);
    for (n, framing) in ["length", "chunked", "length"].iter().enumerate() {
        let request = if *framing == "length" {
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
        };
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{n}: {answer}");
        assert!(answer.contains("body-bytes: 50000"), "{n}: {answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{n}: {answer}"
        );
    }
    assert_eq!(backend.requests(), 3, "all three on one connection");
}

/// Reads one answer with a `Content-Length` body off a kept connection.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + length {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer within 30 s");
    String::from_utf8_lossy(&got).into_owned()
}

/// A body that would be a request of its own if weir lost its framing.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_answered_without_is_thrown_away_and_the_connection_kept() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let proxy = proxy(backend.addr, DENY).await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for n in 0..3 {
        // The head alone: the answer comes before a byte of the body.
        let head = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            SMUGGLED.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{n}: {answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{n}: kept: {answer}"
        );
        // Then the body, which is read and thrown away, not served.
        stream.write_all(SMUGGLED.as_bytes()).await.unwrap();
    }
    // Head and body at once, the last request on the connection.
    let last = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    stream.write_all(last.as_bytes()).await.unwrap();
    let rest = read_to_close(&mut stream).await;
    assert_eq!(rest.matches("HTTP/1.1 ").count(), 1, "one answer: {rest}");
    assert!(rest.starts_with("HTTP/1.1 403"), "{rest}");
    assert_eq!(backend.requests(), 0, "nothing smuggled through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_100_continue_is_told_the_connection_closes() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let proxy = proxy(backend.addr, DENY).await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    // Some clients send the body anyway; nothing more comes back, and no
    // `100 Continue` after the final answer.
    let _ = stream.write_all(b"0123456789").await;
    let rest = read_to_close(&mut stream).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thrown_away_body_that_stalls_closes_its_connection_at_the_body_timeout() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let proxy = proxy_with(backend.addr, "body_read_timeout_ms = 300", DENY).await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // 990 bytes never come: the connection ends, within the body timeout
    // (and the listener's own clocks), not never.
    let rest = read_to_close(&mut stream).await;
    assert!(rest.is_empty(), "{rest:?}");
    let refused = "weir_requests_refused_total{reason=\"body_timeout\"} 1\n";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !metrics_text(&proxy).await.contains(refused) {
        assert!(
            std::time::Instant::now() < deadline,
            "{refused} not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
