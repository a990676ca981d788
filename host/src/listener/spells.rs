//! A client connection's life as spells: awake (hyper serving it) and, on
//! HTTP/1.1 over TCP or TLS, asleep between requests (see
//! [`super::hibernate`]).
//! Each spell is its own boxed future, so the connection's task holds one
//! pointer, and a hibernated connection only what [`asleep`] needs: the
//! [`Resting`] state and the wait on its socket, deadline and shutdown.
//! Awake, hyper's connection and the clock's loop are allocated; asleep,
//! they are freed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::clock::Clock;
use super::serving::{Builders, Http1};
use super::watched::Watched;
use super::{Watch, drive, hibernate, sniff};
use crate::connection::Protocols;
use crate::linger;
use crate::proxy::ProxyBody;

/// What an HTTP/1.1 connection keeps from one spell to the next.
pub(super) struct Resting<IO, S> {
    pub(super) stream: Watched<IO>,
    pub(super) service: S,
    pub(super) watch: Watch,
    pub(super) shutdown: watch::Receiver<bool>,
    /// The idle spell it last tried to hibernate in: with the limits and
    /// whether it hibernates at all, its [`Clock`] (a copy is 64 bytes).
    pub(super) tried: Option<tokio::time::Instant>,
}

impl<IO: 'static, S> Resting<IO, S> {
    /// Whether the connection hibernates: over TCP or TLS on TCP, its
    /// stream framed.
    fn hibernates(&self) -> bool {
        hibernate::socket(&self.stream).is_some()
    }

    pub(super) fn clock(&self) -> Clock {
        Clock {
            hibernate: self.hibernates().then_some(hibernate::HIBERNATE_AFTER),
            tried: self.tried,
            ..Clock::new(self.watch.limits())
        }
    }
}

/// A spell: what the connection does until it ends (none) or turns over
/// (awake to asleep, or back).
type Spell<IO, S> = Pin<Box<dyn Future<Output = Option<Resting<IO, S>>> + Send>>;

/// The connection's task: its spells one after the other, awake first.
pub(super) struct Spells<IO, S> {
    spell: Spell<IO, S>,
    asleep: bool,
}

impl<IO, S> Spells<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service + Send + 'static,
    S::Future: Send + 'static,
{
    /// The task of a connection whose first spell is `first`.
    pub(super) fn new(
        first: impl Future<Output = Option<Resting<IO, S>>> + Send + 'static,
    ) -> Self {
        Spells {
            spell: Box::pin(first),
            asleep: false,
        }
    }
}

impl<IO, S> Future for Spells<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service + Send + 'static,
    S::Future: Send + 'static,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(resting) = ready!(self.spell.as_mut().poll(cx)) else {
                return Poll::Ready(());
            };
            let this = &mut *self;
            this.asleep = !this.asleep;
            this.spell = match this.asleep {
                true => Box::pin(asleep(resting)),
                false => Box::pin(awake(resting)),
            };
        }
    }
}

/// What serves a connection's requests.
pub(super) trait Service:
    hyper::service::Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
{
}

impl<S> Service for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        >
{
}

/// Serves HTTP on `stream` until it closes, its clock or flood check
/// closes it, or `shutdown` fires; or, an HTTP/1.1 connection over plain
/// TCP, until it hibernates (its state returned). A plain-HTTP client's
/// protocol is sniffed from its first bytes.
pub(super) async fn first<IO, S>(
    mut stream: Watched<IO>,
    service: S,
    protocols: Protocols,
    watch: Watch,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Resting<IO, S>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service + Send + 'static,
    S::Future: Send + 'static,
{
    let mut clock = Clock::new(watch.limits());
    let protocols = match protocols {
        Protocols::Auto => sniff::protocol(&mut stream, &watch, &mut shutdown, clock).await?,
        protocols => protocols,
    };
    if protocols == Protocols::Http2 {
        let mut connection = Builders::with(watch.limits(), |b| b.http2(stream, service));
        let ended = drive::drive(Pin::new(&mut connection), &watch, &mut shutdown, &mut clock);
        drive::ended(ended.await, &watch);
        return None;
    }
    if hibernate::socket(&stream).is_some() {
        stream.frame();
    }
    let resting = Resting {
        stream,
        service,
        watch,
        shutdown,
        tried: None,
    };
    awake(resting).await
}

/// Serves the connection with a new hyper HTTP/1.1 connection until it
/// ends (none) or, if its clock lets it hibernate, ends cleanly between
/// requests to do so.
async fn awake<IO, S>(resting: Resting<IO, S>) -> Option<Resting<IO, S>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service + Send + 'static,
    S::Future: Send + 'static,
{
    let mut clock = resting.clock();
    let Resting {
        stream,
        service,
        watch,
        mut shutdown,
        ..
    } = resting;
    let mut connection = Builders::with(watch.limits(), |b| b.http1(stream, service));
    let ended = drive::drive(Pin::new(&mut connection), &watch, &mut shutdown, &mut clock).await;
    if !matches!(ended, Some(Ok(()))) {
        drive::ended(ended, &watch);
        return None;
    }
    // Ended cleanly: to hibernate (only a framed stream, one that
    // hibernates, is ever ended so), or because hyper would not keep it.
    let mut stream = match taken_back(connection) {
        TakenBack::Resting(stream, service) => {
            return Some(Resting {
                stream,
                service,
                watch,
                shutdown,
                tried: clock.tried,
            });
        }
        TakenBack::Upgraded => return None,
        TakenBack::Closing(stream) => stream,
    };
    if !*shutdown.borrow() {
        // Boxed: an awake connection does not carry its state (4 KiB).
        let lingered = Box::pin(linger::close(stream.get_mut())).await;
        tracing::trace!(client = %watch.client, ?lingered, "client connection closed");
    }
    None
}

/// Holds a hibernated connection until its client sends something (its
/// state returned, to be served again) or it is to be dropped (none).
/// An async block rather than an async fn: an async fn's argument can be
/// held twice in its future, as given and as bound (rust-lang/rust#62958).
#[allow(
    clippy::manual_async_fn,
    reason = "the async block holds `resting` once"
)]
fn asleep<IO, S>(mut resting: Resting<IO, S>) -> impl Future<Output = Option<Resting<IO, S>>> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    async move { hibernate::sleep(&mut resting).await.then_some(resting) }
}

/// What is left of a hyper connection that ended cleanly.
enum TakenBack<IO, S> {
    /// It ended to hibernate: its stream and service, to be served again.
    Resting(Watched<IO>, S),
    /// hyper ended it for good: the stream, to be closed.
    Closing(Watched<IO>),
    /// It switched protocols: its stream lives on in the proxy's tunnel,
    /// without this clock, as tunnels keep their own idle timeout.
    Upgraded,
}

fn taken_back<IO, S>(connection: Http1<hyper_util::rt::TokioIo<Watched<IO>>, S>) -> TakenBack<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(parts) = connection.into_parts() else {
        return TakenBack::Upgraded;
    };
    let mut stream = parts.io.into_inner();
    if !stream.take_hibernated() {
        return TakenBack::Closing(stream);
    }
    // Empty, but it shares hyper's 8 KiB read buffer: not kept.
    let unused = parts.read_buf;
    stream.unread(&unused);
    drop(unused);
    TakenBack::Resting(stream, parts.service)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper::service::service_fn;

    use super::super::activity::Activity;
    use super::super::{Serve, bind, connection};
    use super::*;
    use crate::config::FrontLimits;
    use crate::connection::ConnectionInfo;

    /// What a hibernated connection holds, printed for BENCHMARKS
    /// (`cargo test -p weir --lib sizes -- --nocapture`), and bounded so
    /// that what only an awake connection needs stays out of it.
    #[tokio::test]
    async fn sizes_of_what_a_hibernated_connection_holds() {
        let (listener, local) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let _tcp = tokio::net::TcpStream::connect(local).await.unwrap();
        let (accepted, client) = listener.accept().await.unwrap();
        let handler = |_request, _conn| async { crate::proxy::text(http::StatusCode::OK, "") };
        let serve = Arc::new(Serve::new(handler, false, FrontLimits::default(), None));
        let (_stop, shutdown) = watch::channel(false);
        let info = ConnectionInfo::plain(client, local);
        let slot = serve.slots.clone().try_acquire_owned().unwrap();
        let task = connection(
            accepted,
            info.clone(),
            serve.clone(),
            shutdown.clone(),
            slot,
        );
        let task = std::mem::size_of_val(&task);
        // A service holding what the listener's does: the handler and
        // the connection's activity and info.
        let accepted = listener.accept();
        let (tcp, _) = tokio::join!(tokio::net::TcpStream::connect(local), accepted);
        let clock = Clock::new(&serve.front.limits);
        let activity = Activity::new(clock.floor());
        let (requests, info) = (activity.clone(), Arc::new(info));
        let service = service_fn(move |request: Request<Incoming>| {
            let answer = handler(request, info.clone());
            let _open = requests.clone();
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let slot = serve.slots.clone().try_acquire_owned().unwrap();
        let resting = Resting {
            stream: Watched::new(tcp.unwrap(), activity.clone(), slot),
            service,
            watch: Watch {
                activity: activity.clone(),
                client,
                front: serve.front.clone(),
            },
            shutdown,
            tried: None,
        };
        let state = std::mem::size_of_val(&resting);
        let sleeping = std::mem::size_of_val(&asleep(resting));
        println!(
            "connection task future {task}; asleep, boxed: {sleeping}, of it the resting state {state} \
             (stream {}, watch {}), the timer {}, the shutdown watch {}; \
             beside them: Activity {}, ConnectionInfo {}",
            std::mem::size_of::<Watched<tokio::net::TcpStream>>(),
            std::mem::size_of::<Watch>(),
            std::mem::size_of::<tokio::time::Sleep>(),
            std::mem::size_of_val(&watch::channel(false).1.changed()),
            std::mem::size_of::<Activity>(),
            std::mem::size_of::<ConnectionInfo>(),
        );
        assert!(task <= 32, "the connection task's future is {task} bytes");
        // Within mimalloc's 512-byte size class (it was 1,368 bytes, and
        // the task's, before the spells were boxed).
        assert!(
            sleeping <= 512,
            "a sleeping connection holds {sleeping} bytes"
        );
    }
}
