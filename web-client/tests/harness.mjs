// E2E harness: starts real `parley serve` processes and a front server per homeserver that
// serves web-client/dist/ with the homeserver's CSP and forwards /_parley/* (HTTP and
// WebSocket) to it — until the homeserver serves dist/ itself, which is detected and then
// used directly.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DIST = path.join(WEB, 'dist');
export const PARLEY_BIN = path.resolve(WEB, process.env.PARLEY_BIN || '../target/debug/parley');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// As the homeserver's (homeserver/src/api/web_client.rs): image previews are data: URLs.
export const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss: http: https:; object-src 'none'; base-uri 'none'";

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts `count` homeservers on free loopback ports, server names `localhost:PORT`, each
 * configured to federate with the others over plain http on loopback. `configs[i]` is extra
 * TOML for server i (e.g. `[auth]\naccess_token_ttl_ms = 3000`). */
export async function startHomeservers(count, { log = false, configs = [] } = {}) {
  const ports = [];
  for (let i = 0; i < count; i += 1) ports.push(await freePort());
  const servers = [];
  try {
    for (const [i, port] of ports.entries()) {
      servers.push(await startHomeserver({ port, peers: ports, log, config: configs[i] || '' }));
    }
  } catch (err) {
    for (const s of servers) await s.stop().catch(() => {});
    throw err;
  }
  return servers;
}

/** Starts `parley serve` on `port` (default: a free one) with server name `localhost:PORT`.
 * `config`: extra TOML appended to the generated config. The result's `restart()` stops the
 * process and starts it again on the same port, config and data; `stop()` also deletes the
 * data. */
export async function startHomeserver({ port: wanted, peers = [], log = false, config: extra = '' } = {}) {
  if (!fs.existsSync(PARLEY_BIN)) throw new Error(`homeserver binary not found: ${PARLEY_BIN} (set PARLEY_BIN)`);
  const port = wanted || await freePort();
  const name = `localhost:${port}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-hs-'));
  const resolve = peers.map((p) => `"localhost:${p}" = "127.0.0.1:${p}"`).join(', ');
  const config = path.join(dataDir, 'parley.toml');
  fs.writeFileSync(config, [
    '[federation]',
    'allow_insecure_http = true',
    `resolve = { ${resolve} }`,
    '',
    extra,
    '',
  ].join('\n'));
  const hs = {
    url: null, name, dataDir, child: null,
    /** Stops the process (SIGTERM, then SIGKILL after 5 s); the data stays. */
    async kill() {
      const { child } = hs;
      if (child && child.exitCode === null && child.signalCode === null) {
        await new Promise((r) => {
          const t = setTimeout(() => { child.kill('SIGKILL'); }, 5000);
          child.on('exit', () => { clearTimeout(t); r(); });
          child.kill('SIGTERM');
        });
      }
    },
    /** Starts the process again: same port, config and data. */
    async restart() {
      await hs.kill();
      await launch();
    },
    async stop() {
      await hs.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  async function launch() {
    const child = spawn(PARLEY_BIN, ['serve', '--config', config, '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--server-name', name], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // The homeserver finds `web-client/dist` in its working directory first (no web_client_dir).
      cwd: path.resolve(WEB, '..'),
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    hs.child = child;
    let output = '';
    hs.url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`homeserver did not start:\n${output}`)), 30000);
      const onData = (d) => {
        output += d.toString();
        if (log) process.stderr.write(d);
        const m = /parley listening on (http:\/\/\S+)/.exec(output);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`homeserver exited (${code}):\n${output}`)); });
    });
    child.removeAllListeners('exit');
  }
  try {
    await launch();
  } catch (err) {
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  return hs;
}

async function servesWebClient(url) {
  try {
    const res = await fetch(`${url}/`);
    const text = await res.text();
    return res.ok && /text\/html/.test(res.headers.get('content-type') || '') && text.includes('app.js');
  } catch {
    return false;
  }
}

/** The origin the browser opens for a homeserver: the homeserver itself if it serves the web
 * client, else a front server (static dist/ + reverse proxy) on another port. */
/**
 * `count` homeservers (options as `startHomeservers`; `PARLEY_E2E_LOG=1` logs) and the
 * origins the browser opens for them; `stop()` ends the fronts, then the servers.
 */
export async function startWebHomeservers(count, opts = {}) {
  const servers = await startHomeservers(count, { log: process.env.PARLEY_E2E_LOG === '1', ...opts });
  const fronts = [];
  const stop = async () => {
    for (const f of fronts) await f.stop().catch(() => {});
    for (const s of servers) await s.stop().catch(() => {});
  };
  try {
    for (const hs of servers) fronts.push(await webOrigin(hs));
  } catch (err) {
    await stop();
    throw err;
  }
  return { servers, origins: fronts.map((f) => f.url), stop };
}

export async function webOrigin(hs) {
  if (process.env.PARLEY_E2E_FRONT !== '1' && await servesWebClient(hs.url)) return { url: hs.url, stop: async () => {} };
  return startFront(hs.url);
}

export async function startFront(homeserverUrl) {
  const target = new URL(homeserverUrl);
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/_parley/')) {
      const up = http.request({
        host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers,
      }, (pres) => {
        res.writeHead(pres.statusCode, pres.headers);
        pres.pipe(res);
      });
      up.on('error', () => { res.writeHead(502); res.end(); });
      req.pipe(up);
      return;
    }
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.normalize(path.join(DIST, rel === '/' ? 'index.html' : rel));
    if (!file.startsWith(DIST) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Content-Security-Policy': CSP,
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store',
    });
    fs.createReadStream(file).pipe(res);
  });
  server.on('upgrade', (req, socket, head) => {
    const up = net.connect(Number(target.port), target.hostname, () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${raw}\r\n`);
      if (head && head.length) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    const kill = () => { socket.destroy(); up.destroy(); };
    up.on('error', kill);
    socket.on('error', kill);
  });
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  const port = await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}
