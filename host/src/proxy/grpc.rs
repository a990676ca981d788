//! gRPC requests: told apart by their `content-type`, answered by weir
//! itself as gRPC clients expect (HTTP 200, trailers-only, `grpc-status`
//! and `grpc-message`, as Envoy does), and given a deadline from their
//! `grpc-timeout` header.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use tokio::time::Instant;

use super::ProxyBody;
use super::body::full;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Longest `grpc-message` weir sends, in bytes before encoding (a filter's
/// body is cut there).
const MAX_MESSAGE: usize = 1024;

/// The gRPC status codes, by number (`grpc/doc/statuscodes.md`).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// weir's own gRPC answers, by `grpc-status`.
static ANSWERS: [AtomicU64; CODE_NAMES.len()] = [const { AtomicU64::new(0) }; CODE_NAMES.len()];
/// `grpc-timeout` values ignored as malformed.
static BAD_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Each gRPC status name with how many of weir's own gRPC answers carried
/// it, for `/metrics` (`weir_grpc_answers_total{code}`).
pub fn answers_by_code() -> Vec<(&'static str, u64)> {
    CODE_NAMES
        .iter()
        .zip(&ANSWERS)
        .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
        .collect()
}

/// How many `grpc-timeout` headers were ignored as malformed
/// (`weir_grpc_timeout_malformed_total`).
pub fn malformed_timeouts() -> u64 {
    BAD_TIMEOUTS.load(Ordering::Relaxed)
}

/// Whether `headers` are a gRPC request's: `content-type` is
/// `application/grpc`, or `application/grpc+proto` and the like.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    let prefix = b"application/grpc";
    value.len() >= prefix.len()
        && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(value.get(prefix.len()), None | Some(b'+' | b';'))
}

/// A gRPC call in flight: when the client gives up on it, if it said.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrpcCall {
    /// Arrival plus the client's `grpc-timeout`.
    pub(crate) deadline: Option<Instant>,
}

impl GrpcCall {
    /// The call `parts` start, arrived `now`; none if it is not gRPC. A
    /// malformed `grpc-timeout` is ignored (as Envoy does), counted and
    /// logged at the first and every power of two.
    pub(crate) fn of(parts: &Parts, now: Instant) -> Option<GrpcCall> {
        if !is_grpc(&parts.headers) {
            return None;
        }
        let deadline = parts.headers.get(GRPC_TIMEOUT).and_then(|value| {
            let parsed = parse_timeout(value.as_bytes());
            if parsed.is_none() {
                let count = BAD_TIMEOUTS.fetch_add(1, Ordering::Relaxed) + 1;
                if count.is_power_of_two() {
                    tracing::info!(
                        value = ?value,
                        count,
                        "a malformed grpc-timeout was ignored (want 1 to 8 digits and a unit of H M S m u n)"
                    );
                }
            }
            now.checked_add(parsed?)
        });
        Some(GrpcCall { deadline })
    }

    /// Readies the head of one attempt: `grpc-timeout` reduced to what is
    /// left of the deadline at `now`, which the forward phase enforces (it
    /// finds the [`Deadline`] in the extensions). (`te: trailers` is the
    /// prepare phase's, for HTTP/2 backends.)
    pub(crate) fn stamp(&self, parts: &mut Parts, now: Instant) {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(now);
            parts.headers.insert(GRPC_TIMEOUT, encode_timeout(left));
            parts.extensions.insert(Deadline(deadline));
        }
    }
}

/// The client's deadline for a gRPC attempt, carried in the request's
/// extensions to the forward phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(pub(crate) Instant);

/// The time an attempt may wait for its response head: the upstream's
/// `request_timeout`, or what is left of the client's `deadline` when that
/// is sooner (then `true`: expiry is the client's deadline, not the
/// backend's slowness).
pub(crate) fn attempt_timeout(
    request_timeout: Duration,
    deadline: Option<Deadline>,
) -> (Duration, bool) {
    match deadline {
        Some(Deadline(at)) => {
            let left = at.saturating_duration_since(Instant::now());
            if left < request_timeout {
                (left, true)
            } else {
                (request_timeout, false)
            }
        }
        None => (request_timeout, false),
    }
}

/// A `grpc-timeout` value: 1 to 8 ASCII digits, then a unit: `H`ours,
/// `M`inutes, `S`econds, `m`illi-, `u`micro-, `n`anoseconds.
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value: the finest unit whose count fits in
/// 8 digits, rounded up (so the backend never sees less time than is left),
/// at most `99999999H`.
pub(crate) fn encode_timeout(left: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = left.as_nanos();
    let value = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .iter()
    .find_map(|&(per, unit)| {
        let count = nanos.div_ceil(per);
        (count <= MAX).then(|| format!("{count}{unit}"))
    })
    .unwrap_or_else(|| format!("{MAX}H"));
    HeaderValue::from_str(&value).expect("digits and a letter")
}

/// The gRPC status for an HTTP status weir meant to answer with: Envoy's
/// and grpc-gateway's mapping (README, "gRPC").
pub(crate) fn code_of(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        408 | 504 => 4,        // DEADLINE_EXCEEDED
        413 | 429 | 431 => 8,  // RESOURCE_EXHAUSTED
        500 | 502 | 503 => 14, // UNAVAILABLE
        200..=299 => 0,        // OK
        _ => 2,                // UNKNOWN
    }
}

/// A trailers-only gRPC answer: HTTP 200, `content-type:
/// application/grpc`, `grpc-status` and the percent-encoded
/// `grpc-message` in the headers, and the stream ended with them. Counted
/// by code.
pub(crate) fn answer(code: u8, message: &str) -> Response<ProxyBody> {
    if let Some(count) = ANSWERS.get(usize::from(code)) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code)));
    if !message.is_empty() {
        headers.insert(GRPC_MESSAGE, encode_message(message));
    }
    response
}

/// A filter's own answer to a gRPC request, as gRPC: its status mapped
/// like weir's own, its body (cut to 1 KiB) the message, its other headers
/// kept.
pub(crate) fn from_filter(
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: &[u8],
) -> Response<ProxyBody> {
    let cut = &body[..body.len().min(MAX_MESSAGE)];
    let text = String::from_utf8_lossy(cut);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("")
    } else {
        text.trim()
    };
    let mut response = answer(code_of(status), message);
    let ours = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        GRPC_STATUS,
        GRPC_MESSAGE,
    ];
    for (name, value) in headers {
        if !ours.contains(&name) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// `message` percent-encoded as `grpc-message` wants: every byte outside
/// printable ASCII, and `%` itself, as `%XX`.
fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for &byte in message.as_bytes().iter().take(MAX_MESSAGE) {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&out).expect("printable ASCII")
}

#[cfg(test)]
mod tests;
