// amqp-raw.js — a bare AMQP 1.0 client (rhea, the library under the Node SDK's Amqp transport)
// for what the SDK never does on purpose: a put-token with a bad token or another identity's
// audience, a link outside the identity it authenticated as. Prints JSON lines on stdout
// (tests/system/hub-amqp.sh reads them):
//   put-token {status, description}   the $cbs answer
//   link {address, attached, error}   a sender link's outcome (attached, or the hub's detach error)
//   closed {error}                    the hub closed the connection
// Usage: node amqp-raw.js HOST PORT CA_FILE AUDIENCE TOKEN [LINK_ADDRESS]
//        node amqp-raw.js token RESOURCE KEY_B64 [TTL_S]   — a SAS token for RESOURCE
'use strict';
const fs = require('fs');
const crypto = require('crypto');

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function token(resource, keyB64, ttl) {
  const sr = encodeURIComponent(resource);
  const se = Math.floor(Date.now() / 1000) + ttl;
  const sig = crypto.createHmac('sha256', Buffer.from(keyB64, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

const args = process.argv.slice(2);
if (args[0] === 'token') {
  process.stdout.write(token(args[1], args[2], Number(args[3] || 3600)) + '\n');
  process.exit(0);
}
const [host, port, caFile, audience, tok, linkAddress] = args;
const rhea = require('rhea');
const container = rhea.create_container();
const conn = container.connect({
  host, port: Number(port), transport: 'tls', servername: 'localhost',
  ca: fs.readFileSync(caFile), reconnect: false,
});
const done = (code) => setTimeout(() => process.exit(code), 100);
setTimeout(() => { emit('timeout', {}); process.exit(2); }, 10000);
conn.on('connection_close', (ctx) => {
  emit('closed', { error: ctx.connection.error ? String(ctx.connection.error.condition) : null });
  done(0);
});
conn.on('disconnected', () => done(0));
conn.on('connection_open', () => {
  const rx = conn.open_receiver({ source: { address: '$cbs' }, autoaccept: true });
  const tx = conn.open_sender({ target: { address: '$cbs' } });
  rx.on('message', (ctx) => {
    const p = ctx.message.application_properties || {};
    emit('put-token', { status: p['status-code'], description: p['status-description'] });
    if (p['status-code'] !== 200 || !linkAddress) {
      conn.close();
      return;
    }
    const l = conn.open_sender({ target: { address: linkAddress } });
    l.on('sendable', () => {
      if (l.is_open() && !l.reported) {
        l.reported = true;
        emit('link', { address: linkAddress, attached: true });
        conn.close();
      }
    });
    l.on('sender_close', (c2) => {
      emit('link', { address: linkAddress, attached: false, error: c2.sender.error ? String(c2.sender.error.condition) : null });
      conn.close();
    });
    l.on('sender_error', () => {});
  });
  tx.on('sendable', () => {
    if (tx.sent_token) return;
    tx.sent_token = true;
    tx.send({
      to: '$cbs', reply_to: 'cbs', message_id: 'raw-1', body: tok,
      application_properties: { operation: 'put-token', type: 'servicebus.windows.net:sastoken', name: audience },
    });
  });
});
conn.on('error', (e) => { emit('error', { message: String(e && e.message) }); });
