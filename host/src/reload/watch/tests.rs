//! The watcher on real files: events, renames, a directory removed and made
//! again, and the fall back to polling when events fail.

use std::time::Duration;

use super::*;

/// A fresh directory for one test.
fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-watch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh directory holding `p.wasm` with `bytes`: the directory, the file
/// and the watched paths.
fn one_file(tag: &str, bytes: &[u8]) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let dir = temp(tag);
    let file = dir.join("p.wasm");
    std::fs::write(&file, bytes).unwrap();
    let paths = vec![file.clone()];
    (dir, file, paths)
}

/// The next settled change, within a generous bound.
async fn next(watcher: &mut Watcher, applied: &Signatures) -> Signatures {
    tokio::time::timeout(Duration::from_secs(20), watcher.changed(applied))
        .await
        .expect("no change seen")
}

const INTERVAL: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_see_writes_renames_and_recreated_files_but_not_the_same_bytes_again() {
    let (dir, file, paths) = one_file("events", b"one");
    let mut watcher = Watcher::new(paths.clone(), INTERVAL, WatchMode::Events);
    assert_eq!(watcher.mode(), WatchMode::Events);
    let mut applied = Signatures::read(&paths);

    // Same bytes written again, then new bytes: only the new bytes count.
    std::fs::write(&file, b"one").unwrap();
    std::fs::write(dir.join("unrelated"), b"x").unwrap();
    tokio::time::sleep(SETTLE * 3).await;
    std::fs::write(&file, b"two").unwrap();
    let seen = next(&mut watcher, &applied).await;
    assert_eq!(seen, Signatures::read(&paths));
    applied = seen;

    // An editor's save: write a temporary file, rename it over.
    let temporary = dir.join(".p.wasm.swp");
    std::fs::write(&temporary, b"three").unwrap();
    std::fs::rename(&temporary, &file).unwrap();
    let seen = next(&mut watcher, &applied).await;
    assert_eq!(seen, Signatures::read(&paths));
    applied = seen;

    // Deleted, then made again.
    std::fs::remove_file(&file).unwrap();
    applied = next(&mut watcher, &applied).await;
    std::fs::write(&file, b"four").unwrap();
    let seen = next(&mut watcher, &applied).await;
    assert_eq!(seen, Signatures::read(&paths));
    assert_eq!(watcher.mode(), WatchMode::Events);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_removed_and_made_again_is_watched_again() {
    let root = temp("recreated");
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.wasm");
    std::fs::write(&file, b"one").unwrap();
    let paths = vec![file.clone()];
    let mut watcher = Watcher::new(paths.clone(), INTERVAL, WatchMode::Events);
    let applied = Signatures::read(&paths);

    std::fs::remove_dir_all(&dir).unwrap();
    let gone = next(&mut watcher, &applied).await;
    assert_eq!(gone, Signatures::read(&paths));
    for round in 0..3 {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&file, format!("back {round}")).unwrap();
        let back = next(&mut watcher, &gone).await;
        assert_eq!(back, Signatures::read(&paths), "round {round}");
        // And a write into the new directory raises events of its own.
        std::fs::write(&file, format!("again {round}")).unwrap();
        let again = next(&mut watcher, &back).await;
        assert_eq!(again, Signatures::read(&paths), "round {round}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(next(&mut watcher, &again).await, gone);
    }
    assert_eq!(watcher.mode(), WatchMode::Events);
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_cannot_be_created_falls_back_to_polling() {
    let (dir, file, paths) = one_file("no-events", b"one");
    let refuse = |_: Arc<Inbox>| -> notify::Result<Backend> {
        Err(notify::Error::generic("no inotify instances left"))
    };
    let mut watcher = Watcher::with_backend(paths.clone(), INTERVAL, Some(refuse));
    assert_eq!(watcher.mode(), WatchMode::Polling);
    let applied = Signatures::read(&paths);
    std::fs::write(&file, b"two").unwrap();
    assert_eq!(next(&mut watcher, &applied).await, Signatures::read(&paths));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reports_an_error_falls_back_to_polling() {
    let (dir, file, paths) = one_file("event-error", b"one");
    let mut watcher = Watcher::new(paths.clone(), INTERVAL, WatchMode::Events);
    assert_eq!(watcher.mode(), WatchMode::Events);
    let applied = Signatures::read(&paths);
    // The event thread says the queue overflowed, say.
    let inbox = watcher.events.as_ref().unwrap().inbox.clone();
    inbox.fail(notify::Error::generic("event queue overflow"));
    std::fs::write(&file, b"two").unwrap();
    assert_eq!(next(&mut watcher, &applied).await, Signatures::read(&paths));
    assert_eq!(watcher.mode(), WatchMode::Polling);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_slow_pieces_is_reported_only_whole() {
    let (dir, file, paths) = one_file("pieces", b"");
    let mut watcher = Watcher::new(paths.clone(), INTERVAL, WatchMode::Events);
    let applied = Signatures::read(&paths);
    let whole: Vec<u8> = (0..64 * 1024u32).map(|i| i as u8).collect();
    let writer = {
        let file = file.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut out = std::fs::File::create(&file).unwrap();
            for piece in whole.chunks(4096) {
                out.write_all(piece).unwrap();
                // Well inside the settle time: the writer is still busy.
                std::thread::sleep(SETTLE / 5);
            }
        })
    };
    let seen = next(&mut watcher, &applied).await;
    writer.join().unwrap();
    // The only change reported is the whole file.
    assert_eq!(seen, Signatures::read(&paths));
    std::fs::remove_dir_all(&dir).unwrap();
}
