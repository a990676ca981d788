//! The Wasm balancer plugin as an upstream's [`Policy`]: its pool of ready
//! instances and what a failed call does.

use std::sync::Arc;

use crate::backend::{Backend, BackendSet};
use crate::config::FailurePolicy;
use crate::plugin::{BalancerPool, CallError};
use crate::policy::{ChosenBy, OnFailure, Pick, Policy, PolicyError, Selection};
use crate::view::RequestView;

/// A balancing plugin attached to an upstream.
pub struct PluginBalancer {
    /// Ready instances of the plugin.
    pub pool: BalancerPool,
    /// What a failed call does to the request.
    pub on_failure: FailurePolicy,
}

/// A plugin cannot see `usable`: it answers any healthy backend of the set
/// (the pool checks that) and the upstream asks again. Traps and overruns
/// are contained by the pool; each is a failed call.
impl Policy for PluginBalancer {
    fn select(
        &self,
        set: &Arc<BackendSet>,
        request: &mut RequestView,
        _usable: &dyn Fn(&Backend) -> bool,
    ) -> Selection {
        let (result, took) = self.pool.select_timed(set, request);
        let answer = match result {
            Ok(Some(backend)) => Ok(Pick::Backend(backend)),
            Ok(None) => Ok(Pick::Declined),
            Err(error @ CallError::Quarantined(_)) => Err(PolicyError::quarantined(error)),
            Err(error) => Err(PolicyError::failed(error)),
        };
        Selection {
            answer,
            took: Some(took),
        }
    }

    fn chosen_by(&self) -> ChosenBy {
        ChosenBy::Plugin
    }

    fn on_failure(&self) -> OnFailure {
        match self.on_failure {
            FailurePolicy::Fallback => OnFailure::Fallback,
            FailurePolicy::Fail => OnFailure::Fail,
        }
    }
}
