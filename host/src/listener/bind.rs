//! Binding a listener's sockets: one, or one copy per worker sharing the
//! address with `SO_REUSEPORT`, so each worker accepts on its own socket
//! and the kernel spreads connections across them (no shared accept queue
//! to contend on, no thread woken for a connection another takes).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The kernel's queue of connections not yet accepted, per socket: what
/// tokio's `TcpListener::bind` and nginx's default use (Linux caps it at
/// `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

/// A listener's socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The sockets of one listener address.
#[derive(Debug)]
pub struct Bound {
    /// The first copy, registered with the calling runtime.
    pub first: TcpListener,
    /// The other copies, not registered with any runtime yet: each goes to
    /// a worker, which makes it a [`TcpListener`] on its own runtime
    /// ([`TcpListener::from_std`]).
    pub copies: Vec<std::net::TcpListener>,
    /// The address actually bound (port 0 resolved).
    pub local: SocketAddr,
}

/// Binds `addr`; returns the listener and the address actually bound (port
/// 0 resolved).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let bound = bind_copies(addr, 1)?;
    Ok((bound.first, bound.local))
}

/// Binds `addr` `copies` times (at least once). With more than one, every
/// copy has `SO_REUSEPORT`, and the copies after the first bind the port
/// the first was given (so port 0 works). Linux only lets sockets of the
/// same user share a port this way.
///
/// The first copy binds *before* it sets `SO_REUSEPORT`, so its bind is
/// exclusive: a port another process (a stale weir) holds is refused as
/// ever, instead of weir quietly joining it and splitting its traffic,
/// and port 0 is given a port nobody holds (the kernel would otherwise
/// hand two weirs one port, each receiving half of the other's clients).
pub fn bind_copies(addr: SocketAddr, copies: usize) -> Result<Bound, BindError> {
    let shared = copies > 1;
    let err = |source| BindError { addr, source };
    let first = socket(addr, Reuse::AfterBind(shared)).map_err(err)?;
    let local = first.local_addr().map_err(err)?;
    let others = (1..copies)
        .map(|_| {
            let copy = socket(local, Reuse::BeforeBind)?;
            copy.into_std()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok(Bound {
        first,
        copies: others,
        local,
    })
}

/// When a socket sets `SO_REUSEPORT`.
#[derive(Clone, Copy)]
enum Reuse {
    /// After its bind, if at all: the first copy, bound exclusively, then
    /// open to its own copies (the kernel forms the group at `listen`).
    AfterBind(bool),
    /// Before its bind: a copy joining the first's port.
    BeforeBind,
}

fn socket(addr: SocketAddr, reuse: Reuse) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // What std and tokio set on Unix: a restarted weir can bind at once.
    socket.set_reuseaddr(true)?;
    if let Reuse::BeforeBind = reuse {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    if let Reuse::AfterBind(true) = reuse {
        socket.set_reuseport(true)?;
    }
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn copies_share_the_port_the_first_was_given() {
        let bound = bind_copies("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_ne!(bound.local.port(), 0);
        assert_eq!(bound.copies.len(), 2);
        for copy in &bound.copies {
            assert_eq!(copy.local_addr().unwrap(), bound.local);
        }
        // Together the copies accept every connection.
        let accepted = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let mut listeners = vec![bound.first];
        for copy in bound.copies {
            listeners.push(TcpListener::from_std(copy).unwrap());
        }
        for listener in listeners {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                    accepted.add_permits(1);
                }
            });
        }
        let mut clients = Vec::new();
        for _ in 0..30 {
            clients.push(tokio::net::TcpStream::connect(bound.local).await.unwrap());
        }
        let all = tokio::time::timeout(Duration::from_secs(30), accepted.acquire_many(30)).await;
        assert!(all.is_ok(), "the copies accepted fewer than 30 connections");
    }

    #[tokio::test]
    async fn a_listener_never_joins_a_port_someone_else_holds() {
        // Another weir's shared listener on an explicit port: ours is
        // refused, not quietly added to its group.
        let theirs = bind_copies("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let error = bind_copies(theirs.local, 2).unwrap_err();
        assert_eq!(error.source.kind(), std::io::ErrorKind::AddrInUse);
        // And port 0 never lands on a port a shared listener holds.
        let mut held = vec![theirs];
        for _ in 0..200 {
            let ours = bind_copies("127.0.0.1:0".parse().unwrap(), 2).unwrap();
            assert!(
                held.iter().all(|h| h.local != ours.local),
                "port 0 gave {} twice",
                ours.local
            );
            held.push(ours);
        }
    }

    #[tokio::test]
    async fn one_copy_does_not_share_its_port() {
        let (_listener, local) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        // Without SO_REUSEPORT on the first, a second socket cannot join it.
        let error = bind_copies(local, 2).unwrap_err();
        assert_eq!(error.addr, local);
        assert_eq!(error.source.kind(), std::io::ErrorKind::AddrInUse);
    }
}
