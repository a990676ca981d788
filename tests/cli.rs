//! The `weir` binary itself: `check` and `demo`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Runs `weir check` on `text` written to a file; returns the file's path
/// (its directory removed when the TempDir drops) and the output.
fn check(text: &str) -> (TempDir, std::path::PathBuf, std::process::Output) {
    let (dir, path) = write_config(text);
    let out = weir()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (dir, path, out)
}

/// Runs `weir check` on `text`, fails the test unless it succeeds, and
/// returns what it printed.
fn check_ok(text: &str) -> String {
    let (_dir, _, out) = check(text);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn write_config(text: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("cli");
    let path = dir.0.join("weir.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn check_accepts_a_good_config_and_loads_its_plugins() {
    let text = config_text(
        &["127.0.0.1:9".parse().unwrap()],
        "[upstreams.web.balancer]\nplugin = \"round-robin\"\n",
        "",
    );
    let stdout = check_ok(&text);
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("plugins: round-robin"), "{stdout}");
}

#[test]
fn check_reports_a_bad_config_with_file_and_line() {
    let text = config_text(
        &["127.0.0.1:9".parse().unwrap()],
        "request_timeout = 5\n",
        "",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("request_timeout"))
        .unwrap()
        + 1;
    let (_dir, path, out) = check(&text);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:{line}:", path.display());
    assert!(
        stderr.contains(&expected),
        "expected {expected} in: {stderr}"
    );
    assert!(
        stderr.contains("unknown field `request_timeout`"),
        "{stderr}"
    );
}

/// The line and column of the value on the first line of `text` that
/// starts with `key`.
fn value_position(text: &str, key: &str) -> (usize, usize) {
    let index = text.lines().position(|l| l.starts_with(key)).unwrap();
    let column = text.lines().nth(index).unwrap().find("= ").unwrap() + 3;
    (index + 1, column)
}

#[test]
fn check_points_a_bad_value_at_its_own_line_and_column() {
    for (upstream_extra, plugins_extra, key, reason) in [
        (
            "retry.retries = 11\n",
            "",
            "retry.retries",
            "upstream web: retry.retries must be within 0..=10",
        ),
        (
            "",
            "quarantine_ms = 0\n",
            "quarantine_ms",
            "plugins.quarantine_ms must be within 1..=",
        ),
        (
            "connect_timeout_ms = 0\n",
            "",
            "connect_timeout_ms",
            "upstream web: connect_timeout_ms must be at least 1",
        ),
    ] {
        let text = config_text(
            &["127.0.0.1:9".parse().unwrap()],
            upstream_extra,
            plugins_extra,
        );
        let (line, column) = value_position(&text, key);
        let (_dir, path, stderr) = check_refuses(text.as_bytes());
        let expected = format!("{}:{line}:{column}: {reason}", path.display());
        assert!(
            stderr.contains(&expected),
            "expected {expected} in: {stderr}"
        );
    }
}

/// Runs `weir check` on a file holding `bytes`, fails the test unless it
/// is refused, and returns the file's path and what weir said.
fn check_refuses(bytes: &[u8]) -> (TempDir, std::path::PathBuf, String) {
    let (dir, path) = write_config("");
    std::fs::write(&path, bytes).unwrap();
    let out = weir()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (dir, path, stderr)
}

#[test]
fn check_reports_non_utf8_and_oversized_files_with_a_line() {
    let text = config_text(&["127.0.0.1:9".parse().unwrap()], "", "");
    let mut bytes = text.clone().into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    let (_dir, path, stderr) = check_refuses(&bytes);
    let line = text.lines().count() + 1;
    let expected = format!("{}:{line}:6: not UTF-8 text (byte 0xe9)", path.display());
    assert!(
        stderr.contains(&expected),
        "expected {expected} in: {stderr}"
    );

    let padding = "#".repeat(1023) + "\n";
    let (_dir, path, stderr) = check_refuses((text + &padding.repeat(5 * 1024)).as_bytes());
    assert!(stderr.contains("the file is larger than 4 MiB"), "{stderr}");
    assert!(stderr.contains(&format!("{}:", path.display())), "{stderr}");
}

#[test]
fn check_reports_a_plugin_that_fails_with_the_line_naming_it() {
    let text = config_text(
        &["127.0.0.1:9".parse().unwrap()],
        "[upstreams.web.balancer]\nplugin = \"bad-init\"\n",
        "",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("plugin = "))
        .unwrap()
        + 1;
    let (_dir, _, out) = check(&text);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("weir.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("bad-init refuses"), "{stderr}");
}

#[test]
fn the_example_config_checks() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/weir.toml"
    ))
    .unwrap();
    let text = example.replace(
        "dir = \"../target/plugins\"",
        &format!("dir = {:?}", plugin_dir().display().to_string()),
    );
    assert_ne!(
        text, example,
        "the example's plugin dir line changed; update this test"
    );
    let stdout = check_ok(&text);
    assert!(
        stdout.contains(
            "2 upstream(s), plugins: consistent-hash, filters: headers, ip-filter, rate-limit"
        ),
        "{stdout}"
    );
}

#[test]
fn an_unset_admin_token_variable_is_reported_with_its_line() {
    let text = config_text(&["127.0.0.1:9".parse().unwrap()], "", "")
        + "\n[admin]\naddress = \"127.0.0.1:0\"\ntoken_env = \"WEIR_TEST_UNSET_TOKEN\"\n";
    let (_dir, path) = write_config(&text);
    let out = weir()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l.starts_with("token_env"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("weir.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("WEIR_TEST_UNSET_TOKEN"), "{stderr}");
}

#[test]
fn config_path_falls_back_to_the_environment() {
    let text = config_text(&["127.0.0.1:9".parse().unwrap()], "", "");
    let (_dir, path) = write_config(&text);
    let out = weir()
        .arg("check")
        .env("WEIR_CONFIG", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_three_backends_in_turn() {
    let mut child = Child(
        weir()
            .args(["demo", "--listen", "127.0.0.1:0", "--plugin-dir"])
            .arg(plugin_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(str::to_string)
            })
    });
    let url = tokio::time::timeout(Duration::from_secs(30), url)
        .await
        .expect("demo printed no URL in time")
        .unwrap()
        .expect("demo printed no URL");
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200);
        seen.push(body.trim().to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "backend-1",
            "backend-1",
            "backend-2",
            "backend-2",
            "backend-3",
            "backend-3"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let one = TestBackend::start("backend-1", Behaviour::Name).await;
    let two = TestBackend::start("backend-2", Behaviour::Name).await;
    // Watching off: only the signal can make weir see the new file.
    let text = config_text(&[one.addr], "", "watch = false\n");
    let (_dir, path) = write_config(&text);
    let (child, addr, _log) = start_weir_run(&path).await;
    let url = format!("http://{addr}/");
    let client = client();
    assert_eq!(get(&client, &url).await.1, "backend-1\n");

    std::fs::write(
        &path,
        text.replace(&one.addr.to_string(), &two.addr.to_string()),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&client, &url).await.1,
        "backend-1\n",
        "reloaded without a signal"
    );
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200);
        if body == "backend-2\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_a_failing_plugin_by_name_and_keeps_serving() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let text = config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"trap\"\n",
        "",
    );
    let (_dir, path) = write_config(&text);
    let (_child, addr, mut lines_rx) = start_weir_run(&path).await;
    let mut log = Vec::new();
    let (status, body) = get(&client(), &format!("http://{addr}/")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "backend-1\n"));
    // The plugin's own panic message, through the SDK's hook and the log
    // import, and the host's containment line, both under the plugin's name.
    let mut seen_panic = false;
    let mut seen_failure = false;
    while !(seen_panic && seen_failure) {
        let line = tokio::time::timeout(Duration::from_secs(10), lines_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("missing log lines; got:\n{}", log.join("\n")))
            .expect("weir exited");
        seen_panic |= line.contains("plugin=\"trap\"") && line.contains("select always traps");
        seen_failure |= line.contains("plugin=\"trap\"") && line.contains("plugin call failed");
        log.push(line);
    }
}
