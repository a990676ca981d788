//! Listeners: bind, accept connections through an [`Acceptor`], and serve
//! HTTP on each (HTTP/1.1 and HTTP/2, as the connection allows) until
//! shutdown, handing every request with its connection's
//! [`ConnectionInfo`] to a handler.

mod acceptor;
mod activity;
mod bind;
mod clock;
mod close;
mod drive;
mod framing;
mod hibernate;
mod serving;
mod sniff;
mod spells;
mod tls;
mod watched;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

pub use acceptor::{Acceptor, PlainTcp};
pub use bind::{BindError, Bound, bind, bind_copies};
pub use hibernate::hibernation_counts;
pub use tls::{HandshakeFailure, HandshakeStats, TlsAcceptor};

use crate::config::FrontLimits;
use crate::connection::{ConnectionInfo, Protocols};
use crate::proxy::{ProxyBody, Refusal, RefusedRequests};
use activity::Activity;
use clock::Clock;
use close::EveryFewSeconds;
use watched::Watched;

/// HTTP/2 streams a client may reset before weir accepts them, before the
/// connection is closed with GOAWAY (h2's default, its CVE-2023-44487 fix).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// HTTP/2 streams weir may reset for the client's errors (a header list
/// over the limit, a stream over the concurrency limit) before the
/// connection is closed with GOAWAY; hyper allows 1024.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 100;

/// How long a connection being closed for a flood or a timeout has to
/// send its GOAWAY and finish, before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What serves the requests of one listener.
pub struct Serve<A, H> {
    /// Completes each accepted connection.
    pub acceptor: A,
    /// Answers each request.
    pub handler: H,
    /// HTTP/1.1 only, whatever the connection could do (the admin API).
    pub http1_only: bool,
    /// Its limits and where what they refuse is counted, shared by its
    /// connections.
    front: Arc<Front>,
    /// The listener's `max_connections` slots, shared by the accept loops
    /// of all its copies (one per worker).
    slots: Arc<Semaphore>,
}

impl<H> Serve<PlainTcp, H> {
    /// Serves plain TCP connections with `handler`, within `limits`.
    pub fn new(
        handler: H,
        http1_only: bool,
        limits: FrontLimits,
        refused: Option<Arc<RefusedRequests>>,
    ) -> Self {
        Serve {
            acceptor: PlainTcp,
            handler,
            http1_only,
            front: Arc::new(Front { limits, refused }),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
        }
    }
}

impl<A, H> Serve<A, H> {
    /// The same, accepting with `acceptor` instead.
    pub fn with_acceptor<B>(self, acceptor: B) -> Serve<B, H> {
        Serve {
            acceptor,
            handler: self.handler,
            http1_only: self.http1_only,
            front: self.front,
            slots: self.slots,
        }
    }
}

/// A listener's limits: head size (over it 431), header read and idle
/// timeouts, connections, HTTP/2 streams; and where the refusals and
/// closes they cause are counted, if anywhere. One per listener, so that
/// a connection holds a pointer to them, not a copy.
struct Front {
    limits: FrontLimits,
    refused: Option<Arc<RefusedRequests>>,
}

/// Accepts connections on `listener` and serves them with `serve` until
/// `shutdown` fires (the copies of one listener share one `serve`, and so
/// its `max_connections`); then stops accepting and waits for open connections to
/// finish their current requests. A connection over `max_connections` is
/// closed as soon as it is accepted (counted, logged at most every few
/// seconds): refused at once, a client can go elsewhere, where one held in
/// the kernel's backlog would wait unseen.
pub async fn accept_loop<A, H, F>(
    listener: TcpListener,
    serve: Arc<Serve<A, H>>,
    mut shutdown: watch::Receiver<bool>,
) where
    A: Acceptor,
    H: Fn(Request<Incoming>, Arc<ConnectionInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let over_limit = EveryFewSeconds::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let Ok(slot) = serve.slots.clone().try_acquire_owned() else {
                        if let Some(refused) = &serve.front.refused {
                            refused.count(Refusal::MaxConnections);
                        }
                        if let Some(dropped) = over_limit.due() {
                            tracing::warn!(
                                listener = ?local,
                                %client,
                                max_connections = serve.front.limits.max_connections,
                                also_refused = dropped,
                                "connection refused: the listener is at max_connections"
                            );
                        }
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let info = ConnectionInfo::plain(client, local.unwrap_or(client));
                    let task = connection(stream, info, serve.clone(), shutdown.clone(), slot);
                    connections.spawn(task);
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One client connection: the acceptor's part, then HTTP until it closes or
/// shutdown asks it to finish. It holds its listener `slot` throughout.
/// The task is its [`spells::Spells`]: the first of them does all this up
/// to the connection's first hibernation.
fn connection<A, H, F>(
    tcp: tokio::net::TcpStream,
    info: ConnectionInfo,
    serve: Arc<Serve<A, H>>,
    shutdown: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static
where
    A: Acceptor,
    H: Fn(Request<Incoming>, Arc<ConnectionInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    spells::Spells::new(async move {
        let client = info.client;
        let (stream, info) = match serve.acceptor.accept(tcp, info).await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%client, %error, "connection refused by its acceptor");
                return None;
            }
        };
        let protocols = if serve.http1_only {
            Protocols::Http1
        } else {
            info.protocols()
        };
        let info = Arc::new(info);
        let activity = Activity::new(Clock::new(&serve.front.limits).floor());
        let handler = serve.handler.clone();
        let requests = activity.clone();
        let service = service_fn(move |request| {
            let request_open = requests.begin(framing::body_framing(&request));
            let answer = handler(request, info.clone());
            async move {
                let response = answer.await;
                Ok::<_, Infallible>(response.map(|body| request_open.answered(body)))
            }
        });
        // The stream holds the slot: an upgraded connection (a tunnel) keeps
        // it after HTTP is done with the connection.
        let stream = Watched::new(stream, activity.clone(), slot);
        let watch = Watch {
            activity,
            client,
            front: serve.front.clone(),
        };
        drop(serve);
        spells::first(stream, service, protocols, watch, shutdown).await
    })
}

/// What a connection is watched with: its activity, for its timeouts and
/// flood check, and where what they close is counted.
struct Watch {
    activity: Arc<Activity>,
    client: SocketAddr,
    front: Arc<Front>,
}

impl Watch {
    fn limits(&self) -> &FrontLimits {
        &self.front.limits
    }

    fn count(&self, refusal: Refusal) {
        if let Some(refused) = &self.front.refused {
            refused.count(refusal);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Refuses the first connection it is handed, as a TLS acceptor refuses
    /// a failed handshake, and passes the rest through.
    #[derive(Default)]
    struct RefuseFirst(AtomicBool);

    impl Acceptor for RefuseFirst {
        type Stream = tokio::net::TcpStream;

        async fn accept(
            &self,
            tcp: tokio::net::TcpStream,
            info: ConnectionInfo,
        ) -> std::io::Result<(tokio::net::TcpStream, ConnectionInfo)> {
            if !self.0.swap(true, Ordering::SeqCst) {
                return Err(std::io::Error::other("handshake refused"));
            }
            Ok((tcp, info))
        }
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> (SocketAddr, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = stream.local_addr().unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer));
        // A connection dropped with our request unread is reset: no answer.
        let _ = read.await.expect("the server closes the connection");
        (me, String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn a_refused_connection_costs_only_itself_and_requests_see_their_connection() {
        let (listener, local) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let handler = |_request, conn: Arc<ConnectionInfo>| async move {
            let body = format!("{} {} {:?}", conn.client, conn.local, conn.scheme());
            crate::proxy::text(http::StatusCode::OK, body)
        };
        let limits = FrontLimits {
            max_head_bytes: 8192,
            ..FrontLimits::default()
        };
        let serve = Serve::new(handler, false, limits, None).with_acceptor(RefuseFirst::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::new(serve), stopped));
        let request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let (_, refused) = exchange(local, request).await;
        assert_eq!(refused, "", "the refused connection is closed unanswered");
        let (me, answer) = exchange(local, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with(&format!("{me} {local} \"http\"")),
            "{answer}"
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the loop stops at shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn an_http1_only_listener_refuses_the_http2_preface() {
        let (listener, local) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let handler = |_request, _conn| async { crate::proxy::text(http::StatusCode::OK, "") };
        let serve = Serve::new(handler, true, FrontLimits::default(), None);
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::new(serve), stopped));
        let (_, answer) = exchange(local, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert!(!answer.contains("HTTP/2"), "{answer}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
}
