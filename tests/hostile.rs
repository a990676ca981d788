//! Hostile plugins (`tests/plugins/hostile-filter`, `hostile-balancer`)
//! against real weir and real backends: a plugin cannot frame a message,
//! leak a failed call's headers, or keep costing worker time once it keeps
//! failing or runs over its CPU budget.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A route on `/evil` to upstream `web` whose only filter is
/// `hostile-filter` with `settings` (TOML inline table body) and
/// `on_failure`.
fn evil_route(settings: &str, on_failure: &str) -> String {
    format!(
        "\n[[routes]]\npath_prefix = \"/evil\"\nupstream = \"web\"\n\n[[routes.filters]]\nplugin = \"hostile-filter\"\non_failure = \"{on_failure}\"\nsettings = {{ {settings} }}\n"
    )
}

/// One HTTP/1.1 response as parsed from the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    head: String,
    body: String,
}

/// Splits `bytes` into responses framed by their `content-length`;
/// panics on anything else, so bytes left over fail the test.
fn parse_responses(mut bytes: &[u8]) -> Vec<Wire> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap_or_else(|| panic!("no content-length in {head}"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            !head.contains("transfer-encoding"),
            "weir frames with content-length here: {head}"
        );
        let body = &bytes[end + 4..end + 4 + length];
        out.push(Wire {
            status,
            head,
            body: String::from_utf8_lossy(body).into_owned(),
        });
        bytes = &bytes[end + 4 + length..];
    }
    out
}

/// Writes `requests` on one connection at once (pipelined; the last should
/// say `connection: close`) and parses everything weir sends back.
async fn pipeline(url: &str, requests: &str) -> Vec<Wire> {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("weir did not close the connection")
        .unwrap();
    parse_responses(&bytes)
}

const THEN_CLEAN: &str = "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

/// weir over `backend` with the `/evil` route's hostile filter set to
/// `settings`; sends `first` and then a clean request pipelined on one
/// connection, and checks that exactly two responses came back.
async fn evil_exchange(
    backend: &TestBackend,
    settings: &str,
    on_failure: &str,
    first: &str,
) -> (TestProxy, Vec<Wire>) {
    let text = config_text(&[backend.addr], "", "") + &evil_route(settings, on_failure);
    let proxy = TestProxy::start(&text).await;
    let wire = pipeline(&proxy.url, &format!("{first}{THEN_CLEAN}")).await;
    assert_eq!(wire.len(), 2, "{settings} ({on_failure}): {wire:?}");
    (proxy, wire)
}

/// Failed calls of the `/evil` route's filter.
fn evil_failures(proxy: &TestProxy) -> u64 {
    proxy.server.snapshot().routes()[1].filters[0]
        .pool
        .failures()
}

const GET_EVIL: &str = "GET /evil HTTP/1.1\r\nhost: x\r\n\r\n";

/// A response a filter forged inside its own body, to be smuggled as the
/// next response on the connection if weir trusted the filter's framing.
const FORGED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_cannot_frame_its_own_answer() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    for (name, value) in [
        ("content-length", "0"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("Content-Length", "1000"),
    ] {
        let settings = format!(
            "mode = \"respond\", name = \"{name}\", value = \"{value}\", body = \"{}\"",
            FORGED.escape_default()
        );
        let (proxy, wire) = evil_exchange(&backend, &settings, "closed", GET_EVIL).await;
        assert_eq!(wire[0].status, 503, "{name}: refused and closed: {wire:?}");
        assert!(!wire[0].body.contains("forged"), "{wire:?}");
        assert_eq!(
            (wire[1].status, wire[1].body.as_str()),
            (200, "backend-1\n"),
            "{name}: the next response on the connection is the backend's"
        );
        assert_eq!(evil_failures(&proxy), 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_cannot_reframe_the_backends_response() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    for (op, name, value) in [
        ("set", "content-length", "1"),
        ("append", "transfer-encoding", "chunked"),
        ("remove", "content-length", ""),
        ("set", "connection", "keep-alive, content-length"),
    ] {
        let settings =
            format!("mode = \"response\", op = \"{op}\", name = \"{name}\", value = \"{value}\"");
        let (proxy, wire) = evil_exchange(&backend, &settings, "closed", GET_EVIL).await;
        for response in &wire {
            assert_eq!(
                (response.status, response.body.as_str()),
                (200, "backend-1\n"),
                "{op} {name}: {wire:?}"
            );
            assert!(response.head.contains("content-length: 10"), "{wire:?}");
        }
        assert_eq!(evil_failures(&proxy), 1, "{op} {name}: on-response refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_cannot_desynchronise_a_pooled_backend_connection() {
    // One backend, so the hostile request and the next client's share its
    // pooled keep-alive connection.
    let backend = TestBackend::start("echo", Behaviour::Echo).await;
    for (op, name, value) in [
        ("set", "content-length", "0"),
        ("set", "transfer-encoding", "chunked"),
        ("remove", "content-length", ""),
        ("append", "connection", "close"),
        ("set", "te", "trailers"),
    ] {
        for on_failure in ["open", "closed"] {
            let settings = format!(
                "mode = \"request\", op = \"{op}\", name = \"{name}\", value = \"{value}\""
            );
            let before = backend.requests();
            let smuggled = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
            let first = format!(
                "POST /evil HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            );
            let (proxy, wire) = evil_exchange(&backend, &settings, on_failure, &first).await;
            let label = format!("{op} {name} ({on_failure})");
            if on_failure == "open" {
                // Skipped: the backend got the body whole, as the client framed it.
                assert_eq!(wire[0].status, 200, "{label}: {wire:?}");
                assert!(wire[0].body.starts_with("POST /evil"), "{wire:?}");
                assert!(
                    wire[0]
                        .body
                        .contains(&format!("body-bytes: {}\n", smuggled.len())),
                    "{label}: {}",
                    wire[0].body
                );
            } else {
                assert_eq!(wire[0].status, 503, "{label}: {wire:?}");
            }
            assert!(wire[1].body.starts_with("GET / HTTP/1.1"), "{wire:?}");
            // Another client, on the pooled backend connection.
            let (status, body) = get(&client(), &format!("{}/next", proxy.url)).await;
            assert_eq!(status, 200, "{label}");
            assert!(body.starts_with("GET /next HTTP/1.1"), "{label}: {body}");
            assert!(body.contains("body-bytes: 0\n"), "{label}: {body}");
            assert!(!body.contains("smuggled"), "{label}: {body}");
            assert_eq!(evil_failures(&proxy), 1, "{label}");
            // A smuggled request would have been one more.
            let expected = if on_failure == "open" { 3 } else { 2 };
            assert_eq!(backend.requests() - before, expected, "{label}");
        }
    }
}

/// `[upstreams.web.balancer]` running `hostile-balancer` with `settings`.
fn hostile_balancer(settings: &str) -> String {
    format!(
        "[upstreams.web.balancer]\nplugin = \"hostile-balancer\"\nsettings = {{ {settings} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_cannot_add_framing_headers_to_the_response() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    for (name, value) in [
        ("content-length", "0"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("upgrade", "h2c"),
    ] {
        let settings = format!("mode = \"header\", name = \"{name}\", value = \"{value}\"");
        let text = config_text(&[backend.addr], &hostile_balancer(&settings), "");
        let proxy = TestProxy::start(&text).await;
        let request = "GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let wire = pipeline(&proxy.url, &format!("{request}{THEN_CLEAN}")).await;
        assert_eq!(wire.len(), 2, "{name}: {wire:?}");
        for response in &wire {
            assert_eq!(
                (response.status, response.body.as_str()),
                (200, "backend-1\n"),
                "{name}: routed by the fallback, framed by weir: {wire:?}"
            );
        }
        // (The second says `connection: close` because the client asked.)
        let forged = format!("{name}: {value}");
        assert!(!wire[0].head.contains(&forged), "{wire:?}");
        let snapshot = proxy.server.snapshot();
        let pool = &snapshot.upstream("web").unwrap().balancer().unwrap().pool;
        assert_eq!(pool.failures(), 2, "{name}: each call refused whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_a_failed_balancer_call_do_not_reach_the_client() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        &hostile_balancer("mode = \"add-then-trap\""),
        "",
    );
    let proxy = TestProxy::start(&text).await;
    for _ in 0..3 {
        let (status, headers, body) = send(&proxy.url, &[]).await;
        assert_eq!((status, body.as_str()), (200, "backend-1\n"));
        assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_headers_counters_and_reroutes_are_counted() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        &hostile_balancer("mode = \"bad-header\""),
        "",
    ) + &evil_route("mode = \"bad-counter\"", "closed")
        + "\n[[routes]]\npath_prefix = \"/reroute\"\nupstream = \"web\"\n\n[[routes.filters]]\nplugin = \"hostile-filter\"\non_failure = \"open\"\nsettings = { mode = \"reroute\", name = \"nowhere\" }\n"
        + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&text).await;
    for path in ["/", "/evil", "/reroute", "/", "/evil", "/reroute"] {
        let (status, _, body) = send(&format!("{}{path}", proxy.url), &[]).await;
        assert_eq!((status, body.as_str()), (200, "backend-1\n"), "{path}");
    }
    let snapshot = proxy.server.snapshot();
    let balancer = &snapshot.upstream("web").unwrap().balancer().unwrap().pool;
    assert_eq!(
        balancer.failures(),
        0,
        "an invalid header is ignored, not a failure"
    );
    let metrics = metrics_text(&proxy).await;
    for line in [
        "weir_plugin_refusals_total{plugin=\"hostile-balancer\",what=\"response_header\"} 6",
        "weir_plugin_refusals_total{plugin=\"hostile-filter\",what=\"metric_name\"} 2",
        "weir_filter_failures_total{route=\"route 3\",position=\"1\",filter=\"hostile-filter\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
}

/// The `/plugins` entry of the pool whose owner is `owner`.
async fn pool_json(proxy: &TestProxy, owner: &str) -> serde_json::Value {
    let (status, body) = admin(
        proxy.server.admin_addr().unwrap(),
        "GET",
        "/plugins",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    all["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["owner"] == owner)
        .unwrap_or_else(|| panic!("no pool {owner} in {body}"))
        .clone()
}

/// weir's `/metrics`.
async fn metrics_text(proxy: &TestProxy) -> String {
    let addr = proxy.server.admin_addr().unwrap();
    let (status, metrics) = admin(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    metrics
}

/// A counter `name` of `plugin` in `/metrics`.
async fn plugin_counter(proxy: &TestProxy, plugin: &str, name: &str) -> u64 {
    let metrics = metrics_text(proxy).await;
    let prefix = format!("weir_plugin_counter_total{{plugin=\"{plugin}\",name=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_whose_init_keeps_failing_is_quarantined_not_rebuilt_per_request() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        "",
        "quarantine_ms = 600000\nquarantine_max_ms = 600000\n",
    ) + &evil_route("mode = \"slow-init\", burn_ms = 50", "open")
        + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&text).await;
    let client = client();
    for _ in 0..30 {
        let (status, body) = get(&client, &format!("{}/evil", proxy.url)).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "backend-1\n"));
    }
    // The first instance (made at startup) fails its call; each of the
    // next four builds an instance whose init spins, then traps; then the
    // pool is quarantined and not called at all.
    assert_eq!(plugin_counter(&proxy, "hostile-filter", "inits").await, 5);
    let pool = pool_json(&proxy, "route 2 filter 1").await;
    assert_eq!(pool["quarantined"], true, "{pool}");
    assert_eq!(pool["quarantines"], 1, "{pool}");
    assert_eq!(pool["failures"], 30, "{pool}");
    let metrics = metrics_text(&proxy).await;
    let gauge = "weir_plugin_quarantined{plugin=\"hostile-filter\",owner=\"route 2 filter 1\"} 1";
    assert!(metrics.lines().any(|l| l == gauge), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_whose_set_backends_keeps_trapping_is_quarantined() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        &format!(
            "{}on_failure = \"fallback\"\n",
            hostile_balancer("mode = \"slow-set-backends\", burn_ms = 50")
        ),
        "quarantine_ms = 600000\nquarantine_max_ms = 600000\n",
    ) + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&text).await;
    let client = client();
    for _ in 0..20 {
        let (status, body) = get(&client, &proxy.url).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "backend-1\n"));
    }
    let pool = pool_json(&proxy, "upstream web").await;
    assert_eq!(pool["quarantined"], true, "{pool}");
    assert_eq!(pool["quarantines"], 1, "{pool}");
    assert_eq!(pool["failures"], 20, "{pool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_over_its_cpu_budget_is_quarantined_then_released() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    // 10% of the workers' time: 200 ms of calls per second on 2 CPUs, ten
    // 20 ms calls (each under the slow-call threshold, 50 ms).
    let text = config_text(
        &[backend.addr],
        "",
        "cpu_budget_percent = 10\nquarantine_ms = 300\nquarantine_max_ms = 300\n",
    ) + &evil_route("mode = \"cpu-hog\", burn_ms = 20", "open")
        + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&text).await;
    let client = client();
    let url = format!("{}/evil", proxy.url);
    let mut quarantined = false;
    for _ in 0..200 {
        let (status, _) = get(&client, &url).await;
        assert_eq!(status, 200);
        if pool_json(&proxy, "route 2 filter 1").await["quarantined"] == true {
            quarantined = true;
            break;
        }
    }
    assert!(quarantined, "never went over its budget");
    // Quarantined: the filter is skipped (open) at no cost; then it is
    // released and called again.
    let snapshot = proxy.server.snapshot();
    let pool = &snapshot.routes()[1].filters[0].pool;
    let busy = pool.call_stats().busy();
    wait_for("the quarantine to end", || {
        pool.call_stats().quarantined_for().is_none()
    })
    .await;
    let (status, _) = get(&client, &url).await;
    assert_eq!(status, 200);
    assert!(
        pool.call_stats().busy() > busy,
        "called again after release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_using_most_of_its_deadline_on_every_call_is_quarantined() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    // Calls of 60 ms against a 100 ms deadline: past the default slow-call
    // threshold (half the deadline) after eight in a row.
    let text = config_text(
        &[backend.addr],
        "",
        "quarantine_ms = 600000\nquarantine_max_ms = 600000\n",
    ) + &evil_route("mode = \"cpu-hog\", burn_ms = 60", "open")
        + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&text).await;
    let client = client();
    for _ in 0..20 {
        let (status, _) = get(&client, &format!("{}/evil", proxy.url)).await;
        assert_eq!(status, 200);
    }
    let pool = pool_json(&proxy, "route 2 filter 1").await;
    assert_eq!(pool["quarantined"], true, "{pool}");
    assert_eq!(pool["quarantines"], 1, "{pool}");
    // Eight calls ran (none failed); the other twelve were skipped.
    assert_eq!(pool["failures"], 12, "{pool}");
}

/// `weir run` on `config` (a file in `dir`), its log in `dir/weir.log`;
/// killed on drop.
struct Weir {
    _child: Child,
    log: std::path::PathBuf,
}

impl Weir {
    async fn start(dir: &TempDir, config: &str) -> (Weir, String) {
        let path = dir.0.join("weir.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.0.join("weir.log");
        let child = weir()
            .args(["run", "--config"])
            .arg(&path)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let weir = Weir {
            _child: Child(child),
            log,
        };
        let mut addr = None;
        wait_for("weir to log its listening address", || {
            addr = weir
                .log_text()
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr=").map(|a| format!("http://{a}")));
            addr.is_some()
        })
        .await;
        (weir, addr.unwrap())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sends `count` GETs to `url` from `tasks` clients; returns each one's
/// status and latency.
async fn timed(url: &str, tasks: usize, count: usize) -> Vec<(u16, Duration)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (client, url) = (client(), url.to_string());
        set.spawn(async move {
            let mut seen = Vec::with_capacity(count / tasks);
            for _ in 0..count / tasks {
                let started = std::time::Instant::now();
                let (status, _) = get(&client, &url).await;
                seen.push((status.as_u16(), started.elapsed()));
            }
            seen
        });
    }
    let mut all = Vec::new();
    while let Some(seen) = set.join_next().await {
        all.extend(seen.unwrap());
    }
    all
}

/// `count` clean requests to `url` from 2 clients while one client per
/// entry of `others` hammers it (each answer must be 200 or 503); returns
/// the clean requests' statuses and latencies, and how many requests each
/// of the others got answered.
async fn beside(
    url: &str,
    count: usize,
    others: &[String],
) -> (Vec<(u16, Duration)>, Vec<(String, u64)>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = tokio::task::JoinSet::new();
    for other in others {
        let (client, url, stop) = (client(), other.clone(), stop.clone());
        attackers.spawn(async move {
            let mut answered = 0u64;
            // Bounded: stops when told, or after 100,000 requests.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && answered < 100_000 {
                let (status, _) = get(&client, &url).await;
                assert!(status == 200 || status == 503, "{url}: {status}");
                answered += 1;
            }
            (url, answered)
        });
    }
    let seen = timed(url, 2, count).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = Vec::new();
    while let Some(done) = attackers.join_next().await {
        answered.push(done.unwrap());
    }
    (seen, answered)
}

fn p99(seen: &[(u16, Duration)]) -> Duration {
    let mut latencies: Vec<Duration> = seen.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

/// Every hostile plugin mode at once, each on its own route, at the
/// default limits, through the real binary: the clean route loses no
/// request, and its p99 stays within a stated factor of its own baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_on_their_own_routes_leave_a_clean_route_serving() {
    let (before, during, log, answered) = soak("").await;
    // Calls of up to the 5 ms deadline hold a worker until each pool is
    // quarantined (after 5 failures, 8 slow calls, or half the workers'
    // time in a second), then again on probation: a few milliseconds on
    // the clean route's tail, not a stall.
    assert!(
        during <= before * 5 + Duration::from_millis(25),
        "clean p99 {during:?} against {before:?}"
    );
    assert!(log.contains("plugin quarantined"), "{log}");
    // The framing filter fails closed: its first failures are logged, the
    // 503s its quarantine causes are not, one line each.
    let framing = answered
        .iter()
        .find(|(url, _)| url.ends_with("/frame"))
        .unwrap()
        .1;
    let logged = log.matches("503: filter failed").count();
    assert!(
        framing >= 100 && logged <= 16,
        "{framing} answered, {logged} logged"
    );
}

/// The same with quarantine and budgets off, to measure what they buy:
/// `cargo xtask test -- --ignored --nocapture uncontained_soak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn uncontained_soak_for_comparison() {
    soak("quarantine_after_failures = 0\ncpu_budget_percent = 0\nslow_call_percent = 0\n").await;
}

/// Runs the soak: `plugins_extra` goes into `[plugins]`. Returns the clean
/// route's p99 beside plugin-free and beside hostile routes, weir's log,
/// and how many requests each hostile route answered.
async fn soak(plugins_extra: &str) -> (Duration, Duration, String, Vec<(String, u64)>) {
    let backend = TestBackend::start("clean", Behaviour::Name).await;
    let dir = TempDir::new("hostile-soak");
    let mut config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n\n[plugins]\ndir = {:?}\nwatch = false\n{plugins_extra}\n\
         [[routes]]\nupstream = \"clean\"\n\n[upstreams.clean]\n[[upstreams.clean.backends]]\naddress = \"{}\"\n",
        plugin_dir().display().to_string(),
        backend.addr
    );
    let filters = [
        ("/hog", "mode = \"cpu-hog\", burn_ms = 4", "open"),
        ("/init", "mode = \"slow-init\", burn_ms = 90", "open"),
        (
            "/frame",
            "mode = \"respond\", name = \"content-length\", value = \"0\", body = \"x\"",
            "closed",
        ),
        (
            "/smuggle",
            "mode = \"request\", name = \"transfer-encoding\", value = \"chunked\"",
            "open",
        ),
        ("/counter", "mode = \"bad-counter\"", "closed"),
    ];
    for (path, settings, on_failure) in filters {
        config.push_str(&format!(
            "\n[[routes]]\npath_prefix = \"{path}\"\nupstream = \"clean\"\n\n[[routes.filters]]\nplugin = \"hostile-filter\"\non_failure = \"{on_failure}\"\nsettings = {{ {settings} }}\n"
        ));
    }
    // Shared cells flooded with the longest keys allowed, 100 per call.
    config.push_str(
        "\n[[routes]]\npath_prefix = \"/cells\"\nupstream = \"clean\"\n\n[[routes.filters]]\nplugin = \"cell-flood\"\non_failure = \"open\"\nsettings = { mode = \"many-keys\", count = 100, key_len = 256 }\n",
    );
    let balancers = [
        ("blog", "plugin = \"log-flood\""),
        ("bhog", "mode = \"cpu-hog\", burn_ms = 4"),
        ("bset", "mode = \"slow-set-backends\", burn_ms = 90"),
        ("btrap", "mode = \"add-then-trap\""),
        (
            "bframe",
            "mode = \"header\", name = \"content-length\", value = \"0\"",
        ),
    ];
    for (name, settings) in balancers {
        // `plugin = ...` names another plugin than hostile-balancer.
        let plugin = match settings.strip_prefix("plugin = ") {
            Some(plugin) => format!("plugin = {plugin}\n"),
            None => format!("plugin = \"hostile-balancer\"\nsettings = {{ {settings} }}\n"),
        };
        config.push_str(&format!(
            "\n[[routes]]\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\n\n[upstreams.{name}.balancer]\n{plugin}\n[[upstreams.{name}.backends]]\naddress = \"{}\"\n",
            backend.addr
        ));
    }
    let (weir, url) = Weir::start(&dir, &config).await;
    let hostile: Vec<String> = filters
        .iter()
        .map(|(p, _, _)| format!("{url}{p}"))
        .chain([format!("{url}/cells")])
        .chain(balancers.iter().map(|(n, _)| format!("{url}/{n}")))
        .collect();
    // The baseline is the same load with every attacker on a plugin-free
    // route, so the comparison is of plugins, not of load on 2 cores.
    let benign = vec![format!("{url}/benign"); hostile.len()];
    const N: usize = 2000;
    timed(&url, 2, 200).await;
    let (baseline, _) = beside(&url, N, &benign).await;
    let (attacked, answered) = beside(&url, N, &hostile).await;

    for seen in [&baseline, &attacked] {
        let lost = seen.iter().filter(|(s, _)| *s != 200).count();
        assert_eq!(lost, 0, "the clean route lost requests");
    }
    let (before, during) = (p99(&baseline), p99(&attacked));
    let factor = during.as_secs_f64() / before.as_secs_f64();
    eprintln!(
        "clean route p99: {before:?} beside {n} clients on plugin-free routes, {during:?} beside them on {n} hostile routes ({factor:.1}x); hostile requests answered: {answered:?}",
        n = hostile.len()
    );
    (before, during, weir.log_text(), answered)
}
