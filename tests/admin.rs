//! The admin API, `/metrics` and the access log, against real weir and
//! real backends.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;
use weir::upstream::Health;

const TOKEN: &str = "s3cret-token";

fn with_admin(text: String) -> String {
    format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_are_refused() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let proxy = TestProxy::start(&with_admin(config_text(&[backend.addr], "", ""))).await;
    let addr = proxy.server.admin_addr().unwrap();
    assert!(addr.ip().is_loopback());
    for token in [None, Some("wrong"), Some("s3cret-token2")] {
        let (status, body) = admin(addr, "GET", "/upstreams", token, "").await;
        assert_eq!(status, 401, "{token:?}: {body}");
        let (status, _) = admin(
            addr,
            "DELETE",
            "/upstreams/web/backends/backend-1",
            token,
            "",
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _) = admin(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 401);
    // Nothing was removed.
    assert_eq!(health_of(&proxy, "backend-1"), Health::Healthy);
    // Liveness needs no token.
    assert_eq!(
        admin(addr, "GET", "/healthz", None, "").await,
        (200, "ok\n".into())
    );
    let (status, body) = admin(addr, "GET", "/upstreams", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["upstreams"][0]["backends"][0]["name"], "backend-1");
    assert_eq!(json["upstreams"][0]["backends"][0]["health"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_drain_and_remove_under_load_fail_no_request() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
    ];
    let newcomer = TestBackend::start("backend-3", Behaviour::Name).await;
    let text = config_text(
        &[backends[0].addr, backends[1].addr],
        "[upstreams.web.balancer]\nplugin = \"round-robin\"\n",
        "",
    );
    let proxy = TestProxy::start(&with_admin(text)).await;
    let addr = proxy.server.admin_addr().unwrap();
    let upstream = || proxy.server.snapshot().upstream("web").unwrap().clone();
    let load = Load::start(&format!("{}/", proxy.url), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let body = format!(
        r#"{{"name": "backend-3", "address": "{}", "weight": 2}}"#,
        newcomer.addr
    );
    let (status, answer) = admin(addr, "POST", "/upstreams/web/backends", Some(TOKEN), &body).await;
    assert_eq!(status, 201, "{answer}");
    let before = newcomer.requests();
    wait_for("the new backend to get traffic", || {
        newcomer.requests() > before + 50
    })
    .await;

    let (status, answer) = admin(
        addr,
        "POST",
        "/upstreams/web/backends/backend-1/drain",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"draining\""), "{answer}");
    // Requests already sent may finish; then nothing new arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drained = backends[0].requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backends[0].requests(),
        drained,
        "a drained backend got new requests"
    );

    let (status, answer) = admin(
        addr,
        "DELETE",
        "/upstreams/web/backends/backend-1",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = admin(
        addr,
        "PATCH",
        "/upstreams/web/backends/backend-2",
        Some(TOKEN),
        r#"{"weight": 5}"#,
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish_all_ok(100).await;
    let names: Vec<_> = upstream()
        .backends()
        .iter()
        .map(|b| (b.name.clone(), b.base_weight))
        .collect();
    assert_eq!(
        names,
        vec![("backend-2".to_string(), 5), ("backend-3".to_string(), 2)]
    );
    // The plugin was told of each change and chose every request.
    assert_eq!(upstream().balancer().unwrap().pool.failures(), 0);

    // Mistakes are answered, not applied.
    let (status, _) = admin(
        addr,
        "DELETE",
        "/upstreams/web/backends/backend-1",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        addr,
        "POST",
        "/upstreams/web/backends",
        Some(TOKEN),
        r#"{"address": "nowhere"}"#,
    )
    .await;
    assert_eq!(status, 400);
    let dup = format!(r#"{{"name": "backend-3", "address": "{}"}}"#, newcomer.addr);
    let (status, _) = admin(addr, "POST", "/upstreams/web/backends", Some(TOKEN), &dup).await;
    assert_eq!(status, 400);
    let (status, _) = admin(addr, "GET", "/upstreams/nope", Some(TOKEN), "").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_survive_a_plugin_only_reload() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let extra = TestBackend::start("backend-9", Behaviour::Name).await;
    let proxy = TestProxy::start(&with_admin(config_text(&[backend.addr], "", ""))).await;
    let addr = proxy.server.admin_addr().unwrap();
    let body = format!(r#"{{"name": "backend-9", "address": "{}"}}"#, extra.addr);
    assert_eq!(
        admin(addr, "POST", "/upstreams/web/backends", Some(TOKEN), &body)
            .await
            .0,
        201
    );
    // The config did not come from a file: a reload rebuilds from the same
    // config, as a plugin change does.
    proxy.server.reload().await.unwrap();
    let names: Vec<_> = proxy
        .server
        .snapshot()
        .upstream("web")
        .unwrap()
        .backends()
        .iter()
        .map(|b| b.name.clone())
        .collect();
    assert_eq!(names, vec!["backend-1", "backend-9"]);
}

/// Parses Prometheus text exposition format strictly enough to catch any
/// malformed line: `# HELP`/`# TYPE` comments, then samples
/// `name{label="value",...} number`, each family's samples after its TYPE.
/// Returns samples keyed by `name{labels}` as written.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (kind, name, value) = (
                words.next().unwrap(),
                words.next().unwrap(),
                words.next().unwrap_or(""),
            );
            assert!(name_ok(name), "bad name in {line:?}");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&value),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), value.to_string()).is_none(),
                        "second TYPE for {name}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "bad name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels in {line:?}"));
            let mut rest = inner;
            while !rest.is_empty() {
                let (label, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(name_ok(label), "bad label name in {line:?}");
                let mut escaped = false;
                let end = after
                    .char_indices()
                    .find(|&(_, c)| {
                        let close = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close
                    })
                    .unwrap_or_else(|| panic!("unterminated label value in {line:?}"))
                    .0;
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_the_traffic_sent() {
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
        TestBackend::start("backend-3", Behaviour::Status(503)).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let text = config_text(
        &addrs,
        "[upstreams.web.balancer]\nplugin = \"round-robin\"\n",
        "",
    );
    let proxy = TestProxy::start(&with_admin(text)).await;
    let counts = spread(&format!("{}/", proxy.url), 300, 3).await;
    assert_eq!(counts.values().sum::<usize>(), 300);

    let addr = proxy.server.admin_addr().unwrap();
    let (status, body) = admin(addr, "GET", "/metrics", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let m = parse_prometheus(&body);
    let get = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    // Each backend's answers, by class, as the backend itself counted them.
    let mut total = 0.0;
    for b in &backends {
        let labels = format!("upstream=\"web\",backend=\"{}\"", b.name);
        let (class, other) = if b.name == "backend-3" {
            ("5xx", "2xx")
        } else {
            ("2xx", "5xx")
        };
        let answered = get(&format!("weir_requests_total{{{labels},code=\"{class}\"}}"));
        assert_eq!(answered, b.requests() as f64, "{}", b.name);
        assert_eq!(
            get(&format!("weir_requests_total{{{labels},code=\"{other}\"}}")),
            0.0
        );
        total += answered;
        assert_eq!(
            get(&format!("weir_request_duration_seconds_count{{{labels}}}")),
            answered
        );
        assert_eq!(
            get(&format!(
                "weir_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}"
            )),
            answered
        );
        assert_eq!(get(&format!("weir_backend_in_flight{{{labels}}}")), 0.0);
        assert_eq!(
            get(&format!(
                "weir_backend_health{{{labels},state=\"healthy\"}}"
            )),
            1.0
        );
    }
    assert_eq!(total, 300.0);
    let answered_503 = counts
        .iter()
        .filter(|((s, _), _)| *s == 503)
        .map(|(_, n)| *n)
        .sum::<usize>();
    assert_eq!(answered_503 as u64, backends[2].requests());
    let plugin = "upstream=\"web\",plugin=\"round-robin\"";
    assert_eq!(
        get(&format!(
            "weir_plugin_call_duration_seconds_count{{{plugin}}}"
        )),
        300.0
    );
    assert_eq!(get(&format!("weir_plugin_failures_total{{{plugin}}}")), 0.0);
    assert_eq!(get("weir_reloads_total"), 0.0);
    assert_eq!(get("weir_retries_total{upstream=\"web\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_json_line_per_request() {
    let backend = TestBackend::start("backend-1", Behaviour::Name).await;
    let dir = TempDir::new("access-log");
    let path = dir.0.join("access.log");
    let text = config_text(
        &[backend.addr],
        "[upstreams.web.balancer]\nplugin = \"round-robin\"\n",
        "",
    )
    .replace(
        "[access_log]\nenabled = false",
        &format!("[access_log]\npath = {:?}", path.display().to_string()),
    );
    let proxy = TestProxy::start(&text).await;
    let client = client();
    for i in 0..10 {
        get(&client, &format!("{}/item/{i}?secret=1", proxy.url)).await;
    }
    let lines = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_for("10 access log lines", || lines().len() >= 10).await;
    let lines = lines();
    assert_eq!(lines.len(), 10);
    for (i, line) in lines.iter().enumerate() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(entry["method"], "GET");
        assert_eq!(entry["path"], format!("/item/{i}"));
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["bytes"], "backend-1\n".len());
        assert_eq!(entry["upstream"], "web");
        assert_eq!(entry["backend"], "backend-1");
        assert_eq!(entry["chosen_by"], "plugin");
        assert_eq!(entry["plugin"], "round-robin");
        assert_eq!(entry["attempts"], 1);
        assert!(entry["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(entry["time"].as_str().unwrap().ends_with('Z'));
        assert!(entry["duration_ms"].as_f64().unwrap() > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_at_once_under_load_fails_no_request() {
    // Filters, a plugin balancer, health checks every 50 ms, outlier
    // detection, retries, admin changes and reloads, all while 4 clients
    // send requests: no request may fail.
    let backends = [
        TestBackend::start("backend-1", Behaviour::Name).await,
        TestBackend::start("backend-2", Behaviour::Name).await,
    ];
    let extra = TestBackend::start("backend-3", Behaviour::Name).await;
    let upstream = "[upstreams.web.balancer]\nplugin = \"round-robin\"\n\
         [upstreams.web.health_check]\npath = \"/\"\ninterval_ms = 50\ntimeout_ms = 200\n\
         [upstreams.web.outlier_detection]\nconsecutive_failures = 3\n";
    let filters = "\n[[routes.filters]]\nplugin = \"headers\"\nsettings = { request_id = \"x-request-id\" }\n\
         [[routes.filters]]\nplugin = \"rate-limit\"\nsettings = { rate = 1000000 }\n";
    let text =
        with_admin(config_text(&[backends[0].addr, backends[1].addr], upstream, "") + filters);
    let proxy = TestProxy::start(&text).await;
    let addr = proxy.server.admin_addr().unwrap();
    let load = Load::start(&format!("{}/", proxy.url), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let body = format!(r#"{{"name": "backend-3", "address": "{}"}}"#, extra.addr);
    assert_eq!(
        admin(addr, "POST", "/upstreams/web/backends", Some(TOKEN), &body)
            .await
            .0,
        201
    );
    for _ in 0..3 {
        proxy.server.reload().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = "/upstreams/web/backends/backend-1/drain";
    assert_eq!(admin(addr, "POST", drain, Some(TOKEN), "").await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let enable = "/upstreams/web/backends/backend-1/enable";
    assert_eq!(admin(addr, "POST", enable, Some(TOKEN), "").await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = load.finish_all_ok(200).await;

    // Every backend served, and the admin change survived the reloads.
    for name in ["backend-1", "backend-2", "backend-3"] {
        assert!(
            seen.iter().any(|(_, body)| body == name),
            "{name} got nothing"
        );
    }
    let snapshot = proxy.server.snapshot();
    let web = snapshot.upstream("web").unwrap();
    assert_eq!(web.backends().len(), 3);
    assert_eq!(web.backends().eligible().len(), 3);
    assert!(web.backends().iter().all(|b| b.state.checks_passed() > 0));
}
