//! `weir demo`: three loopback backends that answer with their own name, and
//! weir in front of them balancing with the round-robin plugin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};

/// A tiny HTTP server on loopback that answers every request with
/// `NAME\n`. Stops when dropped.
pub struct DemoBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DemoBackend {
    /// Starts a backend called `name` on `127.0.0.1:0`.
    pub async fn start(name: &str) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let body = Bytes::from(format!("{name}\n"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DemoBackend { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The demo's configuration: `listen` in front of `backends`, balanced by
/// the `round-robin` plugin from `plugin_dir`, health-checked every 2 s,
/// with the access log on stdout and the admin API on loopback port 9901
/// (a free port when `listen` asks for one).
pub fn config(
    listen: SocketAddr,
    backends: &[SocketAddr],
    plugin_dir: &Path,
) -> Result<Config, ConfigError> {
    let admin_port = if listen.port() == 0 { 0 } else { 9901 };
    let mut text = format!(
        "[[listeners]]\naddress = \"{listen}\"\n\n[plugins]\ndir = {dir}\n\n\
         [admin]\naddress = \"127.0.0.1:{admin_port}\"\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"demo\"\n\n\
         [upstreams.demo.balancer]\nplugin = \"round-robin\"\n\n\
         [upstreams.demo.health_check]\npath = \"/\"\ninterval_ms = 2000\n",
        dir = toml_string(&plugin_dir.display().to_string()),
    );
    for (i, addr) in backends.iter().enumerate() {
        text.push_str(&format!(
            "\n[[upstreams.demo.backends]]\nname = \"backend-{}\"\naddress = \"{addr}\"\n",
            i + 1
        ));
    }
    Config::parse(Path::new("<demo>"), &text)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
