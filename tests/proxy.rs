//! The proxy path end to end: real weir, real backends, real plugins.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const RR: &str = "[upstreams.web.balancer]\nplugin = \"round-robin\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_plugin_spreads_3000_requests_evenly() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = TestProxy::start(&config_text(&addrs, RR, "")).await;

    let counts = spread(&proxy.url, 3000, 6).await;

    assert_eq!(counts.values().sum::<usize>(), 3000, "{counts:?}");
    for backend in &backends {
        let n = counts[&(200, backend.name.clone())];
        assert!(
            (980..=1020).contains(&n),
            "{} got {n} of 3000: {counts:?}",
            backend.name
        );
        assert_eq!(backend.requests(), n as u64);
    }
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let pool = &upstream.balancer().unwrap().pool;
    assert_eq!(pool.failures(), 0);
    assert_eq!(pool.calls(), 3000, "every request was chosen by the plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_choice_is_honoured() {
    let one = TestBackend::start("backend-1", Behaviour::Name).await;
    let two = TestBackend::start("backend-2", Behaviour::Name).await;
    let text = config_text(
        &[one.addr, two.addr],
        "[upstreams.web.balancer]\nplugin = \"choose-first\"\n",
        "",
    );
    let proxy = TestProxy::start(&text).await;
    let counts = spread(&proxy.url, 50, 5).await;
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&50),
        "{counts:?}"
    );
    assert_eq!(two.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_gives_502_and_others_keep_serving() {
    let dead = dead_addr().await;
    let proxy = TestProxy::start(&config_text(&[dead], RR, "")).await;
    let (status, body) = get(&client(), &format!("{}/x", proxy.url)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("could not connect"), "{body}");
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let backend = upstream.backends().iter().next().unwrap().clone();
    assert_eq!(backend.stats.failures(), 1);
    assert_eq!(backend.stats.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gives_504() {
    let hang = TestBackend::start("backend-1", Behaviour::Hang).await;
    let text = config_text(&[hang.addr], "request_timeout_ms = 200\n", "");
    let proxy = TestProxy::start(&text).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&client(), &proxy.url).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(hang.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_without_backends_gives_503_and_unrouted_gives_404() {
    let text = config_text(&[], RR, "").replace(
        "[[routes]]\nupstream = \"web\"",
        "[[routes]]\npath_prefix = \"/app\"\nupstream = \"web\"",
    );
    let proxy = TestProxy::start(&text).await;
    let (status, body) = get(&client(), &format!("{}/app/x", proxy.url)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = get(&client(), &format!("{}/other", proxy.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_host_and_longest_prefix() {
    let a = TestBackend::start("api", Behaviour::Name).await;
    let b = TestBackend::start("site", Behaviour::Name).await;
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\nupstream = \"site\"\n\
         [[routes]]\nhost = \"api.example.com\"\npath_prefix = \"/v1\"\nupstream = \"api\"\n\
         [upstreams.api]\nbackends = [{{ address = \"{}\" }}]\n\
         [upstreams.site]\nbackends = [{{ address = \"{}\" }}]\n",
        a.addr, b.addr
    );
    let proxy = TestProxy::start(&text).await;
    let client = client();
    let send = |host: &'static str, path: &'static str| {
        let request = Request::get(format!("{}{path}", proxy.url))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(request)
    };
    let body = |r: http::Response<hyper::body::Incoming>| async move {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    assert_eq!(
        body(send("api.example.com", "/v1/users").await.unwrap()).await,
        "api\n"
    );
    assert_eq!(
        body(send("API.example.com:80", "/v1").await.unwrap()).await,
        "api\n"
    );
    assert_eq!(
        body(send("api.example.com", "/v2").await.unwrap()).await,
        "site\n"
    );
    assert_eq!(
        body(send("www.example.com", "/v1").await.unwrap()).await,
        "site\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_rewritten_and_bodies_streamed_both_ways() {
    let echo = TestBackend::start("echo", Behaviour::Echo).await;
    let proxy = TestProxy::start(&config_text(&[echo.addr], RR, "")).await;
    let payload = vec![b'x'; 3 * 1024 * 1024];
    let request = Request::post(format!("{}/upload?q=1", proxy.url))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from(payload)))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.starts_with("POST /upload?q=1 HTTP/1.1\n"), "{text}");
    assert!(text.contains("host: shop.example\n"), "{text}");
    assert!(text.contains("x-custom: kept\n"), "{text}");
    assert!(
        text.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(text.contains("x-forwarded-host: shop.example\n"), "{text}");
    assert!(!text.contains("x-hop"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
    assert!(text.contains("body-bytes: 3145728\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_clients_are_served() {
    let echo = TestBackend::start("echo", Behaviour::Echo).await;
    let proxy = TestProxy::start(&config_text(&[echo.addr], RR, "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client
        .get(format!("{}/h2", proxy.url).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    // The backend gets HTTP/1.1 with the client's authority as Host.
    assert!(text.starts_with("GET /h2 HTTP/1.1\n"), "{text}");
    assert!(
        text.contains(&format!(
            "host: {}\n",
            proxy.url.trim_start_matches("http://")
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_gets_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = TestProxy::start(&config_text(&[backend.addr], RR, "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.server.local_addrs()[0])
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(backend.requests(), 0);
}

/// RFC 9112 section 3.2: no `Host` on HTTP/1.1, two of them, or a bad one
/// is a 400 before routing, counted by reason, and reaches no backend; the
/// next good request on a fresh connection is served.
#[tokio::test]
async fn requests_breaking_the_host_rules_get_400_and_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        config_text(&[backend.addr], RR, "")
    );
    let proxy = TestProxy::start(&text).await;
    let addr = proxy.server.local_addrs()[0];
    let raw = |request: &'static [u8]| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    for (request, why) in [
        (
            &b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n"[..],
            "needs a Host header",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
            "one Host header",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n",
            "not a valid host",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: evil@a\r\nconnection: close\r\n\r\n",
            "not a valid host",
        ),
    ] {
        let answer = raw(request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains(why), "{answer}");
    }
    assert_eq!(backend.requests(), 0);
    // HTTP/1.0 may leave Host out; a good HTTP/1.1 request is served.
    let answer = raw(b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}"
    );
    let answer = raw(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let admin_addr = proxy.server.admin_addr().unwrap();
    let (status, metrics) = admin(admin_addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    for line in [
        "weir_requests_refused_total{reason=\"missing_host\"} 1",
        "weir_requests_refused_total{reason=\"duplicate_host\"} 1",
        "weir_requests_refused_total{reason=\"bad_host\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// A head over the listener's `max_request_head_bytes` gets 431, a long
/// request line included (414 needs a line over 64 KiB that fits the
/// limit); neither reaches a backend, both are counted, and the next good
/// request on a fresh connection is served.
#[tokio::test]
async fn oversized_request_heads_get_431_and_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(&[backend.addr], RR, "").replacen(
        "[[listeners]]\n",
        "[[listeners]]\nmax_request_head_bytes = 16384\n",
        1,
    );
    let text = format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n");
    assert!(text.contains("max_request_head_bytes = 16384"), "{text}");
    let proxy = TestProxy::start(&text).await;
    let addr = proxy.server.local_addrs()[0];
    let raw = |request: Vec<u8>| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before it has read it all.
        let _ = stream.write_all(&request).await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let big_header = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw(big_header.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let long_line = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let answer = raw(long_line.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Just under the limit is served.
    let fits = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(12_000)
    );
    let answer = raw(fits.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.requests(), 1);
    let admin_addr = proxy.server.admin_addr().unwrap();
    let metric = "weir_requests_refused_total{reason=\"head_too_large\"} 2";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = admin(admin_addr, "GET", "/metrics", None, "").await.1;
        if metrics.contains(metric) {
            break;
        }
        // The count lands when the refused connection's task ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(metric), "{metric} in\n{metrics}");
}
