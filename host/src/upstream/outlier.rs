//! Outlier detection: passive health from the outcomes of proxied
//! requests. A backend failing `consecutive_failures` times in a row is
//! ejected for a time that grows with each repeat, up to
//! `max_ejection_percent` of the upstream at once.

use std::time::Duration;

// tokio's clock for health timing: it follows paused time in tests.
use tokio::time::Instant;

use super::{Backend, LOG_TARGET, Upstream};

impl Upstream {
    /// Records the outcome of one request to `backend` for outlier
    /// detection: `failure` is why it failed (connect error, timeout, 5xx),
    /// none when it succeeded.
    pub fn observe(&self, backend: &Backend, failure: Option<&dyn Fn() -> String>) {
        let Some(outlier) = &self.outlier else {
            return;
        };
        let in_a_row = backend.state.record_outcome(failure.is_some());
        let Some(why) = failure else { return };
        if in_a_row < outlier.consecutive_failures {
            return;
        }
        let _one_at_a_time = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let set = self.backends.load();
        if backend.state.is_ejected(now) {
            return;
        }
        let ejected = set.iter().filter(|b| b.state.is_ejected(now)).count();
        if (ejected + 1) * 100 > outlier.max_ejection_percent as usize * set.len() {
            if in_a_row == outlier.consecutive_failures {
                tracing::warn!(
                    target: LOG_TARGET,
                    upstream = %self.name,
                    backend = backend.name,
                    ejected,
                    "not ejecting: {in_a_row} failures in a row, but max_ejection_percent = {} is reached",
                    outlier.max_ejection_percent
                );
            }
            return;
        }
        let reason = format!("{in_a_row} failures in a row, last: {}", why());
        let length = backend.state.eject(
            reason.clone(),
            Duration::from_millis(outlier.base_ejection_ms),
            Duration::from_millis(outlier.max_ejection_ms),
            now,
        );
        tracing::warn!(
            target: LOG_TARGET,
            upstream = %self.name,
            backend = backend.name,
            addr = %backend.addr,
            ejection = backend.state.ejections(),
            "ejecting backend for {length:?}: {reason}"
        );
        drop(_one_at_a_time);
        self.refresh();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::upstream::Health;
    use crate::upstream::testing::{backend, fail, upstream};

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_on_time_by_itself() {
        let web = upstream(
            2,
            "[upstreams.web.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_ms = 1000\n",
        );
        web.start_tasks();
        fail(&web, "b1", 1);
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        fail(&web, "b1", 1);
        let ejected = backend(&web, "b1");
        assert_eq!(ejected.health, Health::Unhealthy);
        assert_eq!(
            ejected.reason.as_deref(),
            Some("ejected: 2 failures in a row, last: status 500")
        );
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(backend(&web, "b1").health, Health::Unhealthy);
        // The maintenance task, not a request, brings it back.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        // A second ejection lasts twice as long.
        fail(&web, "b1", 2);
        tokio::time::sleep(Duration::from_millis(1999)).await;
        assert_eq!(backend(&web, "b1").health, Health::Unhealthy);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_failure_count() {
        let web = upstream(
            2,
            "[upstreams.web.outlier_detection]\nconsecutive_failures = 3\n",
        );
        fail(&web, "b1", 2);
        web.observe(&backend(&web, "b1"), None);
        fail(&web, "b1", 2);
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        fail(&web, "b1", 1);
        assert_eq!(backend(&web, "b1").health, Health::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_max_share_is_ejected() {
        let web = upstream(
            5,
            "[upstreams.web.outlier_detection]\nconsecutive_failures = 1\nmax_ejection_percent = 40\n",
        );
        for name in ["b1", "b2", "b3", "b4", "b5"] {
            fail(&web, name, 1);
        }
        let out: Vec<_> = web
            .backends()
            .iter()
            .filter(|b| b.health != Health::Healthy)
            .map(|b| b.name.clone())
            .collect();
        assert_eq!(out, ["b1", "b2"]);
        assert_eq!(web.backends().eligible().len(), 3);
    }
}
