//! gRPC client for the Xray and v2ray APIs (HandlerService for users, StatsService for counters).
//!
//! Both cores speak the same message bodies (`proto/core.proto`, our own file); only the gRPC
//! path prefix and the `TypedMessage.type` strings differ, so they are chosen here at runtime
//! from the [`CoreFlavor`] instead of coming from generated service code:
//!
//! | | Xray | v2ray 4.x (and sing-box's v2ray API) |
//! |---|---|---|
//! | service paths | `/xray.app.proxyman.command.HandlerService/…` | `/v2ray.core.app.proxyman.command.HandlerService/…` |
//! | type strings | `xray.proxy.vless.Account` | `v2ray.core.proxy.vless.Account` |
//!
//! Errors are mapped from what the cores actually send: a duplicate user comes back as gRPC
//! `Unknown` with `User X already exists.`, a missing one as `User X not found.`, a call the core
//! does not have as `Unimplemented`.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_protocol::proxy::{ClientSpec, CoreFlavor};
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// Messages generated from `proto/core.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/flotilla.core.rs"));
}

/// Deadline of every API call, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a core API call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreApiError {
    /// The user (email) is already on the inbound.
    #[error("core: {0}")]
    AlreadyExists(String),
    /// The user, inbound or counter does not exist.
    #[error("core: {0}")]
    NotFound(String),
    /// The core does not have this call (older Xray, v2ray, sing-box).
    #[error("the core does not implement this call")]
    Unimplemented,
    /// The API could not be reached (not listening, connection refused or dropped, timed out).
    #[error("core API unavailable: {0}")]
    Unavailable(String),
    /// Any other error the core answered with.
    #[error("core refused: {0}")]
    Refused(String),
    /// The request could not be built (unknown protocol or cipher, feature the flavor lacks).
    #[error("bad input: {0}")]
    BadInput(String),
}

impl CoreApiError {
    /// Classifies a gRPC status.
    pub fn from_status(status: &Status) -> CoreApiError {
        let message = status.message().to_string();
        match status.code() {
            Code::Unimplemented => CoreApiError::Unimplemented,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                CoreApiError::Unavailable(if message.is_empty() { status.code().to_string() } else { message })
            }
            code => {
                let lower = message.to_ascii_lowercase();
                if lower.contains("already exists") {
                    CoreApiError::AlreadyExists(message)
                } else if lower.contains("not found") {
                    CoreApiError::NotFound(message)
                } else {
                    CoreApiError::Refused(format!("{code:?}: {message}"))
                }
            }
        }
    }
}

/// Direction of a traffic counter: uplink is client→server, downlink server→client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// Splits `PREFIX>>>NAME>>>traffic>>>uplink|downlink` into `NAME` and the direction.
fn parse_counter<'a>(name: &'a str, prefix: &str) -> Option<(&'a str, Direction)> {
    let rest = name.strip_prefix(prefix)?;
    let (subject, direction) = if let Some(s) = rest.strip_suffix(">>>traffic>>>uplink") {
        (s, Direction::Up)
    } else {
        (rest.strip_suffix(">>>traffic>>>downlink")?, Direction::Down)
    };
    (!subject.is_empty()).then_some((subject, direction))
}

/// `user>>>EMAIL>>>traffic>>>uplink|downlink` → (`EMAIL`, direction).
pub fn parse_user_counter(name: &str) -> Option<(&str, Direction)> {
    parse_counter(name, "user>>>")
}

/// `inbound>>>TAG>>>traffic>>>uplink|downlink` → (`TAG`, direction).
pub fn parse_inbound_counter(name: &str) -> Option<(&str, Direction)> {
    parse_counter(name, "inbound>>>")
}

/// `outbound>>>TAG>>>traffic>>>uplink|downlink` → (`TAG`, direction).
pub fn parse_outbound_counter(name: &str) -> Option<(&str, Direction)> {
    parse_counter(name, "outbound>>>")
}

/// `user>>>EMAIL>>>online` (Xray's online-map name) → `EMAIL`; anything else is kept as is.
fn online_email(name: &str) -> &str {
    let name = name.strip_prefix("user>>>").unwrap_or(name);
    name.strip_suffix(">>>online").unwrap_or(name)
}

/// Prefix of the cores' proto packages: `xray` or `v2ray.core`. sing-box's optional v2ray API
/// uses the v2ray names (it only has StatsService).
fn package_prefix(flavor: CoreFlavor) -> &'static str {
    match flavor {
        CoreFlavor::Xray => "xray",
        CoreFlavor::V2ray | CoreFlavor::SingBox => "v2ray.core",
    }
}

/// Full proto name of a core type, e.g. `type_name(Xray, "proxy.vless.Account")`.
fn type_name(flavor: CoreFlavor, suffix: &str) -> String {
    format!("{}.{suffix}", package_prefix(flavor))
}

fn typed(flavor: CoreFlavor, suffix: &str, message: &impl Message) -> pb::TypedMessage {
    pb::TypedMessage { r#type: type_name(flavor, suffix), value: message.encode_to_vec() }
}

/// Cipher number of a Shadowsocks method in the flavor's `CipherType` enum (the cores number
/// their enums differently).
fn ss_cipher(flavor: CoreFlavor, method: &str) -> Option<i32> {
    let (xray, v2ray) = match method.to_ascii_lowercase().as_str() {
        "aes-128-gcm" => (Some(5), Some(1)),
        "aes-256-gcm" => (Some(6), Some(2)),
        "chacha20-poly1305" | "chacha20-ietf-poly1305" => (Some(7), Some(3)),
        "xchacha20-poly1305" | "xchacha20-ietf-poly1305" => (Some(8), None),
        "none" | "plain" => (None, Some(4)),
        _ => (None, None),
    };
    if flavor == CoreFlavor::Xray {
        xray
    } else {
        v2ray
    }
}

/// The `User.account` of a client of a `protocol` inbound, typed for the flavor.
pub fn user_account(
    flavor: CoreFlavor,
    protocol: &str,
    client: &ClientSpec,
    ss_method: Option<&str>,
) -> Result<pb::TypedMessage, CoreApiError> {
    let bad = |why: String| Err(CoreApiError::BadInput(why));
    match protocol {
        "vmess" => {
            Ok(typed(flavor, "proxy.vmess.Account", &pb::VmessAccount { id: client.secret.clone(), alter_id: 0 }))
        }
        "vless" => {
            if flavor != CoreFlavor::Xray && !client.flow.is_empty() {
                return bad(format!("{} has no VLESS flow {:?}", flavor.as_str(), client.flow));
            }
            Ok(typed(
                flavor,
                "proxy.vless.Account",
                &pb::VlessAccount { id: client.secret.clone(), flow: client.flow.clone(), encryption: String::new() },
            ))
        }
        "trojan" => Ok(typed(flavor, "proxy.trojan.Account", &pb::TrojanAccount { password: client.secret.clone() })),
        "shadowsocks" => {
            let Some(method) = ss_method else {
                return bad("a shadowsocks user needs the inbound's method".into());
            };
            if method.starts_with("2022-") {
                if flavor != CoreFlavor::Xray {
                    return bad(format!("{} has no Shadowsocks 2022 ({method})", flavor.as_str()));
                }
                return Ok(typed(
                    flavor,
                    "proxy.shadowsocks_2022.Account",
                    &pb::Shadowsocks2022Account { key: client.secret.clone() },
                ));
            }
            let Some(cipher_type) = ss_cipher(flavor, method) else {
                return bad(format!("{} has no Shadowsocks cipher {method:?}", flavor.as_str()));
            };
            Ok(typed(
                flavor,
                "proxy.shadowsocks.Account",
                &pb::ShadowsocksAccount { password: client.secret.clone(), cipher_type },
            ))
        }
        other => bad(format!("protocol {other:?} has no users the core API can manage")),
    }
}

/// The `AlterInbound` request that adds `client` to `inbound_tag` (level 0, email = client email).
pub fn add_user_request(
    flavor: CoreFlavor,
    inbound_tag: &str,
    protocol: &str,
    client: &ClientSpec,
    ss_method: Option<&str>,
) -> Result<pb::AlterInboundRequest, CoreApiError> {
    if client.email.is_empty() {
        return Err(CoreApiError::BadInput("a client needs an email".into()));
    }
    let user = pb::User {
        level: 0,
        email: client.email.clone(),
        account: Some(user_account(flavor, protocol, client, ss_method)?),
    };
    let operation = typed(flavor, "app.proxyman.command.AddUserOperation", &pb::AddUserOperation { user: Some(user) });
    Ok(pb::AlterInboundRequest { tag: inbound_tag.to_string(), operation: Some(operation) })
}

/// The `AlterInbound` request that removes the user `email` from `inbound_tag`.
pub fn remove_user_request(flavor: CoreFlavor, inbound_tag: &str, email: &str) -> pb::AlterInboundRequest {
    let operation = typed(
        flavor,
        "app.proxyman.command.RemoveUserOperation",
        &pb::RemoveUserOperation { email: email.to_string() },
    );
    pb::AlterInboundRequest { tag: inbound_tag.to_string(), operation: Some(operation) }
}

#[derive(Clone, Copy)]
enum Service {
    Handler,
    Stats,
}

/// Client of one core's API. Cheap to clone; connects lazily (and reconnects) on use.
#[derive(Clone)]
pub struct CoreApi {
    channel: Channel,
    flavor: CoreFlavor,
    addr: SocketAddr,
}

impl std::fmt::Debug for CoreApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreApi").field("flavor", &self.flavor).field("addr", &self.addr).finish()
    }
}

impl CoreApi {
    /// A client of the API at `addr` (plain HTTP/2, as the cores serve it). Nothing is dialled
    /// until the first call. Must be called inside a tokio runtime.
    pub fn new(addr: SocketAddr, flavor: CoreFlavor) -> CoreApi {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address is a valid URI authority")
            .connect_timeout(CALL_TIMEOUT);
        CoreApi { channel: endpoint.connect_lazy(), flavor, addr }
    }

    pub fn flavor(&self) -> CoreFlavor {
        self.flavor
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn path(&self, service: Service, method: &str) -> PathAndQuery {
        let service = match service {
            Service::Handler => "app.proxyman.command.HandlerService",
            Service::Stats => "app.stats.command.StatsService",
        };
        let path = format!("/{}.{service}/{method}", package_prefix(self.flavor));
        PathAndQuery::try_from(path).expect("service paths are valid")
    }

    /// One unary call with the [`CALL_TIMEOUT`] deadline.
    async fn call<Req, Resp>(&self, service: Service, method: &str, request: Req) -> Result<Resp, CoreApiError>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let path = self.path(service, method);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let call = async move {
            grpc.ready().await.map_err(|e| CoreApiError::Unavailable(format!("{}: {e}", self.addr)))?;
            let mut request = Request::new(request);
            request.set_timeout(CALL_TIMEOUT);
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(request, path, codec).await.map(|r| r.into_inner()).map_err(|s| CoreApiError::from_status(&s))
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(CoreApiError::Unavailable(format!("{}: {method} timed out", self.addr))),
        }
    }

    /// Adds `client` to the inbound `inbound_tag` (whose protocol is `protocol`; `ss_method` is
    /// the Shadowsocks inbound's method). The account is built from `client.secret`/`flow`.
    pub async fn add_user(
        &self,
        inbound_tag: &str,
        protocol: &str,
        client: &ClientSpec,
        ss_method: Option<&str>,
    ) -> Result<(), CoreApiError> {
        let request = add_user_request(self.flavor, inbound_tag, protocol, client, ss_method)?;
        let _: pb::AlterInboundResponse = self.call(Service::Handler, "AlterInbound", request).await?;
        Ok(())
    }

    /// Removes the user `email` from the inbound `inbound_tag`. Its counters stay on the core.
    pub async fn remove_user(&self, inbound_tag: &str, email: &str) -> Result<(), CoreApiError> {
        if email.is_empty() {
            return Err(CoreApiError::BadInput("removing a user needs its email".into()));
        }
        let request = remove_user_request(self.flavor, inbound_tag, email);
        let _: pb::AlterInboundResponse = self.call(Service::Handler, "AlterInbound", request).await?;
        Ok(())
    }

    /// Emails of the users on `inbound_tag` (Xray only: `Ok(None)` when the core lacks the call).
    pub async fn inbound_users(&self, inbound_tag: &str) -> Result<Option<Vec<String>>, CoreApiError> {
        let request = pb::GetInboundUserRequest { tag: inbound_tag.to_string(), email: String::new() };
        match self.call::<_, pb::GetInboundUserResponse>(Service::Handler, "GetInboundUsers", request).await {
            Ok(r) => Ok(Some(r.users.into_iter().map(|u| u.email).filter(|e| !e.is_empty()).collect())),
            Err(CoreApiError::Unimplemented) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Counters whose name contains `pattern` ("" = all) as (name, value); with `reset` the
    /// core zeroes them after reading. Counters that saw no traffic yet are absent.
    pub async fn query_stats(&self, pattern: &str, reset: bool) -> Result<Vec<(String, i64)>, CoreApiError> {
        let request = pb::QueryStatsRequest {
            pattern: pattern.to_string(),
            reset,
            patterns: vec![pattern.to_string()],
            regexp: false,
        };
        let response: pb::QueryStatsResponse = self.call(Service::Stats, "QueryStats", request).await?;
        Ok(response.stat.into_iter().map(|s| (s.name, s.value)).collect())
    }

    /// Seconds since the core's stats service started (`GetSysStats.uptime`).
    pub async fn sys_uptime(&self) -> Result<u32, CoreApiError> {
        let response: pb::SysStatsResponse = self.call(Service::Stats, "GetSysStats", pb::SysStatsRequest {}).await?;
        Ok(response.uptime)
    }

    /// Emails of the users online now (Xray's `GetAllOnlineUsers`, needs `statsUserOnline`).
    /// `Ok(None)` when the core does not have the call (v2ray, Xray before 26.1.13).
    pub async fn online_users(&self) -> Result<Option<Vec<String>>, CoreApiError> {
        let request = pb::GetAllOnlineUsersRequest {};
        match self.call::<_, pb::GetAllOnlineUsersResponse>(Service::Stats, "GetAllOnlineUsers", request).await {
            Ok(r) => Ok(Some(r.users.iter().map(|n| online_email(n).to_string()).collect())),
            Err(CoreApiError::Unimplemented) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(secret: &str, flow: &str) -> ClientSpec {
        ClientSpec {
            inbound_tag: "in-1".into(),
            email: "a@x".into(),
            secret: secret.into(),
            flow: flow.into(),
            enable: true,
            expiry_ms: 0,
            total_bytes: 0,
            reset_generation: 0,
        }
    }

    const UUID: &str = "5783a3e7-e373-51cd-8642-c83782b807c5";

    #[test]
    fn account_type_strings_follow_the_flavor() {
        let c = client(UUID, "");
        let cases = [
            ("vless", None, "xray.proxy.vless.Account", "v2ray.core.proxy.vless.Account"),
            ("vmess", None, "xray.proxy.vmess.Account", "v2ray.core.proxy.vmess.Account"),
            ("trojan", None, "xray.proxy.trojan.Account", "v2ray.core.proxy.trojan.Account"),
            (
                "shadowsocks",
                Some("aes-256-gcm"),
                "xray.proxy.shadowsocks.Account",
                "v2ray.core.proxy.shadowsocks.Account",
            ),
        ];
        for (protocol, method, xray, v2ray) in cases {
            assert_eq!(user_account(CoreFlavor::Xray, protocol, &c, method).unwrap().r#type, xray);
            assert_eq!(user_account(CoreFlavor::V2ray, protocol, &c, method).unwrap().r#type, v2ray);
        }
    }

    #[test]
    fn add_and_remove_operations_are_typed_per_flavor() {
        let c = client(UUID, "");
        let add = add_user_request(CoreFlavor::Xray, "in-1", "vless", &c, None).unwrap();
        assert_eq!(add.tag, "in-1");
        let op = add.operation.unwrap();
        assert_eq!(op.r#type, "xray.app.proxyman.command.AddUserOperation");
        let user = pb::AddUserOperation::decode(op.value.as_slice()).unwrap().user.unwrap();
        assert_eq!((user.level, user.email.as_str()), (0, "a@x"));

        let rm = remove_user_request(CoreFlavor::V2ray, "in-1", "a@x").operation.unwrap();
        assert_eq!(rm.r#type, "v2ray.core.app.proxyman.command.RemoveUserOperation");
        assert_eq!(pb::RemoveUserOperation::decode(rm.value.as_slice()).unwrap().email, "a@x");
    }

    #[test]
    fn vless_account_carries_id_and_flow_on_xray() {
        let c = client(UUID, "xtls-rprx-vision");
        let acc = user_account(CoreFlavor::Xray, "vless", &c, None).unwrap();
        let v = pb::VlessAccount::decode(acc.value.as_slice()).unwrap();
        assert_eq!((v.id.as_str(), v.flow.as_str(), v.encryption.as_str()), (UUID, "xtls-rprx-vision", ""));
        // v2ray 4.x has no Vision: refuse instead of adding a user no client can use.
        assert!(matches!(user_account(CoreFlavor::V2ray, "vless", &c, None), Err(CoreApiError::BadInput(_))));
    }

    #[test]
    fn vmess_account_is_just_the_uuid() {
        let acc = user_account(CoreFlavor::Xray, "vmess", &client(UUID, ""), None).unwrap();
        // Field 1 (id) only: alter_id 0 is not encoded, so Xray never sees its removed field 2.
        let mut expected = vec![0x0a, UUID.len() as u8];
        expected.extend_from_slice(UUID.as_bytes());
        assert_eq!(acc.value, expected);
    }

    #[test]
    fn shadowsocks_cipher_numbers_differ_per_flavor() {
        let c = client("pw", "");
        let cipher = |flavor, method| {
            let acc = user_account(flavor, "shadowsocks", &c, Some(method)).unwrap();
            let ss = pb::ShadowsocksAccount::decode(acc.value.as_slice()).unwrap();
            assert_eq!(ss.password, "pw");
            ss.cipher_type
        };
        assert_eq!(cipher(CoreFlavor::Xray, "aes-128-gcm"), 5);
        assert_eq!(cipher(CoreFlavor::Xray, "chacha20-ietf-poly1305"), 7);
        assert_eq!(cipher(CoreFlavor::V2ray, "aes-128-gcm"), 1);
        assert_eq!(cipher(CoreFlavor::V2ray, "chacha20-poly1305"), 3);
        let ss2022 = user_account(CoreFlavor::Xray, "shadowsocks", &c, Some("2022-blake3-aes-128-gcm")).unwrap();
        assert_eq!(ss2022.r#type, "xray.proxy.shadowsocks_2022.Account");
        for (flavor, method) in [(CoreFlavor::V2ray, Some("xchacha20-poly1305")), (CoreFlavor::Xray, Some("rc4-md5"))] {
            assert!(matches!(user_account(flavor, "shadowsocks", &c, method), Err(CoreApiError::BadInput(_))));
        }
        assert!(matches!(user_account(CoreFlavor::Xray, "shadowsocks", &c, None), Err(CoreApiError::BadInput(_))));
        assert!(matches!(user_account(CoreFlavor::Xray, "socks", &c, None), Err(CoreApiError::BadInput(_))));
    }

    #[test]
    fn counters_parse_into_name_and_direction() {
        assert_eq!(parse_user_counter("user>>>a@x>>>traffic>>>uplink"), Some(("a@x", Direction::Up)));
        assert_eq!(parse_user_counter("user>>>a@x>>>traffic>>>downlink"), Some(("a@x", Direction::Down)));
        assert_eq!(parse_inbound_counter("inbound>>>in-1>>>traffic>>>downlink"), Some(("in-1", Direction::Down)));
        assert_eq!(parse_inbound_counter("user>>>a@x>>>traffic>>>uplink"), None);
        assert_eq!(parse_user_counter("inbound>>>in-1>>>traffic>>>uplink"), None);
        assert_eq!(parse_user_counter("outbound>>>direct>>>traffic>>>uplink"), None);
        assert_eq!(parse_user_counter("user>>>a@x>>>online"), None);
        assert_eq!(parse_user_counter("user>>>>>>traffic>>>uplink"), None);
        assert_eq!(parse_user_counter("user>>>a@x>>>traffic>>>sideways"), None);
    }

    #[test]
    fn online_names_become_emails() {
        assert_eq!(online_email("user>>>a@x>>>online"), "a@x");
        assert_eq!(online_email("a@x"), "a@x");
    }

    #[test]
    fn statuses_map_to_errors() {
        let map = |code, msg: &str| CoreApiError::from_status(&Status::new(code, msg));
        assert!(matches!(map(Code::Unknown, "User b@x already exists."), CoreApiError::AlreadyExists(_)));
        assert!(matches!(map(Code::Unknown, "User b@x not found."), CoreApiError::NotFound(_)));
        assert!(matches!(map(Code::NotFound, "x not found."), CoreApiError::NotFound(_)));
        assert!(matches!(map(Code::Unimplemented, "unknown method"), CoreApiError::Unimplemented));
        assert!(matches!(map(Code::Unavailable, "tcp connect error"), CoreApiError::Unavailable(_)));
        assert!(matches!(map(Code::Unknown, "proxy is not a UserManager"), CoreApiError::Refused(_)));
    }
}
