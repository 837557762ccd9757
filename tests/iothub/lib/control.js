// control.js — the stand-in's control API: HTTP/JSON on loopback, for a test to play the cloud
// (register identities, write desired properties, call direct methods, send cloud-to-device
// messages, read twins, telemetry, connections and events, drop connections). Where IoT Hub's
// service API has the operation, the path and JSON follow it. Routes are a table; README.md
// documents each one.
'use strict';
const http = require('node:http');
const { HubError, identityKey } = require('./hub');
const sas = require('./sas');

const MAX_BODY = 1024 * 1024;
const MAX_WAIT_S = 120;

function reply(res, status, body) {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = typeof body === 'string' ? body : JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8',
  });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > MAX_BODY) {
        reject(new HubError(413, 413001, `request body larger than ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (!text.trim()) return resolve(undefined);
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new HubError(400, 400004, `the body is not JSON: ${e.message}`));
      }
    });
    req.on('error', reject);
  });
}

function numberParam(q, name, dflt, min, max) {
  const v = q.get(name);
  if (v === null) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new HubError(400, 400004, `${name}: a number from ${min} to ${max}`);
  return n;
}

// Long poll: compute() -> {items, ...}; with ?wait=S it waits up to S seconds for at least
// ?min=N items (default 1).
async function poll(hub, q, compute) {
  const wait = numberParam(q, 'wait', 0, 0, MAX_WAIT_S);
  const min = numberParam(q, 'min', 1, 0, 1e9);
  let out = compute();
  if (wait > 0 && out.count < min) {
    await hub.waitFor(() => {
      out = compute();
      return out.count >= min;
    }, wait * 1000);
  }
  delete out.count;
  return out;
}

function filterIdentity(q) {
  const d = q.get('deviceId');
  const m = q.get('moduleId');
  return (x) => (d === null || x.deviceId === d) && (m === null || (m === '' ? !x.moduleId : x.moduleId === m));
}

function makeRoutes(hub, info) {
  const twinOf = (p) => hub.identity(p.d, p.m);
  return [
    ['GET', '/health', () => [200, { ok: true, ...info() }]],

    // registry
    ['GET', '/devices', () => [200, [...hub.devices.values()].map((d) => hub.deviceJSON(d))]],
    ['PUT', '/devices/:d', (p, body) => [200, hub.putDevice(p.d, body === undefined ? {} : body)]],
    ['GET', '/devices/:d', (p) => [200, hub.deviceJSON(hub.device(p.d))]],
    ['DELETE', '/devices/:d', (p) => { hub.deleteDevice(p.d); return [204]; }],
    ['GET', '/devices/:d/modules', (p) => [200, [...hub.device(p.d).modules.values()].map((m) => hub.moduleJSON(m))]],
    ['PUT', '/devices/:d/modules/:m', (p, body) => [200, hub.putModule(p.d, p.m, body === undefined ? {} : body)]],
    ['GET', '/devices/:d/modules/:m', (p) => [200, hub.moduleJSON(hub.identity(p.d, p.m))]],
    ['DELETE', '/devices/:d/modules/:m', (p) => { hub.deleteModule(p.d, p.m); return [204]; }],
    ['GET', '/certificates', () => [200, [...hub.cas.keys()].map((name) => ({ name }))]],
    ['PUT', '/certificates/:name', (p, body) => [200, hub.putCertificate(p.name, body && body.pem)]],
    ['DELETE', '/certificates/:name', (p) => { hub.deleteCertificate(p.name); return [204]; }],
    ['POST', '/tokens', (p, body) => {
      const b = body || {};
      const ident = hub.identity(b.deviceId, b.moduleId);
      if (ident.authentication.type !== 'sas') throw new HubError(400, 400004, `${identityKey(b.deviceId, b.moduleId)} has no SAS keys`);
      const se = b.expiry !== undefined ? b.expiry : Math.floor(Date.now() / 1000) + (b.ttlSeconds === undefined ? 3600 : b.ttlSeconds);
      if (!Number.isInteger(se) || se < 0) throw new HubError(400, 400004, 'expiry: unix seconds; ttlSeconds: seconds (may be negative)');
      const key = b.key === 'secondary' ? ident.authentication.symmetricKey.secondaryKey : ident.authentication.symmetricKey.primaryKey;
      const resource = `${hub.hostName}/devices/${ident.deviceId}` + (ident.moduleId ? `/modules/${ident.moduleId}` : '');
      return [200, { token: sas.make(resource, key, se), expiry: se, resource }];
    }],

    // twins (IoT Hub's service API shapes)
    ['GET', '/twins/:d', (p) => [200, hub.twinJSON(twinOf(p))]],
    ['PATCH', '/twins/:d', (p, body, req) => [200, hub.writeTwin(twinOf(p), body, false, req.headers['if-match'])]],
    ['PUT', '/twins/:d', (p, body, req) => [200, hub.writeTwin(twinOf(p), body, true, req.headers['if-match'])]],
    ['GET', '/twins/:d/modules/:m', (p) => [200, hub.twinJSON(twinOf(p))]],
    ['PATCH', '/twins/:d/modules/:m', (p, body, req) => [200, hub.writeTwin(twinOf(p), body, false, req.headers['if-match'])]],
    ['PUT', '/twins/:d/modules/:m', (p, body, req) => [200, hub.writeTwin(twinOf(p), body, true, req.headers['if-match'])]],

    // direct methods
    ['POST', '/twins/:d/methods', async (p, body) => {
      const r = await hub.invokeMethod(twinOf(p), body);
      return [r.httpStatus, r.body];
    }],
    ['POST', '/twins/:d/modules/:m/methods', async (p, body) => {
      const r = await hub.invokeMethod(twinOf(p), body);
      return [r.httpStatus, r.body];
    }],

    // cloud-to-device messages
    ['POST', '/devices/:d/messages/devicebound', (p, body) => [200, hub.sendC2D(p.d, body === undefined ? {} : body)]],
    ['GET', '/devices/:d/messages/devicebound', async (p, body, req, q) => {
      const d = hub.device(p.d);
      const state = q.get('state');
      return [200, await poll(hub, q, () => {
        const all = [...d.c2d.history, ...d.c2d.queue].sort((a, b) => a.sequenceNumber - b.sequenceNumber)
          .filter((m) => state === null || m.state === state);
        return { count: all.length, messages: all.map((m) => hub.c2dJSON(d, m)) };
      })];
    }],
    ['DELETE', '/devices/:d/messages/devicebound', (p) => [200, hub.purgeC2D(p.d)]],

    // what arrived
    ['GET', '/telemetry', async (p, body, req, q) => {
      const since = numberParam(q, 'since', 0, 0, Number.MAX_SAFE_INTEGER);
      const limit = numberParam(q, 'limit', 10000, 1, 1e6);
      const match = filterIdentity(q);
      return [200, await poll(hub, q, () => {
        const all = hub.telemetry.filter((m) => m.seq > since && match(m));
        const messages = all.slice(0, limit);
        return {
          count: all.length,
          messages,
          next: messages.length ? messages[messages.length - 1].seq : since,
          dropped: hub.telemetryDropped,
        };
      })];
    }],
    ['DELETE', '/telemetry', () => {
      const n = hub.telemetry.length;
      hub.telemetry = [];
      hub.save();
      return [200, { deleted: n }];
    }],
    ['GET', '/events', async (p, body, req, q) => {
      const since = numberParam(q, 'since', 0, 0, Number.MAX_SAFE_INTEGER);
      const types = q.get('type') ? q.get('type').split(',') : null;
      const match = filterIdentity(q);
      return [200, await poll(hub, q, () => {
        const events = hub.events.filter((e) => e.seq > since && (!types || types.includes(e.type)) && match(e));
        return { count: events.length, events, next: events.length ? events[events.length - 1].seq : hub.eventSeq };
      })];
    }],
    ['GET', '/log', (p, body, req, q) => {
      const since = numberParam(q, 'since', 0, 0, Number.MAX_SAFE_INTEGER);
      return [200, hub.events.filter((e) => e.seq > since).map((e) => hub.constructor.eventLine(e) + '\n').join('')];
    }],

    // connections
    ['GET', '/connections', (p, body, req, q) => [200, { connections: hub.connectionsJSON().filter(filterIdentity(q)) }]],
    ['POST', '/connections/disconnect', (p, body) => {
      const b = body || {};
      hub.device(b.deviceId);
      if (b.moduleId && b.moduleId !== '*') hub.identity(b.deviceId, b.moduleId);
      return [200, { disconnected: hub.disconnect(b.deviceId, b.moduleId || null, 'control') }];
    }],
    ['POST', '/connections/drop-all', () => [200, { disconnected: hub.dropAll('control') }]],
    ['GET', '/settings', () => [200, hub.settings]],
    ['PATCH', '/settings', (p, body) => {
      const b = body || {};
      if (b.refuseConnections !== undefined) {
        const r = b.refuseConnections;
        if (r !== null && r !== false && !(Number.isInteger(r) && r >= 1 && r <= 5)) {
          throw new HubError(400, 400004, 'refuseConnections: null, or the CONNACK code to refuse with (1-5)');
        }
        hub.settings.refuseConnections = r || null;
      }
      if (b.holdTelemetryAcks !== undefined) {
        if (typeof b.holdTelemetryAcks !== 'boolean') throw new HubError(400, 400004, 'holdTelemetryAcks: a boolean');
        hub.settings.holdTelemetryAcks = b.holdTelemetryAcks;
        if (!b.holdTelemetryAcks) for (const s of hub.sessions.values()) s.releaseHeldAcks();
      }
      hub.event('settings', { ...hub.settings });
      return [200, hub.settings];
    }],
  ].map(([method, pattern, handler]) => {
    const names = [];
    const re = new RegExp('^' + pattern.replace(/:([a-z]+)/g, (_, n) => {
      names.push(n);
      return '([^/]+)';
    }) + '$');
    return { method, re, names, handler };
  });
}

function createControlServer(hub, info) {
  const routes = makeRoutes(hub, info);
  return http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let pathMatched = false;
    try {
      for (const r of routes) {
        const m = r.re.exec(url.pathname);
        if (!m) continue;
        pathMatched = true;
        if (r.method !== req.method) continue;
        const p = {};
        r.names.forEach((n, i) => { p[n] = decodeURIComponent(m[i + 1]); });
        const body = await readBody(req);
        const [status, out] = await r.handler(p, body, req, url.searchParams);
        return reply(res, status, out);
      }
      if (pathMatched) return reply(res, 405, { errorCode: 405001, message: `${req.method} is not allowed on ${url.pathname}` });
      return reply(res, 404, { errorCode: 404000, message: `no such endpoint: ${req.method} ${url.pathname}` });
    } catch (e) {
      if (e instanceof HubError) return reply(res, e.httpStatus, { errorCode: e.errorCode, message: e.message });
      hub.log(`control API: ${req.method} ${url.pathname}: ${e.stack}`);
      return reply(res, 500, { errorCode: 500001, message: e.message });
    }
  });
}

module.exports = { createControlServer };
