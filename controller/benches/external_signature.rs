//! `cargo bench -p flotilla-controller --bench external_signature`: what checking one signed
//! request of the external API costs on the CPU (HMAC-SHA256 over the string to sign, the
//! constant-time compare, and the scope check), for a small GET and a 64 KiB PUT. Prints
//! figures; asserts nothing.

use std::hint::black_box;
use std::time::Instant;

use flotilla_controller::api::panelica::auth::Caller;
use flotilla_controller::api::panelica::signature::Signed;
use flotilla_controller::store::{ApiKeyRecord, KeyEnvironment, RateTier, Role};

fn key() -> ApiKeyRecord {
    ApiKeyRecord {
        id: "7f8e0f9c-3b7a-4f5e-9d55-0f0b7d2c1a11".into(),
        user_id: 1,
        username: "admin".into(),
        role: Role::Admin,
        name: "bench".into(),
        public_key: "pk_live_0123456789abcdef0123456789abcdef".into(),
        environment: KeyEnvironment::Live,
        scopes: vec!["domains:read".into(), "files:*".into(), "webhooks:read".into(), "server:read".into()],
        tier: RateTier::Professional,
        ip_allow: vec![],
        expires_at: None,
        enabled: true,
        created_at: time::OffsetDateTime::now_utc(),
        last_used_at: None,
    }
}

fn measure(what: &str, rounds: u32, body: &[u8], method: &str) {
    let secret = "sk_live_".to_string() + &"ab".repeat(32);
    let caller = Caller { key: key() };
    let signed = Signed {
        method,
        path: "/v1/files/content",
        query: Some("user_id=1&path=%2Fsrv%2Fwww%2Findex.html"),
        timestamp: "1764547200",
        body,
        multipart: false,
    };
    let signature = signed.sign(&secret);
    // Warm up.
    for _ in 0..1000 {
        black_box(signed.verify(&secret, &signature));
    }
    let start = Instant::now();
    for _ in 0..rounds {
        let ok = black_box(&signed).verify(black_box(&secret), black_box(&signature));
        let allowed = black_box(&caller).has(black_box("files:write"));
        assert!(ok && allowed);
    }
    let per = start.elapsed().as_secs_f64() / f64::from(rounds);
    println!("  {what:<48} {:>8.2} µs per request ({:.0} per second on one core)", per * 1e6, 1.0 / per);
}

fn main() {
    println!("external API: signature verification + scope check");
    measure("GET, no body", 200_000, b"", "GET");
    measure("PUT, 1 KiB JSON body", 100_000, &vec![b'x'; 1024], "PUT");
    measure("PUT, 64 KiB JSON body", 10_000, &vec![b'x'; 64 * 1024], "PUT");
}
