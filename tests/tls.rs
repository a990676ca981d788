//! TLS termination on listeners, against real clients: curl over HTTP/1.1
//! and HTTP/2, openssl s_client for SNI, rustls clients for mTLS,
//! resumption and rotation under load, and raw sockets for hostile
//! handshakes.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::certs::{Leaf, TestCa};
use support::{Behaviour, TempDir, TestBackend, TestProxy, config_text, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA, a directory of certificate files, and a backend that echoes.
struct Site {
    dir: TempDir,
    ca: TestCa,
    backend: TestBackend,
}

impl Site {
    async fn new(tag: &str) -> Site {
        let dir = TempDir::new(tag);
        let ca = TestCa::new("weir test CA");
        ca.write(&dir.0, "ca");
        let backend = TestBackend::start("b1", Behaviour::Echo).await;
        Site { dir, ca, backend }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// Writes a server certificate for `names` as `file.crt`/`file.key`.
    fn server(&self, file: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.ca.server(cn, names).write(&self.dir.0, file)
    }

    /// The proxy config: one TLS listener with `tls` (the lines of
    /// `[listeners.tls]` and its tables), the admin API, and the backend.
    fn config(&self, tls: &str) -> String {
        let text = config_text(&[self.backend.addr], "", "");
        let text = text.replace(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
            &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{tls}\n"),
        );
        format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n")
    }
}

/// `[listeners.tls]` serving each `(cert, key)`, then `extra` lines.
fn tls_section(pairs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let mut text = format!("[listeners.tls]\n{extra}\n");
    for (cert, key) in pairs {
        text.push_str(&format!(
            "[[listeners.tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    text
}

fn addr_of(proxy: &TestProxy) -> SocketAddr {
    proxy.server.local_addrs()[0]
}

/// Runs a command off the runtime; returns its exit success and output.
async fn run(mut command: Command) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = command
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the command runs (curl and openssl are installed by .ci/toolchains)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `curl` through weir as `name` (resolved to weir), with `args`.
fn curl(addr: SocketAddr, name: &str, ca: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{}:127.0.0.1", addr.port()))
        .args(args)
        .arg(format!("https://{name}:{}/path?q=1", addr.port()));
    command
}

/// The subject line `openssl s_client` prints for the certificate weir
/// serves to `server_name` (none: no SNI).
async fn served_subject(addr: SocketAddr, server_name: Option<&str>, extra: &[&str]) -> String {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect"])
        .arg(addr.to_string())
        .args(extra);
    match server_name {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let (_, out, err) = run(command).await;
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in s_client output: {out}{err}"))
        .to_string()
}

fn der_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

/// A rustls client trusting `ca`, presenting `client` if given.
fn client_config(ca: &TestCa, client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in der_chain(&ca.pem) {
        roots.add(cert).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(weir::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                der_chain(&leaf.cert),
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client trusting `ca` that never resumes: a resumed session shows the
/// certificate of the session it resumes, not the one served now.
fn fresh_client(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    let mut config = (*client_config(ca, None)).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// What one HTTPS request through a fresh TLS connection saw.
#[derive(Debug)]
struct Seen {
    status: u16,
    body: String,
    /// The served certificate's subject.
    subject: String,
    resumed: bool,
}

/// One GET over a new TLS connection to `addr` as `name`.
async fn https_get(
    addr: SocketAddr,
    name: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<Seen, String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let leaf = session.peer_certificates().unwrap()[0].clone();
        let subject = weir::tls::CertFacts::of(&leaf).unwrap().subject;
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .uri("/tls")
            .header("host", name)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Seen {
            status,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            subject,
            resumed,
        })
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The sum of the samples of metric `family` whose labels contain `with`.
fn sum(text: &str, family: &str, with: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_http1_and_http2_over_tls_with_forwarded_proto_https() {
    let site = Site::new("tls-curl").await;
    let pair = site.server("site", "site.test", &["site.test"]);
    let proxy = TestProxy::start(&site.config(&tls_section(&[pair], ""))).await;
    let addr = addr_of(&proxy);
    let ca = site.path("ca.pem");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out, err) = run(curl(
            addr,
            "site.test",
            &ca,
            &[flag, "-w", "\n%{http_version}"],
        ))
        .await;
        assert!(ok, "curl {flag}: {err}");
        let (body, got) = out.rsplit_once('\n').unwrap();
        assert_eq!(got, version, "curl {flag} negotiated HTTP/{got}");
        assert!(body.starts_with("GET /path?q=1 HTTP/1.1"), "{body}");
        // weir says the client came over TLS, whatever the client claims.
        assert!(body.contains("x-forwarded-proto: https"), "{body}");
    }
    // A client's own claim is replaced.
    let (ok, out, err) = run(curl(
        addr,
        "site.test",
        &ca,
        &["-H", "X-Forwarded-Proto: http"],
    ))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("x-forwarded-proto: https") && !out.contains("x-forwarded-proto: http\n"),
        "{out}"
    );
    let text = support::metrics_text(&proxy).await;
    assert!(sum(&text, "weir_tls_handshakes_total", "") >= 3, "{text}");
    assert_eq!(
        sum(&text, "weir_tls_handshake_failures_total", ""),
        0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_certificate_and_the_default_for_unknown_names() {
    let site = Site::new("tls-sni").await;
    let pairs = [
        site.server("default", "default.test", &["default.test"]),
        site.server("api", "api.test", &["api.test"]),
        site.server("wild", "wildcard", &["*.apps.test"]),
    ];
    let proxy = TestProxy::start(&site.config(&tls_section(&pairs, ""))).await;
    let addr = addr_of(&proxy);
    let cases = [
        (Some("api.test"), "CN = api.test"),
        (Some("one.apps.test"), "CN = wildcard"),
        (Some("deep.one.apps.test"), "CN = default.test"),
        (Some("unknown.test"), "CN = default.test"),
        (None, "CN = default.test"),
    ];
    for (name, want) in cases {
        let subject = served_subject(addr, name, &[]).await;
        assert!(subject.ends_with(want), "{name:?}: {subject}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_and_their_subject_reaches_the_access_log() {
    let site = Site::new("tls-mtls").await;
    let pair = site.server("site", "site.test", &["site.test"]);
    let ca_file = site.path("ca.pem").display().to_string();
    let log = site.path("access.log");
    let tls =
        tls_section(&[pair], "") + &format!("[listeners.tls.client_auth]\nca_file = {ca_file:?}\n");
    let config = site.config(&tls).replace(
        "[access_log]\nenabled = false\n",
        &format!(
            "[access_log]\nenabled = true\npath = {:?}\n",
            log.display().to_string()
        ),
    );
    let proxy = TestProxy::start(&config).await;
    let addr = addr_of(&proxy);
    let good = site.ca.client("alice");
    let seen = https_get(addr, "site.test", &client_config(&site.ca, Some(&good)))
        .await
        .unwrap();
    assert_eq!(seen.status, 200, "{seen:?}");
    // No certificate, and one from a CA weir does not trust: refused.
    let none = https_get(addr, "site.test", &client_config(&site.ca, None)).await;
    assert!(none.is_err(), "{none:?}");
    let stranger = TestCa::new("stranger CA").client("mallory");
    let foreign = https_get(addr, "site.test", &client_config(&site.ca, Some(&stranger))).await;
    assert!(foreign.is_err(), "{foreign:?}");
    // The client may see its handshake fail before weir's side of it has
    // ended and been counted: wait for the counts (bounded), then check.
    let failed = |text: &str, reason: &str| {
        sum(
            text,
            "weir_tls_handshake_failures_total",
            &format!("reason=\"{reason}\""),
        )
    };
    let mut text = String::new();
    for _ in 0..600 {
        text = support::metrics_text(&proxy).await;
        if failed(&text, "no_client_certificate") + failed(&text, "bad_client_certificate") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed(&text, "no_client_certificate"), 1, "{text}");
    assert_eq!(failed(&text, "bad_client_certificate"), 1, "{text}");
    // The access log names the TLS version, SNI and client subject.
    for _ in 0..600 {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"client_cert\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = std::fs::read_to_string(&log).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(entry["tls_version"], "TLSv1.3", "{line}");
    assert_eq!(entry["sni"], "site.test", "{line}");
    assert_eq!(entry["client_cert"], "CN=alice", "{line}");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_let_clients_without_one_through() {
    let site = Site::new("tls-mtls-optional").await;
    let pair = site.server("site", "site.test", &["site.test"]);
    let ca_file = site.path("ca.pem").display().to_string();
    let tls = tls_section(&[pair], "")
        + &format!("[listeners.tls.client_auth]\nca_file = {ca_file:?}\nrequired = false\n");
    let proxy = TestProxy::start(&site.config(&tls)).await;
    let addr = addr_of(&proxy);
    let seen = https_get(addr, "site.test", &client_config(&site.ca, None))
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    let good = site.ca.client("bob");
    let seen = https_get(addr, "site.test", &client_config(&site.ca, Some(&good)))
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    // A certificate that is presented must still verify.
    let stranger = TestCa::new("stranger CA").client("eve");
    assert!(
        https_get(addr, "site.test", &client_config(&site.ca, Some(&stranger)))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume() {
    let site = Site::new("tls-resume").await;
    let pair = site.server("site", "site.test", &["site.test"]);
    let proxy = TestProxy::start(&site.config(&tls_section(&[pair], ""))).await;
    let addr = addr_of(&proxy);
    // One client config keeps its session cache across connections.
    let config = client_config(&site.ca, None);
    let first = https_get(addr, "site.test", &config).await.unwrap();
    assert!(!first.resumed);
    let mut resumed = false;
    for _ in 0..5 {
        resumed |= https_get(addr, "site.test", &config).await.unwrap().resumed;
    }
    assert!(resumed, "no connection resumed its session");
    let text = support::metrics_text(&proxy).await;
    assert!(
        sum(&text, "weir_tls_handshakes_total", "resumed=\"true\"") >= 1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_cost_only_their_connection_and_are_counted() {
    let site = Site::new("tls-hostile").await;
    let pair = site.server("site", "site.test", &["site.test"]);
    let tls = tls_section(&[pair], "handshake_timeout_ms = 500\nmin_version = \"1.3\"");
    let proxy = TestProxy::start(&site.config(&tls)).await;
    let addr = addr_of(&proxy);

    // Plain HTTP to the TLS port: a 400 that says so.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: site.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("speaks HTTPS"), "{answer}");

    // Silence: closed at the handshake timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // A record header that claims a handshake, then garbage.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        garbage.read_to_end(&mut Vec::new()),
    )
    .await;
    assert!(read.is_ok(), "the garbage connection is closed");

    // TLS 1.2 only, against a TLS 1.3 minimum.
    let (ok, _, _) = run({
        let mut c = Command::new("openssl");
        c.args(["s_client", "-tls1_2", "-connect"])
            .arg(addr.to_string());
        c
    })
    .await;
    assert!(!ok, "a TLS 1.2 client was let in");

    // A client that connects and leaves.
    drop(TcpStream::connect(addr).await.unwrap());

    let proxy_ref = &proxy;
    let expect = [
        ("plain_http", 1),
        ("timeout", 1),
        ("malformed", 1),
        ("incompatible", 1),
        ("closed", 1),
    ];
    let mut text = String::new();
    for _ in 0..200 {
        text = support::metrics_text(proxy_ref).await;
        let counted = |reason: &str| {
            sum(
                &text,
                "weir_tls_handshake_failures_total",
                &format!("reason=\"{reason}\""),
            )
        };
        if expect.iter().all(|(r, n)| counted(r) >= *n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (reason, n) in expect {
        let line = format!("reason=\"{reason}\"}} {n}");
        assert!(text.contains(&line), "{reason}: {text}");
    }
    // And the next good client is served.
    let seen = https_get(addr, "site.test", &client_config(&site.ca, None))
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    assert!(
        seen.body.contains("x-forwarded-proto: https"),
        "{}",
        seen.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_broken_certificate_at_start_is_a_config_error_naming_the_file() {
    let site = Site::new("tls-broken-start").await;
    let (cert, _) = site.server("site", "site.test", &["site.test"]);
    std::fs::write(
        site.path("bad.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let other = site.server("other", "other.test", &["other.test"]);
    let cases = [
        (
            (cert.clone(), site.path("absent.key")),
            "absent.key: cannot read it",
        ),
        (
            (cert.clone(), site.path("bad.key")),
            "bad.key: the key is not usable",
        ),
        (
            (cert.clone(), other.1.clone()),
            "other.key: the key does not match the certificate",
        ),
    ];
    for (pair, want) in cases {
        let error = match TestProxy::try_start(&site.config(&tls_section(&[pair], ""))).await {
            Ok(_) => panic!("started with {want}"),
            Err(error) => weir::error::chain(&error).to_string(),
        };
        assert!(error.contains(want), "{error}");
        assert!(error.starts_with("test.toml:"), "{error}");
    }
}

/// Certificate rotation under four clients making new HTTPS connections:
/// none fails, new handshakes see the new certificate, and a broken
/// replacement is kept out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let site = Site::new("tls-rotate").await;
    let pair = site.server("site", "v1", &["site.test"]);
    let path = site.path("weir.toml");
    std::fs::write(&path, site.config(&tls_section(&[pair], ""))).unwrap();
    support::init_logging();
    let config = weir::Config::load(&path).unwrap();
    let server = weir::Server::start(config).await.unwrap();
    let addr = server.local_addrs()[0];
    let client = client_config(&site.ca, None);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, client) = (stop.clone(), client.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                // Bounded: stops when told, or after 20,000 requests.
                while !stop.load(Ordering::Relaxed) && seen.len() < 20_000 {
                    seen.push(
                        https_get(addr, "site.test", &client)
                            .await
                            .map(|s| (s.status, s.subject)),
                    );
                }
                seen
            })
        })
        .collect();
    let probe = |want: &'static str| {
        // A client of its own, without resumption: a resumed session
        // shows the certificate of the session it resumes.
        let client = fresh_client(&site.ca);
        async move {
            for _ in 0..600 {
                let seen = https_get(addr, "site.test", &client).await.unwrap();
                if seen.subject == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("new handshakes never saw {want}");
        }
    };
    probe("CN=v1").await;
    // The operator's rotation: certificate, then key, non-atomically.
    let next = site.ca.server("v2", &["site.test"]);
    std::fs::write(site.path("site.crt"), &next.cert).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(site.path("site.key"), &next.key).unwrap();
    probe("CN=v2").await;
    // A broken replacement: a truncated certificate. It is refused, v2
    // keeps serving.
    let reloads = server.reloads();
    std::fs::write(site.path("site.crt"), &next.cert[..100]).unwrap();
    wait_for("the reload that reads the broken file", || {
        server.reloads() > reloads
    })
    .await;
    let fresh = fresh_client(&site.ca);
    for _ in 0..5 {
        let seen = https_get(addr, "site.test", &fresh).await.unwrap();
        assert_eq!(seen.subject, "CN=v2");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for handle in clients {
        let seen = handle.await.unwrap();
        total += seen.len();
        let failed: Vec<_> = seen.iter().filter(|s| !matches!(s, Ok((200, _)))).collect();
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    assert!(total >= 20, "too little load: {total}");
    server.shutdown(Duration::from_secs(5)).await;
}

/// Reads `lines` until one contains every word of `words`, or 30 s pass.
async fn logged(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    words: &[&str],
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("weir never logged {words:?}"))
            .unwrap_or_else(|| panic!("weir exited before logging {words:?}"));
        if words.iter().all(|w| line.contains(w)) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_expiring_certificates_serve_with_a_warning_that_dates_them() {
    let site = Site::new("tls-expiry").await;
    let expired = site
        .ca
        .server_valid("old", &["old.test"], -30, -1)
        .write(&site.dir.0, "old");
    let soon = site
        .ca
        .server_valid("soon", &["soon.test"], -30, 5)
        .write(&site.dir.0, "soon");
    let path = site.path("weir.toml");
    std::fs::write(&path, site.config(&tls_section(&[expired, soon], ""))).unwrap();
    // Its log from the first line: the warnings come before it listens.
    let (_child, stderr) = support::spawn_run(&path);
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = logged(&mut lines, &["WARN", "old.crt expired on 20"]).await;
    assert!(line.contains("listener=127.0.0.1:0"), "{line}");
    logged(&mut lines, &["WARN", "soon.crt expires soon, on 20"]).await;
}

/// An RSA and an ECDSA certificate for one name: each client gets the one
/// it can verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_twin_is_served_to_clients_that_only_take_rsa() {
    let site = Site::new("tls-rsa").await;
    let ecdsa = site.server("ec", "ecdsa", &["site.test"]);
    let (rsa_cert, rsa_key) = (site.path("rsa.crt"), site.path("rsa.key"));
    let mut command = Command::new("openssl");
    command
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rsa",
        ])
        .args(["-addext", "subjectAltName=DNS:site.test", "-keyout"])
        .arg(&rsa_key)
        .arg("-out")
        .arg(&rsa_cert);
    let (ok, _, err) = run(command).await;
    assert!(ok, "openssl req: {err}");
    let proxy =
        TestProxy::start(&site.config(&tls_section(&[ecdsa, (rsa_cert, rsa_key)], ""))).await;
    let addr = addr_of(&proxy);
    let subject = served_subject(addr, Some("site.test"), &[]).await;
    assert!(subject.ends_with("CN = ecdsa"), "{subject}");
    let rsa_only = [
        "-tls1_2",
        "-sigalgs",
        "RSA-PSS+SHA256:RSA+SHA256",
        "-cipher",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ];
    let subject = served_subject(addr, Some("site.test"), &rsa_only).await;
    assert!(subject.ends_with("CN = rsa"), "{subject}");
    // And with no server name, the default's twin too.
    let subject = served_subject(addr, None, &rsa_only).await;
    assert!(subject.ends_with("CN = rsa"), "{subject}");
}

/// The verified client subject reaches filters: the `headers` filter
/// passes it to the backend, and a client's forged header is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_see_the_client_certificate_subject() {
    let site = Site::new("tls-filter").await;
    let pair = site.server("site", "site.test", &["site.test"]);
    let ca_file = site.path("ca.pem").display().to_string();
    let tls = tls_section(&[pair], "")
        + &format!("[listeners.tls.client_auth]\nca_file = {ca_file:?}\nrequired = false\n");
    let config = site.config(&tls).replace(
        "[[routes]]\nupstream = \"web\"\n",
        "[[routes]]\nupstream = \"web\"\n[[routes.filters]]\nplugin = \"headers\"\nsettings = { client_cert_header = \"X-Client-Cert\" }\n",
    );
    let proxy = TestProxy::start(&config).await;
    let addr = addr_of(&proxy);
    let alice = site.ca.client("alice");
    let seen = https_get(addr, "site.test", &client_config(&site.ca, Some(&alice)))
        .await
        .unwrap();
    assert!(
        seen.body.contains("x-client-cert: CN=alice\n"),
        "{}",
        seen.body
    );
    // Without a certificate, a forged header does not get through.
    let ca = site.path("ca.pem");
    let (ok, out, err) = run(curl(
        addr,
        "site.test",
        &ca,
        &["-H", "X-Client-Cert: CN=root"],
    ))
    .await;
    assert!(ok, "{err}");
    assert!(!out.contains("x-client-cert"), "{out}");
}
