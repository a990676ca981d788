//! TLS to backends, against the real binary: real TLS servers (ours on
//! tokio-rustls, and Python's `ssl`) with certificates the tests make,
//! verification failures told by reason in the log and `/metrics`, client
//! certificates, health checks over TLS, a CA rotation, and backends that
//! break the handshake.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use support::certs::TestCa;
use support::tls_backend::{HostileBackend, Hostility, PythonTls, TlsBackend};
use support::weir_run::WeirRun;
use support::{TempDir, admin, client, config_text, get};

const ADMIN: &str = "\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"t\"\n";

/// A config for one backend at `addr` of upstream `web` with `tls` lines in
/// its `[upstreams.web.tls]` and `extra` upstream keys, with an admin API;
/// written to `dir/weir.toml`.
fn write_config(dir: &Path, addr: SocketAddr, extra: &str, tls: &str) -> PathBuf {
    let upstream = format!("{extra}\n[upstreams.web.tls]\n{tls}\n");
    let text = config_text(&[addr], &upstream, "watch_interval_ms = 20\n") + ADMIN;
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A temporary directory with a test CA written to `ca.pem` in it.
fn with_ca(tag: &str) -> (TempDir, TestCa, PathBuf) {
    let dir = TempDir::new(tag);
    let ca = TestCa::new("weir test CA");
    let ca_file = ca.write(&dir.0, "ca");
    (dir, ca, ca_file)
}

fn ca_line(path: &Path) -> String {
    format!("ca_file = {:?}\n", path.display().to_string())
}

async fn metric(run: &WeirRun, reason: &str) -> u64 {
    let (_, text) = admin(run.admin.unwrap(), "GET", "/metrics", Some("t"), "").await;
    let series =
        format!("weir_upstream_tls_failures_total{{upstream=\"web\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// One request through weir: status and body.
async fn fetch(run: &WeirRun) -> (u16, String) {
    let (status, body) = get(&client(), &run.url("/")).await;
    (status.as_u16(), body)
}

/// Asserts a request fails with `status`, weir's log says `words`, and the
/// `reason` counter moved.
async fn refused(run: &WeirRun, status: u16, reason: &str, words: &str) {
    let (got, body) = fetch(run).await;
    assert_eq!(got, status, "{body}\n{}", run.log_text());
    run.wait_lines(&["upstream=\"web\"", words], 1).await;
    assert!(metric(run, reason).await >= 1, "{}", run.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_passes_with_the_ca_file_for_our_backend_and_pythons() {
    let (dir, ca, ca_file) = with_ca("up-tls-ok");
    let leaf = ca.server("backend", &["127.0.0.1", "backend.test"]);
    let ours = TlsBackend::start("ours", &leaf, None).await;
    let path = write_config(&dir.0, ours.addr, "", &ca_line(&ca_file));
    let run = WeirRun::start(&path, true).await;
    assert_eq!(fetch(&run).await, (200, "ours\n".into()));
    // Keep-alive: a second request reuses the pooled TLS connection.
    assert_eq!(fetch(&run).await, (200, "ours\n".into()));
    assert_eq!(
        ours.handshakes.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(metric(&run, "unknown_ca").await, 0);
    drop(run);

    // A server that is not ours, verified by the name given in server_name.
    let (cert, key) = leaf.write(&dir.0, "python");
    let python = PythonTls::start(&cert, &key);
    let tls = ca_line(&ca_file) + "server_name = \"backend.test\"\n";
    let path = write_config(&dir.0, python.addr, "", &tls);
    let run = WeirRun::start(&path, true).await;
    assert_eq!(
        fetch(&run).await,
        (200, "python\n".into()),
        "{}",
        run.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_a_backend_that_stops_at_1_2() {
    let (dir, ca, ca_file) = with_ca("up-tls-version");
    let (cert, key) = ca.server("b", &["127.0.0.1"]).write(&dir.0, "python");
    let python = PythonTls::start_up_to(&cert, &key, "1.2");
    // TLS 1.2 is spoken by default...
    let path = write_config(&dir.0, python.addr, "", &ca_line(&ca_file));
    let run = WeirRun::start(&path, true).await;
    assert_eq!(
        fetch(&run).await,
        (200, "python\n".into()),
        "{}",
        run.log_text()
    );
    drop(run);
    // ... and refused with min_version = "1.3", saying why.
    let tls = ca_line(&ca_file) + "min_version = \"1.3\"\n";
    let run = WeirRun::start(&write_config(&dir.0, python.addr, "", &tls), true).await;
    refused(&run, 502, "handshake", "the TLS handshake failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_the_system_roots_refuse_an_unknown_ca() {
    let (dir, ca, _) = with_ca("up-tls-sys");
    let leaf = ca.server("backend", &["127.0.0.1"]);
    let (cert, key) = leaf.write(&dir.0, "python");
    let python = PythonTls::start(&cert, &key);
    let path = write_config(&dir.0, python.addr, "", "");
    let run = WeirRun::start(&path, true).await;
    refused(&run, 502, "unknown_ca", "signed by an unknown CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_is_a_502_naming_the_name() {
    let (dir, ca, ca_file) = with_ca("up-tls-name");
    let backend = TlsBackend::start("b", &ca.server("b", &["backend.test"]), None).await;
    let tls = ca_line(&ca_file) + "server_name = \"wrong.test\"\n";
    let run = WeirRun::start(&write_config(&dir.0, backend.addr, "", &tls), true).await;
    refused(
        &run,
        502,
        "name_mismatch",
        "not valid for wrong.test (it is for backend.test)",
    )
    .await;
    // Without server_name the backend's IP is verified, and this
    // certificate has no IP SAN.
    drop(run);
    let run = WeirRun::start(
        &write_config(&dir.0, backend.addr, "", &ca_line(&ca_file)),
        true,
    )
    .await;
    refused(&run, 502, "name_mismatch", "not valid for 127.0.0.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_backend_certificate_is_a_502_with_its_date() {
    let (dir, ca, ca_file) = with_ca("up-tls-expired");
    let leaf = ca.server_valid("b", &["127.0.0.1"], -10, -1);
    let backend = TlsBackend::start("b", &leaf, None).await;
    let run = WeirRun::start(
        &write_config(&dir.0, backend.addr, "", &ca_line(&ca_file)),
        true,
    )
    .await;
    refused(&run, 502, "expired", "certificate expired on 20").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_passes_and_warns_at_every_load() {
    let (dir, ca, _) = with_ca("up-tls-insecure");
    let leaf = ca.server_valid("b", &["elsewhere.test"], -10, -1);
    let backend = TlsBackend::start("b", &leaf, None).await;
    let path = write_config(&dir.0, backend.addr, "", "insecure_skip_verify = true\n");
    let run = WeirRun::start(&path, true).await;
    assert_eq!(fetch(&run).await, (200, "b\n".into()));
    let warning = ["WARN", "upstream=\"web\"", "insecure_skip_verify = true"];
    run.wait_lines(&warning, 1).await;
    let (status, _) = admin(run.admin.unwrap(), "POST", "/reload", Some("t"), "").await;
    assert_eq!(status, 200);
    run.wait_lines(&warning, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_reaches_a_backend_that_requires_one() {
    let (dir, ca, ca_file) = with_ca("up-tls-mtls");
    let backend = TlsBackend::start("m", &ca.server("m", &["127.0.0.1"]), Some(&ca)).await;
    // Without one: refused by the backend, told as such.
    let run = WeirRun::start(
        &write_config(&dir.0, backend.addr, "", &ca_line(&ca_file)),
        true,
    )
    .await;
    refused(
        &run,
        502,
        "client_certificate_refused",
        "client certificate",
    )
    .await;
    drop(run);
    let (cert, key) = ca.client("weir").write(&dir.0, "client");
    let tls = ca_line(&ca_file)
        + &format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
    let run = WeirRun::start(&write_config(&dir.0, backend.addr, "", &tls), true).await;
    assert_eq!(fetch(&run).await, (200, "m\n".into()), "{}", run.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_over_tls_mark_a_bad_certificate_unhealthy_with_the_reason() {
    let (dir, ca, ca_file) = with_ca("up-tls-health");
    let leaf = ca.server_valid("b", &["127.0.0.1"], -10, -1);
    let backend = TlsBackend::start("b", &leaf, None).await;
    let check =
        "[upstreams.web.health_check]\ninterval_ms = 50\ntimeout_ms = 2000\nfall = 1\nrise = 1\n";
    let path = write_config(&dir.0, backend.addr, check, &ca_line(&ca_file));
    let run = WeirRun::start(&path, true).await;
    let admin_addr = run.admin.unwrap();
    let mut last = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(last.contains("\"unhealthy\"") && last.contains("certificate expired on")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{last}\n{}",
            run.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        last = admin(admin_addr, "GET", "/upstreams/web", Some("t"), "")
            .await
            .1;
    }
    assert!(metric(&run, "expired").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ca_file_reloads_and_swaps_the_pool() {
    let (dir, ca, ca_file) = with_ca("up-tls-rotate");
    let backend = TlsBackend::start("b", &ca.server("b", &["127.0.0.1"]), None).await;
    let run = WeirRun::start(
        &write_config(&dir.0, backend.addr, "", &ca_line(&ca_file)),
        true,
    )
    .await;
    assert_eq!(fetch(&run).await, (200, "b\n".into()));
    // Another CA in the same file: the pooled connection (made under the
    // old CA) must not be reused, the new handshake refuses the backend.
    std::fs::write(&ca_file, TestCa::new("another CA").pem).unwrap();
    run.wait_lines(&["reloaded"], 1).await;
    refused(&run, 502, "unknown_ca", "signed by an unknown CA").await;
    // And back: the new pool trusts it again.
    std::fs::write(&ca_file, &ca.pem).unwrap();
    run.wait_lines(&["reloaded"], 2).await;
    assert_eq!(fetch(&run).await, (200, "b\n".into()));
    // A broken CA file is a rejected reload naming the file; the running
    // config keeps serving.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    run.wait_lines(&["reload rejected", "ca.pem: no certificate in it"], 1)
        .await;
    assert_eq!(fetch(&run).await, (200, "b\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_that_break_the_handshake_are_told_apart() {
    let (dir, _, ca_file) = with_ca("up-tls-hostile");
    // The connect timeout bounds TCP connect and handshake together; the
    // request timeout is far longer, so a 504 naming the handshake shows
    // the connect timeout applied.
    let extra = "connect_timeout_ms = 300\nrequest_timeout_ms = 60000\n";
    for (how, status, reason, words) in [
        (
            Hostility::CloseMidHandshake,
            502,
            "closed",
            "closed the connection during the TLS handshake",
        ),
        (
            Hostility::Garbage,
            502,
            "not_tls",
            "did not answer with TLS",
        ),
        (
            Hostility::Silent,
            504,
            "timeout",
            "TLS handshake did not finish within 300ms",
        ),
    ] {
        let backend = HostileBackend::start(how).await;
        let path = write_config(&dir.0, backend.addr, extra, &ca_line(&ca_file));
        let run = WeirRun::start(&path, true).await;
        refused(&run, status, reason, words).await;
        // weir still serves: a second request gets the same answer.
        assert_eq!(fetch(&run).await.0, status, "{how:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_file_is_a_config_error_naming_the_file_and_line() {
    let dir = TempDir::new("up-tls-missing");
    let addr = support::dead_addr().await;
    let path = write_config(&dir.0, addr, "", "ca_file = \"absent.pem\"\n");
    let output = support::weir()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .position(|l| l.contains("absent.pem"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("weir.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("absent.pem: cannot read it"), "{stderr}");
}
