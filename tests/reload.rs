//! Reloading under load: plugin files swapped and broken, the config file
//! rewritten, and restarts that find their plugins already compiled.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin_dir().join(format!("{name}.wasm"))).unwrap()
}

fn plugin_digest(proxy: &TestProxy) -> u64 {
    let snapshot = proxy.server.snapshot();
    let upstream = snapshot.upstream("web").unwrap();
    upstream.balancer().unwrap().pool.plugin().digest()
}

/// weir over two backends with plugin `policy`, loaded from a private
/// plugin dir holding `initial` as policy.wasm, watched every 20 ms.
async fn start_with_policy(initial: &str) -> (TempDir, TestProxy, [TestBackend; 2]) {
    let dir = TempDir::new("plugins");
    std::fs::write(dir.0.join("policy.wasm"), plugin_bytes(initial)).unwrap();
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
    ];
    let text = config_text(
        &[backends[0].addr, backends[1].addr],
        "[upstreams.web.balancer]\nplugin = \"policy\"\n",
        "watch_interval_ms = 20\n",
    )
    .replace(
        &format!("dir = {:?}", plugin_dir().display().to_string()),
        &format!("dir = {:?}", dir.0.display().to_string()),
    );
    let proxy = TestProxy::start(&text).await;
    (dir, proxy, backends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_plugin_swaps_under_load_lose_no_request() {
    let (dir, proxy, _backends) = start_with_policy("choose-first").await;
    let versions = [plugin_bytes("choose-first"), plugin_bytes("round-robin")];
    let load = Load::start(&proxy.url, 4);

    // Odd swaps install round-robin, even ones choose-first; the 100th is
    // choose-first.
    for i in 1..=100 {
        let bytes = &versions[i % 2];
        // A plain write, not write-and-rename: the watcher must not load a
        // half-written file.
        std::fs::write(dir.0.join("policy.wasm"), bytes).unwrap();
        let want = weir::plugin::digest(bytes);
        wait_for(&format!("swap {i}"), || plugin_digest(&proxy) == want).await;
    }
    load.finish_all_ok(100).await;
    assert!(
        proxy.server.reloads() >= 100,
        "{} reloads",
        proxy.server.reloads()
    );

    // The last swap installed choose-first: everything goes to backend-1.
    let after = spread(&proxy.url, 60, 3).await;
    assert_eq!(
        after.get(&(200, "backend-1".to_string())),
        Some(&60),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_deleted_plugin_files_keep_the_last_good_version() {
    let (dir, proxy, _backends) = start_with_policy("choose-first").await;
    let good = plugin_digest(&proxy);
    let file = dir.0.join("policy.wasm");
    let load = Load::start(&proxy.url, 2);

    let broken: [(&str, Vec<u8>); 5] = [
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("an empty file", Vec::new()),
        ("a component of another world", plugin_bytes("wrong-world")),
        ("a plugin whose init fails", plugin_bytes("bad-init")),
        (
            "a truncated component",
            plugin_bytes("round-robin")[..1000].to_vec(),
        ),
    ];
    for (what, bytes) in &broken {
        let reloads = proxy.server.reloads();
        std::fs::write(&file, bytes).unwrap();
        wait_for(&format!("the reload after writing {what}"), || {
            proxy.server.reloads() > reloads
        })
        .await;
        assert_eq!(
            plugin_digest(&proxy),
            good,
            "{what} replaced the good version"
        );
    }
    // 100 MB: refused by size, before it is read.
    let reloads = proxy.server.reloads();
    let huge = std::fs::File::create(&file).unwrap();
    huge.set_len(100 << 20).unwrap();
    drop(huge);
    wait_for("the reload after writing 100 MB", || {
        proxy.server.reloads() > reloads
    })
    .await;
    assert_eq!(
        plugin_digest(&proxy),
        good,
        "a 100 MB file replaced the good version"
    );

    let reloads = proxy.server.reloads();
    std::fs::remove_file(&file).unwrap();
    wait_for("the reload after deleting the file", || {
        proxy.server.reloads() > reloads
    })
    .await;
    assert_eq!(plugin_digest(&proxy), good);

    let seen = load.finish().await;
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| *s == (200, "backend-1".to_string())),
        "{:?}",
        seen.iter().find(|s| **s != (200, "backend-1".to_string()))
    );

    // A good file brought back is picked up again.
    let round_robin = plugin_bytes("round-robin");
    std::fs::write(&file, &round_robin).unwrap();
    let want = weir::plugin::digest(&round_robin);
    wait_for("round-robin to load", || plugin_digest(&proxy) == want).await;
}

fn two_backend_config(plugins: &Path, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n\n[plugins]\ndir = {:?}\nmax_instances = 64\nwatch_interval_ms = 20\n\n\
         [[routes]]\nupstream = \"web\"\n\n[upstreams.web.balancer]\nplugin = \"round-robin\"\n\n\
         [[upstreams.web.backends]]\nname = \"{a}\"\naddress = \"{a}\"\n\
         [[upstreams.web.backends]]\nname = \"{b}\"\naddress = \"{b}\"\n",
        plugins.display().to_string()
    )
}

async fn start_from_file(text: &str) -> (TempDir, PathBuf, TestProxy) {
    let dir = TempDir::new("config");
    let path = dir.0.join("weir.toml");
    std::fs::write(&path, text).unwrap();
    init_logging();
    let config = weir::Config::load(&path).unwrap();
    let server = weir::Server::start(config).await.unwrap();
    let url = format!("http://{}", server.local_addrs()[0]);
    (dir, path, TestProxy { server, url })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_adds_and_removes_backends_under_load() {
    let b1 = TestBackend::start("backend-1", Behaviour::Name).await;
    let b2 = TestBackend::start("backend-2", Behaviour::Name).await;
    let b3 = TestBackend::start("backend-3", Behaviour::Name).await;
    let (_dir, path, proxy) =
        start_from_file(&two_backend_config(&plugin_dir(), b1.addr, b2.addr)).await;
    let load = Load::start(&proxy.url, 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let backend_at = |addr: std::net::SocketAddr| {
        let snapshot = proxy.server.snapshot();
        let backends = snapshot.upstream("web").unwrap().backends();
        backends.iter().find(|b| b.addr == addr).cloned()
    };
    let (kept_before, removed) = (backend_at(b2.addr).unwrap(), backend_at(b1.addr).unwrap());
    let kept_requests = kept_before.stats.requests();

    // Replace backend-1 with backend-3, the way an operator edits the file.
    std::fs::write(&path, two_backend_config(&plugin_dir(), b3.addr, b2.addr)).unwrap();
    wait_for("the config reload", || proxy.server.reloads() >= 1).await;
    let b1_at_reload = b1.requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish_all_ok(1).await;
    assert!(b3.requests() > 0, "the added backend got no traffic");
    // The backend that stayed keeps its id (plugins may key state by it) and
    // its live counters; the new one does not take the removed one's id.
    let kept_after = backend_at(b2.addr).unwrap();
    assert_eq!(kept_after.id, kept_before.id);
    assert!(std::sync::Arc::ptr_eq(
        &kept_after.stats,
        &kept_before.stats
    ));
    // Counted on: the requests since the reload add to the earlier ones.
    assert!(kept_after.stats.requests() > kept_requests);
    let added = backend_at(b3.addr).unwrap();
    assert!(
        added.id != removed.id && added.id != kept_after.id,
        "id {}",
        added.id
    );
    assert!(backend_at(b1.addr).is_none());
    // Requests already sent to backend-1 when the snapshot swapped may finish
    // there; no new ones arrive.
    assert!(
        b1.requests() <= b1_at_reload + 4,
        "{} then {}",
        b1_at_reload,
        b1.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_running_one_keeps_serving() {
    let b1 = TestBackend::start("backend-1", Behaviour::Name).await;
    let b2 = TestBackend::start("backend-2", Behaviour::Name).await;
    let text = two_backend_config(&plugin_dir(), b1.addr, b2.addr);
    let (_dir, path, proxy) = start_from_file(&text).await;
    let broken = text.replace("upstream = \"web\"", "upstream = \"nope\"");
    let line = broken.lines().position(|l| l.contains("\"nope\"")).unwrap() + 1;
    std::fs::write(&path, &broken).unwrap();

    let err = proxy.server.reload().await.unwrap_err().to_string();
    assert!(err.contains(&format!("weir.toml:{line}:")), "{err}");
    assert!(err.contains("\"nope\", which is not defined"), "{err}");
    let counts = spread(&proxy.url, 20, 2).await;
    assert_eq!(counts.values().sum::<usize>(), 20);
    assert!(counts.keys().all(|(s, _)| *s == 200), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_unchanged_plugins_loads_from_the_compiled_cache() {
    let cache = TempDir::new("cache");
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"round-robin\"\n",
        &format!("cache_dir = {:?}\n", cache.0.display().to_string()),
    );
    let files = |dir: &Path| -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| {
                        // Compiled entries only: wasmtime also keeps `.stats`
                        // files (usage counts, touched on hits too) and
                        // `wip-*` files while writing.
                        let name = e.file_name().to_string_lossy().into_owned();
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            usize::from(!name.ends_with(".stats") && !name.starts_with("wip-"))
                        }
                    })
                    .sum()
            })
        }
        count(dir)
    };

    let started = Instant::now();
    let first = TestProxy::start(&text).await;
    let cold = started.elapsed();
    drop(first);
    // wasmtime writes cache entries from a background worker.
    wait_for("the compiled-code cache to be written", || {
        files(&cache.0) > 0
    })
    .await;
    // Let the writer finish: the count must hold still for half a second.
    let mut entries = files(&cache.0);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = files(&cache.0);
        if now == entries {
            break;
        }
        entries = now;
    }

    let started = Instant::now();
    let second = TestProxy::start(&text).await;
    let warm = started.elapsed();
    let (status, body) = get(&client(), &second.url).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "backend-1\n"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        files(&cache.0),
        entries,
        "the restart compiled again instead of using the cache"
    );
    eprintln!("start with a cold compiled-code cache: {cold:?}; warm: {warm:?}");
}

/// The digest of the filter in the first route's first place.
fn filter_digest(proxy: &TestProxy) -> u64 {
    let snapshot = proxy.server.snapshot();
    snapshot.routes()[0].filters[0].pool.plugin().digest()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_hot_reload_and_keep_their_last_good_version() {
    let dir = TempDir::new("filters");
    let file = dir.0.join("gate.wasm");
    std::fs::write(&file, plugin_bytes("pass-filter")).unwrap();
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    // `gate` fails closed: while it is the trapping filter, requests get 503.
    let text = config_text(&[backend.addr], "", "watch_interval_ms = 20\n").replace(
        &format!("dir = {:?}", plugin_dir().display().to_string()),
        &format!("dir = {:?}", dir.0.display().to_string()),
    ) + "\n[[routes.filters]]\nplugin = \"gate\"\n";
    let proxy = TestProxy::start(&text).await;
    let client = client();
    let url = format!("{}/", proxy.url);
    assert_eq!(get(&client, &url).await.0, 200);

    let trap = plugin_bytes("trap-filter");
    std::fs::write(&file, &trap).unwrap();
    let want = weir::plugin::digest(&trap);
    wait_for("the trapping filter to load", || {
        filter_digest(&proxy) == want
    })
    .await;
    assert_eq!(get(&client, &url).await.0, 503);

    // Broken bytes are rejected; the trapping version (the last good one)
    // keeps serving, and the next good file is picked up.
    std::fs::write(&file, b"\0asm garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(filter_digest(&proxy), want);
    assert_eq!(get(&client, &url).await.0, 503);
    let pass = plugin_bytes("pass-filter");
    std::fs::write(&file, &pass).unwrap();
    let want = weir::plugin::digest(&pass);
    wait_for("the pass filter to load again", || {
        filter_digest(&proxy) == want
    })
    .await;
    assert_eq!(get(&client, &url).await.0, 200);
}

/// `weir_plugin_rejections_total` from the admin API at `addr`.
async fn rejections(addr: std::net::SocketAddr) -> u64 {
    let (status, body) = admin(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("weir_plugin_rejections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rejections counter in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_written_slowly_in_pieces_is_never_loaded_half_written() {
    let dir = TempDir::new("pieces");
    std::fs::write(dir.0.join("policy.wasm"), plugin_bytes("choose-first")).unwrap();
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"policy\"\n",
        "watch_interval_ms = 20\n",
    )
    .replace(
        &format!("dir = {:?}", plugin_dir().display().to_string()),
        &format!("dir = {:?}", dir.0.display().to_string()),
    ) + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&text).await;
    let admin_addr = proxy.server.admin_addr().unwrap();

    for (round, name) in ["round-robin", "choose-first", "round-robin"]
        .into_iter()
        .enumerate()
    {
        let bytes = plugin_bytes(name);
        let file = dir.0.join("policy.wasm");
        // Pieces with pauses longer than the settle time: the file is open
        // for writing all along, and that holds the reload back.
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut out = std::fs::File::create(file).unwrap();
            for piece in bytes.chunks(bytes.len() / 8 + 1) {
                out.write_all(piece).unwrap();
                std::thread::sleep(weir::reload::SETTLE * 2);
            }
        });
        let want = weir::plugin::digest(&plugin_bytes(name));
        wait_for(&format!("{name} to load (round {round})"), || {
            plugin_digest(&proxy) == want
        })
        .await;
        writer.join().unwrap();
        assert_eq!(
            rejections(admin_addr).await,
            0,
            "a half-written file was loaded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_writes_costs_a_bounded_number_of_reloads() {
    let (dir, proxy, _backends) = start_with_policy("choose-first").await;
    let versions = [plugin_bytes("choose-first"), plugin_bytes("round-robin")];
    let before = proxy.server.reloads();
    let writes = 400;
    for i in 1..=writes {
        std::fs::write(dir.0.join("policy.wasm"), &versions[i % 2]).unwrap();
    }
    // The last write (an even one) installed choose-first again: write
    // round-robin once more, so the end state is a real change.
    std::fs::write(dir.0.join("policy.wasm"), &versions[1]).unwrap();
    let want = weir::plugin::digest(&versions[1]);
    wait_for("the last write to load", || plugin_digest(&proxy) == want).await;
    let reloads = proxy.server.reloads() - before;
    assert!(
        reloads <= writes as u64 / 10,
        "{reloads} reloads for {writes} writes"
    );
    let after = spread(&proxy.url, 20, 2).await;
    assert_eq!(after.values().sum::<usize>(), 20, "{after:?}");
    assert!(after.keys().all(|(s, _)| *s == 200), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_directory_removed_and_made_again_is_watched_again() {
    let (dir, proxy, _backends) = start_with_policy("choose-first").await;
    for (round, name) in ["round-robin", "choose-first"].into_iter().enumerate() {
        let good = plugin_digest(&proxy);
        let reloads = proxy.server.reloads();
        std::fs::remove_dir_all(&dir.0).unwrap();
        wait_for(
            &format!("the reload after removing the dir ({round})"),
            || proxy.server.reloads() > reloads,
        )
        .await;
        // The last good version keeps serving while the directory is gone.
        assert_eq!(plugin_digest(&proxy), good);
        assert_eq!(get(&client(), &proxy.url).await.0, 200);

        std::fs::create_dir_all(&dir.0).unwrap();
        let bytes = plugin_bytes(name);
        std::fs::write(dir.0.join("policy.wasm"), &bytes).unwrap();
        let want = weir::plugin::digest(&bytes);
        wait_for(&format!("{name} in the new dir ({round})"), || {
            plugin_digest(&proxy) == want
        })
        .await;
        // Written over with `cp`-style writes in the new directory, too.
        let other = plugin_bytes(if name == "round-robin" {
            "choose-first"
        } else {
            "round-robin"
        });
        std::fs::write(dir.0.join("policy.wasm"), &other).unwrap();
        let want = weir::plugin::digest(&other);
        wait_for(&format!("a write in the new dir ({round})"), || {
            plugin_digest(&proxy) == want
        })
        .await;
        std::fs::write(dir.0.join("policy.wasm"), &bytes).unwrap();
        let want = weir::plugin::digest(&bytes);
        wait_for(&format!("{name} again ({round})"), || {
            plugin_digest(&proxy) == want
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_over_the_config_file_reloads_it_and_a_touch_does_not() {
    let b1 = TestBackend::start("backend-1", Behaviour::Name).await;
    let b2 = TestBackend::start("backend-2", Behaviour::Name).await;
    let b3 = TestBackend::start("backend-3", Behaviour::Name).await;
    let text = two_backend_config(&plugin_dir(), b1.addr, b2.addr);
    let (dir, path, proxy) = start_from_file(&text).await;
    let has = |addr: std::net::SocketAddr| {
        let snapshot = proxy.server.snapshot();
        let backends = snapshot.upstream("web").unwrap().backends();
        backends.iter().any(|b| b.addr == addr)
    };
    // The same bytes again (a touch with new times), then an editor-style
    // save: a temporary file renamed over the config.
    std::fs::write(&path, &text).unwrap();
    let temporary = dir.0.join(".weir.toml.tmp");
    std::fs::write(
        &temporary,
        two_backend_config(&plugin_dir(), b3.addr, b2.addr),
    )
    .unwrap();
    std::fs::rename(&temporary, &path).unwrap();
    // The count goes up just after the swap: wait for both.
    wait_for("the renamed config", || {
        has(b3.addr) && proxy.server.reloads() >= 1
    })
    .await;
    // One reload: the rewrite of the same bytes did not count.
    assert_eq!(proxy.server.reloads(), 1);
}
