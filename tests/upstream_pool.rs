//! weir's own HTTP/1.1 upstream pool, against weir started from the library
//! on port 0 and raw-socket backends that count their connections: reuse,
//! `max_idle_per_backend`, idle connections closed, backends closing
//! keep-alive connections (with `Connection: close` or silently), a backend
//! dying mid-response, one answering before reading the request body, 100
//! requests at once, TLS reuse, and hostile backends (oversized headers,
//! garbage, a flood of 1xx responses); `codec.rs` has the hostile backends
//! of weir's own HTTP/1.1 codec.

mod support;

#[path = "upstream_pool/codec.rs"]
mod codec;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use support::certs::TestCa;
use support::tls_backend::TlsBackend;
use support::{TempDir, TestProxy, client, config_text, get, spread, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a [`RawBackend`] answers on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `200 conn=N` to every request, the connection kept.
    KeepAlive,
    /// One answer with `Connection: close`, then the connection closed.
    CloseHeader,
    /// One answer without a word, then the connection closed.
    SilentClose,
    /// The head and half the body of a 200, then the connection closed.
    DieMidBody,
    /// A 200 before reading the request body, then the body drained.
    AnswerFirst,
    /// A response head of 1 MiB of headers.
    HugeHeaders,
    /// Bytes that are not HTTP.
    Garbage,
    /// `100 Continue` responses without end.
    InfoFlood,
}

/// A backend on `127.0.0.1:0` speaking HTTP/1.1 over raw sockets, counting
/// connections accepted and open.
struct RawBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    async fn start(mode: Mode) -> RawBackend {
        RawBackend::serving(move |stream, n| serve(stream, n, mode)).await
    }

    /// A backend whose connection `n` (from 0) is served by `serve`.
    async fn serving<F, Fut>(serve: F) -> RawBackend
    where
        F: Fn(TcpStream, u64) -> Fut + Copy + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, open) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (count, opened) = (accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::Relaxed);
                let opened = opened.clone();
                opened.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    serve(stream, n).await;
                    opened.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        RawBackend {
            addr,
            accepted,
            open,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection's requests, answered as `mode` says; returns when the
/// connection is done.
async fn serve(mut stream: TcpStream, conn: u64, mode: Mode) {
    let mut buf = Vec::new();
    let mut served = 0u64;
    loop {
        let Some((head_end, length)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..head_end);
        if mode != Mode::AnswerFirst && !read_body(&mut stream, &mut buf, length).await {
            return;
        }
        served += 1;
        let body = format!("conn={conn} n={served}");
        let ok = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", body.len());
        let answer: Vec<u8> = match mode {
            Mode::KeepAlive | Mode::SilentClose | Mode::AnswerFirst => {
                format!("{ok}\r\n{body}").into_bytes()
            }
            Mode::CloseHeader => format!("{ok}connection: close\r\n\r\n{body}").into_bytes(),
            Mode::DieMidBody => b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf".to_vec(),
            Mode::HugeHeaders => {
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..1024 {
                    head.extend_from_slice(
                        format!("x-filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes(),
                    );
                }
                head.extend_from_slice(b"content-length: 0\r\n\r\n");
                head
            }
            Mode::Garbage => b"\x00\x01garbage \xff\xfe not http at all\r\n\r\n".to_vec(),
            Mode::InfoFlood => {
                let flood = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1024);
                while stream.write_all(&flood).await.is_ok() {}
                return;
            }
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
        match mode {
            Mode::AnswerFirst => {
                if !read_body(&mut stream, &mut buf, length).await {
                    return;
                }
            }
            Mode::KeepAlive => {}
            _ => return,
        }
    }
}

/// Reads until a request head is in `buf`: its end and `content-length`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            return Some((end + 4, length));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads a `length`-byte body from `buf` and the stream; false if it ended.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, length: usize) -> bool {
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..length);
    true
}

/// weir in front of `backends` with `extra` upstream keys and an admin API.
async fn proxy(backends: &[SocketAddr], extra: &str) -> TestProxy {
    let admin = "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    TestProxy::start(&(config_text(backends, extra, "") + admin)).await
}

/// The value of the `/metrics` series `name{upstream="web"}`.
async fn metric(proxy: &TestProxy, name: &str) -> u64 {
    let text = support::metrics_text(proxy).await;
    let prefix = format!("{name}{{upstream=\"web\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_connection() {
    let backend = RawBackend::start(Mode::KeepAlive).await;
    let proxy = proxy(&[backend.addr], "").await;
    let client = client();
    for n in 1..=20 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!((status.as_u16(), body), (200, format!("conn=0 n={n}")));
    }
    assert_eq!(backend.accepted(), 1);
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_opened_total").await,
        1
    );
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        19
    );
    assert_eq!(metric(&proxy, "weir_upstream_connections_idle").await, 1);
    assert_eq!(metric(&proxy, "weir_upstream_connections").await, 1);
    assert_eq!(
        metric(&proxy, "weir_upstream_connect_failures_total").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_idle_per_backend_connections_close() {
    let backend = RawBackend::start(Mode::KeepAlive).await;
    let proxy = proxy(&[backend.addr], "max_idle_per_backend = 2").await;
    let seen = spread(&format!("{}/", proxy.url), 100, 100).await;
    assert_eq!(seen.values().sum::<usize>(), 100, "{seen:?}");
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    assert!(backend.accepted() > 2, "{} connections", backend.accepted());
    // Two kept, the rest closed, seen from the backend's side too.
    wait_for("all but 2 connections closed", || backend.open() == 2).await;
    assert_eq!(metric(&proxy, "weir_upstream_connections_idle").await, 2);
    assert_eq!(metric(&proxy, "weir_upstream_connections").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_idle_timeout() {
    let backend = RawBackend::start(Mode::KeepAlive).await;
    let proxy = proxy(&[backend.addr], "idle_timeout_ms = 300").await;
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
    assert_eq!(backend.accepted(), 1);
    wait_for("the idle connection closed", || backend.open() == 0).await;
    assert_eq!(metric(&proxy, "weir_upstream_connections_idle").await, 0);
    // The next request dials again.
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "conn=1 n=1"));
}

/// Every request answered 200 from a backend that takes one request per
/// connection: each on a connection of its own, none reused.
async fn one_request_per_connection(mode: Mode) {
    let backend = RawBackend::start(mode).await;
    let proxy = proxy(&[backend.addr], "").await;
    let client = client();
    for n in 0..20 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!((status.as_u16(), body), (200, format!("conn={n} n=1")));
    }
    assert_eq!(backend.accepted(), 20);
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_opened_total").await,
        20
    );
    // A stale connection the pool still offered was closed before taking
    // its request, which went out again on a new one: none was reused.
    let reused = metric(&proxy, "weir_upstream_connections_reused_total").await;
    let resent = metric(&proxy, "weir_upstream_requests_resent_total").await;
    assert_eq!(reused, resent);
    wait_for("every connection closed", || backend.open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_connection_close_gets_a_new_connection_each_time() {
    one_request_per_connection(Mode::CloseHeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_silently_after_each_answer_gets_a_new_connection_each_time() {
    one_request_per_connection(Mode::SilentClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_response_is_not_reused() {
    let backend = RawBackend::start(Mode::DieMidBody).await;
    let proxy = proxy(&[backend.addr], "").await;
    for _ in 0..3 {
        // The head went out as 200; the body ends short.
        let response = client()
            .get(format!("{}/", proxy.url).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body()).await;
        assert!(body.is_err(), "a body cut short must fail, not end");
    }
    assert_eq!(backend.accepted(), 3);
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        0
    );
    assert_eq!(metric(&proxy, "weir_upstream_connections_idle").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_before_reading_the_body_still_gets_it_and_is_reused() {
    let backend = RawBackend::start(Mode::AnswerFirst).await;
    let proxy = proxy(&[backend.addr], "").await;
    let client = support::client();
    for n in 1..=5 {
        let request = http::Request::post(format!("{}/", proxy.url))
            .body(Full::new(Bytes::from(vec![b'x'; 64 * 1024])))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        // Later requests may find the connection still sending the last
        // body and take another; each connection serves them in order.
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(text.starts_with("conn="), "{n}: {text}");
    }
    assert!(backend.accepted() <= 5);
    let opened = metric(&proxy, "weir_upstream_connections_opened_total").await;
    let reused = metric(&proxy, "weir_upstream_connections_reused_total").await;
    assert_eq!(opened + reused, 5);
}

/// A client still sending its body when the backend has answered gets the
/// whole answer, told that the connection closes: weir ends it (it did not
/// read the body) with a lingering close, never with a reset that could
/// throw the answer away or fail the client's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_its_body_gets_the_early_answer_whole() {
    let backend = RawBackend::start(Mode::AnswerFirst).await;
    let proxy = proxy(&[backend.addr], "").await;
    let addr = proxy.url.trim_start_matches("http://").to_string();
    for n in 0..10 {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let (mut reading, mut writing) = tcp.into_split();
        // The whole body, sent while the answer comes back: most of it
        // after weir has stopped reading it.
        let sending = tokio::spawn(async move {
            let declared = 4 << 20;
            let head = format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {declared}\r\n\r\n");
            writing.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..declared / chunk.len() {
                writing.write_all(&chunk).await?;
            }
            writing.shutdown().await
        });
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            reading.read_to_end(&mut answer),
        )
        .await
        .expect("weir closes the connection after its answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(read.is_ok(), "{n}: {read:?} after {text:?}");
        assert!(text.starts_with("HTTP/1.1 200"), "{n}: {text}");
        assert!(text.contains("conn="), "{n}: the body whole: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{n}: the client is told the connection closes: {text}"
        );
        let sent = sending.await.unwrap();
        assert!(
            sent.is_ok(),
            "{n}: the body was taken whole, not reset: {sent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_requests_at_once_all_succeed_and_their_connections_stay_pooled() {
    let backend = RawBackend::start(Mode::KeepAlive).await;
    let proxy = proxy(&[backend.addr], "").await;
    let seen = spread(&format!("{}/", proxy.url), 400, 100).await;
    assert_eq!(seen.values().sum::<usize>(), 400, "{seen:?}");
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    let opened = metric(&proxy, "weir_upstream_connections_opened_total").await;
    let reused = metric(&proxy, "weir_upstream_connections_reused_total").await;
    assert_eq!(opened, backend.accepted());
    assert!(
        opened <= 400 && opened + reused == 400,
        "{opened} + {reused}"
    );
    assert!(reused >= 200, "{reused} of 400 reused");
    wait_for("no connection closed", || backend.open() == opened).await;
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_idle").await,
        opened
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_reuses_its_connection() {
    let dir = TempDir::new("pool-tls");
    let ca = TestCa::new("pool ca");
    let ca_file = ca.write(&dir.0, "ca.pem");
    let ours = TlsBackend::start("ours", &ca.server("backend", &["127.0.0.1"]), None).await;
    let tls = format!(
        "[upstreams.web.tls]\nca_file = {:?}\n",
        ca_file.display().to_string()
    );
    let proxy = proxy(&[ours.addr], &tls).await;
    let client = client();
    for _ in 0..10 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "ours\n"));
    }
    assert_eq!(ours.handshakes.load(Ordering::Relaxed), 1);
    assert_eq!(
        metric(&proxy, "weir_upstream_connections_reused_total").await,
        9
    );
}

/// The backend's answer fails with `status` and its connection is not
/// kept.
async fn hostile(mode: Mode, status: u16) {
    let bad = RawBackend::start(mode).await;
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
    wait_for("the hostile connections closed", || bad.open() == 0).await;
    assert_eq!(bad.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_headers_are_a_502() {
    hostile(Mode::HugeHeaders, 502).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_response_is_a_502() {
    hostile(Mode::Garbage, 502).await;
}

/// Hyper's client skipped 1xx responses without a bound, so a flood ran
/// to the request timeout (504); weir's codec takes at most 32 (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_1xx_responses_is_a_502_at_its_bound() {
    hostile(Mode::InfoFlood, 502).await;
}
