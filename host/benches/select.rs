//! The cost of choosing a backend for one request, with 3, 100 and 10,000
//! backends:
//!
//! - `select/plugin/N`: [`Upstream::choose`] through the `round-robin`
//!   plugin component (borrow an idle instance, lend it the request, call
//!   `select` under the epoch deadline, map the id back to a backend);
//! - `select/native/N`: the same call on an upstream without a balancer,
//!   answered by weir's native round robin;
//! - `select/set-change/N`: one plugin `select` right after the backend set
//!   changed, which first pays the O(N) `set-backends` call. In steady state
//!   this happens once per instance per backend-set change; criterion's
//!   warm-up absorbs it in the two benchmarks above.
//!
//! - `policies/NAME/N`: the same as `select/plugin/N` for each other shipped
//!   policy (`c-round-robin`, round robin written in C,
//!   `weighted-round-robin`, `least-connections`, `p2c-ewma`, `random`,
//!   `consistent-hash` keyed on a header, `sticky-cookie` pinning every
//!   request since none carries its cookie). `js-round-robin` is left out: its
//!   garbage collector's pauses overrun the default 5 ms deadline now and
//!   then (see plugins/js-round-robin/README.md).
//!
//! - `filters/NAME`: one `on-request` call of a filter (borrow an idle
//!   instance, lend it the request, call, check the decision): `pass-filter`
//!   (the empty filter: continue unchanged), `ip-filter/1000` (an allow list
//!   of 1,000 disjoint ranges, the client in the last one), `headers` (set one
//!   header, add a request id) and `rate-limit` (a generous bucket: one
//!   shared-cell read and compare-and-swap per call).
//!
//! - `instances/NAME`: making one more ready instance of `round-robin`,
//!   `p2c-ewma` and `pass-filter` (`BalancerPool::new` or `FilterPool::new`:
//!   instantiate and `init`). Before it, the resident memory each instance
//!   adds is printed (`RSS per instance`): 200 pools of one instance each
//!   made and kept, `VmRSS` read before and after.
//!
//! Run: `taskset -c 1 cargo bench -p weir --bench select` (after
//! `cargo xtask plugins`; the plugin directory is `$WEIR_PLUGIN_DIR`, else
//! `$CARGO_TARGET_DIR/plugins`, else `target/plugins`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use weir::backend::BackendSet;
use weir::plugin::{
    BalancerPool, FilterDecision, FilterPool, PluginLimits, PluginRuntime, PluginStore,
};
use weir::policy::ChosenBy;
use weir::snapshot::Snapshot;
use weir::upstream::{Choice, Upstream};
use weir::view::RequestView;

/// Backend counts every benchmark is run with.
const SIZES: [usize; 3] = [3, 100, 10_000];

/// The directory holding `round-robin.wasm`.
fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("WEIR_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("plugins")
        });
    if !dir.join("round-robin.wasm").is_file() {
        panic!(
            "no round-robin.wasm in {}: run cargo xtask plugins first",
            dir.display()
        );
    }
    dir
}

/// The shipped policies measured by `policies/NAME/N`, with the settings
/// each runs with (`consistent-hash` keys on a header the request carries).
const POLICIES: [(&str, &str); 7] = [
    ("c-round-robin", "{}"),
    ("weighted-round-robin", "{}"),
    ("least-connections", "{}"),
    ("p2c-ewma", "{}"),
    ("random", "{}"),
    ("consistent-hash", "{ key = \"header:x-user\" }"),
    // No cookie in the request: every select pins, adding a Set-Cookie.
    ("sticky-cookie", "{}"),
];

/// A config with one upstream `web` of `n` backends (never connected to),
/// balanced by the round-robin plugin or, without `plugin`, natively.
fn config_text(n: usize, plugin: bool) -> String {
    config_with(n, plugin.then_some(("round-robin", "{}")))
}

/// A config with one upstream `web` of `n` backends, balanced by plugin
/// `(name, settings)` or natively.
///
/// The CPU budget is all of every worker's time: a benchmark calls the
/// plugin back to back, more than half of one core, which the default
/// budget rightly quarantines. At 100% the budget is still accounted for
/// on every call (its cost is measured) but cannot be exceeded.
fn config_with(n: usize, plugin: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[plugins]\ndir = {:?}\ncpu_budget_percent = 100\n\n\
         [upstreams.web]\n\n",
        plugin_dir().display().to_string()
    );
    if let Some((name, settings)) = plugin {
        text.push_str(&format!(
            "[upstreams.web.balancer]\nplugin = \"{name}\"\nsettings = {settings}\n\n"
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "[[upstreams.web.backends]]\naddress = \"127.0.0.1:{}\"\n",
            10_000 + i
        ));
    }
    text
}

/// Everything one benchmark needs alive: the plugin runtime, the tokio
/// runtime the upstream's client was built in, and the upstream.
struct Fixture {
    _plugins: Arc<PluginRuntime>,
    _tokio: tokio::runtime::Runtime,
    upstream: Arc<Upstream>,
    snapshot: Arc<Snapshot>,
}

fn fixture(n: usize, plugin: bool) -> Fixture {
    fixture_for(&config_text(n, plugin), n)
}

fn fixture_for(text: &str, n: usize) -> Fixture {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let upstream_of = || -> Result<_, Box<dyn std::error::Error>> {
        let _entered = tokio.enter();
        let config = weir::Config::parse(Path::new("bench.toml"), text)?;
        let runtime = PluginRuntime::new(PluginLimits::from_config(&config.plugins))?;
        let snapshot = Snapshot::build(config, &weir::plugin::PluginStore::new(runtime.clone()))?;
        let upstream = snapshot.upstream("web").expect("upstream web").clone();
        Ok((runtime, upstream, Arc::new(snapshot)))
    };
    let (plugins, upstream, snapshot) = upstream_of().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(upstream.backends().len(), n);
    Fixture {
        _plugins: plugins,
        _tokio: tokio,
        upstream,
        snapshot,
    }
}

/// A typical small GET, built once and lent to every call.
fn request_view() -> RequestView {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("example.com"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("wrk"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert("x-user", HeaderValue::from_static("user-4711"));
    RequestView {
        method: Method::GET,
        uri: Uri::from_static("/index.html?q=1"),
        headers,
        client: SocketAddr::from(([127, 0, 0, 1], 40_000)),
        tls: None,
        response_headers: Vec::new(),
    }
}

/// Fails unless `choice` is a backend chosen by `want`, so a benchmark cannot
/// silently measure another path (the fallback, or a 503).
fn check(choice: Choice, want: ChosenBy) {
    match choice {
        Choice::Backend(_, by) => assert_eq!(by, want, "chosen by {}", by.as_str()),
        Choice::Unavailable(why) => panic!("no backend: {why}"),
        Choice::PluginFailed(error) => panic!("plugin call failed: {error}"),
    }
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    group.throughput(Throughput::Elements(1));

    for n in SIZES {
        let fx = fixture(n, true);
        let mut view = request_view();
        // Pays set-backends once, outside any timing.
        let pool = &fx.upstream.balancer().expect("a plugin balancer").pool;
        if let Err(error) = pool.select(&fx.upstream.backends(), &mut view) {
            panic!("plugin select with {n} backends failed: {error}");
        }
        check(fx.upstream.choose(&mut view, &[]), ChosenBy::Plugin);
        group.bench_with_input(BenchmarkId::new("plugin", n), &n, |b, _| {
            b.iter(|| fx.upstream.choose(black_box(&mut view), &[]))
        });
        check(fx.upstream.choose(&mut view, &[]), ChosenBy::Plugin);
        let pool = &fx.upstream.balancer().expect("a plugin balancer").pool;
        assert_eq!(pool.failures(), 0, "a plugin call failed while measured");
        assert_eq!(view.uri.path(), "/index.html", "the request came back");
    }

    for n in SIZES {
        let fx = fixture(n, false);
        let mut view = request_view();
        check(fx.upstream.choose(&mut view, &[]), ChosenBy::RoundRobin);
        group.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| fx.upstream.choose(black_box(&mut view), &[]))
        });
        check(fx.upstream.choose(&mut view, &[]), ChosenBy::RoundRobin);
    }

    for n in SIZES {
        let fx = fixture(n, true);
        let mut view = request_view();
        let pool = &fx.upstream.balancer().expect("a plugin balancer").pool;
        let current = fx.upstream.backends();
        // The same backends as a new set (new generation), as a health
        // change or reload would make: the next select must resend them.
        let changed = || BackendSet::new(current.iter().cloned().collect());
        let first = pool.select(&Arc::new(changed()), &mut view);
        assert!(matches!(first, Ok(Some(_))), "{:?}", first.err());
        group.bench_with_input(BenchmarkId::new("set-change", n), &n, |b, _| {
            b.iter_batched_ref(
                || Arc::new(changed()),
                |set| pool.select(set, black_box(&mut view)),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(pool.failures(), 0, "a plugin call failed while measured");
    }

    group.finish();
}

/// `policies/NAME/N`: one `choose` through each shipped policy, measured
/// like `select/plugin/N`.
fn policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("policies");
    group.throughput(Throughput::Elements(1));
    for (name, settings) in POLICIES {
        for n in SIZES {
            let fx = fixture_for(&config_with(n, Some((name, settings))), n);
            let mut view = request_view();
            let pool = &fx.upstream.balancer().expect("a plugin balancer").pool;
            if let Err(error) = pool.select(&fx.upstream.backends(), &mut view) {
                panic!("{name} with {n} backends failed: {error}");
            }
            check(fx.upstream.choose(&mut view, &[]), ChosenBy::Plugin);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| fx.upstream.choose(black_box(&mut view), &[]))
            });
            check(fx.upstream.choose(&mut view, &[]), ChosenBy::Plugin);
            assert_eq!(pool.failures(), 0, "a {name} call failed while measured");
        }
    }
    group.finish();
}

/// The filters measured by `filters/NAME`, with their settings.
fn filter_cases() -> Vec<(&'static str, &'static str, String)> {
    // /25s, so no two merge: 1,000 intervals to search.
    let mut ranges: Vec<String> = (0..999)
        .map(|i| format!("\"10.{}.{}.0/25\"", i / 256, i % 256))
        .collect();
    ranges.push("\"127.0.0.0/8\"".into());
    vec![
        ("pass-filter", "pass-filter", "{}".into()),
        (
            "ip-filter/1000",
            "ip-filter",
            format!("{{ allow = [{}] }}", ranges.join(", ")),
        ),
        (
            "headers",
            "headers",
            "{ request_id = \"x-request-id\", request = { set = { x-env = \"prod\" } } }".into(),
        ),
        (
            "rate-limit",
            "rate-limit",
            "{ rate = 1000000, burst = 1000000 }".into(),
        ),
    ]
}

fn filters(c: &mut Criterion) {
    let mut group = c.benchmark_group("filters");
    group.throughput(Throughput::Elements(1));
    for (id, plugin, settings) in filter_cases() {
        let text = format!(
            "{}\n[[routes]]\nupstream = \"web\"\n[[routes.filters]]\nplugin = \"{plugin}\"\nsettings = {settings}\n",
            config_with(3, None)
        );
        let fx = fixture_for(&text, 3);
        let stage = &fx.snapshot.routes()[0].filters[0];
        let mut view = request_view();
        let continues = |view: &mut RequestView| {
            let mut fresh = request_view();
            std::mem::swap(view, &mut fresh);
            match stage.pool.on_request(view, |_| true) {
                Ok(FilterDecision::Continue(_)) => {}
                other => panic!("{id}: expected continue, got {other:?}"),
            }
        };
        continues(&mut view);
        group.bench_function(id, |b| {
            b.iter(|| stage.pool.on_request(black_box(&mut view), |_| true))
        });
        continues(&mut view);
        assert_eq!(
            stage.pool.failures(),
            0,
            "a {id} call failed while measured"
        );
    }
    group.finish();
}

/// The process's resident set, in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// One ready instance of a balancer or filter, in a pool of its own.
enum AnyPool {
    Balancer(BalancerPool),
    Filter(FilterPool),
}

impl AnyPool {
    /// Failed calls so far: none, or the instance is not the ready one
    /// measured.
    fn failures(&self) -> u64 {
        match self {
            AnyPool::Balancer(pool) => pool.failures(),
            AnyPool::Filter(pool) => pool.failures(),
        }
    }
}

fn new_pool(plugin: &Arc<weir::plugin::LoadedPlugin>) -> AnyPool {
    let made = if plugin.world() == "balancer" {
        BalancerPool::new(plugin.clone(), "web", "{}".into()).map(AnyPool::Balancer)
    } else {
        FilterPool::new(plugin.clone(), "route 1 filter 1", "{}".into()).map(AnyPool::Filter)
    };
    made.unwrap_or_else(|e| panic!("{}: {e}", plugin.name()))
}

/// `instances/NAME`, after printing the resident memory each adds.
fn instances(c: &mut Criterion) {
    const KEPT: usize = 200;
    let mut group = c.benchmark_group("instances");
    for name in ["round-robin", "p2c-ewma", "pass-filter"] {
        // The default limits: room for 1,000 instances, 200 of them kept.
        let limits = PluginLimits::from_config(&weir::config::PluginsConfig::default());
        let runtime = PluginRuntime::new(limits).expect("plugin runtime");
        let store = PluginStore::new(runtime.clone());
        let plugin = store.load(&plugin_dir(), name).expect("plugin");
        // The first instance pays one-off costs (the code's pages).
        let first = new_pool(&plugin);
        let before = rss_kib();
        let kept: Vec<AnyPool> = (0..KEPT).map(|_| new_pool(&plugin)).collect();
        let after = rss_kib();
        assert!(kept.iter().all(|pool| pool.failures() == 0));
        println!(
            "RSS per instance of {name}: {:.1} KiB ({KEPT} instances: {before} -> {after} KiB)",
            (after.saturating_sub(before)) as f64 / KEPT as f64
        );
        drop(kept);
        drop(first);
        group.bench_function(name, |b| b.iter(|| new_pool(&plugin)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = select, policies, filters, instances
}
criterion_main!(benches);
