//! Idle HTTP/1.1 client connections hibernate (hyper's connection and its
//! buffers dropped, the socket held alone, with its TLS session if it has
//! one) and wake for the next request: the real `weir` binary on port 0,
//! raw sockets or a rustls client on them, `/metrics` to see each
//! hibernation, and the hostile cases where hyper's buffer could hold part
//! of a request when the connection goes to sleep. Each case runs over
//! plain TCP and over TLS.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::certs::TestCa;
use support::weir_run::WeirRun;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the client reaches weir.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Over {
    Tcp,
    Tls,
}

/// A client connection, over TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Client = Box<dyn Stream>;

/// weir (with an admin API) in front of an echo backend, `listener` lines
/// added to its listener, which speaks TLS when `over` says so.
struct Idle {
    run: WeirRun,
    /// The client's TLS settings, trusting weir's certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
    _backend: TestBackend,
    _dir: TempDir,
}

impl Idle {
    async fn start(listener: &str) -> Idle {
        Idle::over(Over::Tcp, listener).await
    }

    async fn over(over: Over, listener: &str) -> Idle {
        let backend = TestBackend::start("echo", Behaviour::Echo).await;
        let dir = TempDir::new("idle");
        let (tls_lines, tls) = match over {
            Over::Tcp => (String::new(), None),
            Over::Tls => {
                let ca = TestCa::new("idle test CA");
                let (cert, key) = ca.server("localhost", &["localhost"]).write(&dir.0, "weir");
                let lines = format!(
                    "[listeners.tls]\n[[listeners.tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
                    cert.display().to_string(),
                    key.display().to_string()
                );
                (lines, Some(client_config(&ca)))
            }
        };
        let text = config_text(&[backend.addr], "", "").replacen(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
            &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{listener}\n{tls_lines}\n"),
            1,
        );
        let path = dir.0.join("weir.toml");
        let text = format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n");
        std::fs::write(&path, text).unwrap();
        let run = WeirRun::start(&path, true).await;
        Idle {
            run,
            tls,
            _backend: backend,
            _dir: dir,
        }
    }

    /// A new connection to weir (TLS handshake done, when over TLS).
    async fn connect(&self) -> Client {
        self.try_connect().await.expect("TLS handshake")
    }

    /// A new connection, or the handshake's error when weir closes it first.
    async fn try_connect(&self) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(self.run.proxy).await.unwrap();
        let Some(config) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        Ok(Box::new(connector.connect(name, tcp).await?))
    }

    /// The sum of every sample of `name` (all its label sets).
    async fn metric_sum(&self, name: &str) -> u64 {
        let (_, text) = admin(self.run.admin.unwrap(), "GET", "/metrics", None, "").await;
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
            .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    }

    async fn metric(&self, name: &str) -> u64 {
        let (_, text) = admin(self.run.admin.unwrap(), "GET", "/metrics", None, "").await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Waits until `name` reads `value`.
    async fn wait_metric(&self, name: &str, value: u64) {
        let mut last = 0;
        for _ in 0..600 {
            last = self.metric(name).await;
            if last == value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name} stayed {last}, not {value}\n{}", self.run.log_text());
    }

    /// Waits until `hibernations` connections hibernated in all and
    /// `asleep` are hibernated now.
    async fn hibernated(&self, hibernations: u64, asleep: u64) {
        self.wait_metric("weir_client_hibernations_total", hibernations)
            .await;
        self.wait_metric("weir_client_connections_hibernated", asleep)
            .await;
    }

    async fn refused(&self, reason: &str) -> u64 {
        self.metric(&format!(
            "weir_requests_refused_total{{reason=\"{reason}\"}}"
        ))
        .await
    }
}

/// Reads `count` responses (each with a `content-length`) off `stream`;
/// their heads and bodies.
async fn responses(stream: &mut (impl AsyncRead + Unpin), count: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut answers = Vec::new();
    let read = async {
        while answers.len() < count {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap_or_else(|| panic!("no content-length in {head}"))
                    .parse()
                    .unwrap();
                if got.len() >= end + 4 + length {
                    let answer: Vec<u8> = got.drain(..end + 4 + length).collect();
                    answers.push(String::from_utf8_lossy(&answer).into_owned());
                    continue;
                }
            }
            let mut buf = [0; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {answers:?}");
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the answers in time");
    assert!(got.is_empty(), "more than {count} answers");
    answers
}

/// Whether the server closes `stream` (within 30 s) without answering.
async fn closed(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf));
    matches!(read.await.expect("closed in time"), Ok(0) | Err(_))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Asserts `answer` is a 200 echo of `request_line` with `body` bytes.
fn echoed(answer: &str, request_line: &str, body: usize) {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(request_line), "{request_line} in {answer}");
    assert!(
        answer.contains(&format!("body-bytes: {body}\n")),
        "{body} body bytes in {answer}"
    );
}

/// A rustls client trusting `ca`, offering HTTP/1.1.
fn client_config(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(weir::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn an_idle_connection_hibernates_and_serves_get_post_then_chunked_tainted() {
    hibernates_and_serves(Over::Tcp).await;
}

#[tokio::test]
async fn an_idle_connection_hibernates_and_serves_get_post_then_chunked_tainted_over_tls() {
    hibernates_and_serves(Over::Tls).await;
}

async fn hibernates_and_serves(over: Over) {
    let idle = Idle::over(over, "").await;
    let mut stream = idle.connect().await;
    stream.write_all(get("/one").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /one", 0);
    idle.hibernated(1, 1).await;
    stream
        .write_all(post("/two", "hello").as_bytes())
        .await
        .unwrap();
    echoed(&responses(&mut stream, 1).await[0], "POST /two", 5);
    idle.hibernated(2, 1).await;
    let chunked = "POST /three HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    stream.write_all(chunked.as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "POST /three", 5);
    stream.write_all(get("/four").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /four", 0);
    // Tainted: it never hibernates again, and serves on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(idle.metric("weir_client_hibernations_total").await, 2);
    stream.write_all(get("/five").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /five", 0);
    if over == Over::Tls {
        // Asleep twice, and still the one session: no handshake after it.
        assert_eq!(idle.metric_sum("weir_tls_handshakes_total").await, 1);
    }
}

#[tokio::test]
async fn a_client_closing_a_hibernated_connection_ends_it() {
    client_closes(Over::Tcp).await;
}

#[tokio::test]
async fn a_client_closing_a_hibernated_tls_session_ends_it() {
    client_closes(Over::Tls).await;
}

/// The client ends its side (over TLS, a close_notify, then its FIN):
/// the sleeping connection wakes, reads the end, and is dropped.
async fn client_closes(over: Over) {
    let idle = Idle::over(over, "").await;
    let mut stream = idle.connect().await;
    stream.write_all(get("/one").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /one", 0);
    idle.hibernated(1, 1).await;
    stream.shutdown().await.unwrap();
    assert!(closed(&mut stream).await);
    idle.hibernated(1, 0).await;
    assert_eq!(idle.refused("idle_timeout").await, 0);
}

#[tokio::test]
async fn pipelined_requests_survive_hibernation_however_they_are_split() {
    pipelined_survive(Over::Tcp).await;
}

#[tokio::test]
async fn pipelined_requests_survive_hibernation_however_they_are_split_over_tls() {
    pipelined_survive(Over::Tls).await;
}

async fn pipelined_survive(over: Over) {
    let idle = Idle::over(over, "").await;
    let mut stream = idle.connect().await;
    let three = [get("/a"), post("/b", "x\n\nyz"), get("/c")].concat();
    stream.write_all(three.as_bytes()).await.unwrap();
    let answers = responses(&mut stream, 3).await;
    echoed(&answers[0], "GET /a", 0);
    echoed(&answers[1], "POST /b", 5);
    echoed(&answers[2], "GET /c", 0);
    idle.hibernated(1, 1).await;
    // Split at every byte around the first head's end, and around the
    // body's end where the next head begins.
    let pair = [post("/d", "hello"), get("/e")].concat();
    let head_end = pair.find("\r\n\r\n").unwrap() + 4;
    let body_end = head_end + 5;
    for split in (head_end - 4..=head_end + 1).chain(body_end - 1..=body_end + 2) {
        stream.write_all(&pair.as_bytes()[..split]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.write_all(&pair.as_bytes()[split..]).await.unwrap();
        let answers = responses(&mut stream, 2).await;
        echoed(&answers[0], "POST /d", 5);
        echoed(&answers[1], "GET /e", 0);
    }
    // Bare LF line ends, two in one write.
    let bare = "GET /f HTTP/1.1\nhost: x\n\nGET /g HTTP/1.1\nhost: x\n\n";
    stream.write_all(bare.as_bytes()).await.unwrap();
    let answers = responses(&mut stream, 2).await;
    echoed(&answers[0], "GET /f", 0);
    echoed(&answers[1], "GET /g", 0);
    // hyper was left holding nothing: the connection sleeps again.
    idle.hibernated(2, 1).await;
    stream.write_all(get("/h").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /h", 0);
    assert_eq!(idle.refused("bad_body").await, 0);
    assert_eq!(idle.refused("body_incomplete").await, 0);
}

#[tokio::test]
async fn a_slow_head_after_hibernation_and_a_first_byte_alone_meet_the_header_timeout() {
    slow_heads_meet_the_header_timeout(Over::Tcp).await;
}

#[tokio::test]
async fn a_slow_head_after_hibernation_and_a_first_byte_alone_meet_the_header_timeout_over_tls() {
    slow_heads_meet_the_header_timeout(Over::Tls).await;
}

async fn slow_heads_meet_the_header_timeout(over: Over) {
    let idle = Idle::over(
        over,
        "header_read_timeout_ms = 1500\nidle_timeout_ms = 60000",
    )
    .await;
    let mut stream = idle.connect().await;
    stream.write_all(get("/one").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /one", 0);
    idle.hibernated(1, 1).await;
    // Slowloris: a byte at a time, the head never finished.
    for byte in b"GET /slow HT" {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(closed(&mut stream).await);
    assert_eq!(idle.refused("header_timeout").await, 1);
    idle.hibernated(1, 0).await;
    // A fresh connection's first byte, then nothing.
    let mut stream = idle.connect().await;
    stream.write_all(b"G").await.unwrap();
    assert!(closed(&mut stream).await);
    assert_eq!(idle.refused("header_timeout").await, 2);
}

#[tokio::test]
async fn a_hibernated_connection_still_closes_at_the_idle_timeout() {
    closes_at_the_idle_timeout(Over::Tcp).await;
}

#[tokio::test]
async fn a_hibernated_connection_still_closes_at_the_idle_timeout_over_tls() {
    closes_at_the_idle_timeout(Over::Tls).await;
}

async fn closes_at_the_idle_timeout(over: Over) {
    let idle = Idle::over(over, "idle_timeout_ms = 3000").await;
    let mut stream = idle.connect().await;
    stream.write_all(get("/one").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /one", 0);
    idle.hibernated(1, 1).await;
    assert!(closed(&mut stream).await);
    idle.hibernated(1, 0).await;
    assert_eq!(idle.refused("idle_timeout").await, 1);
}

#[tokio::test]
async fn hibernated_connections_hold_their_max_connections_slot() {
    hold_their_slots(Over::Tcp).await;
}

#[tokio::test]
async fn hibernated_connections_hold_their_max_connections_slot_over_tls() {
    hold_their_slots(Over::Tls).await;
}

async fn hold_their_slots(over: Over) {
    let idle = Idle::over(over, "max_connections = 2").await;
    let mut held = Vec::new();
    for n in 0..2 {
        let mut stream = idle.connect().await;
        stream.write_all(get("/held").as_bytes()).await.unwrap();
        echoed(&responses(&mut stream, 1).await[0], "GET /held", 0);
        held.push(stream);
        idle.hibernated(n + 1, n + 1).await;
    }
    // Refused before a byte is read: over TLS the handshake itself fails.
    if let Ok(mut over) = idle.try_connect().await {
        let _ = over.write_all(get("/over").as_bytes()).await;
        assert!(closed(&mut over).await, "refused at max_connections");
    }
    assert_eq!(idle.refused("max_connections").await, 1);
    drop(held.pop());
    idle.hibernated(2, 1).await;
    let mut stream = idle.connect().await;
    stream.write_all(get("/freed").as_bytes()).await.unwrap();
    echoed(&responses(&mut stream, 1).await[0], "GET /freed", 0);
    // The one still held wakes and serves.
    held[0].write_all(get("/woke").as_bytes()).await.unwrap();
    echoed(&responses(&mut held[0], 1).await[0], "GET /woke", 0);
}

#[tokio::test]
async fn http2_prior_knowledge_is_sniffed_on_a_plain_listener() {
    use http_body_util::{BodyExt, Empty};
    let idle = Idle::start("").await;
    let mut sender = h2_connect::<Empty<bytes::Bytes>>(idle.run.proxy).await;
    for _ in 0..2 {
        let request = http::Request::get(format!("http://{}/h2", idle.run.proxy))
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("GET /h2"));
    }
    // A client that sends a prefix of the preface and then HTTP/1.1 bytes
    // is served HTTP/1.1 (and refused as a bad request, not hung).
    let addr: SocketAddr = idle.run.proxy;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(idle.metric("weir_client_hibernations_total").await, 0);
}
