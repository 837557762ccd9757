// hub-raw.js — raw MQTT bytes for ledge-hub's fault tests (node core only, runs on the host):
//   node hub-raw.js send --port P [--tls --ca FILE] [--connect CLIENT_ID,USER,TOKEN]
//       (--hex HEX | --pub TOPIC) [--timeout MS]
//     opens a connection, optionally completes a CONNECT, sends HEX (or a QoS 1 PUBLISH of "x"
//     to TOPIC) and waits for the hub to
//     close it; prints {"connack": code|null, "closed": bool, "ms": elapsed} and exits 0 when
//     the hub closed the connection within the timeout, 1 otherwise.
//   node hub-raw.js flood --port P --n N --hold MS
//     opens N TCP connections that never send anything, holds them MS and prints
//     {"opened": n, "closedByHub": n}.
//   node hub-raw.js port
//     prints a free TCP port on 127.0.0.1.
'use strict';
const net = require('net');
const tls = require('tls');
const fs = require('fs');

function args(argv) {
  const o = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const k = a.slice(2);
      const v = argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : true;
      o[k] = v;
    } else o._.push(a);
  }
  return o;
}

function mqttString(s) {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function remainingLength(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

function connectPacket(clientId, user, token) {
  const vh = Buffer.concat([mqttString('MQTT'), Buffer.from([4, 0xc2, 0, 60])]);
  const body = Buffer.concat([vh, mqttString(clientId), mqttString(user), mqttString(token)]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

// QoS 1 PUBLISH of "x" to topic, packet id 1.
function publishPacket(topic) {
  const body = Buffer.concat([mqttString(topic), Buffer.from([0, 1]), Buffer.from('x')]);
  return Buffer.concat([Buffer.from([0x32]), remainingLength(body.length), body]);
}

function open(o) {
  const port = Number(o.port);
  if (o.tls) {
    return tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(o.ca) });
  }
  return net.connect({ host: '127.0.0.1', port });
}

function send(o) {
  const start = Date.now();
  const timeout = Number(o.timeout || 3000);
  const sock = open(o);
  let connack = null;
  let closed = false;
  let got = Buffer.alloc(0);
  const finish = () => {
    process.stdout.write(JSON.stringify({ connack, closed, ms: Date.now() - start }) + '\n');
    process.exit(closed ? 0 : 1);
  };
  const timer = setTimeout(() => { sock.destroy(); finish(); }, timeout);
  const payload = o.pub ? publishPacket(String(o.pub)) : Buffer.from(o.hex || '', 'hex');
  sock.on('error', () => {});
  sock.on('close', () => { closed = true; clearTimeout(timer); finish(); });
  sock.on(o.tls ? 'secureConnect' : 'connect', () => {
    if (o.connect) {
      const [cid, user, token] = String(o.connect).split(',');
      sock.write(connectPacket(cid, user, token));
    } else {
      sock.write(payload);
    }
  });
  sock.on('data', (d) => {
    got = Buffer.concat([got, d]);
    if (o.connect && connack === null && got.length >= 4 && got[0] === 0x20) {
      connack = got[3];
      got = got.subarray(4);
      if (connack === 0) sock.write(payload);
    }
  });
}

function flood(o) {
  const n = Number(o.n);
  const hold = Number(o.hold || 2000);
  let opened = 0;
  let closedByHub = 0;
  const socks = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host: '127.0.0.1', port: Number(o.port) });
    s.on('connect', () => { opened++; });
    s.on('error', () => {});
    s.on('close', () => { if (!s.ledgeDone) closedByHub++; });
    socks.push(s);
  }
  setTimeout(() => {
    for (const s of socks) { s.ledgeDone = true; s.destroy(); }
    process.stdout.write(JSON.stringify({ opened, closedByHub }) + '\n');
    process.exit(0);
  }, hold);
}

function port() {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => {
    process.stdout.write(s.address().port + '\n');
    s.close();
  });
}

const o = args(process.argv.slice(2));
({ send, flood, port }[o._[0]] || (() => { console.error('usage: hub-raw.js send|flood|port ...'); process.exit(2); }))(o);
