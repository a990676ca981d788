//! The `grpc` health check: `grpc.health.v1.Health/Check` over HTTP/2
//! (prior knowledge, or TLS with ALPN `h2`), its request and response
//! protobufs encoded by hand (a string field in, an enum field out).
//! Healthy only on `grpc-status: 0` with `status: SERVING`.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioExecutor;

use super::super::connector::BackendStream;

/// The method a gRPC check calls.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// Most of a response a gRPC check reads: a `HealthCheckResponse` is a few
/// bytes; anything near this is not one.
const MAX_RESPONSE: usize = 16 * 1024;

/// Why a gRPC health check failed (shown in the admin API under the
/// backend's `last_check_error`).
#[derive(Debug, thiserror::Error)]
pub enum GrpcCheckError {
    /// TLS negotiated another protocol than `h2`.
    #[error("the backend chose ALPN {0:?}, not h2: it does not speak gRPC on this port")]
    Alpn(String),
    /// The HTTP/2 connection could not be set up or the request failed:
    /// most often a backend that speaks only HTTP/1.1.
    #[error("HTTP/2 request failed (does the backend speak HTTP/2?)")]
    Http2(#[source] hyper::Error),
    /// The check's request could not be built (a bad `host`).
    #[error("building the request")]
    Request(#[source] http::Error),
    /// The answer is not HTTP 200.
    #[error("HTTP status {0}, not 200")]
    HttpStatus(u16),
    /// The answer is not gRPC.
    #[error("content-type {0:?} is not application/grpc")]
    NotGrpc(String),
    /// The body ended early, broke the limit or could not be read.
    #[error("response body: {0}")]
    Body(&'static str),
    /// The response is not a `HealthCheckResponse`.
    #[error("malformed HealthCheckResponse: {0}")]
    Malformed(&'static str),
    /// No `grpc-status` in the trailers nor the headers.
    #[error("no grpc-status in the answer")]
    NoStatus,
    /// The call failed; NOT_FOUND (5) is the health service's
    /// "unknown service".
    #[error("grpc-status {code} {}{}", status_name(*code), message_suffix(message))]
    Status {
        /// The `grpc-status`.
        code: u32,
        /// The decoded `grpc-message`.
        message: String,
    },
    /// The service answered, not SERVING.
    #[error("the service is {}", serving_name(*.0))]
    NotServing(u64),
}

fn status_name(code: u32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND (SERVICE_UNKNOWN: the health service does not know this service)",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        12 => "UNIMPLEMENTED (no grpc.health.v1.Health service)",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        16 => "UNAUTHENTICATED",
        _ => "",
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn serving_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".to_string(),
        2 => "NOT_SERVING".to_string(),
        3 => "SERVICE_UNKNOWN".to_string(),
        other => format!("in serving status {other}"),
    }
}

/// One `Health/Check` of `service` on a connected `stream`, to
/// `authority` over `scheme`; `timeout` is sent as `grpc-timeout`.
pub(super) async fn check(
    stream: BackendStream,
    scheme: &str,
    authority: &str,
    service: &str,
    timeout: Duration,
) -> Result<(), GrpcCheckError> {
    if let BackendStream::Tls(tls) = &stream
        && let Some(alpn) = tls.inner().get_ref().1.alpn_protocol()
        && alpn != b"h2"
    {
        return Err(GrpcCheckError::Alpn(
            String::from_utf8_lossy(alpn).into_owned(),
        ));
    }
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
            .await
            .map_err(GrpcCheckError::Http2)?;
    let connection = tokio::spawn(connection);
    let result = async {
        let request = Request::post(format!("{scheme}://{authority}{CHECK_PATH}"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .header(header::USER_AGENT, "weir-health-check")
            .header(
                "grpc-timeout",
                format!("{}m", timeout.as_millis().clamp(1, 99_999_999)),
            )
            .body(Full::new(request_frame(service)))
            .map_err(GrpcCheckError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(GrpcCheckError::Http2)?;
        let (head, body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(GrpcCheckError::HttpStatus(head.status.as_u16()));
        }
        let content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !content_type.starts_with("application/grpc") {
            return Err(GrpcCheckError::NotGrpc(content_type));
        }
        // Trailers-only: the status is in the headers.
        if head.headers.contains_key("grpc-status") {
            call_status(&head.headers)?;
        }
        let collected = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    GrpcCheckError::Body("over 16 KiB")
                } else {
                    GrpcCheckError::Body("the stream failed before its end")
                }
            })?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        match &trailers {
            Some(trailers) if trailers.contains_key("grpc-status") => call_status(trailers)?,
            _ if head.headers.contains_key("grpc-status") => {}
            _ => return Err(GrpcCheckError::NoStatus),
        }
        match serving_status(data)? {
            1 => Ok(()),
            other => Err(GrpcCheckError::NotServing(other)),
        }
    }
    .await;
    connection.abort();
    result
}

/// The request: one uncompressed gRPC message holding a
/// `HealthCheckRequest { string service = 1; }`.
fn request_frame(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(message.len() + 5);
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(data: &mut Bytes) -> Result<u64, GrpcCheckError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !data.has_remaining() {
            return Err(GrpcCheckError::Malformed("a varint is cut short"));
        }
        let byte = data.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(GrpcCheckError::Malformed("a varint is over 10 bytes"))
}

/// The `grpc-status` in `headers` as a result: 0 passes.
fn call_status(headers: &HeaderMap) -> Result<(), GrpcCheckError> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or(GrpcCheckError::Malformed("grpc-status is not a number"))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Err(GrpcCheckError::Status { code, message })
}

/// A `grpc-message` decoded, cut to 256 characters for the admin API.
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = value
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (value[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).chars().take(256).collect()
}

/// The `status` of the one `HealthCheckResponse` in `data` (a gRPC
/// message frame); unknown fields are skipped, a missing status is 0.
fn serving_status(mut data: Bytes) -> Result<u64, GrpcCheckError> {
    if data.len() < 5 {
        return Err(GrpcCheckError::Malformed("no complete message frame"));
    }
    if data.get_u8() != 0 {
        return Err(GrpcCheckError::Malformed(
            "a compressed message (none was accepted)",
        ));
    }
    let length = data.get_u32() as usize;
    if data.len() != length {
        return Err(GrpcCheckError::Malformed(
            "the frame's length is not the body's",
        ));
    }
    let mut status = 0;
    while data.has_remaining() {
        let key = get_varint(&mut data)?;
        match key & 7 {
            0 => {
                let value = get_varint(&mut data)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                if data.len() < width {
                    return Err(GrpcCheckError::Malformed("a fixed field is cut short"));
                }
                data.advance(width);
            }
            2 => {
                let length = get_varint(&mut data)?;
                if (data.len() as u64) < length {
                    return Err(GrpcCheckError::Malformed("a field is cut short"));
                }
                data.advance(length as usize);
            }
            _ => return Err(GrpcCheckError::Malformed("an unknown wire type")),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Bytes {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        Bytes::from(out)
    }

    #[test]
    fn the_request_is_a_service_name_in_a_frame() {
        assert_eq!(&request_frame("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_frame("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "s".repeat(300);
        let encoded = request_frame(&long);
        // 300 = 0xac 0x02 as a varint.
        assert_eq!(&encoded[5..8], &[0x0a, 0xac, 0x02]);
        assert_eq!(encoded.len(), 5 + 3 + 300);
    }

    #[test]
    fn serving_statuses_are_read() {
        assert_eq!(serving_status(frame(&[0x08, 1])).unwrap(), 1);
        assert_eq!(serving_status(frame(&[0x08, 2])).unwrap(), 2);
        assert_eq!(serving_status(frame(&[])).unwrap(), 0);
        // Unknown fields of every wire type are skipped.
        let mut message = vec![0x12, 2, b'h', b'i', 0x19];
        message.extend_from_slice(&[0; 8]);
        message.extend_from_slice(&[0x25, 0, 0, 0, 0, 0x18, 0x96, 0x01, 0x08, 1]);
        assert_eq!(serving_status(frame(&message)).unwrap(), 1);
    }

    #[test]
    fn hostile_responses_are_malformed() {
        for bad in [
            Bytes::from_static(b""),
            Bytes::from_static(&[0, 0, 0]),
            Bytes::from_static(&[1, 0, 0, 0, 2, 0x08, 1]),
            Bytes::from_static(&[0, 0, 0, 0, 9, 0x08, 1]),
            Bytes::from_static(&[0, 0, 0, 0, 1, 0x08]),
            frame(&[0x08, 0xff]),
            frame(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ]),
            frame(&[0x12, 50, 1]),
            frame(&[0x19, 1, 2]),
            frame(&[0x0b]),
        ] {
            assert!(
                matches!(
                    serving_status(bad.clone()),
                    Err(GrpcCheckError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_failed_call_says_why() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "5".parse().unwrap());
        headers.insert(
            "grpc-message",
            "unknown service %22x%22%0A".parse().unwrap(),
        );
        let error = call_status(&headers).unwrap_err();
        assert_eq!(
            error.to_string(),
            "grpc-status 5 NOT_FOUND (SERVICE_UNKNOWN: the health service does not know this service): unknown service \"x\"\n"
        );
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(call_status(&headers).is_ok());
        headers.insert("grpc-status", "zero".parse().unwrap());
        assert!(matches!(
            call_status(&headers),
            Err(GrpcCheckError::Malformed(_))
        ));
        assert_eq!(
            GrpcCheckError::NotServing(2).to_string(),
            "the service is NOT_SERVING"
        );
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
