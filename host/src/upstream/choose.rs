//! Choosing a backend for one request: the upstream's policy is asked, its
//! answer checked (of this set, healthy, not tried, not full), and weir's
//! round robin picks when the policy's answers cannot be taken or its call
//! failed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Backend, BackendId, BackendSet, Health, Upstream};
use crate::policy::{ChosenBy, OnFailure, Pick, PolicyError, Selection};
use crate::view::RequestView;

/// How many times a request's policy is asked before weir picks a backend
/// itself, when its answers were tried already or at their limit.
pub const ASKS: usize = 3;

/// The outcome of choosing a backend for one request.
pub enum Choice {
    /// Send the request to this backend.
    Backend(Arc<Backend>, ChosenBy),
    /// No backend can take the request; the string says why (503).
    Unavailable(&'static str),
    /// The policy call failed and its `on_failure` is `fail` (503).
    PluginFailed(PolicyError),
}

/// An answer the upstream cannot take: a failed call, like a trap.
#[derive(Debug, thiserror::Error)]
enum BadAnswer {
    /// A backend of another set (an older generation), or of none.
    #[error("chose backend {0}, which is not in the upstream's current backend set")]
    NotInSet(String),
    /// A backend of the set that may not receive traffic now.
    #[error("chose backend {0}, which is unhealthy or draining")]
    Ineligible(String),
    /// The policy panicked.
    #[error("panicked: {0}")]
    Panicked(String),
}

impl Upstream {
    /// Chooses the backend for one request: the policy's answer (the
    /// plugin, or weir's round robin without one); weir's round robin when
    /// the plugin fails (unless its `on_failure` is `fail`).
    ///
    /// Backends in `tried` (earlier attempts of this request) and backends
    /// at their in-flight limit are not taken: the policy is asked again,
    /// and after [`ASKS`] answers that cannot be taken weir's round robin
    /// picks among the rest. Response headers the policy asked for are
    /// cleared when weir picks.
    pub fn choose(&self, request: &mut RequestView, tried: &[BackendId]) -> Choice {
        let set = self.backends.load();
        if set.eligible().is_empty() {
            self.stats.no_backend.fetch_add(1, Ordering::Relaxed);
            return Choice::Unavailable("no healthy backend");
        }
        let usable = |b: &Backend| !tried.contains(&b.id) && !self.is_full(b);
        let mut by = ChosenBy::Reroute;
        for _ in 0..ASKS {
            let selection = self.ask(&set, request, &usable);
            if let Some(took) = selection.took {
                self.stats.plugin_calls.observe(took);
            }
            match selection.answer.and_then(|pick| of_set(&set, pick)) {
                Ok(Pick::Backend(backend)) if usable(&backend) => {
                    return Choice::Backend(backend, self.policy.chosen_by());
                }
                Ok(Pick::Backend(_)) => continue,
                Ok(Pick::Declined) => {
                    self.stats.no_backend.fetch_add(1, Ordering::Relaxed);
                    return Choice::Unavailable("the balancer plugin chose no backend");
                }
                Ok(Pick::NoneUsable) => break,
                Err(error) => {
                    self.stats.plugin_failures.fetch_add(1, Ordering::Relaxed);
                    match self.policy.on_failure() {
                        OnFailure::Fallback => {
                            by = ChosenBy::Fallback;
                            break;
                        }
                        OnFailure::Fail => return Choice::PluginFailed(error),
                    }
                }
            }
        }
        // weir's own pick: headers a policy asked for with a backend it did
        // not get (tried, or full) must not reach the client.
        request.response_headers.clear();
        if let Some(backend) = self.fallback.select_where(&set, usable) {
            return Choice::Backend(backend, by);
        }
        if set.eligible().iter().all(|b| tried.contains(&b.id)) {
            Choice::Unavailable("every healthy backend was tried")
        } else {
            self.stats.saturated.fetch_add(1, Ordering::Relaxed);
            Choice::Unavailable("every backend is at its max_in_flight")
        }
    }

    /// One call of the policy; a panic in it is a failed call, not a lost
    /// connection. (The Wasm policy contains its traps itself.)
    fn ask(
        &self,
        set: &Arc<BackendSet>,
        request: &mut RequestView,
        usable: &dyn Fn(&Backend) -> bool,
    ) -> Selection {
        catch_unwind(AssertUnwindSafe(|| {
            self.policy.select(set, request, usable)
        }))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Selection {
                answer: Err(PolicyError::failed(BadAnswer::Panicked(why))),
                took: None,
            }
        })
    }

    fn is_full(&self, backend: &Backend) -> bool {
        let limit = self.max_in_flight(backend);
        limit != 0 && backend.stats.in_flight() >= limit
    }
}

/// `pick` if it names a healthy backend of `set` itself; a failed call if
/// it names one of another set or one that may not take traffic.
fn of_set(set: &BackendSet, pick: Pick) -> Result<Pick, PolicyError> {
    let Pick::Backend(backend) = &pick else {
        return Ok(pick);
    };
    if !set.get(backend.id).is_some_and(|b| Arc::ptr_eq(b, backend)) {
        return Err(PolicyError::failed(BadAnswer::NotInSet(
            backend.name.clone(),
        )));
    }
    if backend.health != Health::Healthy {
        return Err(PolicyError::failed(BadAnswer::Ineligible(
            backend.name.clone(),
        )));
    }
    Ok(pick)
}

#[cfg(test)]
mod tests;
