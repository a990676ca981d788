//! Which protocol a plain-HTTP client speaks, from its first bytes: the
//! HTTP/2 connection preface (prior knowledge, RFC 9113 §3.3), or else
//! HTTP/1.1. What was read is given back to the stream, for hyper to read.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::clock::{Clock, Expiry};
use super::watched::Watched;
use super::{Refusal, Watch};
use crate::connection::Protocols;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes are the preface, or cannot be: how many were
/// read (fewer than the preface's length at EOF), none on a read error.
async fn read_while_preface<IO: AsyncRead + Unpin>(
    stream: &mut IO,
    got: &mut [u8; PREFACE.len()],
) -> Option<usize> {
    let mut n = 0;
    while n < PREFACE.len() && got[..n] == PREFACE[..n] {
        match stream.read(&mut got[n..]).await {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(_) => return None,
        }
    }
    Some(n)
}

/// The protocol `stream`'s client speaks, the bytes read given back to
/// it; none if the connection is to be dropped (a read error, the header
/// timeout, shutdown).
pub(super) async fn protocol<IO: AsyncRead + Unpin + 'static>(
    stream: &mut Watched<IO>,
    watch: &Watch,
    shutdown: &mut watch::Receiver<bool>,
    clock: Clock,
) -> Option<Protocols> {
    let mut got = [0; PREFACE.len()];
    let read = tokio::select! {
        read = read_while_preface(stream, &mut got) => read?,
        expired = watch.activity.expired(clock) => {
            // A new connection owes its first head: only the head clock runs.
            if expired == Some(Expiry::Header) {
                watch.count(Refusal::HeaderTimeout);
                tracing::debug!(client = %watch.client, "closing the connection: {}", Refusal::HeaderTimeout.why());
            }
            return None;
        }
        _ = shutdown.changed() => return None,
    };
    stream.unread(&got[..read]);
    Some(if got[..read] == PREFACE[..] {
        Protocols::Http2
    } else {
        Protocols::Http1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_is_read_across_writes_and_a_request_stops_at_its_first_byte() {
        let mut got = [0; PREFACE.len()];
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let n = read_while_preface(&mut server, &mut got).await;
            (n, got)
        });
        use tokio::io::AsyncWriteExt;
        for part in PREFACE.chunks(5) {
            client.write_all(part).await.unwrap();
            tokio::task::yield_now().await;
        }
        let (n, mut got) = reader.await.unwrap();
        assert_eq!((n, &got), (Some(24), PREFACE));
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HTTP/1.1\r\n").await.unwrap();
        let n = read_while_preface(&mut server, &mut got).await.unwrap();
        assert!(n > 0 && got[..n] != PREFACE[..n]);
        drop(client);
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert_eq!(read_while_preface(&mut server, &mut got).await, Some(0));
    }
}
