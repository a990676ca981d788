//! What weir refused of a plugin's host calls that it could ignore without
//! failing the call (a response header past the limit or invalid, a bad
//! counter name): counted per plugin for `/metrics` and logged, the first
//! time and then every power of two, so a plugin doing it on every call
//! cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};

/// What was refused and ignored (the call goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A `response-headers.add` that was invalid or past the limit.
    ResponseHeader,
    /// A `metrics.increment` with a bad name, or past the counter limit.
    MetricName,
}

impl Ignored {
    const ALL: [Ignored; 2] = [Ignored::ResponseHeader, Ignored::MetricName];

    /// The `what` label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::ResponseHeader => "response_header",
            Ignored::MetricName => "metric_name",
        }
    }
}

/// Refusals of one plugin, by kind.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 2],
}

impl Refusals {
    /// Counts a refusal of `plugin` serving `owner` and logs `why` the
    /// first time and every power of two.
    pub fn refuse(&self, what: Ignored, plugin: &str, owner: &str, why: &str) {
        let n = self.counts[what as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(plugin, owner, refusals = n, what = what.as_str(), "{why}");
        }
    }

    /// Each kind and its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Ignored::ALL
            .iter()
            .map(|&what| {
                (
                    what.as_str(),
                    self.counts[what as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_counts_apart() {
        let r = Refusals::default();
        r.refuse(Ignored::MetricName, "p", "o", "bad");
        r.refuse(Ignored::MetricName, "p", "o", "bad");
        r.refuse(Ignored::ResponseHeader, "p", "o", "bad");
        assert_eq!(
            r.snapshot(),
            vec![("response_header", 1), ("metric_name", 2)]
        );
    }
}
