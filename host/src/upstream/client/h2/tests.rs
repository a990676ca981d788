use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};

use super::*;

fn get(addr: SocketAddr) -> Request<UpstreamBody> {
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    Request::get(format!("http://{addr}/")).body(body).unwrap()
}

fn pool(connect_timeout: Duration) -> Arc<H2Pool> {
    let connector = Connector::new(connect_timeout, None);
    let pool = H2Pool::new(
        connector,
        false,
        &H2Config::default(),
        Duration::from_secs(60),
    );
    Arc::new(pool)
}

#[tokio::test]
async fn requests_waiting_for_a_dial_that_fails_share_its_error() {
    // Connects hang until the connect timeout, so every request arrives
    // while the first dials.
    let (listener, queued) = crate::upstream::testing::unaccepting_listener().await;
    let addr = listener.local_addr().unwrap();
    let pool = pool(Duration::from_millis(1000));
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let pool = pool.clone();
        sends.spawn(async move { pool.send(addr, get(addr)).await });
    }
    while let Some(sent) = sends.join_next().await {
        let error = sent.unwrap().unwrap_err();
        assert!(matches!(error, SendError::Waited(_)), "{error:?}");
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(error.reason(), "connecting to the backend timed out");
    }
    // One dial for all ten, not one each.
    let host = pool.host(addr);
    assert_eq!(host.failures.load(Ordering::Acquire), 1);
    drop((queued, listener));
}

#[tokio::test]
async fn a_stream_is_given_back_when_its_place_is_dropped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"ok"),
            )))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
            .await;
    });
    let pool = pool(Duration::from_secs(1));
    let response = pool.send(addr, get(addr)).await.unwrap();
    let host = pool.host(addr);
    let conn = host.conns.lock().unwrap()[0].clone();
    assert_eq!(conn.streams.load(Ordering::Acquire), 1);
    // The body holds the place until it ends.
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    assert_eq!(conn.streams.load(Ordering::Acquire), 0);
    assert!(conn.idle_for(Instant::now() + Duration::from_secs(5)) >= Duration::from_secs(4));
    // The next request takes the same connection.
    let response = pool.send(addr, get(addr)).await.unwrap();
    assert_eq!(host.conns.lock().unwrap().len(), 1);
    drop(response);
    assert_eq!(conn.streams.load(Ordering::Acquire), 0);
    server.abort();
}
