//! The host side of a plugin's imports: the request view, logging and live
//! load, and the per-store state they read.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginState;
use super::bindings::{load, log, metrics, response_headers, shared, types};
use super::journal::CallJournal;
use super::log_limit::bound_message;
use super::refusals::Ignored;
use crate::backend::BackendSet;
pub use crate::view::RequestView;

/// The type behind the guest's `request` resource. The host only ever lends
/// one request at a time to a store, so the handle carries no data: it
/// stands for [`HostState::request`].
pub struct RequestHandle;

/// Most response headers one `select` may add.
const MAX_RESPONSE_HEADERS: usize = 8;

/// Everything one plugin instance's store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// Plugin name, for log lines.
    pub(crate) plugin: Arc<str>,
    /// Upstream the instance serves, for log lines.
    pub(crate) upstream: Arc<str>,
    /// The request being routed, during `select` only.
    pub(crate) request: Option<RequestView>,
    /// The backend set this instance was last told about; `load` reads it.
    pub(crate) backends: Option<Arc<BackendSet>>,
    /// What every instance of this plugin shares: cells and counters
    /// (filters), refusal counts.
    pub(crate) plugin_state: PluginState,
    /// Why the current call's answer is refused, when a host call the
    /// plugin made during it broke a rule that fails the call (a framing
    /// response header); the pool turns it into a failed call.
    pub(crate) refused: Option<super::decision::BadAnswer>,
    /// The current call's cell writes, kept until [`HostState::end_call`].
    journal: CallJournal,
    /// When the current call must end (set when it is armed).
    pub(crate) deadline: std::time::Instant,
}

impl HostState {
    pub(crate) fn new(
        plugin: Arc<str>,
        upstream: Arc<str>,
        limits: StoreLimits,
        plugin_state: PluginState,
    ) -> Self {
        // No capabilities: no preopened directories, no environment, no
        // arguments, no sockets; stdio goes nowhere.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            plugin,
            upstream,
            request: None,
            backends: None,
            plugin_state,
            refused: None,
            journal: CallJournal::default(),
            deadline: std::time::Instant::now(),
        }
    }

    /// Ends a call (or `init`): the cell writes it made stay if it
    /// `succeeded`, and are taken back if not. Dropping the state (the
    /// instance is discarded) ends a call under way as failed.
    pub(crate) fn end_call(&mut self, succeeded: bool) {
        if succeeded {
            self.journal.commit();
        } else {
            let cells = &self.plugin_state.cells;
            self.journal.undo(cells, std::time::Instant::now());
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    fn request(&self) -> wasmtime::Result<&RequestView> {
        self.request
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("request used outside of a call"))
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.end_call(false);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.request()
            .map(|r| r.method.as_str().to_string())
            .unwrap_or_default()
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.request()
            .map(|r| {
                r.uri
                    .path_and_query()
                    .map_or_else(|| r.uri.path().to_string(), |pq| pq.as_str().to_string())
            })
            .unwrap_or_default()
    }

    fn authority(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        let request = self.request().ok()?;
        request
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                request
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        let request = self.request().ok()?;
        request
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn client_addr(&mut self, _: Resource<RequestHandle>) -> String {
        self.request()
            .map(|r| r.client.to_string())
            .unwrap_or_default()
    }

    fn client_ip(&mut self, _: Resource<RequestHandle>) -> types::IpAddress {
        let ip = self
            .request()
            .map(|r| r.client.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        wit_ip(ip)
    }

    fn tls(&mut self, _: Resource<RequestHandle>) -> Option<types::TlsSession> {
        let tls = self.request().ok()?.tls.as_ref()?;
        Some(types::TlsSession {
            version: tls.version.unwrap_or("unknown").to_string(),
            server_name: tls.server_name.clone(),
            alpn: tls
                .alpn
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            client_subject: tls.client_subject.clone(),
        })
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        // Lent, never owned by the guest: nothing to free.
        Ok(())
    }
}

/// A plugin's line goes to weir's log only if weir's filter keeps its level
/// (a filtered-out line costs no rate), within the plugin's rate, cut to
/// [`super::MAX_MESSAGE_BYTES`] and with control characters escaped (see
/// [`super::log_limit`]).
impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let (plugin, upstream) = (&*self.plugin, &*self.upstream);
        let enabled = match level {
            log::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            log::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            log::Level::Info => tracing::enabled!(tracing::Level::INFO),
            log::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            log::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let admission = self.plugin_state.log.admit(std::time::Instant::now());
        if let Some(report) = admission.report {
            tracing::warn!(
                plugin,
                dropped = report.dropped,
                total = report.total,
                "plugin log lines dropped: over the rate of {} lines per second",
                self.plugin_state.log.rate()
            );
        }
        if !admission.write {
            return;
        }
        let message = bound_message(&message);
        match level {
            log::Level::Trace => tracing::trace!(plugin, upstream, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, upstream, "{message}"),
            log::Level::Info => tracing::info!(plugin, upstream, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, upstream, "{message}"),
            log::Level::Error => tracing::error!(plugin, upstream, "{message}"),
        }
    }
}

impl response_headers::Host for HostState {
    fn add(&mut self, name: String, value: String) {
        let (plugin, upstream) = (&*self.plugin, &*self.upstream);
        let Some(request) = self.request.as_mut() else {
            tracing::debug!(
                plugin,
                upstream,
                "response-headers.add outside of select: ignored"
            );
            return;
        };
        let refusals = &self.plugin_state.refusals;
        match super::decision::header(&name, &value) {
            Ok(header) if request.response_headers.len() < MAX_RESPONSE_HEADERS => {
                request.response_headers.push(header);
            }
            Ok(_) => refusals.refuse(
                Ignored::ResponseHeader,
                plugin,
                upstream,
                &format!("more than {MAX_RESPONSE_HEADERS} response headers: {name} ignored"),
            ),
            Err(super::decision::BadAnswer::WeirsHeader(name)) => {
                // Not ignorable: the whole decision is refused.
                self.refused
                    .get_or_insert(super::decision::BadAnswer::ResponseHeader(name));
            }
            Err(why) => {
                let why = format!("response header ignored: {}", crate::error::chain(&why));
                refusals.refuse(Ignored::ResponseHeader, plugin, upstream, &why);
            }
        }
    }
}

impl load::Host for HostState {
    fn backend_load(&mut self, id: types::BackendId) -> Option<types::BackendLoad> {
        let backend = self.backends.as_ref()?.get(id)?;
        let stats = &backend.stats;
        Some(types::BackendLoad {
            in_flight: stats.in_flight(),
            ewma_latency_us: stats.ewma_latency_us(),
            recent_failures: stats.consecutive_failures(),
        })
    }
}

impl shared::Host for HostState {
    fn get(&mut self, key: String) -> Option<i64> {
        self.plugin_state.cells.get(&key, std::time::Instant::now())
    }

    fn add(&mut self, key: String, delta: i64, ttl_ms: u32) -> i64 {
        let ttl = std::time::Duration::from_millis(ttl_ms.into());
        let now = std::time::Instant::now();
        (self.plugin_state.cells).add(&key, delta, ttl, now, &mut self.journal)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<i64>,
        new: i64,
        ttl_ms: u32,
    ) -> bool {
        let ttl = std::time::Duration::from_millis(ttl_ms.into());
        let now = std::time::Instant::now();
        (self.plugin_state.cells).compare_and_swap(&key, expected, new, ttl, now, &mut self.journal)
    }
}

impl metrics::Host for HostState {
    fn increment(&mut self, name: String, delta: u64) {
        if !self.plugin_state.counters.increment(&name, delta) {
            self.plugin_state.refusals.refuse(
                Ignored::MetricName,
                &self.plugin,
                &self.upstream,
                &format!("counter {name:?} refused: a bad name (letters, digits, _; at most 64) or too many counters"),
            );
        }
    }
}

/// An IP address as the WIT `ip-address`; an IPv4-mapped IPv6 address as
/// the IPv4 address it stands for.
pub(crate) fn wit_ip(ip: std::net::IpAddr) -> types::IpAddress {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            types::IpAddress::V4((a, b, c, d))
        }
        std::net::IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            types::IpAddress::V6((a, b, c, d, e, f, g, h))
        }
    }
}
