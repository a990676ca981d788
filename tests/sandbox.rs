//! Misbehaving plugins cost at most the decision at hand: each is contained,
//! logged, and the request still routed (or refused, when the upstream says
//! `on_failure = "fail"`).

mod support;

use std::path::Path;

use support::*;

fn balancer(plugin: &str) -> String {
    format!("[upstreams.web.balancer]\nplugin = \"{plugin}\"\n")
}

/// Starts weir with `plugin` over two backends, sends `n` requests, and
/// returns the counts seen and the plugin's failure count.
async fn run_with(
    plugin: &str,
    n: usize,
    extra: &str,
) -> (std::collections::BTreeMap<(u16, String), usize>, u64) {
    let one = TestBackend::start("backend-1", Behaviour::Name).await;
    let two = TestBackend::start("backend-2", Behaviour::Name).await;
    let text = config_text(
        &[one.addr, two.addr],
        &format!("{}{extra}", balancer(plugin)),
        "",
    );
    let proxy = TestProxy::start(&text).await;
    let counts = spread(&proxy.url, n, 2).await;
    let upstream = proxy.server.snapshot().upstream("web").unwrap().clone();
    let failures = upstream.balancer().unwrap().pool.failures();
    (counts, failures)
}

fn all_ok(counts: &std::collections::BTreeMap<(u16, String), usize>, n: usize) {
    let ok: usize = counts
        .iter()
        .filter(|((s, _), _)| *s == 200)
        .map(|(_, c)| c)
        .sum();
    assert_eq!(ok, n, "{counts:?}");
    // The fallback round robin spreads them.
    assert!(
        counts.contains_key(&(200, "backend-1".into())),
        "{counts:?}"
    );
    assert!(
        counts.contains_key(&(200, "backend-2".into())),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_traps_is_contained_and_requests_succeed() {
    let (counts, failures) = run_with("trap", 20, "").await;
    all_ok(&counts, 20);
    assert_eq!(failures, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_returns_is_interrupted() {
    let (counts, failures) = run_with("busy-loop", 10, "").await;
    all_ok(&counts, 10);
    assert_eq!(failures, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_eats_memory_hits_its_cap() {
    let (counts, failures) = run_with("memory-hog", 6, "").await;
    all_ok(&counts, 6);
    assert_eq!(failures, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_writing_to_stderr_is_contained() {
    // Blocking WASI I/O from a tokio worker panics inside wasmtime-wasi; the
    // host must turn that into one failed decision, not a dropped request.
    let (counts, failures) = run_with("stderr-writer", 8, "").await;
    all_ok(&counts, 8);
    assert_eq!(failures, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_naming_a_backend_that_does_not_exist_falls_back() {
    let (counts, failures) = run_with("bogus-id", 10, "").await;
    all_ok(&counts, 10);
    assert_eq!(failures, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_fail_answers_503() {
    let (counts, failures) = run_with("trap", 4, "on_failure = \"fail\"\n").await;
    assert_eq!(
        counts.keys().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![503],
        "{counts:?}"
    );
    assert_eq!(failures, 4);
}

async fn start_error(plugin: &str) -> String {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(&[backend.addr], &balancer(plugin), "");
    match TestProxy::try_start(&text).await {
        Ok(_) => panic!("weir started with plugin {plugin}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_init_fails_is_rejected_with_its_message() {
    let err = start_error("bad-init").await;
    assert!(
        err.contains("plugin bad-init for upstream web: init failed"),
        "{err}"
    );
    assert!(err.contains("bad-init refuses"), "{err}");
    assert!(err.starts_with("test.toml:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_another_world_is_rejected() {
    let err = start_error("wrong-world").await;
    assert!(err.contains("plugin wrong-world"), "{err}");
    assert!(err.contains("weir:plugin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_what_weir_does_not_provide_is_rejected() {
    let err = start_error("bad-import").await;
    assert!(err.contains("plugin bad-import"), "{err}");
    assert!(
        err.contains("imports something weir does not provide"),
        "{err}"
    );
    assert!(err.contains("test:evil/net"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_plugin_is_rejected_with_its_path() {
    let err = start_error("no-such-plugin").await;
    assert!(err.contains("no-such-plugin.wasm"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn garbage_files_are_rejected_before_compiling() {
    let limits = weir::plugin::PluginLimits::from_config(&Default::default());
    let runtime = weir::plugin::PluginRuntime::new(weir::plugin::PluginLimits {
        max_instances: 4,
        ..limits
    })
    .unwrap();
    let path = Path::new("x.wasm");
    let cases: [(&[u8], &str); 4] = [
        (b"", "empty"),
        (b"hello world, not wasm", "no \\0asm header"),
        (b"\0asm\x01\0\0\0\x05garbage", "not a valid component"),
        (b"\0asm\x01\0\0\0", "not a valid component"),
    ];
    for (bytes, expected) in cases {
        let err = runtime
            .load_bytes("x", path, bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
        assert!(err.starts_with("plugin x (x.wasm)"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_backends_reach_the_plugin_within_the_default_deadline() {
    // Copying 10,000 backends into an instance takes milliseconds: more than
    // a select's 5 ms default on a busy machine. It must not cost the plugin
    // its decisions.
    let mut text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[access_log]\nenabled = false\n[plugins]\ndir = {:?}\nmax_instances = 8\n\
         [upstreams.web.balancer]\nplugin = \"round-robin\"\n",
        plugin_dir().display().to_string()
    );
    for i in 0..10_000u32 {
        text.push_str(&format!(
            "[[upstreams.web.backends]]\naddress = \"127.{}.{}.1:80\"\n",
            i / 256,
            i % 256
        ));
    }
    let config = weir::Config::parse(Path::new("big.toml"), &text).unwrap();
    let runtime = weir::server::runtime_for(&config).unwrap();
    let store = weir::plugin::PluginStore::new(runtime);
    let snapshot = weir::snapshot::Snapshot::build(config, &store).unwrap();
    let upstream = snapshot.upstream("web").unwrap().clone();
    let mut view = weir::plugin::RequestView {
        method: http::Method::GET,
        uri: "/".parse().unwrap(),
        headers: http::HeaderMap::new(),
        client: "127.0.0.1:1234".parse().unwrap(),
        tls: None,
        response_headers: Vec::new(),
    };
    let mut ids = std::collections::HashSet::new();
    for _ in 0..100 {
        match upstream.choose(&mut view, &[]) {
            weir::upstream::Choice::Backend(backend, weir::upstream::ChosenBy::Plugin) => {
                ids.insert(backend.id);
            }
            weir::upstream::Choice::PluginFailed(e) => panic!("not chosen by the plugin: {e}"),
            _ => panic!("not chosen by the plugin"),
        }
    }
    assert_eq!(
        ids.len(),
        100,
        "round robin repeated a backend within 100 picks"
    );
    assert_eq!(upstream.balancer().unwrap().pool.failures(), 0);
}
