#!/usr/bin/env node
/**
 * The floor relay (issue #16): the least any verifying, storing pull-through mirror must do, as a
 * plain Node program for the bench to run beside hubcache — no express, no logging, no metrics, no
 * config, no store index. A reference, not a product: `npm run bench` times it against hubcache
 * and the direct pull in the same runs, so "hubcache ÷ floor" is our overhead and "floor ÷ direct"
 * is what 2 cores cost any mirror.
 *
 *   node bench/floor-relay.mjs <upstream url> <dir>     → prints "listening http://127.0.0.1:PORT"
 *
 * Blob GETs (`/v2/<name>/blobs/sha256:<hex>`, no Range) become one upstream GET per digest, shared by
 * every client that asks while it runs; each upstream chunk is hashed (sha256), written to a temp
 * file in <dir> (pwrite, on the event loop: no thread-pool hop) and written to every client that is
 * caught up, as it arrives; a client with more than LIVE_LIMIT queued catches up from the file
 * on 'drain'. The blob's last byte goes out only after the digest verified; then the file is
 * fsynced, renamed under its digest and the directory fsynced (the commit). Everything else
 * (/v2/, manifests, tokens are the client's own) is relayed as is, with the client's headers, so
 * skopeo and curl do their own token dance against the upstream.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';

const [upstreamArg, dir] = process.argv.slice(2);
if (!upstreamArg || !dir) throw new Error('usage: floor-relay.mjs <upstream url> <dir>');
const upstream = new URL(upstreamArg);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
/** Bytes queued on a client socket beyond which it stops getting live chunks and catches up from the file. */
const LIVE_LIMIT = 4 * 1024 * 1024;
/** A lagging client's reads from the file, this size. */
const READ_CHUNK = 256 * 1024;
const BLOB = /^\/v2\/.+\/blobs\/sha256:([0-9a-f]{64})$/;
const HOP = ['connection', 'keep-alive', 'transfer-encoding', 'host'];
fs.mkdirSync(join(dir, 'blobs'), { recursive: true });
const dirFd = fs.openSync(join(dir, 'blobs'), 'r');

/** @type {Map<string, Fill>} */
const fills = new Map();
let seq = 0;

function headersOf(h) {
  const out = { ...h };
  for (const k of HOP) delete out[k];
  return out;
}

function upstreamRequest(req, onResponse) {
  const up = http.request({ protocol: upstream.protocol, hostname: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...headersOf(req.headers), host: upstream.host }, agent }, onResponse);
  return up;
}

/** Anything but a blob GET: relayed as is. */
function forward(req, res) {
  const up = upstreamRequest(req, (ur) => {
    res.writeHead(ur.statusCode, headersOf(ur.headers));
    ur.pipe(res);
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
}

class Fill {
  constructor(key, hex) {
    this.key = key;
    this.hex = hex;
    this.tmp = join(dir, `tmp-${process.pid}-${seq++}`);
    this.fd = fs.openSync(this.tmp, 'w+');
    this.hash = createHash('sha256');
    this.received = 0;
    this.total = -1;
    this.verified = false;
    /** The latest upstream chunk (the last byte is released from it). */
    this.last = Buffer.alloc(0);
    /** Clients waiting for the upstream's headers: [req, res]. */
    this.waiting = [];
    /** @type {Array<{res: http.ServerResponse, pos: number, lagging: boolean}>} */
    this.clients = [];
    this.headers = undefined;
  }

  /** How far clients may be sent: everything but the last byte until the digest verified. */
  limit() {
    return this.verified ? this.total : Math.min(this.received, this.total - 1);
  }

  join(req, res) {
    if (!this.headers) return void this.waiting.push([req, res]);
    res.writeHead(200, this.headers);
    const c = { res, pos: 0, lagging: true };
    this.clients.push(c);
    res.on('close', () => {
      this.clients.splice(this.clients.indexOf(c), 1);
      this.maybeClose();
    });
    this.catchUp(c);
  }

  /** Sends `c` what it is missing up to limit(): from the latest chunk if it holds it, else from the file. */
  catchUp(c) {
    const limit = this.limit();
    const lastStart = this.received - this.last.length;
    while (c.pos < limit && c.res.writableLength < LIVE_LIMIT) {
      let piece;
      if (c.pos >= lastStart) piece = this.last.subarray(c.pos - lastStart, limit - lastStart);
      else {
        const n = Math.min(READ_CHUNK, lastStart - c.pos);
        piece = Buffer.allocUnsafe(n);
        const got = fs.readSync(this.fd, piece, 0, n, c.pos);
        piece = piece.subarray(0, got);
        if (got === 0) break;
      }
      c.res.write(piece);
      c.pos += piece.length;
    }
    if (c.pos === this.total) return void c.res.end();
    if (c.pos < limit) {
      c.lagging = true;
      c.res.once('drain', () => this.catchUp(c));
    } else c.lagging = false;
  }

  start(req) {
    const up = upstreamRequest(req, (ur) => {
      if (ur.statusCode !== 200) {
        // Not a body to store: the first client gets the upstream's answer, the others ask on their own.
        const [[, res], ...rest] = this.waiting;
        this.abort();
        res.writeHead(ur.statusCode, headersOf(ur.headers));
        ur.pipe(res);
        for (const [r, s] of rest) forward(r, s);
        return;
      }
      this.total = Number(ur.headers['content-length']);
      this.headers = { 'content-type': 'application/octet-stream', 'content-length': String(this.total), 'docker-content-digest': `sha256:${this.hex}` };
      for (const [r, s] of this.waiting.splice(0)) this.join(r, s);
      ur.on('data', (buf) => this.onData(buf));
      ur.on('end', () => this.onEnd());
      ur.on('error', () => this.fail());
    });
    up.on('error', () => this.fail());
    up.end();
  }

  onData(buf) {
    this.hash.update(buf);
    fs.writeSync(this.fd, buf, 0, buf.length, this.received);
    const start = this.received;
    this.received += buf.length;
    this.last = buf;
    const limit = this.limit();
    for (const c of this.clients) {
      if (c.lagging || c.pos !== start) continue;
      const end = Math.min(limit, this.received);
      if (end > c.pos) {
        c.res.write(buf.subarray(0, end - start));
        c.pos = end;
      }
      if (c.res.writableLength >= LIVE_LIMIT) {
        c.lagging = true;
        c.res.once('drain', () => this.catchUp(c));
      }
    }
  }

  onEnd() {
    if (this.received !== this.total || this.hash.digest('hex') !== this.hex) return this.fail();
    this.verified = true;
    fills.delete(this.key);
    for (const c of this.clients) if (!c.lagging) this.catchUp(c);
    // The commit: durable, then visible under its digest.
    fs.fsync(this.fd, (err) => {
      if (err) return fs.rm(this.tmp, () => {});
      fs.rename(this.tmp, join(dir, 'blobs', this.hex), (e) => {
        if (!e) fs.fsync(dirFd, () => {});
        this.committed = true;
        this.maybeClose();
      });
    });
  }

  /** The fd stays open while a client may still read from it (lagging clients catch up from the file). */
  maybeClose() {
    if (this.committed && this.clients.length === 0 && !this.closed) {
      this.closed = true;
      fs.close(this.fd, () => {});
    }
  }

  abort() {
    fills.delete(this.key);
    this.closed = true;
    fs.close(this.fd, () => fs.rm(this.tmp, () => {}));
  }

  fail() {
    this.abort();
    for (const c of this.clients) c.res.destroy();
    for (const [, s] of this.waiting) s.destroy();
  }
}

const server = http.createServer((req, res) => {
  const m = req.method === 'GET' && !req.headers.range ? BLOB.exec(req.url ?? '') : null;
  if (!m) return forward(req, res);
  const key = req.url;
  let fill = fills.get(key);
  if (!fill) {
    fill = new Fill(key, m[1]);
    fills.set(key, fill);
    fill.waiting.push([req, res]);
    fill.start(req);
  } else fill.join(req, res);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  agent.destroy();
  // Exit through process.exit so --cpu-prof writes its profile.
  setImmediate(() => process.exit(0));
});
