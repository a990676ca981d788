//! Changes an operator makes to a running upstream through the admin API:
//! add, remove, re-weight, drain and re-enable backends. Each builds a new
//! backend set at once; requests in flight finish on the backends they
//! started with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::{Backend, BackendSpec, Upstream};

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    /// No backend of that name.
    #[error("upstream {upstream} has no backend {backend:?}")]
    NoSuchBackend {
        /// The upstream.
        upstream: String,
        /// The name asked for.
        backend: String,
    },
    /// The change is invalid (duplicate name, bad address, weight).
    #[error("{0}")]
    Invalid(String),
}

/// A backend to add, as the admin API takes it (JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    /// `ip:port`.
    pub address: String,
    /// Name; defaults to the address.
    pub name: Option<String>,
    /// Relative weight, default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Labels handed to plugins.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Own in-flight limit.
    pub max_in_flight: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Upstream {
    /// Adds a backend; it takes traffic at once (subject to health checks).
    pub fn add_backend(&self, new: NewBackend) -> Result<(), AdminError> {
        let addr: SocketAddr = new.address.parse().map_err(|_| {
            AdminError::Invalid(format!("address {:?} is not ip:port", new.address))
        })?;
        check_weight(new.weight)?;
        let name = new.name.unwrap_or_else(|| new.address.clone());
        self.admin_edit(&name, "added", |members| {
            if members.iter().any(|b| b.name == name) {
                return Err(AdminError::Invalid(format!(
                    "upstream {} already has a backend {name:?}",
                    self.name
                )));
            }
            let id = members.iter().map(|b| b.id + 1).max().unwrap_or(0);
            let spec = BackendSpec {
                name: name.clone(),
                addr,
                weight: new.weight,
                metadata: new.metadata.into_iter().collect(),
                max_in_flight: new.max_in_flight,
            };
            members.push(Arc::new(Backend::new(
                id,
                spec,
                Arc::default(),
                Arc::default(),
            )));
            Ok(())
        })
    }

    /// Removes a backend: no new requests; those in flight finish.
    pub fn remove_backend(&self, name: &str) -> Result<(), AdminError> {
        self.admin_edit(name, "removed", |members| {
            let at = self.position(members, name)?;
            members.remove(at);
            Ok(())
        })
    }

    /// Sets a backend's weight.
    pub fn set_weight(&self, name: &str, weight: u32) -> Result<(), AdminError> {
        check_weight(weight)?;
        self.admin_edit(name, &format!("re-weighted to {weight}"), |members| {
            let at = self.position(members, name)?;
            members[at] = Arc::new(Backend {
                weight,
                base_weight: weight,
                ..(*members[at]).clone()
            });
            Ok(())
        })
    }

    /// Drains a backend (no new requests, in-flight ones finish), or
    /// enables it again.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<(), AdminError> {
        let what = if draining { "drained" } else { "enabled" };
        self.admin_edit(name, what, |members| {
            let at = self.position(members, name)?;
            members[at].state.set_draining(draining);
            Ok(())
        })
    }

    fn admin_edit(
        &self,
        backend: &str,
        what: &str,
        change: impl FnOnce(&mut Vec<Arc<Backend>>) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        self.edit(change)?;
        self.edited.store(true, Ordering::Relaxed);
        tracing::info!(upstream = %self.name, backend, "admin: backend {what}");
        Ok(())
    }

    fn position(&self, members: &[Arc<Backend>], name: &str) -> Result<usize, AdminError> {
        members
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| AdminError::NoSuchBackend {
                upstream: self.name.to_string(),
                backend: name.to_string(),
            })
    }
}

fn check_weight(weight: u32) -> Result<(), AdminError> {
    if weight > u32::from(u16::MAX) {
        return Err(AdminError::Invalid(format!(
            "weight {weight} is not within 0..=65535"
        )));
    }
    Ok(())
}
