//! Health: active checks taking backends out and back, outlier detection,
//! retries around a killed backend, the retry budget, and per-backend
//! in-flight limits. Real weir, real backends.

mod support;

use std::time::{Duration, Instant};

use support::*;
use weir::upstream::Health;

const INTERVAL_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_check_takes_a_backend_out_and_brings_it_back() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Switchable).await,
        TestBackend::start("backend-2", Behaviour::Switchable).await,
        TestBackend::start("backend-3", Behaviour::Switchable).await,
    ];
    let (rise, fall) = (2, 3);
    let check = format!(
        "[upstreams.web.health_check]\npath = \"/healthz\"\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 100\n\
         jitter_percent = 0\nrise = {rise}\nfall = {fall}\n"
    );
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = TestProxy::start(&config_text(&addrs, &check, "")).await;
    let interval = Duration::from_millis(INTERVAL_MS);
    // One round's worth of slack on top: a round may have just started.
    let slack = interval + Duration::from_millis(100);

    backends[1].set_status(500);
    let failed_at = Instant::now();
    wait_for("backend-2 to go down", || {
        health_of(&proxy, "backend-2") == Health::Unhealthy
    })
    .await;
    let took = failed_at.elapsed();
    assert!(took <= interval * fall + slack, "went down after {took:?}");

    // Out of rotation: no request reaches it (its answers would say so).
    let counts = spread(&format!("{}/", proxy.url), 300, 3).await;
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&150),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&(200, "backend-3".into())),
        Some(&150),
        "{counts:?}"
    );

    backends[1].set_status(200);
    let recovered_at = Instant::now();
    wait_for("backend-2 to come back", || {
        health_of(&proxy, "backend-2") == Health::Healthy
    })
    .await;
    let took = recovered_at.elapsed();
    assert!(took <= interval * rise + slack, "came back after {took:?}");
    let counts = spread(&format!("{}/", proxy.url), 300, 3).await;
    assert_eq!(
        counts.get(&(200, "backend-2".into())),
        Some(&100),
        "{counts:?}"
    );

    let set = proxy.server.snapshot().upstream("web").unwrap().backends();
    let b2 = set.iter().find(|b| b.name == "backend-2").unwrap();
    assert!(b2.state.checks_failed() >= fall as u64);
    assert!(b2.state.checks_passed() >= rise as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_marks_a_closed_port_down() {
    let live = TestBackend::start("backend-1", Behaviour::Name).await;
    let dead = dead_addr().await;
    let check = "[upstreams.web.health_check]\ntype = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 100\nfall = 1\n";
    let proxy = TestProxy::start(&config_text(&[live.addr, dead], check, "")).await;
    wait_for("the closed port to go down", || {
        health_of(&proxy, "backend-2") == Health::Unhealthy
    })
    .await;
    assert_eq!(health_of(&proxy, "backend-1"), Health::Healthy);
    let set = proxy.server.snapshot().upstream("web").unwrap().backends();
    let reason = set
        .iter()
        .find(|b| b.name == "backend-2")
        .unwrap()
        .reason
        .clone();
    assert!(
        reason.as_deref().unwrap_or("").contains("connect"),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_under_load_fails_no_idempotent_request() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    // Retries are on by default (one retry); outlier detection stops
    // choosing the dead backend after a few failures.
    let extra = "[upstreams.web.outlier_detection]\nconsecutive_failures = 3\n";
    let proxy = TestProxy::start(&config_text(&addrs, extra, "")).await;
    let load = Load::start(&format!("{}/", proxy.url), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    backends[1].kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    load.finish_all_ok(200).await;
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let retries = upstream
        .stats()
        .retries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(retries >= 1, "the kill caused no retry");
    assert_eq!(health_of(&proxy, "backend-2"), Health::Unhealthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries() {
    let live = TestBackend::start("backend-1", Behaviour::Name).await;
    let dead = dead_addr().await;
    // No share of requests, no floor: the bucket starts with its minimum
    // of 10 tokens and never refills.
    let extra =
        "[upstreams.web.retry]\nretries = 1\nbudget_percent = 0\nmin_retries_per_second = 0\n";
    let proxy = TestProxy::start(&config_text(&[live.addr, dead], extra, "")).await;
    let client = client();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let (status, _) = get(&client, &format!("{}/", proxy.url)).await;
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    // While the budget lasts, each request meets the dead backend first
    // and its retry takes the live one's turn of the round robin: 10
    // requests, 10 retries. Then the rotation alternates: 25 requests meet
    // the dead backend and find the budget spent, 25 the live one.
    assert_eq!(statuses.get(&200), Some(&35), "{statuses:?}");
    assert_eq!(statuses.get(&502), Some(&25), "{statuses:?}");
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let stats = upstream.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.retries.load(Relaxed), 10);
    assert_eq!(stats.retries_refused.load(Relaxed), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried() {
    let live = TestBackend::start("backend-1", Behaviour::Name).await;
    let dead = dead_addr().await;
    let proxy = TestProxy::start(&config_text(&[dead, live.addr], "", "")).await;
    let request = http::Request::post(format!("{}/", proxy.url))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 502);
    let (status, body) = get(&client(), &format!("{}/", proxy.url)).await;
    assert_eq!((status.as_u16(), body.trim()), (200, "backend-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_5xx_backends_up_to_the_max_share() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Status(500)).await,
        TestBackend::start("backend-3", Behaviour::Status(503)).await,
        TestBackend::start("backend-4", Behaviour::Status(502)).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let extra = "[upstreams.web.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_ms = 60000\nmax_ejection_percent = 50\n";
    let proxy = TestProxy::start(&config_text(&addrs, extra, "")).await;
    let counts = spread(&format!("{}/", proxy.url), 200, 1).await;
    assert!(
        counts.contains_key(&(200, "backend-1".into())),
        "{counts:?}"
    );

    let set = proxy.server.snapshot().upstream("web").unwrap().backends();
    let ejected: Vec<_> = set
        .iter()
        .filter(|b| b.health == Health::Unhealthy)
        .map(|b| b.name.clone())
        .collect();
    // Three backends fail, but at most half of four may be out.
    assert_eq!(ejected.len(), 2, "{ejected:?}");
    assert!(!ejected.contains(&"backend-1".to_string()));
    for name in &ejected {
        let b = set.iter().find(|b| &b.name == name).unwrap();
        assert_eq!(b.state.ejections(), 1);
        assert!(
            b.reason.as_deref().unwrap().contains("3 failures in a row"),
            "{:?}",
            b.reason
        );
    }
    // Ejected backends get nothing more.
    let before: Vec<u64> = backends.iter().map(|b| b.requests()).collect();
    spread(&format!("{}/", proxy.url), 100, 1).await;
    for (b, was) in backends.iter().zip(before) {
        if ejected.contains(&b.name) {
            assert_eq!(b.requests(), was, "{} got traffic while ejected", b.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_ends_after_its_time() {
    let flaky = TestBackend::start("backend-1", Behaviour::Switchable).await;
    let good = TestBackend::start("backend-2", Behaviour::Name).await;
    let extra =
        "[upstreams.web.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_ms = 300\n";
    let proxy = TestProxy::start(&config_text(&[flaky.addr, good.addr], extra, "")).await;
    flaky.set_status(500);
    spread(&format!("{}/", proxy.url), 10, 1).await;
    assert_eq!(health_of(&proxy, "backend-1"), Health::Unhealthy);
    flaky.set_status(200);
    wait_for("the ejection to end", || {
        health_of(&proxy, "backend-1") == Health::Healthy
    })
    .await;
    let counts = spread(&format!("{}/", proxy.url), 10, 1).await;
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&5),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_at_max_in_flight_is_skipped_then_503() {
    let slow = TestBackend::start("backend-1", Behaviour::Delay(Duration::from_millis(1500))).await;
    let proxy = TestProxy::start(&config_text(
        &[slow.addr],
        "max_in_flight_per_backend = 2\n",
        "",
    ))
    .await;
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let url = format!("{}/", proxy.url);
    let mut running = Vec::new();
    for n in 1..=2 {
        let url = url.clone();
        running.push(tokio::spawn(async move { get(&client(), &url).await.0 }));
        wait_for("the request to be in flight", || {
            upstream.backends().iter().next().unwrap().stats.in_flight() == n
        })
        .await;
    }
    let (status, body) = get(&client(), &url).await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(body.contains("max_in_flight"), "{body}");
    for request in running {
        assert_eq!(request.await.unwrap().as_u16(), 200);
    }
}
