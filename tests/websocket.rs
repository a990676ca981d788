//! Upgrades and WebSocket tunnels through weir, with Python `websockets`
//! clients and servers and raw sockets on port 0: echoes small and large,
//! spread by a balancer plugin, pinned by consistent hashing, closed by the
//! backend, by a drain, by silence and by a vanished backend, counted in
//! flight and in `/metrics`; and the hostile cases (upgrade smuggling,
//! unasked `101`s, bodies, too many tunnels).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::websocket::{WsBackend, WsClients};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RR: &str = "[upstreams.web.balancer]\nplugin = \"round-robin\"\n";

/// Runs blocking peer I/O without stalling the runtime weir runs on.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A weir with an admin API in front of `backends`; `upstream` lines go
/// into `[upstreams.web]` (before its balancer), `listener` lines into the
/// listener.
async fn proxy(backends: &[SocketAddr], upstream: &str, listener: &str) -> TestProxy {
    let text = config_text(backends, &format!("{upstream}\n{RR}"), "").replacen(
        "[[listeners]]\n",
        &format!("[[listeners]]\n{listener}\n"),
        1,
    );
    TestProxy::start(&format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n")).await
}

fn ws_url(proxy: &TestProxy) -> String {
    proxy.url.replace("http://", "ws://") + "/chat"
}

/// The value of the sample `name{labels}` in `/metrics` (0 when absent).
async fn metric(proxy: &TestProxy, sample: &str) -> u64 {
    let text = metrics_text(proxy).await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |v| v.parse().unwrap())
}

fn backend_labels(backend: &str) -> String {
    format!("{{upstream=\"web\",backend=\"{backend}\"}}")
}

fn with_reason(backend: &str, reason: &str) -> String {
    format!("{{upstream=\"web\",backend=\"{backend}\",reason=\"{reason}\"}}")
}

/// Waits until `sample` reads `value`.
async fn metric_is(proxy: &TestProxy, sample: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(proxy, sample).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} stayed {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_one_mib_messages_echo_and_the_tunnel_writes_one_log_line() {
    let backend = WsBackend::start("backend-1");
    let dir = TempDir::new("ws-log");
    let log = dir.0.join("access.log");
    let text = config_text(&[backend.addr()], RR, "").replace(
        "[access_log]\nenabled = false",
        &format!(
            "[access_log]\nenabled = true\nformat = \"text\"\npath = {:?}",
            log.display().to_string()
        ),
    );
    let proxy = TestProxy::start(&text).await;
    let url = ws_url(&proxy);
    blocking(|| {
        let mut clients = WsClients::open(&url, 1, &[]);
        assert_eq!(clients.names, ["backend-1"]);
        assert_eq!(clients.echo(10), ["ok"]);
        assert_eq!(clients.echo(1 << 20), ["ok"]);
        clients.quit();
    });
    let mut line = String::new();
    wait_for("the tunnel's access-log line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .find(|l| l.contains("status=101"))
            .unwrap_or("")
            .to_string();
        !line.is_empty()
    })
    .await;
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=\"/chat\""), "{line}");
    assert!(line.contains("backend=backend-1"), "{line}");
    assert!(line.contains("upgrade=\"websocket\""), "{line}");
    // The client closes; in WebSocket's closing handshake the server then
    // closes the TCP connection first.
    assert!(
        line.contains("ended=backend_closed") || line.contains("ended=client_closed"),
        "{line}"
    );
    let number = |key: &str| -> u64 {
        let at = line.find(&format!(" {key}=")).unwrap() + key.len() + 2;
        line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    // Both ways: the frames of 1 MiB and more, and the handshake's echo.
    assert!(number("bytes") > 1 << 20, "{line}");
    assert!(number("bytes_received") > 1 << 20, "{line}");
    // One line for the tunnel, none for anything else.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sockets_spread_over_three_backends_and_count_in_flight() {
    let backends: Vec<_> = (1..=3)
        .map(|i| WsBackend::start(&format!("backend-{i}")))
        .collect();
    let addrs: Vec<_> = backends.iter().map(WsBackend::addr).collect();
    let proxy = proxy(&addrs, "", "").await;
    let url = ws_url(&proxy);
    let clients = blocking(|| WsClients::open(&url, 200, &[]));
    let spread = clients.spread();
    assert_eq!(spread.len(), 3, "{spread:?}");
    for (name, count) in &spread {
        // Round robin over pooled plugin instances: about a third each.
        assert!((50..=84).contains(count), "{name}: {spread:?}");
        let labels = backend_labels(name);
        let open = format!("weir_tunnels_open{labels}");
        metric_is(&proxy, &open, *count as u64).await;
        let in_flight = format!("weir_backend_in_flight{labels}");
        metric_is(&proxy, &in_flight, *count as u64).await;
    }
    assert_eq!(proxy.server.open_tunnels(), 200);
    blocking(|| clients.quit());
    for name in spread.keys() {
        let labels = backend_labels(name);
        metric_is(&proxy, &format!("weir_tunnels_open{labels}"), 0).await;
        metric_is(&proxy, &format!("weir_backend_in_flight{labels}"), 0).await;
        // Closed by the client's close frame, the TCP close by either side.
        let ended = |reason| format!("weir_tunnels_total{}", with_reason(name, reason));
        let by_client = metric(&proxy, &ended("client_closed")).await;
        let by_backend = metric(&proxy, &ended("backend_closed")).await;
        assert_eq!(by_client + by_backend, spread[name] as u64, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_reaches_the_client_with_its_code() {
    let backend = WsBackend::start("backend-1");
    let proxy = proxy(&[backend.addr()], "", "").await;
    let url = ws_url(&proxy);
    blocking(|| {
        let mut clients = WsClients::open(&url, 2, &[]);
        clients.command("send close:4001");
        assert_eq!(clients.closed("backend-1"), ["closed:4001", "closed:4001"]);
    });
    let ended = format!(
        "weir_tunnels_total{}",
        with_reason("backend-1", "backend_closed")
    );
    metric_is(&proxy, &ended, 2).await;
    metric_is(
        &proxy,
        &format!("weir_backend_in_flight{}", backend_labels("backend-1")),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backends_tunnels_close_after_the_grace_and_the_others_stay() {
    let backends: Vec<_> = (1..=3)
        .map(|i| WsBackend::start(&format!("backend-{i}")))
        .collect();
    let addrs: Vec<_> = backends.iter().map(WsBackend::addr).collect();
    let proxy = proxy(&addrs, "tunnel_drain_grace_ms = 300", "").await;
    let url = ws_url(&proxy);
    let mut clients = blocking(|| WsClients::open(&url, 30, &[]));
    let on_first = clients.spread()["backend-1"];
    let admin_addr = proxy.server.admin_addr().unwrap();
    let (status, answer) = admin(
        admin_addr,
        "POST",
        "/upstreams/web/backends/backend-1/drain",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let closed = blocking(|| clients.closed("backend-1"));
    assert_eq!(closed.len(), on_first);
    assert!(
        closed.iter().all(|c| c.starts_with("closed:")),
        "{closed:?}"
    );
    let echoes = blocking(|| clients.echo(100));
    for (name, echo) in clients.names.iter().zip(&echoes) {
        if name == "backend-1" {
            assert!(echo.starts_with("closed:"), "{name}: {echo}");
        } else {
            assert_eq!(echo, "ok", "{name}");
        }
    }
    let drained = format!("weir_tunnels_total{}", with_reason("backend-1", "drained"));
    metric_is(&proxy, &drained, on_first as u64).await;
    let b1 = backend_labels("backend-1");
    metric_is(&proxy, &format!("weir_backend_in_flight{b1}"), 0).await;
    metric_is(&proxy, &format!("weir_tunnels_open{b1}"), 0).await;
    let others = 30 - on_first as u64;
    let open_elsewhere = metric(
        &proxy,
        &format!("weir_tunnels_open{}", backend_labels("backend-2")),
    )
    .await
        + metric(
            &proxy,
            &format!("weir_tunnels_open{}", backend_labels("backend-3")),
        )
        .await;
    assert_eq!(open_elsewhere, others);
    blocking(|| clients.quit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_removed_by_the_admin_api_loses_its_tunnels() {
    let backends: Vec<_> = (1..=2)
        .map(|i| WsBackend::start(&format!("backend-{i}")))
        .collect();
    let addrs: Vec<_> = backends.iter().map(WsBackend::addr).collect();
    let proxy = proxy(&addrs, "tunnel_drain_grace_ms = 0", "").await;
    let url = ws_url(&proxy);
    let mut clients = blocking(|| WsClients::open(&url, 4, &[]));
    // Each pooled plugin instance keeps its own rotation, so 4 sockets
    // over 2 workers need not split 2/2; count where they landed.
    let spread = clients.spread();
    let on_second = spread.get("backend-2").copied().unwrap_or(0);
    let on_first = spread.get("backend-1").copied().unwrap_or(0);
    assert!(on_second > 0, "no socket landed on backend-2: {spread:?}");
    let admin_addr = proxy.server.admin_addr().unwrap();
    let (status, answer) = admin(
        admin_addr,
        "DELETE",
        "/upstreams/web/backends/backend-2",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let closed = blocking(|| clients.closed("backend-2"));
    assert_eq!(closed.len(), on_second);
    assert!(
        closed.iter().all(|c| c.starts_with("closed:")),
        "{closed:?}"
    );
    let echoes = blocking(|| clients.echo(10));
    let kept: Vec<_> = clients
        .names
        .iter()
        .zip(&echoes)
        .filter(|(name, _)| *name == "backend-1")
        .map(|(_, echo)| echo.as_str())
        .collect();
    assert_eq!(kept, vec!["ok"; on_first]);
    blocking(|| clients.quit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tunnel_is_closed_by_the_idle_timeout_and_counted() {
    let backend = WsBackend::start("backend-1");
    let proxy = proxy(&[backend.addr()], "tunnel_idle_timeout_ms = 300", "").await;
    let url = ws_url(&proxy);
    blocking(|| {
        let mut clients = WsClients::open(&url, 1, &[]);
        let closed = clients.closed("backend-1");
        assert!(closed[0].starts_with("closed:"), "{closed:?}");
    });
    let idle = format!("weir_tunnels_total{}", with_reason("backend-1", "idle"));
    metric_is(&proxy, &idle, 1).await;
    metric_is(
        &proxy,
        &format!("weir_backend_in_flight{}", backend_labels("backend-1")),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_passing_bytes_outlives_the_listeners_idle_timeout() {
    let backend = WsBackend::start("backend-1");
    let proxy = proxy(
        &[backend.addr()],
        "",
        "idle_timeout_ms = 100\nheader_read_timeout_ms = 100",
    )
    .await;
    let url = ws_url(&proxy);
    blocking(|| {
        let mut clients = WsClients::open(&url, 1, &[]);
        // Ten spells of half the listener's idle timeout and more.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(clients.echo(100), ["ok"]);
        }
        clients.quit();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_vanishing_mid_stream_closes_the_client_and_frees_the_backend() {
    let mut backend = WsBackend::start("backend-1");
    let proxy = proxy(&[backend.addr()], "", "").await;
    let url = ws_url(&proxy);
    let b1 = backend_labels("backend-1");
    let mut clients = blocking(|| WsClients::open(&url, 3, &[]));
    metric_is(&proxy, &format!("weir_backend_in_flight{b1}"), 3).await;
    backend.kill();
    let closed = blocking(|| clients.closed("backend-1"));
    assert!(
        closed.iter().all(|c| c.starts_with("closed:")),
        "{closed:?}"
    );
    metric_is(&proxy, &format!("weir_backend_in_flight{b1}"), 0).await;
    metric_is(&proxy, &format!("weir_tunnels_open{b1}"), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_pins_a_websocket_where_plain_requests_with_its_key_go() {
    let backends: Vec<_> = (1..=3)
        .map(|i| WsBackend::start(&format!("backend-{i}")))
        .collect();
    let addrs: Vec<_> = backends.iter().map(WsBackend::addr).collect();
    let text = config_text(
        &addrs,
        "[upstreams.web.balancer]\nplugin = \"consistent-hash\"\nsettings = { key = \"header:x-user-id\" }\n",
        "",
    );
    let proxy = TestProxy::start(&text).await;
    let url = ws_url(&proxy);
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        let (status, _, plain) =
            send(&format!("{}/chat", proxy.url), &[("x-user-id", &user)]).await;
        assert_eq!(status, 200, "{plain}");
        let clients = blocking(|| WsClients::open(&url, 3, &[("x-user-id", &user)]));
        assert_eq!(clients.names, vec![plain.trim().to_string(); 3], "{user}");
        seen.insert(plain.trim().to_string());
        blocking(|| clients.quit());
    }
    assert!(seen.len() > 1, "every key on one backend: {seen:?}");
}

/// A raw backend: answers every connection's first head with `answer`,
/// then echoes; the heads it read come out of the channel.
async fn raw_backend(
    answer: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = heads.send(String::from_utf8_lossy(&head).to_lowercase());
                // Only a switched connection goes on (echoing); any other
                // answer ends it, so no pooled request reads an echo.
                if stream.write_all(answer.as_bytes()).await.is_err() || !answer.contains(" 101 ") {
                    return;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, seen)
}

/// Writes `request` and reads what comes back until `until` is in it or
/// the connection ends (at most 30 s).
async fn exchange(stream: &mut TcpStream, request: &str, until: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains(until) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("an answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const SWITCHED: &str =
    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nHELLO";
const WS_HEAD: &str =
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_smuggling_attempts_reach_the_backend_as_plain_requests() {
    let (addr, mut heads) = raw_backend(OK).await;
    let proxy = proxy(&[addr], "", "").await;
    let listener = proxy.server.local_addrs()[0];
    for request in [
        // Upgrade without Connection: upgrade.
        "GET /a HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n",
        // Connection: upgrade on HTTP/1.0, which has no upgrades.
        "GET /b HTTP/1.0\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        // h2c: a tunnel of HTTP/2 requests weir would never route nor filter.
        "GET /c HTTP/1.1\r\nhost: x\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(listener).await.unwrap();
        let answer = exchange(&mut stream, request, "\r\n\r\nok").await;
        assert!(answer.starts_with("HTTP/1."), "{request}: {answer}");
        assert!(answer.contains(" 200 "), "{request}: {answer}");
        let head = heads.recv().await.unwrap();
        assert!(
            !head.contains("upgrade"),
            "{request}: the backend read {head}"
        );
        assert!(!head.contains("http2-settings"), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_the_client_did_not_ask_for_is_a_502_and_counted() {
    let (addr, mut heads) = raw_backend(SWITCHED).await;
    let proxy = proxy(&[addr], "", "").await;
    let listener = proxy.server.local_addrs()[0];
    for request in [
        "GET /plain HTTP/1.1\r\nhost: x\r\n\r\n".to_string(),
        format!(
            "GET /other HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: foo\r\n{WS_HEAD}\r\n"
        ),
    ] {
        let mut stream = TcpStream::connect(listener).await.unwrap();
        let answer = exchange(&mut stream, &request, "switched protocols unasked").await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{request}: {answer}");
        assert!(!answer.contains("HELLO"), "{answer}");
        heads.recv().await.unwrap();
    }
    let refused = format!(
        "weir_upgrade_refused_switches_total{}",
        backend_labels("backend-1")
    );
    metric_is(&proxy, &refused, 2).await;
    metric_is(
        &proxy,
        &format!("weir_backend_in_flight{}", backend_labels("backend-1")),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_backend_sends_right_after_its_101_reach_the_client() {
    let (addr, mut heads) = raw_backend(SWITCHED).await;
    let proxy = proxy(&[addr], "", "").await;
    let listener = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(listener).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Upgrade\r\nupgrade: websocket\r\n{WS_HEAD}\r\n"
    );
    let answer = exchange(&mut stream, &request, "HELLO").await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.to_lowercase().contains("upgrade: websocket"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nHELLO"), "{answer}");
    let head = heads.recv().await.unwrap();
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("sec-websocket-key: "), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    // Then the client speaks, and the backend echoes through the tunnel.
    let echo = exchange(&mut stream, "ping", "ping").await;
    assert_eq!(echo, "ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_with_a_body_is_refused() {
    let (addr, _heads) = raw_backend(SWITCHED).await;
    let proxy = proxy(&[addr], "", "").await;
    let listener = proxy.server.local_addrs()[0];
    let mut stream = TcpStream::connect(listener).await.unwrap();
    let request = format!(
        "POST /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: 5\r\n{WS_HEAD}\r\nhello"
    );
    let answer = exchange(&mut stream, &request, "may not carry a body").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let admin_addr = proxy.server.admin_addr().unwrap();
    let text = admin(admin_addr, "GET", "/metrics", None, "").await.1;
    assert!(
        text.contains("weir_requests_refused_total{reason=\"upgrade_with_body\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        metric(
            &proxy,
            &format!("weir_backend_in_flight{}", backend_labels("backend-1"))
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_hold_their_listener_slot_up_to_max_connections() {
    let (addr, _heads) = raw_backend(SWITCHED).await;
    let proxy = proxy(&[addr], "", "max_connections = 3").await;
    let listener = proxy.server.local_addrs()[0];
    let request = format!(
        "GET /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n{WS_HEAD}\r\n"
    );
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(listener).await.unwrap();
        let answer = exchange(&mut stream, &request, "HELLO").await;
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        tunnels.push(stream);
    }
    // A fourth connection is closed unanswered: the tunnels hold the slots.
    let mut fourth = TcpStream::connect(listener).await.unwrap();
    let answer = exchange(&mut fourth, &request, "HELLO").await;
    assert!(answer.is_empty(), "{answer}");
    let admin_addr = proxy.server.admin_addr().unwrap();
    let text = admin(admin_addr, "GET", "/metrics", None, "").await.1;
    assert!(
        !text.contains("weir_requests_refused_total{reason=\"max_connections\"} 0\n"),
        "{text}"
    );
    // One tunnel ends: its slot serves a new connection.
    drop(tunnels.pop());
    metric_is(
        &proxy,
        &format!("weir_tunnels_open{}", backend_labels("backend-1")),
        2,
    )
    .await;
    let mut again = TcpStream::connect(listener).await.unwrap();
    let answer = exchange(&mut again, &request, "HELLO").await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_tunnels_after_their_grace() {
    let (addr, _heads) = raw_backend(SWITCHED).await;
    let proxy = proxy(&[addr], "tunnel_drain_grace_ms = 100", "").await;
    let listener = proxy.server.local_addrs()[0];
    let request = format!(
        "GET /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n{WS_HEAD}\r\n"
    );
    let mut stream = TcpStream::connect(listener).await.unwrap();
    let answer = exchange(&mut stream, &request, "HELLO").await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert_eq!(proxy.server.open_tunnels(), 1);
    let server = proxy.server;
    let stopped = tokio::spawn(server.shutdown(Duration::from_secs(60)));
    // The tunnel is closed: the client reads the end.
    let rest = exchange(&mut stream, "", "never").await;
    assert_eq!(rest, "");
    tokio::time::timeout(Duration::from_secs(60), stopped)
        .await
        .expect("shutdown ends once the tunnel closed")
        .unwrap();
}
