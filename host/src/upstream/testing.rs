//! Test fixtures for upstream logic: upstreams built from a config
//! snippet, with no plugin and no network.

use std::sync::Arc;

use super::{Backend, Policy, Upstream};
use crate::config::{Config, UpstreamConfig};

/// The config of an upstream `web` of `n` backends `b1`.. (weight 10) with
/// `extra` upstream keys.
pub(crate) fn config(n: usize, extra: &str) -> UpstreamConfig {
    let mut text = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.web]\n{extra}\n");
    for i in 1..=n {
        text.push_str(&format!(
            "[[upstreams.web.backends]]\nname = \"b{i}\"\naddress = \"127.0.0.1:{}\"\nweight = 10\n",
            9000 + i
        ));
    }
    let config = Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
    config.upstreams["web"].clone()
}

/// An upstream `web` of `n` backends `b1`.. with `extra` upstream keys.
pub(crate) fn upstream(n: usize, extra: &str) -> Arc<Upstream> {
    Arc::new(Upstream::new("web", &config(n, extra), None))
}

/// Like [`upstream`], balanced by `policy`.
pub(crate) fn upstream_with(n: usize, extra: &str, policy: impl Policy) -> Arc<Upstream> {
    let config = config(n, extra);
    Arc::new(Upstream::with_policy(
        "web",
        &config,
        Box::new(policy),
        None,
    ))
}

/// The backend of `upstream` called `name`, as of its current set.
pub(crate) fn backend(upstream: &Upstream, name: &str) -> Arc<Backend> {
    upstream
        .backends()
        .iter()
        .find(|b| b.name == name)
        .unwrap()
        .clone()
}

/// Records `times` failed requests to backend `name`.
pub(crate) fn fail(upstream: &Upstream, name: &str, times: usize) {
    let b = backend(upstream, name);
    for _ in 0..times {
        upstream.observe(&b, Some(&|| "status 500".to_string()));
    }
}

/// A listener that never accepts, its queue filled: further SYNs are
/// dropped, so a connect to it hangs until the connector's timeout. Keep
/// both parts alive for as long as connects should hang.
pub(crate) async fn unaccepting_listener() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>)
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(std::time::Duration::from_millis(100), connect).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    (listener, queued)
}
