//! Closing an HTTP/1.1 client connection that hyper has ended, as nginx's
//! lingering close does. hyper ends a connection after its response when
//! it cannot be kept: the client asked it closed, or the answer left the
//! request body unread (weir or a filter answered without it, it failed,
//! a backend answered before taking it). A client may
//! still be sending that body then. Closing a socket with unread bytes in
//! it makes the kernel send a reset, and a reset can throw away the
//! response the client has not read yet: the client sees an error where
//! weir answered. So weir first half-closes (its response is all written),
//! then reads and discards what still comes until the client closes its
//! side, for at most [`LINGER_FOR`] and [`LINGER_BYTES`]; then it closes.
//! The connection keeps its `max_connections` slot meanwhile. A connection
//! hyper hands to an upgrade weir did not make is closed the same way, by
//! the proxy's upgrade phase.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest a closing connection waits for its client to close.
pub const LINGER_FOR: Duration = Duration::from_secs(2);

/// The most a closing connection discards before it closes anyway.
pub const LINGER_BYTES: usize = 8 << 20;

/// How a lingering close ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Lingered {
    /// The client closed its side (or the connection failed): nothing lost.
    Closed,
    /// [`LINGER_FOR`] passed, or [`LINGER_BYTES`] came, first.
    CutOff,
}

/// Half-closes `stream`, then discards what its client still sends until
/// it closes, within the limits above.
pub async fn close<IO: AsyncRead + AsyncWrite + Unpin>(stream: &mut IO) -> Lingered {
    if stream.shutdown().await.is_err() {
        return Lingered::Closed;
    }
    let discard = async {
        let mut buf = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Lingered::Closed,
                Ok(n) => discarded += n,
            }
        }
        Lingered::CutOff
    };
    tokio::time::timeout(LINGER_FOR, discard)
        .await
        .unwrap_or(Lingered::CutOff)
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    #[tokio::test]
    async fn the_answer_reaches_a_client_still_sending_its_body() {
        let (mut server, mut client) = pair().await;
        // The client sends a body the server never reads, and reads the
        // answer only after all of it is sent.
        let sending = tokio::spawn(async move {
            let body = vec![b'x'; 256 * 1024];
            client.write_all(&body).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            client.shutdown().await.unwrap();
            answer
        });
        server.write_all(b"the answer").await.unwrap();
        assert_eq!(close(&mut server).await, Lingered::Closed);
        drop(server);
        assert_eq!(sending.await.unwrap(), b"the answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_closes_is_cut_off_in_time() {
        let (mut server, _client) = pair().await;
        assert_eq!(close(&mut server).await, Lingered::CutOff);
    }

    #[tokio::test]
    async fn a_client_that_sends_without_end_is_cut_off_at_the_byte_limit() {
        let (mut server, mut client) = pair().await;
        tokio::spawn(async move {
            let chunk = vec![b'x'; 256 * 1024];
            while client.write_all(&chunk).await.is_ok() {}
        });
        assert_eq!(close(&mut server).await, Lingered::CutOff);
    }
}
