//! `flotilla-webhook-bench`: fan-out of the external API's webhooks. 10 local HTTP receivers, 10
//! `http` webhooks (one per receiver) subscribed to `node.offline`, then N events (default
//! 1,000) emitted as fast as the outbox takes them: N × 10 signed deliveries.
//!
//! It runs the controller's own webhook engine in this process (the `flotilla-controller`
//! library: a real SQLite store in a temporary directory, the outbox, the delivery worker and
//! its `ureq` sends), not the HTTP API in front of it, because no endpoint emits arbitrary
//! events. Reported: the emit rate (events queued per second), deliveries per second from the
//! first emit to the last delivery, and the latency from an event's emit to its arrival at a
//! receiver (p50, p99, max). Receivers answer 200 at once and keep connections alive. Bounded by
//! `--timeout`; the temporary directory and receiver threads are removed at the end. Figures are
//! printed, never asserted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_controller::store::{Audience, DestinationType, NewWebhook, Role, Store};
use flotilla_controller::webhooks::{destinations, WebhookSettings, Webhooks};
use serde_json::json;

/// Webhook fan-out figures.
#[derive(Debug, Parser)]
#[command(name = "flotilla-webhook-bench", version)]
struct Args {
    /// Events to emit; each goes to every webhook.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    events: u32,
    /// Receivers, one webhook each.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    receivers: u16,
    /// Deliveries in flight at once (`[webhooks] concurrency`).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// Arrivals: (event id, when).
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// A keep-alive HTTP/1.1 receiver answering 200 to everything.
fn receiver(stop: Arc<AtomicBool>, arrivals: Arrivals) -> anyhow::Result<(u16, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (stop, arrivals) = (stop.clone(), arrivals.clone());
                    std::thread::spawn(move || serve(stream, &stop, &arrivals));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Ok((port, handle))
}

fn serve(stream: TcpStream, stop: &AtomicBool, arrivals: &Arrivals) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let at = Instant::now();
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .unwrap_or_default();
        arrivals.lock().unwrap_or_else(|p| p.into_inner()).push((id, at));
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new().prefix("flotilla-webhook-bench-").tempdir()?;
    let store = Store::open(dir.path()).context("store")?;
    let user = store.create_user("bench", "not-a-login", Role::Admin)?;
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals: Arrivals = Arc::default();
    let mut threads = vec![];
    for i in 0..args.receivers {
        let (port, handle) = receiver(stop.clone(), arrivals.clone())?;
        threads.push(handle);
        let destination = destinations::check(
            DestinationType::Http,
            &json!({ "url": format!("http://127.0.0.1:{port}/hook") }),
            None,
        )
        .map_err(anyhow::Error::msg)?;
        store.create_webhook(&NewWebhook {
            user_id: user,
            name: format!("receiver-{i}"),
            destination,
            events: vec!["node.offline".into()],
            retry_count: 3,
            retry_delay_seconds: 1,
            timeout_seconds: 10,
            enabled: true,
        })?;
    }
    let settings = WebhookSettings { concurrency: args.concurrency.into(), ..Default::default() };
    let hooks = Webhooks::new(store.clone(), settings).map_err(anyhow::Error::msg)?;
    hooks.start_worker();

    let expected = args.events as usize * args.receivers as usize;
    println!(
        "webhook fan-out: {} events x {} webhooks = {expected} deliveries, {} in flight at most",
        args.events, args.receivers, args.concurrency
    );
    let started = Instant::now();
    let emitter = hooks.clone();
    let events = args.events;
    let emitted: HashMap<String, Instant> = tokio::task::spawn_blocking(move || {
        let mut at = HashMap::with_capacity(events as usize);
        for i in 0..events {
            let t = Instant::now();
            let data = json!({ "node_id": i, "node_name": format!("bench-{i}"), "reason": "benchmark" });
            let e = emitter.emit("node.offline", data, Audience::Fleet)?;
            at.insert(e.event_id, t);
        }
        anyhow::Ok(at)
    })
    .await??;
    let emit_time = started.elapsed();

    let deadline = started + Duration::from_secs(args.timeout);
    loop {
        let n = arrivals.lock().unwrap_or_else(|p| p.into_inner()).len();
        if n >= expected {
            break;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            hooks.stop();
            bail!("only {n} of {expected} deliveries within {} s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrived = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let last = arrived.iter().map(|(_, at)| *at).max().unwrap_or(started);
    let total = last - started;
    let mut latencies: Vec<Duration> =
        arrived.iter().filter_map(|(id, at)| emitted.get(id).map(|t| at.saturating_duration_since(*t))).collect();
    latencies.sort();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &arrived {
        *per_event.entry(id.as_str()).or_default() += 1;
    }
    // Each event reaches every receiver once; more is a duplicate delivery.
    let duplicates = per_event.values().filter(|n| **n > args.receivers as usize).count();
    println!(
        "emit: {} events in {:.3} s ({:.0} events/s queued)",
        args.events,
        emit_time.as_secs_f64(),
        args.events as f64 / emit_time.as_secs_f64()
    );
    println!(
        "delivered: {} in {:.3} s ({:.0} deliveries/s), events delivered twice: {duplicates}",
        arrived.len(),
        total.as_secs_f64(),
        arrived.len() as f64 / total.as_secs_f64(),
    );
    println!(
        "event -> delivery latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    // The worker records each success just after its answer: wait for the last records.
    let mut stats = store.webhook_stats(None, 0)?;
    let settle = Instant::now();
    while stats.successful < expected as u64 && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = store.webhook_stats(None, 0)?;
    }
    println!(
        "store: {} deliveries, {} successful, {} pending, mean response {:.2} ms",
        stats.deliveries,
        stats.successful,
        stats.pending,
        stats.avg_response_time_ms.unwrap_or(0.0)
    );
    hooks.stop();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(dir);
    Ok(())
}
