//! The access log: one line per request, JSON or `key=value` text.
//!
//! Request threads format their line straight into a shared buffer (one
//! short lock, no allocation of their own, no system call); a background
//! thread writes the buffer out every [`FLUSH_EVERY`], or sooner when it
//! holds [`FLUSH_AT`] bytes. So a request never waits for a disk, and weir
//! pays one `write` per batch rather than one per line plus a thread wake-up
//! per line. If the writer falls [`MAX_BUFFER`] bytes behind (a stalled
//! disk), new lines are dropped and counted (`weir_access_log_dropped_total`).
//! Dropping the log writes what is buffered.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::{AccessLogFormat, Config};

/// How often buffered lines are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes that wake the writer early.
pub const FLUSH_AT: usize = 256 * 1024;
/// Buffered bytes past which new lines are dropped.
pub const MAX_BUFFER: usize = 64 << 20;

/// Why the access log could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// Its file could not be opened for appending.
    #[error("cannot open the access log {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The thread that writes it could not be started.
    #[error("cannot start the access log's writer thread")]
    Writer(#[source] std::io::Error),
}

/// Where access log lines go.
pub struct AccessLog {
    shared: Arc<Shared>,
    format: AccessLogFormat,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<Buffer>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    stop: bool,
}

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The client's address.
    pub client: SocketAddr,
    /// Request method.
    pub method: &'a str,
    /// The `Host` (or `:authority`) asked for.
    pub host: Option<&'a str>,
    /// Request path, without the query.
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// From the request's arrival to the end of the response body, in
    /// milliseconds.
    pub duration_ms: f64,
    /// The upstream that served it.
    pub upstream: Option<&'a str>,
    /// The backend that answered (or last failed).
    pub backend: Option<&'a str>,
    /// Who chose the backend: `plugin`, `round-robin`, `fallback`,
    /// `reroute`.
    pub chosen_by: Option<&'a str>,
    /// The balancer plugin of the upstream, if it has one.
    pub plugin: Option<&'a str>,
    /// The filter that answered, rerouted or failed the request, if one did.
    pub filter: Option<&'a str>,
    /// Backends tried (more than 1 after retries).
    pub attempts: u32,
    /// The TLS version, on a TLS connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'a str>,
    /// The server name the client asked for (SNI), on a TLS connection
    /// that sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<&'a str>,
    /// The verified client certificate's subject, when one was presented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<&'a str>,
    /// A tunnel's facts, on the line of an upgraded connection (status
    /// 101), written when the tunnel ends; `bytes` is then what the
    /// backend sent the client through it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelFacts<'a>>,
}

/// What the access log says of a tunnel.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TunnelFacts<'a> {
    /// The protocol switched to (the `Upgrade` token).
    pub upgrade: &'a str,
    /// Bytes the client sent the backend through the tunnel.
    pub bytes_received: u64,
    /// Why it ended: `client_closed`, `backend_closed`, `idle`, `drained`,
    /// `removed`, `shutdown`, `error`.
    pub ended: &'a str,
}

impl AccessLog {
    /// Opens the log `config` asks for (none when it is off) and starts its
    /// writer thread.
    pub fn open(config: &Config) -> Result<Option<AccessLog>, AccessLogError> {
        if !config.access_log.enabled {
            return Ok(None);
        }
        let out: Box<dyn Write + Send> = match config.access_log_path() {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(open_file(&path)?),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(Buffer::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("weir-access-log".into())
                .spawn(move || write_out(&shared, out))
                .map_err(AccessLogError::Writer)?
        };
        Ok(Some(AccessLog {
            shared,
            format: config.access_log.format,
            writer: Some(writer),
        }))
    }

    /// Adds one line for `entry`.
    pub fn log(&self, entry: &Entry) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.bytes.len() >= MAX_BUFFER {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.format {
            AccessLogFormat::Json => {
                let _ = serde_json::to_writer(&mut state.bytes, entry);
                state.bytes.push(b'\n');
            }
            AccessLogFormat::Text => write_text(&mut state.bytes, entry),
        }
        if state.bytes.len() >= FLUSH_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: every [`FLUSH_EVERY`] (or when woken), takes the
/// buffer and writes it; writes what is left and returns when stopped.
fn write_out(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut spare = Vec::new();
    loop {
        let stop = {
            let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let (mut state, _) = shared
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| !s.stop && s.bytes.len() < FLUSH_AT)
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut state.bytes, &mut spare);
            state.stop
        };
        if !spare.is_empty() {
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if stop {
            return;
        }
    }
}

fn open_file(path: &Path) -> Result<std::fs::File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn write_text(out: &mut Vec<u8>, e: &Entry) {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let _ = writeln!(
        out,
        "{} client={} method={} host={} path={:?} status={} bytes={} duration_ms={:.3} upstream={} backend={} chosen_by={} plugin={} filter={} attempts={}",
        e.time,
        e.client,
        e.method,
        dash(e.host),
        e.path,
        e.status,
        e.bytes,
        e.duration_ms,
        dash(e.upstream),
        dash(e.backend),
        dash(e.chosen_by),
        dash(e.plugin),
        dash(e.filter),
        e.attempts
    );
    // TLS facts only on TLS connections: plain lines stay as they were.
    if let Some(version) = e.tls_version {
        out.pop();
        let _ = writeln!(
            out,
            " tls={version} sni={} client_cert={:?}",
            dash(e.sni),
            e.client_cert.unwrap_or("-")
        );
    }
    // Tunnel facts only on a tunnel's line, likewise.
    if let Some(tunnel) = &e.tunnel {
        out.pop();
        let _ = writeln!(
            out,
            " upgrade={:?} bytes_received={} ended={}",
            tunnel.upgrade, tunnel.bytes_received, tunnel.ended
        );
    }
}

pub use crate::date::rfc3339_millis as rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_opened_names_it_and_keeps_the_io_error() {
        let path = Path::new("/nonexistent-weir-dir/access.log");
        let error = open_file(path).unwrap_err();
        let io = crate::error::find::<std::io::Error>(&error).expect("the I/O error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        let text = crate::error::chain(&error).to_string();
        assert!(
            text.starts_with("cannot open the access log /nonexistent-weir-dir/access.log: "),
            "{text}"
        );
    }

    #[test]
    fn text_lines_name_every_field() {
        let entry = Entry {
            time: "t".into(),
            client: "127.0.0.1:5".parse().unwrap(),
            method: "GET",
            host: None,
            path: "/a b",
            status: 200,
            bytes: 3,
            duration_ms: 1.5,
            upstream: Some("web"),
            backend: Some("b1"),
            chosen_by: Some("plugin"),
            plugin: Some("round-robin"),
            filter: None,
            attempts: 1,
            tls_version: None,
            sni: None,
            client_cert: None,
            tunnel: None,
        };
        let mut line = Vec::new();
        write_text(&mut line, &entry);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "t client=127.0.0.1:5 method=GET host=- path=\"/a b\" status=200 bytes=3 duration_ms=1.500 upstream=web backend=b1 chosen_by=plugin plugin=round-robin filter=- attempts=1\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&entry).unwrap()).unwrap();
        assert_eq!(json["status"], 200);
        assert_eq!(json["host"], serde_json::Value::Null);
        assert!(json.get("tls_version").is_none(), "{json}");
        // On a TLS connection the line ends with the TLS facts.
        let entry = Entry {
            tls_version: Some("TLSv1.3"),
            sni: Some("api.test"),
            client_cert: Some("CN=a \"b\""),
            ..entry
        };
        let mut line = Vec::new();
        write_text(&mut line, &entry);
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.ends_with(" attempts=1 tls=TLSv1.3 sni=api.test client_cert=\"CN=a \\\"b\\\"\"\n"),
            "{line}"
        );
        // A tunnel's line ends with what it carried and why it ended.
        let entry = Entry {
            status: 101,
            tls_version: None,
            tunnel: Some(TunnelFacts {
                upgrade: "websocket",
                bytes_received: 7,
                ended: "idle",
            }),
            ..entry
        };
        let mut line = Vec::new();
        write_text(&mut line, &entry);
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.ends_with(
                " status=101 bytes=3 duration_ms=1.500 upstream=web backend=b1 chosen_by=plugin plugin=round-robin filter=- attempts=1 upgrade=\"websocket\" bytes_received=7 ended=idle\n"
            ),
            "{line}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&entry).unwrap()).unwrap();
        assert_eq!(json["upgrade"], "websocket");
        assert_eq!(json["bytes_received"], 7);
        assert_eq!(json["ended"], "idle");
    }
}
