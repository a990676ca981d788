//! Pools of ready instances of one balancer plugin for one upstream, and the
//! one call the proxy makes per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::Resource;
use wasmtime::{Store, Trap};

use super::bindings::{BalancerBindings, types};
use super::guard::contain;
use super::host::{HostState, RequestView};
use super::{Kind, LoadedPlugin, PluginError};
use crate::upstream::{Backend, BackendSet, Health};

/// Why one plugin call did not produce a usable backend. Each costs only the
/// request at hand: the instance involved is discarded, never reused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No instance could be made (instance limit reached, or `init` failed).
    #[error("could not instantiate: {0}")]
    Instantiate(String),
    /// The call ran past its deadline and was interrupted.
    #[error("ran past its deadline of {0:?}")]
    Timeout(std::time::Duration),
    /// The call trapped (panic, unreachable, out of memory, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin named a backend the upstream does not have.
    #[error("chose backend id {0}, which the upstream does not have")]
    UnknownBackend(u32),
    /// The plugin named a backend that may not receive traffic now.
    #[error("chose backend {0}, which is unhealthy or draining")]
    Ineligible(String),
    /// The plugin's answer is invalid (a filter's bad header, path or
    /// status, or an upstream that does not exist).
    #[error("answered nonsense: {0}")]
    Invalid(String),
}

/// One live instance and what it has been told.
struct Instance {
    store: Store<HostState>,
    bindings: BalancerBindings,
    /// Generation of the backend set this instance last received.
    generation: Option<u64>,
}

/// A stack of idle instances: the most recently used is reused first (its
/// memory is warm).
pub(super) struct Idle<I>(Mutex<Vec<I>>);

impl<I> Idle<I> {
    pub(super) fn new() -> Self {
        Idle(Mutex::new(Vec::new()))
    }

    /// An idle instance, if there is one.
    pub(super) fn take(&self) -> Option<I> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns an instance whose call succeeded.
    pub(super) fn put(&self, instance: I) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance);
    }
}

/// Ready instances of one plugin, initialised with one upstream's settings.
pub struct BalancerPool {
    plugin: Arc<LoadedPlugin>,
    upstream: Arc<str>,
    settings: String,
    idle: Idle<Instance>,
    failures: AtomicU64,
    calls: AtomicU64,
}

impl BalancerPool {
    /// Makes the first instance and runs its `init` with `settings` (JSON),
    /// so a plugin that refuses its settings or traps is rejected here,
    /// before it serves anything.
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        upstream: &str,
        settings: String,
    ) -> Result<BalancerPool, PluginError> {
        let pool = BalancerPool {
            plugin,
            upstream: upstream.into(),
            settings,
            idle: Idle::new(),
            failures: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        };
        let first = pool.instantiate().map_err(|reason| PluginError::Init {
            name: pool.plugin.name().to_string(),
            owner: format!("upstream {upstream}"),
            reason,
        })?;
        pool.idle.put(first);
        Ok(pool)
    }

    /// The plugin this pool runs.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// Calls that failed so far (each discarded its instance).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Asks the plugin to choose a backend of `backends` for `request`.
    ///
    /// `request` is moved into the instance's store for the call and moved
    /// back before returning, whatever the outcome. `Ok(None)` means the
    /// plugin chose no backend.
    pub fn select(
        &self,
        backends: &Arc<BackendSet>,
        request: &mut RequestView,
    ) -> Result<Option<Arc<Backend>>, CallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.try_select(backends, request);
        if let Err(error) = &result {
            self.record_failure(error);
        }
        result
    }

    fn try_select(
        &self,
        backends: &Arc<BackendSet>,
        request: &mut RequestView,
    ) -> Result<Option<Arc<Backend>>, CallError> {
        let mut instance = self.checkout()?;
        let ticks = self.plugin.limits.deadline_ticks();
        let policy = instance.bindings.weir_plugin_policy();

        if instance.generation != Some(backends.generation()) {
            // O(n) in the upstream's size and paid once per instance per
            // change, off the per-request budget: it gets the init deadline
            // (10,000 backends take several milliseconds to copy in).
            let list = wit_backends(backends);
            let limits = self.plugin.limits;
            instance
                .store
                .set_epoch_deadline(limits.init_deadline_ticks());
            contain(|| policy.call_set_backends(&mut instance.store, &list))
                .map_err(|e| classify(e, limits.init_timeout()))?;
            instance.store.data_mut().backends = Some(backends.clone());
            instance.generation = Some(backends.generation());
        }

        let placeholder = request.placeholder();
        instance.store.data_mut().request = Some(std::mem::replace(request, placeholder));
        instance.store.set_epoch_deadline(ticks);
        let outcome = contain(|| policy.call_select(&mut instance.store, Resource::new_borrow(0)));
        instance.store.data_mut().end_call(outcome.is_ok());
        if let Some(view) = instance.store.data_mut().request.take() {
            *request = view;
        }
        let choice = outcome.map_err(|e| classify(e, self.plugin.limits.timeout))?;
        self.idle.put(instance);

        let Some(id) = choice else { return Ok(None) };
        let backend = backends.get(id).ok_or(CallError::UnknownBackend(id))?;
        if backend.health != Health::Healthy {
            return Err(CallError::Ineligible(backend.name.clone()));
        }
        Ok(Some(backend.clone()))
    }

    fn checkout(&self) -> Result<Instance, CallError> {
        match self.idle.take() {
            Some(instance) => Ok(instance),
            None => self.instantiate().map_err(CallError::Instantiate),
        }
    }

    /// A new instance with `init` already run.
    fn instantiate(&self) -> Result<Instance, String> {
        let limits = self.plugin.limits;
        let Kind::Balancer(pre) = &self.plugin.pre else {
            return Err(format!(
                "is a {} component, not a balancer (it must export weir:plugin/policy@0.1.0)",
                self.plugin.world()
            ));
        };
        let mut store = self.plugin.new_store(self.upstream.clone());
        let bindings = contain(|| pre.instantiate(&mut store))
            .map_err(|e| describe(&e, limits.init_timeout()))?;
        store.set_epoch_deadline(limits.init_deadline_ticks());
        contain(|| {
            bindings
                .weir_plugin_policy()
                .call_init(&mut store, &self.settings)
        })
        .map_err(|e| describe(&e, limits.init_timeout()))?
        .map_err(|message| format!("plugin refused its settings: {message}"))?;
        Ok(Instance {
            store,
            bindings,
            generation: None,
        })
    }

    /// Logs a failed call. The first failure and then every power of two is
    /// logged, so a plugin failing on every request cannot flood the log; the
    /// count in each line says how many there were.
    fn record_failure(&self, error: &CallError) {
        record_failure(&self.failures, self.plugin.name(), &self.upstream, error);
    }
}

/// Counts a failed call of `plugin` serving `owner` and logs it: the first
/// failure and then every power of two, so a plugin failing on every request
/// cannot flood the log; the count in each line says how many there were.
pub(super) fn record_failure(failures: &AtomicU64, plugin: &str, owner: &str, error: &CallError) {
    let failures = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if failures.is_power_of_two() {
        tracing::warn!(plugin, owner, failures, "plugin call failed: {error}");
    }
}

/// An answer the host's checks refused, carried as the call's error so the
/// call fails as a trap does: instance and cell writes discarded.
#[derive(Debug, thiserror::Error)]
#[error("answered nonsense: {0}")]
pub(super) struct Nonsense(String);

/// The call error to return for an answer refused because of `reason`.
pub(super) fn nonsense(reason: String) -> wasmtime::Error {
    wasmtime::Error::new(Nonsense(reason))
}

/// The call error for a wasmtime error from a call with deadline `timeout`.
pub(super) fn classify(error: wasmtime::Error, timeout: std::time::Duration) -> CallError {
    if let Some(Nonsense(reason)) = error.downcast_ref::<Nonsense>() {
        return CallError::Invalid(reason.clone());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(timeout),
        _ => CallError::Trap(describe(&error, timeout)),
    }
}

/// A one-line description of a wasmtime error: the trap or message, without
/// the wasm backtrace.
pub(super) fn describe(error: &wasmtime::Error, timeout: std::time::Duration) -> String {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return format!("ran past its deadline of {timeout:?}");
        }
        return trap.to_string();
    }
    let text = format!("{error:#}");
    text.lines().next().unwrap_or_default().to_string()
}

fn wit_backends(set: &BackendSet) -> Vec<types::Backend> {
    set.iter()
        .map(|b| types::Backend {
            id: b.id,
            name: b.name.clone(),
            address: b.addr.to_string(),
            weight: b.weight,
            health: match b.health {
                Health::Healthy => types::Health::Healthy,
                Health::Unhealthy => types::Health::Unhealthy,
                Health::Draining => types::Health::Draining,
            },
            metadata: b.metadata.clone(),
        })
        .collect()
}
