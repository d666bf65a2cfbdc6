//! Identity: built-in users with argon2id hashes (and, with the `pam` feature, the host's PAM
//! stack), checked from HTTP Basic credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::store::{Role, Store, StoreError};

/// How long a verified credential is remembered. Argon2 costs tens of milliseconds on purpose;
/// scripts that fire many calls should not pay it on each one.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Concurrent argon2 verifications.
const MAX_CONCURRENT_HASHES: usize = 2;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub role: Role,
}

/// Authentication failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("invalid credentials")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// A valid hash of a random password, computed once, verified against for unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        hash_password(&hex::encode(random)).unwrap_or_default()
    })
}

fn verify_hash(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[derive(Clone)]
struct Cached {
    identity: Identity,
    password_hash: Option<String>,
    at: Instant,
}

/// Checks credentials against the store (and PAM when built with it).
pub struct Authenticator {
    store: Store,
    /// Verified credentials: the identity, the password hash it was checked against (None for
    /// PAM), and when. A hit is re-checked against the store (one indexed read instead of an
    /// argon2 run), so a user deleted or given a new password by another process (the CLI)
    /// loses access at once.
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    /// Argon2 verifications in flight. Each takes ~19 MiB and tens of milliseconds: unbounded, a
    /// burst of requests (or a brute-force attempt) would balloon memory and starve other work.
    hashing: tokio::sync::Semaphore,
    #[cfg_attr(not(feature = "pam"), allow(dead_code))]
    pam_service: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("pam_service", &self.pam_service).finish()
    }
}

impl Authenticator {
    /// `pam_service`: PAM service name to try after built-in users (ignored without the `pam` feature).
    pub fn new(store: Store, pam_service: Option<String>) -> Self {
        Authenticator {
            store,
            cache: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(MAX_CONCURRENT_HASHES),
            pam_service,
        }
    }

    /// Verifies an `Authorization: Basic …` header value.
    pub async fn basic(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, encoded) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Missing);
        }
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        self.verify(user, password).await
    }

    /// Verifies a username and password.
    pub async fn verify(&self, username: &str, password: &str) -> Result<Identity, AuthError> {
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(username.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if let Some(identity) = self.cached(&key).await {
            return Ok(identity);
        }
        let _permit = self.hashing.acquire().await.map_err(|_| AuthError::Invalid)?;
        // Whoever held the permit before may have verified the same credentials.
        if let Some(identity) = self.cached(&key).await {
            return Ok(identity);
        }
        let store = self.store.clone();
        let (user, pass) = (username.to_string(), password.to_string());
        let found = tokio::task::spawn_blocking(move || -> Result<Option<(Identity, String)>, StoreError> {
            match store.user(&user)? {
                Some(u) => {
                    let ok = verify_hash(&pass, &u.password_hash);
                    Ok(ok.then_some((Identity { username: u.username, role: u.role }, u.password_hash)))
                }
                None => {
                    // Spend the same argon2 work as for a real user, so response time does not
                    // tell which user names exist.
                    verify_hash(&pass, dummy_hash());
                    Ok(None)
                }
            }
        })
        .await
        .map_err(|_| AuthError::Invalid)??;
        let (identity, password_hash) = match found {
            Some((identity, hash)) => (identity, Some(hash)),
            None => (self.verify_pam(username, password).await?, None),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, c| c.at.elapsed() < CACHE_TTL);
        cache.insert(key, Cached { identity: identity.clone(), password_hash, at: Instant::now() });
        Ok(identity)
    }

    /// A cached identity still valid: within its TTL and, for a built-in user, with the same
    /// password hash in the store now (the role is read afresh).
    async fn cached(&self, key: &[u8; 32]) -> Option<Identity> {
        let hit = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(key).filter(|c| c.at.elapsed() < CACHE_TTL).cloned()
        }?;
        let Some(hash) = hit.password_hash else { return Some(hit.identity) };
        let store = self.store.clone();
        let name = hit.identity.username.clone();
        let now = tokio::task::spawn_blocking(move || store.user(&name)).await.ok()?.ok()?;
        match now {
            Some(u) if u.password_hash == hash => Some(Identity { username: u.username, role: u.role }),
            _ => {
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
                None
            }
        }
    }

    /// Forgets cached credentials (after a password change).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    #[cfg(not(feature = "pam"))]
    async fn verify_pam(&self, _username: &str, _password: &str) -> Result<Identity, AuthError> {
        Err(AuthError::Invalid)
    }

    #[cfg(feature = "pam")]
    async fn verify_pam(&self, username: &str, password: &str) -> Result<Identity, AuthError> {
        let Some(service) = self.pam_service.clone() else {
            return Err(AuthError::Invalid);
        };
        let (user, pass) = (username.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || pam::authenticate(&service, &user, &pass)).await.unwrap_or(false);
        if ok {
            // PAM users are the host's administrators, as with the original manager.
            Ok(Identity { username: username.to_string(), role: Role::Admin })
        } else {
            Err(AuthError::Invalid)
        }
    }
}

#[cfg(feature = "pam")]
mod pam {
    use pam_client::conv_mock::Conversation;
    use pam_client::{Context, Flag};

    /// Runs the PAM auth and account stacks of `service` for the user.
    pub fn authenticate(service: &str, user: &str, password: &str) -> bool {
        let Ok(mut ctx) = Context::new(service, Some(user), Conversation::with_credentials(user, password)) else {
            return false;
        };
        ctx.authenticate(Flag::NONE).is_ok() && ctx.acct_mgmt(Flag::NONE).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn header(user: &str, pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
    }

    #[tokio::test]
    async fn basic_auth_accepts_only_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("admin", &hash_password("pw:with:colons").unwrap(), Role::Admin).unwrap();
        let auth = Authenticator::new(store.clone(), None);
        let id = auth.basic(Some(&header("admin", "pw:with:colons"))).await.unwrap();
        assert_eq!(id, Identity { username: "admin".into(), role: Role::Admin });
        // Cached path gives the same answer.
        assert!(auth.basic(Some(&header("admin", "pw:with:colons"))).await.is_ok());
        assert!(matches!(auth.basic(Some(&header("admin", "nope"))).await, Err(AuthError::Invalid)));
        assert!(matches!(auth.basic(Some(&header("ghost", "x"))).await, Err(AuthError::Invalid)));
        assert!(matches!(auth.basic(None).await, Err(AuthError::Missing)));
        assert!(matches!(auth.basic(Some("Basic !!!")).await, Err(AuthError::Malformed)));
        assert!(matches!(auth.basic(Some("Bearer abc")).await, Err(AuthError::Missing)));
        // A password changed or a user deleted by another process (the CLI, with no cache to
        // clear) takes effect at once, cached credentials or not.
        store.set_password_hash("admin", &hash_password("new").unwrap()).unwrap();
        assert!(auth.basic(Some(&header("admin", "pw:with:colons"))).await.is_err());
        assert!(auth.basic(Some(&header("admin", "new"))).await.is_ok());
        store.create_user("second", &hash_password("pw2").unwrap(), Role::Admin).unwrap();
        assert!(auth.basic(Some(&header("second", "pw2"))).await.is_ok());
        store.delete_user("second").unwrap();
        assert!(matches!(auth.basic(Some(&header("second", "pw2"))).await, Err(AuthError::Invalid)));
    }

    /// Real PAM: a throwaway system user checked through a dedicated service using pam_unix.
    /// Needs root (to create the user and read /etc/shadow); elsewhere it says so and returns.
    #[cfg(feature = "pam")]
    #[tokio::test]
    async fn pam_users_authenticate_through_the_host_stack() {
        use std::process::Command;
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
        if !root {
            eprintln!("pam test skipped: needs root to create a test user");
            return;
        }
        let service = "flotilla-controller-test";
        std::fs::write(format!("/etc/pam.d/{service}"), "auth required pam_unix.so\naccount required pam_unix.so\n")
            .unwrap();
        let user = "flotilla-pamtest";
        if !Command::new("id").arg(user).output().unwrap().status.success() {
            assert!(Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", user]).status().unwrap().success());
        }
        let mut chpasswd = Command::new("chpasswd").stdin(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        chpasswd.stdin.take().unwrap().write_all(format!("{user}:pam-Secret-42\n").as_bytes()).unwrap();
        assert!(chpasswd.wait().unwrap().success());

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let auth = Authenticator::new(store, Some(service.into()));
        let id = auth.basic(Some(&header(user, "pam-Secret-42"))).await.unwrap();
        assert_eq!(id, Identity { username: user.into(), role: Role::Admin });
        assert!(matches!(auth.basic(Some(&header(user, "wrong"))).await, Err(AuthError::Invalid)));
        assert!(matches!(auth.basic(Some(&header("no-such-user-x", "pw"))).await, Err(AuthError::Invalid)));
        // Without a service configured, PAM is not consulted.
        let dir2 = tempfile::tempdir().unwrap();
        let plain = Authenticator::new(Store::open(dir2.path()).unwrap(), None);
        assert!(plain.basic(Some(&header(user, "pam-Secret-42"))).await.is_err());
        let _ = Command::new("userdel").arg(user).status();
        let _ = std::fs::remove_file(format!("/etc/pam.d/{service}"));
    }
}
