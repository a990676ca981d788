//! The reloader fed by an in-memory source: changes become snapshots, an
//! invalid config is rejected with its line and the running one serves.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::plugin::PluginRuntime;
use crate::source::MemorySource;

/// A config over `backends`, with `upstream_extra` in `[upstreams.web]`'s
/// place and plugins looked for in `plugins` (kept empty).
fn config(plugins: &Path, backends: &[&str], upstream_extra: &str) -> Config {
    let mut text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n\n[plugins]\ndir = {:?}\n\n[[routes]]\nupstream = \"web\"\n\n{upstream_extra}\n",
        plugins.display().to_string()
    );
    for (i, addr) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[upstreams.web.backends]]\nname = \"b{i}\"\naddress = \"{addr}\"\n"
        ));
    }
    Config::parse(Path::new("memory.toml"), &text).unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_source_feeds_changes_through_the_reloader() {
    let plugins = std::env::temp_dir().join(format!("weir-reload-memory-{}", std::process::id()));
    std::fs::create_dir_all(&plugins).unwrap();
    let source = Arc::new(MemorySource::new(config(&plugins, &["127.0.0.1:1"], "")));
    let first = source.load().unwrap();
    let runtime = PluginRuntime::new(PluginLimits::from_config(&first.plugins)).unwrap();
    let store = Arc::new(PluginStore::new(runtime));
    let state = Arc::new(ArcSwap::from_pointee(
        Snapshot::build(first, &store).unwrap(),
    ));
    let reloader = Arc::new(Reloader::new(source.clone(), state, store));
    let (stop, _) = tokio::sync::watch::channel(false);
    let following = tokio::spawn(follow(reloader.clone(), source.changes(), stop.subscribe()));
    let backends = || reloader.current().upstream("web").unwrap().backends().len();
    assert_eq!(backends(), 1);

    // A change is loaded and swapped in.
    assert_eq!(
        source.replace(config(&plugins, &["127.0.0.1:1", "127.0.0.1:2"], "")),
        1
    );
    // The count goes up just after the swap: wait for both.
    wait_for("the second backend", || {
        backends() == 2 && reloader.reloads() >= 1
    })
    .await;
    assert_eq!(reloader.reloads(), 1);

    // A config naming a plugin that is not there is rejected, with its line;
    // the running snapshot keeps serving.
    let missing = "[upstreams.web.balancer]\nplugin = \"missing\"\n";
    source.replace(config(&plugins, &["127.0.0.1:3"], missing));
    wait_for("the rejection", || reloader.failures() == 1).await;
    assert_eq!(backends(), 2);
    let error = reloader.reload(ReloadKind::Config).await.unwrap_err();
    assert!(matches!(error, ReloadError::Config(_)), "{error:?}");
    let line = 14;
    assert!(
        error.to_string().contains(&format!("memory.toml:{line}:")),
        "{error}"
    );

    // A burst of changes is loaded as the newest, not necessarily each one.
    let before = reloader.reloads();
    for n in 1..=20 {
        let addrs: Vec<String> = (1..=n).map(|i| format!("127.0.0.1:{i}")).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        source.replace(config(&plugins, &addrs, ""));
    }
    wait_for("the newest config", || backends() == 20).await;
    assert!(reloader.reloads() - before <= 20);
    assert_eq!(source.revision(), 22);

    stop.send(true).unwrap();
    following.await.unwrap();
    std::fs::remove_dir_all(&plugins).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_from_memory_keeps_the_watched_files_of_the_new_config() {
    let plugins = std::env::temp_dir().join(format!("weir-reload-files-{}", std::process::id()));
    let source = MemorySource::new(config(&plugins, &["127.0.0.1:1"], ""));
    let with_plugin = config(
        &plugins,
        &["127.0.0.1:1"],
        "[upstreams.web.balancer]\nplugin = \"policy\"\n",
    );
    // No file of its own: a memory source adds nothing to the watched set.
    assert!(source.files().is_empty());
    assert_eq!(
        watched_files(&with_plugin, &source),
        vec![plugins.join("policy.wasm")]
    );
}
