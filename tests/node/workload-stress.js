// workload-stress.js — load and abuse for a workload API socket, run on the host by
// tests/system/workload.sh (plain node, no packages):
//   load SOCKET MODULE GENERATION COUNT [CONCURRENCY]
//       COUNT requests, a fixed mix of good and bad ones (each with the status it must get),
//       over keep-alive and fresh connections, some abandoned half-sent; prints a JSON summary
//       and exits 1 if any reply had another status.
//   flood SOCKET IDLE SLOW SECONDS
//       SLOW connections that send a request one byte every 500 ms, then IDLE connections that
//       send nothing, all held for SECONDS; prints a JSON line when all are open ("ready") and
//       one at the end: how many the server refused (503), answered 408, or closed.
'use strict';
const http = require('http');
const net = require('net');

const API = 'api-version=2019-01-30';

function requestMix(mod, gen) {
  const sign = `/modules/${mod}/genid/${gen}/sign?${API}`;
  const good = JSON.stringify({ keyId: 'primary', algo: 'HMACSHA256', data: 'aGVsbG8=' });
  return [
    { name: 'trust-bundle', method: 'GET', path: `/trust-bundle?${API}`, status: 200 },
    { name: 'sign', method: 'POST', path: sign, body: good, status: 200 },
    { name: 'sign-close', method: 'POST', path: sign, body: good, status: 200, close: true },
    { name: 'malformed-json', method: 'POST', path: sign, body: '{"keyId": "primary",', status: 400 },
    { name: 'not-an-object', method: 'POST', path: sign, body: '[1,2]', status: 400 },
    { name: 'missing-field', method: 'POST', path: sign, body: '{"keyId":"primary","algo":"HMACSHA256"}', status: 400 },
    { name: 'bad-base64', method: 'POST', path: sign, body: '{"keyId":"primary","algo":"HMACSHA256","data":"***"}', status: 400 },
    { name: 'unknown-api-version', method: 'GET', path: '/trust-bundle?api-version=1999-01-01', status: 400 },
    { name: 'missing-api-version', method: 'GET', path: '/trust-bundle', status: 400 },
    { name: 'other-module', method: 'POST', path: `/modules/not${mod}/genid/${gen}/sign?${API}`, body: good, status: 403 },
    { name: 'other-generation', method: 'POST', path: `/modules/${mod}/genid/0${gen}/sign?${API}`, body: good, status: 404 },
    { name: 'unknown-path', method: 'GET', path: `/nope?${API}`, status: 404 },
    { name: 'wrong-method', method: 'DELETE', path: `/trust-bundle?${API}`, status: 405 },
    // Expect: 100-continue, so the body is sent only if the server asks for it: ledged answers
    // 413 from the headers and closes, and a client still writing the body would get EPIPE
    // instead of the reply (http_server.c closes without draining what the client sends).
    { name: 'too-large', method: 'POST', path: sign, body: 'x'.repeat(70 * 1024), status: 413, expect: true },
    { name: 'encrypt', method: 'POST', path: `/modules/${mod}/genid/${gen}/encrypt?${API}`, body: '{"plaintext":"aGVsbG8=","initializationVector":"aXY="}', status: 200 },
    { name: 'server-cert', method: 'POST', path: `/modules/${mod}/genid/${gen}/certificate/server?${API}`, body: '{"commonName":"stress.local"}', status: 201, weight: 1 },
    { name: 'abandoned', raw: `POST ${sign} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"keyId"`, status: 0, weight: 2 },
    { name: 'garbage', raw: 'HELLO\r\n\r\n', status: 400, weight: 2 },
  ];
}

// The run cycles through a fixed schedule: every kind `weight` times per cycle (default 3).
function schedule(mix) {
  const slots = [];
  for (let round = 0; round < 3; round++)
    for (const m of mix) if (round < (m.weight || 3)) slots.push(m);
  return slots;
}

function httpCall(socketPath, agent, m) {
  return new Promise((resolve) => {
    const headers = { 'Content-Type': 'application/json' };
    if (m.close) headers.Connection = 'close';
    if (m.expect) {
      headers.Expect = '100-continue';
      headers['Content-Length'] = Buffer.byteLength(m.body);
    }
    const req = http.request({ socketPath, agent, method: m.method, path: m.path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', (err) => resolve({ status: -1, body: String(err) }));
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    if (m.expect) {
      req.on('continue', () => req.end(m.body));
      req.flushHeaders();
    } else {
      req.end(m.body);
    }
  });
}

// A raw exchange: write, then read until the server closes; status from the reply line (0: none).
// An "abandoned" request is cut off by us after a short wait.
function rawCall(socketPath, m) {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    let data = '';
    s.setEncoding('latin1');
    s.on('connect', () => s.write(m.raw));
    s.on('data', (d) => (data += d));
    const done = () => {
      const r = /^HTTP\/1\.1 (\d{3})/.exec(data);
      resolve({ status: r ? Number(r[1]) : 0, body: data.slice(0, 200) });
    };
    s.on('close', done);
    s.on('error', () => {});
    if (m.status === 0) setTimeout(() => s.destroy(), 5);
    s.setTimeout(10000, () => s.destroy());
  });
}

async function load(socketPath, mod, gen, count, concurrency) {
  const slots = schedule(requestMix(mod, gen));
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const byName = {};
  const unexpected = [];
  let next = 0;
  const t0 = Date.now();
  async function worker() {
    while (next < count) {
      const i = next++;
      const m = slots[i % slots.length];
      const r = m.raw ? await rawCall(socketPath, m) : await httpCall(socketPath, agent, m);
      const k = byName[m.name] || (byName[m.name] = { n: 0, status: m.status });
      k.n++;
      if (r.status !== m.status && unexpected.length < 10)
        unexpected.push({ i, name: m.name, want: m.status, got: r.status, body: r.body.slice(0, 200) });
      else if (r.status !== m.status) unexpected.push(null);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  const summary = { requests: count, seconds: (Date.now() - t0) / 1000, kinds: byName, unexpected: unexpected.length, first: unexpected.filter(Boolean) };
  process.stdout.write(JSON.stringify(summary) + '\n');
  return unexpected.length === 0;
}

function flood(socketPath, nIdle, nSlow, seconds) {
  return new Promise((resolve) => {
    const stats = { idle: nIdle, slow: nSlow, refused503: 0, answered408: 0, closedByServer: 0, errors: 0 };
    const conns = [];
    const until = Date.now() + seconds * 1000;
    function open(slow) {
      return new Promise((opened) => {
        const s = net.connect(socketPath);
        const c = { s, data: '', closed: false };
        conns.push(c);
        s.setEncoding('latin1');
        s.on('connect', () => {
          if (slow) {
            const req = `POST /trust-bundle?${API} HTTP/1.1\r\nHost: x\r\nX-Slow: ${'y'.repeat(4000)}\r\n\r\n`;
            let pos = 0;
            c.timer = setInterval(() => {
              if (pos < req.length && !c.closed) s.write(req[pos++]);
            }, 500);
          }
          opened();
        });
        s.on('data', (d) => (c.data += d));
        s.on('error', () => stats.errors++);
        s.on('close', () => {
          c.closed = true;
          clearInterval(c.timer);
          if (Date.now() >= until) return;
          if (/^HTTP\/1\.1 503/.test(c.data)) stats.refused503++;
          else if (/^HTTP\/1\.1 408/.test(c.data)) stats.answered408++;
          else stats.closedByServer++;
        });
      });
    }
    (async () => {
      for (let i = 0; i < nSlow; i++) await open(true);
      for (let i = 0; i < nIdle; i++) await open(false);
      // Let the 503 replies to the refused ones arrive before saying how many are still held.
      setTimeout(() => {
        const held = conns.filter((c) => !c.closed).length;
        process.stdout.write(JSON.stringify({ event: 'ready', held, ...stats }) + '\n');
      }, 300);
      setTimeout(() => {
        const held = conns.filter((c) => !c.closed).length;
        for (const c of conns) {
          clearInterval(c.timer);
          c.s.destroy();
        }
        process.stdout.write(JSON.stringify({ event: 'done', heldAtEnd: held, ...stats }) + '\n');
        resolve(true);
      }, seconds * 1000);
    })();
  });
}

async function main() {
  const [cmd, ...a] = process.argv.slice(2);
  let ok;
  if (cmd === 'load' && a.length >= 4) ok = await load(a[0], a[1], a[2], Number(a[3]), Number(a[4] || 8));
  else if (cmd === 'flood' && a.length === 4) ok = await flood(a[0], Number(a[1]), Number(a[2]), Number(a[3]));
  else {
    console.error('usage: workload-stress.js load SOCKET MODULE GENERATION COUNT [CONCURRENCY]\n' +
                  '       workload-stress.js flood SOCKET IDLE SLOW SECONDS');
    process.exit(2);
  }
  process.exit(ok ? 0 : 1);
}

main();
