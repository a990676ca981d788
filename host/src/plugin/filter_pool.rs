//! Pools of ready instances of one filter plugin for one place in a route's
//! chain, the two calls the proxy makes (`on-request`, `on-response`), and
//! the checked host form of a filter's decision.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{StatusCode, Uri};
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::{FilterBindings, filter_api};
use super::call::{CallError, Calls, classify, describe};
use super::guard::contain;
use super::host::{HostState, RequestView, wit_ip};
use super::pool::Idle;
use super::{Kind, LoadedPlugin, PluginError};

/// One change to a header map, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value.
    Set(HeaderName, HeaderValue),
    /// Add a value.
    Append(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
}

impl HeaderOp {
    /// Applies the change to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            HeaderOp::Set(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            HeaderOp::Append(name, value) => {
                headers.append(name.clone(), value.clone());
            }
            HeaderOp::Remove(name) => {
                headers.remove(name);
            }
        }
    }
}

/// Changes to a request, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestChanges {
    /// Header changes, in order.
    pub headers: Vec<HeaderOp>,
    /// A new path and query.
    pub path: Option<PathAndQuery>,
}

impl RequestChanges {
    /// Applies the changes to the request view.
    pub fn apply(&self, request: &mut RequestView) {
        for op in &self.headers {
            op.apply(&mut request.headers);
        }
        if let Some(path) = &self.path {
            let mut parts = std::mem::take(&mut request.uri).into_parts();
            parts.path_and_query = Some(path.clone());
            request.uri = Uri::from_parts(parts).unwrap_or_else(|_| {
                Uri::builder()
                    .path_and_query(path.clone())
                    .build()
                    .unwrap_or_default()
            });
        }
    }
}

/// A filter's decision, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    /// Go on with these changes.
    Continue(RequestChanges),
    /// Go to upstream `upstream` with these changes.
    Route {
        /// The upstream's name (the proxy checks that it exists).
        upstream: String,
        /// The changes.
        changes: RequestChanges,
    },
    /// Answer the client with this.
    Respond {
        /// Status.
        status: StatusCode,
        /// Headers.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Body.
        body: Bytes,
    },
}

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
        let (first, hooks) = pool.instantiate().map_err(|reason| PluginError::Init {
            name: pool.plugin.name().to_string(),
            owner: owner.to_string(),
            reason,
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
            |api, store| api.call_on_request(store, Resource::new_borrow(0), client),
            |decision| {
                let decision = check_decision(decision)?;
                if let FilterDecision::Route { upstream, .. } = &decision
                    && !upstream_exists(upstream)
                {
                    return Err(format!(
                        "rerouted to upstream {upstream:?}, which does not exist"
                    ));
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
        f: impl FnOnce(&filter_api::Guest, &mut Store<HostState>) -> wasmtime::Result<W>,
        check: impl FnOnce(W) -> Result<R, String>,
    ) -> Result<R, CallError> {
        self.calls.run(|| {
            let mut instance = self.checkout()?;
            let placeholder = request.placeholder();
            instance.store.data_mut().request = Some(std::mem::replace(request, placeholder));
            instance
                .store
                .set_epoch_deadline(self.plugin.limits.deadline_ticks());
            let api = instance.bindings.weir_plugin_http_filter();
            let outcome = contain(|| f(api, &mut instance.store));
            if let Some(view) = instance.store.data_mut().request.take() {
                *request = view;
            }
            let value = outcome
                .map_err(|e| classify(e, self.plugin.limits.timeout))
                .and_then(|answer| check(answer).map_err(CallError::Invalid));
            // The call's cell writes stay only if its answer is taken.
            instance.store.data_mut().end_call(value.is_ok());
            let value = value?;
            self.idle.put(instance);
            Ok(value)
        })
    }

    fn checkout(&self) -> Result<Instance, CallError> {
        match self.idle.take() {
            Some(instance) => Ok(instance),
            None => self
                .instantiate()
                .map(|(instance, _)| instance)
                .map_err(CallError::Instantiate),
        }
    }

    /// A new instance with `init` already run, and the hooks it asked for.
    fn instantiate(&self) -> Result<(Instance, filter_api::Hooks), String> {
        let limits = self.plugin.limits;
        let Kind::Filter(pre) = &self.plugin.pre else {
            return Err(format!(
                "is a {} component, not a filter (it must export weir:plugin/http-filter@0.1.0)",
                self.plugin.world()
            ));
        };
        let mut store = self.plugin.new_store(self.owner.clone());
        let bindings = contain(|| pre.instantiate(&mut store))
            .map_err(|e| describe(&e, limits.init_timeout()))?;
        store.set_epoch_deadline(limits.init_deadline_ticks());
        let hooks = contain(|| {
            bindings
                .weir_plugin_http_filter()
                .call_init(&mut store, &self.settings)
        })
        .map_err(|e| describe(&e, limits.init_timeout()))?
        .map_err(|message| format!("plugin refused its settings: {message}"))?;
        store.data_mut().end_call(true);
        Ok((Instance { store, bindings }, hooks))
    }
}

fn check_decision(decision: filter_api::Decision) -> Result<FilterDecision, String> {
    Ok(match decision {
        filter_api::Decision::Continue(changes) => {
            FilterDecision::Continue(check_changes(changes)?)
        }
        filter_api::Decision::Route(reroute) => FilterDecision::Route {
            upstream: reroute.upstream,
            changes: check_changes(reroute.changes)?,
        },
        filter_api::Decision::Respond(response) => {
            let status = StatusCode::from_u16(response.status)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    format!(
                        "answered with status {}, not within 200..=599",
                        response.status
                    )
                })?;
            let headers = response
                .headers
                .into_iter()
                .map(|(name, value)| header(&name, &value))
                .collect::<Result<_, _>>()?;
            FilterDecision::Respond {
                status,
                headers,
                body: Bytes::from(response.body),
            }
        }
    })
}

fn check_changes(changes: filter_api::RequestChanges) -> Result<RequestChanges, String> {
    let headers = changes
        .headers
        .into_iter()
        .map(check_header_op)
        .collect::<Result<_, _>>()?;
    let path = match changes.path {
        None => None,
        Some(path) if path.starts_with('/') => Some(
            PathAndQuery::try_from(path.as_str())
                .map_err(|e| format!("rewrote the path to {path:?}: {e}"))?,
        ),
        Some(path) => {
            return Err(format!(
                "rewrote the path to {path:?}, which does not start with '/'"
            ));
        }
    };
    Ok(RequestChanges { headers, path })
}

fn check_header_op(op: filter_api::HeaderOp) -> Result<HeaderOp, String> {
    Ok(match op {
        filter_api::HeaderOp::Set((name, value)) => {
            let (name, value) = header(&name, &value)?;
            HeaderOp::Set(name, value)
        }
        filter_api::HeaderOp::Append((name, value)) => {
            let (name, value) = header(&name, &value)?;
            HeaderOp::Append(name, value)
        }
        filter_api::HeaderOp::Remove(name) => HeaderOp::Remove(header_name(&name)?),
    })
}

/// A header a plugin may set, checked: a valid name and value, and not one
/// of the framing and connection headers weir owns ([`crate::framing`]).
/// Every header a plugin hands weir, in every hook, goes through here.
pub(super) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = header_name(name)?;
    let value =
        HeaderValue::try_from(value).map_err(|_| format!("invalid value for header {name}"))?;
    Ok((name, value))
}

/// A header name a plugin may touch (see [`header`]).
fn header_name(name: &str) -> Result<HeaderName, String> {
    let name = HeaderName::try_from(name).map_err(|_| format!("invalid header name {name:?}"))?;
    if crate::framing::is_weirs(&name) {
        return Err(crate::framing::refusal(&name));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(
        headers: Vec<filter_api::HeaderOp>,
        path: Option<&str>,
    ) -> filter_api::RequestChanges {
        filter_api::RequestChanges {
            headers,
            path: path.map(str::to_string),
        }
    }

    #[test]
    fn valid_decisions_are_checked_into_host_types() {
        let decision = check_decision(filter_api::Decision::Continue(changes(
            vec![
                filter_api::HeaderOp::Set(("X-A".into(), "1".into())),
                filter_api::HeaderOp::Remove("x-b".into()),
            ],
            Some("/v2?x=1"),
        )))
        .unwrap();
        let FilterDecision::Continue(changes) = decision else {
            panic!()
        };
        let mut view = RequestView {
            method: http::Method::GET,
            uri: "http://h/v1".parse().unwrap(),
            headers: HeaderMap::new(),
            client: "127.0.0.1:1".parse().unwrap(),
            response_headers: Vec::new(),
        };
        view.headers.insert("x-b", HeaderValue::from_static("gone"));
        changes.apply(&mut view);
        assert_eq!(view.uri, "http://h/v2?x=1");
        assert_eq!(view.headers.get("x-a").unwrap(), "1");
        assert!(view.headers.get("x-b").is_none());
    }

    #[test]
    fn nonsense_is_refused_whole() {
        let bad_header = filter_api::Decision::Continue(changes(
            vec![filter_api::HeaderOp::Set(("bad name".into(), "v".into()))],
            None,
        ));
        assert!(
            check_decision(bad_header)
                .unwrap_err()
                .contains("invalid header name")
        );
        let bad_value = filter_api::Decision::Continue(changes(
            vec![filter_api::HeaderOp::Append(("x".into(), "a\nb".into()))],
            None,
        ));
        assert!(check_decision(bad_value).is_err());
        let bad_path = filter_api::Decision::Continue(changes(vec![], Some("v2")));
        assert!(
            check_decision(bad_path)
                .unwrap_err()
                .contains("does not start with '/'")
        );
        let bad_status = filter_api::Decision::Respond(filter_api::Response {
            status: 99,
            headers: vec![],
            body: vec![],
        });
        assert!(check_decision(bad_status).is_err());
    }
}
