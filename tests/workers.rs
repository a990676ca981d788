//! `[runtime] scheduler = "per-worker"`: several threads, each with its
//! own scheduler and its own copy of every listener, serving as one weir.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::weir_run::WeirRun;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config(backends: &[std::net::SocketAddr], workers: &str, listener: &str) -> String {
    let text = config_text(backends, RR, "").replacen(
        "[[listeners]]\n",
        &format!("[runtime]\nworkers = {workers}\nscheduler = \"per-worker\"\n\n[[listeners]]\n{listener}\n"),
        1,
    );
    format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n")
}

const RR: &str = "[upstreams.web.balancer]\nplugin = \"round-robin\"\n";

/// The threads of process `pid`, by name.
fn threads(pid: u32) -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        *names.entry(comm.trim().to_string()).or_default() += 1;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_serve_one_listener_and_share_its_backends() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let dir = TempDir::new("workers");
    let path = dir.0.join("weir.toml");
    std::fs::write(&path, config(&addrs, "3", "")).unwrap();
    let weir = WeirRun::start(&path, true).await;
    let names = threads(weir.child.0.id());
    for worker in ["weir-worker-1", "weir-worker-2", "weir-worker-3"] {
        assert_eq!(names.get(worker), Some(&1), "{names:?}");
    }
    assert!(!names.contains_key("weir-worker-4"), "{names:?}");
    // 300 requests over 30 connections at a time: every one answered, and
    // the one round robin (shared by the workers) spreads them evenly.
    let seen = spread(&weir.url("/"), 300, 30).await;
    assert_eq!(seen.values().sum::<usize>(), 300, "{seen:?}");
    for name in ["backend-1", "backend-2"] {
        let got = seen.get(&(200, name.to_string())).copied().unwrap_or(0);
        assert!((120..=180).contains(&got), "{name}: {got} of 300: {seen:?}");
    }
    assert_eq!(
        weir.lines_with(&["listening", "copies=3"]).len(),
        1,
        "the proxy listener's log line names its copies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_counts_every_workers_connections() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = TestProxy::start(&config(&[backend.addr], "4", "max_connections = 3")).await;
    let addr = proxy.server.local_addrs()[0];
    // Three connections, whichever workers took them, hold the three
    // slots: each is answered once it completes its head.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(30), async {
            use tokio::io::AsyncReadExt;
            stream.read_exact(&mut head).await.unwrap();
        })
        .await
        .expect("a held connection is answered");
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(stream);
    }
    // A fourth, on any worker's copy, is refused: the slots are shared.
    for _ in 0..4 {
        let (_, answer) = raw(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(answer, "", "a connection past max_connections is closed");
    }
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains("weir_requests_refused_total{reason=\"max_connections\"} 4"),
        "{metrics}"
    );
    drop(held);
    let mut served = false;
    for _ in 0..600 {
        let (_, answer) = raw(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed slot serves the next client");
}

/// Sends `request` on a fresh connection and reads until the server
/// closes (at most 30 s).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (TcpStream, String) {
    use tokio::io::AsyncReadExt;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    (stream, String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn a_bad_worker_count_is_refused_with_file_line_and_reason() {
    for bad in ["0", "300", "\"many\""] {
        let text = config(&["127.0.0.1:9".parse().unwrap()], bad, "");
        let error = weir::Config::parse(std::path::Path::new("weir.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("weir.toml:2:"), "{error}");
        assert!(
            error.contains("workers must be \"auto\" or a number from 1 to 256"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_workers_listener() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = TestProxy::start(&config(&[backend.addr], "3", "")).await;
    let addr = proxy.server.local_addrs()[0];
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!(status, 200);
    tokio::time::timeout(
        Duration::from_secs(60),
        proxy.server.shutdown(Duration::from_secs(30)),
    )
    .await
    .expect("shutdown ends");
    // No copy of the listener is left accepting.
    for _ in 0..20 {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "a copy still accepts"
        );
    }
}
