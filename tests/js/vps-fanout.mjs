// The clients of flotilla-vps-fanout-bench (tests/src/bin/flotilla-vps-fanout-bench.rs): CLIENTS
// socket.io-client v4 connections of their own (WebSocket first, as the original VPS web UI), each
// subscribed to every server of SERVER_IDS. For every pushed `server-stats` the latency is now
// minus the payload's `sampledAt` (the agent's sample time; agent, controller and this script
// share one clock). Subscribe answers carry no `sampledAt` and are not counted.
//
// Lines on stdout, one JSON object each:
//   {"event":"ready", ...}    every client connected and answered for every server
//   {"event":"summary", ...}  latencies of the measuring window, after `stop`
//   {"event":"failed", ...}   a client could not connect or subscribe
// Stdin drives the window: a `start` line begins it, `stop` ends it and prints the summary, EOF
// (or LIMIT_S seconds, the script's own bound) ends the script.
//
// Environment: SIO_MODULES (a dir whose node_modules has socket.io-client), URL
// (http://host:port), TOKEN (sent as auth.token), SERVER_IDS (comma-separated numbers), CLIENTS
// (default 200), LIMIT_S (default 600).
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(`${process.env.SIO_MODULES}/`);
const { io } = require('socket.io-client');

const print = (event, data) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
const limit = Number(process.env.LIMIT_S || 600);
const clients = Number(process.env.CLIENTS || 200);
const serverIds = (process.env.SERVER_IDS || '').split(',').filter(Boolean).map(Number);
// Connections opened at once: a burst of hundreds of handshakes (each subscribe asks the node for
// a live status) would measure the connect storm, not the fan-out.
const CONNECTING = 10;

const sockets = [];
let measuring = false;
let latencies = [];
// Pushes per client within the window, to see whether some client fell behind.
let perClient = new Array(clients).fill(0);
let windowStart = 0;
// Client 0's pushes split into the agent's reports (a report holds every server once, in the order
// the agent sampled them): how long the agent's pass over the containers took (its first to last
// `sampledAt`), and the age of the pass's newest sample at arrival (link + controller + delivery).
let batch = new Map();
let passes = [];
let newest = [];
const closeBatch = () => {
  if (batch.size === 0) return;
  const sampled = [...batch.values()].map((b) => b.sampledAt);
  const last = [...batch.values()].reduce((a, b) => (b.sampledAt > a.sampledAt ? b : a));
  passes.push(Math.max(...sampled) - Math.min(...sampled));
  newest.push(last.arrived - last.sampledAt);
  batch = new Map();
};

const finish = (code) => {
  for (const s of sockets) s.close();
  // Let stdout drain before leaving.
  setTimeout(() => process.exit(code), 100);
};
setTimeout(() => { print('failed', { message: `no end within LIMIT_S=${limit}` }); finish(1); }, limit * 1000);

/// Opens client `i`; resolves once every server answered its subscribe.
const open = (i) => new Promise((resolve, reject) => {
  const socket = io(process.env.URL, {
    // One engine (one WebSocket) per client, not one shared Manager for the URL.
    forceNew: true,
    transports: ['websocket', 'polling'],
    reconnection: false,
    timeout: 20000,
    auth: { token: process.env.TOKEN },
  });
  sockets.push(socket);
  const waiting = new Set(serverIds);
  socket.on('connect', () => {
    for (const id of serverIds) socket.emit('subscribe-server', id);
  });
  socket.on('connect_error', (err) => reject(new Error(`client ${i}: connect_error: ${err.message}`)));
  socket.on('error', (err) => reject(new Error(`client ${i}: error: ${JSON.stringify(err)}`)));
  socket.on('disconnect', (reason) => {
    if (measuring) print('failed', { message: `client ${i} disconnected: ${reason}` });
  });
  socket.on('server-stats', (payload) => {
    if (waiting.size > 0 && payload.sampledAt === undefined) {
      waiting.delete(payload.serverId);
      if (waiting.size === 0) resolve(socket.io.engine.transport.name);
    }
    if (measuring && typeof payload.sampledAt === 'number') {
      const arrived = Date.now();
      latencies.push(arrived - payload.sampledAt);
      perClient[i] += 1;
      if (i === 0) {
        if (batch.has(payload.serverId)) closeBatch();
        batch.set(payload.serverId, { sampledAt: payload.sampledAt, arrived });
      }
    }
  });
});

const percentile = (sorted, p) => (sorted.length ? sorted[Math.round((sorted.length - 1) * p)] : 0);

const summary = () => {
  const seconds = (Date.now() - windowStart) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  const counts = [...perClient].sort((a, b) => a - b);
  // Reports cut by the window's start (the first) or end (never closed) are left out.
  const pass = Float64Array.from(passes.slice(1)).sort();
  const fresh = Float64Array.from(newest.slice(1)).sort();
  return {
    seconds,
    pushes: sorted.length,
    p50_ms: percentile(sorted, 0.5),
    p90_ms: percentile(sorted, 0.9),
    p99_ms: percentile(sorted, 0.99),
    max_ms: sorted.length ? sorted[sorted.length - 1] : 0,
    min_ms: sorted.length ? sorted[0] : 0,
    per_client_min: counts[0] ?? 0,
    per_client_max: counts[counts.length - 1] ?? 0,
    reports: pass.length,
    pass_p50_ms: percentile(pass, 0.5),
    pass_max_ms: pass.length ? pass[pass.length - 1] : 0,
    newest_p50_ms: percentile(fresh, 0.5),
    newest_p99_ms: percentile(fresh, 0.99),
    newest_max_ms: fresh.length ? fresh[fresh.length - 1] : 0,
  };
};

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === 'start') {
    latencies = [];
    perClient = new Array(clients).fill(0);
    batch = new Map();
    passes = [];
    newest = [];
    windowStart = Date.now();
    measuring = true;
  } else if (line.trim() === 'stop') {
    measuring = false;
    print('summary', summary());
  }
});
lines.on('close', () => finish(0));

const started = Date.now();
const transports = {};
try {
  for (let next = 0; next < clients; next += CONNECTING) {
    const batch = [];
    for (let i = next; i < Math.min(next + CONNECTING, clients); i++) batch.push(open(i));
    for (const transport of await Promise.all(batch)) transports[transport] = (transports[transport] || 0) + 1;
  }
  print('ready', { clients, servers: serverIds.length, seconds: (Date.now() - started) / 1000, transports });
} catch (err) {
  print('failed', { message: err.message });
  finish(1);
}
