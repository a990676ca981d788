//! A filter abusing its shared cells (the `cell-flood` test plugin) is held
//! to the cells' limits through the real host: long keys store nothing, a
//! flood of new keys stops at the byte cap with every request still
//! answered, a call writes at most its share, a failed call's writes are
//! taken back, and `/metrics` counts each refusal.

mod support;

use support::*;
use weir::plugin::{
    CELL_OVERHEAD_BYTES, CellUsage, MAX_CALL_WRITES, MAX_CELL_BYTES, MAX_KEY_BYTES,
};

/// A route for `path_prefix` through one `cell-flood` filter with
/// `settings` (and `extra` keys of the filter entry).
fn route(path_prefix: &str, settings: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\npath_prefix = \"{path_prefix}\"\nupstream = \"web\"\n\
         [[routes.filters]]\nplugin = \"cell-flood\"\nsettings = {settings}\n{extra}\n"
    )
}

/// weir with an admin listener, upstream `web` on `backend`, and `routes`
/// (after the catch-all route, which has no filter). The CPU budget and the
/// slow-call threshold are off: a flood of a hundred host calls per request
/// from four clients is over them within a second, and these tests are of
/// the cells' caps, not of quarantine (`tests/hostile.rs`).
async fn proxy(backend: &TestBackend, routes: &str) -> TestProxy {
    let text = config_text(
        &[backend.addr],
        "",
        "cpu_budget_percent = 0\nslow_call_percent = 0\n",
    );
    TestProxy::start(&format!(
        "{text}{routes}\n[admin]\naddress = \"127.0.0.1:0\"\n"
    ))
    .await
}

/// What the plugin's cells hold (every use of `cell-flood` shares them).
fn usage(proxy: &TestProxy) -> CellUsage {
    let snapshot = proxy.server.snapshot();
    let stage = &snapshot
        .routes()
        .iter()
        .find(|r| !r.filters.is_empty())
        .unwrap()
        .filters[0];
    stage.pool.plugin().state().cells.usage()
}

async fn metrics(proxy: &TestProxy) -> String {
    let addr = proxy.server.admin_addr().unwrap();
    let (status, text) = admin(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    text
}

/// The value of the refusal counter for `reason` in `/metrics`.
fn refusals(metrics: &str, reason: &str) -> u64 {
    let sample =
        format!("weir_plugin_cell_refusals_total{{plugin=\"cell-flood\",reason=\"{reason}\"}} ");
    let line = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&sample))
        .unwrap_or_else(|| panic!("no {sample} in {metrics}"));
    line.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys_are_refused_and_store_nothing() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let settings = format!(
        "{{ mode = \"long-keys\", count = 10, key_len = {} }}",
        MAX_KEY_BYTES * 40
    );
    let proxy = proxy(&backend, &route("/flood", &settings, "")).await;
    let counts = spread(&format!("{}/flood", proxy.url), 20, 2).await;
    assert_eq!(
        counts.get(&(200, "stored 0".into())),
        Some(&20),
        "{counts:?}"
    );
    assert_eq!(usage(&proxy), CellUsage::default());
    let metrics = metrics(&proxy).await;
    assert_eq!(refusals(&metrics, "key_too_long"), 200);
    assert_eq!(refusals(&metrics, "full"), 0);
    assert!(
        metrics.contains("weir_plugin_cell_bytes{plugin=\"cell-flood\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_keys_stops_at_the_byte_cap() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    // Each call tries 100 keys of the longest length allowed; the host
    // stores at most its share per call (one write goes to `next`).
    let per_call = MAX_CALL_WRITES - 1;
    let settings = format!("{{ mode = \"many-keys\", count = 100, key_len = {MAX_KEY_BYTES} }}");
    let proxy = proxy(&backend, &route("/flood", &settings, "")).await;
    let cell = MAX_KEY_BYTES + CELL_OVERHEAD_BYTES;
    let calls_to_fill = MAX_CELL_BYTES / cell / per_call + 1;
    let total = (calls_to_fill + 200) / 4 * 4;
    let counts = spread(&format!("{}/flood", proxy.url), total, 4).await;

    let mut stored = 0;
    for ((status, body), n) in &counts {
        assert_eq!(*status, 200, "{counts:?}");
        let per_request: usize = body.strip_prefix("stored ").unwrap().parse().unwrap();
        assert!(per_request <= per_call, "{counts:?}");
        stored += per_request * n;
    }
    assert!(
        counts.contains_key(&(200, "stored 0".into())),
        "the cap was never reached: {counts:?}"
    );
    let used = usage(&proxy);
    assert_eq!(used.cells, stored + 1, "every stored key, and `next`");
    assert!(used.bytes <= MAX_CELL_BYTES, "{used:?}");
    assert!(used.bytes + cell > MAX_CELL_BYTES, "{used:?} is not full");

    let metrics = metrics(&proxy).await;
    assert!(refusals(&metrics, "full") > 0, "{metrics}");
    assert!(refusals(&metrics, "too_many_writes") > 0, "{metrics}");
    assert!(
        metrics.contains(&format!(
            "weir_plugin_cell_bytes{{plugin=\"cell-flood\"}} {}",
            used.bytes
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_leaves_no_writes_behind() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let cases = [
        ("none", "on_failure = \"open\"", 200),
        ("trap", "", 503),
        ("timeout", "on_failure = \"open\"", 200),
        ("invalid", "on_failure = \"open\"", 200),
    ];
    let mut routes = String::new();
    for (fail, policy, _) in &cases {
        let write = format!("{{ mode = \"write\", key = \"{fail}\", fail = \"{fail}\" }}");
        let read = format!("{{ mode = \"read\", key = \"{fail}\" }}");
        routes += &route(&format!("/write/{fail}"), &write, policy);
        routes += &route(&format!("/read/{fail}"), &read, "");
    }
    let proxy = proxy(&backend, &routes).await;
    for (fail, _, status) in cases {
        let (answer, _, _) = send(&format!("{}/write/{fail}", proxy.url), &[]).await;
        assert_eq!(answer, status, "fail = {fail}");
        let (_, _, value) = send(&format!("{}/read/{fail}", proxy.url), &[]).await;
        let expected = if fail == "none" { "1" } else { "none" };
        assert_eq!(value, expected, "fail = {fail}");
    }
    assert_eq!(usage(&proxy).cells, 1, "only the call that succeeded wrote");
    let snapshot = proxy.server.snapshot();
    let failures: Vec<u64> = snapshot
        .routes()
        .iter()
        .filter(|r| !r.filters.is_empty())
        .map(|r| r.filters[0].pool.failures())
        .collect();
    assert_eq!(failures, [0, 0, 1, 0, 1, 0, 1, 0]);
}
