//! `[runtime]`: the threads that serve client connections, and how they
//! share the work.

use std::num::NonZeroUsize;

use serde::{Deserialize, Deserializer};

/// The most worker threads weir will run.
pub const MAX_WORKERS: usize = 256;

/// The threads that serve client connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// How many worker threads serve the listeners.
    pub workers: Workers,
    /// How the workers share the connections.
    pub scheduler: Scheduler,
}

impl RuntimeConfig {
    /// The scheduler weir runs: the configured one, except that a shared
    /// pool of one worker runs as that one worker's own scheduler. With one
    /// worker there is no other to take its tasks, so nothing of `shared`
    /// is lost, and a single-threaded scheduler costs less per request
    /// (BENCHMARKS.md section 20: 6-13% less CPU per request, paired).
    pub fn effective_scheduler(&self) -> Scheduler {
        match (self.scheduler, self.workers.resolve()) {
            (Scheduler::Shared, 1) => Scheduler::PerWorker,
            (scheduler, _) => scheduler,
        }
    }
}

/// How the worker threads share the connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// One work-stealing pool: an idle worker takes tasks from a busy one,
    /// so a plugin call that runs to its deadline delays only its own
    /// request. With one worker it runs as [`Scheduler::PerWorker`]
    /// ([`RuntimeConfig::effective_scheduler`]).
    #[default]
    Shared,
    /// Each worker its own single-threaded scheduler and its own copy of
    /// every listener (`SO_REUSEPORT`): less CPU per request, but a plugin
    /// call that runs long holds up the other connections of its worker.
    PerWorker,
}

/// How many workers: one per CPU weir may run on, or a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU in weir's affinity mask (`taskset`, cgroup cpusets).
    #[default]
    Auto,
    /// This many, 1 to [`MAX_WORKERS`].
    Count(NonZeroUsize),
}

impl Workers {
    /// The number of workers to run.
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n.get(),
            Workers::Auto => std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(MAX_WORKERS),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Name(String),
        }
        let wrong = || {
            serde::de::Error::custom(format!(
                "workers must be \"auto\" or a number from 1 to {MAX_WORKERS}"
            ))
        };
        match Raw::deserialize(deserializer).map_err(|_: D::Error| wrong())? {
            Raw::Name(name) if name == "auto" => Ok(Workers::Auto),
            Raw::Name(_) => Err(wrong()),
            Raw::Count(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_WORKERS)
                .and_then(NonZeroUsize::new)
                .map(Workers::Count)
                .ok_or_else(wrong),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn auto_is_the_default_and_counts_the_cpus_weir_may_use() {
        assert_eq!(parse("").unwrap().workers, Workers::Auto);
        assert_eq!(parse("workers = \"auto\"").unwrap().workers, Workers::Auto);
        assert!(Workers::Auto.resolve() >= 1);
    }

    #[test]
    fn one_shared_worker_runs_as_its_own_scheduler() {
        let one = parse("workers = 1").unwrap();
        assert_eq!(one.scheduler, Scheduler::Shared);
        assert_eq!(one.effective_scheduler(), Scheduler::PerWorker);
        let two = parse("workers = 2").unwrap();
        assert_eq!(two.effective_scheduler(), Scheduler::Shared);
        let per = parse("workers = 2\nscheduler = \"per-worker\"").unwrap();
        assert_eq!(per.effective_scheduler(), Scheduler::PerWorker);
    }

    #[test]
    fn the_scheduler_is_shared_unless_asked() {
        assert_eq!(parse("").unwrap().scheduler, Scheduler::Shared);
        let per = parse("scheduler = \"per-worker\"").unwrap();
        assert_eq!(per.scheduler, Scheduler::PerWorker);
        assert!(parse("scheduler = \"stealing\"").is_err());
    }

    #[test]
    fn a_count_from_one_to_the_maximum() {
        let four = parse("workers = 4").unwrap().workers;
        assert_eq!(four.resolve(), 4);
        assert_eq!(parse("workers = 256").unwrap().workers.resolve(), 256);
    }

    #[test]
    fn anything_else_is_refused_with_what_is_allowed() {
        for bad in [
            "workers = 0",
            "workers = -1",
            "workers = 257",
            "workers = \"many\"",
            "workers = 1.5",
            "workers = true",
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(
                error.contains("workers must be \"auto\" or a number from 1 to 256"),
                "{bad}: {error}"
            );
        }
    }
}
