//! Containing host-side panics raised on a plugin's behalf.
//!
//! Plugin calls run synchronously on the proxy's tokio worker threads, where
//! they cost a few hundred nanoseconds. WASI's blocking functions (a write
//! to stdout or stderr, a poll) are implemented by wasmtime-wasi on top of
//! tokio and panic when called from a tokio worker. A plugin must never be
//! able to turn that into a crashed connection, so every call into a plugin
//! goes through [`contain`]: a panic becomes an ordinary call failure, the
//! instance is discarded, and the panic is not printed as if weir had
//! crashed (the failure is logged under the plugin's name instead).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static IN_PLUGIN_CALL: Cell<bool> = const { Cell::new(false) };
}

static INSTALL_HOOK: Once = Once::new();

/// Wraps the process panic hook so panics inside [`contain`] are not
/// printed; every other panic is reported as before.
pub(crate) fn install_panic_hook() {
    INSTALL_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_PLUGIN_CALL.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `call`, turning a panic inside it into an error that says what the
/// plugin did.
pub(crate) fn contain<R>(call: impl FnOnce() -> wasmtime::Result<R>) -> wasmtime::Result<R> {
    let was = IN_PLUGIN_CALL.with(|flag| flag.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(call));
    IN_PLUGIN_CALL.with(|flag| flag.set(was));
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if message.contains("runtime from within a runtime") {
            Err(wasmtime::format_err!(
                "the plugin used blocking WASI I/O (stdout, stderr or poll), which weir does not support; log through weir:plugin/log instead"
            ))
        } else {
            Err(wasmtime::format_err!(
                "a host function panicked during the call: {message}"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_and_ok_passes_through() {
        install_panic_hook();
        assert_eq!(contain(|| Ok(7)).unwrap(), 7);
        let err = contain::<()>(|| panic!("boom")).unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");
        assert!(!IN_PLUGIN_CALL.with(Cell::get));
    }
}
