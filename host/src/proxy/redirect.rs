//! A route's `redirect_https`: a plain-HTTP request answered with `308`
//! to the same host, path and query over `https`, before any filter runs.

use http::HeaderValue;
use http::request::Parts;
use http::uri::Authority;

use super::context::RequestCtx;
use super::error::ProxyError;
use super::refused::Refusal;

/// The redirect of the request `parts` to HTTPS on `port` (none: 443).
/// The host is the one the request asked for, checked by the host rules
/// before routing; it is parsed again here, so what goes into `Location`
/// is a host and nothing else (no port, no userinfo, no CR or LF).
pub(crate) fn to_https(
    ctx: &RequestCtx,
    parts: &Parts,
    port: Option<u16>,
) -> Result<ProxyError, ProxyError> {
    let refuse = |refusal| {
        ctx.refused.count(refusal);
        ProxyError::Refused(refusal)
    };
    let host = ctx.host.as_str().ok_or_else(|| refuse(Refusal::NoHost))?;
    let authority = Authority::try_from(host).map_err(|_| refuse(Refusal::BadHost))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = location(authority.host(), port, path);
    HeaderValue::try_from(location)
        .map(ProxyError::RedirectHttps)
        .map_err(|_| refuse(Refusal::BadHost))
}

/// `https://HOST[:PORT]PATH`.
fn location(host: &str, port: Option<u16>, path: &str) -> String {
    match port {
        Some(port) => format!("https://{host}:{port}{path}"),
        None => format!("https://{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_keeps_host_path_and_query_and_names_the_port() {
        assert_eq!(
            location("a.example", None, "/x?y=1"),
            "https://a.example/x?y=1"
        );
        assert_eq!(location("[::1]", Some(8443), "/"), "https://[::1]:8443/");
        let authority = Authority::try_from("a.example:8080").unwrap();
        assert_eq!(authority.host(), "a.example");
    }
}
