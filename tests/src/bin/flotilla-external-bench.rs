//! `flotilla-external-bench`: requests per second of the external API's `GET /v1/me` on a real
//! controller, each request signed afresh (an enterprise key: no rate limit), from N client
//! threads with keep-alive connections. Prints throughput and latency; asserts nothing.
//!
//! Build the binaries in release first and point `FLOTILLA_BIN_DIR` at them for figures that
//! mean something: `cargo build --release --bins && FLOTILLA_BIN_DIR=target/release
//! target/release/flotilla-external-bench`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_tests::harness::Fleet;
use flotilla_tests::panelica::{create_key, now, sign, PREFIX};

/// External API throughput.
#[derive(Debug, Parser)]
#[command(name = "flotilla-external-bench", version)]
struct Args {
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per thread at most (bounds the run).
    #[arg(long, default_value_t = 200_000)]
    max_per_thread: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fleet = Fleet::start();
    let key = create_key(&fleet, "bench", "*:*", &["--tier", "enterprise"]);
    let base = fleet.api.base.clone();
    println!(
        "flotilla-external-bench: GET {PREFIX}/v1/me, {} threads, {} s, enterprise key (no rate limit)",
        args.threads, args.seconds
    );
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..args.threads)
        .map(|_| {
            let (base, key) = (base.clone(), key.clone());
            let max = args.max_per_thread;
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                let mut latencies = Vec::with_capacity(10_000);
                while Instant::now() < deadline && latencies.len() < max {
                    let ts = now().to_string();
                    let signature = sign(&key.secret, "GET", "/v1/me", &ts, b"");
                    let t = Instant::now();
                    let reply = agent
                        .get(&format!("{base}{PREFIX}/v1/me"))
                        .set("X-API-Key", &key.public)
                        .set("X-Timestamp", &ts)
                        .set("X-Signature", &signature)
                        .call();
                    match reply {
                        Ok(r) if r.status() == 200 => {
                            r.into_string().context("body")?;
                        }
                        Ok(r) => bail!("status {}", r.status()),
                        Err(e) => bail!("{e}"),
                    }
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = vec![];
    for h in handles {
        all.extend(h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??);
    }
    let wall = started.elapsed();
    all.sort();
    let pick = |p: f64| all.get(((all.len().saturating_sub(1)) as f64 * p) as usize).copied().unwrap_or_default();
    println!("  requests                 {}", all.len());
    println!("  throughput               {:.0} requests/s", all.len() as f64 / wall.as_secs_f64());
    println!(
        "  latency                  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
