use super::*;

#[test]
fn the_request_target_is_the_path_and_query() {
    let line = |uri: &str| {
        let (parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        let mut out = Vec::new();
        encode::head(
            &mut out,
            &parts,
            encode::Framing::Empty { say_zero: false },
            &|_| {},
        );
        let text = String::from_utf8(out).unwrap();
        text.lines().next().unwrap().to_string()
    };
    assert_eq!(line("http://10.0.0.1:80/a/b?c=d"), "GET /a/b?c=d HTTP/1.1");
    assert_eq!(line("http://10.0.0.1:80"), "GET / HTTP/1.1");
    assert_eq!(line("/x"), "GET /x HTTP/1.1");
}

/// A backend on its own threads: answers each connection's requests with
/// `conn=N` and, with `close_after`, hangs up silently after that many
/// when told to (through the sender it returns); tells when it hung up.
fn backend(
    close_after: usize,
) -> (
    SocketAddr,
    std::sync::mpsc::SyncSender<()>,
    std::sync::mpsc::Receiver<u64>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, told) = std::sync::mpsc::channel();
    let (go, hang_up) = std::sync::mpsc::sync_channel(8);
    let hang_up = Arc::new(Mutex::new(hang_up));
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let (closed, hang_up) = (closed.clone(), hang_up.clone());
            std::thread::spawn(move || {
                let mut served = 0;
                let mut buf = Vec::new();
                while served < close_after {
                    let mut chunk = [0u8; 1024];
                    let Ok(read @ 1..) = stream.read(&mut chunk) else {
                        break;
                    };
                    buf.extend_from_slice(&chunk[..read]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let body = format!("conn={n}");
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        stream.write_all((head + &body).as_bytes()).unwrap();
                        served += 1;
                    }
                }
                if served == close_after {
                    let _ = hang_up.lock().unwrap().recv();
                }
                drop(stream);
                let _ = closed.send(n as u64);
            });
        }
    });
    (addr, go, told)
}

fn get(addr: SocketAddr) -> Request<UpstreamBody> {
    use http_body_util::BodyExt;
    let body = http_body_util::Empty::<bytes::Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    Request::get(format!("http://{addr}/")).body(body).unwrap()
}

async fn text(pool: &H1Pool, addr: SocketAddr) -> String {
    use http_body_util::BodyExt;
    let response = pool.send(addr, get(addr)).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn pool(max_idle: usize, idle_timeout: Duration) -> H1Pool {
    H1Pool::new(
        Connector::new(Duration::from_secs(5), None),
        max_idle,
        idle_timeout,
    )
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (addr, _go, _closed) = backend(usize::MAX);
    let pool = pool(4, Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(text(&pool, addr).await, "conn=0");
    }
    let stats = pool.stats();
    assert_eq!((stats.opened, stats.reused, stats.idle), (1, 4, 1));
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_offered() {
    let (addr, go, closed) = backend(1);
    let pool = pool(4, Duration::from_secs(60));
    assert_eq!(text(&pool, addr).await, "conn=0");
    assert_eq!(pool.stats().idle, 1);
    go.send(()).unwrap();
    assert_eq!(closed.recv().unwrap(), 0);
    // Once the hang-up has arrived, a check of the idle connections (the
    // reaper's, or a checkout's) closes it.
    while {
        pool.shared.sweep(Instant::now());
        pool.stats().open > 0
    } {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(text(&pool, addr).await, "conn=1");
    let stats = pool.stats();
    assert_eq!(
        (stats.opened, stats.reused, stats.idle),
        (2, 0, 1),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_after_idle_timeout_and_past_max_idle() {
    let (addr, _go, _closed) = backend(usize::MAX);
    let pool = pool(1, Duration::from_secs(10));
    // Two at once: two connections, one kept.
    let (a, b) = tokio::join!(pool.send(addr, get(addr)), pool.send(addr, get(addr)));
    drop(
        http_body_util::BodyExt::collect(a.unwrap().into_body())
            .await
            .unwrap(),
    );
    drop(
        http_body_util::BodyExt::collect(b.unwrap().into_body())
            .await
            .unwrap(),
    );
    let stats = pool.stats();
    assert_eq!((stats.opened, stats.idle), (2, 1), "{stats:?}");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(pool.stats().idle, 0);
    assert_eq!(text(&pool, addr).await, "conn=2");
}
