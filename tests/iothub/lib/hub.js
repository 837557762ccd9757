// hub.js — the stand-in's state and IoT Hub's cloud side: the identity registry (devices,
// modules, edge devices with their $edgeAgent and $edgeHub modules, X.509 CA certificates),
// twins, cloud-to-device queues, direct method calls, the telemetry received, the live
// connections and an event log. The MQTT sessions (session.js) and the control API
// (control.js) both work on it; nothing here speaks a protocol.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const { EventEmitter } = require('node:events');
const { Twin, isObject } = require('./twin');
const propbag = require('./propbag');
const sas = require('./sas');

// IoT Hub's device and module id alphabet (up to 128 characters).
const ID_RE = /^[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}$/;
const C2D_QUEUE_MAX = 50;            // IoT Hub: "Each device queue holds, at most, 50 messages"
const C2D_TTL_DEFAULT_S = 3600;      // defaultTtlAsIso8601: one hour
const C2D_TTL_MAX_S = 2 * 24 * 3600; // up to two days
const C2D_HISTORY_MAX = 500;         // finished C2D messages kept per device for the control API
const METHOD_PAYLOAD_MAX = 128 * 1024;

class HubError extends Error {
  // httpStatus for the control API, errorCode as IoT Hub numbers them (404001 DeviceNotFound …)
  constructor(httpStatus, errorCode, message) {
    super(message);
    this.httpStatus = httpStatus;
    this.errorCode = errorCode;
  }
}

function newKey() {
  return crypto.randomBytes(32).toString('base64');
}

function checkKey(k, path) {
  if (typeof k !== 'string') throw new HubError(400, 400004, `${path}: must be a base64 string`);
  const raw = Buffer.from(k, 'base64');
  if (raw.toString('base64') !== k || raw.length < 16 || raw.length > 64) {
    throw new HubError(400, 400004, `${path}: must be base64 of 16 to 64 bytes`);
  }
}

function normThumbprint(t, path) {
  if (t === null || t === undefined) return null;
  const s = String(t).replace(/:/g, '').toLowerCase();
  if (!/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(s)) {
    throw new HubError(400, 400004, `${path}: must be a SHA-1 (40) or SHA-256 (64) hex thumbprint`);
  }
  return s;
}

// The authentication section of a registry entry, IoT Hub's shape; keys made when absent.
function parseAuthentication(a, path) {
  const auth = a === undefined ? { type: 'sas' } : a;
  if (!isObject(auth)) throw new HubError(400, 400004, `${path}: must be an object`);
  switch (auth.type) {
    case 'sas': {
      const sk = auth.symmetricKey || {};
      const primaryKey = sk.primaryKey || newKey();
      const secondaryKey = sk.secondaryKey || newKey();
      checkKey(primaryKey, `${path}.symmetricKey.primaryKey`);
      checkKey(secondaryKey, `${path}.symmetricKey.secondaryKey`);
      return { type: 'sas', symmetricKey: { primaryKey, secondaryKey } };
    }
    case 'selfSigned': {
      const tp = auth.x509Thumbprint || {};
      const primaryThumbprint = normThumbprint(tp.primaryThumbprint, `${path}.x509Thumbprint.primaryThumbprint`);
      const secondaryThumbprint = normThumbprint(tp.secondaryThumbprint, `${path}.x509Thumbprint.secondaryThumbprint`);
      if (!primaryThumbprint) throw new HubError(400, 400004, `${path}.x509Thumbprint.primaryThumbprint: required`);
      return { type: 'selfSigned', x509Thumbprint: { primaryThumbprint, secondaryThumbprint } };
    }
    case 'certificateAuthority':
      return { type: 'certificateAuthority' };
    default:
      throw new HubError(400, 400004, `${path}.type: one of "sas", "selfSigned", "certificateAuthority"`);
  }
}

function authenticationJSON(a) {
  return {
    type: a.type,
    symmetricKey: a.type === 'sas' ? { ...a.symmetricKey } : { primaryKey: null, secondaryKey: null },
    x509Thumbprint: a.type === 'selfSigned' ? { ...a.x509Thumbprint }
      : { primaryThumbprint: null, secondaryThumbprint: null },
  };
}

function identityKey(deviceId, moduleId) {
  return moduleId ? `${deviceId}/${moduleId}` : deviceId;
}

function isoNow() {
  return new Date().toISOString();
}

// Node's timers take at most 2^31-1 ms.
function timer(ms, fn) {
  return setTimeout(fn, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
}

class Hub extends EventEmitter {
  constructor(opts) {
    super();
    this.setMaxListeners(0);
    this.hostName = opts.hostName;
    this.stateFile = opts.stateFile || null;
    this.maxTelemetry = opts.maxTelemetry || 100000;
    this.maxEvents = opts.maxEvents || 20000;
    this.log = opts.log || (() => {});
    this.devices = new Map();     // deviceId -> device (see putDevice)
    this.cas = new Map();         // name -> PEM of an X.509 CA certificate
    this.sessions = new Map();    // identity key -> the live Session
    this.telemetry = [];
    this.telemetrySeq = 0;
    this.telemetryDropped = 0;
    this.events = [];
    this.eventSeq = 0;
    this.connectionSeq = 0;
    this.methodSeq = 0;
    this.c2dSeq = 0;
    this.pendingMethods = new Map(); // rid -> {ident, resolve, timer, methodName}
    this.settings = { refuseConnections: null, holdTelemetryAcks: false };
    this.saveTimer = null;
    if (this.stateFile && fs.existsSync(this.stateFile)) this.load();
    this.sweeper = setInterval(() => this.expireC2D(), 1000);
    this.sweeper.unref();
  }

  // ---- events ---------------------------------------------------------------------------

  event(type, fields) {
    const e = { seq: ++this.eventSeq, time: isoNow(), type, ...fields };
    this.events.push(e);
    if (this.events.length > this.maxEvents) this.events.splice(0, this.events.length - this.maxEvents);
    this.log(Hub.eventLine(e));
    this.changed();
    return e;
  }

  static eventLine(e) {
    const { seq, time, type, deviceId, moduleId, ...rest } = e;
    const who = deviceId ? ` ${identityKey(deviceId, moduleId)}` : '';
    const more = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
    return `${time} #${seq} ${type}${who}${more ? ' ' + more : ''}`;
  }

  // Wakes the control API's long polls.
  changed() {
    this.emit('change');
  }

  // ---- registry ---------------------------------------------------------------------------

  checkId(id, what) {
    if (typeof id !== 'string' || !ID_RE.test(id)) {
      throw new HubError(400, 400004, `${what} "${id}": up to 128 letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '`);
    }
  }

  device(deviceId) {
    const d = this.devices.get(deviceId);
    if (!d) throw new HubError(404, 404001, `device "${deviceId}" is not registered`);
    return d;
  }

  // identity(deviceId, moduleId) -> the device or module record, or throws 404.
  identity(deviceId, moduleId) {
    const d = this.device(deviceId);
    if (!moduleId) return d;
    const m = d.modules.get(moduleId);
    if (!m) throw new HubError(404, 404010, `module "${moduleId}" of device "${deviceId}" is not registered`);
    return m;
  }

  findIdentity(deviceId, moduleId) {
    try {
      return this.identity(deviceId, moduleId);
    } catch (e) {
      return null;
    }
  }

  newIdentity(deviceId, moduleId, authentication) {
    return {
      deviceId,
      moduleId: moduleId || null,
      generationId: String(BigInt.asUintN(63, crypto.randomBytes(8).readBigUInt64BE())),
      authentication,
      twin: new Twin(),
      persisted: null,   // the MQTT session kept for clean-session-0 clients: {subscriptions: Map}
      lastActivityTime: null,
    };
  }

  // PUT /devices/{id}: create or update. body: {status, capabilities: {iotEdge}, authentication}.
  putDevice(deviceId, body) {
    this.checkId(deviceId, 'deviceId');
    if (!isObject(body)) throw new HubError(400, 400004, 'the body must be a JSON object');
    if (body.deviceId !== undefined && body.deviceId !== deviceId) {
      throw new HubError(400, 400004, `deviceId: "${body.deviceId}" differs from the URL's "${deviceId}"`);
    }
    const status = body.status === undefined ? 'enabled' : body.status;
    if (status !== 'enabled' && status !== 'disabled') {
      throw new HubError(400, 400004, 'status: "enabled" or "disabled"');
    }
    const caps = body.capabilities === undefined ? {} : body.capabilities;
    if (!isObject(caps) || (caps.iotEdge !== undefined && typeof caps.iotEdge !== 'boolean')) {
      throw new HubError(400, 400004, 'capabilities.iotEdge: must be a boolean');
    }
    const old = this.devices.get(deviceId);
    const authentication = body.authentication === undefined && old
      ? old.authentication : parseAuthentication(body.authentication, 'authentication');
    const iotEdge = caps.iotEdge === undefined ? (old ? old.iotEdge : false) : caps.iotEdge;
    // The device's scope (IoT Hub's deviceScope / parentScopes): a leaf in an edge device's
    // scope has that edge as its parent, which lets the edge authenticate on its behalf.
    const oldScopes = old ? JSON.stringify(this.parentScopes(old)) : null;
    let deviceScope = old ? old.deviceScope || null : null;
    let parentScopes = old ? old.parentScopes || [] : [];
    if (body.deviceScope !== undefined && !iotEdge) {
      if (body.deviceScope !== null && body.deviceScope !== '' && !this.edgeOfScope(body.deviceScope)) {
        throw new HubError(400, 400004, `deviceScope: "${body.deviceScope}" is no registered edge device's scope`);
      }
      deviceScope = body.deviceScope || null;
    }
    if (body.parentScopes !== undefined) {
      if (!Array.isArray(body.parentScopes) || body.parentScopes.length > 1 ||
          !body.parentScopes.every((x) => typeof x === 'string' && this.edgeOfScope(x))) {
        throw new HubError(400, 400004, 'parentScopes: at most one registered edge device\'s scope');
      }
      parentScopes = body.parentScopes;
      if (!iotEdge) deviceScope = parentScopes[0] || null;
    }
    let d = old;
    if (!d) {
      d = this.newIdentity(deviceId, null, authentication);
      d.modules = new Map();
      d.c2d = { queue: [], history: [] };
      this.devices.set(deviceId, d);
    }
    const authChanged = old && JSON.stringify(old.authentication) !== JSON.stringify(authentication);
    d.authentication = authentication;
    d.status = status;
    d.iotEdge = iotEdge;
    d.deviceScope = iotEdge ? null : deviceScope;
    d.parentScopes = iotEdge ? parentScopes : [];
    const scopeChanged = old && oldScopes !== JSON.stringify(this.parentScopes(d));
    // IoT Hub makes an edge device's two system modules with the device
    if (iotEdge) {
      for (const m of ['$edgeAgent', '$edgeHub']) {
        if (!d.modules.has(m)) d.modules.set(m, this.newIdentity(deviceId, m, parseAuthentication(undefined, m)));
      }
    }
    this.event(old ? 'device-updated' : 'device-created', { deviceId, auth: authentication.type, status, iotEdge });
    if (status === 'disabled') this.disconnect(deviceId, '*', 'device-disabled');
    else if (authChanged) this.disconnect(deviceId, null, 'credentials-changed');
    else if (scopeChanged) this.disconnect(deviceId, '*', 'scope-changed');
    this.save();
    return this.deviceJSON(d);
  }

  // An edge device's own scope, as IoT Hub writes it.
  scopeOf(d) {
    return `ms-azure-iot-edge://${d.deviceId}-${d.generationId}`;
  }

  edgeOfScope(scope) {
    for (const d of this.devices.values()) if (d.iotEdge && this.scopeOf(d) === scope) return d;
    return null;
  }

  // The scopes a device is in: a leaf's deviceScope, an edge device's parentScopes.
  parentScopes(d) {
    return d.iotEdge ? d.parentScopes || [] : d.deviceScope ? [d.deviceScope] : [];
  }

  // A token on behalf of edge device E (audience {host}/devices/E/modules/$edgeHub) for the
  // identity deviceId[/moduleId]: null when IoT Hub would take it, else the reason. The edge
  // must be an enabled edge device, the token signed with its $edgeHub's key, and the identity
  // in its scope: a device whose parent is E, or a module of E or of such a device.
  checkOnBehalfOf(t, host, edgeId, deviceId, moduleId) {
    if (host.toLowerCase() !== this.hostName.toLowerCase()) return `the token names hub "${host}", this is "${this.hostName}"`;
    const edge = this.devices.get(edgeId);
    if (!edge) return `${edgeId} is not registered`;
    if (!edge.iotEdge) return `${edgeId} is not an edge device`;
    if (edge.status !== 'enabled') return `${edgeId} is disabled`;
    const hubIdent = edge.modules.get('$edgeHub');
    if (!hubIdent || hubIdent.authentication.type !== 'sas') return `${edgeId}/$edgeHub has no SAS keys`;
    const k = hubIdent.authentication.symmetricKey;
    const bad = sas.verify(t, `${this.hostName}/devices/${edgeId}/modules/$edgeHub`, [k.primaryKey, k.secondaryKey], Math.floor(Date.now() / 1000));
    if (bad) return `SAS token: ${bad}`;
    if (moduleId && deviceId === edgeId) return null;
    const d = this.devices.get(deviceId);
    if (!this.parentScopes(d).includes(this.scopeOf(edge))) {
      const p = this.parentScopes(d)[0];
      const parent = p ? this.edgeOfScope(p) : null;
      return `${deviceId} is not in the scope of ${edgeId} (its parent is ${parent ? parent.deviceId : 'none'})`;
    }
    return null;
  }

  deleteDevice(deviceId) {
    this.device(deviceId);
    this.disconnect(deviceId, '*', 'deleted');
    this.devices.delete(deviceId);
    this.event('device-deleted', { deviceId });
    this.save();
  }

  // PUT /devices/{id}/modules/{mid}: body {authentication, managedBy}.
  putModule(deviceId, moduleId, body) {
    const d = this.device(deviceId);
    this.checkId(moduleId, 'moduleId');
    if (!isObject(body)) throw new HubError(400, 400004, 'the body must be a JSON object');
    if (body.moduleId !== undefined && body.moduleId !== moduleId) {
      throw new HubError(400, 400004, `moduleId: "${body.moduleId}" differs from the URL's "${moduleId}"`);
    }
    const old = d.modules.get(moduleId);
    const authentication = body.authentication === undefined && old
      ? old.authentication : parseAuthentication(body.authentication, 'authentication');
    let m = old;
    if (!m) {
      m = this.newIdentity(deviceId, moduleId, authentication);
      d.modules.set(moduleId, m);
    }
    const authChanged = old && JSON.stringify(old.authentication) !== JSON.stringify(authentication);
    m.authentication = authentication;
    if (body.managedBy !== undefined) m.managedBy = body.managedBy;
    this.event(old ? 'module-updated' : 'module-created', { deviceId, moduleId, auth: authentication.type });
    if (authChanged) this.disconnect(deviceId, moduleId, 'credentials-changed');
    this.save();
    return this.moduleJSON(m);
  }

  deleteModule(deviceId, moduleId) {
    const d = this.device(deviceId);
    this.identity(deviceId, moduleId);
    this.disconnect(deviceId, moduleId, 'deleted');
    d.modules.delete(moduleId);
    this.event('module-deleted', { deviceId, moduleId });
    this.save();
  }

  connectionString(ident) {
    if (ident.authentication.type !== 'sas') return null;
    return `HostName=${this.hostName};DeviceId=${ident.deviceId}` +
      (ident.moduleId ? `;ModuleId=${ident.moduleId}` : '') +
      `;SharedAccessKey=${ident.authentication.symmetricKey.primaryKey}`;
  }

  connectionState(ident) {
    return this.sessions.has(identityKey(ident.deviceId, ident.moduleId)) ? 'Connected' : 'Disconnected';
  }

  deviceJSON(d) {
    return {
      deviceId: d.deviceId,
      generationId: d.generationId,
      etag: d.twin.etag(),
      status: d.status,
      connectionState: this.connectionState(d),
      lastActivityTime: d.lastActivityTime,
      cloudToDeviceMessageCount: d.c2d.queue.length,
      capabilities: { iotEdge: d.iotEdge },
      deviceScope: d.iotEdge ? this.scopeOf(d) : d.deviceScope || null,
      parentScopes: this.parentScopes(d),
      authentication: authenticationJSON(d.authentication),
      connectionString: this.connectionString(d),
      modules: [...d.modules.keys()],
    };
  }

  moduleJSON(m) {
    return {
      deviceId: m.deviceId,
      moduleId: m.moduleId,
      generationId: m.generationId,
      managedBy: m.managedBy || null,
      connectionState: this.connectionState(m),
      lastActivityTime: m.lastActivityTime,
      authentication: authenticationJSON(m.authentication),
      connectionString: this.connectionString(m),
    };
  }

  putCertificate(name, pem) {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
      throw new HubError(400, 400004, 'certificate name: 1 to 64 letters, digits, "_", "." or "-"');
    }
    let cert;
    try {
      cert = new crypto.X509Certificate(pem);
    } catch (e) {
      throw new HubError(400, 400004, `pem: not a PEM certificate (${e.message})`);
    }
    if (!cert.ca) throw new HubError(400, 400004, 'pem: not a CA certificate (basicConstraints CA:FALSE or absent)');
    this.cas.set(name, pem);
    this.event('certificate-added', { name, subject: cert.subject });
    this.emit('cas');
    this.save();
    return { name, subject: cert.subject, thumbprint: cert.fingerprint256.replace(/:/g, '') };
  }

  deleteCertificate(name) {
    if (!this.cas.delete(name)) throw new HubError(404, 404001, `certificate "${name}" is not registered`);
    this.event('certificate-deleted', { name });
    this.emit('cas');
    this.save();
  }

  // ---- connections ------------------------------------------------------------------------

  // A session authenticated: it replaces the identity's previous connection, as IoT Hub does
  // (400027 ConnectionForcefullyClosedOnNewConnection).
  attach(session) {
    const key = identityKey(session.deviceId, session.moduleId);
    const old = this.sessions.get(key);
    if (old && old !== session) old.close('replaced', 'a new connection for the same identity');
    this.sessions.set(key, session);
    session.ident.lastActivityTime = isoNow();
  }

  detach(session) {
    const key = identityKey(session.deviceId, session.moduleId);
    if (this.sessions.get(key) === session) this.sessions.delete(key);
    if (session.ident) session.ident.lastActivityTime = isoNow();
  }

  sessionOf(ident) {
    return this.sessions.get(identityKey(ident.deviceId, ident.moduleId)) || null;
  }

  // disconnect(deviceId, moduleId, reason): moduleId null = the device's own connection,
  // "*" = the device's and all its modules'. Returns how many were closed.
  disconnect(deviceId, moduleId, reason) {
    let n = 0;
    for (const s of [...this.sessions.values()]) {
      if (s.deviceId !== deviceId) continue;
      if (moduleId === '*' || (s.moduleId || null) === (moduleId || null)) {
        s.close(reason || 'control', 'closed by the control API');
        n++;
      }
    }
    return n;
  }

  dropAll(reason) {
    const all = [...this.sessions.values()];
    for (const s of all) s.close(reason || 'control', 'all connections dropped by the control API');
    return all.length;
  }

  connectionsJSON() {
    return [...this.sessions.values()].map((s) => s.toJSON());
  }

  // ---- telemetry ----------------------------------------------------------------------------

  // addTelemetry(session, topic, bag, payload, flags) -> the record (what the control API shows).
  addTelemetry(session, topic, bag, payload, flags) {
    const { properties, systemProperties, errors } = propbag.decode(bag);
    if (flags.retain) properties['mqtt-retain'] = 'true';
    if (flags.will) properties['iothub-MessageType'] = 'Will';
    const text = payload.toString('utf8');
    const rec = {
      seq: ++this.telemetrySeq,
      deviceId: session.deviceId,
      moduleId: session.moduleId,
      topic,
      body: Buffer.from(text, 'utf8').equals(payload) ? text : null,
      bodyBase64: payload.toString('base64'),
      properties,
      systemProperties,
      annotations: {
        'iothub-connection-device-id': session.deviceId,
        ...(session.moduleId ? { 'iothub-connection-module-id': session.moduleId } : {}),
        'iothub-connection-auth-method': JSON.stringify({
          scope: session.moduleId ? 'module' : 'device',
          type: session.authType,
          issuer: 'iothub',
        }),
        'iothub-connection-auth-generation-id': session.ident.generationId,
        'iothub-enqueuedtime': isoNow(),
        'iothub-message-source': 'Telemetry',
      },
      enqueuedTimeUtc: isoNow(),
      connectionId: session.id,
      qos: flags.qos,
      dup: !!flags.dup,
      retain: !!flags.retain,
    };
    if (errors.length) rec.bagErrors = errors;
    this.telemetry.push(rec);
    if (this.telemetry.length > this.maxTelemetry) {
      const drop = this.telemetry.length - this.maxTelemetry;
      this.telemetry.splice(0, drop);
      this.telemetryDropped += drop;
    }
    this.event('telemetry', {
      deviceId: session.deviceId, moduleId: session.moduleId, telemetrySeq: rec.seq,
      bytes: payload.length, qos: flags.qos, dup: !!flags.dup, ...(errors.length ? { bagErrors: errors } : {}),
    });
    this.save();
    return rec;
  }

  // ---- twins ----------------------------------------------------------------------------------

  twinJSON(ident) {
    const t = ident.twin;
    const j = {
      deviceId: ident.deviceId,
      ...(ident.moduleId ? { moduleId: ident.moduleId } : {}),
      etag: t.etag(),
      version: t.version,
      status: this.devices.get(ident.deviceId).status,
      connectionState: this.connectionState(ident),
      lastActivityTime: ident.lastActivityTime,
      ...(ident.moduleId ? {} : { capabilities: { iotEdge: ident.iotEdge } }),
      tags: structuredClone(t.tags),
      properties: t.deviceView(),
    };
    return j;
  }

  // The service writes a twin: PATCH (merge) or PUT (replace) of tags and desired properties.
  // A desired change is pushed to the identity's connection if it subscribed, in the form the
  // back end used ("The device receives the same form of update (partial or full replacement)").
  writeTwin(ident, body, replace, ifMatch) {
    if (!isObject(body)) throw new HubError(400, 400004, 'the body must be a JSON object (a twin)');
    const t = ident.twin;
    if (ifMatch && ifMatch !== '*' && ifMatch.replace(/"/g, '') !== t.etag()) {
      throw new HubError(412, 412002, `If-Match "${ifMatch}" does not match the twin's etag "${t.etag()}"`);
    }
    const props = body.properties === undefined ? {} : body.properties;
    if (!isObject(props)) throw new HubError(400, 400004, 'properties: must be an object');
    if (props.reported !== undefined) throw new HubError(400, 400004, 'properties.reported: only the device writes reported properties');
    if (body.tags !== undefined && !isObject(body.tags)) throw new HubError(400, 400004, 'tags: must be an object');
    let desired = props.desired;
    if (desired !== undefined) {
      if (!isObject(desired)) throw new HubError(400, 400004, 'properties.desired: must be an object');
      desired = { ...desired };
      delete desired.$version;
      delete desired.$metadata;
    }
    // check both before changing either
    const trial = Twin.fromJSON(structuredClone(t.toJSON()));
    if (body.tags !== undefined) {
      const e = trial.update('tags', body.tags, replace);
      if (e) throw new HubError(400, 400004, e);
    }
    if (desired !== undefined) {
      const e = trial.update('desired', desired, replace);
      if (e) throw new HubError(400, 400004, e.startsWith('properties.') ? e : `properties.desired.${e}`);
    }
    if (body.tags !== undefined) t.update('tags', body.tags, replace);
    if (desired !== undefined) {
      t.update('desired', desired, replace);
      const notice = { ...structuredClone(replace ? t.desired : desired), $version: t.desiredVersion };
      const s = this.sessionOf(ident);
      const sent = s ? s.notifyDesired(t.desiredVersion, notice) : false;
      this.event('twin-desired', {
        deviceId: ident.deviceId, moduleId: ident.moduleId, version: t.desiredVersion,
        replace: !!replace, notified: sent,
      });
    } else {
      this.event('twin-tags', { deviceId: ident.deviceId, moduleId: ident.moduleId, version: t.version });
    }
    this.save();
    return this.twinJSON(ident);
  }

  // ---- direct methods ---------------------------------------------------------------------------

  // invokeMethod(ident, request) -> Promise<{httpStatus, body}> as IoT Hub's
  // POST /twins/{id}[/modules/{mid}]/methods answers: 200 {status, payload} with the device's
  // answer, 404 (404103) when the identity is not connected and subscribed within
  // connectTimeoutInSeconds, 504 (504101) when it does not answer within
  // responseTimeoutInSeconds.
  async invokeMethod(ident, req) {
    if (!isObject(req)) throw new HubError(400, 400004, 'the body must be a JSON object');
    const { methodName } = req;
    if (typeof methodName !== 'string' || !/^[^/?#+\s$]{1,256}$/.test(methodName)) {
      throw new HubError(400, 400004, 'methodName: 1 to 256 characters without / ? # + $ or spaces');
    }
    const rt = req.responseTimeoutInSeconds === undefined ? 30 : req.responseTimeoutInSeconds;
    const ct = req.connectTimeoutInSeconds === undefined ? 0 : req.connectTimeoutInSeconds;
    if (typeof rt !== 'number' || rt < 1 || rt > 3600) {
      throw new HubError(400, 400004, 'responseTimeoutInSeconds: a number from 1 to 3600');
    }
    if (typeof ct !== 'number' || ct < 0 || ct > 300) {
      throw new HubError(400, 400004, 'connectTimeoutInSeconds: a number from 0 to 300');
    }
    const payload = req.payload === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(req.payload));
    if (payload.length > METHOD_PAYLOAD_MAX) throw new HubError(400, 400004, `payload: larger than ${METHOD_PAYLOAD_MAX} bytes`);
    const who = { deviceId: ident.deviceId, moduleId: ident.moduleId };

    const ready = () => {
      const s = this.sessionOf(ident);
      return s && s.methodsSubscribed() ? s : null;
    };
    let session = ready();
    if (!session && ct > 0) session = await this.waitFor(ready, ct * 1000);
    if (!session) {
      this.event('method-not-online', { ...who, methodName });
      return {
        httpStatus: 404,
        body: { errorCode: 404103, message: 'Timed out waiting for device to connect.', info: { timeout: `${ct}s` } },
      };
    }
    const rid = String(++this.methodSeq);
    return new Promise((resolve) => {
      const t = timer(rt * 1000, () => {
        this.pendingMethods.delete(rid);
        this.event('method-timeout', { ...who, methodName, rid });
        resolve({
          httpStatus: 504,
          body: { errorCode: 504101, message: 'Timed out waiting for the response from device.', info: { timeout: `${rt}s` } },
        });
      });
      this.pendingMethods.set(rid, { ident, methodName, timer: t, resolve });
      this.event('method-request', { ...who, methodName, rid, connectionId: session.id });
      session.sendMethod(methodName, rid, payload);
    });
  }

  // The identity answered `$iothub/methods/res/{status}/?$rid={rid}`.
  methodResponse(ident, rid, status, body) {
    const p = this.pendingMethods.get(rid);
    const who = { deviceId: ident.deviceId, moduleId: ident.moduleId };
    if (!p || p.ident !== ident) {
      this.event('method-response-unmatched', { ...who, rid, status });
      return;
    }
    this.pendingMethods.delete(rid);
    clearTimeout(p.timer);
    let payload = null;
    let note;
    const text = body.toString('utf8');
    if (text.length) {
      try {
        payload = JSON.parse(text);
      } catch (e) {
        payload = text;
        note = 'the response body is not JSON; passed on as a string';
      }
    }
    this.event('method-response', { ...who, methodName: p.methodName, rid, status, ...(note ? { note } : {}) });
    p.resolve({ httpStatus: 200, body: { status, payload } });
  }

  // Resolves with fn()'s first truthy value, or null after ms.
  waitFor(fn, ms) {
    return new Promise((resolve) => {
      const check = () => {
        const v = fn();
        if (v) {
          done(v);
        }
      };
      const done = (v) => {
        clearTimeout(t);
        this.off('change', check);
        resolve(v);
      };
      const t = timer(ms, () => done(null));
      this.on('change', check);
      check();
    });
  }

  // ---- cloud-to-device messages -------------------------------------------------------------------

  // sendC2D(deviceId, body): body {body | bodyBase64, messageId, correlationId, userId,
  // contentType, contentEncoding, expiryTimeUtc | ttlSeconds, ack, properties}.
  sendC2D(deviceId, req) {
    const d = this.device(deviceId);
    if (!isObject(req)) throw new HubError(400, 400004, 'the body must be a JSON object');
    let payload;
    if (req.bodyBase64 !== undefined) {
      if (typeof req.bodyBase64 !== 'string') throw new HubError(400, 400004, 'bodyBase64: must be a string');
      payload = Buffer.from(req.bodyBase64, 'base64');
    } else if (typeof req.body === 'string') {
      payload = Buffer.from(req.body, 'utf8');
    } else if (req.body !== undefined) {
      payload = Buffer.from(JSON.stringify(req.body), 'utf8');
    } else {
      payload = Buffer.alloc(0);
    }
    if (payload.length > 64 * 1024) throw new HubError(400, 400004, 'body: larger than 64 KiB (IoT Hub\'s C2D limit)');
    const strings = ['messageId', 'correlationId', 'userId', 'contentType', 'contentEncoding'];
    for (const k of strings) {
      if (req[k] !== undefined && typeof req[k] !== 'string') throw new HubError(400, 400004, `${k}: must be a string`);
    }
    const props = req.properties === undefined ? {} : req.properties;
    if (!isObject(props)) throw new HubError(400, 400004, 'properties: must be an object of strings (or null)');
    for (const [k, v] of Object.entries(props)) {
      if (k.startsWith('$') || k.length === 0) throw new HubError(400, 400004, `properties.${k}: application property names may not start with "$"`);
      if (v !== null && typeof v !== 'string') throw new HubError(400, 400004, `properties.${k}: must be a string or null`);
    }
    const ack = req.ack === undefined ? null : req.ack;
    if (ack !== null && !['none', 'positive', 'negative', 'full'].includes(ack)) {
      throw new HubError(400, 400004, 'ack: one of none, positive, negative, full');
    }
    let expiry;
    let explicitExpiry = false;
    if (req.expiryTimeUtc !== undefined) {
      expiry = Date.parse(req.expiryTimeUtc);
      if (Number.isNaN(expiry)) throw new HubError(400, 400004, 'expiryTimeUtc: not an ISO 8601 time');
      explicitExpiry = true;
    } else {
      const ttl = req.ttlSeconds === undefined ? C2D_TTL_DEFAULT_S : req.ttlSeconds;
      if (typeof ttl !== 'number' || ttl <= 0 || ttl > C2D_TTL_MAX_S) {
        throw new HubError(400, 400004, `ttlSeconds: a number above 0, at most ${C2D_TTL_MAX_S}`);
      }
      expiry = Date.now() + ttl * 1000;
    }
    const pending = d.c2d.queue.length;
    if (pending >= C2D_QUEUE_MAX) {
      throw new HubError(403, 403004, `Device queue depth cannot exceed ${C2D_QUEUE_MAX} messages`);
    }
    const msg = {
      sequenceNumber: ++this.c2dSeq,
      messageId: req.messageId === undefined ? null : req.messageId,
      correlationId: req.correlationId || null,
      userId: req.userId || null,
      contentType: req.contentType || null,
      contentEncoding: req.contentEncoding || null,
      ack,
      properties: { ...props },
      payload,
      expiry,
      explicitExpiry,
      enqueuedTimeUtc: isoNow(),
      state: 'enqueued',
      deliveryCount: 0,
      packetId: null,      // while sent and not acknowledged in a session that persists
      sessionRef: null,
      completedTimeUtc: null,
    };
    d.c2d.queue.push(msg);
    this.event('c2d-enqueued', { deviceId, sequenceNumber: msg.sequenceNumber, messageId: msg.messageId });
    const s = this.sessionOf(d);
    if (s) s.deliverC2D();
    this.save();
    return this.c2dJSON(d, msg);
  }

  // The topic a C2D message is delivered on, with IoT Hub's system properties.
  c2dTopic(d, msg) {
    const sys = {
      messageId: msg.messageId || undefined,
      to: `/devices/${d.deviceId}/messages/deviceBound`,
      correlationId: msg.correlationId || undefined,
      userId: msg.userId || undefined,
      contentType: msg.contentType || undefined,
      contentEncoding: msg.contentEncoding || undefined,
      expiryTimeUtc: msg.explicitExpiry ? new Date(msg.expiry).toISOString() : undefined,
    };
    const props = { ...msg.properties };
    if (msg.ack && msg.ack !== 'none') props['iothub-ack'] = msg.ack;
    return `devices/${d.deviceId}/messages/devicebound/${propbag.encode(sys, props)}`;
  }

  completeC2D(d, msg, how) {
    const i = d.c2d.queue.indexOf(msg);
    if (i < 0) return;
    d.c2d.queue.splice(i, 1);
    msg.state = how;
    msg.completedTimeUtc = isoNow();
    msg.packetId = null;
    msg.sessionRef = null;
    d.c2d.history.push(msg);
    if (d.c2d.history.length > C2D_HISTORY_MAX) d.c2d.history.shift();
    this.event(`c2d-${how}`, { deviceId: d.deviceId, sequenceNumber: msg.sequenceNumber, messageId: msg.messageId, deliveryCount: msg.deliveryCount });
    this.save();
  }

  // Messages past their expiry that are not with the device are dead-lettered ("expired").
  expireC2D() {
    const now = Date.now();
    for (const d of this.devices.values()) {
      for (const msg of [...d.c2d.queue]) {
        if (msg.state === 'enqueued' && msg.expiry <= now) this.completeC2D(d, msg, 'expired');
      }
    }
  }

  purgeC2D(deviceId) {
    const d = this.device(deviceId);
    const n = d.c2d.queue.length;
    for (const msg of [...d.c2d.queue]) this.completeC2D(d, msg, 'purged');
    return { totalMessagesPurged: n, deviceId };
  }

  c2dJSON(d, msg) {
    return {
      sequenceNumber: msg.sequenceNumber,
      messageId: msg.messageId,
      correlationId: msg.correlationId,
      state: msg.state,
      deliveryCount: msg.deliveryCount,
      enqueuedTimeUtc: msg.enqueuedTimeUtc,
      expiryTimeUtc: new Date(msg.expiry).toISOString(),
      completedTimeUtc: msg.completedTimeUtc,
      topic: this.c2dTopic(d, msg),
      body: msg.payload.toString('utf8'),
      queueDepth: d.c2d.queue.length,
    };
  }

  // ---- persistence (--state-file) -----------------------------------------------------------------

  save() {
    if (!this.stateFile || this.saveTimer) return;
    this.saveTimer = setTimeout(() => this.saveNow(), 100);
  }

  saveNow() {
    if (this.saveTimer) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    if (!this.stateFile) return;
    const identJSON = (i) => ({
      deviceId: i.deviceId, moduleId: i.moduleId, generationId: i.generationId,
      authentication: i.authentication, managedBy: i.managedBy || null, twin: i.twin.toJSON(),
      persisted: i.persisted ? [...i.persisted.subscriptions] : null, lastActivityTime: i.lastActivityTime,
    });
    const state = {
      hostName: this.hostName,
      seqs: { telemetry: this.telemetrySeq, method: this.methodSeq, c2d: this.c2dSeq, event: this.eventSeq },
      cas: [...this.cas],
      devices: [...this.devices.values()].map((d) => ({
        ...identJSON(d), status: d.status, iotEdge: d.iotEdge,
        deviceScope: d.deviceScope || null, parentScopes: d.parentScopes || [],
        modules: [...d.modules.values()].map(identJSON),
        c2d: [...d.c2d.queue, ...d.c2d.history].map((m) => ({
          ...m, payload: m.payload.toString('base64'), sessionRef: undefined,
          packetId: null, state: m.state === 'invisible' ? 'enqueued' : m.state,
        })),
      })),
      telemetry: this.telemetry,
    };
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(state));
    fs.renameSync(tmp, this.stateFile);
  }

  load() {
    const s = JSON.parse(fs.readFileSync(this.stateFile, 'utf8'));
    const identFrom = (j) => ({
      deviceId: j.deviceId, moduleId: j.moduleId, generationId: j.generationId,
      authentication: j.authentication, managedBy: j.managedBy, twin: Twin.fromJSON(j.twin),
      persisted: j.persisted ? { subscriptions: new Map(j.persisted) } : null,
      lastActivityTime: j.lastActivityTime,
    });
    this.telemetrySeq = s.seqs.telemetry;
    this.methodSeq = s.seqs.method;
    this.c2dSeq = s.seqs.c2d;
    this.eventSeq = s.seqs.event;
    this.cas = new Map(s.cas);
    for (const dj of s.devices) {
      const d = identFrom(dj);
      d.status = dj.status;
      d.iotEdge = dj.iotEdge;
      d.deviceScope = dj.deviceScope || null;
      d.parentScopes = dj.parentScopes || [];
      d.modules = new Map(dj.modules.map((mj) => [mj.moduleId, identFrom(mj)]));
      d.c2d = { queue: [], history: [] };
      for (const m of dj.c2d) {
        const msg = { ...m, payload: Buffer.from(m.payload, 'base64'), sessionRef: null };
        (msg.state === 'enqueued' ? d.c2d.queue : d.c2d.history).push(msg);
      }
      this.devices.set(d.deviceId, d);
    }
    this.telemetry = s.telemetry;
  }

  close() {
    clearInterval(this.sweeper);
    this.dropAll('shutdown');
    for (const p of this.pendingMethods.values()) clearTimeout(p.timer);
    this.saveNow();
  }
}

module.exports = { Hub, HubError, identityKey, timer, ID_RE };
