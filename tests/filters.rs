//! Request filters end to end: each shipped filter, a chain of three, a
//! trapping filter failing open and closed, and rerouting. Real weir, real
//! backends, the compiled filter plugins.

mod support;

use support::*;

/// A `[[routes.filters]]` entry for the config's route (TOML appends it to
/// the last `[[routes]]`, wherever it is written).
fn filter(plugin: &str, settings: &str, extra: &str) -> String {
    format!("\n[[routes.filters]]\nplugin = \"{plugin}\"\nsettings = {settings}\n{extra}\n")
}

async fn proxy_with(backend: &TestBackend, filters: &str) -> TestProxy {
    TestProxy::start(&(config_text(&[backend.addr], "", "") + filters)).await
}

/// SHA-256 of the test key `key-one`, from `printf %s key-one | sha256sum`.
const KEY_ONE_SHA256: &str = "9b346041bc9a49574eb2665b2ad2a0a3f9f9cce4e42f5d1f26deb8a256b5966a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_allows_and_denies_by_range() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let allow_loopback = proxy_with(
        &backend,
        &filter("ip-filter", r#"{ allow = ["127.0.0.0/8", "::1"] }"#, ""),
    )
    .await;
    assert_eq!(send(&format!("{}/", allow_loopback.url), &[]).await.0, 200);

    let allow_other = proxy_with(
        &backend,
        &filter(
            "ip-filter",
            r#"{ allow = ["10.0.0.0/8", "2001:db8::/32"] }"#,
            "",
        ),
    )
    .await;
    let (status, _, body) = send(&format!("{}/", allow_other.url), &[]).await;
    assert_eq!((status, body.as_str()), (403, "forbidden\n"));

    let deny = proxy_with(
        &backend,
        &filter("ip-filter", r#"{ deny = ["127.0.0.1"], status = 404 }"#, ""),
    )
    .await;
    assert_eq!(send(&format!("{}/", deny.url), &[]).await.0, 404);
    assert_eq!(
        backend.requests(),
        1,
        "only the allowed request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_requires_a_known_key_and_strips_it() {
    let backend = TestBackend::start("echo", Behaviour::Echo).await;
    let hash = KEY_ONE_SHA256;
    let proxy = proxy_with(
        &backend,
        &filter(
            "api-key",
            &format!(r#"{{ query = "api_key", keys_sha256 = ["{hash}"] }}"#),
            "",
        ),
    )
    .await;
    let url = format!("{}/items?x=1", proxy.url);
    let (status, headers, _) = send(&url, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "ApiKey header=\"x-api-key\"");
    assert_eq!(send(&url, &[("x-api-key", "key-two")]).await.0, 401);

    let (status, _, echo) = send(&url, &[("x-api-key", "key-one")]).await;
    assert_eq!(status, 200, "{echo}");
    assert!(!echo.to_ascii_lowercase().contains("x-api-key"), "{echo}");

    let (status, _, echo) = send(&format!("{}/items?api_key=key-one&x=1", proxy.url), &[]).await;
    assert_eq!(status, 200, "{echo}");
    assert!(echo.starts_with("GET /items?x=1 "), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_shares_one_bucket_across_instances() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    // One request per 10 s after a burst of 5: over a few seconds, exactly
    // 5 of 40 pass, whichever instances serve them.
    let proxy = proxy_with(
        &backend,
        &filter("rate-limit", r#"{ rate = 0.1, burst = 5 }"#, ""),
    )
    .await;
    let counts = spread(&format!("{}/", proxy.url), 40, 4).await;
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&5),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&(429, "too many requests".into())),
        Some(&35),
        "{counts:?}"
    );
    let (status, headers, _) = send(&format!("{}/", proxy.url), &[]).await;
    assert_eq!(status, 429);
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    // Another key (a header) has its own bucket.
    let by_user = proxy_with(
        &backend,
        &filter(
            "rate-limit",
            r#"{ rate = 0.1, burst = 1, key = "header:x-user", zone = "u" }"#,
            "",
        ),
    )
    .await;
    let url = format!("{}/", by_user.url);
    assert_eq!(send(&url, &[("x-user", "ann")]).await.0, 200);
    assert_eq!(send(&url, &[("x-user", "ann")]).await.0, 429);
    assert_eq!(send(&url, &[("x-user", "bob")]).await.0, 200);
    // A value too long for a cell key still gets a bucket (by its hash).
    let long = "c".repeat(1000);
    assert_eq!(send(&url, &[("x-user", &long)]).await.0, 200);
    assert_eq!(send(&url, &[("x-user", &long)]).await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_rewrites_both_ways_and_adds_request_ids() {
    let backend = TestBackend::start("echo", Behaviour::Echo).await;
    let settings = r#"{ request_id = "x-request-id", request = { set = { x-env = "prod" }, remove = ["x-debug"] }, response = { set = { x-frame-options = "DENY" } } }"#;
    let proxy = proxy_with(&backend, &filter("headers", settings, "")).await;
    let url = format!("{}/", proxy.url);
    let (status, headers, echo) = send(&url, &[("x-debug", "1")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(echo.contains("x-env: prod\n"), "{echo}");
    assert!(!echo.contains("x-debug"), "{echo}");
    let id = echo
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id");
    assert_eq!(id.len(), 32);
    // The client gets the same id back.
    assert_eq!(headers["x-request-id"], id);
    // An id the client sent is kept.
    let (_, headers, echo) = send(&url, &[("x-request-id", "abc")]).await;
    assert!(echo.contains("x-request-id: abc\n"), "{echo}");
    assert_eq!(headers["x-request-id"], "abc");
}

/// A config with upstreams `web` and `canary` and one route to `web`
/// through `filters`.
fn two_upstreams(web: &TestBackend, canary: &TestBackend, filters: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[access_log]\nenabled = false\n[plugins]\ndir = {:?}\ntimeout_ms = 100\n\n\
         [[routes]]\nupstream = \"web\"\n{filters}\n\
         [upstreams.web]\n[[upstreams.web.backends]]\nname = \"web\"\naddress = \"{}\"\n\
         [upstreams.canary]\n[[upstreams.canary.backends]]\nname = \"canary\"\naddress = \"{}\"\n",
        plugin_dir().display().to_string(),
        web.addr,
        canary.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_sends_marked_requests_and_a_share_elsewhere() {
    let web = TestBackend::start("web", Behaviour::Name).await;
    let canary = TestBackend::start("canary", Behaviour::Name).await;
    let settings =
        r#"{ upstream = "canary", percent = 20, header = "x-canary", cookie = "canary" }"#;
    let proxy = TestProxy::start(&two_upstreams(
        &web,
        &canary,
        &filter("canary", settings, ""),
    ))
    .await;
    let url = format!("{}/", proxy.url);
    assert_eq!(send(&url, &[("x-canary", "always")]).await.2, "canary\n");
    assert_eq!(send(&url, &[("x-canary", "never")]).await.2, "web\n");
    assert_eq!(
        send(&url, &[("cookie", "a=b; canary=1")]).await.2,
        "canary\n"
    );
    let counts = spread(&url, 2000, 4).await;
    let to_canary = counts.get(&(200, "canary".into())).copied().unwrap_or(0);
    // 20% of 2,000 = 400; 5 standard deviations is about 90.
    assert!((310..=490).contains(&to_canary), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_runs_in_order() {
    let backend = TestBackend::start("echo", Behaviour::Echo).await;
    let hash = KEY_ONE_SHA256;
    let chain = filter("ip-filter", r#"{ allow = ["127.0.0.0/8", "::1"] }"#, "")
        + &filter("api-key", &format!(r#"{{ keys_sha256 = ["{hash}"] }}"#), "")
        + &filter(
            "headers",
            r#"{ request_id = "x-request-id", request = { set = { x-chain = "3" } } }"#,
            "",
        );
    let text = with_admin_and(config_text(&[backend.addr], "", ""), &chain);
    let proxy = TestProxy::start(&text).await;
    let url = format!("{}/", proxy.url);
    let (status, _, echo) = send(&url, &[("x-api-key", "key-one")]).await;
    assert_eq!(status, 200);
    assert!(
        echo.contains("x-chain: 3\n") && echo.contains("x-request-id: "),
        "{echo}"
    );
    assert!(!echo.contains("x-api-key"), "{echo}");
    // The second filter answers: the third never runs, the backend never sees it.
    let before = backend.requests();
    assert_eq!(send(&url, &[]).await.0, 401);
    assert_eq!(backend.requests(), before);

    let snapshot = proxy.server.snapshot();
    let route = &snapshot.routes()[0];
    let calls: Vec<u64> = route.filters.iter().map(|f| f.pool.calls()).collect();
    // ip-filter and api-key saw both requests; headers saw only the one
    // that passed, once on the way in and once (echoing its request id)
    // on the way out.
    assert_eq!(calls, vec![2, 2, 2]);
    let (status, metrics) = admin(
        proxy.server.admin_addr().unwrap(),
        "GET",
        "/metrics",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "weir_filter_calls_total{route=\"route 1\",position=\"2\",filter=\"api-key\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_plugin_counter_total{plugin=\"api-key\",name=\"rejected\"} 1"),
        "{metrics}"
    );
}

fn with_admin_and(text: String, filters: &str) -> String {
    format!("{text}{filters}\n[admin]\naddress = \"127.0.0.1:0\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_filter_fails_open_or_closed_as_configured() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let open = proxy_with(
        &backend,
        &filter("trap-filter", "{}", "on_failure = \"open\""),
    )
    .await;
    let counts = spread(&format!("{}/", open.url), 20, 2).await;
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&20),
        "{counts:?}"
    );

    let closed = proxy_with(&backend, &filter("trap-filter", "{}", "")).await;
    let (status, _, body) = send(&format!("{}/", closed.url), &[]).await;
    assert_eq!(status, 503, "closed is the default");
    assert!(body.contains("a request filter failed"), "{body}");
    let snapshot = closed.server.snapshot();
    assert_eq!(snapshot.routes()[0].filters[0].pool.failures(), 1);
    // A later filter in a fail-open chain still runs.
    let chain = filter("trap-filter", "{}", "on_failure = \"open\"")
        + &filter("ip-filter", r#"{ allow = ["10.0.0.0/8"] }"#, "");
    let mixed = proxy_with(&backend, &chain).await;
    assert_eq!(send(&format!("{}/", mixed.url), &[]).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerouting_to_an_unknown_upstream_is_a_failed_call() {
    let web = TestBackend::start("web", Behaviour::Name).await;
    let canary = TestBackend::start("canary", Behaviour::Name).await;
    let settings = r#"{ upstream = "nope", percent = 100 }"#;
    let proxy = TestProxy::start(&two_upstreams(
        &web,
        &canary,
        &filter("canary", settings, "on_failure = \"open\""),
    ))
    .await;
    // Fail open: the request goes where the route sends it.
    assert_eq!(send(&format!("{}/", proxy.url), &[]).await.2, "web\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_balancers_are_not_interchangeable() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let err = TestProxy::try_start(
        &(config_text(&[backend.addr], "", "") + &filter("round-robin", "{}", "")),
    )
    .await
    .err()
    .expect("a balancer as a filter is refused")
    .to_string();
    assert!(
        err.contains("is a balancer component, not a filter"),
        "{err}"
    );
    assert!(err.contains("test.toml:"), "{err}");
    let err = TestProxy::try_start(&config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"ip-filter\"\n",
        "",
    ))
    .await
    .err()
    .expect("a filter as a balancer is refused")
    .to_string();
    assert!(
        err.contains("is a filter component, not a balancer"),
        "{err}"
    );
}
