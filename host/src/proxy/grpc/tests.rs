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
