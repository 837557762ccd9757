// sdk-check.js — validates the stand-in against the unmodified Azure IoT Node SDK
// (azure-iot-device + azure-iot-device-mqtt, `Client` and `ModuleClient.fromConnectionString`
// over `Mqtt` with SAS connection strings, and `Client` with X.509 certificates through the
// SDK's X509AuthenticationProvider), playing the cloud through the control API. One JSON line
// per step: {"step", "ok": true} or {"step", "ok": false, "error"}; exits 1 at the first
// failure. Run by tests/system/iothub-standin.sh with
//   IOTHUB_CONTROL=http://127.0.0.1:P IOTHUB_MQTTS_PORT=P IOTHUB_CA=ca.pem [IOTHUB_PKI=dir]
'use strict';
const fs = require('node:fs');
const assert = require('node:assert/strict');
const { Client, ModuleClient, Message, X509AuthenticationProvider } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const CONTROL = process.env.IOTHUB_CONTROL;
const PORT = process.env.IOTHUB_MQTTS_PORT;
const CA = fs.readFileSync(process.env.IOTHUB_CA, 'utf8');
const PKI = process.env.IOTHUB_PKI;
const clients = [];

async function api(method, path, body, expect = [200, 204]) {
  const r = await fetch(CONTROL + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const json = text && r.headers.get('content-type').startsWith('application/json') ? JSON.parse(text) : text;
  if (!expect.includes(r.status)) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
  return { status: r.status, body: json };
}
const get = async (path) => (await api('GET', path)).body;

// Resolves once pred() holds, checking on each SDK callback tick; rejects after ms.
function until(what, pred, ms = 10000) {
  return new Promise((resolve, reject) => {
    const end = Date.now() + ms;
    const tick = async () => {
      try {
        const v = await pred();
        if (v) return resolve(v);
      } catch (e) {
        if (Date.now() > end) return reject(e);
      }
      if (Date.now() > end) return reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

// Events of the stand-in since a sequence number, long-polled.
async function events(since, type, deviceId, min = 1, wait = 10) {
  const q = new URLSearchParams({ since: String(since), type, wait: String(wait), min: String(min) });
  if (deviceId) q.set('deviceId', deviceId);
  return (await get(`/events?${q}`)).events;
}
async function lastEventSeq() {
  return (await get('/events?type=none')).next;
}

// Resolves once the identity's connection subscribed to filter (moduleId '' = the device).
function subscribed(deviceId, moduleId, filter) {
  return until(`${deviceId}/${moduleId} subscribed to ${filter}`, async () => {
    const c = (await get(`/connections?deviceId=${encodeURIComponent(deviceId)}&moduleId=${encodeURIComponent(moduleId)}`)).connections;
    return c.length === 1 && c[0].subscriptions.some((s) => s.topic === filter);
  });
}

function connectionString(ident) {
  return `${ident.connectionString};GatewayHostName=localhost:${PORT}`;
}

async function openDevice(cs, opts = {}) {
  const c = Client.fromConnectionString(cs, Mqtt);
  clients.push(c);
  await c.setOptions({ ca: CA, ...opts });
  c.on('error', () => {});
  return c;
}

async function openModule(cs) {
  const c = ModuleClient.fromConnectionString(cs, Mqtt);
  clients.push(c);
  await c.setOptions({ ca: CA });
  c.on('error', () => {});
  return c;
}

// A queue of an emitter's events, awaited one by one.
function recorder(emitter, name) {
  const seen = [];
  const waiters = [];
  emitter.on(name, (...args) => {
    seen.push(args);
    while (waiters.length) waiters.shift()();
  });
  return {
    seen,
    async next(what, pred = () => true, ms = 10000) {
      return until(what, () => seen.find((a) => pred(...a)), ms);
    },
  };
}

const steps = [];
function step(name, fn) {
  steps.push({ name, fn });
}

const D = 'sdk-device';
const M = 'sdk-module';
const EDGE = 'sdk-edge';
let dev;
let devClient;
let devTwin;
let desiredSeen;
let messages;

step('register a device (SAS keys made by the stand-in) and a module', async () => {
  dev = (await api('PUT', `/devices/${D}`, {})).body;
  assert.equal(dev.authentication.type, 'sas');
  assert.match(dev.connectionString, /^HostName=[^;]+;DeviceId=sdk-device;SharedAccessKey=/);
  await api('PUT', `/devices/${D}/modules/${M}`, {});
  await api('PATCH', `/twins/${D}`, { properties: { desired: { before: 'connect', nested: { a: 1 } } } });
});

step('Client.fromConnectionString(Mqtt): open', async () => {
  devClient = await openDevice(connectionString(dev));
  messages = recorder(devClient, 'message');
  await devClient.open();
  const conns = (await get(`/connections?deviceId=${D}&moduleId=`)).connections;
  assert.equal(conns.length, 1);
  assert.equal(conns[0].auth, 'sas');
  assert.equal(conns[0].cleanSession, false);
  assert.ok(conns[0].tokenExpiry, 'token expiry recorded');
  assert.match(conns[0].deviceClientType, /^azure-iot-device\//);
});

step('sendEvent: body, system and application properties arrive', async () => {
  const m = new Message(JSON.stringify({ t: 21.5 }));
  m.messageId = 'msg-1';
  m.correlationId = 'corr-1';
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  m.properties.add('alert', 'yes & no = maybe');
  m.properties.add('ünï', 'çødé/%');
  await devClient.sendEvent(m);
  const t = (await get(`/telemetry?deviceId=${D}&wait=5`)).messages;
  assert.equal(t.length, 1);
  const r = t[0];
  assert.equal(r.moduleId, null);
  assert.equal(r.body, '{"t":21.5}');
  assert.deepEqual(r.properties, { alert: 'yes & no = maybe', 'ünï': 'çødé/%' });
  assert.equal(r.systemProperties.messageId, 'msg-1');
  assert.equal(r.systemProperties.correlationId, 'corr-1');
  assert.equal(r.systemProperties.contentType, 'application/json');
  assert.equal(r.systemProperties.contentEncoding, 'utf-8');
  assert.equal(r.annotations['iothub-connection-device-id'], D);
  assert.equal(r.qos, 1);
  assert.ok(r.topic.startsWith(`devices/${D}/messages/events/`));
});

step('getTwin: the desired properties written before the device connected', async () => {
  devTwin = await devClient.getTwin();
  assert.equal(devTwin.properties.desired.before, 'connect');
  assert.deepEqual(devTwin.properties.desired.nested, { a: 1 });
  assert.equal(devTwin.properties.desired.$version, 2);
  assert.equal(devTwin.properties.reported.$version, 1);
  desiredSeen = recorder(devTwin, 'properties.desired');
});

step('twin.properties.reported.update: versions, nested patch, null deletes', async () => {
  const update = (patch) => new Promise((res, rej) => devTwin.properties.reported.update(patch, (e) => (e ? rej(e) : res())));
  await update({ fw: '1.0', battery: { level: 80, charging: false } });
  let tw = await get(`/twins/${D}`);
  assert.deepEqual(tw.properties.reported, { fw: '1.0', battery: { level: 80, charging: false }, $version: 2 });
  await update({ battery: { charging: null, level: 79 } });
  tw = await get(`/twins/${D}`);
  assert.deepEqual(tw.properties.reported, { fw: '1.0', battery: { level: 79 }, $version: 3 });
  // what IoT Hub refuses: keys with "$" or ".", and the SDK reports the error
  await assert.rejects(update({ 'bad.key': 1 }));
  tw = await get(`/twins/${D}`);
  assert.equal(tw.properties.reported.$version, 3);
});

step("desired updates reach the SDK's 'properties.desired' event (patch and full replacement)", async () => {
  // the SDK subscribes when the listener is added; IoT Hub pushes nothing before that
  await subscribed(D, '', '$iothub/twin/PATCH/properties/desired/#');
  const r = (await api('PATCH', `/twins/${D}`, { properties: { desired: { speed: 5, nested: { b: 2 } } } })).body;
  assert.equal(r.properties.desired.$version, 3);
  // the SDK merges the patch into its copy and emits that (raw-check.js checks the patch itself)
  await desiredSeen.next('the desired patch', (d) => d.$version === 3);
  assert.equal(devTwin.properties.desired.speed, 5);
  assert.deepEqual(devTwin.properties.desired.nested, { a: 1, b: 2 });
  assert.equal(devTwin.properties.desired.before, 'connect');
  await api('PUT', `/twins/${D}`, { properties: { desired: { only: true } } });
  await desiredSeen.next('the replaced desired document', (d) => d.$version === 4);
  assert.equal(devTwin.properties.desired.only, true);
});

step('onDeviceMethod: the cloud calls, the device answers with its status and payload', async () => {
  devClient.onDeviceMethod('reboot', (req, res) => {
    res.send(202, { accepted: true, got: req.payload }, () => {});
  });
  await subscribed(D, '', '$iothub/methods/POST/#');
  const r = await api('POST', `/twins/${D}/methods`, { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 10 });
  assert.deepEqual(r.body, { status: 202, payload: { accepted: true, got: { delay: 3 } } });
});

step('a method the device does not answer: 504 after responseTimeoutInSeconds', async () => {
  const t0 = Date.now();
  const r = await api('POST', `/twins/${D}/methods`, { methodName: 'nobodyHome', responseTimeoutInSeconds: 2 }, [504]);
  assert.equal(r.body.errorCode, 504101);
  assert.ok(Date.now() - t0 >= 1900, 'waited the timeout');
});

step("C2D: on('message') gets body and properties, complete() completes it", async () => {
  const sent = (await api('POST', `/devices/${D}/messages/devicebound`, {
    body: 'hello device', messageId: 'c2d-1', correlationId: 'cc-1', contentType: 'text/plain',
    properties: { color: 'blue green', empty: '' }, ack: 'full',
  })).body;
  assert.ok(['enqueued', 'invisible'].includes(sent.state), sent.state); // sent at once to a subscribed device
  const [msg] = await messages.next('the C2D message', (m) => m.messageId === 'c2d-1');
  assert.equal(msg.data.toString(), 'hello device');
  assert.equal(msg.correlationId, 'cc-1');
  assert.equal(msg.contentType, 'text/plain');
  assert.equal(msg.to, `/devices/${D}/messages/deviceBound`);
  const props = Object.fromEntries(msg.properties.propertyList.map((p) => [p.key, p.value]));
  assert.deepEqual(props, { color: 'blue green', empty: '', 'iothub-ack': 'full' });
  await devClient.complete(msg);
  await until('the message completed', async () => (await get(`/devices/${D}/messages/devicebound?state=completed`)).messages
    .some((m) => m.messageId === 'c2d-1'));
});

step('offline: C2D waits in the queue, a method answers 404, desired changes are read on reconnect', async () => {
  await devClient.close();
  await until('the device disconnected', async () => (await get(`/devices/${D}`)).connectionState === 'Disconnected');
  for (const id of ['off-1', 'off-2']) {
    await api('POST', `/devices/${D}/messages/devicebound`, { body: id, messageId: id });
  }
  const q = (await get(`/devices/${D}/messages/devicebound?state=enqueued`)).messages;
  assert.deepEqual(q.map((m) => m.messageId), ['off-1', 'off-2']);
  const r = await api('POST', `/twins/${D}/methods`, { methodName: 'reboot', responseTimeoutInSeconds: 5 }, [404]);
  assert.equal(r.body.errorCode, 404103);
  await api('PATCH', `/twins/${D}`, { properties: { desired: { whileOffline: 1 } } });

  devClient = await openDevice(connectionString(dev));
  messages = recorder(devClient, 'message');
  await devClient.open();
  await messages.next('the first queued message', (m) => m.messageId === 'off-1');
  await messages.next('the second queued message', (m) => m.messageId === 'off-2');
  assert.deepEqual(messages.seen.map(([m]) => m.messageId), ['off-1', 'off-2']);
  await until('both completed', async () => (await get(`/devices/${D}/messages/devicebound?state=enqueued`)).messages.length === 0);
  devTwin = await devClient.getTwin();
  assert.equal(devTwin.properties.desired.whileOffline, 1);
  assert.equal(devTwin.properties.desired.$version, 5);
});

step('a method with connectTimeoutInSeconds waits for the device to come back', async () => {
  await devClient.close();
  const call = api('POST', `/twins/${D}/methods`, { methodName: 'late', payload: 7, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 20 });
  devClient = await openDevice(connectionString(dev));
  devClient.onDeviceMethod('late', (req, res) => res.send(200, req.payload * 6, () => {}));
  await devClient.open();
  const r = await call;
  assert.deepEqual(r.body, { status: 200, payload: 42 });
});

step('dropped by the hub: the SDK reconnects by itself and methods work again', async () => {
  const since = await lastEventSeq();
  const n = (await api('POST', '/connections/drop-all', {})).body.disconnected;
  assert.ok(n >= 1);
  await events(since, 'connect', D, 1, 30);
  await until('the methods subscription again', async () => {
    const c = (await get(`/connections?deviceId=${D}&moduleId=`)).connections;
    return c.length === 1 && c[0].subscriptions.some((s) => s.topic === '$iothub/methods/POST/#');
  }, 30000);
  const r = await api('POST', `/twins/${D}/methods`, { methodName: 'late', payload: 1, responseTimeoutInSeconds: 10 });
  assert.deepEqual(r.body, { status: 200, payload: 6 });
});

step('a second connection for the same device replaces the first (as IoT Hub does)', async () => {
  const since = await lastEventSeq();
  const second = await openDevice(connectionString(dev));
  // the first client reconnects by itself (its retry policy), which replaces the second in turn:
  // IoT Hub's one-connection-per-identity rule, seen from both sides
  await second.open();
  const ev = await events(since, 'disconnect', D, 2, 30);
  assert.deepEqual(ev.slice(0, 2).map((e) => e.reason), ['replaced', 'replaced']);
  await until('the first client back', async () => (await get(`/connections?deviceId=${D}&moduleId=`))
    .connections.some((c) => c.subscriptions.length > 0));
  await second.close();
  await devClient.close();
  await until('the device disconnected', async () => (await get(`/devices/${D}`)).connectionState === 'Disconnected');
});

step('a wrong key: open() fails as unauthorized (CONNACK 5)', async () => {
  const since = await lastEventSeq();
  const bad = connectionString(dev).replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.alloc(32, 7).toString('base64')}`);
  const c = await openDevice(bad);
  await assert.rejects(c.open(), (e) => /Unauthorized|Not authorized/i.test(`${e.name} ${e.message}`));
  const ev = await events(since, 'refused', D);
  assert.equal(ev[0].returnCode, 5);
  assert.match(ev[0].reason, /signature does not match/);
});

step('ModuleClient.fromConnectionString(Mqtt): telemetry, outputs, twin, methods', async () => {
  const mod = await get(`/devices/${D}/modules/${M}`);
  await api('PATCH', `/twins/${D}/modules/${M}`, { properties: { desired: { interval: 10 } } });
  const c = await openModule(connectionString(mod));
  await c.open();
  const since = (await get(`/telemetry?deviceId=${D}&moduleId=${M}`)).next;
  const m1 = new Message('from the module');
  m1.properties.add('k', 'v');
  await c.sendEvent(m1);
  await c.sendOutputEvent('out1', new Message('{"o":1}'));
  const t = (await get(`/telemetry?deviceId=${D}&moduleId=${M}&since=${since}&wait=5&min=2`)).messages;
  assert.equal(t.length, 2);
  assert.ok(t[0].topic.startsWith(`devices/${D}/modules/${M}/messages/events/`));
  assert.equal(t[0].body, 'from the module');
  assert.deepEqual(t[0].properties, { k: 'v' });
  assert.equal(t[0].annotations['iothub-connection-module-id'], M);
  assert.equal(t[1].systemProperties.outputName, 'out1');

  const twin = await c.getTwin();
  assert.equal(twin.properties.desired.interval, 10);
  await new Promise((res, rej) => twin.properties.reported.update({ up: true }, (e) => (e ? rej(e) : res())));
  assert.equal((await get(`/twins/${D}/modules/${M}`)).properties.reported.up, true);
  const desired = recorder(twin, 'properties.desired');
  await subscribed(D, M, '$iothub/twin/PATCH/properties/desired/#');
  await api('PATCH', `/twins/${D}/modules/${M}`, { properties: { desired: { interval: 20 } } });
  await desired.next('the module desired patch', (d) => d.interval === 20);
  // the device twin is another twin
  assert.equal((await get(`/twins/${D}`)).properties.reported.up, undefined);

  c.onMethod('ping', (req, res) => res.send(200, { pong: req.payload }, () => {}));
  await subscribed(D, M, '$iothub/methods/POST/#');
  const r = await api('POST', `/twins/${D}/modules/${M}/methods`, { methodName: 'ping', payload: 'x' });
  assert.deepEqual(r.body, { status: 200, payload: { pong: 'x' } });
  // a method for the device does not reach the module
  const nr = await api('POST', `/twins/${D}/methods`, { methodName: 'ping', responseTimeoutInSeconds: 2 }, [404]);
  assert.equal(nr.body.errorCode, 404103);
  await c.close();
  const off = await api('POST', `/twins/${D}/modules/${M}/methods`, { methodName: 'ping' }, [404]);
  assert.equal(off.body.errorCode, 404103);
});

step('an edge device: $edgeAgent and $edgeHub are modules; $edgeAgent reads its desired properties', async () => {
  const e = (await api('PUT', `/devices/${EDGE}`, { capabilities: { iotEdge: true } })).body;
  assert.deepEqual(e.modules.sort(), ['$edgeAgent', '$edgeHub']);
  const agent = await get(`/devices/${EDGE}/modules/$edgeAgent`);
  await api('PATCH', `/twins/${EDGE}/modules/$edgeAgent`, {
    properties: { desired: { schemaVersion: '1.1', modules: { sensor: { type: 'docker', settings: { image: 'x' } } } } },
  });
  const c = await openModule(connectionString(agent));
  await c.open();
  const twin = await c.getTwin();
  assert.equal(twin.properties.desired.modules.sensor.settings.image, 'x');
  await new Promise((res, rej) => twin.properties.reported.update({ lastDesiredVersion: twin.properties.desired.$version }, (err) => (err ? rej(err) : res())));
  const tw = await get(`/twins/${EDGE}/modules/$edgeAgent`);
  assert.equal(tw.properties.reported.lastDesiredVersion, 2);
  await c.close();
});

// An X.509 client through the SDK's public AuthenticationProvider extension point: the SDK's own
// X509AuthenticationProvider, its credentials given the gateway host (an x509=true connection
// string drops GatewayHostName).
async function openX509(deviceId, certFile, keyFile) {
  const hub = (await get('/health')).hubName;
  const x509 = { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
  const base = X509AuthenticationProvider.fromX509Options(deviceId, hub, x509);
  const provider = {
    type: base.type,
    getDeviceCredentials: (cb) => base.getDeviceCredentials((err, c) => cb(err, c && { ...c, gatewayHostName: `localhost:${PORT}` })),
    setX509Options: (o) => base.setX509Options(o),
  };
  const c = Client.fromAuthenticationProvider(provider, Mqtt);
  clients.push(c);
  await c.setOptions({ ca: CA, ...x509 });
  c.on('error', () => {});
  return c;
}

step('X.509: a self-signed device certificate registered by thumbprint, and a CA-signed one', async () => {
  if (!PKI) throw new Error('IOTHUB_PKI (the test PKI directory) is not set');
  const crypto = require('node:crypto');
  const thumb = new crypto.X509Certificate(fs.readFileSync(`${PKI}/x509-self.pem`)).fingerprint256.replace(/:/g, '');
  await api('PUT', '/devices/x509-self', { authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: thumb } } });
  const c = await openX509('x509-self', `${PKI}/x509-self.pem`, `${PKI}/x509-self.key`);
  await c.open();
  await c.sendEvent(new Message('x509'));
  const t = (await get('/telemetry?deviceId=x509-self&wait=5')).messages;
  assert.equal(t[0].body, 'x509');
  assert.equal((await get('/connections?deviceId=x509-self')).connections[0].auth, 'selfSigned');
  await c.close();

  await api('PUT', '/certificates/test-ca', { pem: fs.readFileSync(`${PKI}/devca.pem`, 'utf8') });
  await api('PUT', '/devices/x509-ca', { authentication: { type: 'certificateAuthority' } });
  const c2 = await openX509('x509-ca', `${PKI}/x509-ca.pem`, `${PKI}/x509-ca.key`);
  await c2.open();
  assert.equal((await get('/connections?deviceId=x509-ca')).connections[0].auth, 'certificateAuthority');
  await c2.close();

  // the self-signed certificate for the CA identity: refused
  const since = await lastEventSeq();
  const c3 = await openX509('x509-ca', `${PKI}/x509-self.pem`, `${PKI}/x509-self.key`);
  await assert.rejects(c3.open());
  const ev = await events(since, 'refused', 'x509-ca');
  assert.match(ev[0].reason, /does not chain to a registered CA/);
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
  for (const c of clients) c.close().catch(() => {});
  process.exit(0);
}

main();
