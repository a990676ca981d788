//! The policy an upstream holds to choose a backend: one trait that weir's
//! native round robin and the Wasm balancer plugin both implement (modelled
//! on linkerd2-proxy's `linkerd/pool` trait). A leaf of the crate: it knows
//! backends and the request view, not plugins or upstreams, so upstream
//! logic can be tested with a fake policy and no Wasm.
//!
//! Per request, the upstream calls [`Policy::select`] with its current
//! [`BackendSet`] and checks the answer (tried already, at its in-flight
//! limit, not of this set); it asks again, falls back to its own round
//! robin, or fails, as [`Policy::on_failure`] says.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendSet};
use crate::view::RequestView;

/// Chooses backends for one upstream's requests.
///
/// `Send + Sync`: one policy serves every request of its upstream at once.
/// `Any`: the upstream can hand out the concrete policy (its plugin pool)
/// to metrics and the admin API.
pub trait Policy: Any + Send + Sync {
    /// Chooses a backend of `set` for `request`.
    ///
    /// `request` is lent for the call; a policy may add response headers to
    /// `request.response_headers` (they reach the client only if the
    /// upstream takes the answer). `usable` tells which backends the
    /// upstream can take for this request (not tried already, not at their
    /// in-flight limit): a policy that can honour it should, and answer
    /// [`Pick::NoneUsable`] when none is; one that cannot (a plugin) may
    /// answer any backend, and the upstream asks again.
    ///
    /// A policy answers from `set` only: a backend of an older set, or of
    /// none, is a failed call.
    fn select(
        &self,
        set: &Arc<BackendSet>,
        request: &mut RequestView,
        usable: &dyn Fn(&Backend) -> bool,
    ) -> Selection;

    /// Who a backend this policy picks is chosen by, in logs.
    fn chosen_by(&self) -> ChosenBy;

    /// What a failed call does to the request. Default: weir's round robin
    /// chooses instead.
    fn on_failure(&self) -> OnFailure {
        OnFailure::Fallback
    }

    /// Told once per new backend set (a new generation), before requests
    /// are chosen from it, so a policy can precompute (a weighted table).
    /// Default: nothing; [`Policy::select`] gets the set anyway, and a
    /// policy keeping per-set state can compare [`BackendSet::generation`].
    fn update(&self, set: &Arc<BackendSet>) {
        let _ = set;
    }
}

/// The outcome of one [`Policy::select`] call.
#[derive(Debug)]
pub struct Selection {
    /// The answer, or why the call failed.
    pub answer: Result<Pick, PolicyError>,
    /// How long a call into a plugin took, for the upstream's
    /// `plugin_calls` histogram; none for a native policy.
    pub took: Option<Duration>,
}

impl Selection {
    /// A native policy's answer (not timed).
    pub fn native(pick: Pick) -> Selection {
        Selection {
            answer: Ok(pick),
            took: None,
        }
    }
}

/// What a policy answered.
#[derive(Debug)]
pub enum Pick {
    /// Send the request to this backend.
    Backend(Arc<Backend>),
    /// The policy chose no backend on purpose: the request gets a 503.
    Declined,
    /// No backend `usable` allows: the upstream says why (all tried, all
    /// full).
    NoneUsable,
}

/// Who chose the backend for a request: shown in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    /// The upstream's plugin.
    Plugin,
    /// weir's native round robin, because the upstream has no plugin.
    RoundRobin,
    /// weir's native round robin, because the plugin call failed.
    Fallback,
    /// weir's native round robin, because the plugin's answers were tried
    /// already or at their in-flight limit.
    Reroute,
}

impl ChosenBy {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChosenBy::Plugin => "plugin",
            ChosenBy::RoundRobin => "round-robin",
            ChosenBy::Fallback => "fallback",
            ChosenBy::Reroute => "reroute",
        }
    }
}

/// What a failed policy call does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// weir's native round robin chooses instead.
    Fallback,
    /// The request is answered 503.
    Fail,
}

/// Why a policy call gave no usable answer. Shows as its cause does (the
/// plugin's trap, timeout or bad answer); [`PolicyError::is_quarantined`]
/// tells a call refused because the plugin is quarantined (logged once,
/// when the quarantine began) from one that failed now.
pub struct PolicyError {
    quarantined: bool,
    cause: Box<dyn Error + Send + Sync>,
}

impl PolicyError {
    /// A call that failed now.
    pub fn failed(cause: impl Into<Box<dyn Error + Send + Sync>>) -> PolicyError {
        PolicyError {
            quarantined: false,
            cause: cause.into(),
        }
    }

    /// A call not made because the policy is quarantined.
    pub fn quarantined(cause: impl Into<Box<dyn Error + Send + Sync>>) -> PolicyError {
        PolicyError {
            quarantined: true,
            cause: cause.into(),
        }
    }

    /// True when the call was refused for quarantine rather than failed.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined
    }

    /// The cause, to downcast (a plugin's `CallError`).
    pub fn cause(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.cause
    }
}

// Transparent: the cause's text and sources, so a log line walking the
// chain does not repeat it.
impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.cause, f)
    }
}

impl fmt::Debug for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyError")
            .field("quarantined", &self.quarantined)
            .field("cause", &self.cause)
            .finish()
    }
}

impl Error for PolicyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("trapped")]
    struct Trap(#[source] std::io::Error);

    #[test]
    fn an_error_shows_as_its_cause_and_says_whether_it_was_a_quarantine() {
        let error = PolicyError::failed(Trap(std::io::Error::other("unreachable")));
        assert_eq!(error.to_string(), "trapped");
        assert_eq!(
            crate::error::chain(&error).to_string(),
            "trapped: unreachable"
        );
        assert!(!error.is_quarantined());
        assert!(error.cause().downcast_ref::<Trap>().is_some());
        assert!(PolicyError::quarantined("quarantined for 1s more").is_quarantined());
    }
}
