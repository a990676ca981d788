//! Rendering an error with its causes for a log line or an API answer.
//!
//! weir's error enums follow one rule: a variant's own message says what
//! went wrong at its level, and the error it is about (wasmtime's, an I/O
//! error, a parse error) is its [`source`](std::error::Error::source), never
//! also pasted into the message. So `{error}` alone says too little: every
//! place that shows an error to a person renders it with [`chain`], which
//! walks the sources.

use std::error::Error;
use std::fmt;

/// `error` and each of its sources, joined by `": "`, on one line:
/// `plugin p for upstream web: init failed: select trapped: wasm trap: ...`.
///
/// A source whose text the message so far already ends with is skipped
/// (an error that both shows and returns its source is not repeated), and
/// a message over several lines keeps only its first, so a log line stays
/// one line.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// The [`Display`](fmt::Display) form of an error and its sources; see
/// [`chain`].
#[derive(Clone, Copy)]
pub struct Chain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = String::new();
        for (i, link) in sources(self.0).enumerate() {
            let text = link.to_string();
            let text = text.lines().next().unwrap_or_default().trim_end();
            if text.is_empty() || written.ends_with(text) {
                continue;
            }
            if i > 0 && !written.is_empty() {
                written.push_str(": ");
            }
            written.push_str(text);
        }
        f.write_str(&written)
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `error`, then its source, then that one's, and so on.
pub fn sources<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// The first error of `error`'s chain (itself included) that is an `E`.
pub fn find<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    sources(error).find_map(|e| e.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    fn sample() -> Outer {
        Outer(Middle(std::io::Error::other("disk on fire")))
    }

    #[test]
    fn the_chain_is_joined_on_one_line_without_repeats() {
        // `Middle` shows its source and returns it: said once.
        assert_eq!(chain(&sample()).to_string(), "outer: middle: disk on fire");
        let multi = std::io::Error::other("first line\n  0: a backtrace frame");
        assert_eq!(chain(&Middle(multi)).to_string(), "middle: first line");
    }

    #[test]
    fn find_walks_to_the_underlying_error() {
        let error = sample();
        let io = find::<std::io::Error>(&error).expect("reached");
        assert_eq!(io.to_string(), "disk on fire");
        assert_eq!(sources(&error).count(), 3);
        assert!(find::<std::fmt::Error>(&error).is_none());
    }
}
