#!/usr/bin/env node
// fanout.js — the load client of bench/identities/run: connects N identities (module identities
// and leaf devices, as a parent hub sees its children's) to ledge-hub over MQTT/TLS with SAS
// tokens, each subscribed to its desired-property patches, and measures twin fan-out: for each
// wave, every identity's desired properties are patched at once — through the IoT Hub stand-in's
// control API (the cloud above the parent) or through the hub's own control socket (the top of an
// air-gapped hierarchy, `ledge twin set`) — and each identity's latency is the time from its
// PATCH request being sent to the patch arriving at the identity. One JSON line per event on
// stdout; progress on stderr.
//
// Usage: fanout.js SPEC.json, where SPEC is
//   {"hub": {"host", "port", "ca"}, "hubName", "deviceId",
//    "identities": [{"kind": "module"|"device", "id", "key"}],
//    "cloud": "http://127.0.0.1:PORT" (the stand-in's control API),
//    "control": "/path/to/hub/control.sock", "waves": N, "concurrency": C}
// Reads commands on stdin, one per line: "connect", "fanout cloud WAVE", "fanout local WAVE",
// "quit"; answers each with a JSON line {"done": COMMAND, ...}.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const readline = require('readline');
const mqtt = require('mqtt');

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const ca = fs.readFileSync(spec.hub.ca);

function sas(resource, key, ttlSec) {
  const se = Math.floor(Date.now() / 1000) + ttlSec;
  const sr = encodeURIComponent(resource);
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

const ids = spec.identities.map((s) => {
  const mod = s.kind === 'module';
  const dev = mod ? spec.deviceId : s.id;
  return {
    ...s,
    clientId: mod ? `${dev}/${s.id}` : dev,
    username: mod ? `${spec.hubName}/${dev}/${s.id}/?api-version=2021-04-12` : `${spec.hubName}/${dev}/?api-version=2021-04-12`,
    resource: mod ? `${spec.hubName}/devices/${dev}/modules/${s.id}` : `${spec.hubName}/devices/${dev}`,
    cloudPath: mod ? `/twins/${encodeURIComponent(dev)}/modules/${encodeURIComponent(s.id)}` : `/twins/${encodeURIComponent(dev)}`,
    localPath: mod ? `/twins/${encodeURIComponent(s.id)}/desired` : `/devices/${encodeURIComponent(dev)}/twin/desired`,
    client: null,
    waiting: new Map(), // wave -> sent time (ns)
  };
});

function connectOne(id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({
      host: spec.hub.host, port: spec.hub.port, protocol: 'mqtts', ca, servername: 'localhost',
      clientId: id.clientId, username: id.username, password: sas(id.resource, id.key, 86400),
      protocolVersion: 4, clean: false, keepalive: 300, reconnectPeriod: 0, connectTimeout: 60000,
    });
    id.client = c;
    c.once('error', reject);
    c.on('message', (topic, payload) => {
      if (!topic.startsWith('$iothub/twin/PATCH/properties/desired/')) return;
      const now = process.hrtime.bigint();
      let wave;
      try { wave = JSON.parse(payload.toString()).wave; } catch (e) { return; }
      const t0 = id.waiting.get(wave);
      if (t0 === undefined) return;
      id.waiting.delete(wave);
      out({ ev: 'patch', id: id.id, kind: id.kind, wave, ms: Number(now - t0) / 1e6 });
      if (--pending === 0 && waveDone) { const f = waveDone; waveDone = null; f(); }
    });
    c.once('connect', () => {
      c.subscribe({ '$iothub/twin/PATCH/properties/desired/#': { qos: 0 }, '$iothub/twin/res/#': { qos: 0 } }, (err) => {
        if (err) reject(err); else resolve();
      });
    });
  });
}

async function pool(items, n, fn) {
  let i = 0;
  const workers = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) { const it = items[i++]; await fn(it); }
  });
  await Promise.all(workers);
}

function request(opts, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...opts, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => (res.statusCode < 300 ? resolve(data) : reject(new Error(`${opts.path}: HTTP ${res.statusCode} ${data}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const cloud = spec.cloud ? new URL(spec.cloud) : null;
const agent = new http.Agent({ keepAlive: true, maxSockets: spec.concurrency || 16 });
function patch(where, id, wave) {
  if (where === 'cloud') {
    return request({ host: cloud.hostname, port: cloud.port, method: 'PATCH', path: id.cloudPath, agent },
      JSON.stringify({ properties: { desired: { wave } } }));
  }
  return request({ socketPath: spec.control, method: 'PATCH', path: id.localPath }, JSON.stringify({ wave }));
}

let waveDone = null;
let pending = 0; // identities of the current wave whose patch has not arrived

async function fanout(where, wave) {
  const t0 = process.hrtime.bigint();
  pending = ids.length;
  const finished = new Promise((resolve) => { waveDone = resolve; });
  // in a random order, so that no identity is always first
  const order = ids.slice().sort(() => Math.random() - 0.5);
  await pool(order, spec.concurrency || 16, async (id) => {
    id.waiting.set(wave, process.hrtime.bigint());
    await patch(where, id, wave);
  });
  const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 60000));
  const r = await Promise.race([finished, timeout]);
  const missing = ids.filter((id) => id.waiting.has(wave)).map((id) => id.id);
  for (const id of ids) id.waiting.delete(wave);
  return { wallMs: Number(process.hrtime.bigint() - t0) / 1e6, missing, timedOut: r === 'timeout' };
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, where, wave] = line.trim().split(/\s+/);
    try {
      if (cmd === 'connect') {
        const t0 = Date.now();
        await pool(ids, spec.concurrency || 16, connectOne);
        out({ done: 'connect', ms: Date.now() - t0, n: ids.length });
      } else if (cmd === 'fanout') {
        out({ done: 'fanout', where, wave: Number(wave), ...(await fanout(where, Number(wave))) });
      } else if (cmd === 'quit') {
        break;
      }
    } catch (err) {
      out({ done: cmd, error: String(err && err.message || err) });
    }
  }
  await Promise.all(ids.map((id) => id.client && new Promise((r) => id.client.end(false, {}, r))));
  agent.destroy();
  process.exit(0);
}

main().catch((err) => { process.stderr.write(`fanout: ${err.stack || err}\n`); process.exit(1); });
