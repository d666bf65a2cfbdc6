// A socket.io-client v4 as the original VPS web UI uses it, for tests/tests/vps_socketio.rs.
// Connects (WebSocket first, then polling), subscribes to one server and prints every event as a
// JSON line on stdout. Exits on its own after LIMIT_S seconds, on connect_error, or on stdin EOF.
//
// Environment: SIO_MODULES (a dir whose node_modules has socket.io-client), URL (http://host:port),
// SIO_PATH (default /socket.io), TOKEN (optional: sent as auth.token), QUERY_TOKEN (optional:
// sent as ?token=), SERVER_ID (a number), LIMIT_S (default 60).
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.SIO_MODULES}/`);
const { io } = require('socket.io-client');

const print = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + '\n');
const limit = Number(process.env.LIMIT_S || 60);
const serverId = Number(process.env.SERVER_ID);
const options = {
  path: process.env.SIO_PATH || '/socket.io',
  transports: ['websocket', 'polling'],
  reconnection: false,
  timeout: 10000,
};
if (process.env.TOKEN) options.auth = { token: process.env.TOKEN };
if (process.env.QUERY_TOKEN) options.query = { token: process.env.QUERY_TOKEN };

const socket = io(process.env.URL, options);
const done = (code) => {
  socket.close();
  // Let stdout drain before leaving.
  setTimeout(() => process.exit(code), 50);
};
setTimeout(() => { print('timeout', limit); done(0); }, limit * 1000);
// The test ends us by closing stdin.
process.stdin.on('end', () => done(0));
process.stdin.resume();

socket.on('connect', () => {
  print('connect', { transport: socket.io.engine.transport.name });
  socket.emit('subscribe-server', serverId);
});
socket.on('connect_error', (err) => { print('connect_error', { message: err.message }); done(0); });
socket.on('disconnect', (reason) => print('disconnect', reason));
for (const event of ['server-stats', 'server-alerts', 'error']) {
  socket.on(event, (data) => print(event, data));
}
