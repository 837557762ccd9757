#!/usr/bin/env node
// standin.js — an IoT Hub stand-in for ledge's system tests: IoT Hub's device-facing MQTT
// protocol on a TLS port (and a plain one for debugging) and a control API on loopback for
// the test to play the cloud. README.md says what it does and does not do like IoT Hub.
//
//   node standin.js --cert F --key F [--mqtts-port P] [--mqtt-port P] [--control-port P]
//                   [--host 127.0.0.1] [--hub-name NAME] [--registry FILE] [--state-file FILE]
//                   [--ready-file FILE] [--ca FILE]...
// Ports default to 0 (any free one); the ports taken are printed as one JSON line on stdout
// ({"ready": true, "mqttsPort", "mqttPort", "controlPort", "pid", "hubName"}) and written to
// --ready-file. The event log goes to stderr. SIGTERM/SIGINT: close everything, save state.
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const { Hub } = require('./lib/hub');
const { Session } = require('./lib/session');
const { createControlServer } = require('./lib/control');

function usage(msg) {
  process.stderr.write(`standin.js: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { host: '127.0.0.1', hubName: 'standin-hub.azure-devices.net', cas: [] };
  const port = (v, name) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) usage(`${name}: a port number`);
    return n;
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--cert': o.cert = v(); break;
      case '--key': o.key = v(); break;
      case '--ca': o.cas.push(v()); break;
      case '--mqtts-port': o.mqttsPort = port(v(), a); break;
      case '--mqtt-port': o.mqttPort = port(v(), a); break;
      case '--no-mqtt': o.noMqtt = true; break;
      case '--control-port': o.controlPort = port(v(), a); break;
      case '--host': o.host = v(); break;
      case '--control-host': o.controlHost = v(); break;
      case '--hub-name': o.hubName = v(); break;
      case '--registry': o.registry = v(); break;
      case '--state-file': o.stateFile = v(); break;
      case '--ready-file': o.readyFile = v(); break;
      case '--max-telemetry': o.maxTelemetry = Number(v()); break;
      default: usage(`unknown option ${a}`);
    }
  }
  if (!o.cert || !o.key) usage('--cert and --key (the server certificate and its key, PEM) are required');
  if (!o.hubName.includes('.')) usage('--hub-name: a host name with a dot, like myhub.azure-devices.net');
  return o;
}

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port || 0, host, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

async function main() {
  const o = parseArgs(process.argv);
  const hub = new Hub({
    hostName: o.hubName,
    stateFile: o.stateFile,
    maxTelemetry: o.maxTelemetry,
    log: (line) => process.stderr.write(line + '\n'),
  });
  if (o.registry) {
    const reg = JSON.parse(fs.readFileSync(o.registry, 'utf8'));
    for (const c of reg.certificates || []) hub.putCertificate(c.name, c.pem);
    for (const d of reg.devices || []) {
      const { modules, ...dev } = d;
      hub.putDevice(d.deviceId, dev);
      for (const m of modules || []) hub.putModule(d.deviceId, m.moduleId, m);
    }
  }
  for (const [i, f] of o.cas.entries()) hub.putCertificate(`ca${i + 1}`, fs.readFileSync(f, 'utf8'));

  const cert = fs.readFileSync(o.cert);
  const key = fs.readFileSync(o.key);
  const tlsOptions = () => ({
    cert,
    key,
    ca: hub.cas.size ? [...hub.cas.values()] : undefined,
    requestCert: true,          // X.509 identities; SAS clients send none
    rejectUnauthorized: false,  // the session decides (thumbprint or CA) and answers CONNACK 5
  });
  const mqtts = tls.createServer(tlsOptions(), (socket) => new Session(hub, socket, 'mqtts'));
  hub.on('cas', () => mqtts.setSecureContext(tlsOptions()));
  mqtts.on('tlsClientError', (err, socket) => {
    hub.event('tls-error', { remote: socket && `${socket.remoteAddress}:${socket.remotePort}`, error: err.message });
  });
  const plain = o.noMqtt ? null : net.createServer((socket) => new Session(hub, socket, 'mqtt'));
  const control = createControlServer(hub, () => info);

  const info = { hubName: o.hubName, pid: process.pid };
  info.mqttsPort = await listen(mqtts, o.mqttsPort, o.host);
  if (plain) info.mqttPort = await listen(plain, o.mqttPort, o.host);
  info.controlPort = await listen(control, o.controlPort, o.controlHost || '127.0.0.1');
  const ready = JSON.stringify({ ready: true, ...info });
  if (o.readyFile) {
    fs.writeFileSync(`${o.readyFile}.tmp`, ready + '\n');
    fs.renameSync(`${o.readyFile}.tmp`, o.readyFile);
  }
  process.stdout.write(ready + '\n');
  hub.event('started', { ...info });

  const stop = (sig) => {
    hub.event('stopping', { signal: sig });
    mqtts.close();
    if (plain) plain.close();
    control.close();
    hub.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((e) => {
  process.stderr.write(`standin.js: ${e.stack || e}\n`);
  process.exit(1);
});
