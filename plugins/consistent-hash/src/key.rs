//! Where the hash key of a request comes from: the `key` setting.

use weir_sdk::{Request, cookie_value};

/// The part of the request that is hashed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeySource {
    /// `header:NAME`: the first value of header `NAME`.
    Header(String),
    /// `cookie:NAME`: the value of cookie `NAME` in the (first) `Cookie`
    /// header.
    Cookie(String),
    /// `client-ip`: the client's IP address, without its port. The default.
    #[default]
    ClientIp,
    /// `path`: the request path, without its query string.
    Path,
}

impl std::str::FromStr for KeySource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let named = |kind: &str, name: &str| {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if valid {
                Ok(name.to_string())
            } else {
                Err(format!(
                    "{kind} name {name:?} is empty or not a valid token"
                ))
            }
        };
        match text {
            "client-ip" => Ok(Self::ClientIp),
            "path" => Ok(Self::Path),
            _ => match text.split_once(':') {
                Some(("header", name)) => named("header", name).map(Self::Header),
                Some(("cookie", name)) => named("cookie", name).map(Self::Cookie),
                _ => Err(format!(
                    r#"unknown key {text:?}: expected "client-ip", "path", "header:NAME" or "cookie:NAME""#
                )),
            },
        }
    }
}

impl KeySource {
    /// This request's key; `None` when it has none (header or cookie absent
    /// or empty).
    pub fn extract(&self, request: &Request<'_>) -> Option<String> {
        let key = match self {
            Self::Header(name) => request.header(name)?,
            Self::Cookie(name) => cookie_value(&request.header("cookie")?, name)?.to_string(),
            // The same text the address's `ip:port` form starts with, so
            // keys (and their backends) are as before; fetched without
            // copying a string across.
            Self::ClientIp => request.client_ip().to_string(),
            Self::Path => {
                let mut path = request.path();
                path.truncate(path_only(&path).len());
                path
            }
        };
        (!key.is_empty()).then_some(key)
    }
}

/// `path` without its query string.
pub fn path_only(path: &str) -> &str {
    path.split_once('?').map_or(path, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("client-ip".parse(), Ok(KeySource::ClientIp));
        assert_eq!("path".parse(), Ok(KeySource::Path));
        assert_eq!(
            "header:x-user-id".parse(),
            Ok(KeySource::Header("x-user-id".into()))
        );
        assert_eq!(
            "cookie:session".parse(),
            Ok(KeySource::Cookie("session".into()))
        );
        assert_eq!(KeySource::default(), KeySource::ClientIp);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "ip",
            "header:",
            "cookie:",
            "header:a b",
            "query:x",
            "Path",
        ] {
            let err = bad.parse::<KeySource>().unwrap_err();
            assert!(
                err.contains("expected") || err.contains("not a valid token"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn path_drops_the_query() {
        assert_eq!(path_only("/users/7?verbose=1"), "/users/7");
        assert_eq!(path_only("/users/7"), "/users/7");
        assert_eq!(path_only("/?a"), "/");
    }
}
