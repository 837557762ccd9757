// children.js — simulated child edge devices for bench/nested/run: each device of DEVICES_FILE
// ([{id, key}]) logs in PER_DEVICE module identities ($edgeAgent, $edgeHub, m0, m1, ...) to the
// parent's hub over MQTT with SAS tokens signed with the keys derived from the device's key (as a
// child ledge derives them), subscribes to its twin's responses and desired patches, reads its
// twin and reports once. Then it prints {"ready": n} and waits IDLE_MS (the run script samples
// the hub's memory), then ROUNDS times writes one desired change to every identity's twin at once
// through the hub's control socket (PUT /devices/{d}/modules/{m}/twin/desired, as
// `ledge --device D deploy` does) and records, per identity, the time from the start of the round
// to its desired patch arriving: {"round", "n", "p50_ms", "p99_ms", "max_ms"} per round.
'use strict';
const crypto = require('crypto');
const http = require('http');
const mqtt = require('mqtt');

const [host, port, iothub, devicesFile, perDevice, controlSock, rounds, idleMs] = process.argv.slice(2);
const devices = JSON.parse(require('fs').readFileSync(devicesFile, 'utf8'));
const PER = Number(perDevice), ROUNDS = Number(rounds), IDLE = Number(idleMs);

function token(resource, keyB64) {
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sr = encodeURIComponent(resource);
  const sig = crypto.createHmac('sha256', Buffer.from(keyB64, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

const ids = [];
for (const d of devices) {
  for (let i = 0; i < PER; i++) {
    const m = i === 0 ? '$edgeAgent' : i === 1 ? '$edgeHub' : `m${i - 2}`;
    const key = crypto.createHmac('sha256', Buffer.from(d.key, 'base64')).update(m).digest('base64');
    ids.push({ device: d.id, module: m, key });
  }
}

function connect(id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtt://${host}:${port}`, {
      clientId: `${id.device}/${id.module}`,
      username: `${iothub}/${id.device}/${id.module}/?api-version=2021-04-12`,
      password: token(`${iothub}/devices/${id.device}/modules/${id.module}`, id.key),
      protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 30000,
    });
    id.client = c;
    id.waiters = new Map();
    c.on('message', (topic, payload) => {
      const now = process.hrtime.bigint();
      if (topic.startsWith('$iothub/twin/PATCH/properties/desired/')) {
        const p = JSON.parse(payload);
        if (p.round !== undefined && id.onRound) id.onRound(p.round, now);
      } else if (topic.startsWith('$iothub/twin/res/')) {
        const rid = /\$rid=([^&]+)/.exec(topic);
        const w = rid && id.waiters.get(rid[1]);
        if (w) { id.waiters.delete(rid[1]); w(); }
      }
    });
    c.once('error', reject);
    c.once('connect', () => {
      c.subscribe(['$iothub/twin/res/#', '$iothub/twin/PATCH/properties/desired/#', '$iothub/methods/POST/#'], { qos: 1 }, (err) => {
        if (err) return reject(err);
        // a reported patch (its twin is kept from then on); no GET: above this parent is a
        // broker that answers none, and a GET waits for the session's first sync
        const rep = new Promise((r) => id.waiters.set('r', r));
        c.publish('$iothub/twin/PATCH/properties/reported/?$rid=r', JSON.stringify({ up: true, module: id.module }));
        rep.then(resolve);
      });
    });
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
function putDesired(id, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({
      socketPath: controlSock, agent, method: 'PUT',
      path: `/devices/${encodeURIComponent(id.device)}/modules/${encodeURIComponent(id.module)}/twin/desired`,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
    }, (res) => { res.resume(); res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`PUT ${res.statusCode}`)))); });
    req.on('error', reject);
    req.end(data);
  });
}

function pct(sorted, p) { return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]; }

async function main() {
  // log in a device's identities together, the devices a few at a time (as children boot)
  for (let i = 0; i < ids.length; i += 20) await Promise.all(ids.slice(i, i + 20).map(connect));
  console.log(JSON.stringify({ ready: ids.length }));
  await new Promise((r) => setTimeout(r, IDLE));
  for (let r = 1; r <= ROUNDS; r++) {
    const got = [];
    const all = new Promise((resolve) => {
      for (const id of ids) {
        id.onRound = (round, now) => {
          if (round !== r) return;
          got.push(Number(now - t0) / 1e6);
          id.onRound = null;
          if (got.length === ids.length) resolve();
        };
      }
    });
    const t0 = process.hrtime.bigint();
    await Promise.all(ids.map((id) => putDesired(id, { round: r, settings: { interval: r, pad: 'x'.repeat(200) } })));
    await Promise.race([all, new Promise((r2) => setTimeout(r2, 30000))]);
    got.sort((a, b) => a - b);
    console.log(JSON.stringify({ round: r, n: got.length, p50_ms: +pct(got, 0.5).toFixed(2), p99_ms: +pct(got, 0.99).toFixed(2), max_ms: +got[got.length - 1].toFixed(2) }));
  }
  for (const id of ids) id.client.end(true);
  agent.destroy();
}
main().catch((e) => { console.error(e); process.exit(1); });
