//! Why a client connection was closed on the client's account, read from
//! the error it ended with, and the rate limit on the log lines a client
//! can cause.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::proxy::Refusal;

/// Most often a refusal a client can drive is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The refusal a connection's ending error stands for, if it is one: a
/// head over the limit (hyper answered 431), or an HTTP/2 connection error
/// weir raised (h2 sent GOAWAY): `ENHANCE_YOUR_CALM` for the floods h2
/// detects (streams reset before they were accepted, too many streams weir
/// had to reset, empty frames, CONTINUATION floods), anything else a
/// protocol error.
pub(crate) fn refusal_of(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let chain = std::iter::successors(Some(error), |e| e.source());
    for cause in chain {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && hyper.is_parse_too_large()
        {
            return Some(Refusal::HeadTooLarge);
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            if !h2.is_go_away() || !h2.is_library() {
                return None;
            }
            return Some(match h2.reason() {
                Some(h2::Reason::ENHANCE_YOUR_CALM) => Refusal::H2Flood,
                _ => Refusal::H2ProtocolError,
            });
        }
    }
    None
}

/// Lets one log line through every [`LOG_EVERY`], and counts those held
/// back meanwhile.
#[derive(Debug, Default)]
pub(crate) struct EveryFewSeconds {
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl EveryFewSeconds {
    /// `Some(lines held back since the last one)` when a line may be
    /// logged now.
    pub(crate) fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_every_few_seconds_with_the_count_held_back() {
        let limit = EveryFewSeconds::default();
        let start = Instant::now();
        assert_eq!(limit.due_at(start), Some(0));
        assert_eq!(limit.due_at(start + Duration::from_secs(1)), None);
        assert_eq!(limit.due_at(start + Duration::from_secs(2)), None);
        assert_eq!(limit.due_at(start + LOG_EVERY), Some(2));
        assert_eq!(limit.due_at(start + LOG_EVERY), None);
    }

    #[test]
    fn only_weirs_own_http2_errors_are_refusals() {
        let io = std::io::Error::other("reset by peer");
        assert_eq!(refusal_of(&io), None);
        let calm = h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM);
        // A reason alone (not a GOAWAY weir sent) is not counted.
        assert_eq!(refusal_of(&calm), None);
    }
}
