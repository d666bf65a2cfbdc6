//! The local API against a fake core that applies user changes with the agent's own rules
//! (`drivers::core::users::apply`), driven through the router, plus one real socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use flotilla_protocol::proxy::{
    ApplyReport, ClientSpec, CoreState, CoreStatus, InboundSpec, LogLine, LogQuery, OnlineSource, ProxyState,
};
use flotilla_protocol::users::{DnsStat, DnsStatsQuery, SourceStat, StatsReset, UserChange, UserStat, UserStats};
use flotilla_protocol::v2ray_stat::{StatsColumns, UserJson};
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::drivers::core::users::{apply, Lifecycles};
use crate::drivers::core::UserChangeError;
use crate::state::{StateError, StoredBatch};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// 2025-07-15 12:00 UTC.
const NOON: i64 = 1_752_580_800_000;
const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";

#[derive(Debug, Default)]
struct Inner {
    clients: Vec<ClientSpec>,
    lifecycle: Lifecycles,
    /// Traffic (up, down) by email; zeroed by a reset.
    traffic: HashMap<String, (u64, u64)>,
    calls: Vec<Vec<UserChange>>,
    resets: Vec<StatsReset>,
    dns_queries: Vec<DnsStatsQuery>,
}

/// A core with inbounds `vless-in` and `trojan-in`.
#[derive(Debug)]
struct FakeCore {
    inner: Mutex<Inner>,
    per_user_stats: bool,
}

impl FakeCore {
    fn new() -> Arc<FakeCore> {
        Arc::new(FakeCore { inner: Mutex::new(Inner::default()), per_user_stats: true })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn state(clients: Vec<ClientSpec>) -> ProxyState {
        let inbound = |tag: &str, protocol: &str| InboundSpec {
            tag: tag.into(),
            listen: String::new(),
            port: 443,
            protocol: protocol.into(),
            settings: "{}".into(),
            stream_settings: "{}".into(),
            sniffing: "{}".into(),
            enable: true,
        };
        ProxyState {
            revision: 1,
            inbounds: vec![inbound("vless-in", "vless"), inbound("trojan-in", "trojan")],
            clients,
        }
    }

    /// Adds `email` directly (not through the API), with traffic.
    fn seed(&self, email: &str, tag: &str, expiry_ms: i64, up: u64, down: u64) {
        let mut inner = self.inner();
        inner.clients.push(ClientSpec {
            inbound_tag: tag.into(),
            email: email.into(),
            secret: UUID.into(),
            flow: String::new(),
            enable: true,
            expiry_ms,
            total_bytes: 0,
            reset_generation: 0,
        });
        inner.traffic.insert(email.into(), (up, down));
    }

    fn calls(&self) -> Vec<Vec<UserChange>> {
        self.inner().calls.clone()
    }

    fn client(&self, email: &str) -> Option<ClientSpec> {
        self.inner().clients.iter().find(|c| c.email == email).cloned()
    }
}

fn status() -> CoreStatus {
    CoreStatus {
        flavor: None,
        state: CoreState::Running,
        version: String::new(),
        uptime_secs: 0,
        per_user_stats: true,
        applied_revision: 1,
        online: vec![],
        online_source: OnlineSource::CoreApi,
        cut_off: vec![],
        last_error: None,
    }
}

#[async_trait::async_trait]
impl ProxyCore for FakeCore {
    fn applied_revision(&self) -> u64 {
        1
    }
    fn status(&self) -> watch::Receiver<CoreStatus> {
        watch::channel(status()).1
    }
    fn journal(&self) -> watch::Receiver<u64> {
        watch::channel(0).1
    }
    async fn current_status(&self) -> CoreStatus {
        status()
    }
    async fn apply(&self, state: ProxyState) -> ApplyReport {
        ApplyReport { revision: state.revision, ..ApplyReport::default() }
    }
    async fn restart(&self) -> CoreStatus {
        status()
    }
    fn logs(&self, _query: &LogQuery) -> Vec<LogLine> {
        vec![]
    }
    fn journal_id(&self) -> Result<u64, StateError> {
        Ok(1)
    }
    fn journal_after(&self, _seq: u64, _limit: usize) -> Result<Vec<StoredBatch>, StateError> {
        Ok(vec![])
    }
    fn journal_committed(&self, _seq: u64) -> Result<(), StateError> {
        Ok(())
    }

    async fn user_stats(&self) -> UserStats {
        let inner = self.inner();
        let users = inner
            .clients
            .iter()
            .map(|c| {
                let life = inner.lifecycle.get(&c.email.to_lowercase());
                let (up, down) = inner.traffic.get(&c.email).copied().unwrap_or_default();
                UserStat {
                    email: c.email.clone(),
                    secret: c.secret.clone(),
                    inbound_tag: c.inbound_tag.clone(),
                    last_seen_ms: None,
                    rate_bps: 0,
                    uplink: up,
                    downlink: down,
                    sess_uplink: 0,
                    sess_downlink: 0,
                    enabled: c.enable,
                    sub_end_ms: c.expiry_ms,
                    renew_days: life.map_or(0, |l| l.renew_days),
                    limit_ip: life.map_or(0, |l| l.limit_ip),
                    ips: vec![],
                    created_ms: life.map_or(0, |l| l.created_ms),
                }
            })
            .collect();
        let sources = vec![SourceStat {
            direction: "inbound".into(),
            tag: "vless-in".into(),
            rate_bps: 0,
            uplink: 1,
            downlink: 2,
            sess_uplink: 0,
            sess_downlink: 0,
        }];
        UserStats { sources, users, per_user_stats: self.per_user_stats, unavailable: vec![] }
    }

    async fn change_users(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>> {
        let mut inner = self.inner();
        inner.calls.push(changes.clone());
        let mut state = FakeCore::state(std::mem::take(&mut inner.clients));
        let mut lifecycle = std::mem::take(&mut inner.lifecycle);
        let results = changes
            .iter()
            .map(|change| {
                let result = apply(&mut state, &mut lifecycle, change);
                if result.is_ok() && matches!(change, UserChange::ResetTraffic { .. }) {
                    inner.traffic.clear();
                }
                result
            })
            .collect();
        inner.clients = state.clients;
        inner.lifecycle = lifecycle;
        results
    }

    async fn dns_stats(&self, query: &DnsStatsQuery) -> Vec<DnsStat> {
        self.inner().dns_queries.push(query.clone());
        let row = |domain: &str, count| DnsStat { user: query.user.clone(), domain: domain.into(), count };
        vec![row("b.example", 3), row("a.example", 7), row("c.example", 1)]
    }

    async fn reset_stats(&self, what: StatsReset) {
        self.inner().resets.push(what);
    }
}

fn app(core: &Arc<FakeCore>) -> Router {
    router(&LocalApiSettings::default(), Some(core.clone() as Arc<dyn ProxyCore>))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn call(app: &Router, method: Method, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let response = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Answer { status, headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
}

async fn get(app: &Router, uri: &str) -> Answer {
    call(app, Method::GET, uri, None, Body::empty()).await
}

/// As `curl -X METHOD URL -d BODY` sends it.
async fn form(app: &Router, method: Method, uri: &str, body: &str) -> Answer {
    call(app, method, uri, Some("application/x-www-form-urlencoded"), body.to_string()).await
}

const BOUNDARY: &str = "------------------------d74496d66958873e";

/// As `curl -F "users_file=@users.txt"` sends it.
async fn upload(app: &Router, field: &str, file: &str) -> Answer {
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"users.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n{file}\r\n--{BOUNDARY}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    call(app, Method::POST, "/api/v1/bulk_add_users", Some(&ct), body).await
}

fn assert_text(a: &Answer, status: StatusCode, contains: &str) {
    assert_eq!(a.status, status, "body: {}", a.body);
    assert!(a.body.contains(contains), "{:?} does not contain {contains:?}", a.body);
    assert!(a.body.ends_with('\n'));
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
}

/// Every endpoint of the document with its method.
const ENDPOINTS: [(&str, &str); 14] = [
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/dns_stats?user=newuser&count=10"),
    ("POST", "/api/v1/delete_dns_stats"),
    ("POST", "/api/v1/reset_traffic_stats"),
    ("POST", "/api/v1/reset_clients_stats"),
    ("POST", "/api/v1/reset_traffic"),
    ("POST", "/api/v1/add_user"),
    ("POST", "/api/v1/bulk_add_users"),
    ("DELETE", "/api/v1/delete_user?user=newuser&inboundTag=vless-in"),
    ("PATCH", "/api/v1/set_enabled"),
    ("PATCH", "/api/v1/update_lim_ip"),
    ("PATCH", "/api/v1/adjust_date"),
    ("PATCH", "/api/v1/update_renew"),
];

#[tokio::test]
async fn banner_unknown_paths_and_wrong_methods() {
    let core = FakeCore::new();
    let app = app(&core);
    let a = get(&app, "/").await;
    assert_text(&a, StatusCode::OK, "flotilla-agent / ");
    assert_eq!(a.body.lines().count(), 1);
    assert!(a.headers[header::SERVER].to_str().unwrap().starts_with("flotilla-agent/"));
    assert_text(&get(&app, "/api/v1/nope").await, StatusCode::NOT_FOUND, "not found: /api/v1/nope");
    for (method, path) in ENDPOINTS {
        let wrong = if method == "PUT" { Method::GET } else { Method::PUT };
        let a = call(&app, wrong, path, None, Body::empty()).await;
        assert_text(&a, StatusCode::METHOD_NOT_ALLOWED, &format!("invalid method: use {method}"));
        let allow = a.headers[header::ALLOW].to_str().unwrap();
        assert!(allow.starts_with(method), "{path}: Allow {allow}");
    }
    assert_eq!(get(&app, "/api/v1/add_user").await.headers[header::ALLOW], "POST");
    assert_eq!(
        call(&app, Method::POST, "/api/v1/users", None, Body::empty()).await.headers[header::ALLOW],
        "GET, HEAD"
    );
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn without_a_core_every_endpoint_answers_503() {
    let app = router(&LocalApiSettings::default(), None);
    for (method, path) in ENDPOINTS {
        let a = call(&app, method.parse().unwrap(), path, None, Body::empty()).await;
        assert_text(&a, StatusCode::SERVICE_UNAVAILABLE, "no proxy core on this node");
    }
    assert_eq!(get(&app, "/").await.status, StatusCode::OK, "the banner still answers");
}

#[tokio::test]
async fn users_json_has_the_originals_shape() {
    let core = FakeCore::new();
    let app = app(&core);
    let a = get(&app, "/api/v1/users").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "[]\n"), "no users: an empty array");
    core.seed("alice", "vless-in", NOON, 5, 6);
    let a = get(&app, "/api/v1/users").await;
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json; charset=utf-8");
    let users: Vec<UserJson> = serde_json::from_str(&a.body).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].user.as_str(), users[0].uuid.as_str()), ("alice", UUID));
    assert_eq!(
        (users[0].sub_end.as_str(), users[0].enabled.as_str(), users[0].rate.as_str()),
        ("2025-07-15-12", "true", "0")
    );
    assert_eq!((users[0].uplink, users[0].downlink), (5, 6));
    let raw: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let keys: Vec<&str> = raw[0].as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["user", "uuid", "rate", "enabled", "created", "sub_end", "renew", "lim_ip", "ips", "uplink", "downlink"]
    {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}

#[tokio::test]
async fn stats_tables_and_sort_parameters() {
    let core = FakeCore::new();
    core.seed("bob", "vless-in", 0, 10, 0);
    core.seed("alice", "vless-in", 0, 2048, 0);
    let app = app(&core);
    let a = get(&app, "/api/v1/stats").await;
    assert_text(&a, StatusCode::OK, "➤  Server Statistics:\nSource    Rate   Uplink  Downlink  \n");
    let alice = a.body.find("alice").unwrap();
    assert!(alice < a.body.find("bob").unwrap(), "user ASC by default:\n{}", a.body);
    let a = get(&app, "/api/v1/stats?sort_by=uplink&sort_order=DESC").await;
    assert!(a.body.find("alice").unwrap() < a.body.find("bob").unwrap());
    let a = get(&app, "/api/v1/stats?sort_by=user&sort_order=desc").await;
    assert!(a.body.find("bob").unwrap() < a.body.find("alice").unwrap(), "sort_order DESC, any case");
    let a = get(&app, "/api/v1/stats?sort_order=DESC").await;
    assert!(a.body.find("bob").unwrap() < a.body.find("alice").unwrap(), "sort_by keeps the configured column");
    let a = get(&app, "/api/v1/stats?sort_by=cpu").await;
    assert_text(&a, StatusCode::BAD_REQUEST, "invalid sort_by 'cpu': must be one of user, uuid, last_seen");
    let a = get(&app, "/api/v1/stats?sort_order=UP").await;
    assert_text(&a, StatusCode::BAD_REQUEST, "invalid sort_order 'UP': must be ASC or DESC");

    // Configured columns; an empty server list hides the section.
    let settings = LocalApiSettings {
        stats_columns: stats_columns_from_yaml(
            "stats_columns:\n  server:\n    columns: []\n  client:\n    sort: uplink DESC\n    columns: [user, uuid]\n",
        )
        .unwrap()
        .unwrap(),
        ..LocalApiSettings::default()
    };
    let app = router(&settings, Some(core.clone() as Arc<dyn ProxyCore>));
    let a = get(&app, "/api/v1/stats").await;
    assert!(a.body.starts_with("➤  Client Statistics:\nUser   ID  "), "{}", a.body);
    assert!(a.body.find("alice").unwrap() < a.body.find("bob").unwrap(), "configured uplink DESC");
}

#[tokio::test]
async fn dns_stats_parameters() {
    let core = FakeCore::new();
    let app = app(&core);
    let a = get(&app, "/api/v1/dns_stats?user=newuser&count=10").await;
    assert_text(&a, StatusCode::OK, " 📊 DNS Query Statistics:\nUser         Count  Domain\n");
    let rows: Vec<&str> = a.body.lines().skip(3).filter(|l| !l.is_empty()).collect();
    assert_eq!(
        rows,
        ["newuser      7      a.example", "newuser      3      b.example", "newuser      1      c.example"]
    );
    let a = get(&app, "/api/v1/dns_stats?user=newuser&count=2").await;
    assert_eq!(a.body.lines().filter(|l| l.starts_with("newuser")).count(), 2, "at most count rows");
    get(&app, "/api/v1/dns_stats?user=newuser").await;
    let counts: Vec<u32> = core.inner().dns_queries.iter().map(|q| q.count).collect();
    assert_eq!(counts, [10, 2, 20], "count defaults to 20");
    assert_text(&get(&app, "/api/v1/dns_stats").await, StatusCode::BAD_REQUEST, "user is required");
    assert_text(&get(&app, "/api/v1/dns_stats?count=5").await, StatusCode::BAD_REQUEST, "user is required");
    for bad in ["0", "-1", "x", "1.5", "99999999999"] {
        let a = get(&app, &format!("/api/v1/dns_stats?user=newuser&count={bad}")).await;
        assert_text(&a, StatusCode::BAD_REQUEST, "count must be a positive whole number");
    }
    let a = get(&app, "/api/v1/dns_stats?user=a%20b").await;
    assert_text(&a, StatusCode::BAD_REQUEST, "user: user name contains whitespace");
}

#[tokio::test]
async fn resets_reach_the_core() {
    let core = FakeCore::new();
    core.seed("alice", "vless-in", 0, 100, 200);
    let app = app(&core);
    let none = Body::empty;
    assert_text(&call(&app, Method::POST, "/api/v1/delete_dns_stats", None, none()).await, StatusCode::OK, "DNS");
    assert_text(&call(&app, Method::POST, "/api/v1/reset_traffic_stats", None, none()).await, StatusCode::OK, "reset");
    assert_text(&call(&app, Method::POST, "/api/v1/reset_traffic", None, none()).await, StatusCode::OK, "reset");
    assert_eq!(core.inner().resets, [StatsReset::Dns, StatsReset::Sources, StatsReset::Sessions]);
    let a = call(&app, Method::POST, "/api/v1/reset_clients_stats", None, none()).await;
    assert_text(&a, StatusCode::OK, "all clients reset");
    assert_eq!(core.calls(), [vec![UserChange::ResetTraffic { email: None }]]);
    assert_eq!(core.client("alice").unwrap().reset_generation, 1);
}

#[tokio::test]
async fn add_user_as_the_document_shows() {
    let core = FakeCore::new();
    let app = app(&core);
    let body = "user=newuser&credential=123e4567-e89b-12d3-a456-426614174000&inboundTag=vless-in";
    let a = form(&app, Method::POST, "/api/v1/add_user", body).await;
    assert_text(&a, StatusCode::OK, "User 'newuser' to inbound 'vless-in' added");
    assert!(!a.body.contains("generated"));
    let calls = core.calls();
    let UserChange::Add { client, lifecycle } = &calls[0][0] else { panic!("{calls:?}") };
    assert_eq!(
        (client.email.as_str(), client.secret.as_str(), client.inbound_tag.as_str()),
        ("newuser", UUID, "vless-in")
    );
    assert!(client.enable && client.expiry_ms == 0 && client.flow.is_empty());
    assert_eq!((lifecycle.limit_ip, lifecycle.renew_days), (0, 0));
    assert!(lifecycle.created_ms > NOON, "created now");

    // No credential: a UUID v4 is generated and told; no inboundTag: the default.
    let a = form(&app, Method::POST, "/api/v1/add_user", "user=second").await;
    assert_text(&a, StatusCode::OK, "(generated)");
    let secret = core.client("second").unwrap().secret;
    assert!(a.body.contains(&secret));
    assert_eq!(uuid::Uuid::parse_str(&secret).unwrap().get_version_num(), 4);
    assert_eq!(core.client("second").unwrap().inbound_tag, "vless-in");
    // Parameters in the query string work too; a trojan password is any non-blank text.
    let a = call(
        &app,
        Method::POST,
        "/api/v1/add_user?user=t1&credential=pa%23ss&inboundTag=trojan-in",
        None,
        Body::empty(),
    )
    .await;
    assert_text(&a, StatusCode::OK, "added");
    assert_eq!(core.client("t1").unwrap().secret, "pa#ss");

    let cases = [
        ("credential=x", StatusCode::BAD_REQUEST, "user is required"),
        ("user=&credential=x", StatusCode::BAD_REQUEST, "user is required"),
        ("user=a,b", StatusCode::BAD_REQUEST, "user: user name contains ','"),
        ("user=NewUser", StatusCode::BAD_REQUEST, "user 'NewUser' already exists"),
        ("user=x&inboundTag=vmess-in", StatusCode::BAD_REQUEST, "inbound 'vmess-in' not found"),
        ("user=x&credential=123e4567-e89b-12d3-a456-42661417400g", StatusCode::BAD_REQUEST, "looks like a UUID"),
        ("user=x&credential=a+b", StatusCode::BAD_REQUEST, "credential: credential contains whitespace"),
        ("user=x&inboundTag=a+b", StatusCode::BAD_REQUEST, "inboundTag contains whitespace"),
    ];
    for (body, status, text) in cases {
        assert_text(&form(&app, Method::POST, "/api/v1/add_user", body).await, status, text);
    }
    let json = call(&app, Method::POST, "/api/v1/add_user", Some("application/json"), r#"{"user":"j"}"#).await;
    assert_text(&json, StatusCode::BAD_REQUEST, "must be form-encoded");
    assert!(core.client("x").is_none() && core.client("j").is_none());
}

const DOC_USERS_TXT: &str = "\
user1,550e8400-e29b-41d4-a716-446655440000,vless-in  # Полный формат
user2,6ba7b810-9dad-11d1-80b4-00c04fd430c8           # Без inboundTag
user3                                                # Только имя, UUID будет сгенерирован
user4,,vless-in                                      # Имя и inboundTag, UUID будет сгенерирован
";

#[tokio::test]
async fn bulk_add_the_documents_file_in_one_change() {
    let core = FakeCore::new();
    let app = app(&core);
    let a = upload(&app, "users_file", DOC_USERS_TXT).await;
    assert_text(&a, StatusCode::OK, "4 added, 0 rejected\n");
    let calls = core.calls();
    assert_eq!(calls.len(), 1, "one core call for the whole file");
    assert_eq!(calls[0].len(), 4);
    let lines: Vec<&str> = a.body.lines().collect();
    assert_eq!(lines[0], "line 1: added 'user1' to inbound 'vless-in'");
    assert_eq!(lines[1], "line 2: added 'user2' to inbound 'vless-in'");
    assert!(lines[2].starts_with("line 3: added 'user3' to inbound 'vless-in', credential "), "{}", lines[2]);
    assert!(lines[3].starts_with("line 4: added 'user4' to inbound 'vless-in', credential "), "{}", lines[3]);
    assert_eq!(core.client("user1").unwrap().secret, "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(core.client("user2").unwrap().secret, "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
    for generated in ["user3", "user4"] {
        let secret = core.client(generated).unwrap().secret;
        assert!(uuid::Uuid::parse_str(&secret).is_ok());
        assert!(a.body.contains(&secret), "generated credentials are reported");
    }

    // Lines the parser or the core refuse are reported with their number and why.
    let file = "user1\r\nuser5,,trojan-in\r\nbad name\r\nuser6,,nowhere\r\nuser5\r\n";
    let a = upload(&app, "users_file", file).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body.lines().map(|l| l.split(", credential").next().unwrap()).collect::<Vec<_>>(),
        [
            "line 1: rejected 'user1': user 'user1' already exists",
            "line 2: added 'user5' to inbound 'trojan-in'",
            "line 3: rejected 'bad name': whitespace inside a field (start comments with '#')",
            "line 4: rejected 'user6': inbound 'nowhere' not found on this node",
            "line 5: rejected 'user5': user 'user5' already appears on line 2",
            "1 added, 4 rejected",
        ]
    );
    assert_eq!(core.calls().len(), 2);
    assert_eq!(core.calls()[1].len(), 3, "parse errors never reach the core");

    let a = upload(&app, "users_file", "user1\n").await;
    assert_text(&a, StatusCode::BAD_REQUEST, "0 added, 1 rejected");
    assert_text(&upload(&app, "users_file", "# nothing\n\n").await, StatusCode::BAD_REQUEST, "has no users");
    assert_text(&upload(&app, "other", "user9\n").await, StatusCode::BAD_REQUEST, "users_file is required");
    let a = form(&app, Method::POST, "/api/v1/bulk_add_users", "users_file=user9").await;
    assert_text(&a, StatusCode::BAD_REQUEST, "curl -F");
    assert!(core.client("user9").is_none());
}

#[tokio::test]
async fn delete_user_by_query_or_form() {
    let core = FakeCore::new();
    core.seed("newuser", "vless-in", 0, 0, 0);
    core.seed("other", "trojan-in", 0, 0, 0);
    let app = app(&core);
    let a =
        call(&app, Method::DELETE, "/api/v1/delete_user?user=newuser&inboundTag=vless-in", None, Body::empty()).await;
    assert_text(&a, StatusCode::OK, "User 'newuser' deleted from inbound 'vless-in'");
    assert!(core.client("newuser").is_none());
    let a = call(&app, Method::DELETE, "/api/v1/delete_user?user=newuser", None, Body::empty()).await;
    assert_text(&a, StatusCode::NOT_FOUND, "user 'newuser' not found");
    let a = form(&app, Method::DELETE, "/api/v1/delete_user", "user=other&inboundTag=vless-in").await;
    assert_text(&a, StatusCode::NOT_FOUND, "not found in inbound 'vless-in' (the user is in inbound 'trojan-in')");
    assert!(core.client("other").is_some());
    assert_text(
        &form(&app, Method::DELETE, "/api/v1/delete_user", "inboundTag=x").await,
        StatusCode::BAD_REQUEST,
        "user is required",
    );
    let a = form(&app, Method::DELETE, "/api/v1/delete_user", "user=OTHER").await;
    assert_text(&a, StatusCode::OK, "User 'other' deleted from inbound 'trojan-in'");
    assert_eq!(
        core.calls(),
        [vec![UserChange::Delete { email: "newuser".into() }], vec![UserChange::Delete { email: "other".into() }]]
    );
}

#[tokio::test]
async fn set_enabled_and_limits() {
    let core = FakeCore::new();
    core.seed("newuser", "vless-in", 0, 0, 0);
    let app = app(&core);
    let a = form(&app, Method::PATCH, "/api/v1/set_enabled", "user=newuser&enabled=false").await;
    assert_text(&a, StatusCode::OK, "User 'newuser' disabled");
    assert!(!core.client("newuser").unwrap().enable);
    assert_text(&form(&app, Method::PATCH, "/api/v1/set_enabled", "user=newuser").await, StatusCode::OK, "enabled");
    assert!(core.client("newuser").unwrap().enable, "enabled defaults to true");
    let a = form(&app, Method::PATCH, "/api/v1/set_enabled", "user=newuser&enabled=maybe").await;
    assert_text(&a, StatusCode::BAD_REQUEST, "enabled must be true or false; got 'maybe'");
    let a = form(&app, Method::PATCH, "/api/v1/set_enabled", "user=ghost&enabled=true").await;
    assert_text(&a, StatusCode::NOT_FOUND, "user 'ghost' not found");

    let a = form(&app, Method::PATCH, "/api/v1/update_lim_ip", "user=newuser&lim_ip=5").await;
    assert_text(&a, StatusCode::OK, "IP limit of 'newuser' set to 5");
    assert_eq!(core.inner().lifecycle["newuser"].limit_ip, 5);
    assert_text(
        &form(&app, Method::PATCH, "/api/v1/update_lim_ip", "user=newuser&lim_ip=100").await,
        StatusCode::OK,
        "100",
    );
    for bad in ["101", "-1", "x", "2.5"] {
        let a = form(&app, Method::PATCH, "/api/v1/update_lim_ip", &format!("user=newuser&lim_ip={bad}")).await;
        assert_text(&a, StatusCode::BAD_REQUEST, "lim_ip must be a whole number from 0 to 100");
    }
    assert_text(&form(&app, Method::PATCH, "/api/v1/update_lim_ip", "user=newuser").await, StatusCode::OK, "set to 0");
    assert_text(
        &form(&app, Method::PATCH, "/api/v1/update_lim_ip", "lim_ip=1").await,
        StatusCode::BAD_REQUEST,
        "user is required",
    );
    assert_text(
        &form(&app, Method::PATCH, "/api/v1/update_lim_ip", "user=ghost").await,
        StatusCode::NOT_FOUND,
        "'ghost'",
    );

    let a = form(&app, Method::PATCH, "/api/v1/update_renew", "user=newuser&renew=30").await;
    assert_text(&a, StatusCode::OK, "Auto-renewal of 'newuser' set to 30 days");
    assert_eq!(core.inner().lifecycle["newuser"].renew_days, 30);
    for bad in ["-1", "x", "36501"] {
        let a = form(&app, Method::PATCH, "/api/v1/update_renew", &format!("user=newuser&renew={bad}")).await;
        assert_text(&a, StatusCode::BAD_REQUEST, "renew must be a whole number from 0 to 36500");
    }
    assert_text(
        &form(&app, Method::PATCH, "/api/v1/update_renew", "user=newuser").await,
        StatusCode::OK,
        "set to 0 days",
    );
    assert_text(
        &form(&app, Method::PATCH, "/api/v1/update_renew", "user=ghost&renew=1").await,
        StatusCode::NOT_FOUND,
        "'ghost'",
    );
}

#[tokio::test]
async fn adjust_date_offsets() {
    let core = FakeCore::new();
    core.seed("newuser", "vless-in", 0, 0, 0);
    core.seed("dated", "vless-in", NOON, 0, 0);
    let app = app(&core);
    // curl -d "sub_end=+30:0" sends a raw '+', which form decoding reads as a space.
    let before = crate::clock::Clock::system().now_ms();
    let a = form(&app, Method::PATCH, "/api/v1/adjust_date", "user=newuser&sub_end=+30:0").await;
    assert_text(&a, StatusCode::OK, "Subscription date for 'newuser' updated with sub_end +30:0: ends ");
    let end = core.client("newuser").unwrap().expiry_ms;
    assert_eq!(end % HOUR, 0, "on a whole hour");
    assert!(end > before + 30 * DAY - HOUR && end <= before + 30 * DAY + HOUR, "30 days from now: {end}");
    // From an existing end date, exactly.
    let cases = [
        ("sub_end=%2B30:0", NOON + 30 * DAY),
        ("sub_end=-1:6", NOON + 29 * DAY - 6 * HOUR),
        ("sub_end=-7", NOON + 22 * DAY - 6 * HOUR),
        ("sub_end=+2", NOON + 24 * DAY - 6 * HOUR),
    ];
    for (param, expected) in cases {
        let a = form(&app, Method::PATCH, "/api/v1/adjust_date", &format!("user=dated&{param}")).await;
        assert_eq!(a.status, StatusCode::OK, "{param}: {}", a.body);
        assert_eq!(core.client("dated").unwrap().expiry_ms, expected, "{param}");
    }
    let a = form(&app, Method::PATCH, "/api/v1/adjust_date", "user=dated&sub_end=0").await;
    assert_text(&a, StatusCode::OK, "now has no end date");
    assert_eq!(core.client("dated").unwrap().expiry_ms, 0);
    let a = call(&app, Method::PATCH, "/api/v1/adjust_date?user=dated&sub_end=%2B1", None, Body::empty()).await;
    assert_text(&a, StatusCode::OK, "sub_end +1:0");

    assert_text(
        &form(&app, Method::PATCH, "/api/v1/adjust_date", "user=dated").await,
        StatusCode::BAD_REQUEST,
        "sub_end is required",
    );
    assert_text(
        &form(&app, Method::PATCH, "/api/v1/adjust_date", "sub_end=1").await,
        StatusCode::BAD_REQUEST,
        "user is required",
    );
    // "++1" arrives as two spaces and a 1; "%2B-1" as "+-1".
    for bad in ["abc", "1:x", "++1", "%2B-1", "1.5", "100001"] {
        let a = form(&app, Method::PATCH, "/api/v1/adjust_date", &format!("user=dated&sub_end={bad}")).await;
        assert_text(&a, StatusCode::BAD_REQUEST, "sub_end");
    }
    let a = form(&app, Method::PATCH, "/api/v1/adjust_date", "user=ghost&sub_end=1").await;
    assert_text(&a, StatusCode::NOT_FOUND, "user 'ghost' not found");
}

#[test]
fn listen_settings() {
    assert_eq!(parse_listen("127.0.0.1:9952"), Ok(Some(DEFAULT_LISTEN)));
    assert_eq!(parse_listen(" off "), Ok(None));
    assert_eq!(parse_listen(""), Ok(None));
    assert_eq!(parse_listen("[::1]:9000").unwrap().unwrap().port(), 9000);
    assert_eq!(parse_listen("localhost:9953"), Ok(Some("127.0.0.1:9953".parse().unwrap())));
    assert!(parse_listen("0.0.0.0:9952").unwrap_err().contains("not a loopback address"));
    assert!(parse_listen("9952").unwrap_err().contains("not an address"));
}

#[test]
fn stats_columns_from_a_v2ray_stat_config_yaml() {
    let yaml = "\
# v2ray-stat Configuration File
v2ray-stat:
  type: xray                             # Type of proxy core
  port: 9952
features:
  network: false
stats_columns:
  server:
    # sort: rate DESC
    columns:
      - source                           # Source of traffic
      - rate
  client:
    sort: rate DESC
    columns:
      - user
      # - uuid
      - last_seen
";
    let cols = stats_columns_from_yaml(yaml).unwrap().unwrap();
    let (resolved, warnings) = cols.resolve();
    assert!(warnings.is_empty());
    assert_eq!(resolved.server.len(), 2);
    assert_eq!(resolved.client_sort.0.key(), "rate");
    // Every column commented out: YAML null, so the section is hidden.
    let cols = stats_columns_from_yaml("stats_columns:\n  server:\n    columns:\n  client:\n").unwrap().unwrap();
    let (resolved, _) = cols.resolve();
    assert!(resolved.server.is_empty() && resolved.client.is_empty());
    assert_eq!(stats_columns_from_yaml("v2ray-stat:\n  port: 9952\n").unwrap(), None);
    assert_eq!(stats_columns_from_yaml("# only comments\n").unwrap(), None);
    assert!(stats_columns_from_yaml("stats_columns:\n  servr: {}\n").unwrap_err().contains("servr"));
    assert!(stats_columns_from_yaml("stats_columns: [").is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    assert!(load_stats_columns(&path).unwrap().is_some());
    let missing = load_stats_columns(&dir.path().join("nope.yaml")).unwrap_err().to_string();
    assert!(missing.contains("nope.yaml"), "{missing}");
    std::fs::write(&path, "stats_columns: 5\n").unwrap();
    assert!(load_stats_columns(&path).unwrap_err().to_string().contains("config.yaml"));
}

#[test]
fn settings_from_config_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config: AgentConfig = toml::from_str(
        "[local_api]\ndefault_inbound_tag = \"trojan-in\"\n[stats_columns.client]\ncolumns = [\"user\"]\n",
    )
    .unwrap();
    let s = LocalApiSettings::from_config(&config, None, None, Clock::system()).unwrap();
    assert_eq!((s.listen, s.default_inbound_tag.as_str()), (Some(DEFAULT_LISTEN), "trojan-in"));
    assert_eq!(s.stats_columns, config.stats_columns.clone().unwrap());
    let s = LocalApiSettings::from_config(&config, Some("off"), None, Clock::system()).unwrap();
    assert_eq!(s.listen, None);
    let err = LocalApiSettings::from_config(&config, Some("10.0.0.1:9952"), None, Clock::system()).unwrap_err();
    assert!(err.to_string().starts_with("--local-api: local API address 10.0.0.1:9952 is not a loopback"), "{err}");
    // A v2ray-stat config.yaml wins over agent.toml; one without stats_columns does not.
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, "stats_columns:\n  client:\n    columns: [uuid]\n").unwrap();
    let s = LocalApiSettings::from_config(&config, None, Some(&yaml), Clock::system()).unwrap();
    assert_eq!(s.stats_columns.client.unwrap().columns.unwrap(), ["uuid"]);
    std::fs::write(&yaml, "v2ray-stat:\n  port: 9952\n").unwrap();
    let s = LocalApiSettings::from_config(&config, None, Some(&yaml), Clock::system()).unwrap();
    assert_eq!(s.stats_columns, config.stats_columns.clone().unwrap());
    let s = LocalApiSettings::from_config(&AgentConfig::default(), None, Some(&yaml), Clock::system()).unwrap();
    assert_eq!(s.stats_columns, StatsColumns::default(), "nothing anywhere: the original's defaults");
    assert!(LocalApiSettings::from_config(&config, None, Some(&dir.path().join("no.yaml")), Clock::system()).is_err());
}

#[tokio::test]
async fn serve_refuses_and_serves_on_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = watch::channel(false);
    let off = LocalApiSettings { listen: None, ..LocalApiSettings::default() };
    serve(off, None, rx.clone()).await.unwrap();
    let public = LocalApiSettings { listen: Some("0.0.0.0:9952".parse().unwrap()), ..LocalApiSettings::default() };
    assert!(matches!(serve(public, None, rx.clone()).await, Err(LocalApiError::NotLoopback(_))));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let busy = LocalApiSettings { listen: Some(addr), ..LocalApiSettings::default() };
    let err = serve(busy, None, rx.clone()).await.unwrap_err().to_string();
    assert!(err.contains(&addr.to_string()) && err.contains("cannot listen"), "{err}");
    drop(taken);

    let core = FakeCore::new();
    core.seed("newuser", "vless-in", 0, 0, 0);
    let settings = LocalApiSettings { listen: Some(addr), ..LocalApiSettings::default() };
    let server = tokio::spawn(serve(settings, Some(core.clone() as Arc<dyn ProxyCore>), rx));
    let mut answer = String::new();
    for _ in 0..50 {
        if let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await {
            let body = "user=newuser&lim_ip=5";
            let request = format!(
                "PATCH /api/v1/update_lim_ip HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(request.as_bytes()).await.unwrap();
            conn.read_to_string(&mut answer).await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("IP limit of 'newuser' set to 5\n"), "{answer}");
    tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}
