// sas.js — IoT Hub shared access signatures as the stand-in checks them: parse
// `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`, verify the HMAC-SHA256 over
// `<sr as sent>\n<se>` with an identity's base64 key, and make tokens for the tests.
'use strict';
const crypto = require('node:crypto');

const PREFIX = 'SharedAccessSignature ';

// parse(token) -> {sr, srDecoded, sig, se, skn} or throws with a reason a test can read.
function parse(token) {
  if (typeof token !== 'string' || !token.startsWith(PREFIX)) {
    throw new Error('not a SharedAccessSignature token');
  }
  const fields = {};
  for (const part of token.slice(PREFIX.length).split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`malformed token field "${part.slice(0, 16)}"`);
    const k = part.slice(0, eq);
    if (Object.prototype.hasOwnProperty.call(fields, k)) throw new Error(`token field ${k} twice`);
    fields[k] = part.slice(eq + 1);
  }
  for (const k of ['sr', 'sig', 'se']) {
    if (!fields[k]) throw new Error(`token has no ${k}`);
  }
  if (!/^[0-9]+$/.test(fields.se)) throw new Error('token expiry (se) is not a number');
  let srDecoded;
  let sig;
  try {
    srDecoded = decodeURIComponent(fields.sr);
    sig = decodeURIComponent(fields.sig);
  } catch (e) {
    throw new Error('token sr or sig is not percent-encoded properly');
  }
  return {
    sr: fields.sr,
    srDecoded,
    sig,
    se: Number(fields.se),
    skn: fields.skn ? decodeURIComponent(fields.skn) : null,
  };
}

function sign(sr, se, keyBase64) {
  return crypto.createHmac('sha256', Buffer.from(keyBase64, 'base64'))
    .update(`${sr}\n${se}`).digest('base64');
}

// verify(parsed, resource, keys, nowSeconds) -> null when good, else the reason.
// resource is `<hub>/devices/<d>[/modules/<m>]`; matched case-insensitively, as IoT Hub does.
function verify(t, resource, keys, now) {
  if (t.skn) return `shared access policy tokens (skn=${t.skn}) are not supported by the stand-in`;
  if (t.srDecoded.toLowerCase() !== resource.toLowerCase()) {
    return `token audience "${t.srDecoded}" is not "${resource}"`;
  }
  if (t.se <= now) return `token expired at ${new Date(t.se * 1000).toISOString()}`;
  const got = Buffer.from(t.sig, 'base64');
  for (const key of keys) {
    if (!key) continue;
    const want = Buffer.from(sign(t.sr, t.se, key), 'base64');
    if (got.length === want.length && crypto.timingSafeEqual(got, want)) return null;
  }
  return 'signature does not match the identity\'s keys';
}

// make(resource, keyBase64, expirySeconds) -> a token as the SDKs write it.
function make(resource, keyBase64, se) {
  const sr = encodeURIComponent(resource);
  return `${PREFIX}sr=${sr}&sig=${encodeURIComponent(sign(sr, se, keyBase64))}&se=${se}`;
}

module.exports = { parse, verify, make };
