//! The web UI's monitoring tab beyond the node history (`research/msm-frontend-api.md` §2.10):
//! the AdGuard panels (`adguard/*`) and the monitoring-stack panel (`monitoring/stack`), against
//! a real controller.
//!
//! AdGuard Home is not packaged for Debian and this machine reaches no download site, so these
//! tests run a fake AdGuard Home: a small HTTP server on a thread that checks HTTP Basic
//! credentials and answers `/control/status` and `/control/stats` in AdGuard Home's documented
//! format. Prometheus, Loki and Grafana are faked the same way (their readiness endpoints, and
//! Prometheus's `/api/v1/query`): the point is what the controller makes of their answers, and a
//! real stack in CI would test those projects rather than Flotilla (Debian 12 packages Prometheus
//! 2.42, deliberately not installed by `.ci/run` for this). Everything runs on loopback, where the
//! controller reaches the fakes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_tests::harness::{basic_header, free_port, wait_for, Fleet, FleetOptions, Reply, BASE_PATH};
use serde_json::{json, Value};

/// A request as the fakes see it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: HashMap<String, String>,
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// Serves `handler` on a free loopback port until the test process ends; returns the base URL.
fn fake_http(handler: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handler: Arc<Handler> = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handler = handler.clone();
            // One thread per connection: the controller probes several services at once.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                let mut parts = first.split_whitespace();
                let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                let mut headers = HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                    }
                }
                let request = Request { method: method.into(), target: target.into(), headers };
                let (status, body) = handler(&request);
                let kind = if body.starts_with(['{', '[']) { "application/json" } else { "text/plain" };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes()));
            });
        }
    });
    base
}

const AG_USER: &str = "agadmin";
const AG_PASSWORD: &str = "ag-S3cret-pass";

/// A fake AdGuard Home v0.107 behind HTTP Basic auth. Each `/control/stats` answer counts 100
/// more queries and 10 more blocked ones than the one before, as a busy resolver would.
struct FakeAdGuard {
    url: String,
    stats_calls: Arc<AtomicU64>,
}

fn fake_adguard() -> FakeAdGuard {
    let stats_calls = Arc::new(AtomicU64::new(0));
    let calls = stats_calls.clone();
    let expected = basic_header(AG_USER, AG_PASSWORD);
    let url = fake_http(move |req| {
        if req.method != "GET" {
            return (405, "method not allowed".into());
        }
        if req.headers.get("authorization") != Some(&expected) {
            return (401, "Unauthorized".into());
        }
        match req.target.as_str() {
            "/control/status" => (
                200,
                json!({
                    "dns_addresses": ["127.0.0.1"], "dns_port": 53, "http_port": 3000, "protection_enabled": true,
                    "protection_disabled_duration": 0, "dhcp_available": false, "running": true,
                    "version": "v0.107.52", "language": "en"
                })
                .to_string(),
            ),
            "/control/stats" => {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                (
                    200,
                    json!({
                        "time_units": "hours",
                        "top_queried_domains": [{ "example.org": 400 }],
                        "top_clients": [{ "192.168.1.10": 700 }, { "192.168.1.42": 300 }],
                        "top_blocked_domains": [{ "doubleclick.net": 150 }, { "ads.example": 100 }],
                        "top_upstreams_responses": [{ "tls://1.1.1.1": 750 }],
                        "top_upstreams_avg_time": [{ "tls://1.1.1.1": 0.0118 }],
                        "dns_queries": [0, 1000 + 100 * n],
                        "blocked_filtering": [0, 250 + 10 * n],
                        "replaced_safebrowsing": [0, 3],
                        "replaced_parental": [0, 0],
                        "num_dns_queries": 1000 + 100 * n,
                        "num_blocked_filtering": 250 + 10 * n,
                        "num_replaced_safebrowsing": 3,
                        "num_replaced_safesearch": 0,
                        "num_replaced_parental": 0,
                        "avg_processing_time": 0.012345
                    })
                    .to_string(),
                )
            }
            _ => (404, "404 page not found".into()),
        }
    });
    FakeAdGuard { url, stats_calls }
}

fn put(fleet: &Fleet, path: &str, body: &Value) -> Reply {
    fleet.api.request("PUT", path, Some(body.to_string().as_bytes()), Some(&fleet.api.basic()))
}

/// A `{"detail": "…"}` error with `status`, whose detail contains `needle`.
#[track_caller]
fn assert_detail(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    let detail = r.body["detail"].as_str().unwrap_or_else(|| panic!("no detail: {}", r.raw));
    assert!(detail.contains(needle), "{detail:?} should contain {needle:?}");
}

#[track_caller]
fn ok(r: Reply) -> Value {
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body
}

fn by_name<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array().and_then(|l| l.iter().find(|s| s[key] == name)).unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// Waits until the wall clock is in a later second than now, so the next collection gets its own
/// timestamp.
fn next_second() {
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let start = now().as_secs();
    while now().as_secs() == start {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn adguard_panels_collect_a_fake_adguard_home_and_keep_its_password_secret() {
    let fleet = Fleet::start_with(FleetOptions { loopback: true, ..Default::default() });
    let adguard = fake_adguard();

    // The UI's 401s carry no challenge header.
    for (method, path) in [("GET", "/api/v1/adguard/sources"), ("POST", "/api/v1/adguard/collect-now")] {
        let r = fleet.api.request(method, path, Some(b"{}"), None);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.raw);
        assert_eq!(r.header("www-authenticate"), None, "{method} {path}");
    }
    let wrong = basic_header("admin", "wrong");
    assert_eq!(fleet.api.request("GET", "/api/v1/adguard/overview", None, Some(&wrong)).status, 401);
    assert_eq!(ok(fleet.api.get("/api/v1/adguard/sources")), json!([]));

    // The UI's "add source" form: name and admin_url are required, the URL must be http(s).
    let form = |name: &str, url: &str, password: &str| {
        json!({ "name": name, "admin_url": url, "dns_url": "", "username": AG_USER, "password": password,
                "verify_tls": true, "enabled": true })
    };
    assert_detail(
        &fleet.api.post("/api/v1/adguard/sources", &form("", &adguard.url, "x")),
        400,
        "Missing required fields",
    );
    let no_url = json!({ "name": "Home DNS", "username": AG_USER });
    assert_detail(&fleet.api.post("/api/v1/adguard/sources", &no_url), 400, "Missing required fields");
    for bad in ["dns.example.com:3000", "ftp://dns.example.com", "https://", "http://agadmin:pw@dns.example.com"] {
        assert_detail(&fleet.api.post("/api/v1/adguard/sources", &form("Home DNS", bad, "x")), 400, "admin_url");
    }
    let home =
        ok(fleet.api.post("/api/v1/adguard/sources", &form("Home DNS", &format!("{}/", adguard.url), AG_PASSWORD)));
    assert_eq!(home["status"], "success");
    let home_id = home["id"].as_i64().expect("id");
    assert_detail(
        &fleet.api.post("/api/v1/adguard/sources", &form("home dns", &adguard.url, "x")),
        409,
        "already exists",
    );
    // A source whose server is down (nothing listens on the port).
    let dead_url = format!("http://127.0.0.1:{}", free_port());
    let office = ok(fleet.api.post("/api/v1/adguard/sources", &form("Office DNS", &dead_url, "pw")));
    let office_id = office["id"].as_i64().unwrap();

    // Listed without the password.
    let listed = fleet.api.get("/api/v1/adguard/sources");
    assert!(!listed.raw.contains(AG_PASSWORD), "the password leaked: {}", listed.raw);
    let row = by_name(&listed.body, "name", "Home DNS").clone();
    assert_eq!(row["has_password"], true);
    assert!(row.get("password").is_none(), "{row}");
    assert_eq!(row["admin_url"], adguard.url, "stored without the trailing slash");
    assert_eq!((&row["username"], &row["verify_tls"], &row["enabled"]), (&json!(AG_USER), &json!(true), &json!(true)));
    assert_eq!((&row["last_success_ts"], &row["last_error"]), (&json!(0), &json!("")));
    let names: Vec<&str> = listed.body.as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["Home DNS", "Office DNS"]);

    // "Collect now" reads the fake with the stored credentials.
    let collected = ok(fleet.api.post("/api/v1/adguard/collect-now", &json!({})));
    assert_eq!((&collected["status"], &collected["count"]), (&json!("success"), &json!(2)), "{collected}");
    let snap = by_name(&collected["sources"], "source_name", "Home DNS").clone();
    assert_eq!(snap["available"], true, "{snap}");
    let queries = snap["queries_total"].as_u64().unwrap();
    let blocked = snap["blocked_total"].as_u64().unwrap();
    assert!(queries >= 1000 && (queries - 1000).is_multiple_of(100), "{snap}");
    assert_eq!(blocked, 250 + (queries - 1000) / 10, "filters only, not safe browsing");
    let rate = ((blocked as f64 * 100.0 / queries as f64) * 100.0).round() / 100.0;
    assert_eq!(snap["blocked_rate"].as_f64(), Some(rate), "a percentage");
    assert_eq!(snap["avg_latency_ms"].as_f64(), Some(12.35), "AdGuard Home reports seconds");
    assert_eq!((&snap["cache_hit_ratio"], &snap["upstream_errors"]), (&Value::Null, &Value::Null), "not in its API");
    assert_eq!(snap["top_blocked_domains"][0], json!({ "name": "doubleclick.net", "count": 150 }));
    assert_eq!(
        snap["top_clients"],
        json!([{ "name": "192.168.1.10", "count": 700 }, { "name": "192.168.1.42", "count": 300 }])
    );
    let down = by_name(&collected["sources"], "source_name", "Office DNS");
    assert_eq!(down["available"], false);
    assert!(down["error"].as_str().is_some_and(|e| e.contains("127.0.0.1")), "{down}");

    // The overview: what answered adds up; the dead source counts as a source, not as online.
    let overview = ok(fleet.api.get("/api/v1/adguard/overview"));
    let summary = &overview["summary"];
    assert_eq!((&summary["sources_total"], &summary["sources_online"]), (&json!(2), &json!(1)), "{overview}");
    assert_eq!((summary["queries_total"].as_u64(), summary["blocked_total"].as_u64()), (Some(queries), Some(blocked)));
    assert_eq!(summary["blocked_rate"].as_f64(), Some(rate));
    assert_eq!(summary["avg_latency_ms"].as_f64(), Some(12.35));
    assert_eq!((&summary["cache_hit_ratio"], &summary["upstream_errors"]), (&Value::Null, &Value::Null));
    let in_overview = by_name(&overview["sources"], "source_name", "Home DNS");
    assert_eq!((&in_overview["source_id"], &in_overview["queries_total"]), (&json!(home_id), &json!(queries)));
    assert!(by_name(&overview["sources"], "source_name", "Office DNS")["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert!(overview["ts"].as_i64().is_some());
    // Under the panel's prefix too.
    assert_eq!(ok(fleet.api.get(&format!("{BASE_PATH}/api/v1/adguard/overview")))["summary"]["sources_online"], 1);

    // The sources remember how their last collection went.
    let listed = ok(fleet.api.get("/api/v1/adguard/sources"));
    let home_row = by_name(&listed, "name", "Home DNS");
    assert!(home_row["last_success_ts"].as_i64().unwrap() > 0, "{home_row}");
    assert_eq!((&home_row["api_base"], &home_row["version"]), (&json!(adguard.url), &json!("v0.107.52")));
    let office_row = by_name(&listed, "name", "Office DNS");
    assert_eq!(office_row["last_success_ts"], 0);
    assert!(office_row["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{office_row}");
    assert!(office_row["last_collected_ts"].as_i64().unwrap() > 0);

    // A second collection, in a later second: the history has two buckets a second wide.
    next_second();
    ok(fleet.api.post("/api/v1/adguard/collect-now", &json!({})));
    let fine = ok(fleet.api.get("/api/v1/adguard/history?range_sec=3600&bucket_sec=1"));
    assert_eq!((&fine["range_sec"], &fine["bucket_sec"]), (&json!(3600), &json!(1)));
    let buckets = fine["buckets"].as_array().unwrap();
    assert!(buckets.len() >= 2, "{fine}");
    let names: Vec<&str> =
        fine["series"].as_array().unwrap().iter().filter_map(|s| s["source_name"].as_str()).collect();
    assert_eq!(names, ["Home DNS", "Office DNS"]);
    let home_series = by_name(&fine["series"], "source_name", "Home DNS");
    let points: Vec<&Value> = home_series["points"].as_array().unwrap().iter().filter(|p| !p.is_null()).collect();
    assert!(points.len() >= 2, "{home_series}");
    assert_eq!(home_series["points"].as_array().unwrap().len(), buckets.len(), "one entry per bucket");
    for p in &points {
        assert!(buckets.contains(&p["ts"]), "a point is stamped with its bucket: {p}");
        assert_eq!(p["available"], true);
        assert!(p["blocked_rate"].as_f64().is_some_and(|r| r > 20.0 && r <= 25.0), "{p}");
        assert_eq!(p["avg_latency_ms"].as_f64(), Some(12.35));
    }
    let delta = fine["summary"]["queries_delta"].as_u64().unwrap();
    assert!(delta >= 100 && delta.is_multiple_of(100), "{}", fine["summary"]);
    assert_eq!(fine["summary"]["blocked_delta"].as_u64(), Some(delta / 10));
    let per_sec = (delta as f64 / 3600.0 * 10_000.0).round() / 10_000.0;
    assert_eq!(fine["summary"]["queries_per_sec"].as_f64(), Some(per_sec));
    let office_series = by_name(&fine["series"], "source_name", "Office DNS");
    assert!(office_series["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p.is_null())
        .all(|p| p["available"] == false));
    let coarse = ok(fleet.api.get("/api/v1/adguard/history?range_sec=3600&bucket_sec=21600"));
    assert!(coarse["buckets"].as_array().unwrap().len() < buckets.len(), "{coarse}");
    let clamped = ok(fleet.api.get("/api/v1/adguard/history?range_sec=1&bucket_sec=0"));
    assert_eq!((&clamped["range_sec"], &clamped["bucket_sec"]), (&json!(60), &json!(1)));
    assert_detail(&fleet.api.get("/api/v1/adguard/history?range_sec=abc"), 400, "range_sec");
    assert!(adguard.stats_calls.load(Ordering::SeqCst) >= 2);

    // PUT changes what it names: pointing the office source at the fake with a wrong password
    // makes it fail on the credentials.
    let to_fake = json!({ "admin_url": adguard.url, "password": "not-the-password" });
    assert_eq!(ok(put(&fleet, &format!("/api/v1/adguard/sources/{office_id}"), &to_fake))["status"], "success");
    let collected = ok(fleet.api.post("/api/v1/adguard/collect-now", &json!({})));
    let refused = by_name(&collected["sources"], "source_name", "Office DNS");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("credentials refused")), "{refused}");
    // An empty password keeps the stored one; a right one fixes it.
    ok(put(&fleet, &format!("/api/v1/adguard/sources/{office_id}"), &json!({ "password": "" })));
    ok(put(&fleet, &format!("/api/v1/adguard/sources/{office_id}"), &json!({ "password": AG_PASSWORD })));
    let collected = ok(fleet.api.post("/api/v1/adguard/collect-now", &json!({})));
    assert_eq!(by_name(&collected["sources"], "source_name", "Office DNS")["available"], true, "{collected}");
    // A disabled source is not collected and leaves the overview.
    ok(put(&fleet, &format!("/api/v1/adguard/sources/{office_id}"), &json!({ "enabled": false })));
    assert_eq!(ok(fleet.api.post("/api/v1/adguard/collect-now", &json!({})))["count"], 1);
    assert_eq!(ok(fleet.api.get("/api/v1/adguard/overview"))["summary"]["sources_total"], 1);
    assert_eq!(by_name(&ok(fleet.api.get("/api/v1/adguard/sources")), "name", "Office DNS")["enabled"], false);
    // Refusals.
    let home_path = format!("/api/v1/adguard/sources/{home_id}");
    assert_detail(&put(&fleet, &home_path, &json!({ "admin_url": "ftp://x" })), 400, "admin_url");
    assert_detail(&put(&fleet, &home_path, &json!({ "name": " " })), 400, "Missing required fields");
    assert_detail(&put(&fleet, &home_path, &json!({ "name": "office dns" })), 409, "already exists");
    assert_detail(&put(&fleet, "/api/v1/adguard/sources/999", &json!({ "enabled": true })), 404, "not found");
    assert_detail(&put(&fleet, "/api/v1/adguard/sources/abc", &json!({})), 400, "source_id");
    assert_detail(&fleet.api.delete("/api/v1/adguard/sources/999"), 404, "not found");
    let r = fleet.api.request("DELETE", &home_path, None, None);
    assert_eq!((r.status, r.header("www-authenticate")), (401, None), "{}", r.raw);

    // DELETE takes the source and its history.
    assert_eq!(ok(fleet.api.delete(&home_path))["status"], "success");
    assert_detail(&fleet.api.delete(&home_path), 404, "not found");
    let names: Vec<String> = ok(fleet.api.get("/api/v1/adguard/sources"))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect();
    assert_eq!(names, ["Office DNS"]);
    let history = ok(fleet.api.get("/api/v1/adguard/history?range_sec=3600&bucket_sec=1"));
    assert!(history["series"].as_array().unwrap().iter().all(|s| s["source_id"] != home_id), "{history}");
    let log = fleet.controller_log_text();
    assert!(!log.contains(AG_PASSWORD), "the password is in the controller's log");
}

/// Fake Prometheus (behind Basic auth), Loki (not ready yet) and Grafana.
struct FakeStack {
    prometheus: String,
    loki: String,
    grafana: String,
    prometheus_ready: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<String>>>,
}

fn fake_stack() -> FakeStack {
    let prometheus_ready = Arc::new(AtomicBool::new(true));
    let queries = Arc::new(Mutex::new(vec![]));
    let (ready, seen) = (prometheus_ready.clone(), queries.clone());
    let prometheus = fake_http(move |req| {
        if req.headers.get("authorization") != Some(&basic_header("prom", "prom-pw")) {
            return (401, "Unauthorized".into());
        }
        match req.target.split_once('?') {
            None if req.target == "/-/ready" => match ready.load(Ordering::SeqCst) {
                true => (200, "Prometheus Server is Ready.\n".into()),
                false => (503, "Service Unavailable".into()),
            },
            Some(("/api/v1/query", query)) => {
                seen.lock().unwrap().push(query.to_string());
                let answer = json!({ "status": "success", "data": { "resultType": "vector",
                    "result": [{ "metric": {}, "value": [1741860000.5, "3"] }] } });
                (200, answer.to_string())
            }
            _ => (404, "404 page not found".into()),
        }
    });
    let loki = fake_http(|req| match req.target.as_str() {
        "/ready" => (503, "Ingester not ready: waiting for 15s after being ready\n".into()),
        _ => (404, "404 page not found".into()),
    });
    let grafana = fake_http(|req| match req.target.as_str() {
        "/api/health" => (200, json!({ "commit": "abc", "database": "ok", "version": "10.4.1" }).to_string()),
        _ => (404, json!({ "message": "Not found" }).to_string()),
    });
    FakeStack { prometheus, loki, grafana, prometheus_ready, queries }
}

#[test]
fn monitoring_stack_probes_the_configured_services() {
    let mut fleet = Fleet::start_with(FleetOptions { loopback: true, ..Default::default() });

    // Nothing configured: every service says so, and there are no Prometheus figures.
    let stack = ok(fleet.api.get("/api/v1/monitoring/stack"));
    for service in ["prometheus", "loki", "grafana"] {
        assert_eq!(
            stack["services"][service],
            json!({ "enabled": false, "url": "", "ok": false, "status_code": null, "error": "not configured" }),
            "{service}"
        );
    }
    assert_eq!(stack["prometheus_metrics"], json!({}));
    assert_eq!(stack["public_paths"], json!({ "panel": BASE_PATH.trim_matches('/'), "grafana": "grafana" }));
    assert!(stack["ts"].as_i64().is_some());
    let r = fleet.api.request("GET", "/api/v1/monitoring/stack", None, None);
    assert_eq!((r.status, r.header("www-authenticate")), (401, None), "{}", r.raw);

    // An AdGuard source, so its figures show beside the stack.
    let adguard = fake_adguard();
    let source = json!({ "name": "Home DNS", "admin_url": adguard.url, "username": AG_USER, "password": AG_PASSWORD });
    ok(fleet.api.post("/api/v1/adguard/sources", &source));
    ok(fleet.api.post("/api/v1/adguard/collect-now", &json!({})));

    // Configure the stack ([monitoring] in controller.toml) and restart the controller.
    let fakes = fake_stack();
    let with_credentials = fakes.prometheus.replace("http://", "http://prom:prom-pw@");
    std::fs::write(
        fleet.controller_config(),
        format!(
            "[monitoring]\nprometheus_url = \"{with_credentials}\"\nloki_url = \"{}\"\ngrafana_url = \"{}/\"\n\
             grafana_public_path = \"/ops/grafana/\"\n",
            fakes.loki, fakes.grafana
        ),
    )
    .unwrap();
    let calls = adguard.stats_calls.load(Ordering::SeqCst);
    fleet.stop_controller();
    fleet.start_controller();
    // The collector reads every source when the controller starts: let that finish, so the
    // latest sample stays the same while the stack is asked (the next round is a minute away).
    let expected = 1000 + 100 * calls;
    let snap = wait_for("the start-up AdGuard collection", Duration::from_secs(20), || {
        let overview = ok(fleet.api.get("/api/v1/adguard/overview"));
        let source = overview["sources"][0].clone();
        (source["queries_total"] == expected).then_some(source)
    });

    let stack = ok(fleet.api.get("/api/v1/monitoring/stack"));
    let services = &stack["services"];
    assert_eq!(
        services["prometheus"],
        json!({ "enabled": true, "url": fakes.prometheus, "ok": true, "status_code": 200, "error": "" }),
        "credentials in the URL are used and never shown"
    );
    assert_eq!((&services["loki"]["ok"], &services["loki"]["status_code"]), (&json!(false), &json!(503)));
    assert!(services["loki"]["error"].as_str().is_some_and(|e| e.starts_with("Ingester not ready")), "{stack}");
    assert_eq!(
        services["grafana"],
        json!({ "enabled": true, "url": fakes.grafana, "ok": true, "status_code": 200, "error": "" })
    );
    assert_eq!(stack["public_paths"]["grafana"], "ops/grafana");
    let metrics = &stack["prometheus_metrics"];
    assert_eq!(metrics["up_sum"].as_f64(), Some(3.0), "from Prometheus's answer: {stack}");
    assert!(fakes.queries.lock().unwrap().iter().any(|q| q == "query=sum%28up%29"), "{:?}", fakes.queries);
    // Flotilla's own numbers: no node is connected; the AdGuard figures are the latest sample's.
    assert_eq!((&metrics["node_online_sum"], &metrics["node_clients_sum"]), (&json!(0), &json!(0)));
    assert_eq!(metrics["adguard_queries_sum"], snap["queries_total"]);
    assert_eq!(metrics["adguard_blocked_sum"], snap["blocked_total"]);
    assert_eq!(metrics["adguard_block_rate_avg"], snap["blocked_rate"]);

    // Prometheus not ready: no figures at all, as the original manager answers.
    fakes.prometheus_ready.store(false, Ordering::SeqCst);
    let stack = ok(fleet.api.get("/api/v1/monitoring/stack"));
    assert_eq!(
        (&stack["services"]["prometheus"]["ok"], &stack["services"]["prometheus"]["status_code"]),
        (&json!(false), &json!(503))
    );
    assert_eq!(stack["prometheus_metrics"], json!({}));

    // A URL that is not http(s) stops the controller at start, naming the key.
    std::fs::write(fleet.controller_config(), "[monitoring]\nloki_url = \"loki:3100\"\n").unwrap();
    fleet.stop_controller();
    let out = std::process::Command::new(flotilla_tests::harness::bin_dir().join("flotilla-controller"))
        .args(["--config", &fleet.controller_config().display().to_string(), "--data-dir"])
        .arg(fleet.controller_data_dir())
        .args(["serve", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loki_url"), "{}", String::from_utf8_lossy(&out.stderr));
}
