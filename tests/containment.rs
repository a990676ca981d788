//! A plugin that floods the log costs log lines, never requests: its lines
//! are cut, escaped and rate-limited, and weir's own log never blocks a
//! worker, even when nobody reads stderr.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::ChildStderr;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use support::*;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A plugin log line as it reached weir's log.
#[derive(Debug, Clone)]
struct Line {
    plugin: String,
    /// Plugin lines carry the upstream; weir's lines about a plugin do not.
    from_plugin: bool,
    /// The message, or its first 8 KiB when longer (the test then fails).
    message: String,
    len: usize,
}

/// Every event of this test binary that names a plugin.
static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

/// Records events with a `plugin` field into [`LINES`].
struct Capture;

#[derive(Default)]
struct Fields {
    plugin: Option<String>,
    upstream: bool,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = Some(value.to_string()),
            "upstream" => self.upstream = true,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(plugin) = fields.plugin else { return };
        let len = fields.message.len();
        let mut message = fields.message;
        message.truncate(message.floor_char_boundary(8 << 10));
        LINES.lock().unwrap().push(Line {
            plugin,
            from_plugin: fields.upstream,
            message,
            len,
        });
    }
}

/// Installs [`Capture`] beside the usual test log (before any proxy starts,
/// so `TestProxy`'s own logging setup finds it in place).
fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let filter = std::env::var("WEIR_LOG").unwrap_or_else(|_| "info".into());
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(filter))
            .with(Capture)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .init();
    });
}

/// Lines from `log-flood` itself whose message starts with `prefix`.
fn plugin_lines(prefix: &str) -> Vec<Line> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.plugin == "log-flood" && l.from_plugin && l.message.starts_with(prefix))
        .cloned()
        .collect()
}

/// Checks what the host guarantees of one line of `log-flood` (which
/// contains `expected`, escaped): short, cut with a note, nothing that could
/// start or colour a line.
fn assert_bounded(line: &Line, expected: &str) {
    assert!(line.message.contains(expected), "{:.200}", line.message);
    let most = weir::plugin::MAX_MESSAGE_BYTES + 32;
    assert!(
        line.len <= most,
        "{} bytes: {:.200}",
        line.len,
        line.message
    );
    assert!(
        line.message.contains(" bytes cut]"),
        "{:.200}",
        line.message
    );
    assert!(
        !line.message.contains(['\n', '\r', '\x1b']),
        "{:.200}",
        line.message
    );
}

/// The value of the sample `name` (with its labels) in `/metrics` text.
fn sample(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `[plugins]` keys that keep `log-flood` running: it is slow (megabytes
/// cross the boundary on every call) and would soon be quarantined for its
/// CPU time, which would stop the flood these tests are about.
const NO_QUARANTINE: &str =
    "quarantine_after_failures = 0\ncpu_budget_percent = 0\nslow_call_percent = 0\n";

fn with_admin(text: String) -> String {
    text + "\n[admin]\naddress = \"127.0.0.1:0\"\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_plugin_is_cut_to_its_rate_and_requests_succeed() {
    capture();
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let started = Instant::now();
    let text = config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"log-flood\"\n",
        NO_QUARANTINE,
    );
    let proxy = TestProxy::start(&with_admin(text)).await;
    let n = 100;
    let counts = spread(&proxy.url, n, 2).await;
    let elapsed = started.elapsed();
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&n),
        "{counts:?}"
    );

    let written = plugin_lines("flood");
    for line in &written {
        assert_bounded(line, "flood\\n2026");
    }
    // The bucket starts full (2 s of burst) and refills at 100 lines/s.
    let rate = u64::from(weir::plugin::DEFAULT_LINES_PER_SECOND);
    let most = rate * u64::from(weir::plugin::BURST_SECONDS) + rate * elapsed.as_secs() + rate;
    assert!(
        (written.len() as u64) <= most,
        "{} lines in {elapsed:?}",
        written.len()
    );

    let admin = proxy.server.admin_addr().unwrap();
    let (status, metrics) = support::admin(admin, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    let dropped = sample(
        &metrics,
        "weir_plugin_log_dropped_total{plugin=\"log-flood\"}",
    )
    .unwrap_or_else(|| panic!("no log-flood drop count in:\n{metrics}"));
    let failures = proxy
        .server
        .snapshot()
        .upstream("web")
        .unwrap()
        .balancer()
        .unwrap()
        .pool
        .failures();
    // Every line of every call that finished was either written or dropped.
    let offered = (n as u64 - failures) * 10;
    assert!(dropped > 0, "nothing dropped of {offered}");
    assert!(
        (dropped + written.len() as u64).abs_diff(offered) <= failures * 10,
        "{dropped} dropped + {} written, {offered} offered, {failures} failed calls",
        written.len()
    );
    // And weir said so, under the plugin's name.
    let reported = LINES.lock().unwrap().iter().any(|l| {
        l.plugin == "log-flood" && !l.from_plugin && l.message.contains("log lines dropped")
    });
    assert!(reported, "no warning about dropped lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_panic_message_is_cut_like_any_line() {
    capture();
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"log-flood\"\nsettings = { mode = \"panic\" }\n",
        NO_QUARANTINE,
    );
    let proxy = TestProxy::start(&text).await;
    let n = 5;
    let counts = spread(&proxy.url, n, 1).await;
    // Each panic traps the instance; the fallback routes the request.
    assert_eq!(
        counts.get(&(200, "backend-1".into())),
        Some(&n),
        "{counts:?}"
    );
    let panics = plugin_lines("panic: ");
    assert_eq!(panics.len(), n, "one panic line per call: {panics:?}");
    for line in &panics {
        assert_bounded(line, "log-flood: flood\\n");
    }
}

/// `weir run` whose stderr is read only until it logged where it listens,
/// then never again: the pipe fills and stays full. Returns the child, the
/// proxy and admin addresses, and the unread pipe (held open).
async fn start_with_stalled_stderr(
    path: &std::path::Path,
) -> (Child, SocketAddr, SocketAddr, BufReader<ChildStderr>) {
    let (child, stderr) = spawn_run(path);
    let startup = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stderr);
        let (mut proxy, mut admin) = (None, None);
        let mut line = String::new();
        while proxy.is_none() || admin.is_none() {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("weir exited before listening");
            }
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr=")?.parse::<SocketAddr>().ok());
            if line.contains("admin API listening") {
                admin = addr;
            } else if line.contains("listening") {
                proxy = addr;
            }
        }
        (proxy.unwrap(), admin.unwrap(), reader)
    });
    let (proxy, admin, reader) = tokio::time::timeout(Duration::from_secs(30), startup)
        .await
        .expect("weir logged no listening addresses in time")
        .unwrap();
    (child, proxy, admin, reader)
}

/// GETs `url` within `limit`; an error says what did not answer.
async fn get_within(url: &str, limit: Duration) -> Result<(u16, String), String> {
    get_with(&client(), url, limit).await
}

/// [`get_within`] on a given client.
async fn get_with(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    url: &str,
    limit: Duration,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let answer = async {
        let response = client
            .get(url.parse().unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(limit, answer)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {limit:?}")))
}

/// The scenario of issue 11: a plugin floods the log of a weir whose stderr
/// nobody reads. Plugin lines are allowed at a high rate here, so weir's own
/// log queue overflows too; it must drop lines, not stall the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stderr_does_not_stop_the_proxy_or_the_admin_api() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n\n\
         [plugins]\ndir = {dir:?}\ntimeout_ms = 100\nwatch = false\nlog_lines_per_second = 100000\n{NO_QUARANTINE}\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\npath_prefix = \"/flood\"\nupstream = \"flood\"\n\n\
         [[routes]]\nupstream = \"clean\"\n\n\
         [upstreams.flood.balancer]\nplugin = \"log-flood\"\n\
         [[upstreams.flood.backends]]\naddress = \"{addr}\"\n\n\
         [[upstreams.clean.backends]]\naddress = \"{addr}\"\n",
        dir = plugin_dir().display().to_string(),
        addr = backend.addr,
    );
    let dir = TempDir::new("containment");
    let path = dir.0.join("weir.toml");
    std::fs::write(&path, text).unwrap();
    let (_child, proxy, admin, _stderr) = start_with_stalled_stderr(&path).await;

    // 10 lines of 4 KiB per request: far past the 64 KiB pipe and weir's
    // 8,192-line queue.
    let flood = format!("http://{proxy}/flood");
    let limit = Duration::from_secs(20);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let flood = flood.clone();
        tasks.spawn(async move {
            let client = client();
            for _ in 0..250 {
                let answer = get_with(&client, &flood, limit).await?;
                if answer.0 != 200 {
                    return Err(format!("flood request answered {answer:?}"));
                }
            }
            Ok::<_, String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }

    let healthz = get_within(&format!("http://{admin}/healthz"), limit).await;
    assert_eq!(healthz.unwrap().0, 200);
    let clean = get_within(&format!("http://{proxy}/"), limit).await;
    assert_eq!(clean.unwrap(), (200, "backend-1\n".into()));
    let (status, metrics) = get_within(&format!("http://{admin}/metrics"), limit)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let dropped = sample(&metrics, "weir_log_dropped_total").unwrap();
    assert!(dropped > 0, "weir's log queue never overflowed:\n{metrics}");
}
