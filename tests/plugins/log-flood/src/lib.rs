//! Test plugin: a balancer that floods weir's log. Every `select` logs
//! [`LINES_PER_CALL`] messages of [`MESSAGE_BYTES`] each, alternating `warn`
//! and `error`, each starting with a forged log line (a newline, a fake weir
//! line, ANSI escapes), then picks the first eligible backend. With settings
//! `{ mode = "panic" }` it panics instead, with a message as large, which the
//! SDK's hook sends through the same `log` import.

use weir_sdk::{BackendId, Backends, Balancer, Request};

/// Messages logged per `select`.
pub const LINES_PER_CALL: usize = 10;
/// Bytes in each message: 2 MiB.
pub const MESSAGE_BYTES: usize = 2 << 20;
/// What each message starts with: an attempt to forge a line of weir's own.
pub const FORGED: &str = "flood\n2026-12-01T00:00:00.000000Z  INFO weir: forged line \x1b[31m";

struct LogFlood {
    message: String,
    panic: bool,
}

/// The flood message: [`FORGED`] padded with `x` to [`MESSAGE_BYTES`].
pub fn message() -> String {
    let mut message = String::with_capacity(MESSAGE_BYTES);
    message.push_str(FORGED);
    message.extend(std::iter::repeat_n('x', MESSAGE_BYTES - FORGED.len()));
    message
}

impl Balancer for LogFlood {
    fn init(config: &str) -> Result<Self, String> {
        let panic = match config.replace(' ', "").as_str() {
            "" | "{}" => false,
            r#"{"mode":"panic"}"# => true,
            other => return Err(format!("log-flood: unknown settings {other}")),
        };
        Ok(Self {
            message: message(),
            panic,
        })
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        if self.panic {
            panic!("log-flood: {}", self.message);
        }
        for i in 0..LINES_PER_CALL {
            if i % 2 == 0 {
                weir_sdk::log::warn(&self.message);
            } else {
                weir_sdk::log::error(&self.message);
            }
        }
        backends.eligible().first().map(|backend| backend.id)
    }
}

weir_sdk::export_balancer!(LogFlood);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_as_large_as_promised_and_starts_forged() {
        let message = message();
        assert_eq!(message.len(), MESSAGE_BYTES);
        assert!(message.starts_with(FORGED));
    }

    #[test]
    fn settings_choose_the_mode() {
        assert!(!LogFlood::init("{}").unwrap().panic);
        assert!(LogFlood::init(r#"{"mode": "panic"}"#).unwrap().panic);
        assert!(LogFlood::init(r#"{"mode":"other"}"#).is_err());
    }
}
