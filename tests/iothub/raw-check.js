// raw-check.js — the stand-in's MQTT behaviour where the SDK does not reach: CONNACK codes,
// token expiry, what IoT Hub refuses (QoS 2, foreign topics, unsupported
// subscriptions), retain and Will messages, C2D redelivery with DUP to a reconnecting
// persistent session, keep-alive, and the control API's refuse/hold settings. MQTT.js and
// mqtt-packet as plain MQTT clients. Same output and environment as sdk-check.js.
'use strict';
const fs = require('node:fs');
const tls = require('node:tls');
const assert = require('node:assert/strict');
const mqtt = require('mqtt');
const packet = require('mqtt-packet');

const CONTROL = process.env.IOTHUB_CONTROL;
const PORT = Number(process.env.IOTHUB_MQTTS_PORT);
const CA = fs.readFileSync(process.env.IOTHUB_CA, 'utf8');
let HUB;
const D = 'raw-device';
const OTHER = 'raw-other';

async function api(method, path, body, expect = [200, 204]) {
  const r = await fetch(CONTROL + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const json = text && (r.headers.get('content-type') || '').startsWith('application/json') ? JSON.parse(text) : text;
  if (!expect.includes(r.status)) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
  return json;
}
const get = (path) => api('GET', path);

async function token(deviceId, ttlSeconds) {
  return (await api('POST', '/tokens', { deviceId, ttlSeconds })).token;
}

// connect(opts) -> {client, connack} or {error, code}; never reconnects.
function connect(opts) {
  return new Promise((resolve) => {
    const c = mqtt.connect({
      host: '127.0.0.1', port: PORT, protocol: 'mqtts', ca: CA, servername: 'localhost',
      protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, clean: false, keepalive: 60,
      ...opts,
    });
    c.on('connect', (connack) => resolve({ client: c, connack }));
    c.on('error', (e) => {
      c.end(true);
      resolve({ error: e, code: e.code });
    });
  });
}

function user(clientId) {
  return `${HUB}/${clientId}/?api-version=2021-04-12`;
}

async function deviceOpts(deviceId = D, extra = {}) {
  return { clientId: deviceId, username: user(deviceId), password: await token(deviceId, 600), ...extra };
}

function closed(client, ms = 5000) {
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve();
    const t = setTimeout(() => reject(new Error('the stand-in did not close the connection')), ms);
    client.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

// subscribe(client, {filter: qos}) -> the granted list (MQTT.js wants {filter: {qos}})
function subscribe(c, filters) {
  const subs = Object.fromEntries(Object.entries(filters).map(([f, qos]) => [f, { qos }]));
  return new Promise((resolve, reject) => c.subscribe(subs, (e, granted) => (e ? reject(e) : resolve(granted))));
}

async function lastEventSeq() {
  return (await get('/events?type=none')).next;
}
async function events(since, type, deviceId, min = 1) {
  return (await get(`/events?since=${since}&type=${type}&deviceId=${encodeURIComponent(deviceId)}&wait=10&min=${min}`)).events;
}

const steps = [];
const step = (name, fn) => steps.push({ name, fn });

step('setup', async () => {
  HUB = (await get('/health')).hubName;
  await api('PUT', `/devices/${D}`, {});
  await api('PUT', `/devices/${OTHER}`, {});
});

step('CONNACK 1 for MQTT 3.1, 2 for a bad client id, 4 for a user name of another client', async () => {
  let r = await connect({ ...(await deviceOpts()), protocolVersion: 3, protocolId: 'MQIsdp' });
  assert.equal(r.code, 1);
  r = await connect({ ...(await deviceOpts()), clientId: 'a/b/c' });
  assert.equal(r.code, 2);
  r = await connect({ ...(await deviceOpts()), username: user(OTHER) });
  assert.equal(r.code, 4);
});

step('CONNACK 5: unknown device, token of another device, expired token, no credentials, another hub', async () => {
  let r = await connect({ clientId: 'nobody', username: user('nobody'), password: await token(D, 600) });
  assert.equal(r.code, 5);
  r = await connect({ ...(await deviceOpts()), password: await token(OTHER, 600) });
  assert.equal(r.code, 5);
  r = await connect({ ...(await deviceOpts()), password: await token(D, -5) });
  assert.equal(r.code, 5);
  r = await connect({ clientId: D, username: user(D) });
  assert.equal(r.code, 5);
  r = await connect({ ...(await deviceOpts()), username: `other-hub.example.net/${D}/?api-version=2021-04-12` });
  assert.equal(r.code, 5);
  const ev = (await get(`/events?type=refused&deviceId=${D}`)).events.map((e) => e.reason);
  assert.ok(ev.some((x) => /expired/.test(x)), `refusals: ${ev}`);
  assert.ok(ev.some((x) => /audience/.test(x)), `refusals: ${ev}`);
});

step('the connection ends when its SAS token expires', async () => {
  const since = await lastEventSeq();
  const { client } = await connect({ clientId: D, username: user(D), password: await token(D, 2) });
  assert.ok(client, 'connected');
  await closed(client, 5000);
  const ev = await events(since, 'disconnect', D);
  assert.equal(ev[0].reason, 'token-expired');
});

step('IoT Hub closes the connection on QoS 2, on a foreign topic and on an unsupported topic', async () => {
  for (const [topic, qos] of [[`devices/${D}/messages/events/`, 2], [`devices/${OTHER}/messages/events/`, 1], ['some/topic', 0]]) {
    const { client } = await connect(await deviceOpts());
    client.publish(topic, 'x', { qos });
    await closed(client);
  }
});

step('subscriptions: the supported filters granted (QoS 2 as 1), others refused (0x80)', async () => {
  const { client } = await connect(await deviceOpts(D, { clean: true }));
  const g = await subscribe(client, {
    [`devices/${D}/messages/devicebound/#`]: 2,
    '$iothub/twin/res/#': 0,
    '$iothub/methods/POST/#': 1,
    [`devices/${OTHER}/messages/devicebound/#`]: 1,
    '#': 0,
  });
  assert.deepEqual(g.map((x) => x.qos), [1, 0, 1, 128, 128]);
  client.end(true);
});

step('retain and Will: mqtt-retain and iothub-MessageType=Will on the telemetry', async () => {
  const since = (await get(`/telemetry?deviceId=${D}`)).next;
  const { client } = await connect(await deviceOpts(D, {
    will: { topic: `devices/${D}/messages/events/cause=gone`, payload: 'bye', qos: 1, retain: false },
  }));
  await new Promise((res) => client.publish(`devices/${D}/messages/events/`, 'kept', { qos: 1, retain: true }, res));
  client.stream.destroy(); // no DISCONNECT: the Will goes out
  const t = (await get(`/telemetry?deviceId=${D}&since=${since}&wait=5&min=2`)).messages;
  assert.equal(t.length, 2);
  assert.equal(t[0].properties['mqtt-retain'], 'true');
  assert.equal(t[1].body, 'bye');
  assert.deepEqual(t[1].properties, { cause: 'gone', 'iothub-MessageType': 'Will' });
});

// A bare MQTT 3.1.1 client on mqtt-packet, for what MQTT.js decides by itself (it acknowledges
// every QoS 1 message at once): packets() lists what arrived, next(pred) waits for one.
async function bareClient(connect) {
  const sock = tls.connect({ host: '127.0.0.1', port: PORT, ca: CA, servername: 'localhost' });
  await new Promise((res, rej) => { sock.once('secureConnect', res); sock.once('error', rej); });
  const parser = packet.parser({ protocolVersion: 4 });
  const got = [];
  parser.on('packet', (p) => got.push(p));
  sock.on('data', (d) => parser.parse(d));
  sock.on('error', () => {});
  const c = {
    got,
    closed: new Promise((res) => sock.once('close', res)),
    send: (p) => sock.write(packet.generate(p, { protocolVersion: 4 })),
    destroy: () => sock.destroy(),
    async next(what, pred) {
      const end = Date.now() + 10000;
      for (;;) {
        const p = got.find(pred);
        if (p) return p;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    },
  };
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, keepalive: 60, ...connect });
  return c;
}

step('C2D not acknowledged: redelivered with DUP to the resumed session, anew to a clean one', async () => {
  await api('DELETE', `/devices/${D}/messages/devicebound`);
  const creds = async () => ({ clientId: D, username: user(D), password: Buffer.from(await token(D, 600)) });
  const sub = { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `devices/${D}/messages/devicebound/#`, qos: 1 }] };
  let c = await bareClient({ ...(await creds()), clean: true }); // no session left from before
  await c.next('CONNACK', (p) => p.cmd === 'connack');
  c.destroy();
  c = await bareClient({ ...(await creds()), clean: false });
  await c.next('CONNACK', (p) => p.cmd === 'connack');
  c.send(sub);
  await c.next('SUBACK', (p) => p.cmd === 'suback');
  await api('POST', `/devices/${D}/messages/devicebound`, { body: 'once', messageId: 'redo' });
  const first = await c.next('the first delivery', (p) => p.cmd === 'publish');
  assert.equal(first.dup, false);
  assert.equal(first.qos, 1);
  assert.equal(first.payload.toString(), 'once');
  assert.equal((await get(`/devices/${D}/messages/devicebound`)).messages[0].state, 'invisible');
  c.destroy(); // no PUBACK
  await c.closed;
  // resumed: session present, the same packet id with DUP, without a new SUBSCRIBE
  c = await bareClient({ ...(await creds()), clean: false });
  const ack = await c.next('CONNACK', (p) => p.cmd === 'connack');
  assert.equal(ack.sessionPresent, true);
  const again = await c.next('the redelivery', (p) => p.cmd === 'publish');
  assert.equal(again.dup, true);
  assert.equal(again.messageId, first.messageId);
  c.destroy();
  await c.closed;
  // a clean session gets it only after subscribing, as a new delivery
  c = await bareClient({ ...(await creds()), clean: true });
  assert.equal((await c.next('CONNACK', (p) => p.cmd === 'connack')).sessionPresent, false);
  await new Promise((res) => setTimeout(res, 300));
  assert.ok(!c.got.some((p) => p.cmd === 'publish'), 'nothing before SUBSCRIBE');
  c.send(sub);
  const fresh = await c.next('the delivery to the clean session', (p) => p.cmd === 'publish');
  assert.equal(fresh.dup, false);
  c.send({ cmd: 'puback', messageId: fresh.messageId });
  const done = await get(`/devices/${D}/messages/devicebound?state=completed&wait=5`);
  const m = done.messages.find((x) => x.messageId === 'redo');
  assert.equal(m.deliveryCount, 3);
  c.send({ cmd: 'disconnect' });
  await c.closed;
});

step('C2D queue: 50 messages at most (403004), TTL expiry, purge', async () => {
  await api('DELETE', `/devices/${D}/messages/devicebound`);
  for (let i = 0; i < 50; i++) await api('POST', `/devices/${D}/messages/devicebound`, { body: String(i), ttlSeconds: i === 0 ? 1 : 600 });
  const full = await api('POST', `/devices/${D}/messages/devicebound`, { body: 'x' }, [403]);
  assert.equal(full.errorCode, 403004);
  const exp = await get(`/devices/${D}/messages/devicebound?state=expired&wait=5`);
  assert.equal(exp.messages.length, 1);
  const p = await api('DELETE', `/devices/${D}/messages/devicebound`);
  assert.equal(p.totalMessagesPurged, 49);
});

step('keep-alive: silence for 1.5 x keepalive closes the connection', async () => {
  const since = await lastEventSeq();
  const c = await bareClient({ clean: true, keepalive: 1, clientId: D, username: user(D), password: Buffer.from(await token(D, 600)) });
  await c.closed;
  const ev = await events(since, 'disconnect', D);
  assert.equal(ev[0].reason, 'keepalive-timeout');
});

step('settings: refuseConnections answers CONNACK 3; holdTelemetryAcks withholds PUBACKs', async () => {
  await api('PATCH', '/settings', { refuseConnections: 3 });
  const r = await connect(await deviceOpts());
  assert.equal(r.code, 3);
  await api('PATCH', '/settings', { refuseConnections: null, holdTelemetryAcks: true });
  const { client } = await connect(await deviceOpts());
  let acked = false;
  const since = (await get(`/telemetry?deviceId=${D}`)).next;
  client.publish(`devices/${D}/messages/events/`, 'held', { qos: 1 }, () => { acked = true; });
  const t = (await get(`/telemetry?deviceId=${D}&since=${since}&wait=5`)).messages;
  assert.equal(t[0].body, 'held');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(acked, false, 'PUBACK withheld');
  await api('PATCH', '/settings', { holdTelemetryAcks: false });
  const end = Date.now() + 5000;
  while (!acked && Date.now() < end) await new Promise((res) => setTimeout(res, 20));
  assert.equal(acked, true, 'PUBACK released');
  client.end(true);
});

step('twin over raw MQTT: GET and PATCH answers, no answer without the response subscription', async () => {
  const { client } = await connect(await deviceOpts(D, { clean: true }));
  const seen = [];
  client.on('message', (topic, payload) => seen.push({ topic, payload: payload.toString() }));
  client.publish('$iothub/twin/GET/?$rid=early', '');
  await subscribe(client, { '$iothub/twin/res/#': 0 });
  client.publish('$iothub/twin/GET/?$rid=r1', '');
  client.publish('$iothub/twin/PATCH/properties/reported/?$rid=r2', '{"a":1}');
  client.publish('$iothub/twin/PATCH/properties/reported/?$rid=r3', 'not json');
  const end = Date.now() + 5000;
  while (seen.length < 3 && Date.now() < end) await new Promise((res) => setTimeout(res, 20));
  assert.equal(seen.length, 3);
  assert.match(seen[0].topic, /^\$iothub\/twin\/res\/200\/\?\$rid=r1$/);
  assert.deepEqual(Object.keys(JSON.parse(seen[0].payload)).sort(), ['desired', 'reported']);
  const v = (await get(`/twins/${D}`)).properties.reported.$version;
  assert.equal(seen[1].topic, `$iothub/twin/res/204/?$rid=r2&$version=${v}`);
  assert.match(seen[2].topic, /^\$iothub\/twin\/res\/400\/\?\$rid=r3$/);
  assert.ok(!seen.some((s) => s.topic.includes('early')));
  // desired notifications: a PATCH is pushed as the patch, a PUT as the whole document
  await subscribe(client, { '$iothub/twin/PATCH/properties/desired/#': 0 });
  await api('PATCH', `/twins/${D}`, { properties: { desired: { a: { b: 1, c: 2 }, d: 1 } } });
  const p1 = await api('PATCH', `/twins/${D}`, { properties: { desired: { a: { c: null }, d: null } } });
  const p2 = await api('PUT', `/twins/${D}`, { properties: { desired: { e: 5 } } });
  while (seen.length < 6 && Date.now() < end + 5000) await new Promise((res) => setTimeout(res, 20));
  const v1 = p1.properties.desired.$version;
  assert.equal(seen[4].topic, `$iothub/twin/PATCH/properties/desired/?$version=${v1}`);
  assert.deepEqual(JSON.parse(seen[4].payload), { a: { c: null }, d: null, $version: v1 });
  assert.deepEqual(JSON.parse(seen[5].payload), { e: 5, $version: p2.properties.desired.$version });
  assert.equal(p2.properties.desired.$version, v1 + 1);
  client.end(true);
});

async function main() {
  for (const s of steps) {
    try {
      await s.fn();
      process.stdout.write(JSON.stringify({ step: s.name, ok: true }) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ step: s.name, ok: false, error: e.stack || String(e) }) + '\n');
      process.exit(1);
    }
  }
  process.exit(0);
}

main();
