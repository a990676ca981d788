//! `[access_log]`: one line per request.

use std::path::PathBuf;

use serde::Deserialize;

/// The access log: one line per request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Write it at all.
    pub enabled: bool,
    /// `json` (one object per line) or `text`.
    pub format: AccessLogFormat,
    /// File to append to, relative to the config file; `-` is stdout.
    pub path: PathBuf,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: AccessLogFormat::Json,
            path: PathBuf::from("-"),
        }
    }
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, for reading by eye.
    Text,
}
