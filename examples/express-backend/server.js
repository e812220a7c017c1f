'use strict';
// Express backend that tandem's end-to-end tests and examples run behind.
//
// It is deliberately a *real* Node.js/Express server (not a mock) so tandem is tested
// against the keep-alive, chunking and upgrade behaviour of the stack users run.
// Everything a test needs to observe or provoke is an endpoint; the run-time switches
// under /__control let a test make this instance slow, failing, hanging or unhealthy
// without restarting it. See README.md for the contract.

const crypto = require('crypto');
const http = require('http');
const express = require('express');
const { WebSocketServer } = require('ws');

const PORT = parseInt(process.env.PORT || '3001', 10);
const HOST = process.env.HOST || '127.0.0.1';
let NAME = process.env.NAME || '';

const MAX_BYTES = 1024 * 1024 * 1024; // 1 GiB cap for /bytes and /chunked
const MAX_DELAY_MS = 10 * 60 * 1000;
// Pattern: byte at offset i is (i % 251). 251 is prime, so a dropped, duplicated or
// reordered chunk of almost any size shows up as a mismatch. The buffer is a whole
// number of periods, so every chunk starts at phase 0.
const PATTERN_PERIOD = 251;
const PATTERN = Buffer.alloc(PATTERN_PERIOD * 261); // 65511 bytes, ~64 KiB chunks
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % PATTERN_PERIOD;

// Run-time switches (POST /__control). Defaults = healthy, normal behaviour.
const DEFAULT_SWITCHES = Object.freeze({
  health: 'ok', // "ok" | "fail" (503) | "hang" (probe never answered)
  status: null, // null | 200..599: every non-control request answers this status
  delay_ms: 0, // delay before every non-control response
  hang: false, // true: non-control requests are never answered
  drop: false, // true: non-control requests get their connection destroyed, no response
});
let switches = { ...DEFAULT_SWITCHES };
// in_flight / max_in_flight: data-plane requests being answered now / at most at once
// since the last reset (the queue tests check a per-server cap from this side).
const stats = { requests: 0, healthz: 0, in_flight: 0, max_in_flight: 0 };

const app = express();
app.disable('x-powered-by');
app.set('etag', false);

// ---- control plane: never subject to the switches, never counted -------------------

app.get('/__control', (req, res) => res.json(switches));

app.post('/__control', express.json({ limit: '16kb', strict: false, type: () => true }), (req, res) => {
  const body = req.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return res.status(400).json({ error: 'body must be a JSON object' });
  }
  const next = { ...switches };
  for (const [key, value] of Object.entries(body)) {
    switch (key) {
      case 'health':
        if (!['ok', 'fail', 'hang'].includes(value)) {
          return res.status(400).json({ error: 'health must be "ok", "fail" or "hang"' });
        }
        next.health = value;
        break;
      case 'status':
        if (value !== null && !(Number.isInteger(value) && value >= 200 && value <= 599)) {
          return res.status(400).json({ error: 'status must be null or an integer 200..599' });
        }
        next.status = value;
        break;
      case 'delay_ms':
        if (value === null) {
          next.delay_ms = 0;
        } else if (Number.isInteger(value) && value >= 0 && value <= MAX_DELAY_MS) {
          next.delay_ms = value;
        } else {
          return res.status(400).json({ error: `delay_ms must be an integer 0..${MAX_DELAY_MS}` });
        }
        break;
      case 'hang':
      case 'drop':
        if (typeof value !== 'boolean') {
          return res.status(400).json({ error: `${key} must be true or false` });
        }
        next[key] = value;
        break;
      default:
        return res.status(400).json({ error: `unknown switch "${key}"` });
    }
  }
  switches = next;
  console.log(`${NAME} switches ${JSON.stringify(switches)}`);
  res.json(switches);
});

app.delete('/__control', (req, res) => {
  switches = { ...DEFAULT_SWITCHES };
  res.json(switches);
});

app.get('/__stats', (req, res) => res.json(stats));

app.post('/__stats/reset', (req, res) => {
  stats.requests = 0;
  stats.healthz = 0;
  stats.max_in_flight = stats.in_flight;
  res.json(stats);
});

app.get('/healthz', (req, res) => {
  stats.healthz += 1;
  if (switches.health === 'hang') return; // held until the prober gives up
  if (switches.health === 'fail') return res.status(503).type('text/plain').send('fail\n');
  res.type('text/plain').send('ok\n');
});

// ---- data plane: everything below is counted and obeys the switches ----------------

// Applies drop / hang / delay / status, in that order. Returns false when the request
// has been taken over (dropped, held or answered) and must not reach its handler.
function applySwitches(req, res, next) {
  stats.requests += 1;
  stats.in_flight += 1;
  stats.max_in_flight = Math.max(stats.max_in_flight, stats.in_flight);
  res.on('close', () => {
    stats.in_flight -= 1;
  });
  const s = switches; // one consistent view for this request
  if (s.drop) {
    req.socket.destroy();
    return;
  }
  if (s.hang) return; // never answered; the socket stays open until the client leaves
  const proceed = () => {
    if (s.status !== null) {
      res.status(s.status).type('text/plain').send(`forced status ${s.status} by ${NAME}\n`);
      return;
    }
    next();
  };
  if (s.delay_ms > 0) {
    const timer = setTimeout(proceed, s.delay_ms);
    res.on('close', () => clearTimeout(timer));
  } else {
    proceed();
  }
}
app.use(applySwitches);

// Reads the request body as a stream, calling onChunk for every chunk.
function readBody(req, onChunk, onEnd) {
  let bytes = 0;
  req.on('data', (chunk) => {
    bytes += chunk.length;
    onChunk(chunk);
  });
  req.on('end', () => onEnd(bytes));
  req.on('error', () => {}); // client aborted; nothing to answer
}

app.all(['/echo', '/echo/*'], (req, res) => {
  readBody(req, () => {}, (bodyBytes) => {
    res.json({
      instance: NAME,
      method: req.method,
      url: req.originalUrl,
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyBytes,
      // Trailer fields of a chunked upload (empty object without any).
      trailers: req.trailers,
      remoteAddress: req.socket.remoteAddress,
      remotePort: req.socket.remotePort,
      // HTTPS only (TLS_CERT): whether this connection resumed an earlier TLS session.
      tlsSessionReused: typeof req.socket.isSessionReused === 'function' ? req.socket.isSessionReused() : null,
    });
  });
});

app.post('/upload', (req, res) => {
  const hash = crypto.createHash('sha256');
  readBody(req, (chunk) => hash.update(chunk), (bytes) => {
    res.json({ instance: NAME, bytes, sha256: hash.digest('hex') });
  });
});

function parseSize(req, res) {
  const n = Number(req.params.n);
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_BYTES) {
    res.status(400).type('text/plain').send(`n must be an integer 0..${MAX_BYTES}\n`);
    return null;
  }
  return n;
}

// Streams n pattern bytes honouring backpressure, so a 1 GiB body never sits in memory.
function streamPattern(res, n) {
  let left = n;
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  const pump = () => {
    while (left > 0 && !closed) {
      const size = Math.min(left, PATTERN.length);
      left -= size;
      const chunk = size === PATTERN.length ? PATTERN : PATTERN.subarray(0, size);
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
    if (!closed) res.end();
  };
  pump();
}

app.get('/bytes/:n', (req, res) => {
  const n = parseSize(req, res);
  if (n === null) return;
  res.status(200);
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Content-Length', String(n));
  streamPattern(res, n);
});

app.get('/chunked/:n', (req, res) => {
  const n = parseSize(req, res);
  if (n === null) return;
  res.status(200);
  res.setHeader('Content-Type', 'application/octet-stream');
  // No Content-Length: Node frames an HTTP/1.1 response with Transfer-Encoding: chunked.
  streamPattern(res, n);
});

app.get('/delay/:ms', (req, res) => {
  const ms = Number(req.params.ms);
  if (!Number.isInteger(ms) || ms < 0 || ms > MAX_DELAY_MS) {
    return res.status(400).type('text/plain').send(`ms must be an integer 0..${MAX_DELAY_MS}\n`);
  }
  const timer = setTimeout(() => res.json({ instance: NAME, delayed_ms: ms }), ms);
  res.on('close', () => clearTimeout(timer));
});

app.all('/status/:code', (req, res) => {
  const code = Number(req.params.code);
  if (!Number.isInteger(code) || code < 200 || code > 599) {
    return res.status(400).type('text/plain').send('code must be an integer 200..599\n');
  }
  res.status(code).type('text/plain').send(`status ${code} from ${NAME}\n`);
});

// A server that stalls mid-body: the head (announcing n + 1,000,000 bytes) and n
// pattern bytes, then nothing until the client leaves.
app.get('/stall/:n', (req, res) => {
  const n = parseSize(req, res);
  if (n === null) return;
  res.status(200);
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Content-Length', String(n + 1000000));
  res.write(PATTERN.subarray(0, Math.min(n, PATTERN.length)));
});

// A slow but progressing body: `count` chunks of 100 bytes, one every `ms`
// milliseconds (chunked framing), then the end.
app.get('/trickle/:count/:ms', (req, res) => {
  const count = Number(req.params.count);
  const ms = Number(req.params.ms);
  if (!Number.isInteger(count) || count < 0 || count > 10000 || !Number.isInteger(ms) || ms < 0 || ms > 60000) {
    return res.status(400).type('text/plain').send('count must be 0..10000 and ms 0..60000\n');
  }
  res.status(200);
  res.setHeader('Content-Type', 'application/octet-stream');
  let left = count;
  const tick = () => {
    if (left === 0) return res.end();
    left -= 1;
    res.write(PATTERN.subarray(0, 100));
    timer = setTimeout(tick, ms);
  };
  let timer = setTimeout(tick, 0);
  res.on('close', () => clearTimeout(timer));
});

// Everything else (including GET /) says which instance answered: enough for balancing
// and routing tests that only need to know where a request landed.
app.all('*', (req, res) => {
  res.json({ instance: NAME, pid: process.pid, path: req.path });
});

// Malformed /__control JSON (and any other handler error) gets a short JSON answer
// instead of Express's HTML stack trace.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  res.status(err.status || err.statusCode || 500).json({ error: err.message });
});

// ---- server, WebSocket, lifecycle ---------------------------------------------------

// TLS_CERT + TLS_KEY (PEM files): serve HTTPS instead of HTTP (tandem's TLS to
// servers); TLS_CLIENT_CA in addition: require a client certificate signed by it.
const fs = require('fs');
const https = require('https');
function createServer() {
  if (!process.env.TLS_CERT) return http.createServer(app);
  const options = {
    cert: fs.readFileSync(process.env.TLS_CERT),
    key: fs.readFileSync(process.env.TLS_KEY),
  };
  if (process.env.TLS_CLIENT_CA) {
    options.ca = fs.readFileSync(process.env.TLS_CLIENT_CA);
    options.requestCert = true;
    options.rejectUnauthorized = true;
  }
  return https.createServer(options, app);
}
const server = createServer();
// Node's default, set explicitly: tandem's pool idle timeout must stay below it.
server.keepAliveTimeout = 5000;
// Large slow uploads and held requests must not be cut by Node's 300 s request timeout.
server.requestTimeout = 0;

const wss = new WebSocketServer({ noServer: true });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

// Upgrade sockets leave the HTTP server's bookkeeping, so closeAllConnections() would
// miss the ones still pending (hang, delay); they are tracked here for shutdown.
const upgradeSockets = new Set();

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  upgradeSockets.add(socket);
  socket.on('close', () => upgradeSockets.delete(socket));
  const path = (req.url || '').split('?')[0];
  if (path !== '/ws') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  stats.requests += 1;
  const s = switches;
  if (s.drop) return socket.destroy();
  if (s.hang) return;
  const proceed = () => {
    if (socket.destroyed) return;
    if (s.status !== null) {
      const body = `forced status ${s.status} by ${NAME}\n`;
      socket.end(
        `HTTP/1.1 ${s.status} ${http.STATUS_CODES[s.status] || 'Status'}\r\n` +
          `Content-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  };
  if (s.delay_ms > 0) setTimeout(proceed, s.delay_ms);
  else proceed();
});

server.on('error', (err) => {
  console.error(`${NAME || 'server'}: ${err.message}`);
  process.exit(1);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  if (!NAME) NAME = `app-${port}`;
  // Tests wait for this exact line (PORT=0 prints the port the OS picked).
  console.log(`listening ${NAME} on ${HOST}:${port}`);
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`${NAME} ${signal}: stopping`);
  for (const ws of wss.clients) ws.terminate();
  for (const socket of upgradeSockets) socket.destroy();
  server.close(() => process.exit(0));
  // Idle keep-alive and held (hang) connections would keep close() waiting.
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
