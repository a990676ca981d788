//! Fixtures for weir's integration tests: real backends and a real weir on
//! port 0, real compiled plugins, and an HTTP client. Everything stops when
//! dropped.
#![allow(dead_code)]

mod binary;
pub mod certs;
pub mod grpc;
pub mod h2_backend;
pub mod python;
pub mod tls_backend;
pub mod websocket;
pub mod weir_run;
#[allow(unused_imports)]
pub use binary::{Child, log_lines, spawn_run, start_weir_run, weir};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Directory of compiled plugins: `WEIR_PLUGIN_DIR`, set by `cargo xtask
/// test`, or where `cargo xtask plugins` puts them.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("WEIR_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("plugins")
        });
    assert!(
        dir.join("round-robin.wasm").is_file(),
        "no compiled plugins in {}: run the tests with `cargo xtask test`, which builds them",
        dir.display()
    );
    dir
}

/// How a [`TestBackend`] answers.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// `200` with body `NAME\n`.
    Name,
    /// `200` with a body listing the request line and headers it received,
    /// then `body-bytes: N` (the request body's length).
    Echo,
    /// Accepts connections and requests, never answers.
    Hang,
    /// Answers with this status and body `NAME\n`.
    Status(u16),
    /// `200` with body `NAME\n`, after this long: a slow server.
    Delay(std::time::Duration),
    /// Answers with the status last given to [`TestBackend::set_status`]
    /// (initially 200) and body `NAME\n`.
    Switchable,
}

/// A real HTTP server on `127.0.0.1:0`.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    status: Arc<AtomicU16>,
    /// The accept loop and every connection: dropping or killing the
    /// backend aborts them all, as a crashed server would.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TestBackend {
    pub async fn start(name: &str, behaviour: Behaviour) -> TestBackend {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let status = Arc::new(AtomicU16::new(200));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (counter, label, current, spawned) = (
            requests.clone(),
            name.to_string(),
            status.clone(),
            tasks.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, label, current) = (counter.clone(), label.clone(), current.clone());
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let label = label.clone();
                        let behaviour = match behaviour {
                            Behaviour::Switchable => {
                                Behaviour::Status(current.load(Ordering::Relaxed))
                            }
                            other => other,
                        };
                        async move { Ok::<_, Infallible>(answer(&label, behaviour, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                spawned.lock().unwrap().push(connection.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        TestBackend {
            name: name.to_string(),
            addr,
            requests,
            status,
            tasks,
        }
    }

    /// Sets the status a [`Behaviour::Switchable`] backend answers with.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// Stops the server at once: the listener closes (new connections are
    /// refused) and open connections are cut, requests in flight included.
    pub fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(name: &str, behaviour: Behaviour, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match behaviour {
        Behaviour::Name => Response::new(Full::new(Bytes::from(format!("{name}\n")))),
        Behaviour::Status(code) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("{name}\n"))));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        Behaviour::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Response::new(Full::new(Bytes::from(format!("{name}\n"))))
        }
        Behaviour::Switchable => unreachable!("resolved to a status per request"),
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behaviour::Echo => {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text.push_str(&format!("body-bytes: {}\n", body.len()));
            Response::new(Full::new(Bytes::from(text)))
        }
    }
}

/// An address nothing listens on: connecting to it is refused.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    listener.local_addr().unwrap()
}

/// Builds a weir config: one listener on port 0, the test plugin dir, one
/// upstream `web` routed from `/`, with `backends`, the `upstream_extra`
/// TOML lines (keys of `[upstreams.web]`, or a `[upstreams.web.balancer]`
/// table) placed before the backends, and `plugins_extra` lines in
/// `[plugins]`.
///
/// Plugin calls get 100 ms, not the default 5 ms: the deadline is wall-clock
/// time, and on a loaded 2-core test machine a thread can be descheduled for
/// longer than 5 ms, which would turn a test's exact counts into fallback
/// noise. Hostile plugins hit it all the same.
pub fn config_text(backends: &[SocketAddr], upstream_extra: &str, plugins_extra: &str) -> String {
    let mut text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n\n[plugins]\ndir = {:?}\nmax_instances = 64\ntimeout_ms = 100\n{plugins_extra}\n\n\
         [[routes]]\nupstream = \"web\"\n\n[upstreams.web]\n{upstream_extra}\n",
        plugin_dir().display().to_string()
    );
    for (i, addr) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[upstreams.web.backends]]\nname = \"backend-{}\"\naddress = \"{addr}\"\n",
            i + 1
        ));
    }
    text
}

/// A [`config_text`] with `listener` lines added to its listener and
/// `route` lines to its route.
pub fn with_lines(text: &str, listener: &str, route: &str) -> String {
    text.replacen(
        "[[listeners]]\n",
        &format!("[[listeners]]\n{listener}\n"),
        1,
    )
    .replacen(
        "[[routes]]\nupstream = \"web\"\n",
        &format!("[[routes]]\nupstream = \"web\"\n{route}\n"),
        1,
    )
}

/// A weir started from the library on port 0.
pub struct TestProxy {
    pub server: weir::Server,
    pub url: String,
}

impl TestProxy {
    pub async fn start(config_text: &str) -> TestProxy {
        Self::try_start(config_text).await.unwrap()
    }

    pub async fn try_start(config_text: &str) -> Result<TestProxy, weir::StartError> {
        init_logging();
        let config = weir::Config::parse(std::path::Path::new("test.toml"), config_text)?;
        let server = weir::Server::start(config).await?;
        let url = format!("http://{}", server.local_addrs()[0]);
        Ok(TestProxy { server, url })
    }
}

/// weir's log in the test's captured output (shown when a test fails),
/// filtered by `WEIR_LOG` (default `info`).
pub fn init_logging() {
    let filter = std::env::var("WEIR_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// An HTTP/1.1 keep-alive client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `url`, returns status and body text.
pub async fn get(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> (StatusCode, String) {
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(url.parse().unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends a GET with `headers`; returns status, response headers and body.
pub async fn send(url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let mut request = Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client().request(request.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Sends `total` GETs to `url` from `concurrency` tasks; returns how many
/// of each (status, body) were seen.
pub async fn spread(url: &str, total: usize, concurrency: usize) -> BTreeMap<(u16, String), usize> {
    let client = client();
    let per_task = total / concurrency;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut seen = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let (status, body) = get(&client, &url).await;
                seen.push((status.as_u16(), body.trim().to_string()));
            }
            seen
        });
    }
    let mut counts = BTreeMap::new();
    while let Some(seen) = tasks.join_next().await {
        for key in seen.unwrap() {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// An HTTP/2 connection (prior knowledge) to `addr`, its driver spawned.
pub async fn h2_connect<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// A directory under the system temp dir, unique to this process and call,
/// removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Steady load from `tasks` concurrent clients until stopped; counts
/// answers by status and body.
pub struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    pub fn start(url: &str, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let client = client();
        let handles = (0..tasks)
            .map(|_| {
                let (stop, client, url) = (stop.clone(), client.clone(), url.to_string());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    // Bounded: stops when told, or after 200,000 requests.
                    while !stop.load(Ordering::Relaxed) && seen.len() < 200_000 {
                        let (status, body) = get(&client, &url).await;
                        seen.push((status.as_u16(), body.trim().to_string()));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, handles }
    }

    /// Stops the load and checks that it was at least `at_least` requests,
    /// every one answered `200`; returns the answers.
    pub async fn finish_all_ok(self, at_least: usize) -> Vec<(u16, String)> {
        let seen = self.finish().await;
        let failed: Vec<_> = seen.iter().filter(|(status, _)| *status != 200).collect();
        assert!(
            failed.is_empty(),
            "{} of {} failed: {:?}",
            failed.len(),
            seen.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(seen.len() >= at_least, "too little load: {}", seen.len());
        seen
    }

    pub async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for handle in self.handles {
            all.extend(handle.await.unwrap());
        }
        all
    }
}

/// Waits, polling, until `done` (at most 30 s).
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends one request to weir's admin API at `addr`, with `token` as bearer
/// token if given; returns status and body.
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client().request(request))
        .await
        .expect("admin request timed out")
        .expect("admin request failed");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The proxy's `/metrics` text, from its admin API.
pub async fn metrics_text(proxy: &TestProxy) -> String {
    let addr = proxy
        .server
        .admin_addr()
        .expect("the proxy has an admin API");
    let (status, body) = admin(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The health of backend `name` of upstream `web` as weir sees it now.
pub fn health_of(proxy: &TestProxy, name: &str) -> weir::upstream::Health {
    let snapshot = proxy.server.snapshot();
    let set = snapshot.upstream("web").unwrap().backends();
    set.iter().find(|b| b.name == name).unwrap().health
}
