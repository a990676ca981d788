//! weir: an HTTP load balancer and reverse proxy whose balancing policies are
//! WebAssembly components.
//!
//! The binary (`src/main.rs`) is thin glue over this library:
//! [`config::Config`] parses and validates the TOML file,
//! [`server::Server::start`] loads the plugins it names into a
//! [`snapshot::Snapshot`] and starts serving, and [`proxy::handle`] runs
//! each request: route, choose a backend through the upstream's plugin
//! ([`plugin`]), forward, stream the answer back.

#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod config;
pub mod connection;
pub mod date;
pub mod demo;
pub mod error;
pub mod framing;
pub mod histogram;
pub mod linger;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod termination;
pub mod tls;
pub mod upstream;
pub mod view;
pub mod workers;

pub use config::{Config, ConfigError};
pub use server::{Server, StartError};
