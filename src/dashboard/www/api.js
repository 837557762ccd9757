// api.js — the dashboard's calls to ledged: /api/... are the management API's own routes. Every
// changing call carries the session's CSRF token; a lost session goes back to the login page.
let csrf = null;
// The device the pages manage: this one ('/api') or another ledge added on the devices page,
// reached through this ledged ('/api/remotes/NAME/api', dashboard_remote.c).
let base = '/api';
export function baseOf(name) {
  return name ? `/api/remotes/${encodeURIComponent(name)}/api` : '/api';
}
export function setRemote(name) {
  base = baseOf(name);
}

export async function session() {
  const r = await fetch('/api/session');
  if (r.status === 401) {
    location.href = '/login';
    throw new Error('not logged in');
  }
  const s = await r.json();
  csrf = s.csrf;
  return s;
}

// path is under the managed device's /api; local: under this ledged's own (the devices list),
// or a device's base (baseOf: the fleet page's calls to any device).
export async function call(method, path, body, signal, local) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  let data;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    data = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const r = await fetch(path.startsWith('/logout') ? path : (typeof local === 'string' ? local : local ? '/api' : base) + path,
                        {method, headers, body: data, signal});
  if (r.status === 401) {
    location.href = '/login';
    throw new Error('session ended');
  }
  return r;
}

// JSON or {message} on failure, with the status.
export async function json(method, path, body, local) {
  const r = await call(method, path, body, undefined, local);
  const text = await r.text();
  let v = {};
  try { v = text ? JSON.parse(text) : {}; } catch (e) { v = {message: text}; }
  return {ok: r.ok, status: r.status, body: v};
}

// Read a streamed answer line by line (logs, a deployment's events) until it ends or is aborted.
export async function lines(method, path, body, onLine, signal) {
  const r = await call(method, path, body, signal);
  if (!r.ok) {
    const t = await r.text();
    let v; try { v = JSON.parse(t); } catch (e) { v = {message: t}; }
    return {ok: false, status: r.status, body: v};
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  if (buf) onLine(buf);
  return {ok: true, status: r.status};
}
