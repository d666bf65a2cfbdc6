//! Every documented error path of the multi-server API implemented so far (health, nodes, join
//! tokens, servers status/availability), plus the documented shapes of the happy paths. Errors are
//! always `{"detail": "<non-empty string>"}`; a 401 always carries `WWW-Authenticate: Basic`.
//!
//! No agents are needed: every test runs its own controller on loopback.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use flotilla_tests::harness::{basic_header, Fleet, FleetOptions, Reply};
use serde_json::{json, Value};

/// Panel credentials given in `POST /api/v1/nodes`: stored encrypted, only ever shown masked.
const SECRET: &str = "password123-not-to-be-shown";
const PANEL_USER: &str = "panel-operator-not-to-be-shown";

fn fleet() -> Fleet {
    Fleet::start_with(FleetOptions { loopback: true, ..Default::default() })
}

/// Authenticated request as the admin.
fn admin(fleet: &Fleet, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
    fleet.api.request(method, path, body, Some(&fleet.api.basic()))
}

/// Asserts `status` and the family's error body `{"detail": "<non-empty string>"}` (nothing else).
#[track_caller]
fn assert_error(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: expected {status}, got {} {}", r.status, r.raw);
    let obj = r.body.as_object().unwrap_or_else(|| panic!("{what}: error body is not a JSON object: {:?}", r.raw));
    let detail = obj.get("detail").and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: no detail: {}", r.raw));
    assert!(!detail.trim().is_empty(), "{what}: empty detail");
    assert_eq!(obj.len(), 1, "{what}: error body has more than `detail`: {}", r.raw);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{what}: content-type {ct:?}");
}

#[track_caller]
fn assert_401(r: &Reply, what: &str) {
    assert_error(r, 401, what);
    let challenge = r.header("www-authenticate").unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate"));
    assert!(challenge.to_ascii_lowercase().starts_with("basic"), "{what}: WWW-Authenticate {challenge:?}");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Creates a node with `body`, asserting success.
fn create(fleet: &Fleet, body: &Value) -> Value {
    let r = admin(fleet, "POST", "/api/v1/nodes", Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "create {body}: {}", r.raw);
    r.body
}

fn node_names(fleet: &Fleet) -> Vec<String> {
    let r = admin(fleet, "GET", "/api/v1/nodes", None);
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body.as_array().expect("array").iter().map(|n| n["name"].as_str().expect("name").to_string()).collect()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses the documents' `YYYY-MM-DDTHH:MM:SS` (UTC, no offset, no fraction) into Unix seconds.
#[track_caller]
fn parse_timestamp(s: &str) -> i64 {
    let b = s.as_bytes();
    let shape_ok = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "timestamp {s:?} is not YYYY-MM-DDTHH:MM:SS");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, mo, d, h, mi, se) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
    assert!((1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && se < 61, "timestamp {s:?}");
    days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Every protected endpoint implemented so far, with a request that would succeed given credentials.
fn protected(node: i64) -> Vec<(&'static str, String, Option<Vec<u8>>)> {
    vec![
        ("GET", "/api/v1/nodes".into(), None),
        ("POST", "/api/v1/nodes".into(), Some(json!({ "name": "intruder" }).to_string().into_bytes())),
        ("GET", format!("/api/v1/nodes/{node}"), None),
        ("DELETE", format!("/api/v1/nodes/{node}"), None),
        ("POST", format!("/api/v1/nodes/{node}/join-token"), None),
        ("GET", "/api/v1/servers/status".into(), None),
        ("GET", format!("/api/v1/servers/{node}/status"), None),
        ("GET", "/api/v1/servers/availability".into(), None),
    ]
}

#[test]
fn unauthenticated_requests_get_401_with_a_basic_challenge() {
    let fleet = fleet();
    let node = create(&fleet, &json!({ "name": "victim" }))["id"].as_i64().unwrap();
    let password = fleet.api.password.clone();
    let bad_auth: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("wrong password", Some(basic_header("admin", "wrong-password"))),
        ("password of another case", Some(basic_header("admin", &password.to_uppercase()))),
        ("empty password", Some(basic_header("admin", ""))),
        ("unknown user", Some(basic_header("nobody", &password))),
        ("empty user", Some(basic_header("", &password))),
        ("Basic !!! (not base64)", Some("Basic !!!".into())),
        ("base64 without a colon", Some(format!("Basic {}", b64(format!("admin{password}").as_bytes())))),
        ("base64 of invalid UTF-8", Some(format!("Basic {}", b64(b"admin:\xff\xfe")))),
        ("Basic without credentials", Some("Basic".into())),
        ("Basic with a blank", Some("Basic ".into())),
        ("Bearer token", Some(format!("Bearer {password}"))),
        (
            "Bearer carrying the Basic credentials",
            Some(format!("Bearer {}", b64(format!("admin:{password}").as_bytes()))),
        ),
        ("unknown scheme", Some("Digest username=\"admin\"".into())),
    ];
    for (method, path, body) in protected(node) {
        for (what, auth) in &bad_auth {
            let r = fleet.api.request(method, &path, body.as_deref(), auth.as_deref());
            assert_401(&r, &format!("{method} {path} with {what}"));
        }
    }
    // Authentication comes before any other check: no 400/404 tells a stranger anything.
    let probes: Vec<(&str, String, Option<&[u8]>)> = vec![
        ("POST", "/api/v1/nodes".into(), Some(b"{not json")),
        ("POST", "/api/v1/nodes".into(), Some(b"")),
        ("POST", "/api/v1/nodes".into(), Some(br#"{"name":"victim"}"#)),
        ("GET", "/api/v1/nodes/abc".into(), None),
        ("GET", "/api/v1/nodes/999999".into(), None),
        ("DELETE", "/api/v1/nodes/999999".into(), None),
        ("POST", "/api/v1/nodes/0/join-token".into(), None),
        ("GET", "/api/v1/servers/-1/status".into(), None),
    ];
    for (method, path, body) in probes {
        assert_401(&fleet.api.request(method, &path, body, None), &format!("{method} {path} without credentials"));
        let wrong = basic_header("admin", "nope");
        assert_401(&fleet.api.request(method, &path, body, Some(&wrong)), &format!("{method} {path} wrong password"));
    }
    // Nothing was changed by the refused calls.
    assert_eq!(node_names(&fleet), vec!["victim".to_string()]);
    let r = admin(&fleet, "GET", &format!("/api/v1/nodes/{node}"), None);
    assert_eq!(r.status, 200, "{}", r.raw);
    // And the right credentials still work, in any case of the scheme name.
    let lower = format!("basic {}", b64(format!("admin:{password}").as_bytes()));
    assert_eq!(fleet.api.request("GET", "/api/v1/nodes", None, Some(&lower)).status, 200);
}

#[test]
fn health_is_public_and_documented() {
    let fleet = fleet();
    for auth in [None, Some("Basic !!!".to_string()), Some(basic_header("admin", "wrong")), Some(fleet.api.basic())] {
        let r = fleet.api.request("GET", "/api/v1/health", None, auth.as_deref());
        assert_eq!(r.status, 200, "health with {auth:?}: {}", r.raw);
        assert_eq!(r.body["status"], "healthy", "{}", r.raw);
        let ts = r.body["timestamp"].as_str().unwrap_or_else(|| panic!("timestamp: {}", r.raw));
        let skew = (parse_timestamp(ts) - now_unix()).abs();
        assert!(skew <= 5, "health timestamp {ts} is {skew} s away from now (UTC expected)");
        assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"));
    }
    // Wrong method on the public path: 405, same error shape.
    let r = fleet.api.request("POST", "/api/v1/health", Some(b"{}"), None);
    assert_error(&r, 405, "POST /api/v1/health");
}

#[test]
fn malformed_node_bodies_are_400() {
    let fleet = fleet();
    create(&fleet, &json!({ "name": "existing" }));
    let long65 = "x".repeat(65);
    let long65_multibyte = "é".repeat(65);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", b"{bad".to_vec()),
        ("truncated JSON", br#"{"name": "a""#.to_vec()),
        ("trailing garbage", br#"{"name": "a"} x"#.to_vec()),
        ("empty body", b"".to_vec()),
        ("whitespace body", b"  \n\t ".to_vec()),
        ("not UTF-8", b"\xff\xfe\x00".to_vec()),
        ("JSON array", b"[1, 2]".to_vec()),
        ("JSON array shaped like the fields", br#"["from-an-array", null, null, null]"#.to_vec()),
        ("JSON string", br#""name""#.to_vec()),
        ("JSON number", b"42".to_vec()),
        ("JSON null", b"null".to_vec()),
        ("JSON bool", b"true".to_vec()),
        ("missing name", b"{}".to_vec()),
        ("missing name with url", br#"{"url": "https://1.2.3.4/"}"#.to_vec()),
        ("null name", br#"{"name": null}"#.to_vec()),
        ("empty name", br#"{"name": ""}"#.to_vec()),
        ("blank name", br#"{"name": "   "}"#.to_vec()),
        ("name of 65 chars", json!({ "name": long65 }).to_string().into_bytes()),
        ("name of 65 multibyte chars", json!({ "name": long65_multibyte }).to_string().into_bytes()),
        ("name with a control char", json!({ "name": "a\u{7}b" }).to_string().into_bytes()),
        ("name with a newline", json!({ "name": "a\nb" }).to_string().into_bytes()),
        ("name not a string", br#"{"name": 5}"#.to_vec()),
        ("name an object", br#"{"name": {"x": 1}}"#.to_vec()),
        ("duplicate key", br#"{"name": "a", "name": "b"}"#.to_vec()),
        ("unknown field", br#"{"name": "a", "bogus": 1}"#.to_vec()),
        ("unknown field of another case", br#"{"name": "a", "Name": "b"}"#.to_vec()),
        ("url not a URL", br#"{"name": "a", "url": "not a url"}"#.to_vec()),
        ("url without host", br#"{"name": "a", "url": "https://"}"#.to_vec()),
        ("url ftp", br#"{"name": "a", "url": "ftp://1.2.3.4/"}"#.to_vec()),
        ("url file", br#"{"name": "a", "url": "file:///etc/passwd"}"#.to_vec()),
        ("url javascript", br#"{"name": "a", "url": "javascript:alert(1)"}"#.to_vec()),
        ("url not a string", br#"{"name": "a", "url": 443}"#.to_vec()),
        ("user not a string", br#"{"name": "a", "user": ["admin"]}"#.to_vec()),
        ("password not a string", br#"{"name": "a", "password": 123}"#.to_vec()),
    ];
    for (what, body) in &cases {
        let r = admin(&fleet, "POST", "/api/v1/nodes", Some(body));
        assert_error(&r, 400, &format!("POST /api/v1/nodes with {what}"));
    }
    // Without any body at all (no Content-Length, no Content-Type).
    let r = admin(&fleet, "POST", "/api/v1/nodes", None);
    assert_error(&r, 400, "POST /api/v1/nodes without a body");
    // Far over any sane size: refused (400, or 413 which is just as right), with the same shape.
    let huge = json!({ "name": "x".repeat(3 * 1024 * 1024) }).to_string();
    let r = fleet.api.post_expect_continue("/api/v1/nodes", huge.as_bytes());
    assert!(r.status == 400 || r.status == 413, "3 MiB body: {} {}", r.status, &r.raw[..r.raw.len().min(200)]);
    assert_error(&r, r.status, "3 MiB body");
    // Nothing was created by any of them.
    assert_eq!(node_names(&fleet), vec!["existing".to_string()]);

    // The limits are exactly where the 400s say: 64 characters (not bytes) pass.
    for name in ["y".repeat(64), "é".repeat(64)] {
        let body = create(&fleet, &json!({ "name": name }));
        assert_eq!(body["name"], Value::String(name.clone()));
    }
}

#[test]
fn bad_node_ids_in_paths_are_400_and_unknown_ones_404() {
    let fleet = fleet();
    let node = create(&fleet, &json!({ "name": "real" }))["id"].as_i64().unwrap();
    let bad_ids = ["abc", "0", "-1", "1.5", "1e3", "0x10", "99999999999999999999", "%20", "1%2F2", "one"];
    for id in bad_ids {
        for (method, path) in [
            ("GET", format!("/api/v1/nodes/{id}")),
            ("DELETE", format!("/api/v1/nodes/{id}")),
            ("POST", format!("/api/v1/nodes/{id}/join-token")),
            ("GET", format!("/api/v1/servers/{id}/status")),
        ] {
            let r = admin(&fleet, method, &path, None);
            assert_error(&r, 400, &format!("{method} {path}"));
        }
    }
    let unknown = node + 1000;
    for (method, path) in [
        ("GET", format!("/api/v1/nodes/{unknown}")),
        ("DELETE", format!("/api/v1/nodes/{unknown}")),
        ("POST", format!("/api/v1/nodes/{unknown}/join-token")),
        ("GET", format!("/api/v1/servers/{unknown}/status")),
        ("GET", format!("/api/v1/nodes/{}", i64::MAX)),
    ] {
        let r = admin(&fleet, method, &path, None);
        assert_error(&r, 404, &format!("{method} {path}"));
    }
    // A deleted node is unknown everywhere, and deleting twice is a 404.
    let r = admin(&fleet, "DELETE", &format!("/api/v1/nodes/{node}"), None);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"], "success", "{}", r.raw);
    assert_eq!(r.body["id"], node, "{}", r.raw);
    for (method, path) in [
        ("GET", format!("/api/v1/nodes/{node}")),
        ("DELETE", format!("/api/v1/nodes/{node}")),
        ("POST", format!("/api/v1/nodes/{node}/join-token")),
        ("GET", format!("/api/v1/servers/{node}/status")),
    ] {
        let r = admin(&fleet, method, &path, None);
        assert_error(&r, 404, &format!("{method} {path} after delete"));
    }
    assert!(node_names(&fleet).is_empty());
}

#[test]
fn unknown_paths_404_wrong_methods_405_duplicates_409() {
    let fleet = fleet();
    let node = create(&fleet, &json!({ "name": "dup" }))["id"].as_i64().unwrap();

    for path in
        ["/api/v1/nope", "/api/v1", "/", "/api/v2/nodes", "/api/v1/nodes/", "/api/v1/nodes/1/nope", "/api/v1/servers"]
    {
        for auth in [Some(fleet.api.basic()), None] {
            let r = fleet.api.request("GET", path, None, auth.as_deref());
            assert_error(&r, 404, &format!("GET {path} (auth: {})", auth.is_some()));
        }
    }
    let r = admin(&fleet, "POST", "/api/v1/nope", Some(b"{}"));
    assert_error(&r, 404, "POST /api/v1/nope");

    // Wrong method on an existing path: 405 with the JSON shape and an Allow header.
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("PUT", "/api/v1/nodes".into(), &["GET", "POST"]),
        ("PATCH", "/api/v1/nodes".into(), &["GET", "POST"]),
        ("DELETE", "/api/v1/nodes".into(), &["GET", "POST"]),
        ("POST", "/api/v1/health".into(), &["GET"]),
        ("DELETE", "/api/v1/health".into(), &["GET"]),
        // PUT renames a node (the web UI's call); PATCH is nobody's.
        ("PATCH", format!("/api/v1/nodes/{node}"), &["GET", "DELETE", "PUT"]),
        ("POST", format!("/api/v1/nodes/{node}"), &["GET", "DELETE"]),
        ("GET", format!("/api/v1/nodes/{node}/join-token"), &["POST"]),
        ("DELETE", format!("/api/v1/nodes/{node}/join-token"), &["POST"]),
        ("POST", "/api/v1/servers/status".into(), &["GET"]),
        ("DELETE", "/api/v1/servers/availability".into(), &["GET"]),
        ("PUT", format!("/api/v1/servers/{node}/status"), &["GET"]),
    ];
    for (method, path, allowed) in cases {
        for auth in [Some(fleet.api.basic()), None] {
            let r = fleet.api.request(method, &path, Some(b"{}"), auth.as_deref());
            let what = format!("{method} {path} (auth: {})", auth.is_some());
            assert_error(&r, 405, &what);
            let allow = r.header("allow").unwrap_or_else(|| panic!("{what}: 405 without Allow"));
            for m in allowed {
                assert!(allow.split(',').any(|a| a.trim() == *m), "{what}: Allow {allow:?} lacks {m}");
            }
            assert!(!allow.split(',').any(|a| a.trim() == method), "{what}: Allow {allow:?} has {method}");
        }
    }
    // The node survived the wrong-method calls.
    assert_eq!(admin(&fleet, "GET", &format!("/api/v1/nodes/{node}"), None).status, 200);

    // Duplicate names: 409, also after trimming; a different name is fine.
    for body in
        [json!({ "name": "dup" }), json!({ "name": "  dup  " }), json!({ "name": "dup", "url": "https://1.2.3.4/" })]
    {
        let r = admin(&fleet, "POST", "/api/v1/nodes", Some(body.to_string().as_bytes()));
        assert_error(&r, 409, &format!("duplicate {body}"));
    }
    assert_eq!(node_names(&fleet), vec!["dup".to_string()]);
    // Once deleted, the name is free again.
    assert_eq!(admin(&fleet, "DELETE", &format!("/api/v1/nodes/{node}"), None).status, 200);
    let again = create(&fleet, &json!({ "name": "dup" }));
    assert_ne!(again["id"], node, "ids are not reused");
}

#[test]
fn nodes_happy_paths_follow_the_document() {
    let fleet = fleet();
    // The documented request body.
    let doc = json!({
        "name": "Server-DE",
        "url": "https://123.45.67.89:443/path/",
        "user": PANEL_USER,
        "password": SECRET,
    });
    let created = create(&fleet, &doc);
    let id = created["id"].as_i64().unwrap_or_else(|| panic!("id: {created}"));
    assert!(id > 0);
    assert_eq!(created["status"], "success", "as the original manager answers");
    assert_eq!(created["name"], "Server-DE");
    assert_eq!(created["ip"], "123.45.67.89");
    assert_eq!(created["port"], "443", "port is a string, as documented");
    assert_eq!(created["user"], "********", "panel user masked (like the password, see DESIGN.md §5)");
    assert_eq!(created["password"], "********", "password masked");
    assert_eq!(created["base_path"], "path");
    let token = created["join_token"].as_str().unwrap_or_else(|| panic!("join_token: {created}"));
    assert!(token.starts_with("flt1_"), "{token}");
    let cmd = created["enroll_command"].as_str().unwrap();
    assert!(cmd.starts_with("flotilla-agent enroll flt1_"), "{cmd}");
    assert_eq!(cmd, format!("flotilla-agent enroll {token}"));
    for secret in [SECRET, PANEL_USER] {
        assert!(!created.to_string().contains(secret), "POST answer leaks {secret}: {created}");
    }

    // Just a name.
    let bare = create(&fleet, &json!({ "name": "bare" }));
    let bare_id = bare["id"].as_i64().unwrap();
    assert_ne!(bare_id, id);
    assert_eq!(bare["name"], "bare");
    assert_eq!(bare["password"], "", "no password set, nothing to mask");
    assert_eq!(bare["user"], "", "no user set, nothing to mask");
    assert_eq!(bare["base_path"], "");
    assert!(bare["enroll_command"].as_str().unwrap().starts_with("flotilla-agent enroll flt1_"));
    assert_ne!(bare["join_token"], created["join_token"]);

    // Ports default from the scheme; hosts may be names or IPv6 literals.
    let http = create(&fleet, &json!({ "name": "http", "url": "http://panel.example.com" }));
    assert_eq!((http["ip"].as_str(), http["port"].as_str()), (Some("panel.example.com"), Some("80")));
    let v6 = create(&fleet, &json!({ "name": "v6", "url": "https://[2001:db8::1]:8443/" }));
    assert_eq!((v6["ip"].as_str(), v6["port"].as_str()), (Some("2001:db8::1"), Some("8443")));

    // The list shows the documented fields, never the password.
    let list = admin(&fleet, "GET", "/api/v1/nodes", None);
    assert_eq!(list.status, 200, "{}", list.raw);
    for secret in [SECRET, PANEL_USER] {
        assert!(!list.raw.contains(secret), "GET /api/v1/nodes leaks {secret}: {}", list.raw);
    }
    let nodes = list.body.as_array().unwrap_or_else(|| panic!("not an array: {}", list.raw));
    assert_eq!(nodes.len(), 4);
    let de = nodes.iter().find(|n| n["id"] == id).unwrap();
    for (k, v) in [("name", "Server-DE"), ("ip", "123.45.67.89"), ("port", "443"), ("user", "********")] {
        assert_eq!(de[k], v, "{k} in {de}");
    }
    assert_eq!(de["password"], "********");
    assert_eq!(de["base_path"], "path");
    assert!(de.get("join_token").is_none(), "the list does not repeat join tokens: {de}");
    for n in nodes {
        for k in ["id", "name", "ip", "port", "user", "password", "base_path"] {
            assert!(n.get(k).is_some(), "{k} missing in {n}");
        }
        assert!(n["port"].is_string(), "{n}");
    }

    // One node.
    let one = admin(&fleet, "GET", &format!("/api/v1/nodes/{id}"), None);
    assert_eq!(one.status, 200, "{}", one.raw);
    assert!(!one.raw.contains(SECRET) && !one.raw.contains(PANEL_USER));
    assert_eq!(one.body["name"], "Server-DE");
    assert_eq!(one.body["password"], "********");

    // A new join token replaces nothing else.
    let t = admin(&fleet, "POST", &format!("/api/v1/nodes/{id}/join-token"), None);
    assert_eq!(t.status, 200, "{}", t.raw);
    let new_token = t.body["join_token"].as_str().unwrap();
    assert!(new_token.starts_with("flt1_") && new_token != token);
    assert_eq!(t.body["enroll_command"], format!("flotilla-agent enroll {new_token}"));
    assert_eq!(t.body["id"], id);
    assert!(!t.raw.contains(SECRET) && !t.raw.contains(PANEL_USER));

    // Status and availability never leak it either.
    for path in ["/api/v1/servers/status", "/api/v1/servers/availability"] {
        let r = admin(&fleet, "GET", path, None);
        assert_eq!(r.status, 200);
        assert!(!r.raw.contains(SECRET) && !r.raw.contains(PANEL_USER), "{path} leaks the panel credentials");
    }

    // Delete.
    let d = admin(&fleet, "DELETE", &format!("/api/v1/nodes/{bare_id}"), None);
    assert_eq!(d.status, 200, "{}", d.raw);
    assert_eq!(d.body, json!({ "status": "success", "id": bare_id }));
    let names = node_names(&fleet);
    assert_eq!(names.len(), 3);
    assert!(!names.contains(&"bare".to_string()));
}

#[test]
fn servers_status_of_nodes_never_connected() {
    let fleet = fleet();
    // An empty fleet.
    let r = admin(&fleet, "GET", "/api/v1/servers/status", None);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["count"], 0);
    assert_eq!(r.body["servers"], json!([]));
    let r = admin(&fleet, "GET", "/api/v1/servers/availability", None);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["availability"], json!([]));

    let ids: Vec<i64> = ["never-1", "never-2", "never-3"]
        .iter()
        .map(|n| create(&fleet, &json!({ "name": n }))["id"].as_i64().unwrap())
        .collect();
    let r = admin(&fleet, "GET", "/api/v1/servers/status", None);
    assert_eq!(r.status, 200, "{}", r.raw);
    let servers = r.body["servers"].as_array().unwrap_or_else(|| panic!("servers: {}", r.raw));
    assert_eq!(r.body["count"].as_u64(), Some(servers.len() as u64), "count equals the servers' length");
    assert_eq!(servers.len(), 3);
    let now = now_unix();
    for s in servers {
        assert!(s["node"].as_str().is_some_and(|n| n.starts_with("never-")), "{s}");
        assert_eq!(s["available"], false, "{s}");
        assert!(s["system"].is_null(), "no metrics ever: {s}");
        assert_eq!(s["xray"]["state"], "not_installed", "{s}");
        assert_eq!(s["xray"]["running"], false, "{s}");
        assert_eq!(s["xray"]["version"], "", "version is always a string: {s}");
        assert_eq!(s["error"], "agent not enrolled yet", "unavailable rows say why: {s}");
        let ts = s["timestamp"].as_str().unwrap_or_else(|| panic!("timestamp: {s}"));
        assert!(parse_timestamp(ts) <= now + 5, "{s}");
    }
    for id in &ids {
        let one = admin(&fleet, "GET", &format!("/api/v1/servers/{id}/status"), None);
        assert_eq!(one.status, 200, "{}", one.raw);
        assert_eq!(one.body["available"], false);
        assert!(one.body["system"].is_null());
        assert_eq!(one.body["xray"]["state"], "not_installed");
        let listed = servers.iter().find(|s| s["node"] == one.body["node"]).unwrap();
        assert_eq!(listed["node"], one.body["node"]);
    }
    let r = admin(&fleet, "GET", "/api/v1/servers/availability", None);
    assert_eq!(r.status, 200, "{}", r.raw);
    let rows = r.body["availability"].as_array().unwrap_or_else(|| panic!("availability: {}", r.raw));
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["available"], false, "{row}");
        assert!(row["latency_ms"].is_null(), "no RTT without a link: {row}");
        assert_eq!(row["error"], "agent not enrolled yet", "{row}");
        assert!(row["node"].as_str().is_some_and(|n| n.starts_with("never-")), "{row}");
        parse_timestamp(row["timestamp"].as_str().unwrap_or_else(|| panic!("timestamp: {row}")));
    }
}

#[test]
fn openapi_describes_every_route() {
    let fleet = fleet();
    for prefix in ["", flotilla_tests::harness::BASE_PATH] {
        // Public, like the health check: no credentials, and wrong ones do not matter either.
        for auth in [None, Some(basic_header("admin", "wrong"))] {
            let r = fleet.api.request("GET", &format!("{prefix}/openapi.json"), None, auth.as_deref());
            assert_eq!(r.status, 200, "{prefix}/openapi.json: {}", &r.raw[..r.raw.len().min(300)]);
            assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"));
        }
        let doc = fleet.api.request("GET", &format!("{prefix}/openapi.json"), None, None).body;
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
        let scheme = &doc["components"]["securitySchemes"]["basic"];
        assert_eq!((&scheme["type"], &scheme["scheme"]), (&json!("http"), &json!("basic")), "{scheme}");
        for (method, path) in [
            ("get", "/api/v1/health"),
            ("get", "/api/v1/nodes"),
            ("post", "/api/v1/nodes/{node_id}/join-token"),
            ("get", "/api/v1/servers/{node_id}/logs"),
            ("get", "/api/v1/inbounds"),
            ("post", "/api/v1/clients/batch-add"),
            ("put", "/api/v1/clients/{client_id}"),
            ("get", "/api/v1/traffic/stats"),
            ("get", "/api/v1/sub/{email}"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op["responses"]["200"].is_object(), "{method} {path} is not described");
            let public = matches!(path, "/api/v1/health" | "/api/v1/sub/{email}");
            let security = if public { Value::Null } else { json!([{ "basic": [] }]) };
            assert_eq!(op["security"], security, "{method} {path}");
        }
        let batch_add =
            &doc["paths"]["/api/v1/clients/batch-add"]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(batch_add["example"]["clients"][0]["expiryTime"], 1735689600000u64, "{batch_add}");
        assert_eq!(
            doc["paths"]["/api/v1/nodes"]["post"]["responses"]["409"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        // Under the reverse-proxy prefix the document says where its routes are.
        if prefix.is_empty() {
            assert!(doc.get("servers").is_none(), "{}", doc["servers"]);
        } else {
            assert_eq!(doc["servers"], json!([{ "url": prefix }]));
        }
    }
}
