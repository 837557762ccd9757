// leaf-device.js — the unmodified Azure IoT Node SDK as a leaf (downstream) device on the host,
// connecting through ledge as a transparent gateway: Client.fromConnectionString with the
// connection string `ledge device` prints (GatewayHostName=...) over Mqtt, the trust bundle from
// `ledge device trust-bundle` as its CA (client.setOptions({ca})); LEAF_TRANSPORT=MqttWs goes over
// WebSockets to GatewayHostName:443, LEAF_TRANSPORT=Amqp over AMQPS to GatewayHostName:5671. For an X.509 device the
// certificate and key from `ledge device cert`. Prints each outcome as a JSON line on stdout
// (tests/system/gateway.sh reads them):
//   open                      the connection is up
//   sent {seq, ok}            COUNT telemetry messages with properties kind=reading, seq
//   twin {desired, reported}  getTwin()
//   reported {ok}             twin.properties.reported.update({fw: ...})
//   desired {delta}           each desired-property update (and the initial document)
//   method {name, payload}    a direct method call, answered 200 {"echo": payload}
//   c2d {messageId, body, properties, action}  a cloud-to-device message (on('message')),
//                             completed — unless LEAF_C2D (JSON, messageId → "abandon", "reject"
//                             or "hold") says otherwise for it: abandon the first time it comes
//                             (then complete), reject, or hold (never settle it)
//   error {where, message}
// Usage: node leaf-device.js CONNECTION_STRING CA_FILE [COUNT [CERT_FILE KEY_FILE]]
//        node leaf-device.js token HOST DEVICE KEY_B64 [TTL_S] — a device SAS token (for raw clients)
'use strict';
const fs = require('fs');
const crypto = require('crypto');

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function fail(where, err) {
  emit('error', { where, message: err && err.message ? err.message : String(err) });
}

// The token IoT Hub's device SDKs make: sr = <host>/devices/<id>, HMAC-SHA256 of "sr\nse".
function token(host, device, keyB64, ttl) {
  const sr = encodeURIComponent(`${host}/devices/${device}`);
  const se = Math.floor(Date.now() / 1000) + ttl;
  const sig = crypto.createHmac('sha256', Buffer.from(keyB64, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === 'token') {
    process.stdout.write(token(args[1], args[2], args[3], Number(args[4] || 3600)) + '\n');
    return;
  }
  const { Client, Message } = require('azure-iot-device');
  const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
  const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
  const transport = { Mqtt, MqttWs, Amqp, AmqpWs }[process.env.LEAF_TRANSPORT || 'Mqtt'];
  if (!transport) throw new Error(`LEAF_TRANSPORT=${process.env.LEAF_TRANSPORT}: not Mqtt, MqttWs, Amqp or AmqpWs`);
  const [cs, caFile, countArg, certFile, keyFile] = args;
  const count = Number(countArg || 3);
  const client = Client.fromConnectionString(cs, transport);
  const options = { ca: fs.readFileSync(caFile, 'utf8') };
  if (certFile) {
    options.cert = fs.readFileSync(certFile, 'utf8');
    options.key = fs.readFileSync(keyFile, 'utf8');
  }
  await client.setOptions(options);
  client.on('error', (err) => fail('client', err));
  client.on('disconnect', () => emit('disconnect', {}));
  const c2dActions = JSON.parse(process.env.LEAF_C2D || '{}');
  client.on('message', (msg) => {
    const properties = {};
    for (const p of msg.properties.propertyList) properties[p.key] = p.value;
    let action = c2dActions[msg.messageId] || 'complete';
    if (action === 'abandon') delete c2dActions[msg.messageId]; // once
    emit('c2d', { messageId: msg.messageId, body: msg.data.toString(), properties, action });
    if (action === 'hold') return;
    client[action](msg, (err) => err && fail(action, err));
  });
  client.onDeviceMethod('echo', (req, res) => {
    emit('method', { name: req.methodName, payload: req.payload });
    res.send(200, { echo: req.payload }, (err) => err && fail('method-response', err));
  });

  await client.open();
  emit('open', {});

  for (let seq = 0; seq < count; seq++) {
    const msg = new Message(JSON.stringify({ seq, temperature: 20 + seq }));
    msg.messageId = `leaf-${seq}`;
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    msg.properties.add('kind', 'reading');
    msg.properties.add('seq', String(seq));
    try {
      await client.sendEvent(msg);
      emit('sent', { seq, ok: true });
    } catch (err) {
      fail('send', err);
    }
  }

  const twin = await client.getTwin();
  emit('twin', { desired: twin.properties.desired, reported: twin.properties.reported });
  twin.on('properties.desired', (delta) => emit('desired', { delta }));
  twin.properties.reported.update({ fw: '1.0.0', pid: process.pid }, (err) => {
    if (err) fail('reported', err);
    else emit('reported', { ok: true });
  });
}

main().catch((err) => {
  fail('main', err);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
