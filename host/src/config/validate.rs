//! Checking a parsed configuration, each error at its value's line.
//!
//! Each section's module checks its own values through a [`Checker`], naming
//! the value by its [`Place`] in the document; this module runs them in
//! order, so the first mistake in the file's sections is the one reported.

use std::ops::RangeInclusive;

use super::spans::{Key, span_of};
use super::{Config, ConfigError};

/// A path of keys from the document's root to a value, such as
/// `upstreams.web.health_check.interval_ms`.
#[derive(Debug, Clone, Default)]
pub(super) struct Place<'a>(Vec<Key<'a>>);

impl<'a> Place<'a> {
    /// The path `keys`, all table keys.
    pub(super) fn of(keys: &[&'a str]) -> Self {
        Place(keys.iter().map(|k| Key::Name(k)).collect())
    }

    /// This path, then table key `name`.
    pub(super) fn key(&self, name: &'a str) -> Self {
        let mut next = self.clone();
        next.0.push(Key::Name(name));
        next
    }

    /// This path, then array element `index`.
    pub(super) fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Key::Index(index));
        next
    }
}

/// A configuration being checked.
pub(super) struct Checker<'c> {
    /// The configuration, with its source text.
    pub(super) config: &'c Config,
}

impl Checker<'_> {
    /// An error at the value at `at` (or its table's header when the key is
    /// absent). The document is parsed again only here, on the error path.
    pub(super) fn fail(&self, at: &Place<'_>, message: impl Into<String>) -> ConfigError {
        let span = span_of(&self.config.source.text, &at.0);
        self.config.error(span, message)
    }

    /// Fails at `at` with `message` unless `ok`.
    pub(super) fn ensure(
        &self,
        ok: bool,
        at: &Place<'_>,
        message: impl FnOnce() -> String,
    ) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(at, message()))
        }
    }

    /// `{what} must be at least {min}` / `... at most {max}{note}` at `at`
    /// unless `value` is within `range`; `note` says what the maximum is in
    /// words (` (1 hour)`), or is empty.
    pub(super) fn bounded(
        &self,
        value: u64,
        range: RangeInclusive<u64>,
        at: &Place<'_>,
        what: &str,
        note: &str,
    ) -> Result<(), ConfigError> {
        if value < *range.start() {
            return Err(self.fail(at, format!("{what} must be at least {}", range.start())));
        }
        if value > *range.end() {
            let max = range.end();
            return Err(self.fail(at, format!("{what} must be at most {max}{note}")));
        }
        Ok(())
    }

    /// `{what} must be within {range}` at `at` unless `value` is in it.
    pub(super) fn within(
        &self,
        value: u64,
        range: RangeInclusive<u64>,
        at: &Place<'_>,
        what: &str,
    ) -> Result<(), ConfigError> {
        self.ensure(range.contains(&value), at, || {
            format!("{what} must be within {}..={}", range.start(), range.end())
        })
    }
}

impl Config {
    /// Checks every section, in the file's usual order.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let check = Checker { config: self };
        check.listeners(&self.listeners)?;
        check.plugins(&self.plugins)?;
        for (index, route) in self.routes.iter().enumerate() {
            check.route(&Place::of(&["routes"]).index(index), route)?;
        }
        for (name, upstream) in &self.upstreams {
            check.upstream(name, upstream)?;
        }
        if let Some(admin) = &self.admin {
            check.admin(admin)?;
        }
        Ok(())
    }
}
