//! The shim behind [`export_balancer!`](crate::export_balancer): keeps the
//! instance's policy and backend set and forwards the `policy` interface's
//! calls to them. Public only for the macro's expansion; not part of the API.

use std::cell::RefCell;

use crate::{BackendId, Backends, Balancer, Request};

/// The generated backend record, named for the macro's expansion.
pub type WitBackend = crate::wit::weir::plugin::types::Backend;
/// The generated request resource, named for the macro's expansion.
pub type WitRequest = crate::wit::weir::plugin::types::Request;

/// [`Balancer`] without its constructor, so the state can hold any policy.
trait Policy {
    fn backends_changed(&mut self, backends: &Backends);
    fn select(&mut self, request: &Request<'_>, backends: &Backends) -> Option<BackendId>;
    #[cfg(test)]
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

impl<T: Balancer> Policy for T {
    fn backends_changed(&mut self, backends: &Backends) {
        Balancer::backends_changed(self, backends);
    }

    fn select(&mut self, request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        Balancer::select(self, request, backends)
    }

    #[cfg(test)]
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Everything one component instance remembers between calls.
#[derive(Default)]
struct State {
    backends: Backends,
    /// `None` until `init` succeeds.
    policy: Option<Box<dyn Policy>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// `policy.init`: builds the policy from its settings.
pub fn init<T: Balancer>(config: &str) -> Result<(), String> {
    route_panics_to_log();
    // Not under the borrow: `T::init` may call into the host (logging).
    let created = T::init(config);
    STATE.with_borrow_mut(|state| match created {
        Ok(policy) => {
            let mut policy: Box<dyn Policy> = Box::new(policy);
            if !state.backends.is_empty() {
                policy.backends_changed(&state.backends);
            }
            state.policy = Some(policy);
            Ok(())
        }
        Err(message) => {
            state.policy = None;
            Err(message)
        }
    })
}

/// `policy.set-backends`: indexes the new set and tells the policy.
pub fn set_backends(backends: Vec<WitBackend>) {
    replace_backends(Backends::from(backends));
}

fn replace_backends(backends: Backends) {
    STATE.with_borrow_mut(|state| {
        state.backends = backends;
        if let Some(policy) = &mut state.policy {
            policy.backends_changed(&state.backends);
        }
    });
}

/// `policy.select`: asks the policy, or answers `None` before a successful
/// `init`.
pub fn select(request: &WitRequest) -> Option<BackendId> {
    let request = Request::new(request);
    with_policy(|policy, backends| policy.select(&request, backends))
}

/// Runs `f` on the policy and the current backends; `None` without a policy.
fn with_policy<R>(f: impl FnOnce(&mut dyn Policy, &Backends) -> Option<R>) -> Option<R> {
    STATE.with_borrow_mut(|state| {
        let State { backends, policy } = state;
        f(policy.as_deref_mut()?, backends)
    })
}

/// Sends panic messages to weir's log (under the plugin's name) instead of
/// WASI stderr, which weir does not provide to plugins. The panic still
/// traps the instance; the host then discards it.
pub(crate) fn route_panics_to_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            crate::log::error(&format!("panic: {info}"))
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    /// Remembers what the shim told it. (`select` needs a host request, so
    /// the tests look at the policy through `with_policy` instead.)
    struct Recorder {
        updates: Vec<Vec<BackendId>>,
    }

    impl Balancer for Recorder {
        fn init(config: &str) -> Result<Self, String> {
            match config {
                "{}" => Ok(Self {
                    updates: Vec::new(),
                }),
                other => Err(format!("unexpected config {other}")),
            }
        }

        fn backends_changed(&mut self, backends: &Backends) {
            self.updates
                .push(backends.eligible().iter().map(|b| b.id).collect());
        }

        fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
            backends.eligible().first().map(|b| b.id)
        }
    }

    /// The updates the current policy saw, and the current backend count.
    fn observed() -> Option<(Vec<Vec<BackendId>>, usize)> {
        with_policy(|policy, backends| {
            let recorder = policy.as_any().downcast_mut::<Recorder>()?;
            Some((recorder.updates.clone(), backends.len()))
        })
    }

    fn set(ids: &[BackendId]) {
        replace_backends(Backends::new(
            ids.iter().map(|&id| Backend::new(id, "a:1")).collect(),
        ));
    }

    // Each test runs on its own thread, so each starts from fresh state.

    #[test]
    fn no_policy_before_init() {
        assert_eq!(observed(), None);
        set(&[1, 2]);
        assert_eq!(observed(), None, "backends alone do not make a policy");
    }

    #[test]
    fn init_then_updates_reach_the_policy() {
        assert_eq!(init::<Recorder>("{}"), Ok(()));
        assert_eq!(observed(), Some((vec![], 0)), "no update for an empty set");
        set(&[3]);
        set(&[3, 4]);
        assert_eq!(observed(), Some((vec![vec![3], vec![3, 4]], 2)));
    }

    #[test]
    fn backends_sent_before_init_are_replayed() {
        set(&[5, 6]);
        assert_eq!(init::<Recorder>("{}"), Ok(()));
        assert_eq!(observed(), Some((vec![vec![5, 6]], 2)));
    }

    #[test]
    fn failed_init_leaves_no_policy() {
        assert_eq!(init::<Recorder>("{}"), Ok(()));
        let err = init::<Recorder>("{\"x\":1}").unwrap_err();
        assert!(err.contains("unexpected config"), "{err}");
        assert_eq!(observed(), None);
    }
}
