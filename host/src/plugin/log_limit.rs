//! Bounds on what a plugin may put in weir's log through the `log` import
//! (the SDK's panic hook included, which calls the same import).
//!
//! What the host guarantees for every plugin line:
//! - it is at most [`MAX_MESSAGE_BYTES`] long, plus a short `[N bytes cut]`
//!   note saying how much was dropped from its end;
//! - it is one line that cannot pass for weir's own: control characters
//!   (newlines, carriage returns, ANSI escapes, all of C0, DEL and C1) and the
//!   Unicode line separators and bidirectional overrides are written as
//!   `\n`, `\r`, `\t` or `\u{..}`;
//! - each plugin name, across all its instances and versions, writes at most
//!   its configured rate ([`DEFAULT_LINES_PER_SECOND`] by default) with a
//!   burst of [`BURST_SECONDS`] seconds' worth; lines over it are dropped,
//!   counted (`weir_plugin_log_dropped_total`), and reported by weir itself
//!   at most every [`REPORT_EVERY`].
//!
//! The limiter is a GCRA token bucket in one atomic, so admitting a line
//! takes no lock; time is a parameter so the tests can drive it.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::config::{DEFAULT_LINES_PER_SECOND, MAX_LINES_PER_SECOND};

/// The longest plugin log message kept, in bytes (of the escaped text).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// The burst a plugin may write at once, in seconds of its rate: a plugin
/// that has been quiet may write this many seconds' worth of lines at once.
pub const BURST_SECONDS: u32 = 2;

/// Most often weir logs that a plugin's lines are being dropped.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// `last_report` before the first report.
const NEVER: u64 = u64::MAX;

/// The rate limit on one plugin's log lines, shared by all its instances.
#[derive(Debug)]
pub struct LogLimiter {
    /// Lines per second.
    rate: u32,
    /// Time zero for the nanosecond counts below.
    origin: Instant,
    /// Nanoseconds one line costs: a second over the rate.
    interval: u64,
    /// How far ahead of now the bucket may be booked: the burst, less one
    /// line, in nanoseconds.
    tolerance: u64,
    /// GCRA's theoretical arrival time of the next line, in nanoseconds
    /// since `origin`.
    booked_until: AtomicU64,
    /// Lines dropped since the limiter was made.
    dropped: AtomicU64,
    /// Lines dropped since weir last reported them.
    unreported: AtomicU64,
    /// When weir last reported dropped lines ([`NEVER`]: not yet).
    last_report: AtomicU64,
}

/// Whether to write a line, and whether weir should say that lines were
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Write the line: it is within the rate.
    pub write: bool,
    /// Lines were dropped and it is time to say so.
    pub report: Option<DropReport>,
}

/// Dropped lines weir should report now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropReport {
    /// Dropped since the last report.
    pub dropped: u64,
    /// Dropped since the limiter was made.
    pub total: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(DEFAULT_LINES_PER_SECOND, Instant::now())
    }
}

impl LogLimiter {
    /// A limiter for `lines_per_second` (within 1..=[`MAX_LINES_PER_SECOND`]),
    /// with a full burst available at `now`.
    pub fn new(lines_per_second: u32, now: Instant) -> Self {
        let rate = lines_per_second.clamp(1, MAX_LINES_PER_SECOND);
        let interval = 1_000_000_000 / u64::from(rate);
        let burst = u64::from(rate) * u64::from(BURST_SECONDS);
        LogLimiter {
            rate,
            origin: now,
            interval,
            tolerance: interval * (burst - 1),
            booked_until: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            last_report: AtomicU64::new(NEVER),
        }
    }

    /// Lines per second allowed.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Lines allowed back to back after a quiet spell.
    pub fn burst(&self) -> u64 {
        self.tolerance / self.interval + 1
    }

    /// Lines dropped since the limiter was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Decides about one line offered at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let now = self.nanos(now);
        let write = self.take(now);
        if !write {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.unreported.fetch_add(1, Ordering::Relaxed);
        }
        Admission {
            write,
            report: self.report_due(now),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Books one line at `now` if the bucket allows it.
    fn take(&self, now: u64) -> bool {
        let mut booked = self.booked_until.load(Ordering::Relaxed);
        loop {
            if booked > now.saturating_add(self.tolerance) {
                return false;
            }
            let next = booked.max(now).saturating_add(self.interval);
            match self.booked_until.compare_exchange_weak(
                booked,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => booked = current,
            }
        }
    }

    /// The drops to report, if there are some and the last report is at
    /// least [`REPORT_EVERY`] old; one caller wins each report.
    fn report_due(&self, now: u64) -> Option<DropReport> {
        if self.unreported.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let last = self.last_report.load(Ordering::Relaxed);
        let every = u64::try_from(REPORT_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if last != NEVER && now.saturating_sub(last) < every {
            return None;
        }
        self.last_report
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        (dropped > 0).then(|| DropReport {
            dropped,
            total: self.dropped(),
        })
    }
}

/// `message` made safe for weir's log: at most [`MAX_MESSAGE_BYTES`] of
/// escaped text (cut on a character boundary), control characters escaped,
/// and a note saying how many bytes of the original were cut. Borrows when
/// there is nothing to change.
pub fn bound_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES && !message.chars().any(needs_escape) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES) + 32);
    let mut kept = message.len();
    let mut escaped = String::new();
    for (at, c) in message.char_indices() {
        let piece = if needs_escape(c) {
            escaped.clear();
            match c {
                '\n' => escaped.push_str("\\n"),
                '\r' => escaped.push_str("\\r"),
                '\t' => escaped.push_str("\\t"),
                _ => {
                    let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
                }
            }
            escaped.as_str()
        } else {
            &message[at..at + c.len_utf8()]
        };
        if out.len() + piece.len() > MAX_MESSAGE_BYTES {
            kept = at;
            break;
        }
        out.push_str(piece);
    }
    if kept < message.len() {
        let _ = write!(out, "… [{} bytes cut]", message.len() - kept);
    }
    Cow::Owned(out)
}

/// Characters a plugin could use to forge or hide log lines.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let limiter = LogLimiter::new(100, start);
        assert_eq!(limiter.burst(), 200);
        let written = (0..1000).filter(|_| limiter.admit(start).write).count();
        assert_eq!(written, 200, "the burst, then nothing at the same instant");
        assert_eq!(limiter.dropped(), 800);
        // One line per 10 ms after that.
        let later = start + Duration::from_millis(10);
        assert!(limiter.admit(later).write);
        assert!(!limiter.admit(later).write);
        let second = start + Duration::from_millis(1010);
        let written = (0..1000).filter(|_| limiter.admit(second).write).count();
        assert_eq!(written, 100, "a second's worth");
    }

    #[test]
    fn quiet_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let limiter = LogLimiter::new(10, start);
        let hour = start + Duration::from_secs(3600);
        let written = (0..1000).filter(|_| limiter.admit(hour).write).count();
        assert_eq!(written, 20);
    }

    #[test]
    fn drops_are_reported_at_once_then_at_most_every_few_seconds() {
        let start = Instant::now();
        let limiter = LogLimiter::new(1, start);
        assert_eq!(limiter.admit(start).report, None);
        assert_eq!(limiter.admit(start).report, None);
        let first = limiter.admit(start);
        assert!(!first.write);
        assert_eq!(
            first.report,
            Some(DropReport {
                dropped: 1,
                total: 1
            }),
            "the first drop is reported at once"
        );
        for _ in 0..5 {
            assert_eq!(limiter.admit(start + Duration::from_secs(1)).report, None);
        }
        // The next line after REPORT_EVERY reports what piled up, whether or
        // not it is itself written.
        let due = limiter.admit(start + REPORT_EVERY);
        assert!(due.write);
        assert_eq!(
            due.report,
            Some(DropReport {
                dropped: 4,
                total: 5
            })
        );
        assert_eq!(
            limiter.admit(start + REPORT_EVERY * 3).report,
            None,
            "nothing dropped since: nothing to report"
        );
    }

    #[test]
    fn time_before_the_origin_counts_as_the_origin() {
        let start = Instant::now() + Duration::from_secs(60);
        let limiter = LogLimiter::new(1, start);
        assert!(limiter.admit(Instant::now()).write);
    }

    #[test]
    fn short_clean_messages_are_borrowed() {
        assert!(matches!(bound_message("hello é"), Cow::Borrowed("hello é")));
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let forged = "ok\n2026-12-01T00:00:00Z  INFO weir: fake\r\x1b[31mred\x1b[0m\t\u{2028}\u{202e}x\u{7f}\u{85}";
        let out = bound_message(forged);
        assert_eq!(
            out,
            "ok\\n2026-12-01T00:00:00Z  INFO weir: fake\\r\\u{1b}[31mred\\u{1b}[0m\\t\\u{2028}\\u{202e}x\\u{7f}\\u{85}"
        );
        assert!(!out.chars().any(needs_escape));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary_and_say_so() {
        // 3-byte characters: 4096 is not a multiple of 3.
        let long = "€".repeat(10_000);
        let out = bound_message(&long);
        let (kept, note) = out.split_once('…').unwrap();
        assert_eq!(kept.len(), MAX_MESSAGE_BYTES / 3 * 3);
        assert!(kept.chars().all(|c| c == '€'));
        assert_eq!(note, format!(" [{} bytes cut]", long.len() - kept.len()));
    }

    #[test]
    fn escapes_count_toward_the_cap() {
        let long = "\x1b".repeat(MAX_MESSAGE_BYTES);
        let out = bound_message(&long);
        let (kept, note) = out.split_once('…').unwrap();
        assert!(kept.len() <= MAX_MESSAGE_BYTES, "{}", kept.len());
        let kept_chars = kept.len() / "\\u{1b}".len();
        assert_eq!(
            note,
            format!(" [{} bytes cut]", MAX_MESSAGE_BYTES - kept_chars)
        );
    }

    #[test]
    fn exactly_the_cap_is_kept_whole() {
        let exact = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(bound_message(&exact), exact);
        let over = "a".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(bound_message(&over).ends_with("… [1 bytes cut]"));
    }
}
