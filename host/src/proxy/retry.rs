//! Retrying a request on another backend: which requests may be sent
//! again, the copy of the request head that makes it possible (taken only
//! when a retry could actually follow), and the retry budget's word.

use std::time::Instant;

use super::error::ProxyError;
use super::forward::Failure;
use super::request_body::ClientBody;
use crate::upstream::{Backend, BackendId, Upstream};
use http::Method;
use http::request::Parts;

/// One request's retry state across its attempts.
pub(crate) struct Retries {
    /// Retries the upstream allows after the first attempt.
    allowed: u32,
    /// The request can be sent again unchanged: an idempotent method and no
    /// body.
    replayable: bool,
    /// Backends tried by earlier attempts.
    pub(crate) tried: Vec<BackendId>,
}

impl Retries {
    /// The retry state of a request to `upstream`; `bodiless`: the request
    /// has no body. A request that could be retried deposits into the
    /// upstream's retry budget.
    pub(crate) fn plan(upstream: &Upstream, method: &Method, bodiless: bool) -> Retries {
        let allowed = upstream.retries();
        if allowed > 0 {
            upstream.stats().budget.deposit();
        }
        Retries {
            allowed,
            replayable: allowed > 0 && is_idempotent(method) && bodiless,
            tried: Vec::new(),
        }
    }

    /// The body of this attempt: the client's, streamed, on a request that
    /// is never sent again; an empty one on a replayable request (it has no
    /// body), so every attempt can send it.
    pub(crate) fn body(&self, body: &mut Option<ClientBody>) -> crate::upstream::UpstreamBody {
        use http_body_util::BodyExt;
        match body.take() {
            Some(body) if !self.replayable => body.map_err(Into::into).boxed(),
            _ => http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        }
    }

    /// A copy of the request head for the next attempt, taken only when
    /// one could follow this one: the request is replayable, retries are
    /// left, and a healthy backend not yet tried remains.
    pub(crate) fn copy(&self, upstream: &Upstream, parts: &Parts) -> Option<Parts> {
        let possible = self.replayable
            && self.tried.len() < self.allowed as usize
            && self.untried_remain(upstream);
        possible.then(|| {
            let mut next = http::Request::new(()).into_parts().0;
            next.method = parts.method.clone();
            next.uri = parts.uri.clone();
            next.headers = parts.headers.clone();
            next
        })
    }

    /// After `failure` at `backend`: the head to send next, when a retry is
    /// possible (`copy`) and the budget allows it; else weir's answer.
    pub(crate) fn again(
        &mut self,
        upstream: &Upstream,
        backend: &Backend,
        failure: Failure,
        copy: Option<Parts>,
    ) -> Result<Parts, ProxyError> {
        if let Some(refusal) = failure.client {
            return Err(ProxyError::ClientBody(refusal));
        }
        let answer = ProxyError::Backend {
            status: failure.status,
            why: failure.why,
        };
        let Some(next) = copy.filter(|_| failure.retryable && self.untried_remain(upstream)) else {
            return Err(answer);
        };
        let stats = upstream.stats();
        if !stats.budget.withdraw(Instant::now()) {
            stats
                .retries_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                upstream = upstream.name(),
                "not retrying: the retry budget is spent"
            );
            return Err(answer);
        }
        stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            upstream = upstream.name(),
            backend = backend.name,
            "retrying on another backend: {}",
            failure.why
        );
        self.tried.push(backend.id);
        Ok(next)
    }

    /// Whether an eligible backend remains besides those tried and the one
    /// being tried now.
    fn untried_remain(&self, upstream: &Upstream) -> bool {
        upstream.backends().eligible().len() > self.tried.len() + 1
    }
}

/// Methods RFC 9110 defines as idempotent: safe to send twice.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use http::StatusCode;

    use super::*;
    use crate::upstream::testing::upstream;

    fn head(method: Method) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = method;
        parts.uri = "/a?b".parse().unwrap();
        parts.headers.insert("x-one", "1".parse().unwrap());
        parts
    }

    fn failure(retryable: bool) -> Failure {
        Failure {
            status: StatusCode::BAD_GATEWAY,
            why: "could not connect to the backend",
            retryable,
            client: None,
        }
    }

    #[test]
    fn the_head_is_copied_only_when_a_retry_could_follow() {
        let web = upstream(2, "");
        let get = head(Method::GET);
        let mut retries = Retries::plan(&web, &get.method, true);
        let copy = retries.copy(&web, &get).expect("a retry could follow");
        assert_eq!((copy.method, copy.uri), (Method::GET, get.uri.clone()));
        assert_eq!(copy.headers["x-one"], "1");
        // After one retry (the default allows one), no copy is made.
        let first = web.backends().iter().next().unwrap().clone();
        let again = retries.copy(&web, &get);
        assert!(retries.again(&web, &first, failure(true), again).is_ok());
        assert!(retries.copy(&web, &get).is_none());
        // Not replayable: a body, or a method that is not idempotent.
        assert!(
            Retries::plan(&web, &Method::GET, false)
                .copy(&web, &get)
                .is_none()
        );
        let post = head(Method::POST);
        assert!(
            Retries::plan(&web, &post.method, true)
                .copy(&web, &post)
                .is_none()
        );
        // No other backend to try, or no retries configured.
        let one = upstream(1, "");
        assert!(
            Retries::plan(&one, &Method::GET, true)
                .copy(&one, &get)
                .is_none()
        );
        let none = upstream(2, "[upstreams.web.retry]\nretries = 0\n");
        assert!(
            Retries::plan(&none, &Method::GET, true)
                .copy(&none, &get)
                .is_none()
        );
    }

    #[test]
    fn a_failure_is_retried_only_when_it_may_be() {
        let web = upstream(3, "[upstreams.web.retry]\nretries = 2\n");
        let get = head(Method::GET);
        let backend = web.backends().iter().next().unwrap().clone();
        // A response timeout is not retried: the backend may still be working.
        let mut retries = Retries::plan(&web, &get.method, true);
        let copy = retries.copy(&web, &get);
        match retries.again(&web, &backend, failure(false), copy) {
            Err(ProxyError::Backend { status, .. }) => assert_eq!(status, StatusCode::BAD_GATEWAY),
            other => panic!("{other:?}"),
        }
        assert!(retries.tried.is_empty());
        // Without a copy (none was possible) there is nothing to send.
        assert!(retries.again(&web, &backend, failure(true), None).is_err());
        // A retryable failure with a copy is retried, the backend marked tried.
        let copy = retries.copy(&web, &get);
        let next = retries.again(&web, &backend, failure(true), copy).unwrap();
        assert_eq!(next.uri, get.uri);
        assert_eq!(retries.tried, [backend.id]);
        assert_eq!(web.stats().retries.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_spent_budget_refuses_the_retry_and_counts_it() {
        let web = upstream(
            2,
            "[upstreams.web.retry]\nbudget_percent = 0\nmin_retries_per_second = 0\n",
        );
        let get = head(Method::GET);
        let backend = web.backends().iter().next().unwrap().clone();
        // It starts full (ten retries); nothing refills it.
        let mut spent = 0;
        while web.stats().budget.withdraw(Instant::now()) {
            spent += 1;
            assert!(spent <= 10, "the budget does not run out");
        }
        let mut retries = Retries::plan(&web, &get.method, true);
        let copy = retries.copy(&web, &get);
        assert!(copy.is_some());
        assert!(retries.again(&web, &backend, failure(true), copy).is_err());
        assert_eq!(web.stats().retries_refused.load(Ordering::Relaxed), 1);
        assert_eq!(web.stats().retries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_idempotent_methods_are_replayable() {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }
}
