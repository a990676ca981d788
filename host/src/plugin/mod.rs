//! The plugin runtime: wasmtime set up once per process, components compiled
//! and pre-instantiated once per file, and pools of ready instances per
//! upstream.
//!
//! Lifecycle of a balancer plugin:
//! 1. [`PluginRuntime::new`] builds the engine (pooling allocator, epoch
//!    interruption) and a linker holding WASI (with no capabilities) and
//!    weir's own imports, and starts the epoch ticker.
//! 2. [`PluginStore::load`] reads `NAME.wasm` (unless its content is the
//!    version already loaded) and [`PluginRuntime::load_bytes`] compiles it,
//!    checks it is a `balancer` component whose imports weir satisfies, and
//!    pre-instantiates it; the store keeps the last good version of each.
//! 3. [`BalancerPool::new`] makes one instance and calls its `init` with the
//!    upstream's settings, rejecting the plugin for that upstream on error.
//! 4. Per request, [`BalancerPool::select`] borrows an idle instance (making
//!    one if none is idle), tells it about a changed backend set if needed,
//!    calls `select` under the epoch deadline, and returns the instance to the
//!    pool, or discards it if the call trapped or overran.

mod bindings;
mod call;
mod cells;
mod counters;
mod deadline;
mod decision;
mod error;
mod filter_pool;
mod guard;
mod host;
mod journal;
mod limits;
mod log_limit;
mod pool;
pub mod quarantine;
mod refusals;
mod store;
mod ticker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use call::Calls;
pub use cells::{
    CELL_OVERHEAD_BYTES, CellLimits, CellUsage, MAX_CELL_BYTES, MAX_CELLS, MAX_KEY_BYTES, Refusal,
    SharedCells,
};
pub use counters::PluginCounters;
pub use decision::{BadAnswer, FilterDecision, HeaderOp, RequestChanges};
pub use error::{CallError, InitError, PluginError, WasmError};
pub use filter_pool::FilterPool;
pub use host::RequestView;
pub use journal::MAX_CALL_WRITES;
pub use limits::PluginLimits;
pub use log_limit::{
    BURST_SECONDS, DEFAULT_LINES_PER_SECOND, LogLimiter, MAX_LINES_PER_SECOND, MAX_MESSAGE_BYTES,
    REPORT_EVERY,
};
pub use pool::BalancerPool;
pub use quarantine::QuarantinePolicy;
pub use refusals::Refusals;
pub use store::PluginStore;

use bindings::{BalancerBindings, BalancerPre, FilterPre};
use host::HostState;
use ticker::Ticker;

/// The largest plugin file weir reads. Components from the heaviest
/// toolchains (a JavaScript engine inside) are around 12 MB; anything past
/// this is refused before it is read into memory.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// Reads a plugin file, refusing one larger than [`MAX_PLUGIN_BYTES`].
fn read_plugin(name: &str, path: &Path) -> Result<Vec<u8>, PluginError> {
    let read_error = |source| PluginError::Read {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_PLUGIN_BYTES {
        return Err(PluginError::Invalid {
            name: name.to_string(),
            path: path.to_path_buf(),
            reason: format!(
                "the file is {size} bytes; plugins may be at most {MAX_PLUGIN_BYTES} bytes"
            ),
            source: None,
        });
    }
    std::fs::read(path).map_err(read_error)
}

/// The wasmtime engine, linker and epoch ticker shared by every plugin, and
/// the state plugins share across their instances and versions.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: PluginLimits,
    ticker: Arc<Ticker>,
    /// Shared cells, counters and log limit of each plugin, by name.
    state: std::sync::Mutex<std::collections::BTreeMap<String, PluginState>>,
}

/// What every instance and version of one plugin shares.
#[derive(Debug, Clone)]
pub struct PluginState {
    /// The `shared` import's cells.
    pub cells: Arc<SharedCells>,
    /// The `metrics` import's counters.
    pub counters: Arc<PluginCounters>,
    /// What weir refused of the plugin's host calls.
    pub refusals: Arc<Refusals>,
    /// The `log` import's rate limit and dropped-line count.
    pub log: Arc<LogLimiter>,
}

impl PluginState {
    /// Empty cells, counters and refusals for plugin `name`, whose log may
    /// take `log_rate` lines a second.
    pub fn new(name: &str, log_rate: u32) -> Self {
        PluginState {
            cells: Arc::new(SharedCells::new(name)),
            counters: Arc::default(),
            refusals: Arc::default(),
            log: Arc::new(LogLimiter::new(log_rate, std::time::Instant::now())),
        }
    }
}

impl PluginRuntime {
    /// Builds the engine and linker and starts the epoch ticker thread, which
    /// stops when the runtime's engine is dropped.
    pub fn new(limits: PluginLimits) -> Result<Arc<Self>, PluginError> {
        Self::with_cache(limits, None)
    }

    /// Like [`PluginRuntime::new`], keeping compiled code in `cache_dir`
    /// (absolute) so a component already compiled once, by this or an
    /// earlier process, loads without compiling.
    pub fn with_cache(
        limits: PluginLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Arc<Self>, PluginError> {
        let runtime_err = |what: &str| {
            let what = what.to_string();
            move |e: wasmtime::Error| PluginError::runtime(what, WasmError::new(e))
        };
        guard::install_panic_hook();
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache).map_err(runtime_err(&format!(
                "compiled-code cache in {}",
                dir.display()
            )))?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).map_err(runtime_err("the engine"))?;

        let mut linker = Linker::<HostState>::new(&engine);
        let linking = runtime_err("linking weir's imports");
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(linking.clone())?;
        BalancerBindings::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(linking.clone())?;
        bindings::shared::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(linking.clone())?;
        bindings::metrics::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(linking.clone())?;

        // Kept awake for the longest deadline after the last call started.
        let keep = limits.init_timeout() + limits.cutoff();
        // No call is cut off sooner than `cutoff` after it starts.
        let ticker = Ticker::start(engine.weak(), limits.cutoff(), keep)
            .map_err(|e| PluginError::runtime("cannot start the epoch ticker", e))?;

        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            limits,
            ticker,
            state: Default::default(),
        }))
    }

    /// The shared cells, counters and log limit of plugin `name` (made on
    /// first use).
    pub fn plugin_state(&self, name: &str) -> PluginState {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.limits.log_lines_per_second;
        state
            .entry(name.to_string())
            .or_insert_with(|| PluginState::new(name, rate))
            .clone()
    }

    /// Log lines dropped by each plugin's rate limit, by plugin name, for
    /// `/metrics`.
    pub fn log_dropped(&self) -> Vec<(String, u64)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .iter()
            .map(|(name, s)| (name.clone(), s.log.dropped()))
            .collect()
    }

    /// Every plugin's refusal counts, by plugin name, for `/metrics`.
    pub fn refusals(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .iter()
            .map(|(name, s)| (name.clone(), s.refusals.snapshot()))
            .collect()
    }

    /// Every plugin's counters, by plugin name, for `/metrics`.
    pub fn counters(&self) -> Vec<(String, Vec<(String, u64)>)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .iter()
            .map(|(name, s)| (name.clone(), s.counters.snapshot()))
            .filter(|(_, counters)| !counters.is_empty())
            .collect()
    }

    /// The limits every call and instance runs under.
    pub fn limits(&self) -> PluginLimits {
        self.limits
    }

    /// Epoch ticks so far: the ticker's wake-ups while plugins are called.
    pub fn epoch_ticks(&self) -> u64 {
        self.ticker.ticks()
    }

    /// Whether the epoch ticker is parked, no plugin having been called for
    /// longer than the longest deadline.
    pub fn ticker_parked(&self) -> bool {
        self.ticker.is_parked()
    }

    /// Compiles and pre-instantiates a component already in memory; `path`
    /// only names it in errors.
    pub fn load_bytes(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let invalid = |reason: &str, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
            PluginError::Invalid {
                name: name.to_string(),
                path: path.to_path_buf(),
                reason: reason.to_string(),
                source,
            }
        };
        let wasm = |reason: &'static str| {
            move |e: wasmtime::Error| invalid(reason, Some(WasmError::new(e).into()))
        };
        if bytes.is_empty() {
            return Err(invalid("the file is empty", None));
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(invalid("not a WebAssembly file (no \\0asm header)", None));
        }
        let component =
            Component::new(&self.engine, bytes).map_err(wasm("not a valid component"))?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(wasm(
            "imports something weir does not provide (plugins get only weir:plugin/log, load, shared, metrics and capability-free WASI)",
        ))?;
        let pre = match BalancerPre::new(instance_pre.clone()) {
            Ok(pre) => Kind::Balancer(pre),
            Err(balancer) => match FilterPre::new(instance_pre) {
                Ok(pre) => Kind::Filter(pre),
                Err(filter) => {
                    let why = error::NeitherWorld {
                        balancer: balancer.into(),
                        filter: filter.into(),
                    };
                    return Err(invalid(
                        "is neither a weir:plugin/balancer component (exporting weir:plugin/policy@0.1.0) nor a weir:plugin/filter component (exporting weir:plugin/http-filter@0.1.0)",
                        Some(why.into()),
                    ));
                }
            },
        };
        Ok(Arc::new(LoadedPlugin {
            name: name.into(),
            path: path.to_path_buf(),
            digest: digest(bytes),
            pre,
            engine: self.engine.clone(),
            limits: self.limits,
            ticker: self.ticker.clone(),
            state: self.plugin_state(name),
        }))
    }
}

/// A compiled, pre-instantiated balancer or filter component:
/// instantiating it again is cheap.
pub struct LoadedPlugin {
    name: Arc<str>,
    path: PathBuf,
    digest: u64,
    pre: Kind,
    engine: Engine,
    limits: PluginLimits,
    ticker: Arc<Ticker>,
    state: PluginState,
}

/// Which world a component implements.
enum Kind {
    Balancer(BalancerPre<HostState>),
    Filter(FilterPre<HostState>),
}

impl LoadedPlugin {
    /// The plugin's name (its file name without `.wasm`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's name, shared (no copy), for values that outlive a
    /// borrow, such as access log lines.
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// What every instance and version of this plugin shares: its cells
    /// and counters.
    pub fn state(&self) -> &PluginState {
        &self.state
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content digest of the file this version was compiled from.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// `balancer` or `filter`: the world the component implements.
    pub fn world(&self) -> &'static str {
        match self.pre {
            Kind::Balancer(_) => "balancer",
            Kind::Filter(_) => "filter",
        }
    }

    /// A fresh store for one instance of this plugin serving `owner` (an
    /// upstream or route, for log lines), limited in memory and set to trap
    /// once the deadline its calls are [`arm`](LoadedPlugin::arm)ed with has
    /// passed. Arm it before instantiating.
    fn new_store(&self, owner: Arc<str>) -> wasmtime::Store<HostState> {
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState::new(self.name.clone(), owner, limits, self.state.clone());
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| state.limiter());
        // Run at each epoch change during a call: the ticker advances the
        // epoch when some call, on any thread, is overdue; only this
        // store's own deadline decides whether this call ends.
        store.epoch_deadline_callback(|store| {
            Ok(if std::time::Instant::now() >= store.data().deadline {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(1)
            })
        });
        store
    }

    /// Arms `store` for a call that must end by `deadline` (every call into
    /// a plugin goes through here): the ticker cuts it off once that has
    /// passed, until the returned guard is dropped.
    #[inline]
    fn arm(
        &self,
        store: &mut wasmtime::Store<HostState>,
        deadline: std::time::Instant,
    ) -> ticker::Armed {
        let armed = self.ticker.arm(deadline);
        store.data_mut().deadline = armed.at();
        store.set_epoch_deadline(1);
        armed
    }
}

/// The content digest weir identifies plugin versions by (in logs, and to
/// skip reloading a file whose bytes did not change).
pub fn digest(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish_non_exhaustive()
    }
}
