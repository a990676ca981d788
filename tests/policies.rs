//! The balancing policies of `plugins/` end to end: real weir, real backends,
//! the compiled plugins, and traffic whose spread each policy must explain.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;
use weir::plugin::{BalancerPool, PluginLimits, PluginRuntime, PluginStore};

/// A weir config like `support::config_text`, with explicit backend names
/// and weights: `backends` as `(name, address, weight)`, and the
/// `[upstreams.web.balancer]` table for `plugin` with inline `settings`.
///
/// The per-call plugin deadline is raised from 5 ms to 100 ms: it is wall
/// time, and on a busy 2-core machine a thread preempted mid-call overruns
/// 5 ms whatever the plugin (even weighted round robin did). An overrun
/// routes that request with weir's round robin, which would blur what these
/// tests measure; the deadline itself is `tests/sandbox.rs`'s business.
fn config(backends: &[(&str, SocketAddr, u32)], plugin: &str, settings: &str) -> String {
    let mut text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n\n[plugins]\ndir = {:?}\nmax_instances = 64\ntimeout_ms = 100\n\n\
         [[routes]]\nupstream = \"web\"\n\n[upstreams.web]\n\n\
         [upstreams.web.balancer]\nplugin = \"{plugin}\"\nsettings = {settings}\n\n",
        plugin_dir().display().to_string()
    );
    for (name, addr, weight) in backends {
        text.push_str(&format!(
            "[[upstreams.web.backends]]\nname = \"{name}\"\naddress = \"{addr}\"\nweight = {weight}\n"
        ));
    }
    text
}

/// Checks that every request was chosen by the plugin: no trap, no overrun,
/// no bad answer, so no fallback to weir's own round robin.
fn assert_plugin_chose_every_request(proxy: &TestProxy, requests: u64) {
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let pool = &upstream.balancer().unwrap().pool;
    assert_eq!(pool.failures(), 0, "plugin calls failed");
    assert_eq!(pool.calls(), requests);
}

/// How many answers came from backend `name` (all must be `200`).
fn count(counts: &BTreeMap<(u16, String), usize>, name: &str) -> usize {
    assert!(
        counts.keys().all(|(status, _)| *status == 200),
        "{counts:?}"
    );
    counts.get(&(200, name.to_string())).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights_1_2_3() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let list: Vec<_> = (0..3)
        .map(|i| (backends[i].name.as_str(), backends[i].addr, i as u32 + 1))
        .collect();
    let proxy = TestProxy::start(&config(&list, "weighted-round-robin", "{}")).await;

    let total = 6_000;
    let counts = spread(&proxy.url, total, 6).await;

    eprintln!("weighted-round-robin 1:2:3 over {total}: {counts:?}");
    for (i, backend) in backends.iter().enumerate() {
        let share = count(&counts, &backend.name) as f64 / total as f64;
        let want = (i + 1) as f64 / 6.0;
        assert!(
            (share - want).abs() <= 0.03,
            "{} got {share:.3}, want {want:.3}: {counts:?}",
            backend.name
        );
    }
    assert_plugin_chose_every_request(&proxy, total as u64);
}

/// Round robin written in another language (`plugins/js-round-robin`,
/// `plugins/c-round-robin`): three backends share 3,000 requests evenly, a
/// fourth at weight 0 gets none, and the plugin chose every request.
///
/// Each pooled instance keeps its own rotation, so with concurrent clients
/// the shares are even to within a few requests per instance, not exactly.
async fn round_robin_in_another_language(plugin: &str) {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("drained", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let list: Vec<_> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr, u32::from(b.name != "drained")))
        .collect();
    let started = Instant::now();
    let proxy = TestProxy::start(&config(&list, plugin, "{}")).await;
    eprintln!("{plugin}: weir started in {:?}", started.elapsed());

    let total = 3_000;
    let started = Instant::now();
    let counts = spread(&proxy.url, total, 6).await;

    eprintln!(
        "{plugin} over {total} in {:?}: {counts:?}",
        started.elapsed()
    );
    for name in ["backend-1", "backend-2", "backend-3"] {
        let n = count(&counts, name);
        assert!((980..=1_020).contains(&n), "{name} got {n}: {counts:?}");
    }
    assert_eq!(count(&counts, "drained"), 0, "{counts:?}");
    assert_plugin_chose_every_request(&proxy, total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_round_robin_spreads_evenly_and_skips_weight_0() {
    round_robin_in_another_language("js-round-robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_round_robin_spreads_evenly_and_skips_weight_0() {
    round_robin_in_another_language("c-round-robin").await;
}

/// The JavaScript and C plugins fit weir's default limits: a 5 ms call
/// deadline, so 100 ms to instantiate and `init` (the JavaScript one is a
/// 12 MB component with a JavaScript engine inside), and 64 MiB of memory.
/// Prints what one instantiation plus `init` costs.
#[test]
fn other_languages_instantiate_within_the_default_limits() {
    let config = weir::Config::parse(
        Path::new("test.toml"),
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    assert_eq!(config.plugins.timeout_ms, 5, "not the default limits");
    let limits = PluginLimits::from_config(&config.plugins);
    let runtime = PluginRuntime::with_cache(limits, config.cache_dir().as_deref()).unwrap();
    let store = PluginStore::new(runtime);
    for name in ["js-round-robin", "c-round-robin"] {
        let plugin = store.load(&plugin_dir(), name).unwrap();
        let mut times: Vec<_> = (0..20)
            .map(|_| {
                let started = Instant::now();
                let pool = BalancerPool::new(plugin.clone(), "web", "{}".into());
                let took = started.elapsed();
                if let Err(error) = pool {
                    panic!("{name}: {error}");
                }
                took
            })
            .collect();
        times.sort();
        eprintln!(
            "{name}: instantiate + init, 20 times: min {:?}, median {:?}, max {:?}",
            times[0], times[10], times[19]
        );
    }
}

/// Two quick backends and one answering 50 ms late, under 8 concurrent
/// clients; returns how many of `total` requests the slow one served.
async fn slow_backend_share(plugin: &str, settings: &str, total: usize) -> usize {
    let fast = [
        TestBackend::start("fast-1", Behaviour::Name).await,
        TestBackend::start("fast-2", Behaviour::Name).await,
    ];
    let slow = TestBackend::start("slow", Behaviour::Delay(Duration::from_millis(50))).await;
    let list = [
        (fast[0].name.as_str(), fast[0].addr, 1),
        (slow.name.as_str(), slow.addr, 1),
        (fast[1].name.as_str(), fast[1].addr, 1),
    ];
    let proxy = TestProxy::start(&config(&list, plugin, settings)).await;

    let counts = spread(&proxy.url, total, 8).await;

    eprintln!("{plugin} with one slow backend over {total}: {counts:?}");
    let served = count(&counts, "slow");
    assert_eq!(slow.requests(), served as u64);
    assert_eq!(
        served + count(&counts, "fast-1") + count(&counts, "fast-2"),
        total
    );
    assert_plugin_chose_every_request(&proxy, total as u64);
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_little_to_a_slow_backend() {
    let total = 600;
    let slow = slow_backend_share("least-connections", "{}", total).await;
    // Round robin would send it 200.
    assert!(slow * 5 < total, "slow backend served {slow} of {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_sends_little_to_a_slow_backend() {
    let total = 600;
    let settings = "{ default_latency_us = 1000 }";
    let slow = slow_backend_share("p2c-ewma", settings, total).await;
    assert!(slow * 5 < total, "slow backend served {slow} of {total}");
}

/// Sends one GET per key `user-0` .. `user-{keys - 1}` in header
/// `x-user-id`, from 8 tasks; returns the backend that answered each.
async fn backends_by_key(url: &str, keys: usize) -> Vec<String> {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for key in (task..keys).step_by(8) {
                let request = Request::get(url.as_str())
                    .header("x-user-id", format!("user-{key}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response =
                    tokio::time::timeout(Duration::from_secs(10), client.request(request))
                        .await
                        .expect("request timed out")
                        .expect("request failed");
                assert_eq!(response.status(), 200);
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                seen.push((key, String::from_utf8_lossy(&body).trim().to_string()));
            }
            seen
        });
    }
    let mut by_key = vec![String::new(); keys];
    while let Some(seen) = tasks.join_next().await {
        for (key, backend) in seen.unwrap() {
            by_key[key] = backend;
        }
    }
    by_key
}

/// How many keys map to a different backend in `after` than in `before`.
fn moved(before: &[String], after: &[String]) -> usize {
    assert_eq!(before.len(), after.len());
    before.iter().zip(after).filter(|(b, a)| b != a).count()
}

const BY_USER: &str = r#"{ key = "header:x-user-id" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_across_runs_restarts_and_a_removal() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
        TestBackend::start("backend-4", Behaviour::Name).await,
        TestBackend::start("backend-5", Behaviour::Name).await,
    ];
    let five: Vec<_> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr, 1))
        .collect();
    let text = config(&five, "consistent-hash", BY_USER);
    let keys = 1_000;

    let proxy = TestProxy::start(&text).await;
    let first = backends_by_key(&proxy.url, keys).await;
    let again = backends_by_key(&proxy.url, keys).await;
    assert_plugin_chose_every_request(&proxy, 2 * keys as u64);
    assert_eq!(moved(&first, &again), 0, "a repeated run moved keys");
    proxy.server.shutdown(Duration::from_secs(1)).await;

    let restarted = TestProxy::start(&text).await;
    let after_restart = backends_by_key(&restarted.url, keys).await;
    assert_plugin_chose_every_request(&restarted, keys as u64);
    assert_eq!(moved(&first, &after_restart), 0, "a restart moved keys");

    let mut spread = BTreeMap::new();
    for backend in &first {
        *spread.entry(backend.as_str()).or_insert(0) += 1;
    }
    eprintln!("consistent-hash, {keys} keys over 5 backends: {spread:?}");
    assert_eq!(spread.len(), 5, "{spread:?}");
    assert!(
        spread.values().all(|&n| (130..=270).contains(&n)),
        "{spread:?}"
    );

    // The same backends less backend-3, at the same names: ids shift, the
    // table (built on names) must not.
    let four: Vec<_> = five
        .iter()
        .copied()
        .filter(|(name, _, _)| *name != "backend-3")
        .collect();
    let smaller = TestProxy::start(&config(&four, "consistent-hash", BY_USER)).await;
    let after_removal = backends_by_key(&smaller.url, keys).await;
    assert_plugin_chose_every_request(&smaller, keys as u64);
    let moved = moved(&first, &after_removal);
    let forced = first.iter().filter(|&b| b == "backend-3").count();
    eprintln!(
        "consistent-hash, removing backend-3: {moved} of {keys} keys moved, {forced} of them had to"
    );
    assert!(after_removal.iter().all(|b| b != "backend-3"));
    assert!(
        moved as f64 / keys as f64 <= 1.4 / 5.0,
        "{moved} of {keys} keys moved"
    );
    assert!(moved >= forced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sticks_to_client_ip_and_spreads_keyless_requests() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let list: Vec<_> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr, 1))
        .collect();

    // Every request comes from 127.0.0.1, whatever its port: one backend.
    let by_ip = TestProxy::start(&config(&list, "consistent-hash", "{}")).await;
    let counts = spread(&by_ip.url, 120, 4).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 120);

    // No x-user-id header: round robin over all three.
    let by_user = TestProxy::start(&config(&list, "consistent-hash", BY_USER)).await;
    let counts = spread(&by_user.url, 300, 3).await;
    for backend in &backends {
        let n = count(&counts, &backend.name);
        assert!((60..=140).contains(&n), "{counts:?}");
    }
    assert_plugin_chose_every_request(&by_user, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reaches_every_backend_and_weighted_random_follows_weights() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let uniform: Vec<_> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr, 1))
        .collect();
    let proxy = TestProxy::start(&config(&uniform, "random", "{}")).await;
    let total = 1_500;
    let counts = spread(&proxy.url, total, 5).await;
    eprintln!("random over {total}: {counts:?}");
    for backend in &backends {
        let share = count(&counts, &backend.name) as f64 / total as f64;
        assert!((0.25..=0.42).contains(&share), "{counts:?}");
    }
    assert_plugin_chose_every_request(&proxy, total as u64);

    // Weights 1:1:4 with `weighted`: backend-3 should get about 2/3.
    let weighted: Vec<_> = uniform
        .iter()
        .zip([1, 1, 4])
        .map(|(&(name, addr, _), weight)| (name, addr, weight))
        .collect();
    let proxy = TestProxy::start(&config(&weighted, "random", "{ weighted = true }")).await;
    let counts = spread(&proxy.url, total, 5).await;
    eprintln!("weighted random 1:1:4 over {total}: {counts:?}");
    let heavy = count(&counts, "backend-3") as f64 / total as f64;
    assert!((0.58..=0.75).contains(&heavy), "{counts:?}");
    assert!(count(&counts, "backend-1") > 100 && count(&counts, "backend-2") > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_weir_from_starting() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let list = [(backend.name.as_str(), backend.addr, 1)];
    for (plugin, settings, want) in [
        (
            "consistent-hash",
            "{ table_size = 65536 }",
            "must be a prime",
        ),
        ("consistent-hash", r#"{ key = "query:id" }"#, "unknown key"),
        ("random", r#"{ weighted = "yes" }"#, "invalid type"),
        ("p2c-ewma", "{ default_latency_us = 0 }", "at least 1"),
        (
            "least-connections",
            "{ weights = 1 }",
            "unknown field `weights`",
        ),
        (
            "weighted-round-robin",
            "{ smooth = false }",
            "unknown field `smooth`",
        ),
        ("js-round-robin", "{ x = 1 }", "takes no settings"),
        ("c-round-robin", "{ x = 1 }", "takes no settings"),
    ] {
        let error = match TestProxy::try_start(&config(&list, plugin, settings)).await {
            Ok(_) => panic!("{plugin} accepted {settings}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(want), "{plugin} {settings}: {error}");
    }
}

/// GETs `url` with an optional `Cookie` header; checks it is answered 200
/// and returns the body and the `Set-Cookie` header, if any.
async fn get_with_cookie(url: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (status, headers, body) = send(url, &headers).await;
    assert_eq!(status, 200);
    let set_cookie = headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    (body.trim().to_string(), set_cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_pins_clients_and_moves_them_off_a_drained_backend() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
    ];
    let list: Vec<_> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr, 1))
        .collect();
    let proxy = TestProxy::start(&config(
        &list,
        "sticky-cookie",
        "{ cookie = \"srv\", max_age_s = 600 }",
    ))
    .await;
    let url = format!("{}/", proxy.url);

    // New clients are spread round robin and each gets a cookie.
    let mut pins = Vec::new();
    for _ in 0..3 {
        let (body, set_cookie) = get_with_cookie(&url, None).await;
        let set_cookie = set_cookie.expect("a new client is pinned");
        assert!(
            set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=600"),
            "{set_cookie}"
        );
        let pin = set_cookie.split(';').next().unwrap().to_string();
        pins.push((body, pin));
    }
    let mut served: Vec<_> = pins.iter().map(|(b, _)| b.clone()).collect();
    served.sort();
    assert_eq!(served, ["backend-1", "backend-2", "backend-3"]);

    // A pinned client keeps its backend and is not re-pinned.
    for (backend, pin) in &pins {
        for _ in 0..20 {
            assert_eq!(
                get_with_cookie(&url, Some(pin)).await,
                (backend.clone(), None)
            );
        }
    }

    // Its backend drained, the client moves and gets a new cookie.
    let (drained, pin) = &pins[0];
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    upstream.set_draining(drained, true).unwrap();
    let (moved_to, new_pin) = get_with_cookie(&url, Some(&format!("other=1; {pin}"))).await;
    assert_ne!(&moved_to, drained);
    let new_pin = new_pin
        .expect("re-pinned")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        get_with_cookie(&url, Some(&new_pin)).await,
        (moved_to, None)
    );
    assert_eq!(upstream.balancer().unwrap().pool.failures(), 0);
}

/// The plugin chooses from the set weir last told it of, and every change
/// to the set reaches it: after two backends are drained and one removed, no request reaches any of them and no
/// choice was refused (a choice of an ineligible backend would be a failed
/// call, answered by weir's fallback, so the pool's failure count is the
/// check, not only the answers). Undrained and re-added, they serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_never_chooses_a_backend_drained_or_removed() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Name).await,
        TestBackend::start("backend-4", Behaviour::Name).await,
    ];
    let list: Vec<_> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr, 1))
        .collect();
    let proxy = TestProxy::start(&config(&list, "round-robin", "{}")).await;
    let url = format!("{}/", proxy.url);
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let pool_failures = || upstream.balancer().unwrap().pool.failures();

    // Each pooled instance keeps its own turn, so four clients at once
    // need not split 40 requests exactly evenly; every backend serves.
    let counts = spread(&url, 40, 4).await;
    for b in &backends {
        assert!(count(&counts, &b.name) >= 5, "{counts:?}");
    }
    assert_eq!(counts.values().sum::<usize>(), 40, "{counts:?}");

    // Drained and removed: each a new set, of a new generation.
    upstream.set_draining("backend-1", true).unwrap();
    upstream.set_draining("backend-2", true).unwrap();
    upstream.remove_backend("backend-3").unwrap();
    let before = pool_failures();

    let counts = spread(&url, 60, 4).await;
    assert_eq!(count(&counts, "backend-4"), 60, "{counts:?}");
    assert_eq!(
        pool_failures(),
        before,
        "the plugin chose a backend it may not"
    );

    // Back again: the plugin is told of these changes too.
    upstream.set_draining("backend-2", false).unwrap();
    let counts = spread(&url, 60, 4).await;
    assert!(count(&counts, "backend-2") >= 15, "{counts:?}");
    assert!(count(&counts, "backend-4") >= 15, "{counts:?}");
    let both = count(&counts, "backend-2") + count(&counts, "backend-4");
    assert_eq!(both, 60, "{counts:?}");
    assert_eq!(pool_failures(), before);
}
