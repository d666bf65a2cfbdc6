//! A client of the external (Panelica-style) API that signs as `specs/hmac.md` says, written
//! from the formula alone (not from the controller's code): lower-case hex of
//! HMAC-SHA256(secret, METHOD + /v1 PATH [+ ?query] + TIMESTAMP + BODY), the body left out for
//! DELETE. Also the `api-key create` CLI that makes the first key.

use std::process::Command;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::harness::{bin_dir, Api, Fleet, Reply};

/// Where the family is mounted on the controller's listener.
pub const PREFIX: &str = "/api/external";

/// A key made with `flotilla-controller api-key create --json`.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub public: String,
    pub secret: String,
}

/// Creates a key with the controller's CLI (`extra`: more flags, e.g. `--tier starter`).
pub fn create_key(fleet: &Fleet, name: &str, scopes: &str, extra: &[&str]) -> Key {
    let out = Command::new(bin_dir().join("flotilla-controller"))
        .arg("--data-dir")
        .arg(fleet.controller_data_dir())
        .args(["api-key", "create", "--name", name, "--scopes", scopes, "--json"])
        .args(extra)
        .output()
        .expect("flotilla-controller api-key create");
    assert!(out.status.success(), "api-key create: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from api-key create --json");
    Key {
        id: v["id"].as_str().expect("id").to_string(),
        public: v["public_key"].as_str().expect("public_key").to_string(),
        secret: v["secret_key"].as_str().expect("secret_key").to_string(),
    }
}

/// The signature of a request: `path` is `/v1/…` with its raw query, if any.
pub fn sign(secret: &str, method: &str, path: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(method.as_bytes());
    mac.update(path.as_bytes());
    mac.update(timestamp.as_bytes());
    if method != "DELETE" {
        mac.update(body);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A signing client with one key.
#[derive(Debug, Clone)]
pub struct External {
    pub api: Api,
    pub key: Key,
}

impl External {
    /// A client of `api`'s controller with `key`.
    pub fn new(api: &Api, key: Key) -> External {
        External { api: api.clone(), key }
    }

    /// A signed call; `path` is `/v1/…` (with its query), `body` JSON text.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_at(method, path, body, now())
    }

    /// A signed call with the timestamp `ts`.
    pub fn call_at(&self, method: &str, path: &str, body: Option<&str>, ts: i64) -> Reply {
        let ts = ts.to_string();
        let signature = sign(&self.key.secret, method, path, &ts, body.unwrap_or("").as_bytes());
        self.send(method, path, body, &ts, &signature)
    }

    /// Sends with the given timestamp and signature, whatever they are.
    pub fn send(&self, method: &str, path: &str, body: Option<&str>, ts: &str, signature: &str) -> Reply {
        let headers = [
            ("X-API-Key", self.key.public.as_str()),
            ("X-Timestamp", ts),
            ("X-Signature", signature),
            ("Accept", "application/json"),
        ];
        self.api.request_with(method, &format!("{PREFIX}{path}"), body.map(str::as_bytes), &headers)
    }

    /// A signed call that must answer `status`; returns the envelope's `data`.
    #[track_caller]
    pub fn expect(&self, method: &str, path: &str, body: Option<&str>, status: u16) -> Value {
        let reply = self.call(method, path, body);
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.raw);
        if status < 300 {
            assert_eq!(reply.body["status"], "success", "{method} {path}: {}", reply.raw);
        } else {
            assert_eq!(reply.body["status"], "error", "{method} {path}: {}", reply.raw);
        }
        reply.body["data"].clone()
    }
}
