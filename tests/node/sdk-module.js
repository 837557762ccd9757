// sdk-module.js — the unmodified Azure IoT Node SDK (azure-iot-device + azure-iot-device-mqtt) as
// a module of ledge, configured only by the environment ledged injects: it connects to ledge-hub
// (MQTT over TLS, trust bundle and SAS tokens from the workload API), then exercises what a module
// does and prints each outcome as a JSON line on stdout (tests/system/node-sdk.sh reads them):
//   open                      the connection is up
//   twin {desired}            getTwin()
//   desired {delta}           each desired-property update (and the initial document)
//   reported {ok}             twin.properties.reported.update()
//   input {input, body, props} a message on an input (routed from another module); it is
//                             forwarded to output "forwarded" with property via=node
//   forwarded {ok}            that sendOutputEvent's outcome
//   method {name, payload}    a direct method call, answered 200 {"echo": payload}
//   report {payload}          method "report": payload patched into the reported properties,
//                             answered 200 {"reported": true}
//   sent {seq, ok}            five messages sent to output "ticks" at start
//   error {where, message}
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function fail(where, err) {
  emit('error', { where, message: err && err.message ? err.message : String(err) });
}

async function main() {
  const client = await ModuleClient.fromEnvironment(Mqtt);
  client.on('error', (err) => fail('client', err));
  client.on('disconnect', () => emit('disconnect', {}));

  client.on('inputMessage', (input, msg) => {
    const body = msg.getBytes().toString();
    const props = {};
    for (const p of msg.properties.propertyList) props[p.key] = p.value;
    emit('input', { input, body, props, messageId: msg.messageId });
    const fwd = new Message(body);
    fwd.properties.add('via', 'node');
    client.sendOutputEvent('forwarded', fwd, (err) => {
      if (err) fail('forwarded', err);
      else emit('forwarded', { ok: true });
    });
  });

  client.onMethod('echo', (req, res) => {
    emit('method', { name: req.methodName, payload: req.payload });
    res.send(200, { echo: req.payload }, (err) => err && fail('method-response', err));
  });

  await client.open();
  emit('open', {});

  const twin = await client.getTwin();
  client.onMethod('report', (req, res) => {
    emit('report', { payload: req.payload });
    twin.properties.reported.update(req.payload, (err) => {
      if (err) fail('report', err);
      res.send(err ? 500 : 200, { reported: !err }, (e) => e && fail('method-response', e));
    });
  });
  emit('twin', { desired: twin.properties.desired });
  twin.on('properties.desired', (delta) => emit('desired', { delta }));
  twin.properties.reported.update({ nodeSdk: { ok: true, pid: process.pid } }, (err) => {
    if (err) fail('reported', err);
    else emit('reported', { ok: true });
  });

  for (let seq = 0; seq < 5; seq++) {
    const m = new Message(JSON.stringify({ seq }));
    m.properties.add('seq', String(seq));
    m.messageId = `tick-${seq}`;
    try {
      await client.sendOutputEvent('ticks', m);
      emit('sent', { seq, ok: true });
    } catch (err) {
      fail('sent', err);
    }
  }
}

main().catch((err) => {
  fail('main', err);
  process.exit(1);
});
