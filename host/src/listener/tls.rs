//! The TLS acceptor: a handshake on the connection's own task, bounded in
//! time, with the certificate of the snapshot serving at that moment, so a
//! rotation applies to the next handshake and never fails one under way.
//! What the handshake settled (SNI, ALPN, version, client subject) goes
//! into the connection's [`TlsInfo`]; every outcome is counted.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::Acceptor;
use crate::connection::{ConnectionInfo, TlsInfo};
use crate::snapshot::Snapshot;
use crate::termination::ListenerAt;
use crate::tls::server::ServerTls;

/// Why a handshake failed, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client took longer than the handshake timeout.
    Timeout,
    /// The client closed or reset the connection before finishing.
    Closed,
    /// The client spoke plain HTTP to the TLS port (it gets a 400).
    PlainHttp,
    /// What the client sent is not TLS, or breaks its rules.
    Malformed,
    /// No TLS version, cipher suite, group or ALPN protocol in common.
    Incompatible,
    /// A client certificate was required and none was sent.
    NoClientCertificate,
    /// The client's certificate did not verify (unknown CA, expired, ...).
    BadClientCertificate,
    /// The client refused weir's certificate (its alert said so).
    CertificateRefused,
    /// The client ended with another alert.
    Alert,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [HandshakeFailure; 10] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::PlainHttp,
        HandshakeFailure::Malformed,
        HandshakeFailure::Incompatible,
        HandshakeFailure::NoClientCertificate,
        HandshakeFailure::BadClientCertificate,
        HandshakeFailure::CertificateRefused,
        HandshakeFailure::Alert,
        HandshakeFailure::Other,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::PlainHttp => "plain_http",
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::NoClientCertificate => "no_client_certificate",
            HandshakeFailure::BadClientCertificate => "bad_client_certificate",
            HandshakeFailure::CertificateRefused => "certificate_refused_by_client",
            HandshakeFailure::Alert => "alert",
            HandshakeFailure::Other => "other",
        }
    }

    /// Classifies the error a handshake ended with.
    pub fn of(error: &io::Error) -> HandshakeFailure {
        if let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return match tls {
                rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCertificate,
                rustls::Error::InvalidCertificate(_) => HandshakeFailure::BadClientCertificate,
                rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                    HandshakeFailure::Incompatible
                }
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
                | rustls::Error::PeerMisbehaved(_)
                | rustls::Error::DecryptError => HandshakeFailure::Malformed,
                rustls::Error::AlertReceived(alert) => match alert {
                    AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateExpired
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::AccessDenied => HandshakeFailure::CertificateRefused,
                    AlertDescription::ProtocolVersion
                    | AlertDescription::HandshakeFailure
                    | AlertDescription::InsufficientSecurity
                    | AlertDescription::NoApplicationProtocol => HandshakeFailure::Incompatible,
                    _ => HandshakeFailure::Alert,
                },
                _ => HandshakeFailure::Other,
            };
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
            io::ErrorKind::InvalidData => HandshakeFailure::Malformed,
            _ => HandshakeFailure::Other,
        }
    }
}

/// One listener's handshake counters.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    /// Completed handshakes: TLS 1.2 and 1.3, full and resumed.
    done: [[AtomicU64; 2]; 2],
    failed: [AtomicU64; HandshakeFailure::ALL.len()],
}

impl HandshakeStats {
    fn count_done(&self, version: Option<rustls::ProtocolVersion>, resumed: bool) {
        let v = usize::from(version != Some(rustls::ProtocolVersion::TLSv1_2));
        self.done[v][usize::from(resumed)].fetch_add(1, Relaxed);
    }

    fn count_failed(&self, why: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|&r| r == why)
            .unwrap_or(0);
        self.failed[i].fetch_add(1, Relaxed);
    }

    /// Completed handshakes as `(version, resumed, count)`.
    pub fn done(&self) -> Vec<(&'static str, bool, u64)> {
        let mut out = Vec::with_capacity(4);
        for (v, name) in ["TLSv1.2", "TLSv1.3"].into_iter().enumerate() {
            for resumed in [false, true] {
                out.push((
                    name,
                    resumed,
                    self.done[v][usize::from(resumed)].load(Relaxed),
                ));
            }
        }
        out
    }

    /// Failed handshakes by reason.
    pub fn failed(&self) -> Vec<(&'static str, u64)> {
        HandshakeFailure::ALL
            .iter()
            .zip(&self.failed)
            .map(|(r, n)| (r.label(), n.load(Relaxed)))
            .collect()
    }
}

/// Terminates TLS for the listener configured at `at`, with the TLS of
/// whichever snapshot serves when a client connects.
pub struct TlsAcceptor {
    state: Arc<ArcSwap<Snapshot>>,
    at: ListenerAt,
    /// The TLS last found in a snapshot: kept serving if a reload's config
    /// takes TLS off this listener (which applies at the next restart).
    last: ArcSwapOption<ServerTls>,
    stats: Arc<HandshakeStats>,
}

impl TlsAcceptor {
    /// The acceptor of the listener configured at `at`, counting into
    /// `stats`.
    pub fn new(state: Arc<ArcSwap<Snapshot>>, at: ListenerAt, stats: Arc<HandshakeStats>) -> Self {
        let last = ArcSwapOption::new(state.load().listener_tls().get(&at));
        TlsAcceptor {
            state,
            at,
            last,
            stats,
        }
    }

    fn current(&self) -> Option<Arc<ServerTls>> {
        match self.state.load().listener_tls().get(&self.at) {
            Some(tls) => {
                let stale = self
                    .last
                    .load()
                    .as_ref()
                    .is_none_or(|last| !Arc::ptr_eq(last, &tls));
                if stale {
                    self.last.store(Some(tls.clone()));
                }
                Some(tls)
            }
            None => self.last.load_full(),
        }
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        tls: &ServerTls,
    ) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        // A TLS record starts with 0x16; a letter is an HTTP method.
        let mut first = [0u8; 1];
        let peeked = tcp
            .peek(&mut first)
            .await
            .map_err(|e| HandshakeFailure::of(&e))?;
        if peeked == 0 {
            return Err(HandshakeFailure::Closed);
        }
        if first[0].is_ascii_uppercase() {
            refuse_plain_http(tcp).await;
            return Err(HandshakeFailure::PlainHttp);
        }
        acceptor
            .accept(tcp)
            .await
            .map_err(|e| HandshakeFailure::of(&e))
    }
}

/// What a client speaking plain HTTP to a TLS port is told, as nginx does.
async fn refuse_plain_http(mut tcp: TcpStream) {
    // Read what the request sent so far, so closing does not reset the
    // connection under the answer.
    let mut head = [0u8; 4096];
    let _ = tcp.read(&mut head).await;
    let body = "This port speaks HTTPS: use https:// to reach it.\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(answer.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

impl Acceptor for TlsAcceptor {
    type Stream = TlsStream<TcpStream>;

    async fn accept(
        &self,
        tcp: TcpStream,
        mut info: ConnectionInfo,
    ) -> io::Result<(TlsStream<TcpStream>, ConnectionInfo)> {
        let Some(tls) = self.current() else {
            return Err(io::Error::other("the listener has no TLS settings"));
        };
        let timeout = tls.spec.handshake_timeout;
        let outcome = match tokio::time::timeout(timeout, self.handshake(tcp, &tls)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(HandshakeFailure::Timeout),
        };
        let stream = match outcome {
            Ok(stream) => stream,
            Err(why) => {
                self.stats.count_failed(why);
                return Err(io::Error::other(format!(
                    "TLS handshake failed: {}",
                    why.label()
                )));
            }
        };
        let (_, session) = stream.get_ref();
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.stats.count_done(session.protocol_version(), resumed);
        info.tls = Some(Arc::new(TlsInfo {
            server_name: session.server_name().map(str::to_string),
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            version: session.protocol_version().map(crate::tls::version_name),
            client_subject: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::CertFacts::of(leaf).ok())
                .map(|facts| facts.subject),
        }));
        Ok((stream, info))
    }
}
