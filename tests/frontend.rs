//! The HTTP front end under hostile clients, with raw sockets against weir
//! on port 0: each limit's answer, its counter in `/metrics`, and that the
//! next good request on a fresh connection is served.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RR: &str = "[upstreams.web.balancer]\nplugin = \"round-robin\"\n";

/// A proxy to `backends` with `listener` lines in its listener, `route`
/// lines in its route, and an admin API.
async fn proxy(backends: &[SocketAddr], listener: &str, route: &str) -> TestProxy {
    let text = with_lines(&config_text(backends, RR, ""), listener, route);
    TestProxy::start(&format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n")).await
}

/// Writes `request` (as much as the server reads) and reads until the
/// server closes, at most 30 s.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    read_all(&mut stream).await
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        // A reset after an answer still leaves the answer read.
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    });
    read.await.expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until `/metrics` shows `reason` counted `count` times.
async fn counted(proxy: &TestProxy, reason: &str, count: u64) {
    let line = format!("weir_requests_refused_total{{reason=\"{reason}\"}} {count}\n");
    let addr = proxy.server.admin_addr().unwrap();
    let mut metrics = String::new();
    for _ in 0..600 {
        metrics = admin(addr, "GET", "/metrics", None, "").await.1;
        if metrics.contains(&line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{line} not in\n{metrics}");
}

/// A good request on a fresh connection is served.
async fn served(addr: SocketAddr) {
    let answer = exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_closed_after_the_header_timeout() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = proxy(&[backend.addr], "header_read_timeout_ms = 300", "").await;
    let addr = proxy.server.local_addrs()[0];
    // Nothing sent at all.
    assert_eq!(exchange(addr, b"").await, "");
    // Half a head, then nothing.
    assert_eq!(exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\n").await, "");
    // A trickle: a byte at a time keeps nothing open past the timeout.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let trickle = async {
        for byte in b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ".iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), trickle)
        .await
        .expect("the trickling client is cut off");
    counted(&proxy, "header_timeout", 3).await;
    assert_eq!(backend.requests(), 0);
    served(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    // Idle longer than the header timeout: hyper's own timer would close
    // it at the header timeout; the idle timeout is its own.
    let listener = "header_read_timeout_ms = 200\nidle_timeout_ms = 1500";
    let proxy = proxy(&[backend.addr], listener, "").await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("backend-1\n"), "{answer}");
        // Idle for more than the header timeout, less than the idle one.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(read_all(&mut stream).await, "", "closed without an answer");
    counted(&proxy, "idle_timeout", 1).await;
    counted(&proxy, "header_timeout", 0).await;
    served(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_both_timeouts_keeps_its_connection_and_the_next_head_is_timed() {
    // Busy for longer than the header and idle timeouts together: neither
    // runs while a request is open; the head owed after it still does.
    let backend =
        TestBackend::start("backend-1", Behaviour::Delay(Duration::from_millis(1500))).await;
    let listener = "header_read_timeout_ms = 300\nidle_timeout_ms = 600";
    let proxy = proxy(&[backend.addr], listener, "").await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("backend-1\n"), "{answer}");
    // Half a head at once, then nothing: the header timeout closes it,
    // not the idle one.
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert_eq!(read_all(&mut stream).await, "", "closed without an answer");
    counted(&proxy, "header_timeout", 1).await;
    counted(&proxy, "idle_timeout", 0).await;
    assert_eq!(backend.requests(), 1);
    served(addr).await;
}

/// A raw backend that reads one connection to its end and says what it
/// received and whether the connection was closed (EOF within 30 s).
async fn raw_backend() -> (SocketAddr, tokio::task::JoinHandle<(String, bool)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got));
        let closed = matches!(read.await, Ok(Ok(_)));
        (String::from_utf8_lossy(&got).into_owned(), closed)
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_its_backend_connection_is_closed() {
    let (backend, seen) = raw_backend().await;
    let proxy = proxy(&[backend], "body_read_timeout_ms = 300", "").await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body stopped arriving"),
        "{answer}"
    );
    let (got, closed) = seen.await.unwrap();
    assert!(got.ends_with("0123456789"), "{got}");
    assert!(closed, "the backend connection is closed, not pooled");
    counted(&proxy, "body_timeout", 1).await;
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let backend = upstream.backends().iter().next().unwrap().clone();
    assert_eq!(backend.stats.failures(), 0, "the backend is not blamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_body_framing_gets_400_and_its_backend_connection_is_closed() {
    for (body, reason) in [
        // A chunk size that is not hex.
        (&b"5\r\nhello\r\nzz\r\n"[..], "bad_body"),
        // A chunk cut short by the client closing.
        (&b"a\r\nhello"[..], "body_incomplete"),
    ] {
        let (backend, seen) = raw_backend().await;
        let proxy = proxy(&[backend], "", "").await;
        let addr = proxy.server.local_addrs()[0];
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
        stream.write_all(head).await.unwrap();
        stream.write_all(body).await.unwrap();
        if reason == "body_incomplete" {
            stream.shutdown().await.unwrap();
        }
        let answer = read_all(&mut stream).await;
        if reason == "bad_body" {
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
            assert!(answer.contains("framing is broken"), "{answer}");
        } else {
            // The client is gone: an answer, if any, is a 400, never a 502.
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
                "{answer}"
            );
        }
        let (got, closed) = seen.await.unwrap();
        assert!(got.contains("hello"), "{got}");
        assert!(
            !got.ends_with("0\r\n\r\n"),
            "not forwarded as complete: {got}"
        );
        assert!(closed, "the backend connection is closed, not pooled");
        counted(&proxy, reason, 1).await;
        let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
        let backend = upstream.backends().iter().next().unwrap().clone();
        assert_eq!(backend.stats.failures(), 0, "the backend is not blamed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_routes_limit_gets_413() {
    let backend = TestBackend::start("backend-1", Behaviour::Echo).await;
    let proxy = proxy(&[backend.addr], "", "max_request_body_bytes = 1000").await;
    let addr = proxy.server.local_addrs()[0];
    // Declared too large: refused before anything is forwarded.
    let big = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 2000\r\n\r\n{}",
        "a".repeat(2000)
    );
    let answer = exchange(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(backend.requests(), 0);
    // Streamed past it: cut when the count passes it.
    let chunk = format!("258\r\n{}\r\n", "b".repeat(600));
    let streamed = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let answer = exchange(addr, streamed.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("the request body is too large"), "{answer}");
    counted(&proxy, "body_too_large", 2).await;
    // Within the limit is served whole.
    let fits = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let answer = exchange(addr, fits.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("body-bytes: 600"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_at_accept() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = proxy(&[backend.addr], "max_connections = 2", "").await;
    let addr = proxy.server.local_addrs()[0];
    // Two connections hold the listener's slots (half a head each).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    // The third is closed unanswered; counted.
    let answer = exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(answer, "");
    counted(&proxy, "max_connections", 1).await;
    // A slot freed is a slot for the next client.
    held.pop();
    let mut tries = 0;
    loop {
        let answer = exchange(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        tries += 1;
        assert!(tries < 300, "no slot came free: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_request_on_a_redirecting_route_gets_308_to_https() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let route = "redirect_https = true\nredirect_https_port = 8443";
    let proxy = proxy(&[backend.addr], "", route).await;
    let addr = proxy.server.local_addrs()[0];
    let answer = exchange(
        addr,
        b"GET /a/b?c=1&d HTTP/1.1\r\nhost: shop.example:8080\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer.contains("\r\nlocation: https://shop.example:8443/a/b?c=1&d\r\n"),
        "{answer}"
    );
    // Hostile hosts: never a Location made of them.
    for host in [
        &b"evil.example\r\nx-injected: 1"[..],
        b"a.example/evil",
        b"a.example@evil.example",
        b"a\rb.example",
    ] {
        let mut request = b"GET / HTTP/1.1\r\nhost: ".to_vec();
        request.extend_from_slice(host);
        request.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        let answer = exchange(addr, &request).await;
        let head = answer.split("\r\n\r\n").next().unwrap_or("");
        assert!(!head.contains("x-injected"), "{answer}");
        if let Some(location) = head.lines().find(|l| l.starts_with("location:")) {
            assert_eq!(location, "location: https://evil.example:8443/", "{answer}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        }
    }
    assert_eq!(backend.requests(), 0, "no redirected request is forwarded");
}

/// Raw HTTP/2 frames, enough to misbehave with.
mod h2raw {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 1;
    pub const END_HEADERS: u8 = 4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// `GET /` for authority `x`, in HPACK (static indexes, literals not
    /// indexed), with `extra` bytes in one more header's value.
    pub fn get(extra: usize) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x01, 0x01, b'x'];
        if extra > 0 {
            block.extend_from_slice(&[0x00, 0x05]);
            block.extend_from_slice(b"x-big");
            // The length as an HPACK integer with a 7-bit prefix.
            block.push(0x7f);
            let mut rest = extra - 127;
            while rest >= 128 {
                block.push((rest % 128) as u8 | 0x80);
                rest /= 128;
            }
            block.push(rest as u8);
            block.extend(std::iter::repeat_n(b'a', extra));
        }
        block
    }

    /// The next frame: (kind, stream, payload); none when the connection
    /// ends.
    pub async fn next(stream: &mut tokio::net::TcpStream) -> Option<(u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((head[3], id, payload))
    }

    /// Reads frames until the connection ends (at most 30 s); returns
    /// (kind, stream, first payload bytes) of each.
    pub async fn frames(stream: &mut tokio::net::TcpStream) -> Vec<(u8, u32, Vec<u8>)> {
        let mut got = Vec::new();
        let read = async {
            while let Some((kind, id, mut payload)) = next(stream).await {
                payload.truncate(8);
                got.push((kind, id, payload));
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), read).await;
        got
    }

    /// The GOAWAY's error code, if one came.
    pub fn goaway(frames: &[(u8, u32, Vec<u8>)]) -> Option<u32> {
        frames
            .iter()
            .find(|(kind, _, _)| *kind == GOAWAY)
            .map(|(_, _, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
    }
}

/// An HTTP/2 client doing the right thing alongside a misbehaving one.
async fn h2_get(addr: SocketAddr) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), response).await;
    response.unwrap().unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_is_closed_with_goaway_and_others_are_served() {
    use h2raw::*;
    let backend =
        TestBackend::start("backend-1", Behaviour::Delay(Duration::from_millis(50))).await;
    let proxy = proxy(&[backend.addr], "", "").await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(SETTINGS, 0, 0, &[]));
    // Open a stream and cancel it at once, a thousand times.
    for n in 0..1000u32 {
        let id = 2 * n + 1;
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get(0)));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = stream.write_all(&flood).await;
    let frames = frames(&mut stream).await;
    assert_eq!(goaway(&frames), Some(0xb), "ENHANCE_YOUR_CALM: {frames:?}");
    counted(&proxy, "h2_flood", 1).await;
    assert_eq!(h2_get(addr).await, 200);
    assert!(backend.requests() < 1000, "the flood was cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_over_the_limit_are_refused_then_the_connection_closed() {
    use h2raw::*;
    let backend = TestBackend::start("backend-1", Behaviour::Hang).await;
    let proxy = proxy(&[backend.addr], "h2_max_concurrent_streams = 5", "").await;
    let addr = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(SETTINGS, 0, 0, &[]));
    // Streams left open (no END_STREAM), far over the limit of five.
    for n in 0..300u32 {
        flood.extend(frame(HEADERS, END_HEADERS, 2 * n + 1, &get(0)));
    }
    let _ = stream.write_all(&flood).await;
    let frames = frames(&mut stream).await;
    let refused = frames
        .iter()
        .filter(|(kind, _, p)| *kind == RST_STREAM && p[..4] == 7u32.to_be_bytes())
        .count();
    assert!(
        refused >= 50,
        "REFUSED_STREAM for those over the limit: {frames:?}"
    );
    assert_eq!(goaway(&frames), Some(0xb), "ENHANCE_YOUR_CALM: {frames:?}");
    counted(&proxy, "h2_flood", 1).await;
    assert!(backend.requests() <= 5, "only five streams went through");
    let good = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = self::proxy(&[good.addr], "h2_max_concurrent_streams = 5", "").await;
    assert_eq!(h2_get(proxy.server.local_addrs()[0]).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_header_list_over_the_limit_gets_431_on_its_stream() {
    use h2raw::*;
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = proxy(&[backend.addr], "max_request_head_bytes = 16384", "").await;
    let addr = proxy.server.local_addrs()[0];
    let big = get(20_000);
    let (first, rest) = big.split_at(16_000);
    let oversized = |id: u32| {
        let mut out = frame(HEADERS, END_STREAM, id, first);
        out.extend(frame(CONTINUATION, END_HEADERS, id, rest));
        out
    };
    // One: answered on its stream, the connection stays.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut one = PREFACE.to_vec();
    one.extend(frame(SETTINGS, 0, 0, &[]));
    one.extend(oversized(1));
    one.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &get(0)));
    stream.write_all(&one).await.unwrap();
    let mut seen = Vec::new();
    let read = async {
        while let Some((kind, id, _)) = next(&mut stream).await {
            seen.push((kind, id));
            if kind == HEADERS && id == 3 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap();
    assert!(
        seen.contains(&(HEADERS, 1)),
        "an answer on stream 1: {seen:?}"
    );
    assert!(!seen.iter().any(|(kind, _)| *kind == GOAWAY), "{seen:?}");
    assert_eq!(backend.requests(), 1, "only the good stream was forwarded");
    // Many: each answered on its stream, none decoded for a backend; the
    // header block's size is bounded, so a flood of them costs only that.
    let mut flood = Vec::new();
    for n in 0..150u32 {
        flood.extend(oversized(2 * n + 5));
    }
    stream.write_all(&flood).await.unwrap();
    let mut answered = 0;
    let read = async {
        while answered < 150 {
            let (kind, _, payload) = next(&mut stream).await.expect("the connection stays");
            assert_ne!(kind, GOAWAY, "{payload:?}");
            if kind == HEADERS {
                answered += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap();
    assert_eq!(backend.requests(), 1, "only the good stream was forwarded");
    assert_eq!(h2_get(addr).await, 200);
}
