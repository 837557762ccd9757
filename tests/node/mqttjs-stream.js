// mqttjs-stream.js — MQTT.js (unmodified, from npm) as a module of ledge-hub, on the host, for the
// hub's durability tests. Every line written to the files is one message id.
//   node mqttjs-stream.js pub --port P --ca FILE --device D --module M --token T --output O
//       --count N --acked FILE [--window W] [--start I] [--rate R]
//     publishes ids I..I+N-1 as QoS 1 JSON bodies {"id": n} to output O, at most W unacknowledged
//     at a time, appending each id to FILE once the hub has acknowledged it (PUBACK). Survives
//     the hub going away: MQTT.js reconnects and sends again what was not acknowledged. --rate
//     caps publishes per second.
//   node mqttjs-stream.js sub --port P --ca FILE --device D --module M --token T --out FILE
//       [--with-input 1]
//     persistent session (clean false), subscribes to its inputs at QoS 1 and appends the id of
//     every message received to FILE (duplicates included; "<input> <id>" with --with-input)
//     until killed.
// Both print {"event": ...} lines on stdout (connect, offline, error, done).
'use strict';
const fs = require('fs');
const path = require('path');
const mqtt = require(path.join(__dirname, 'node_modules', 'mqtt'));

function args(argv) {
  const o = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) o[argv[i].slice(2)] = argv[++i];
    else o._.push(argv[i]);
  }
  return o;
}

const o = args(process.argv.slice(2));
const mode = o._[0];
const device = o.device;
const module_ = o.module;
const emit = (event, fields) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');

const client = mqtt.connect(`mqtts://127.0.0.1:${o.port}`, {
  protocolVersion: 4,
  clientId: `${device}/${module_}`,
  username: `${device}.local.ledge/${device}/${module_}/?api-version=2021-04-12`,
  password: o.token,
  ca: fs.readFileSync(o.ca),
  rejectUnauthorized: true,
  clean: mode !== 'sub',
  keepalive: 30,
  reconnectPeriod: 200,
  connectTimeout: 5000,
});
client.on('connect', (ack) => emit('connect', { sessionPresent: ack.sessionPresent }));
client.on('offline', () => emit('offline'));
client.on('error', (e) => emit('error', { message: e.message }));

if (mode === 'pub') {
  const count = Number(o.count);
  const window = Number(o.window || 20);
  const start = Number(o.start || 1);
  const topic = `devices/${device}/modules/${module_}/messages/events/%24.on=${encodeURIComponent(o.output)}&%24.ct=application%2Fjson&%24.ce=utf-8`;
  const acked = fs.openSync(o.acked, 'a');
  let next = start;
  let outstanding = 0;
  let done = 0;
  // --rate R: at most R publishes per second (so that a test can act in the middle)
  const rate = Number(o.rate || 0);
  const t0 = Date.now();
  const allowed = () => (rate ? Math.floor(((Date.now() - t0) * rate) / 1000) + 1 : Infinity);
  const pump = () => {
    while (outstanding < window && next < start + count && next - start < allowed()) {
      const id = next++;
      outstanding++;
      client.publish(topic, JSON.stringify({ id }), { qos: 1 }, (err) => {
        outstanding--;
        if (err) {
          emit('error', { id, message: err.message });
          return;
        }
        fs.writeSync(acked, `${id}\n`);
        if (++done === count) {
          emit('done', { acked: done });
          client.end(false, () => process.exit(0));
          return;
        }
        pump();
      });
    }
  };
  client.once('connect', () => {
    pump();
    if (rate) setInterval(pump, 10).unref();
  });
} else if (mode === 'sub') {
  const out = fs.openSync(o.out, 'a');
  client.on('connect', (ack) => {
    if (!ack.sessionPresent)
      client.subscribe(`devices/${device}/modules/${module_}/inputs/#`, { qos: 1 }, (err, granted) =>
        emit('subscribed', { err: err && err.message, granted }));
  });
  client.on('message', (topic, payload) => {
    let id;
    try {
      id = JSON.parse(payload.toString()).id;
    } catch (e) {
      id = `?${payload.toString().slice(0, 40)}`;
    }
    const input = topic.split('/')[5];
    fs.writeSync(out, o['with-input'] ? `${input} ${id}\n` : `${id}\n`);
  });
} else {
  console.error('usage: mqttjs-stream.js pub|sub ...');
  process.exit(2);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
