//! The upgrade phase: an HTTP/1.1 request that asks to switch protocols
//! (`Connection: upgrade` and `Upgrade: TOKEN`, a WebSocket handshake) goes
//! to the backend the balancer chose, once, with those two hop-by-hop
//! headers kept; a `101` naming a protocol the client offered becomes a
//! [`Tunnel`], any other answer a normal response. A `101` weir did not
//! ask for, or naming another protocol, is a 502.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{CONNECTION, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;

use super::choose::{choose, prepare};
use super::context::RequestCtx;
use super::error::ProxyError;
use super::forward::forward;
use super::refused::Refusal;
use super::request_body::BodyWatch;
use super::tunnel::{Timing, Tunnel};
use super::{ProxyBody, empty_head, filters, finish, full, headers};
use crate::upstream::{Backend, Upstream};

/// The protocols a request asks to switch to (its `Upgrade` value), when
/// it really asks: HTTP/1.1 (not 1.0, which has no upgrades, nor HTTP/2,
/// which forbids them) with `upgrade` among its `Connection` options and
/// one `Upgrade` header. An `Upgrade` header without `Connection: upgrade`
/// is no request at all (and is removed like any hop-by-hop header), and
/// neither is `h2c`: a tunnel of HTTP/2 to the backend would carry requests
/// weir never routes nor filters (h2c smuggling).
pub(super) fn requested(parts: &Parts) -> Option<HeaderValue> {
    // Most requests have no Upgrade header: found out first, cheaply.
    if parts.version != Version::HTTP_11 || !parts.headers.contains_key(UPGRADE) {
        return None;
    }
    let asked = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    let mut upgrade = parts.headers.get_all(UPGRADE).iter();
    let (Some(token), None) = (upgrade.next(), upgrade.next()) else {
        return None;
    };
    let offered: Vec<&str> = offered(token).collect();
    let smuggling = offered.iter().any(|p| p.eq_ignore_ascii_case("h2c"));
    (asked && !offered.is_empty() && !smuggling).then(|| token.clone())
}

/// The protocols an `Upgrade` value lists.
fn offered(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The protocol a `101` switched to, when it is one the client offered.
fn agreed(offer: &HeaderValue, response: &HeaderMap) -> Option<HeaderValue> {
    let mut switched = response.get_all(UPGRADE).iter();
    let (Some(chosen), None) = (switched.next(), switched.next()) else {
        return None;
    };
    let chosen_str = chosen.to_str().ok()?.trim();
    offered(offer)
        .any(|p| p.eq_ignore_ascii_case(chosen_str))
        .then(|| chosen.clone())
}

/// The connection of a request that could have switched protocols (hyper
/// readies an upgrade for any HTTP/1.1 request with an `Upgrade` header,
/// and for `CONNECT`) and did not: hyper hands the connection over when it
/// ends as if it had, to be dropped with whatever the client still sends
/// unread, which resets it. It is closed instead as the listener closes
/// the others, with a lingering close. At most one per connection: the
/// next such request's replaces it, and an ended connection that never
/// switched ends its wait.
pub(super) fn unclaimed(pending: OnUpgrade) {
    tokio::spawn(async move {
        if let Ok(upgraded) = pending.await {
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let lingered = crate::linger::close(&mut io).await;
            tracing::trace!(?lingered, "client connection of an unmade upgrade closed");
        }
    });
}

/// Sends the upgrade request in `parts` to a backend and answers: a `101`
/// that starts a tunnel, or the backend's other answer. Never retried.
pub(super) async fn open(
    ctx: &mut RequestCtx,
    tunnels: &Arc<super::Tunnels>,
    parts: &mut Parts,
    with_body: bool,
    offer: HeaderValue,
    client_side: &mut Option<OnUpgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let upstream = ctx.upstream().clone();
    if upstream.client().version() != Version::HTTP_11 {
        return Err(refuse(ctx, Refusal::UpgradeUnsupported));
    }
    if with_body {
        return Err(refuse(ctx, Refusal::UpgradeWithBody));
    }
    // Always there on HTTP/1.1, which weir serves with upgrades; taken
    // only for the tunnel, so that every other answer leaves it unclaimed.
    if client_side.is_none() {
        return Err(refuse(ctx, Refusal::UpgradeUnsupported));
    }
    let chosen = choose(ctx, parts, &[])?;
    let head = std::mem::replace(parts, empty_head());
    let empty = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed();
    let mut request = prepare(ctx, head, empty, &chosen.backend)?;
    let headers = request.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, offer.clone());
    let (mut response, in_flight) =
        match forward(&upstream, &chosen.backend, request, &BodyWatch::default()).await {
            Ok(answered) => answered,
            Err(failure) => {
                return Err(ProxyError::Backend {
                    status: failure.status,
                    why: failure.why,
                });
            }
        };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(finish(ctx, response, in_flight, chosen));
    }
    let Some(switched) = agreed(&offer, response.headers()) else {
        return Err(bad_switch(
            &upstream,
            &chosen.backend,
            "a protocol the client did not offer",
        ));
    };
    let Some(backend_side) = crate::upstream::take_upgrade(&mut response) else {
        return Err(bad_switch(
            &upstream,
            &chosen.backend,
            "a switch without its connection",
        ));
    };
    let (mut head, _) = response.into_parts();
    headers::remove_hop_by_hop(&mut head.headers);
    for (name, value) in chosen.response_headers {
        head.headers.append(name, value);
    }
    filters::response_phase(ctx, head.status, &mut head.headers);
    // Whatever the filters did, a 101 names what it switches to.
    head.headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    head.headers.insert(UPGRADE, switched.clone());
    let mut log = ctx.log.take();
    if let Some(log) = &mut log {
        log.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
    }
    let Some(client_side) = client_side.take() else {
        return Err(refuse(ctx, Refusal::UpgradeUnsupported));
    };
    let config = ctx.snapshot.config().upstreams.get(upstream.name());
    Tunnel {
        client: client_side,
        backend: backend_side,
        to: chosen.backend,
        in_flight,
        log,
        upgrade: String::from_utf8_lossy(switched.as_bytes()).into_owned(),
        timing: Timing {
            idle: config.map_or(DEFAULT.idle, |c| c.tunnel_idle_timeout()),
            grace: config.map_or(DEFAULT.grace, |c| c.tunnel_drain_grace()),
        },
        tunnels: tunnels.clone(),
    }
    .spawn();
    Ok(Response::from_parts(head, full("")))
}

/// The config's defaults, for an upstream a reload renamed under a
/// request (it keeps the snapshot it started on, so this is a fallback).
const DEFAULT: Timing = Timing {
    idle: std::time::Duration::from_secs(300),
    grace: std::time::Duration::from_secs(5),
};

fn refuse(ctx: &RequestCtx, refusal: Refusal) -> ProxyError {
    ctx.refused.count(refusal);
    ProxyError::Refused(refusal)
}

/// A backend answered `101` to a request that did not ask to switch to
/// it: not passed on (the client could not know what the connection
/// speaks now), answered 502, counted and logged (at most once a second).
pub(super) fn bad_switch(upstream: &Upstream, backend: &Arc<Backend>, what: &str) -> ProxyError {
    backend.stats.tunnels.bad_switch();
    static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOGGED.swap(second, Ordering::Relaxed) != second {
        tracing::warn!(
            upstream = upstream.name(),
            backend = backend.name,
            "502: the backend switched protocols to {what}"
        );
    }
    ProxyError::Backend {
        status: StatusCode::BAD_GATEWAY,
        why: "the backend switched protocols unasked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut parts = empty_head();
        parts.version = version;
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            parts
                .headers
                .append(name, HeaderValue::from_str(value).unwrap());
        }
        parts
    }

    #[test]
    fn only_a_real_http11_upgrade_request_is_one() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(
            requested(&head(Version::HTTP_11, &ws)).unwrap(),
            "websocket"
        );
        // Smuggling attempts: no Connection option, HTTP/1.0, HTTP/2, h2c,
        // two Upgrade headers, an empty one.
        for (version, headers) in [
            (Version::HTTP_11, &[("upgrade", "websocket")][..]),
            (Version::HTTP_10, &ws[..]),
            (Version::HTTP_2, &ws[..]),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "h2c")][..],
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "websocket, H2C")][..],
            ),
            (
                Version::HTTP_11,
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("upgrade", "x"),
                ][..],
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", " , ")][..],
            ),
            (
                Version::HTTP_11,
                &[("connection", "upgraded"), ("upgrade", "websocket")][..],
            ),
        ] {
            assert_eq!(requested(&head(version, headers)), None, "{headers:?}");
        }
    }

    #[test]
    fn a_switch_must_name_a_protocol_offered() {
        let offer = HeaderValue::from_static("websocket, foo/2");
        let answer = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(UPGRADE, HeaderValue::from_str(value).unwrap());
            }
            agreed(&offer, &headers)
        };
        assert_eq!(answer(&["WebSocket"]).unwrap(), "WebSocket");
        assert_eq!(answer(&["foo/2"]).unwrap(), "foo/2");
        assert_eq!(answer(&["h2c"]), None);
        assert_eq!(answer(&[]), None);
        assert_eq!(answer(&["websocket", "foo/2"]), None);
    }
}
