// method-echo.js — a module's MQTT connection to ledge-hub that answers direct methods (MQTT.js,
// on the host): connects as DEVICE/MODULE over TLS with a SAS token from `ledge token`,
// subscribes to $iothub/methods/POST/# and answers every method 200 {"method", "echo": payload},
// except "fail", answered 500 {"error": "asked to fail"}, and "silent", never answered (the
// caller's timeout). With --telemetry-ms N it also sends a message on its output "ticks" every N
// ms. Prints one JSON line per event: ready, method {name, payload}.
//   node method-echo.js --port P --ca FILE --device D --module M --token SAS [--telemetry-ms N]
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const arg = (k, dflt) => {
  const i = process.argv.indexOf(`--${k}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (dflt !== undefined) return dflt;
    throw new Error(`--${k} is required`);
  }
  return process.argv[i + 1];
};
const emit = (event, fields) => process.stdout.write(JSON.stringify({event, ...fields}) + '\n');

const device = arg('device'), moduleId = arg('module');
const client = mqtt.connect({
  protocol: 'mqtts',
  host: '127.0.0.1',
  port: Number(arg('port')),
  ca: fs.readFileSync(arg('ca')),
  checkServerIdentity: () => undefined, // the hub's certificate names the gateway host name
  clientId: `${device}/${moduleId}`,
  username: `${device}.local.ledge/${device}/${moduleId}/?api-version=2021-04-12`,
  password: arg('token'),
  protocolVersion: 4,
  reconnectPeriod: 500,
});
let ticker = null, seq = 0;
const every = Number(arg('telemetry-ms', '0'));
client.on('connect', () => {
  client.subscribe('$iothub/methods/POST/#', {qos: 0}, (err) => {
    if (err) emit('error', {message: err.message});
    else emit('ready', {});
  });
  if (every > 0 && !ticker) {
    ticker = setInterval(() => client.publish(
        `devices/${device}/modules/${moduleId}/messages/events/%24.on=ticks`,
        JSON.stringify({seq: seq++}), {qos: 1}), every);
  }
});
client.on('message', (topic, payload) => {
  const m = /^\$iothub\/methods\/POST\/([^/]+)\/\?\$rid=(.+)$/.exec(topic);
  if (!m) return;
  const [, name, rid] = m;
  let body;
  try { body = JSON.parse(payload.toString() || 'null'); } catch (e) { body = payload.toString(); }
  emit('method', {name, payload: body});
  if (name === 'silent') return;
  const [status, answer] = name === 'fail' ? [500, {error: 'asked to fail'}] : [200, {method: name, echo: body}];
  client.publish(`$iothub/methods/res/${status}/?$rid=${rid}`, JSON.stringify(answer), {qos: 0});
});
client.on('error', (e) => emit('error', {message: e.message}));
process.on('SIGTERM', () => { clearInterval(ticker); client.end(true, () => process.exit(0)); });
