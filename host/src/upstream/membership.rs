//! Which backends an upstream has and how they stand: the members built
//! from the config (carrying ids, stats and health over a reload), the
//! rebuild of the immutable set after any change, and the task that ends
//! ejections and steps slow-start weights on time.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
// tokio's clock for health timing: it follows paused time in tests.
use tokio::time::Instant;

use super::{AdminError, Backend, BackendSet, BackendSpec, Health, LOG_TARGET, Upstream};
use crate::config::UpstreamConfig;

impl Upstream {
    /// Rebuilds the backend set from the backends' health state (checks,
    /// ejections, drain, slow start) if that changed anything, logging each
    /// backend whose health changed.
    pub fn refresh(&self) {
        let _ = self.edit(|_| Ok(()));
    }

    /// Applies `change` to the backend list, rebuilds the set (see
    /// [`Upstream::rebuild`]) and wakes the maintenance task when a timed
    /// change is due, so it sleeps until the right time.
    pub(super) fn edit(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Backend>>) -> Result<(), AdminError>,
    ) -> Result<Option<Instant>, AdminError> {
        let next = self.rebuild(change)?;
        if next.is_some() {
            self.wake.notify_one();
        }
        Ok(next)
    }

    /// Applies `change` to the backend list, then rebuilds the set from the
    /// backends' health state. Returns when the next timed change is due.
    pub(super) fn rebuild(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Backend>>) -> Result<(), AdminError>,
    ) -> Result<Option<Instant>, AdminError> {
        let _one_at_a_time = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.backends.load_full();
        let mut members: Vec<Arc<Backend>> = current.iter().cloned().collect();
        let before = members.len();
        change(&mut members)?;
        let mut changed = members.len() != before
            || !members
                .iter()
                .zip(current.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for member in &mut members {
            let (health, reason) = member.state.health(now);
            let weight = match health {
                Health::Healthy => {
                    member
                        .state
                        .effective_weight(member.base_weight, self.slow_start, now)
                }
                _ => member.base_weight,
            };
            if let Some(at) = member.state.next_change(self.slow_start, now) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            if health == member.health && weight == member.weight && reason == member.reason {
                continue;
            }
            if health != member.health {
                match &reason {
                    Some(why) => {
                        tracing::warn!(target: LOG_TARGET, upstream = %self.name, backend = member.name, addr = %member.addr, "backend {}: {why}", health.as_str())
                    }
                    None => {
                        tracing::info!(target: LOG_TARGET, upstream = %self.name, backend = member.name, addr = %member.addr, "backend {}", health.as_str())
                    }
                }
            }
            *member = Arc::new(member.with(health, weight, reason));
            changed = true;
        }
        if changed {
            let set = Arc::new(BackendSet::new(members));
            // Before any request can be chosen from it.
            self.policy.update(&set);
            self.backends.store(set);
        }
        Ok(next)
    }
}

/// Ends ejections and steps slow-start weights on time, until the upstream
/// is retired or dropped.
pub(super) async fn maintain(upstream: Weak<Upstream>, wake: Arc<Notify>) {
    loop {
        let next = match upstream.upgrade() {
            // Not `refresh`: that wakes this task, which would then spin.
            Some(live) if !live.is_retired() => live.rebuild(|_| Ok(())).ok().flatten(),
            _ => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// The backends `config` lists; one with the same name and address as a
/// backend of `previous` keeps its id, stats and health state.
pub(super) fn from_config(
    config: &UpstreamConfig,
    previous: Option<&BackendSet>,
) -> Vec<Arc<Backend>> {
    let mut next_id = previous
        .and_then(|set| set.iter().map(|b| b.id).max())
        .map_or(0, |max| max + 1);
    // By name and address: one lookup per backend, not a scan of the
    // previous set (quadratic at 10,000 backends).
    let kept: std::collections::HashMap<(&str, SocketAddr), &Arc<Backend>> = previous
        .into_iter()
        .flat_map(BackendSet::iter)
        .map(|b| ((b.name.as_str(), b.addr), b))
        .collect();
    config
        .backends
        .iter()
        .map(|b| {
            let addr: SocketAddr = b.address.get_ref().parse().expect("validated by config");
            let name = b.display_name();
            let same = kept.get(&(name.as_str(), addr));
            let (id, stats, state) = match same {
                Some(same) => (same.id, same.stats.clone(), same.state.clone()),
                None => {
                    next_id += 1;
                    (next_id - 1, Arc::default(), Arc::default())
                }
            };
            let spec = BackendSpec {
                name,
                addr,
                weight: b.weight,
                metadata: b
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                max_in_flight: b.max_in_flight,
            };
            Arc::new(Backend::new(id, spec, stats, state))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::testing::{backend, fail, upstream};

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_the_weight_plugins_see() {
        let web = upstream(
            2,
            "slow_start_ms = 1000\n[upstreams.web.outlier_detection]\nconsecutive_failures = 1\nbase_ejection_ms = 100\n",
        );
        web.start_tasks();
        fail(&web, "b1", 1);
        let generation = web.backends().generation();
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        assert_eq!(backend(&web, "b1").weight, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let halfway = backend(&web, "b1").weight;
        assert!((4..=6).contains(&halfway), "{halfway}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(backend(&web, "b1").weight, 10);
        assert_eq!(backend(&web, "b1").base_weight, 10);
        // Each step was a new set, so plugins were told.
        assert!(web.backends().generation() > generation);
        assert_eq!(backend(&web, "b2").weight, 10);
    }
}
