//! The checked host form of a filter's decision: every header, path,
//! status and reroute a filter answers with is checked here, whole, before
//! any of it is applied.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{StatusCode, Uri};

use super::bindings::filter_api;
use super::host::RequestView;

/// What is wrong with a plugin's answer: weir refuses it whole.
#[derive(Debug, thiserror::Error)]
pub enum BadAnswer {
    /// A header name that is not one.
    #[error("invalid header name {name:?}")]
    HeaderName {
        /// The name given.
        name: String,
        /// Why `http` refused it.
        #[source]
        source: http::header::InvalidHeaderName,
    },
    /// A header value that is not one.
    #[error("invalid value for header {name}")]
    HeaderValue {
        /// The header.
        name: HeaderName,
        /// Why `http` refused it.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// A framing or connection header, which only weir sets.
    #[error("{}", crate::framing::refusal(.0))]
    WeirsHeader(HeaderName),
    /// A path that does not parse.
    #[error("rewrote the path to {path:?}")]
    Path {
        /// The path given.
        path: String,
        /// Why `http` refused it.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// A path that is not absolute.
    #[error("rewrote the path to {0:?}, which does not start with '/'")]
    RelativePath(String),
    /// A status outside what a filter may answer with.
    #[error("answered with status {0}, not within 200..=599")]
    Status(u16),
    /// A reroute to an upstream the config does not define.
    #[error("rerouted to upstream {0:?}, which does not exist")]
    NoSuchUpstream(String),
    /// A framing or connection header a balancer asked to add to the
    /// response during `select`.
    #[error("response-headers.add {}", crate::framing::refusal(.0))]
    ResponseHeader(HeaderName),
}

/// One change to a header map, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value.
    Set(HeaderName, HeaderValue),
    /// Add a value.
    Append(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
}

impl HeaderOp {
    /// Applies the change to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            HeaderOp::Set(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            HeaderOp::Append(name, value) => {
                headers.append(name.clone(), value.clone());
            }
            HeaderOp::Remove(name) => {
                headers.remove(name);
            }
        }
    }
}

/// Changes to a request, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestChanges {
    /// Header changes, in order.
    pub headers: Vec<HeaderOp>,
    /// A new path and query.
    pub path: Option<PathAndQuery>,
}

impl RequestChanges {
    /// Applies the changes to the request view.
    pub fn apply(&self, request: &mut RequestView) {
        for op in &self.headers {
            op.apply(&mut request.headers);
        }
        if let Some(path) = &self.path {
            let mut parts = std::mem::take(&mut request.uri).into_parts();
            parts.path_and_query = Some(path.clone());
            request.uri = Uri::from_parts(parts).unwrap_or_else(|_| {
                Uri::builder()
                    .path_and_query(path.clone())
                    .build()
                    .unwrap_or_default()
            });
        }
    }
}

/// A filter's decision, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    /// Go on with these changes.
    Continue(RequestChanges),
    /// Go to upstream `upstream` with these changes.
    Route {
        /// The upstream's name (the proxy checks that it exists).
        upstream: String,
        /// The changes.
        changes: RequestChanges,
    },
    /// Answer the client with this.
    Respond {
        /// Status.
        status: StatusCode,
        /// Headers.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Body.
        body: Bytes,
    },
}

pub(super) fn check_decision(decision: filter_api::Decision) -> Result<FilterDecision, BadAnswer> {
    Ok(match decision {
        filter_api::Decision::Continue(changes) => {
            FilterDecision::Continue(check_changes(changes)?)
        }
        filter_api::Decision::Route(reroute) => FilterDecision::Route {
            upstream: reroute.upstream,
            changes: check_changes(reroute.changes)?,
        },
        filter_api::Decision::Respond(response) => {
            let status = StatusCode::from_u16(response.status)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or(BadAnswer::Status(response.status))?;
            let headers = response
                .headers
                .into_iter()
                .map(|(name, value)| header(&name, &value))
                .collect::<Result<_, _>>()?;
            FilterDecision::Respond {
                status,
                headers,
                body: Bytes::from(response.body),
            }
        }
    })
}

fn check_changes(changes: filter_api::RequestChanges) -> Result<RequestChanges, BadAnswer> {
    let headers = changes
        .headers
        .into_iter()
        .map(check_header_op)
        .collect::<Result<_, _>>()?;
    let path = match changes.path {
        None => None,
        Some(path) if path.starts_with('/') => Some(
            PathAndQuery::try_from(path.as_str()).map_err(|source| BadAnswer::Path {
                path: path.clone(),
                source,
            })?,
        ),
        Some(path) => {
            return Err(BadAnswer::RelativePath(path));
        }
    };
    Ok(RequestChanges { headers, path })
}

pub(super) fn check_header_op(op: filter_api::HeaderOp) -> Result<HeaderOp, BadAnswer> {
    Ok(match op {
        filter_api::HeaderOp::Set((name, value)) => {
            let (name, value) = header(&name, &value)?;
            HeaderOp::Set(name, value)
        }
        filter_api::HeaderOp::Append((name, value)) => {
            let (name, value) = header(&name, &value)?;
            HeaderOp::Append(name, value)
        }
        filter_api::HeaderOp::Remove(name) => HeaderOp::Remove(header_name(&name)?),
    })
}

/// A header a plugin may set, checked: a valid name and value, and not one
/// of the framing and connection headers weir owns ([`crate::framing`]).
/// Every header a plugin hands weir, in every hook, goes through here.
pub(super) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), BadAnswer> {
    let name = header_name(name)?;
    let value = HeaderValue::try_from(value).map_err(|source| BadAnswer::HeaderValue {
        name: name.clone(),
        source,
    })?;
    Ok((name, value))
}

/// A header name a plugin may touch (see [`header`]).
fn header_name(name: &str) -> Result<HeaderName, BadAnswer> {
    let name = HeaderName::try_from(name).map_err(|source| BadAnswer::HeaderName {
        name: name.to_string(),
        source,
    })?;
    if crate::framing::is_weirs(&name) {
        return Err(BadAnswer::WeirsHeader(name));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(
        headers: Vec<filter_api::HeaderOp>,
        path: Option<&str>,
    ) -> filter_api::RequestChanges {
        filter_api::RequestChanges {
            headers,
            path: path.map(str::to_string),
        }
    }

    #[test]
    fn valid_decisions_are_checked_into_host_types() {
        let decision = check_decision(filter_api::Decision::Continue(changes(
            vec![
                filter_api::HeaderOp::Set(("X-A".into(), "1".into())),
                filter_api::HeaderOp::Remove("x-b".into()),
            ],
            Some("/v2?x=1"),
        )))
        .unwrap();
        let FilterDecision::Continue(changes) = decision else {
            panic!()
        };
        let mut view = RequestView {
            method: http::Method::GET,
            uri: "http://h/v1".parse().unwrap(),
            headers: HeaderMap::new(),
            client: "127.0.0.1:1".parse().unwrap(),
            tls: None,
            response_headers: Vec::new(),
        };
        view.headers.insert("x-b", HeaderValue::from_static("gone"));
        changes.apply(&mut view);
        assert_eq!(view.uri, "http://h/v2?x=1");
        assert_eq!(view.headers.get("x-a").unwrap(), "1");
        assert!(view.headers.get("x-b").is_none());
    }

    #[test]
    fn nonsense_is_refused_whole() {
        let bad_header = filter_api::Decision::Continue(changes(
            vec![filter_api::HeaderOp::Set(("bad name".into(), "v".into()))],
            None,
        ));
        assert!(
            check_decision(bad_header)
                .unwrap_err()
                .to_string()
                .contains("invalid header name")
        );
        let bad_value = filter_api::Decision::Continue(changes(
            vec![filter_api::HeaderOp::Append(("x".into(), "a\nb".into()))],
            None,
        ));
        assert!(check_decision(bad_value).is_err());
        let bad_path = filter_api::Decision::Continue(changes(vec![], Some("v2")));
        assert!(
            check_decision(bad_path)
                .unwrap_err()
                .to_string()
                .contains("does not start with '/'")
        );
        let bad_status = filter_api::Decision::Respond(filter_api::Response {
            status: 99,
            headers: vec![],
            body: vec![],
        });
        assert!(check_decision(bad_status).is_err());
    }
}
