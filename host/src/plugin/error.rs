//! The plugin runtime's errors: what failed at weir's level, with the
//! wasmtime, I/O or parse error it is about kept as the
//! [`source`](std::error::Error::source), never pasted into a string.
//! [`crate::error::chain`] renders one with its causes.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Trap, WasmBacktrace};

use super::decision::BadAnswer;

/// An error from wasmtime, kept whole (shared, so the errors holding it
/// stay cheap to clone).
///
/// It shows as its first cause that is not a wasm backtrace (a trap's
/// backtrace spans many lines and is noise in a log line), and
/// [`source`](Error::source) goes on from there into wasmtime's chain.
/// [`WasmError::downcast_ref`] reaches any link, the first included.
#[derive(Clone)]
pub struct WasmError(Arc<wasmtime::Error>);

impl WasmError {
    /// Wraps `error`.
    pub fn new(error: wasmtime::Error) -> Self {
        WasmError(Arc::new(error))
    }

    /// The trap code, if wasm trapped (as opposed to a host-side failure
    /// such as a panic or a limit).
    pub fn trap(&self) -> Option<Trap> {
        self.0.downcast_ref::<Trap>().copied()
    }

    /// The first link of wasmtime's chain that is an `E`.
    pub fn downcast_ref<E>(&self) -> Option<&E>
    where
        E: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
    {
        self.0.downcast_ref::<E>()
    }

    /// The wasmtime error itself.
    pub fn wasmtime(&self) -> &wasmtime::Error {
        &self.0
    }

    /// wasmtime's chain without its backtrace links.
    fn links(&self) -> impl Iterator<Item = &(dyn Error + 'static)> {
        let backtrace = self
            .0
            .downcast_ref::<WasmBacktrace>()
            .map(|b| b.to_string());
        self.0
            .chain()
            .filter(move |link| backtrace.as_ref() != Some(&link.to_string()))
    }
}

impl std::fmt::Display for WasmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.links().next() {
            Some(first) => std::fmt::Display::fmt(first, f),
            None => f.write_str("wasmtime error"),
        }
    }
}

impl std::fmt::Debug for WasmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl Error for WasmError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.links().nth(1)
    }
}

impl From<wasmtime::Error> for WasmError {
    fn from(error: wasmtime::Error) -> Self {
        WasmError::new(error)
    }
}

/// Why one plugin call did not produce a usable answer. Each costs only the
/// request at hand: the instance involved is discarded, never reused.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No instance could be made (instance limit reached, or `init` failed).
    #[error("could not instantiate")]
    Instantiate(#[source] InitError),
    /// The call ran past its deadline and was interrupted.
    #[error("{function} ran past its deadline of {deadline:?}")]
    Timeout {
        /// The export called (`select`, `init`, ...).
        function: &'static str,
        /// The deadline.
        deadline: Duration,
    },
    /// The call trapped (unreachable, out of fuel, a bad memory access, ...)
    /// or failed on the host's side (a panic, a memory limit).
    #[error("{function} {}", if .code.is_some() { "trapped" } else { "failed" })]
    Trap {
        /// The export called (`select`, `set-backends`, `on-request`, ...).
        function: &'static str,
        /// The trap code, when wasm trapped.
        code: Option<Trap>,
        /// wasmtime's error.
        #[source]
        source: WasmError,
    },
    /// The plugin named a backend the upstream does not have.
    #[error("chose backend id {0}, which the upstream does not have")]
    UnknownBackend(u32),
    /// The plugin named a backend that may not receive traffic now.
    #[error("chose backend {backend}, which is {health}")]
    Ineligible {
        /// The backend's name.
        backend: String,
        /// Its health (`unhealthy`, `draining`).
        health: &'static str,
    },
    /// The plugin's answer is invalid (a bad header, path or status, a
    /// framing header, or an upstream that does not exist).
    #[error("answered nonsense")]
    Invalid(#[source] BadAnswer),
    /// The pool is quarantined for this much longer: not called.
    #[error("quarantined for {0:?} more")]
    Quarantined(Duration),
}

impl CallError {
    /// The call error for a wasmtime error from a call of `function` with
    /// deadline `deadline`.
    pub(super) fn wasm(error: wasmtime::Error, function: &'static str, deadline: Duration) -> Self {
        let source = WasmError::new(error);
        match source.trap() {
            Some(Trap::Interrupt) => CallError::Timeout { function, deadline },
            code => CallError::Trap {
                function,
                code,
                source,
            },
        }
    }

    /// The trap code, when the call trapped in wasm ([`Trap::Interrupt`]
    /// for one past its deadline).
    pub fn trap(&self) -> Option<Trap> {
        match self {
            CallError::Timeout { .. } => Some(Trap::Interrupt),
            CallError::Trap { code, .. } => *code,
            CallError::Instantiate(InitError::Call(call)) => call.trap(),
            _ => None,
        }
    }
}

/// Why a new instance could not be made ready: instantiated and `init`
/// run with its settings.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The component implements the other world.
    #[error("is a {world} component, not a {wanted} (it must export {export})")]
    WrongWorld {
        /// The world it implements.
        world: &'static str,
        /// The world the pool needs.
        wanted: &'static str,
        /// The interface that world exports.
        export: &'static str,
    },
    /// Instantiating or `init` trapped or overran.
    #[error(transparent)]
    Call(Box<CallError>),
    /// `init` answered with an error: the plugin's own message.
    #[error("plugin refused its settings: {0}")]
    Refused(String),
}

impl InitError {
    /// The init error for a wasmtime error from `function` (`instantiate`
    /// or `init`) under the init deadline `deadline`.
    pub(super) fn wasm(
        function: &'static str,
        deadline: Duration,
    ) -> impl FnOnce(wasmtime::Error) -> InitError {
        move |e| InitError::Call(Box::new(CallError::wasm(e, function, deadline)))
    }
}

/// A plugin that could not be loaded or initialised.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The runtime itself could not be set up.
    #[error("plugin runtime: {what}")]
    Runtime {
        /// What weir was doing.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// The plugin file could not be read.
    #[error("plugin {name} ({path}): cannot read")]
    Read {
        /// Plugin name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a component weir can run (not wasm, a core module,
    /// wrong world, missing export, an import weir does not provide).
    #[error("plugin {name} ({path}): {reason}")]
    Invalid {
        /// Plugin name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong, in weir's words.
        reason: String,
        /// wasmtime's explanation, when it has one.
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    },
    /// The plugin's `init` refused its settings, or trapped.
    #[error("plugin {name} for {owner}: init failed")]
    Init {
        /// Plugin name.
        name: String,
        /// Whose settings were given: `upstream NAME` or `route N`.
        owner: String,
        /// The plugin's message, or the trap.
        #[source]
        source: InitError,
    },
}

impl PluginError {
    /// A runtime error: `what` weir was doing failed because of `source`.
    pub fn runtime(
        what: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        PluginError::Runtime {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Both reasons a component is neither world weir runs.
#[derive(Debug, thiserror::Error)]
#[error(
    "as a balancer: {}; as a filter: {}",
    crate::error::chain(.balancer),
    crate::error::chain(.filter)
)]
pub(super) struct NeitherWorld {
    pub(super) balancer: WasmError,
    pub(super) filter: WasmError,
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
