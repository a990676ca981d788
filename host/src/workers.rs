//! The worker threads of `[runtime] scheduler = "per-worker"`: each runs
//! its own single-threaded tokio scheduler, so a connection, its requests
//! and the tasks they spawn stay on one thread (no work stealing, no
//! cross-thread wake-ups on the request path), as nginx's workers and
//! Pingora's no-steal runtime do. Each serves its own copy of every
//! listener (`SO_REUSEPORT`); the kernel spreads new connections across
//! the copies.

use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Worker threads, each with its own scheduler. Dropping them ends the
/// threads, cancelling what still runs on them.
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped, each ends its worker's `block_on`.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` worker threads.
    pub fn start(count: usize) -> io::Result<Workers> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for i in 1..=count {
            let (started, handle) = std::sync::mpsc::sync_channel(1);
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("weir-worker-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = started.send(Err(error));
                            return;
                        }
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    let _ = runtime.block_on(stopped);
                })?;
            let handle = handle
                .recv()
                .map_err(|_| io::Error::other("a worker thread ended while starting"))??;
            handles.push(handle);
            stops.push(stop);
        }
        Ok(Workers {
            handles,
            _stops: stops,
        })
    }

    /// The workers' schedulers, to spawn their listeners' accept loops on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_what_is_spawned_on_it_on_its_own_thread() {
        let workers = Workers::start(2).unwrap();
        let here = std::thread::current().id();
        let mut seen = Vec::new();
        for handle in workers.handles() {
            let (name, id) = handle
                .spawn(async {
                    let thread = std::thread::current();
                    (thread.name().map(str::to_string), thread.id())
                })
                .await
                .unwrap();
            assert_ne!(id, here);
            seen.push(name.unwrap());
        }
        assert_eq!(seen, ["weir-worker-1", "weir-worker-2"]);
    }

    #[tokio::test]
    async fn dropping_the_workers_cancels_what_runs_on_them() {
        let workers = Workers::start(1).unwrap();
        let forever = workers.handles()[0].spawn(std::future::pending::<()>());
        drop(workers);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), forever).await;
        assert!(ended.expect("the task ended").unwrap_err().is_cancelled());
    }
}
