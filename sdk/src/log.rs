//! Logging into weir's own log.
//!
//! Lines carry the plugin's name and the upstream it serves, and go through
//! weir's log filter like any other. Each call is one host call, made whether
//! or not the filter keeps the line, so avoid logging per request above
//! `debug`. Only works inside weir: natively these functions panic.
//!
//! weir keeps each message to 4 KiB (cutting the rest and saying how much),
//! escapes control characters so a message stays one line, and writes at
//! most `plugins.log_lines_per_second` lines per second (100 by default) for
//! all instances of a plugin together, dropping and counting the rest. The
//! panic messages the SDK logs for you go through the same limits.

use crate::wit::weir::plugin::log::{Level, log};

/// Logs `message` at trace level: very detailed, off unless asked for.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs `message` at debug level: diagnostics for plugin development.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs `message` at info level: normal operational messages.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs `message` at warn level: something unexpected the plugin handled.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs `message` at error level: something the plugin could not handle.
pub fn error(message: &str) {
    log(Level::Error, message);
}
