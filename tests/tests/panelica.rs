//! The external (Panelica-style) API's platform: signed requests checked as Panelica's official
//! clients sign them (the client in `flotilla_tests::panelica` follows `specs/hmac.md`, not the
//! controller's code), keys with scopes, expiry, IP allow-lists and rate tiers, and the
//! unauthenticated discovery endpoints.

use std::time::{Duration, Instant};

use flotilla_tests::harness::{wait_for, Fleet, BASE_PATH};
use flotilla_tests::panelica::{create_key, now, sign, External, Key, PREFIX};
use flotilla_tests::vps::add_user;
use serde_json::{json, Value};

/// Marks key `id` expired a minute ago, in the store itself (no API sets a past expiry).
fn expire_in_store(fleet: &Fleet, id: &str) {
    let db = rusqlite::Connection::open(fleet.controller_data_dir().join("controller.db")).expect("controller.db");
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed =
        db.execute("UPDATE api_keys SET expires_at = ?2 WHERE id = ?1", rusqlite::params![id, now() - 60]).unwrap();
    assert_eq!(changed, 1);
}

fn code(reply: &flotilla_tests::harness::Reply) -> &str {
    reply.body["code"].as_str().unwrap_or_default()
}

#[test]
fn signed_requests_keys_scopes_and_limits() {
    let fleet = Fleet::start();
    let root = create_key(&fleet, "root", "*:*", &[]);
    assert!(root.public.starts_with("pk_live_") && root.secret.starts_with("sk_live_"), "{root:?}");
    let ext = External::new(&fleet.api, root.clone());

    // Health and the spec need no signature; health where the clients look and where the
    // document says.
    for path in [format!("{PREFIX}/health"), format!("{PREFIX}/v1/health")] {
        let health = fleet.api.request("GET", &path, None, None);
        assert_eq!((health.status, &health.body["data"]["status"]), (200, &json!("healthy")), "{}", health.raw);
    }
    let spec = fleet.api.request("GET", &format!("{PREFIX}/v1/api-spec"), None, None);
    assert_eq!(spec.status, 200, "{}", spec.raw);
    let endpoints = spec.body["data"]["endpoints"].as_array().expect("endpoints");
    // Named as Panelica's own spec names them: the MCP server makes tool names of category and
    // path (`panelica_core_get_v1_me`, `panelica_api_keys_get_v1_api_keys_key_id`, …).
    let category = |method: &str, path: &str| {
        endpoints.iter().find(|e| e["method"] == method && e["path"] == path).map(|e| e["category"].clone())
    };
    assert_eq!(category("GET", "/v1/me"), Some(json!("Core")), "{}", spec.raw);
    assert_eq!(category("GET", "/v1/api-keys/{key_id}"), Some(json!("API Keys")));
    assert_eq!(category("GET", "/v1/files"), Some(json!("File Manager")));
    assert_eq!(category("POST", "/v1/server/services/{name}/restart"), Some(json!("Server")));
    assert_eq!(category("GET", "/v1/server/metrics"), Some(json!("Server")));
    assert_eq!(category("GET", "/v1/email-accounts"), Some(json!("Email")));
    assert_eq!(category("GET", "/v1/email/accounts"), None, "a second spelling would take the official tool name");
    let generated = spec.body["data"]["generated_at"].as_str().expect("generated_at");
    let generated = time::OffsetDateTime::parse(generated, &time::format_description::well_known::Rfc3339).unwrap();
    assert!((generated.unix_timestamp() - now()).abs() <= 5, "generated_at is now: {generated}");
    let unsigned = fleet.api.request("GET", &format!("{PREFIX}/v1/me"), None, None);
    assert_eq!((unsigned.status, code(&unsigned)), (401, "MISSING_API_KEY"), "{}", unsigned.raw);

    // The calling key.
    let me = ext.expect("GET", "/v1/me", None, 200);
    assert_eq!(me["scopes"], json!(["*:*"]));
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["user"]["role"], "ROOT");
    assert_eq!(me["key_prefix"], json!(&root.public[..16]));
    // Also under the controller's base path: the signature covers the /v1 path all the same.
    let ts = now().to_string();
    let sig = sign(&root.secret, "GET", "/v1/me", &ts, b"");
    let prefixed = fleet.api.request_with(
        "GET",
        &format!("{BASE_PATH}{PREFIX}/v1/me"),
        None,
        &[("X-API-Key", &root.public), ("X-Timestamp", &ts), ("X-Signature", &sig)],
    );
    assert_eq!(prefixed.status, 200, "{}", prefixed.raw);

    // Wrong secret; stale and future timestamps (±300 s allowed).
    let wrong = External::new(&fleet.api, Key { secret: "sk_live_not-the-secret".into(), ..root.clone() });
    let r = wrong.call("GET", "/v1/me", None);
    assert_eq!((r.status, code(&r)), (401, "INVALID_SIGNATURE"), "{}", r.raw);
    for skew in [-301, 301] {
        let r = ext.call_at("GET", "/v1/me", None, now() + skew);
        assert_eq!((r.status, code(&r)), (401, "TIMESTAMP_EXPIRED"), "{skew}: {}", r.raw);
    }
    assert_eq!(ext.call_at("GET", "/v1/me", None, now() - 290).status, 200);
    let unknown =
        External::new(&fleet.api, Key { public: "pk_live_00000000000000000000000000000000".into(), ..root.clone() });
    assert_eq!(code(&unknown.call("GET", "/v1/me", None)), "INVALID_API_KEY");

    // A key made through the API; its secret shown once.
    let body = json!({ "name": "made by api", "scopes": ["domains:read"], "rate_limit_tier": "starter",
                       "expires_in": 30, "environment": "test" })
    .to_string();
    let r = ext.call("POST", "/v1/api-keys", Some(&body));
    assert_eq!(r.status, 201, "{}", r.raw);
    let made = &r.body["data"];
    assert!(made["api_key"].as_str().unwrap().starts_with("pk_test_"), "{made}");
    assert!(made["api_secret"].as_str().unwrap().starts_with("sk_test_"), "{made}");
    let made_id = made["id"].as_str().unwrap().to_string();
    let listed = ext.expect("GET", "/v1/api-keys", None, 200);
    let entry = listed.as_array().unwrap().iter().find(|k| k["id"] == made_id.as_str()).expect("listed").clone();
    assert!(entry.get("api_secret").is_none() && !entry.to_string().contains(made["api_secret"].as_str().unwrap()));

    // Tampered body and tampered query: signed one thing, sent another.
    let ts = now().to_string();
    let signed_body = json!({ "name": "a", "scopes": ["*:*"] }).to_string();
    let sent_body = json!({ "name": "b", "scopes": ["*:*"] }).to_string();
    let sig = sign(&root.secret, "POST", "/v1/api-keys", &ts, signed_body.as_bytes());
    let r = ext.send("POST", "/v1/api-keys", Some(&sent_body), &ts, &sig);
    assert_eq!((r.status, code(&r)), (401, "INVALID_SIGNATURE"), "{}", r.raw);
    let sig = sign(&root.secret, "GET", "/v1/api-keys?page=1", &ts, b"");
    assert_eq!(ext.send("GET", "/v1/api-keys?page=1", None, &ts, &sig).status, 200, "the query is signed as sent");
    assert_eq!(code(&ext.send("GET", "/v1/api-keys?page=2", None, &ts, &sig)), "INVALID_SIGNATURE");

    // Paths with escapes: the decoded path (the WHMCS module) and the path as sent (the MCP
    // server) both verify.
    let ts = now().to_string();
    for signed_path in ["/v1/api-keys/no such key", "/v1/api-keys/no%20such%20key"] {
        let sig = sign(&root.secret, "GET", signed_path, &ts, b"");
        let r = ext.send("GET", "/v1/api-keys/no%20such%20key", None, &ts, &sig);
        assert_eq!((r.status, code(&r)), (404, "NOT_FOUND"), "{signed_path}: {}", r.raw);
    }

    // Replays: a state-changing request once only; identical GETs (parallel page loads) pass.
    let ts = now().to_string();
    let patch = json!({ "name": "renamed" }).to_string();
    let sig = sign(&root.secret, "PATCH", &format!("/v1/api-keys/{made_id}"), &ts, patch.as_bytes());
    let first = ext.send("PATCH", &format!("/v1/api-keys/{made_id}"), Some(&patch), &ts, &sig);
    assert_eq!((first.status, &first.body["data"]["name"]), (200, &json!("renamed")), "{}", first.raw);
    let again = ext.send("PATCH", &format!("/v1/api-keys/{made_id}"), Some(&patch), &ts, &sig);
    assert_eq!((again.status, code(&again)), (409, "REPLAYED_REQUEST"), "{}", again.raw);
    // A request that failed may be sent again as it was (the MCP server retries a failed call
    // within the same second): only carried-out requests count as used.
    let missing = json!({ "name": "x" }).to_string();
    let sig = sign(&root.secret, "PATCH", "/v1/api-keys/nope", &ts, missing.as_bytes());
    for _ in 0..2 {
        let r = ext.send("PATCH", "/v1/api-keys/nope", Some(&missing), &ts, &sig);
        assert_eq!((r.status, code(&r)), (404, "NOT_FOUND"), "{}", r.raw);
    }
    let sig = sign(&root.secret, "GET", "/v1/me", &ts, b"");
    for _ in 0..3 {
        assert_eq!(ext.send("GET", "/v1/me", None, &ts, &sig).status, 200);
    }

    // Scopes: a key without `*:*` cannot manage keys; the answer names the scope.
    let made_key = Key {
        id: made_id.clone(),
        public: made["api_key"].as_str().unwrap().to_string(),
        secret: made["api_secret"].as_str().unwrap().to_string(),
    };
    let scoped = External::new(&fleet.api, made_key.clone());
    assert_eq!(scoped.expect("GET", "/v1/me", None, 200)["scopes"], json!(["domains:read"]));
    let r = scoped.call("GET", "/v1/api-keys", None);
    assert_eq!((r.status, code(&r)), (403, "INSUFFICIENT_SCOPE"), "{}", r.raw);
    assert_eq!(r.body["required_scope"], "*:*", "{}", r.raw);
    // The MCP server reads the scopes from an `error` object, as the real backend sends them.
    assert_eq!(r.body["error"]["required_scope"], "*:*", "{}", r.raw);
    assert_eq!(r.body["error"]["available_scopes"], json!(["domains:read"]), "{}", r.raw);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("*:*")), "{}", r.raw);

    // Hosting resources come later: 501 in the envelope, not a 404 that reads like a typo.
    let r = scoped.call("GET", "/v1/domains", None);
    assert_eq!((r.status, code(&r)), (501, "NOT_IMPLEMENTED"), "{}", r.raw);
    for path in ["/v1/search?q=demo", "/v1/bandwidth/domains/1"] {
        let r = ext.call("GET", path, None);
        assert_eq!((r.status, code(&r)), (501, "NOT_IMPLEMENTED"), "{path}: {}", r.raw);
    }
    let r = ext.call("GET", "/v1/email-accounts", None);
    assert_eq!(r.status, 501, "{}", r.raw);
    let r = ext.call("GET", "/v1/no-such-thing", None);
    assert_eq!((r.status, code(&r)), (404, "NOT_FOUND"), "{}", r.raw);

    // DELETE with a body: the body is not signed; the answer is JSON.
    let victim = create_key(&fleet, "victim", "*:*", &[]);
    let ts = now().to_string();
    let sig = sign(&root.secret, "DELETE", &format!("/v1/api-keys/{}", victim.id), &ts, b"");
    let r = ext.send("DELETE", &format!("/v1/api-keys/{}", victim.id), Some(r#"{"reason":"test"}"#), &ts, &sig);
    assert_eq!((r.status, &r.body["status"]), (200, &json!("success")), "{}", r.raw);
    assert_eq!(code(&External::new(&fleet.api, victim).call("GET", "/v1/me", None)), "INVALID_API_KEY");

    // Regenerate: the old secret stops, the new one works.
    let r = ext.call("POST", &format!("/v1/api-keys/{made_id}/regenerate"), None);
    assert_eq!(r.status, 200, "{}", r.raw);
    let fresh = Key { secret: r.body["data"]["api_secret"].as_str().unwrap().to_string(), ..made_key.clone() };
    assert_eq!(code(&scoped.call("GET", "/v1/me", None)), "INVALID_SIGNATURE");
    assert_eq!(External::new(&fleet.api, fresh.clone()).call("GET", "/v1/me", None).status, 200);

    // Disabled and expired keys, each with its own code.
    ext.expect("PATCH", &format!("/v1/api-keys/{made_id}"), Some(r#"{"is_active": false}"#), 200);
    let r = External::new(&fleet.api, fresh.clone()).call("GET", "/v1/me", None);
    assert_eq!((r.status, code(&r)), (401, "API_KEY_DISABLED"), "{}", r.raw);
    ext.expect("PATCH", &format!("/v1/api-keys/{made_id}"), Some(r#"{"is_active": true}"#), 200);
    expire_in_store(&fleet, &made_id);
    let r = External::new(&fleet.api, fresh).call("GET", "/v1/me", None);
    assert_eq!((r.status, code(&r)), (401, "API_KEY_EXPIRED"), "{}", r.raw);

    // IP allow-lists: another address is refused, a block holding the caller passes.
    let elsewhere = create_key(&fleet, "elsewhere", "*:*", &["--ip", "203.0.113.9", "--ip", "2001:db8::/32"]);
    let r = External::new(&fleet.api, elsewhere).call("GET", "/v1/me", None);
    assert_eq!((r.status, code(&r)), (403, "IP_NOT_ALLOWED"), "{}", r.raw);
    let anywhere = create_key(&fleet, "anywhere", "*:*", &["--ip", "0.0.0.0/0", "--ip", "::/0"]);
    assert_eq!(External::new(&fleet.api, anywhere).call("GET", "/v1/me", None).status, 200);

    // A user's key sees that user's keys only.
    add_user(&fleet, "bob", "bob-password-1", None);
    let bobs = External::new(&fleet.api, create_key(&fleet, "bob's", "*:*", &["--user", "bob"]));
    let seen = bobs.expect("GET", "/v1/api-keys", None, 200);
    assert!(seen.as_array().unwrap().iter().all(|k| k["username"] == "bob"), "{seen}");
    assert_eq!(bobs.expect("GET", "/v1/me", None, 200)["user"]["role"], "USER");
    assert_eq!(bobs.call("GET", &format!("/v1/api-keys/{made_id}"), None).status, 404);

    // Bad input: clear 400s in the envelope.
    for (body, needle) in [
        (r#"{"name": "x", "scopes": ["domains:fly"]}"#, "not a scope"),
        (r#"{"name": "x", "scopes": ["*:*"], "rate_limit_tier": "gold"}"#, "rate_limit_tier"),
        (r#"{"name": "x", "scopes": ["*:*"], "ip_whitelist": ["nope"]}"#, "ip_whitelist"),
        (r#"{"scopes": ["*:*"]}"#, "name"),
    ] {
        let r = ext.call("POST", "/v1/api-keys", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.raw);
        assert!(r.body["error"].as_str().unwrap_or_default().contains(needle), "{body}: {}", r.raw);
    }

    // Postman: a v2.1 collection with a signing pre-request script.
    let postman = ext.expect("GET", "/v1/postman-collection", None, 200);
    assert_eq!(postman["info"]["schema"], "https://schema.getpostman.com/json/collection/v2.1.0/collection.json");
    let script = postman["event"][0]["script"]["exec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(script.contains("CryptoJS.HmacSHA256") && script.contains("X-Signature"), "{script}");
}

#[test]
fn a_rate_tier_refuses_past_its_burst_and_recovers() {
    let fleet = Fleet::start();
    let key = create_key(&fleet, "starter", "*:*", &["--tier", "starter"]);
    let ext = External::new(&fleet.api, key);
    let limit = ext.expect("GET", "/v1/rate-limit", None, 200);
    assert_eq!((limit["tier"].as_str(), limit["requests_per_minute"].as_u64()), (Some("starter"), Some(60)), "{limit}");
    // Starter: its 60 a minute at once, then one request a second. The header counts down to
    // what the bucket still takes.
    let mut refused = None;
    let mut last_remaining = None;
    for i in 0..90 {
        let r = ext.call("GET", "/v1/me", None);
        match r.status {
            200 => {
                assert_eq!(r.header("x-ratelimit-limit"), Some("60"), "{:?}", r.headers);
                assert!(r.header("x-ratelimit-reset").is_some());
                last_remaining = r.header("x-ratelimit-remaining").map(str::to_string);
            }
            429 => {
                refused = Some((i, r));
                break;
            }
            other => panic!("{other}: {}", r.raw),
        }
    }
    let (after, r) = refused.expect("the starter tier refuses within 90 quick requests");
    assert!(after >= 59, "refused after {after} requests");
    assert_eq!(last_remaining.as_deref(), Some("0"), "the last admitted request said nothing was left");
    assert_eq!(code(&r), "RATE_LIMIT_EXCEEDED");
    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert!(r.body["retry_after"].as_u64().is_some(), "{}", r.raw);
    // The WHMCS module reads the wait from an `error` object.
    assert_eq!(r.body["error"]["retry_after"].as_u64(), Some(wait), "{}", r.raw);
    assert_eq!((r.body["error"]["limit"].as_u64(), r.body["error"]["window"].as_str()), (Some(60), Some("minute")));
    let start = Instant::now();
    wait_for("the bucket to refill", Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(wait * 1000));
        (ext.call("GET", "/v1/me", None).status == 200).then_some(())
    });
    eprintln!("recovered {:?} after the 429", start.elapsed());
    // One request a second refills: asking for the usage waits its turn too.
    std::thread::sleep(Duration::from_millis(1100));
    let usage = ext.expect("GET", "/v1/rate-limit", None, 200);
    // (The minute window may have turned during the test; the hour's count cannot have lost them
    // unless the hour turned too.)
    let counted = usage["current_minute_usage"].as_u64().unwrap().max(usage["current_hour_usage"].as_u64().unwrap());
    assert!(counted >= 60, "{usage}");
}

#[test]
fn the_family_also_listens_on_a_port_of_its_own() {
    let mut fleet = Fleet::start();
    let host = fleet.api.base.trim_start_matches("http://").rsplit_once(':').map(|(h, _)| h.to_string()).unwrap();
    let port = flotilla_tests::harness::free_port();
    std::fs::write(fleet.controller_config(), format!("[external_api]\nlisten = \"{host}:{port}\"\n")).unwrap();
    fleet.stop_controller();
    fleet.start_controller();
    let key = create_key(&fleet, "own port", "*:*", &[]);
    let mut direct = External::new(&fleet.api, key);
    direct.api.base = format!("http://{host}:{port}");
    // At the root (`/v1/…`, the original's backend) and under /api/external.
    let ts = now().to_string();
    let sig = sign(&direct.key.secret, "GET", "/v1/me", &ts, b"");
    let headers =
        [("X-API-Key", direct.key.public.as_str()), ("X-Timestamp", ts.as_str()), ("X-Signature", sig.as_str())];
    let r = direct.api.request_with("GET", "/v1/me", None, &headers);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(direct.expect("GET", "/v1/me", None, 200)["name"], "own port");
    let health: Value = direct.api.request("GET", "/health", None, None).body;
    assert_eq!(health["data"]["status"], "healthy", "{health}");
    assert_eq!(direct.api.request("GET", "/nothing", None, None).body["code"], "NOT_FOUND");
}
