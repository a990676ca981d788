//! Hibernation: an HTTP/1.1 client connection idle between requests is
//! held as its socket alone (and, over TLS, its rustls session), not as
//! hyper's connection with its 8 KiB read and write buffers (hyper keeps
//! both for a connection's life).
//!
//! After [`HIBERNATE_AFTER`] idle, the stream ([`Watched`]) answers
//! hyper's next read with EOF if hyper provably holds nothing (see
//! [`super::framing`]) and neither does the stream under it
//! ([`drained`]); hyper, idle with an empty buffer, ends the connection
//! cleanly without writing anything, and weir takes back the stream and
//! the service, waits for the socket to become readable, and serves it
//! with a new hyper connection. The connection's clock runs on: a
//! hibernated connection still closes at `idle_timeout`, and its first
//! byte starts the head clock. Plain TCP and TLS over TCP: a TLS
//! session's keys stay, and rustls' read buffer, which it shrinks to 4 KiB
//! when it has nothing buffered. HTTP/2 connections do not hibernate (their
//! HPACK tables and stream state live in hyper's connection).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::Refusal;
use super::activity::Activity;
use super::clock::{Clock, Expiry};
use super::spells::Resting;
use super::watched::Watched;

/// How long an HTTP/1.1 connection idles before it hibernates: long
/// against the gaps between a busy client's requests (microseconds on a
/// keep-alive connection under load), so a busy connection never pays
/// the teardown; short, so that a burst of new connections does not pile
/// up their buffers before the first of them sleeps (nginx and HAProxy
/// free an idle connection's buffers at once). The connection's clock
/// re-arms its timer at every idle spell anyway: this only moves it.
pub(super) const HIBERNATE_AFTER: Duration = Duration::from_millis(50);

/// Connections hibernated now, and hibernations ever.
static ASLEEP: AtomicU64 = AtomicU64::new(0);
static HIBERNATIONS: AtomicU64 = AtomicU64::new(0);

/// Client connections hibernated now, and hibernations since start, for
/// `/metrics`.
pub fn hibernation_counts() -> (u64, u64) {
    (
        ASLEEP.load(Ordering::Relaxed),
        HIBERNATIONS.load(Ordering::Relaxed),
    )
}

/// Counts one connection asleep for as long as it lives.
struct Asleep;

impl Asleep {
    fn new() -> Asleep {
        ASLEEP.fetch_add(1, Ordering::Relaxed);
        HIBERNATIONS.fetch_add(1, Ordering::Relaxed);
        Asleep
    }
}

impl Drop for Asleep {
    fn drop(&mut self) {
        ASLEEP.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP socket under `stream`, if it is one weir can wait on alone.
pub(super) fn socket<IO: 'static>(stream: &Watched<IO>) -> Option<&TcpStream> {
    socket_of(stream.get_ref())
}

/// The TCP socket under `io`: itself, or the one a TLS session runs on;
/// none for any other stream (it never hibernates).
fn socket_of<IO: 'static>(io: &IO) -> Option<&TcpStream> {
    let io = io as &dyn Any;
    if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        return Some(tcp);
    }
    io.downcast_ref::<TlsStream<TcpStream>>()
        .map(|tls| tls.get_ref().0)
}

/// Whether `io` has handed on everything it read from the client and sent
/// everything it was given, so that a connection asleep on its socket
/// misses nothing: what the client sends next wakes the socket. Plain TCP
/// always has (what it has not read is in the socket). A TLS session has
/// when rustls holds no decrypted bytes (a record can carry more than
/// hyper read: they would never wake the socket), has nothing left to
/// send, and the client has not closed it (hyper is to read that EOF);
/// a record that fails to decrypt keeps it awake too, for hyper to meet
/// the error.
pub(super) fn drained<IO: 'static>(io: &mut IO) -> bool {
    let Some(tls) = (io as &mut dyn Any).downcast_mut::<TlsStream<TcpStream>>() else {
        return true;
    };
    let (_, session) = tls.get_mut();
    if session.wants_write() {
        return false;
    }
    // Processes only complete records not yet processed: none, usually,
    // as the last read processed all it received.
    match session.process_new_packets() {
        Ok(state) => state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed(),
        Err(_) => false,
    }
}

/// When a connection going to sleep under `clock` is to be closed, and
/// why. Nothing reads the socket or serves a request while it sleeps: the
/// phase (an idle spell) holds, and so does its deadline, slept to without
/// the clock's loop (a smaller task to hold). Busy cannot be.
pub(super) fn due(activity: &Activity, clock: Clock) -> (Instant, Expiry) {
    let clock = Clock {
        hibernate: None,
        ..clock
    };
    activity
        .due(&clock)
        .unwrap_or((Instant::now() + clock.idle, Expiry::Idle))
}

/// Holds a hibernated connection until its client sends something (or
/// closes): true, serve it again; false if it is to be dropped instead
/// (at [`due`]'s deadline, or at shutdown). One borrow of the connection's
/// state, not one of each part, so that the wait holds as little as it
/// can (it is what each hibernated connection holds, with that state).
pub(super) async fn sleep<IO: 'static, S>(resting: &mut Resting<IO, S>) -> bool {
    let (deadline, expiry) = due(&resting.watch.activity, resting.clock());
    let Resting {
        stream,
        watch,
        shutdown,
        ..
    } = resting;
    let Some(socket) = socket(stream) else {
        return true;
    };
    let _asleep = Asleep::new();
    tokio::select! {
        // Polled in place: `readable()` would hold a 152-byte future.
        ready = std::future::poll_fn(|cx| socket.poll_read_ready(cx)) => ready.is_ok(),
        _ = tokio::time::sleep_until(deadline) => {
            let refusal = match expiry {
                Expiry::Header => Refusal::HeaderTimeout,
                _ => Refusal::IdleTimeout,
            };
            watch.count(refusal);
            tracing::debug!(client = %watch.client, "closing the hibernated connection: {}", refusal.why());
            false
        }
        _ = shutdown.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A TLS 1.3 session over loopback: weir's side and the client's.
    async fn tls_pair() -> (
        TlsStream<TcpStream>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let cert = CertificateDer::from(made.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = crate::tls::provider();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let accepting = async {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap()
        };
        let connecting = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("a.test").unwrap();
            connector.connect(name, tcp).await.unwrap()
        };
        tokio::join!(accepting, connecting)
    }

    #[tokio::test]
    async fn a_tls_session_holding_decrypted_bytes_is_not_drained() {
        let (mut server, mut client) = tls_pair().await;
        assert!(
            socket_of(&server).is_some(),
            "TLS over TCP sleeps on its socket"
        );
        assert!(drained(&mut server), "nothing received yet");
        // One record of 1,000 bytes; weir's side reads 10 of them (as hyper
        // would with a nearly full buffer): rustls holds the other 990.
        client.write_all(&[b'x'; 1000]).await.unwrap();
        client.flush().await.unwrap();
        let mut some = [0u8; 10];
        server.read_exact(&mut some).await.unwrap();
        assert!(!drained(&mut server), "990 decrypted bytes are held");
        let mut rest = [0u8; 990];
        server.read_exact(&mut rest).await.unwrap();
        assert!(drained(&mut server), "all read");
        // The client closes the session: once rustls has seen it, hyper is
        // to read the EOF, not sleep through it.
        client.shutdown().await.unwrap();
        let mut eof = [0u8; 1];
        assert_eq!(server.read(&mut eof).await.unwrap(), 0);
        assert!(!drained(&mut server), "the client closed");
    }

    #[test]
    fn what_a_hibernated_connection_holds_beside_its_task_is_small() {
        let stream = std::mem::size_of::<Watched<TcpStream>>();
        let framing = std::mem::size_of::<super::super::framing::Framing>();
        println!("a hibernated stream: {stream} bytes, its framing {framing}");
        assert!(stream <= 128, "{stream} bytes");
    }
}
