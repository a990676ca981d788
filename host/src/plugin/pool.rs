//! Pools of ready instances of one balancer plugin for one upstream, and the
//! one call the proxy makes per request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::{BalancerBindings, types};
use super::call::Calls;
use super::error::{CallError, InitError};
use super::guard::contain;
use super::host::{HostState, RequestView};
use super::{Kind, LoadedPlugin, PluginError};
use crate::backend::{Backend, BackendSet, Health};

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
    calls: Calls,
    /// The last backend set handed to instances, in its WIT form.
    listed: Mutex<Option<(u64, Arc<Vec<types::Backend>>)>>,
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
        let name: Arc<str> = upstream.into();
        let pool = BalancerPool {
            calls: Calls::new(plugin.name_arc(), name.clone(), plugin.limits.quarantine),
            plugin,
            upstream: name,
            settings,
            idle: Idle::new(),
            listed: Mutex::new(None),
        };
        let first = pool.instantiate().map_err(|source| PluginError::Init {
            name: pool.plugin.name().to_string(),
            owner: format!("upstream {upstream}"),
            source,
        })?;
        pool.idle.put(first);
        Ok(pool)
    }

    /// The plugin this pool runs.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// Calls that failed so far (each discarded its instance), quarantined
    /// ones included.
    pub fn failures(&self) -> u64 {
        self.calls.failures()
    }

    /// Calls made so far (quarantined ones included).
    pub fn calls(&self) -> u64 {
        self.calls.calls()
    }

    /// The pool's call counters, time in calls, and quarantine.
    pub fn call_stats(&self) -> &Calls {
        &self.calls
    }

    /// Asks the plugin to choose a backend of `backends` for `request`.
    ///
    /// `request` is moved into the instance's store for the call and moved
    /// back before returning, whatever the outcome. `Ok(None)` means the
    /// plugin chose no backend. Response headers the plugin asked for are in
    /// `request.response_headers` after a successful call only: a failed
    /// call's are dropped, as is everything else it decided.
    pub fn select(
        &self,
        backends: &Arc<BackendSet>,
        request: &mut RequestView,
    ) -> Result<Option<Arc<Backend>>, CallError> {
        self.select_timed(backends, request).0
    }

    /// [`BalancerPool::select`], also returning how long the call took (the
    /// clock is read once, for the quarantine and the caller's histogram).
    pub fn select_timed(
        &self,
        backends: &Arc<BackendSet>,
        request: &mut RequestView,
    ) -> (Result<Option<Arc<Backend>>, CallError>, std::time::Duration) {
        request.response_headers.clear();
        let (result, took) = self
            .calls
            .run_timed(|started| self.try_select(backends, request, started));
        if result.is_err() {
            request.response_headers.clear();
        }
        (result, took)
    }

    fn try_select(
        &self,
        backends: &Arc<BackendSet>,
        request: &mut RequestView,
        started: Instant,
    ) -> Result<Option<Arc<Backend>>, CallError> {
        // The call's own deadline counts from its start, or from the end of
        // the one-off work below when there is some.
        let mut from = started;
        let mut instance = match self.idle.take() {
            Some(instance) => instance,
            None => {
                let instance = self.instantiate().map_err(CallError::Instantiate)?;
                from = Instant::now();
                instance
            }
        };
        let policy = instance.bindings.weir_plugin_policy();

        if instance.generation != Some(backends.generation()) {
            // O(n) in the upstream's size and paid once per instance per
            // change, off the per-request budget: it gets the init deadline
            // (10,000 backends take several milliseconds to copy in).
            let list = self.listed(backends);
            let limits = self.plugin.limits;
            let deadline = Instant::now() + limits.init_timeout();
            let armed = (self.plugin).arm(&mut instance.store, deadline);
            contain(|| policy.call_set_backends(&mut instance.store, &list))
                .map_err(|e| CallError::wasm(e, "set-backends", limits.init_timeout()))?;
            drop(armed);
            instance.store.data_mut().backends = Some(backends.clone());
            instance.generation = Some(backends.generation());
            from = Instant::now();
        }

        let placeholder = request.placeholder();
        instance.store.data_mut().request = Some(std::mem::replace(request, placeholder));
        let deadline = from + self.plugin.limits.cutoff();
        let armed = self.plugin.arm(&mut instance.store, deadline);
        let outcome = contain(|| policy.call_select(&mut instance.store, Resource::new_borrow(0)));
        drop(armed);
        let state = instance.store.data_mut();
        if let Some(view) = state.request.take() {
            *request = view;
        }
        let refused = state.refused.take();
        // Cell writes stay only if the whole answer is taken.
        state.end_call(outcome.is_ok() && refused.is_none());
        let choice =
            outcome.map_err(|e| CallError::wasm(e, "select", self.plugin.limits.timeout))?;
        if let Some(refused) = refused {
            return Err(CallError::Invalid(refused));
        }
        self.idle.put(instance);

        let Some(id) = choice else { return Ok(None) };
        let backend = backends.get(id).ok_or(CallError::UnknownBackend(id))?;
        if backend.health != Health::Healthy {
            return Err(CallError::Ineligible {
                backend: backend.name.clone(),
                health: backend.health.as_str(),
            });
        }
        Ok(Some(backend.clone()))
    }

    /// The WIT form of `backends`, built once per set whatever the number
    /// of instances told of it (each new set has a new generation; the
    /// list holds nothing of any request).
    fn listed(&self, backends: &BackendSet) -> Arc<Vec<types::Backend>> {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        match &*listed {
            Some((generation, list)) if *generation == backends.generation() => list.clone(),
            _ => {
                let list = Arc::new(wit_backends(backends));
                *listed = Some((backends.generation(), list.clone()));
                list
            }
        }
    }

    /// A new instance with `init` already run.
    fn instantiate(&self) -> Result<Instance, InitError> {
        let limits = self.plugin.limits;
        let Kind::Balancer(pre) = &self.plugin.pre else {
            return Err(InitError::WrongWorld {
                world: self.plugin.world(),
                wanted: "balancer",
                export: "weir:plugin/policy@0.1.0",
            });
        };
        let failed = |function| InitError::wasm(function, limits.init_timeout());
        let mut store = self.plugin.new_store(self.upstream.clone());
        let armed = (self.plugin).arm(&mut store, Instant::now() + limits.init_timeout());
        let bindings = contain(|| pre.instantiate(&mut store)).map_err(failed("instantiate"))?;
        drop(armed);
        let _armed = (self.plugin).arm(&mut store, Instant::now() + limits.init_timeout());
        contain(|| {
            bindings
                .weir_plugin_policy()
                .call_init(&mut store, &self.settings)
        })
        .map_err(failed("init"))?
        .map_err(InitError::Refused)?;
        store.data_mut().end_call(true);
        Ok(Instance {
            store,
            bindings,
            generation: None,
        })
    }
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
