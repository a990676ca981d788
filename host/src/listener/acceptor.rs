//! Acceptors: what turns an accepted TCP stream into the stream HTTP is
//! served over, and says what it learned about the connection. Plain TCP
//! is the identity; a TLS acceptor does its handshake here, on the
//! connection's own task, never on the accept loop.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::connection::ConnectionInfo;

/// Makes a served stream of an accepted TCP connection.
pub trait Acceptor: Send + Sync + 'static {
    /// The stream HTTP is served over.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Completes the connection `tcp` (a handshake, when there is one) and
    /// returns it with `info` completed (TLS facts). An error drops the
    /// connection: it costs that one client, never the listener.
    fn accept(
        &self,
        tcp: TcpStream,
        info: ConnectionInfo,
    ) -> impl Future<Output = io::Result<(Self::Stream, ConnectionInfo)>> + Send;
}

/// A plain TCP listener: the stream as accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainTcp;

impl Acceptor for PlainTcp {
    type Stream = TcpStream;

    async fn accept(
        &self,
        tcp: TcpStream,
        info: ConnectionInfo,
    ) -> io::Result<(TcpStream, ConnectionInfo)> {
        Ok((tcp, info))
    }
}
