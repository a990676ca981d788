//! HTTP/2 to backends (`protocol = "h2c"` and `"h2"`), against weir started
//! from the library on port 0 and real HTTP/2 servers (hyper's, plain and
//! TLS with ALPN): multiplexing and its per-connection limit, trailers,
//! GOAWAY, PINGs finding a dead connection, idle connections closed,
//! backends that do not speak HTTP/2, and h2load through it all.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use support::certs::TestCa;
use support::h2_backend::{H2Backend, H2Options};
use support::{TempDir, TestProxy, client, config_text, get, spread, wait_for};

/// weir in front of `backends` with `protocol = "h2c"` and `extra` keys.
async fn h2c_proxy(backends: &[SocketAddr], extra: &str) -> TestProxy {
    let upstream = format!("protocol = \"h2c\"\n{extra}");
    let admin = "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    TestProxy::start(&(config_text(backends, &upstream, "") + admin)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_an_h2c_backend_multiplexed_on_one_connection() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200, "{body}");
    // HTTP/2 to the backend, the client's host as :authority, no TE (the
    // client sent none), and the forwarding headers.
    let host = proxy.url.trim_start_matches("http://");
    assert_eq!(
        body,
        format!("b1 HTTP/2.0 authority={host} te=- xff=127.0.0.1\n")
    );
    let seen = spread(&format!("{}/", proxy.url), 200, 20).await;
    assert_eq!(seen.values().sum::<usize>(), 200, "{seen:?}");
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    // 20 at a time fit in one connection's 100 streams.
    assert_eq!(backend.opened(), 1);
    assert_eq!(backend.requests(), 201);
    let metrics = support::metrics_text(&proxy).await;
    for series in [
        "weir_upstream_h2_connections{upstream=\"web\"} 1",
        "weir_upstream_h2_connections_opened_total{upstream=\"web\"} 1",
        "weir_upstream_h2_connect_failures_total{upstream=\"web\"} 0",
        "weir_upstream_h2_streams{upstream=\"web\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_streams_per_connection_another_connection_opens() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let extra = "h2 = { max_streams_per_connection = 4 }";
    let proxy = h2c_proxy(&[backend.addr], extra).await;
    // 20 requests held open at once need at least 5 connections of 4.
    let seen = spread(&format!("{}/hold?ms=400", proxy.url), 20, 20).await;
    assert_eq!(seen.values().sum::<usize>(), 20, "{seen:?}");
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    let opened = backend.opened();
    assert!((5..=20).contains(&opened), "{opened} connections");
    // Later requests reuse them: no new connection for 40 more, 4 at a time.
    let seen = spread(&format!("{}/", proxy.url), 40, 4).await;
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    assert_eq!(backend.opened(), opened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_own_lower_stream_limit_opens_more_connections() {
    let options = H2Options {
        max_concurrent_streams: Some(2),
        ..H2Options::default()
    };
    let backend = H2Backend::start("b1", options).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    // Once its SETTINGS say 2, requests do not queue behind its limit on
    // one connection: more connections open.
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
    let seen = spread(&format!("{}/hold?ms=400", proxy.url), 10, 10).await;
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    let opened = backend.opened();
    assert!(
        opened >= 5,
        "{opened} connections for 10 streams of at most 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_checks_of_an_h2c_upstream_speak_http2() {
    // hyper's HTTP/2 server speaks nothing else: an HTTP/1.1 check fails.
    let up = H2Backend::start("b1", H2Options::default()).await;
    let old = H2Backend::start(
        "old",
        H2Options {
            http1_only: true,
            ..H2Options::default()
        },
    )
    .await;
    let extra =
        "[upstreams.web.health_check]\npath = \"/healthz\"\ninterval_ms = 50\nfall = 2\nrise = 1";
    let proxy = h2c_proxy(&[up.addr, old.addr], extra).await;
    wait_for(
        "the HTTP/1.1-only backend to fail its HTTP/2 checks",
        || support::health_of(&proxy, "backend-2") == weir::upstream::Health::Unhealthy,
    )
    .await;
    wait_for("three checks of the HTTP/2 backend", || up.requests() >= 3).await;
    assert_eq!(
        support::health_of(&proxy, "backend-1"),
        weir::upstream::Health::Healthy
    );
    for _ in 0..4 {
        let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("b1 HTTP/2.0"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_to_an_http2_upstream_is_refused_with_501() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.server.local_addrs()[0])
        .await
        .unwrap();
    let request = "GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tcp.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert_eq!(backend.requests(), 0);
}

/// One request over HTTP/2 (prior knowledge) to weir: status, body and
/// trailers.
async fn h2_get(proxy: &TestProxy, path: &str, te: bool) -> (u16, String, Option<http::HeaderMap>) {
    let addr = proxy.server.local_addrs()[0];
    let mut sender = support::h2_connect(addr).await;
    let mut request = Request::get(format!("http://{addr}{path}"));
    if te {
        request = request.header("te", "trailers");
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    (status, body, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_and_te_trailers_reaches_the_backend() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let (status, body, trailers) = h2_get(&proxy, "/trailers", true).await;
    assert_eq!((status, body.as_str()), (200, "data"));
    let trailers = trailers.expect("the backend's trailers reached the client");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(trailers["x-count"], "2");
    // TE: trailers is the one TE HTTP/2 allows, and is passed on.
    let (_, body, _) = h2_get(&proxy, "/", true).await;
    assert!(body.contains(" te=trailers "), "{body}");
    // An HTTP/1.1 client gets the body; the trailers need not reach it.
    let (status, body) = get(&client(), &format!("{}/trailers", proxy.url)).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    // 8 MiB up and back: past every flow-control window on both hops.
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let request = Request::post(format!("{}/echo", proxy.url))
        .body(http_body_util::Full::new(Bytes::from(body.clone())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "the echoed body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_needs_the_backend_to_choose_h2_in_alpn() {
    let dir = TempDir::new("h2-tls");
    let ca = TestCa::new("weir test CA");
    let ca_file = ca.write(&dir.0, "ca");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let h2 = H2Backend::start(
        "tls-h2",
        H2Options {
            tls: Some((leaf.clone(), vec![b"h2".to_vec()])),
            ..H2Options::default()
        },
    )
    .await;
    // One that ignores ALPN (serving HTTP/1.1): weir sees it chose none.
    let ignores = H2Backend::start(
        "tls-no-alpn",
        H2Options {
            tls: Some((leaf.clone(), vec![])),
            http1_only: true,
            ..H2Options::default()
        },
    )
    .await;
    // One that knows only http/1.1 (rustls): it refuses the handshake.
    let refuses = H2Backend::start(
        "tls-h1",
        H2Options {
            tls: Some((leaf, vec![b"http/1.1".to_vec()])),
            ..H2Options::default()
        },
    )
    .await;
    for (backend, expected) in [
        (&h2, Ok("tls-h2 HTTP/2.0")),
        (&ignores, Err("does not speak HTTP/2")),
        (&refuses, Err("TLS with the backend failed")),
    ] {
        let upstream = format!("protocol = \"h2\"\n[upstreams.web.tls]\nca_file = {ca_file:?}\n");
        let proxy = TestProxy::start(&config_text(&[backend.addr], &upstream, "")).await;
        let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
        match expected {
            Ok(start) => {
                assert_eq!(status, 200, "{body}");
                assert!(body.starts_with(start), "{body}");
            }
            Err(why) => {
                assert_eq!(status.as_u16(), 502, "{body}");
                assert!(body.contains(why), "{body}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upstream_whose_backend_speaks_only_http1_is_a_502() {
    let options = H2Options {
        http1_only: true,
        ..H2Options::default()
    };
    let backend = H2Backend::start("old", options).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("the backend connection failed"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_headers_are_a_502_and_the_connection_serves_on() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let client = client();
    let (status, body) = get(&client, &format!("{}/big-headers", proxy.url)).await;
    assert_eq!(status, 502, "{body}");
    for _ in 0..3 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_goes_silent_is_found_dead_by_ping() {
    // Accepts and reads, never writes: no SETTINGS, no answer, no PONG.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    // The request timeout is a minute: only the PING can end it sooner,
    // which a 502 (not a 504) shows.
    let extra =
        "request_timeout_ms = 60000\nh2 = { ping_interval_ms = 200, ping_timeout_ms = 300 }";
    let proxy = h2c_proxy(&[addr], extra).await;
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 502, "{body}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_goaway_requests_go_on_a_new_connection() {
    let options = H2Options {
        goaway_after: Some(5),
        ..H2Options::default()
    };
    let backend = H2Backend::start("b1", options).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let client = client();
    for i in 0..30 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    // hyper's graceful shutdown is two GOAWAYs a PING apart: the first
    // names the highest stream id, so a request the proxy sends before it
    // arrives is still served there. Each connection serves five requests
    // and may serve a few more, never many: 30 need at least three.
    assert!(backend.opened() >= 3, "{} connections", backend.opened());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "idle_timeout_ms = 300").await;
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
    wait_for("the idle HTTP/2 connection to close", || {
        backend.closed() == 1
    })
    .await;
    // The next request opens a new one.
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
    assert_eq!(backend.opened(), 2);
}

/// h2load's `N succeeded, 0 failed` line for `requests` to `url`.
async fn h2load(url: String, requests: usize) -> String {
    let output = tokio::task::spawn_blocking(move || {
        let n = requests.to_string();
        std::process::Command::new("h2load")
            .args(["-n", &n, "-c", "8", "-m", "10", &url])
            .output()
            .expect("h2load (nghttp2-client, installed by .ci/toolchains)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let expected = format!("{requests} succeeded, 0 failed, 0 errored");
    assert!(text.contains(&expected), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_through_weir_to_an_h2_backend() {
    let backend = H2Backend::start("b1", H2Options::default()).await;
    let proxy = h2c_proxy(&[backend.addr], "").await;
    let text = h2load(format!("{}/", proxy.url), 4000).await;
    // 80 streams at a time fit one connection of 100.
    assert_eq!(backend.opened(), 1, "{text}");
    assert_eq!(backend.requests(), 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_tls_through_weir_to_an_h2_backend_over_tls() {
    let dir = TempDir::new("h2load-tls");
    let ca = TestCa::new("weir test CA");
    let ca_file = ca.write(&dir.0, "ca");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let (cert, key) = leaf.write(&dir.0, "front");
    let options = H2Options {
        tls: Some((leaf, vec![b"h2".to_vec()])),
        ..H2Options::default()
    };
    let backend = H2Backend::start("b1", options).await;
    let upstream = format!("protocol = \"h2\"\n[upstreams.web.tls]\nca_file = {ca_file:?}\n");
    let listener_tls = format!(
        "\n[listeners.tls]\n[[listeners.tls.certificates]]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n[access_log]"
    );
    let text =
        config_text(&[backend.addr], &upstream, "").replacen("\n\n[access_log]", &listener_tls, 1);
    let proxy = TestProxy::start(&text).await;
    let addr = proxy.server.local_addrs()[0];
    let text = h2load(format!("https://{addr}/"), 2000).await;
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert_eq!(backend.opened(), 1, "{text}");
    assert_eq!(backend.requests(), 2000);
}
