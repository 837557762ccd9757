// token-server.js — a registry token server for the system tests (the distribution token flow,
// docs/registry-proxy.md): GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] with
// HTTP Basic credentials answers {"token", "access_token", "expires_in", "issued_at"}, the token
// an ES256 JWT as the CNCF distribution registry verifies it (registry/auth/token: header typ,
// alg, x5c with the signing certificate, which the registry's auth.token.rootcertbundle holds;
// claims iss, sub, aud = the service, exp, nbf, iat, jti and access: [{type, name, actions}]).
// It grants the requested actions among pull and push on every repository to its one user; a
// wrong or missing password is 401, another service 400. HTTPS with --cert/--key, else HTTP.
// Node's own crypto only. Each request is one line on stdout: "GET /token?... user=U 200".
//
//   node token-server.js --port 0 --issuer I --service S --user U --password P \
//     --sign-key ec.key --sign-cert ec.crt [--cert tls.crt --key tls.key] [--port-file F]
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');

const opts = {};
for (let i = 2; i < process.argv.length; i += 2) {
  if (!process.argv[i].startsWith('--') || i + 1 >= process.argv.length) {
    console.error(`token-server: bad argument ${process.argv[i]}`);
    process.exit(2);
  }
  opts[process.argv[i].slice(2)] = process.argv[i + 1];
}
for (const k of ['issuer', 'service', 'user', 'password', 'sign-key', 'sign-cert']) {
  if (!opts[k]) {
    console.error(`token-server: --${k} is required`);
    process.exit(2);
  }
}
const signKey = crypto.createPrivateKey(fs.readFileSync(opts['sign-key']));
if (signKey.asymmetricKeyType !== 'ec' || signKey.asymmetricKeyDetails.namedCurve !== 'prime256v1') {
  console.error('token-server: --sign-key must be an EC P-256 key (ES256)');
  process.exit(2);
}
const x5c = [new crypto.X509Certificate(fs.readFileSync(opts['sign-cert'])).raw.toString('base64')];

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function jwt(claims) {
  const header = b64url(JSON.stringify({typ: 'JWT', alg: 'ES256', x5c}));
  const body = b64url(JSON.stringify(claims));
  // JWS ES256: the raw r || s, 32 bytes each (RFC 7518 3.4), not DER
  const sig = crypto.sign('sha256', Buffer.from(`${header}.${body}`), {key: signKey, dsaEncoding: 'ieee-p1363'});
  return `${header}.${body}.${b64url(sig)}`;
}

// "repository:NAME:ACTION[,ACTION]" → {type, name, actions}; NAME may hold ':' (a port)
function parseScope(s) {
  const first = s.indexOf(':'), last = s.lastIndexOf(':');
  if (first <= 0 || last === first) return null;
  return {type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',').filter(Boolean)};
}

function authorised(req) {
  const h = req.headers.authorization || '';
  if (!h.startsWith('Basic ')) return null;
  const dec = Buffer.from(h.slice(6), 'base64').toString();
  const colon = dec.indexOf(':');
  if (colon < 0) return null;
  const user = dec.slice(0, colon), pass = dec.slice(colon + 1);
  const a = Buffer.from(pass), b = Buffer.from(opts.password);
  return user === opts.user && a.length === b.length && crypto.timingSafeEqual(a, b) ? user : null;
}

function handle(req, res) {
  const url = new URL(req.url, 'http://x');
  const user = authorised(req);
  const reply = (status, body, headers = {}) => {
    console.log(`${req.method} ${req.url} user=${user || '-'} ${status}`);
    res.writeHead(status, Object.assign({'Content-Type': 'application/json'}, headers));
    res.end(JSON.stringify(body));
  };
  if (req.method !== 'GET' || url.pathname !== '/token') return reply(404, {error: 'not here'});
  if (!user) return reply(401, {error: 'wrong or missing credentials'}, {'WWW-Authenticate': 'Basic realm="ledge-test-token"'});
  if (url.searchParams.get('service') !== opts.service) return reply(400, {error: 'unknown service'});
  const access = [];
  for (const s of url.searchParams.getAll('scope')) {
    for (const one of s.split(' ')) {
      const sc = parseScope(one);
      if (sc && sc.type === 'repository') {
        access.push({type: 'repository', name: sc.name, actions: sc.actions.filter((a) => a === 'pull' || a === 'push')});
      }
    }
  }
  const now = Math.floor(Date.now() / 1000);
  const token = jwt({iss: opts.issuer, sub: user, aud: opts.service, exp: now + 300, nbf: now - 10, iat: now,
                     jti: crypto.randomBytes(12).toString('hex'), access});
  reply(200, {token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString()});
}

const server = opts.cert
  ? https.createServer({cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key)}, handle)
  : http.createServer(handle);
server.listen(Number(opts.port || 0), opts.host || '127.0.0.1', () => {
  const port = server.address().port;
  if (opts['port-file']) fs.writeFileSync(opts['port-file'], `${port}\n`);
  console.log(`token server on ${opts.cert ? 'https' : 'http'}://${opts.host || '127.0.0.1'}:${port}/token`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
