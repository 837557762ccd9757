// session.js — one device or module connection speaking IoT Hub's device-facing MQTT 3.1.1:
// CONNECT authenticated by a SAS token or an X.509 client certificate, the static topics IoT
// Hub supports (telemetry, twin GET/PATCH and responses, desired-property notifications,
// direct methods, cloud-to-device messages) and IoT Hub's way with everything else: it closes
// the connection. Framing is mqtt-packet's (MQTT.js's codec).
'use strict';
const crypto = require('node:crypto');
const mqtt = require('mqtt-packet');
const sas = require('./sas');
const { timer } = require('./hub');

const MAX_MESSAGE = 256 * 1024;      // IoT Hub's device-to-cloud message limit
const MAX_PACKET = MAX_MESSAGE + 4096; // room for the topic and the header
const MAX_SUBSCRIPTIONS = 5;         // "A device can only subscribe to five topics at a time"
const CONNECT_TIMEOUT_MS = 10000;
const KEEPALIVE_MAX_S = 1767;        // IoT Hub's server-side cap (29.45 minutes)

// MQTT topic filter matching; a filter starting with a wildcard does not match "$" topics.
function topicMatches(filter, topic) {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '#' || f[0] === '+')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

// "path/?a=b&c=d" -> {path, query: URLSearchParams}
function splitQuery(topic) {
  const q = topic.indexOf('?');
  if (q < 0) return { path: topic, query: new URLSearchParams() };
  return { path: topic.slice(0, q), query: new URLSearchParams(topic.slice(q + 1)) };
}

class Session {
  constructor(hub, socket, transport) {
    this.hub = hub;
    this.socket = socket;
    this.transport = transport; // "mqtts" or "mqtt"
    this.id = `c${++hub.connectionSeq}`;
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.connected = false;   // CONNACK 0 sent
    this.closed = false;
    this.deviceId = null;
    this.moduleId = null;
    this.ident = null;
    this.subscriptions = new Map(); // filter -> granted QoS
    this.persistRef = null;   // the identity's persisted session when clean session is 0
    this.inflight = new Map(); // packet id -> C2D message sent at QoS 1, not yet acknowledged
    this.heldAcks = [];       // PUBACKs withheld while settings.holdTelemetryAcks
    this.nextPacketId = 1;
    this.lastRx = Date.now();
    this.will = null;
    this.timers = [];
    this.parser = mqtt.parser({ protocolVersion: 4 });
    this.parser.on('packet', (p) => this.onPacket(p));
    this.parser.on('error', (e) => this.close('protocol-error', `malformed packet: ${e.message}`));
    socket.on('data', (chunk) => {
      this.lastRx = Date.now();
      this.parser.parse(chunk);
      if (!this.closed && this.parser.packet && this.parser.packet.length > MAX_PACKET) {
        this.close('protocol-error', `a packet of ${this.parser.packet.length} bytes (IoT Hub takes messages up to ${MAX_MESSAGE})`);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.close('socket-closed', 'the connection closed without DISCONNECT'));
    this.timers.push(timer(CONNECT_TIMEOUT_MS, () => {
      if (!this.connected) this.close('protocol-error', 'no CONNECT within 10 s');
    }));
  }

  who() {
    return { deviceId: this.deviceId, moduleId: this.moduleId, connectionId: this.id };
  }

  send(packet) {
    if (this.closed) return;
    this.socket.write(mqtt.generate(packet, { protocolVersion: 4 }));
  }

  // close(reason, detail): the server ends the connection (or notices it ended).
  close(reason, detail) {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    clearInterval(this.keepaliveTimer);
    this.socket.destroy();
    if (!this.connected) return;
    // what was sent and not acknowledged goes back to the queue; a persisted session resends
    // it with DUP and the same packet id, a clean one gets it anew
    const d = this.hub.devices.get(this.deviceId);
    for (const msg of this.inflight.values()) {
      msg.state = 'enqueued';
      if (!this.persistRef) {
        msg.packetId = null;
        msg.sessionRef = null;
      }
    }
    this.inflight.clear();
    this.hub.detach(this);
    this.hub.event('disconnect', { ...this.who(), reason, detail });
    if (this.will && reason !== 'client-disconnect') {
      this.hub.addTelemetry(this, this.will.topic, this.will.bag, this.will.payload,
        { qos: this.will.qos, retain: this.will.retain, will: true });
    }
    if (d && this.hub.sessionOf(d)) this.hub.sessionOf(d).deliverC2D();
  }

  onPacket(p) {
    if (this.closed) return;
    if (!this.connected && p.cmd !== 'connect') {
      this.close('protocol-error', `${p.cmd} before CONNECT`);
      return;
    }
    switch (p.cmd) {
      case 'connect': return this.onConnect(p);
      case 'publish': return this.onPublish(p);
      case 'puback': return this.onPuback(p);
      case 'subscribe': return this.onSubscribe(p);
      case 'unsubscribe': return this.onUnsubscribe(p);
      case 'pingreq': return this.send({ cmd: 'pingresp' });
      case 'disconnect': return this.close('client-disconnect', 'DISCONNECT');
      default: return this.close('protocol-error', `${p.cmd} is not supported (IoT Hub has no QoS 2)`);
    }
  }

  refuse(code, reason, fields) {
    this.hub.event('refused', { ...fields, connectionId: this.id, remote: this.remote, returnCode: code, reason });
    this.send({ cmd: 'connack', returnCode: code, sessionPresent: false });
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  onConnect(p) {
    if (this.connected) return this.close('protocol-error', 'a second CONNECT');
    const clientId = p.clientId || '';
    const base = { clientId, username: p.username || null };
    if (p.protocolId !== 'MQTT' || p.protocolVersion !== 4) {
      return this.refuse(1, `protocol ${p.protocolId} level ${p.protocolVersion}: IoT Hub speaks MQTT 3.1.1`, base);
    }
    if (this.hub.settings.refuseConnections) {
      return this.refuse(this.hub.settings.refuseConnections, 'refused by the control API (settings.refuseConnections)', base);
    }
    const parts = clientId.split('/');
    if (!clientId || parts.length > 2 || !parts.every((x) => /^[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}$/.test(x))) {
      return this.refuse(2, `client id "${clientId}" is neither {deviceId} nor {deviceId}/{moduleId}`, base);
    }
    const [deviceId, moduleId] = parts;
    const who = { ...base, deviceId, moduleId: moduleId || null };
    // user name: {hub host}/{client id}/?api-version=...&DeviceClientType=...
    const user = p.username || '';
    const slash = user.indexOf('/');
    const host = slash < 0 ? '' : user.slice(0, slash);
    if (slash < 0 || !user.startsWith(`${host}/${clientId}/`)) {
      return this.refuse(4, `user name "${user}" is not {hub}/${clientId}/?api-version=...`, who);
    }
    if (host.toLowerCase() !== this.hub.hostName.toLowerCase()) {
      return this.refuse(5, `user name names hub "${host}", this is "${this.hub.hostName}"`, who);
    }
    const rest = user.slice(host.length + clientId.length + 2);
    const query = new URLSearchParams(rest.startsWith('?') ? rest.slice(1) : rest);
    const ident = this.hub.findIdentity(deviceId, moduleId);
    if (!ident) return this.refuse(5, `${clientId} is not registered`, who);
    const device = this.hub.devices.get(deviceId);
    if (device.status !== 'enabled') return this.refuse(5, `device ${deviceId} is disabled`, who);

    let authType;
    let tokenExpiry = null;
    let onBehalfOf = null;
    const a = ident.authentication;
    if (p.password && p.password.length) {
      let t;
      try {
        t = sas.parse(p.password.toString('utf8'));
      } catch (e) {
        return this.refuse(5, `password: ${e.message}`, who);
      }
      // On behalf of (edgeHub's ClientAuthenticationForEdgeHubOnBehalfOf): a token for an edge
      // device's $edgeHub, signed with its key, opens an identity in that edge device's scope.
      const obo = /^([^/]+)\/devices\/([^/]+)\/modules\/\$edgeHub$/i.exec(t.srDecoded);
      if (obo && !(obo[2] === deviceId && moduleId && moduleId.toLowerCase() === '$edgehub')) {
        const bad = this.hub.checkOnBehalfOf(t, obo[1], obo[2], deviceId, moduleId);
        if (bad) return this.refuse(5, `on behalf of ${obo[2]}: ${bad}`, { ...who, tokenExpiry: new Date(t.se * 1000).toISOString() });
        onBehalfOf = obo[2];
        authType = 'sas';
        tokenExpiry = t.se * 1000;
      } else if (a.type !== 'sas') return this.refuse(5, `${clientId} authenticates with X.509 (${a.type}), not a SAS token`, who);
      if (!onBehalfOf) {
        const resource = `${this.hub.hostName}/devices/${deviceId}` + (moduleId ? `/modules/${moduleId}` : '');
        const bad = sas.verify(t, resource, [a.symmetricKey.primaryKey, a.symmetricKey.secondaryKey], Math.floor(Date.now() / 1000));
        if (bad) return this.refuse(5, `SAS token: ${bad}`, { ...who, tokenExpiry: new Date(t.se * 1000).toISOString() });
        authType = 'sas';
        tokenExpiry = t.se * 1000;
      }
    } else {
      const cert = this.socket.getPeerCertificate ? this.socket.getPeerCertificate() : null;
      if (!cert || !cert.raw) return this.refuse(5, 'no SAS token (password) and no client certificate', who);
      if (a.type === 'sas') return this.refuse(5, `${clientId} authenticates with a SAS token, not a certificate`, who);
      if (a.type === 'selfSigned') {
        const sha1 = crypto.createHash('sha1').update(cert.raw).digest('hex');
        const sha256 = crypto.createHash('sha256').update(cert.raw).digest('hex');
        const ok = [a.x509Thumbprint.primaryThumbprint, a.x509Thumbprint.secondaryThumbprint]
          .some((tp) => tp && (tp === sha1 || tp === sha256));
        if (!ok) return this.refuse(5, `client certificate thumbprint ${sha256} (SHA-256) / ${sha1} (SHA-1) is not registered`, who);
        authType = 'selfSigned';
      } else {
        if (!this.socket.authorized) {
          return this.refuse(5, `client certificate does not chain to a registered CA: ${this.socket.authorizationError}`, who);
        }
        const cn = cert.subject && cert.subject.CN;
        if (cn !== clientId) return this.refuse(5, `client certificate CN "${cn}" is not "${clientId}"`, who);
        authType = 'certificateAuthority';
      }
    }

    this.deviceId = deviceId;
    this.moduleId = moduleId || null;
    this.ident = ident;
    this.authType = authType;
    this.onBehalfOf = onBehalfOf;
    this.tokenExpiry = tokenExpiry;
    this.clientId = clientId;
    this.apiVersion = query.get('api-version');
    this.deviceClientType = query.get('DeviceClientType');
    this.cleanSession = !!p.clean;
    this.keepAlive = p.keepalive || 0;
    let sessionPresent = false;
    if (this.cleanSession) {
      ident.persisted = null;
    } else {
      sessionPresent = !!ident.persisted;
      if (!ident.persisted) ident.persisted = { subscriptions: new Map() };
      this.persistRef = ident.persisted;
      this.subscriptions = ident.persisted.subscriptions;
    }
    if (p.will) {
      const w = this.telemetryTopic(p.will.topic);
      if (w !== null) {
        this.will = { topic: p.will.topic, bag: w, payload: Buffer.from(p.will.payload || ''), qos: p.will.qos, retain: p.will.retain };
      }
    }
    this.hub.attach(this);
    this.connected = true;
    this.connectedAt = new Date().toISOString();
    this.send({ cmd: 'connack', returnCode: 0, sessionPresent });
    if (this.keepAlive > 0) {
      const limit = Math.min(this.keepAlive * 1.5, KEEPALIVE_MAX_S) * 1000;
      this.keepaliveTimer = setInterval(() => {
        if (Date.now() - this.lastRx > limit) this.close('keepalive-timeout', `nothing received for ${limit / 1000} s`);
      }, 500);
    }
    if (tokenExpiry) {
      this.timers.push(timer(tokenExpiry - Date.now(), () => this.close('token-expired', `the SAS token expired at ${new Date(tokenExpiry).toISOString()}`)));
    }
    this.hub.event('connect', {
      ...this.who(), auth: authType, onBehalfOf, transport: this.transport, remote: this.remote,
      tokenExpiry: tokenExpiry ? new Date(tokenExpiry).toISOString() : null,
      cleanSession: this.cleanSession, sessionPresent, keepAlive: this.keepAlive,
      apiVersion: this.apiVersion, deviceClientType: this.deviceClientType,
      ...(this.will ? { will: this.will.topic } : {}),
    });
    this.deliverC2D();
  }

  // The bag of a telemetry topic of this identity, or null when the topic is not one. The Node
  // SDK's sendOutputEvent ends the topic with a "/" after the bag.
  telemetryTopic(topic) {
    const prefix = this.moduleId
      ? `devices/${this.deviceId}/modules/${this.moduleId}/messages/events`
      : `devices/${this.deviceId}/messages/events`;
    if (topic === prefix || topic === `${prefix}/`) return '';
    if (!topic.startsWith(`${prefix}/`)) return null;
    const bag = topic.slice(prefix.length + 1);
    return bag.endsWith('/') ? bag.slice(0, -1) : bag;
  }

  onPublish(p) {
    const { topic } = p;
    if (p.qos === 2) return this.close('protocol-error', `a QoS 2 publish on ${topic} (IoT Hub closes the connection)`);
    const ack = () => {
      if (p.qos !== 1) return;
      this.send({ cmd: 'puback', messageId: p.messageId });
    };
    const bag = this.telemetryTopic(topic);
    if (bag !== null) {
      if (p.payload.length + Buffer.byteLength(topic) > MAX_MESSAGE) {
        return this.close('protocol-error', `a message of ${p.payload.length} bytes on ${topic} (IoT Hub takes up to ${MAX_MESSAGE})`);
      }
      this.hub.addTelemetry(this, topic, bag, p.payload, { qos: p.qos, dup: p.dup, retain: p.retain });
      if (p.qos === 1 && this.hub.settings.holdTelemetryAcks) this.heldAcks.push(p.messageId);
      else ack();
      return;
    }
    const { path, query } = splitQuery(topic);
    const rid = query.get('$rid');
    if (path === '$iothub/twin/GET/' || path === '$iothub/twin/GET') {
      if (!rid) return this.close('protocol-error', `${topic}: no $rid`);
      ack();
      this.hub.event('twin-get', { ...this.who(), rid });
      this.respondTwin(200, rid, null, Buffer.from(JSON.stringify(this.ident.twin.deviceView())));
      return;
    }
    if (path === '$iothub/twin/PATCH/properties/reported/' || path === '$iothub/twin/PATCH/properties/reported') {
      if (!rid) return this.close('protocol-error', `${topic}: no $rid`);
      ack();
      let doc;
      try {
        doc = JSON.parse(p.payload.toString('utf8'));
      } catch (e) {
        this.hub.event('twin-reported-refused', { ...this.who(), rid, error: 'malformed JSON' });
        return this.respondTwin(400, rid, null, Buffer.from(JSON.stringify({ errorCode: 400004, message: 'Malformed JSON' })));
      }
      const err = this.ident.twin.update('reported', doc, false);
      if (err) {
        this.hub.event('twin-reported-refused', { ...this.who(), rid, error: err });
        return this.respondTwin(400, rid, null, Buffer.from(JSON.stringify({ errorCode: 400004, message: err })));
      }
      const v = this.ident.twin.reportedVersion;
      this.hub.event('twin-reported', { ...this.who(), rid, version: v, patch: doc });
      this.hub.save();
      return this.respondTwin(204, rid, v, Buffer.alloc(0));
    }
    const mres = /^\$iothub\/methods\/res\/([^/]*)\/?$/.exec(path);
    if (mres) {
      if (!/^-?[0-9]+$/.test(mres[1])) return this.close('protocol-error', `${topic}: the status is not an integer`);
      if (!rid) return this.close('protocol-error', `${topic}: no $rid`);
      ack();
      this.hub.methodResponse(this.ident, rid, Number(mres[1]), p.payload);
      return;
    }
    if (topic.startsWith('devices/')) {
      return this.close('protocol-error', `publish on ${topic}: not a topic of ${this.clientId}`);
    }
    return this.close('protocol-error', `publish on ${topic}: not a topic IoT Hub supports`);
  }

  respondTwin(status, rid, version, body) {
    const topic = `$iothub/twin/res/${status}/?$rid=${rid}` + (version === null ? '' : `&$version=${version}`);
    if (!this.subscribedTo(topic)) {
      this.hub.event('twin-response-unsubscribed', { ...this.who(), rid, status, note: 'no subscription to $iothub/twin/res/#: not sent' });
      return;
    }
    this.send({ cmd: 'publish', topic, payload: body, qos: 0, retain: false, dup: false });
  }

  subscribedTo(topic) {
    for (const f of this.subscriptions.keys()) if (topicMatches(f, topic)) return true;
    return false;
  }

  grantedFor(topic) {
    let q = -1;
    for (const [f, g] of this.subscriptions) if (topicMatches(f, topic)) q = Math.max(q, g);
    return q;
  }

  // The topic filters IoT Hub lets this identity subscribe to.
  allowedFilter(f) {
    const common = ['$iothub/twin/res/#', '$iothub/twin/PATCH/properties/desired/#', '$iothub/methods/POST/#'];
    if (common.includes(f)) return true;
    if (this.moduleId) {
      const m = `devices/${this.deviceId}/modules/${this.moduleId}`;
      return f === `${m}/#` || f === `${m}/inputs/#`;
    }
    return f === `devices/${this.deviceId}/messages/devicebound/#`;
  }

  onSubscribe(p) {
    const granted = [];
    const topics = [];
    for (const { topic, qos } of p.subscriptions) {
      let g;
      if (!this.allowedFilter(topic)) g = 0x80;
      else if (!this.subscriptions.has(topic) && this.subscriptions.size >= MAX_SUBSCRIPTIONS) g = 0x80;
      else {
        g = Math.min(qos, 1); // "IoT Hub grants maximum QoS level 1"
        this.subscriptions.set(topic, g);
      }
      granted.push(g);
      topics.push({ topic, qos, granted: g });
    }
    this.send({ cmd: 'suback', messageId: p.messageId, granted });
    this.hub.event('subscribe', { ...this.who(), topics });
    this.deliverC2D();
  }

  onUnsubscribe(p) {
    for (const t of p.unsubscriptions) this.subscriptions.delete(t);
    this.send({ cmd: 'unsuback', messageId: p.messageId });
    this.hub.event('unsubscribe', { ...this.who(), topics: p.unsubscriptions });
  }

  onPuback(p) {
    const msg = this.inflight.get(p.messageId);
    if (!msg) {
      this.hub.event('puback-unmatched', { ...this.who(), packetId: p.messageId });
      return;
    }
    this.inflight.delete(p.messageId);
    this.hub.completeC2D(this.hub.devices.get(this.deviceId), msg, 'completed');
  }

  // ---- what the cloud sends -----------------------------------------------------------------------

  notifyDesired(version, body) {
    const topic = `$iothub/twin/PATCH/properties/desired/?$version=${version}`;
    if (!this.connected || this.closed || !this.subscribedTo(topic)) return false;
    this.send({ cmd: 'publish', topic, payload: Buffer.from(JSON.stringify(body)), qos: 0, retain: false, dup: false });
    return true;
  }

  methodsSubscribed() {
    return this.connected && !this.closed && this.subscribedTo('$iothub/methods/POST/m/?$rid=1');
  }

  sendMethod(name, rid, payload) {
    // "Method requests are QoS 0."
    this.send({ cmd: 'publish', topic: `$iothub/methods/POST/${name}/?$rid=${rid}`, payload, qos: 0, retain: false, dup: false });
  }

  allocPacketId() {
    for (let i = 0; i < 65535; i++) {
      const id = this.nextPacketId;
      this.nextPacketId = id === 65535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
    return null;
  }

  // Delivers the device's queued C2D messages in order, once it subscribed to
  // devices/{d}/messages/devicebound/#.
  deliverC2D() {
    if (!this.connected || this.closed || this.moduleId) return;
    const d = this.hub.devices.get(this.deviceId);
    if (!d) return;
    const probe = `devices/${this.deviceId}/messages/devicebound/x`;
    const qos = this.grantedFor(probe);
    if (qos < 0) return;
    const now = Date.now();
    for (const msg of [...d.c2d.queue]) {
      if (msg.state !== 'enqueued' || msg.expiry <= now) continue;
      const topic = this.hub.c2dTopic(d, msg);
      msg.deliveryCount++;
      if (qos === 0) {
        this.send({ cmd: 'publish', topic, payload: msg.payload, qos: 0, retain: false, dup: false });
        this.hub.event('c2d-sent', { ...this.who(), sequenceNumber: msg.sequenceNumber, qos: 0 });
        this.hub.completeC2D(d, msg, 'completed');
        continue;
      }
      let dup = false;
      let pid;
      if (msg.packetId && msg.sessionRef && msg.sessionRef === this.persistRef && !this.inflight.has(msg.packetId)) {
        pid = msg.packetId;
        dup = true;
      } else {
        pid = this.allocPacketId();
        if (pid === null) return;
      }
      msg.packetId = pid;
      msg.sessionRef = this.persistRef;
      msg.state = 'invisible';
      this.inflight.set(pid, msg);
      this.send({ cmd: 'publish', topic, payload: msg.payload, qos: 1, messageId: pid, retain: false, dup });
      this.hub.event('c2d-sent', { ...this.who(), sequenceNumber: msg.sequenceNumber, packetId: pid, dup, deliveryCount: msg.deliveryCount });
    }
  }

  releaseHeldAcks() {
    for (const id of this.heldAcks) this.send({ cmd: 'puback', messageId: id });
    this.heldAcks = [];
  }

  toJSON() {
    return {
      connectionId: this.id,
      deviceId: this.deviceId,
      moduleId: this.moduleId,
      clientId: this.clientId,
      auth: this.authType,
      onBehalfOf: this.onBehalfOf,
      transport: this.transport,
      remote: this.remote,
      connectedAt: this.connectedAt,
      tokenExpiry: this.tokenExpiry ? new Date(this.tokenExpiry).toISOString() : null,
      cleanSession: this.cleanSession,
      keepAlive: this.keepAlive,
      apiVersion: this.apiVersion,
      deviceClientType: this.deviceClientType,
      subscriptions: [...this.subscriptions].map(([topic, qos]) => ({ topic, qos })),
      c2dInflight: this.inflight.size,
      heldAcks: this.heldAcks.length,
    };
  }
}

module.exports = { Session, topicMatches };
