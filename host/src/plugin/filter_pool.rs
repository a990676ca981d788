//! Pools of ready instances of one filter plugin for one place in a route's
//! chain, and the two calls the proxy makes (`on-request`, `on-response`).

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use http::header::HeaderMap;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::{FilterBindings, filter_api};
use super::call::Calls;
use super::decision::{BadAnswer, FilterDecision, HeaderOp, check_decision, check_header_op};
use super::error::{CallError, InitError};
use super::guard::contain;
use super::host::{HostState, RequestView, wit_ip};
use super::pool::Idle;
use super::{Kind, LoadedPlugin, PluginError};

/// One live instance.
struct Instance {
    store: Store<HostState>,
    bindings: FilterBindings,
}

/// Ready instances of one filter, initialised with its settings in one
/// route's chain.
pub struct FilterPool {
    plugin: Arc<LoadedPlugin>,
    owner: Arc<str>,
    settings: String,
    wants_response: bool,
    idle: Idle<Instance>,
    calls: Calls,
}

impl FilterPool {
    /// Makes the first instance and runs its `init` with `settings` (JSON),
    /// so a filter that refuses its settings or traps is rejected here.
    /// `owner` names the place in logs (`route 1 filter 2`).
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        owner: &str,
        settings: String,
    ) -> Result<FilterPool, PluginError> {
        let owner_name: Arc<str> = owner.into();
        let mut pool = FilterPool {
            calls: Calls::new(
                plugin.name_arc(),
                owner_name.clone(),
                plugin.limits.quarantine,
            ),
            plugin,
            owner: owner_name,
            settings,
            wants_response: false,
            idle: Idle::new(),
        };
        let (first, hooks) = pool.instantiate().map_err(|source| PluginError::Init {
            name: pool.plugin.name().to_string(),
            owner: owner.to_string(),
            source,
        })?;
        pool.wants_response = hooks.contains(filter_api::Hooks::ON_RESPONSE);
        pool.idle.put(first);
        Ok(pool)
    }

    /// The plugin this pool runs.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// Whether the filter asked for `on-response`.
    pub fn wants_response(&self) -> bool {
        self.wants_response
    }

    /// Calls that failed so far, quarantined ones included.
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

    /// Runs `on-request` for `request` and checks the decision;
    /// `upstream_exists` says whether a reroute's target is defined (a
    /// reroute to one that is not fails the call).
    pub fn on_request(
        &self,
        request: &mut RequestView,
        upstream_exists: impl Fn(&str) -> bool,
    ) -> Result<FilterDecision, CallError> {
        let client = wit_ip(request.client.ip());
        self.call(
            request,
            "on-request",
            |api, store| api.call_on_request(store, Resource::new_borrow(0), client),
            |decision| {
                let decision = check_decision(decision)?;
                if let FilterDecision::Route { upstream, .. } = &decision
                    && !upstream_exists(upstream)
                {
                    return Err(BadAnswer::NoSuchUpstream(upstream.clone()));
                }
                Ok(decision)
            },
        )
    }

    /// Runs `on-response` for a response with `status` and `headers` to
    /// `request`; returns the header changes to make. Only call it when
    /// [`wants_response`](FilterPool::wants_response).
    pub fn on_response(
        &self,
        request: &mut RequestView,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Vec<HeaderOp>, CallError> {
        let list: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        self.call(
            request,
            "on-response",
            |api, store| {
                api.call_on_response(store, Resource::new_borrow(0), status.as_u16(), &list)
            },
            |ops| ops.into_iter().map(check_header_op).collect(),
        )
    }

    /// One call: `request` is moved into an idle instance's store for it
    /// and back, whatever the outcome, under the call deadline, and the
    /// answer checked whole by `check`. A failed call (trap, overrun, an
    /// answer `check` refuses) discards the instance and its cell writes,
    /// and is counted, logged and weighed for quarantine by [`Calls::run`].
    fn call<W, R>(
        &self,
        request: &mut RequestView,
        function: &'static str,
        f: impl FnOnce(&filter_api::Guest, &mut Store<HostState>) -> wasmtime::Result<W>,
        check: impl FnOnce(W) -> Result<R, BadAnswer>,
    ) -> Result<R, CallError> {
        self.calls.run(|started| {
            let (mut instance, from) = match self.idle.take() {
                Some(instance) => (instance, started),
                None => {
                    let (instance, _) = self.instantiate().map_err(CallError::Instantiate)?;
                    (instance, Instant::now())
                }
            };
            let placeholder = request.placeholder();
            instance.store.data_mut().request = Some(std::mem::replace(request, placeholder));
            let armed = (self.plugin).arm(&mut instance.store, from + self.plugin.limits.cutoff());
            let api = instance.bindings.weir_plugin_http_filter();
            let outcome = contain(|| f(api, &mut instance.store));
            drop(armed);
            if let Some(view) = instance.store.data_mut().request.take() {
                *request = view;
            }
            let value = outcome
                .map_err(|e| CallError::wasm(e, function, self.plugin.limits.timeout))
                .and_then(|answer| check(answer).map_err(CallError::Invalid));
            // The call's cell writes stay only if its answer is taken.
            instance.store.data_mut().end_call(value.is_ok());
            let value = value?;
            self.idle.put(instance);
            Ok(value)
        })
    }

    /// A new instance with `init` already run, and the hooks it asked for.
    fn instantiate(&self) -> Result<(Instance, filter_api::Hooks), InitError> {
        let limits = self.plugin.limits;
        let Kind::Filter(pre) = &self.plugin.pre else {
            return Err(InitError::WrongWorld {
                world: self.plugin.world(),
                wanted: "filter",
                export: "weir:plugin/http-filter@0.1.0",
            });
        };
        let failed = |function| InitError::wasm(function, limits.init_timeout());
        let mut store = self.plugin.new_store(self.owner.clone());
        let armed = (self.plugin).arm(&mut store, Instant::now() + limits.init_timeout());
        let bindings = contain(|| pre.instantiate(&mut store)).map_err(failed("instantiate"))?;
        drop(armed);
        let _armed = (self.plugin).arm(&mut store, Instant::now() + limits.init_timeout());
        let hooks = contain(|| {
            bindings
                .weir_plugin_http_filter()
                .call_init(&mut store, &self.settings)
        })
        .map_err(failed("init"))?
        .map_err(InitError::Refused)?;
        store.data_mut().end_call(true);
        Ok((Instance { store, bindings }, hooks))
    }
}
