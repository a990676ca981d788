//! Matching a request to an upstream by host and path prefix.
//!
//! The rule: among the routes whose host and prefix match, a route with a
//! host beats one without; then the longest `path_prefix` wins; then the one
//! written first. Hosts compare case-insensitively without their port, and
//! `*.example.com` matches any name ending in `.example.com`.

/// One compiled route, leading to a `T`.
struct Route<T> {
    host: Option<HostPattern>,
    prefix: String,
    target: T,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl HostPattern {
    fn parse(host: &str) -> HostPattern {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostPattern::Suffix(suffix.to_string()),
            _ => HostPattern::Exact(host),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// The routes of one configuration, ordered for matching, each leading to a
/// `T` (the snapshot's route: upstream and filter chain).
pub struct Router<T> {
    routes: Vec<Route<T>>,
}

impl<T> Router<T> {
    /// Orders `(host, prefix, target)` routes by precedence; the sort is
    /// stable, so config order breaks ties.
    pub fn new(routes: Vec<(Option<String>, String, T)>) -> Router<T> {
        let mut routes: Vec<Route<T>> = routes
            .into_iter()
            .map(|(host, prefix, target)| Route {
                host: host.as_deref().map(HostPattern::parse),
                prefix,
                target,
            })
            .collect();
        routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.prefix.len())));
        Router { routes }
    }

    /// The target for a request to `host` (port allowed, ignored) and
    /// `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&T> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                path.starts_with(&r.prefix)
                    && match (&r.host, host) {
                        (None, _) => true,
                        (Some(pattern), Some(host)) => pattern.matches(host),
                        (Some(_), None) => false,
                    }
            })
            .map(|r| &r.target)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> String {
        name.to_string()
    }

    fn router() -> Router<String> {
        Router::new(vec![
            (None, "/".into(), upstream("default")),
            (None, "/api".into(), upstream("api")),
            (Some("Example.com".into()), "/".into(), upstream("example")),
            (Some("*.example.com".into()), "/".into(), upstream("sub")),
        ])
    }

    fn name(host: Option<&str>, path: &str) -> Option<String> {
        router().route(host, path).cloned()
    }

    #[test]
    fn host_routes_win_then_longest_prefix() {
        assert_eq!(
            name(Some("example.com:8080"), "/api/x").as_deref(),
            Some("example")
        );
        assert_eq!(name(Some("a.b.EXAMPLE.com"), "/").as_deref(), Some("sub"));
        assert_eq!(name(Some("other"), "/api/users").as_deref(), Some("api"));
        assert_eq!(name(None, "/index.html").as_deref(), Some("default"));
        assert_eq!(name(Some("[::1]:80"), "/").as_deref(), Some("default"));
    }

    #[test]
    fn no_match_is_none() {
        let router = Router::new(vec![(None, "/api".into(), upstream("api"))]);
        assert!(router.route(Some("x"), "/web").is_none());
    }

    #[test]
    fn suffix_pattern_needs_a_subdomain() {
        let p = HostPattern::parse("*.example.com");
        assert!(p.matches("www.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
    }
}
