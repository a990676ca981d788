//! Fixtures for the configuration's unit tests: a good file, and an
//! assertion that an error points at the exact line and column of a value.

use std::path::Path;

use super::{Config, ConfigError};

/// A small configuration that passes every check.
pub(super) const GOOD: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
[upstreams.web.balancer]
plugin = "round-robin"
settings = { answer = 42 }

[[upstreams.web.backends]]
address = "127.0.0.1:9001"
weight = 2
"#;

/// Parses `text` as `weir.toml`.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("weir.toml"), text)
}

/// [`GOOD`] with `section` (a table header and its lines) appended.
pub(super) fn good_with(section: &str) -> String {
    format!("{GOOD}\n{section}\n")
}

/// 1-based line and column where `marker` first occurs in `text`; for a
/// `key = value` marker, where its value starts.
pub(super) fn position_of(text: &str, marker: &str) -> (usize, usize) {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} is not in the text"));
    let offset = start + marker.find("= ").map_or(0, |eq| eq + 2);
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (line, column)
}

/// Asserts that `text` is refused at `marker` (see [`position_of`]) with a
/// message containing each of `words`; returns the error.
#[track_caller]
pub(super) fn assert_refused_at(text: &str, marker: &str, words: &[&str]) -> String {
    let err = parse(text)
        .expect_err("the config was accepted")
        .to_string();
    let (line, column) = position_of(text, marker);
    let at = format!("weir.toml:{line}:{column}: ");
    assert!(
        err.starts_with(&at),
        "expected {at}… for {marker:?}, got: {err}"
    );
    for word in words {
        assert!(err.contains(word), "expected {word:?} in: {err}");
    }
    err
}
