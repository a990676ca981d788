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
    #[error(transparent)]
    Invalid(#[from] InvalidChange),
}

/// Why an admin change is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidChange {
    /// The address does not parse as `ip:port`.
    #[error("address {address:?} is not ip:port")]
    Address {
        /// The address given.
        address: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The upstream already has a backend of that name.
    #[error("upstream {upstream} already has a backend {backend:?}")]
    Duplicate {
        /// The upstream.
        upstream: String,
        /// The name asked for.
        backend: String,
    },
    /// The weight is out of range.
    #[error("weight {0} is not within 0..=65535")]
    Weight(u32),
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
        let addr: SocketAddr = new
            .address
            .parse()
            .map_err(|source| InvalidChange::Address {
                address: new.address.clone(),
                source,
            })?;
        check_weight(new.weight)?;
        let name = new.name.unwrap_or_else(|| new.address.clone());
        self.admin_edit(&name, "added", |members| {
            if members.iter().any(|b| b.name == name) {
                return Err(InvalidChange::Duplicate {
                    upstream: self.name.to_string(),
                    backend: name.clone(),
                }
                .into());
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
            // Its tunnels close after their grace.
            members.remove(at).state.set_removed();
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
        return Err(InvalidChange::Weight(weight).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Health;
    use crate::upstream::testing::{backend, upstream};

    #[tokio::test(start_paused = true)]
    async fn admin_changes_build_new_sets() {
        let web = upstream(2, "");
        let generation = web.backends().generation();
        web.add_backend(
            serde_json::from_str(r#"{"name": "b3", "address": "127.0.0.1:9003"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(backend(&web, "b3").id, 2);
        web.set_draining("b1", true).unwrap();
        assert_eq!(backend(&web, "b1").health, Health::Draining);
        web.set_weight("b2", 7).unwrap();
        assert_eq!(
            (backend(&web, "b2").weight, backend(&web, "b2").base_weight),
            (7, 7)
        );
        web.remove_backend("b3").unwrap();
        let names: Vec<_> = web.backends().iter().map(|b| b.name.clone()).collect();
        assert_eq!(names, ["b1", "b2"]);
        assert!(web.backends().generation() > generation);
        assert_eq!(
            web.remove_backend("b3"),
            Err(AdminError::NoSuchBackend {
                upstream: "web".into(),
                backend: "b3".into()
            })
        );
        assert!(matches!(
            web.set_weight("b1", 70_000),
            Err(AdminError::Invalid(_))
        ));
        web.set_draining("b1", false).unwrap();
        assert_eq!(web.backends().eligible().len(), 2);
    }

    #[test]
    fn invalid_changes_say_why_with_their_source() {
        let web = upstream(1, "");
        let bad = web
            .add_backend(serde_json::from_str(r#"{"address": "nowhere"}"#).unwrap())
            .unwrap_err();
        assert_eq!(bad.to_string(), "address \"nowhere\" is not ip:port");
        assert!(std::error::Error::source(&bad).is_some());
        let twice = web
            .add_backend(
                serde_json::from_str(r#"{"name": "b1", "address": "127.0.0.1:1"}"#).unwrap(),
            )
            .unwrap_err();
        assert_eq!(
            twice.to_string(),
            "upstream web already has a backend \"b1\""
        );
        assert_eq!(
            web.set_weight("b1", 65_536),
            Err(AdminError::Invalid(InvalidChange::Weight(65_536)))
        );
    }
}
