// sdk-module.js — the unmodified Azure IoT Node SDK (azure-iot-device + azure-iot-device-mqtt) as
// a module of ledge, configured only by the environment ledged injects: it connects to ledge-hub
// (MQTT over TLS, trust bundle and SAS tokens from the workload API; MQTT over WebSockets on
// GatewayHostName:443 with NODE_SDK_TRANSPORT=MqttWs; AMQPS on GatewayHostName:5671 with
// NODE_SDK_TRANSPORT=Amqp, azure-iot-device-amqp), then exercises what a module does and prints
// each outcome as a JSON line on stdout (tests/system/node-sdk.sh, hub-sdk.sh, hub-ws.sh read them):
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
//   invoke {params}           method "invoke" {device?, module?, method, payload, timeout}: this
//                             module calls client.invokeMethod (the HTTPS API on the gateway) on
//                             another module (or, without module, a device) and answers 200
//                             {result} with what it got, or 200 {error: {name, message,
//                             statusCode}}; then invoked {result} or invoked {error}
//   silent {payload}          method "silent": never answered (the caller's timeout)
//   burst {prefix, seq, ok}   method "send" {n, prefix, output, intervalMs}: answered 200 at once,
//                             then n JSON messages {seq, prefix} (contentType application/json,
//                             so that routes can test $body) sent one after another to output,
//                             message id <prefix>-<seq>; ok is the SDK's outcome (its retries
//                             included, across a reconnect); then burstDone {prefix, acked, failed}
//   error {where, message}
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const transports = { Mqtt, MqttWs, Amqp, AmqpWs };

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function fail(where, err) {
  emit('error', { where, message: err && err.message ? err.message : String(err) });
}

async function main() {
  const transport = transports[process.env.NODE_SDK_TRANSPORT || 'Mqtt'];
  if (!transport) throw new Error(`NODE_SDK_TRANSPORT=${process.env.NODE_SDK_TRANSPORT}: not one of ${Object.keys(transports)}`);
  const client = await ModuleClient.fromEnvironment(transport);
  client.on('error', (err) => fail('client', err));
  client.on('disconnect', () => emit('disconnect', {}));

  client.on('inputMessage', (input, msg) => {
    const body = msg.getBytes().toString();
    const props = {};
    for (const p of msg.properties.propertyList) props[p.key] = p.value;
    emit('input', { input, body, props, messageId: msg.messageId });
    // Over AMQP an input message stays unsettled until completed (over MQTT this is a no-op).
    client.complete(msg, (err) => err && fail('complete', err));
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

  client.onMethod('silent', (req) => emit('silent', { payload: req.payload }));

  client.onMethod('send', (req, res) => {
    const p = req.payload || {};
    res.send(200, { sending: p.n }, (e) => e && fail('method-response', e));
    (async () => {
      let acked = 0;
      let failed = 0;
      for (let seq = 0; seq < (p.n || 0); seq++) {
        const m = new Message(JSON.stringify({ seq, prefix: p.prefix }));
        m.messageId = `${p.prefix}-${seq}`;
        m.contentType = 'application/json';
        m.contentEncoding = 'utf-8';
        m.properties.add('burst', String(p.prefix));
        try {
          await client.sendOutputEvent(p.output || 'burst', m);
          acked++;
          emit('burst', { prefix: p.prefix, seq, ok: true });
        } catch (err) {
          failed++;
          emit('burst', { prefix: p.prefix, seq, ok: false, message: err && err.message });
        }
        if (p.intervalMs) await new Promise((r) => setTimeout(r, p.intervalMs));
      }
      emit('burstDone', { prefix: p.prefix, acked, failed });
    })();
  });

  client.onMethod('invoke', (req, res) => {
    const p = req.payload || {};
    const params = {
      methodName: p.method,
      payload: p.payload,
      responseTimeoutInSeconds: p.timeout || 10,
      connectTimeoutInSeconds: 0,
    };
    emit('invoke', { params, device: p.device, module: p.module });
    const device = p.device || process.env.IOTEDGE_DEVICEID;
    const done = (err, result) => {
      const answer = err
        ? { error: { name: err.name, message: err.message, statusCode: err.response && err.response.statusCode } }
        : { result };
      emit('invoked', answer);
      res.send(200, answer, (e) => e && fail('method-response', e));
    };
    if (p.module) client.invokeMethod(device, p.module, params, done);
    else client.invokeMethod(device, params, done);
  });

  await client.open();
  emit('open', { transport: transport.name });

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
