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
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        for (name, value) in headers {
            parts.headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        parts
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&head(&[("content-type", yes)]).headers), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "application/json",
        ] {
            assert!(!is_grpc(&head(&[("content-type", no)]).headers), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_in_every_unit() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout(b"9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_timeout(b"0m"), Some(Duration::ZERO));
        assert_eq!(
            parse_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for bad in [
            &b""[..],
            b"m",
            b"100",
            b"100x",
            b"123456789m",
            b"-1S",
            b"+1S",
            b"1.5S",
            b" 1S",
            b"1S ",
            b"\xff1S",
            b"1\xffS",
            &[b'9'; 4096],
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_timeout_is_encoded_in_the_finest_unit_that_fits() {
        let encode = |d| encode_timeout(d).to_str().unwrap().to_string();
        assert_eq!(encode(Duration::from_nanos(5)), "5n");
        assert_eq!(encode(Duration::from_millis(100)), "100000u");
        assert_eq!(encode(Duration::from_secs(5)), "5000000u");
        assert_eq!(encode(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode(Duration::ZERO), "0n");
        assert_eq!(encode(Duration::MAX), "99999999H");
        // Every encoding parses back to at least what it was made from.
        for d in [
            Duration::from_nanos(1_234_567_891),
            Duration::from_secs(86_400 * 400),
        ] {
            let back = parse_timeout(encode_timeout(d).as_bytes()).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
    }

    #[test]
    fn the_status_mapping() {
        for (status, code) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (408, 4),
            (413, 8),
            (429, 8),
            (431, 8),
            (502, 14),
            (503, 14),
            (504, 4),
            (308, 2),
            (418, 2),
        ] {
            assert_eq!(
                code_of(StatusCode::from_u16(status).unwrap()),
                code,
                "{status}"
            );
        }
    }

    #[test]
    fn an_answer_is_trailers_only() {
        let response = answer(14, "no healthy backend: 100% down\nnow");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], "14");
        assert_eq!(
            headers["grpc-message"],
            "no healthy backend: 100%25 down%0Anow"
        );
        assert!(http_body::Body::is_end_stream(response.body()));
        let unicode = answer(2, "é");
        assert_eq!(unicode.headers()["grpc-message"], "%C3%A9");
    }

    #[test]
    fn a_filters_answer_keeps_its_message_and_headers() {
        let headers = vec![
            (header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
        ];
        let huge = vec![b'x'; 100_000];
        let response = from_filter(StatusCode::UNAUTHORIZED, headers, b"token expired\n");
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()["grpc-message"], "token expired");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let cut = from_filter(StatusCode::FORBIDDEN, Vec::new(), &huge);
        assert_eq!(cut.headers()["grpc-message"].len(), MAX_MESSAGE);
        let empty = from_filter(StatusCode::FORBIDDEN, Vec::new(), b"");
        assert_eq!(empty.headers()["grpc-message"], "Forbidden");
    }

    #[test]
    fn a_call_stamps_each_attempt_with_what_is_left() {
        let now = Instant::now();
        let parts = head(&[("content-type", "application/grpc"), ("grpc-timeout", "2S")]);
        let call = GrpcCall::of(&parts, now).unwrap();
        assert_eq!(call.deadline, Some(now + Duration::from_secs(2)));
        let mut attempt = head(&[]);
        call.stamp(&mut attempt, now + Duration::from_millis(500));
        assert_eq!(attempt.headers["grpc-timeout"], "1500000u");
        assert_eq!(
            attempt.extensions.get::<Deadline>(),
            Some(&Deadline(now + Duration::from_secs(2)))
        );
        // Past the deadline: zero left, still sent as a value.
        call.stamp(&mut attempt, now + Duration::from_secs(3));
        assert_eq!(attempt.headers["grpc-timeout"], "0n");

        let before = malformed_timeouts();
        let bad = head(&[
            ("content-type", "application/grpc"),
            ("grpc-timeout", "soon"),
        ]);
        let call = GrpcCall::of(&bad, now).unwrap();
        assert_eq!(call.deadline, None);
        assert!(malformed_timeouts() > before);
        let mut attempt = head(&[("grpc-timeout", "soon")]);
        call.stamp(&mut attempt, now);
        assert_eq!(
            attempt.headers["grpc-timeout"], "soon",
            "passed on as it came"
        );
        assert!(attempt.extensions.get::<Deadline>().is_none());

        assert!(GrpcCall::of(&head(&[("grpc-timeout", "1S")]), now).is_none());
    }
}
