//! Backends that speak TLS, for the upstream TLS tests: a small tokio-rustls
//! HTTP server of ours (optionally requiring a client certificate), one
//! that is not ours (Python's `ssl` around `http.server`), and hostile ones
//! that break the handshake. All on port 0 of 127.0.0.1, stopped on drop.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::certs::{Leaf, TestCa};

/// Our TLS backend: answers `200 NAME\n` over TLS, optionally only to
/// clients with a certificate from a given CA.
pub struct TlsBackend {
    pub addr: SocketAddr,
    /// Handshakes that completed.
    pub handshakes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    /// Serves `leaf`; with `client_ca`, requires a client certificate it
    /// signed.
    pub async fn start(name: &str, leaf: &Leaf, client_ca: Option<&TestCa>) -> TlsBackend {
        let certs = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                    .unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicU64::new(0));
        let (count, body) = (handshakes.clone(), format!("{name}\n"));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, count, body) = (acceptor.clone(), count.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    let service = service_fn(move |_request| {
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsBackend {
            addr,
            handshakes,
            task,
        }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`HostileBackend`] treats a ClientHello.
#[derive(Debug, Clone, Copy)]
pub enum Hostility {
    /// Reads a little of it, then closes the connection.
    CloseMidHandshake,
    /// Reads it and never answers, holding the connection open.
    Silent,
    /// Answers with plain-text HTTP instead of a ServerHello.
    Garbage,
}

/// A backend that breaks the TLS handshake as [`Hostility`] says.
pub struct HostileBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HostileBackend {
    pub async fn start(how: Hostility) -> HostileBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 16];
                let _ = tcp.read(&mut buf).await;
                match how {
                    Hostility::CloseMidHandshake => drop(tcp),
                    Hostility::Silent => held.push(tcp),
                    Hostility::Garbage => {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        held.push(tcp);
                    }
                }
            }
        });
        HostileBackend { addr, task }
    }
}

impl Drop for HostileBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Python's `http.server` wrapped in an `ssl.SSLContext`: a TLS backend
/// that is not ours. Killed on drop.
pub struct PythonTls {
    pub addr: SocketAddr,
    child: std::process::Child,
}

const PYTHON_SERVER: &str = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"python\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
if len(sys.argv) > 3 and sys.argv[3] == "1.2":
    context.maximum_version = ssl.TLSVersion.TLSv1_2
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl PythonTls {
    /// Serves the certificate and key in `cert` and `key`.
    pub fn start(cert: &Path, key: &Path) -> PythonTls {
        PythonTls::start_up_to(cert, key, "1.3")
    }

    /// Like [`PythonTls::start`], speaking TLS up to `max` (`"1.2"` or
    /// `"1.3"`).
    pub fn start_up_to(cert: &Path, key: &Path, max: &str) -> PythonTls {
        let mut child = std::process::Command::new(super::python::python())
            .arg("-c")
            .arg(PYTHON_SERVER)
            .arg(cert)
            .arg(key)
            .arg(max)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for this test");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().expect("python printed its port");
        PythonTls {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for PythonTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
