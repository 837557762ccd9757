// parts.test.js — node:test unit tests of the stand-in's pure parts: SAS tokens, property
// bags, twin patches and limits, MQTT topic matching. Run: node --test tests/iothub/test/
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const sas = require('../lib/sas');
const propbag = require('../lib/propbag');
const { Twin } = require('../lib/twin');
const { topicMatches } = require('../lib/session');

const KEY = crypto.randomBytes(32).toString('base64');
const RES = 'hub.azure-devices.net/devices/d1/modules/$edgeAgent';

test('sas: a token the SDKs would make verifies; wrong key, audience, expiry do not', () => {
  const now = Math.floor(Date.now() / 1000);
  const t = sas.parse(sas.make(RES, KEY, now + 60));
  assert.equal(t.sr, 'hub.azure-devices.net%2Fdevices%2Fd1%2Fmodules%2F%24edgeAgent');
  assert.equal(t.srDecoded, RES);
  assert.equal(sas.verify(t, RES, [KEY], now), null);
  assert.equal(sas.verify(t, RES.toUpperCase(), [KEY], now), null, 'audience is case-insensitive');
  assert.equal(sas.verify(t, RES, [crypto.randomBytes(32).toString('base64'), KEY], now), null, 'secondary key');
  assert.match(sas.verify(t, RES, [crypto.randomBytes(32).toString('base64')], now), /signature/);
  assert.match(sas.verify(t, 'hub.azure-devices.net/devices/d1', [KEY], now), /audience/);
  assert.match(sas.verify(t, RES, [KEY], now + 61), /expired/);
});

test('sas: the HMAC covers the sr as sent (upper- or lower-case escapes) and se', () => {
  const sr = 'hub.azure-devices.net%2fdevices%2fd1';
  const se = 2000000000;
  const sig = crypto.createHmac('sha256', Buffer.from(KEY, 'base64')).update(`${sr}\n${se}`).digest('base64');
  const tok = `SharedAccessSignature se=${se}&sig=${encodeURIComponent(sig)}&sr=${sr}`;
  const t = sas.parse(tok);
  assert.equal(sas.verify(t, 'hub.azure-devices.net/devices/d1', [KEY], se - 1), null);
  const tampered = sas.parse(tok.replace(`se=${se}`, `se=${se + 1}`));
  assert.match(sas.verify(tampered, 'hub.azure-devices.net/devices/d1', [KEY], se - 1), /signature/);
});

test('sas: malformed tokens are refused with a reason', () => {
  assert.throws(() => sas.parse('Bearer x'), /not a SharedAccessSignature/);
  assert.throws(() => sas.parse('SharedAccessSignature sr=a&sig=b'), /no se/);
  assert.throws(() => sas.parse('SharedAccessSignature sr=a&sig=b&se=soon'), /not a number/);
  assert.throws(() => sas.parse('SharedAccessSignature sr=a&sr=b&sig=b&se=1'), /twice/);
  assert.throws(() => sas.parse('SharedAccessSignature sr=%E0%A4%A&sig=b&se=1'), /percent-encoded/);
  const t = sas.parse('SharedAccessSignature sr=a&sig=b&se=9999999999&skn=iothubowner');
  assert.match(sas.verify(t, 'a', [KEY], 0), /policy/);
});

test('propbag: decode system and application properties, null and empty values', () => {
  const b = propbag.decode('%24.mid=m%201&%24.ct=application%2Fjson&%24.on=out&%24.cmid=%24edgeHub&%24.x=1&k=v%26w&flag&empty=');
  assert.deepEqual(b.systemProperties, { messageId: 'm 1', contentType: 'application/json', outputName: 'out', connectionModuleId: '$edgeHub', '$.x': '1' });
  assert.deepEqual(b.properties, { k: 'v&w', flag: null, empty: '' });
  assert.deepEqual(b.errors, []);
  assert.deepEqual(propbag.decode('a=%ZZ').errors, ['bad percent-encoding in "a=%ZZ"']);
  assert.deepEqual(propbag.decode('').properties, {});
});

test('propbag: encode round-trips through decode', () => {
  const bag = propbag.encode({ messageId: 'a/b', to: '/devices/d/messages/deviceBound' }, { 'x y': 'ü=&', n: null, e: '' });
  assert.equal(bag, '%24.mid=a%2Fb&%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&x%20y=%C3%BC%3D%26&n&e=');
  const back = propbag.decode(bag);
  assert.deepEqual(back.properties, { 'x y': 'ü=&', n: null, e: '' });
  assert.equal(back.systemProperties.to, '/devices/d/messages/deviceBound');
});

test('twin: versions start at 1 and grow per update; merge patches, null deletes', () => {
  const t = new Twin();
  assert.deepEqual(t.deviceView(), { desired: { $version: 1 }, reported: { $version: 1 } });
  assert.equal(t.update('desired', { a: { b: 1, c: 2 }, d: 3 }, false), null);
  assert.equal(t.update('desired', { a: { c: null }, d: null, e: [1, 2] }, false), null);
  assert.deepEqual(t.deviceView().desired, { a: { b: 1 }, e: [1, 2], $version: 3 });
  assert.equal(t.update('desired', { z: 1 }, true), null);
  assert.deepEqual(t.deviceView().desired, { z: 1, $version: 4 });
  assert.equal(t.update('reported', { r: true }, false), null);
  assert.equal(t.reportedVersion, 2);
  assert.equal(t.version, 5);
  assert.equal(t.etag(), Buffer.from([0, 0, 0, 0, 0, 0, 0, 5]).toString('base64'));
});

test("twin: IoT Hub's limits, the path named, nothing changed", () => {
  const t = new Twin();
  assert.match(t.update('reported', { 'a.b': 1 }, false), /^a\.b: keys may not contain/);
  assert.match(t.update('reported', { $version: 1 }, false), /\$version: keys may not contain/);
  assert.match(t.update('reported', { x: { 'with space': 1 } }, false), /^x\.with space:/);
  let deep = { v: 1 };
  for (let i = 0; i < 10; i++) deep = { n: deep };
  assert.match(t.update('reported', deep, false), /deeper than 10/);
  assert.match(t.update('reported', { s: 'x'.repeat(4097) }, false), /string longer than 4096/);
  const big = {};
  for (let i = 0; i < 40; i++) big[`k${i}`] = 'x'.repeat(1000);
  assert.match(t.update('reported', big, false), /larger than 32768 bytes/);
  assert.match(t.update('reported', [], false), /must be a JSON object/);
  assert.equal(t.reportedVersion, 1);
  assert.deepEqual(t.reported, {});
});

test('topicMatches: MQTT filter matching, $ topics only by explicit filters', () => {
  assert.ok(topicMatches('$iothub/twin/res/#', '$iothub/twin/res/200/?$rid=1'));
  assert.ok(topicMatches('devices/d/messages/devicebound/#', 'devices/d/messages/devicebound/a=b'));
  assert.ok(topicMatches('devices/d/messages/devicebound/#', 'devices/d/messages/devicebound'));
  assert.ok(!topicMatches('#', '$iothub/methods/POST/x/?$rid=1'));
  assert.ok(!topicMatches('+/methods/#', '$iothub/methods/POST'));
  assert.ok(topicMatches('a/+/c', 'a/b/c'));
  assert.ok(!topicMatches('a/+/c', 'a/b/c/d'));
});

test("on behalf of: an edge's $edgeHub token opens a device in its scope only", () => {
  const { Hub } = require('../lib/hub');
  const hub = new Hub({ hostName: 'hub.azure-devices.net' });
  try {
    const edge = hub.putDevice('e1', { capabilities: { iotEdge: true } });
    hub.putDevice('e2', { capabilities: { iotEdge: true } });
    assert.match(edge.deviceScope, /^ms-azure-iot-edge:\/\/e1-[0-9]+$/);
    hub.putDevice('leaf', { authentication: { type: 'certificateAuthority' }, deviceScope: edge.deviceScope });
    hub.putDevice('stray', { authentication: { type: 'certificateAuthority' } });
    assert.deepEqual(hub.deviceJSON(hub.device('leaf')).parentScopes, [edge.deviceScope]);
    assert.throws(() => hub.putDevice('x', { deviceScope: 'ms-azure-iot-edge://nobody-1' }), /deviceScope/);
    const now = Math.floor(Date.now() / 1000);
    const key = hub.identity('e1', '$edgeHub').authentication.symmetricKey.primaryKey;
    const tok = (k) => sas.parse(sas.make('hub.azure-devices.net/devices/e1/modules/$edgeHub', k, now + 60));
    assert.equal(hub.checkOnBehalfOf(tok(key), 'hub.azure-devices.net', 'e1', 'leaf', null), null);
    assert.equal(hub.checkOnBehalfOf(tok(key), 'hub.azure-devices.net', 'e1', 'e1', 'm1'), null, "the edge's own module");
    assert.match(hub.checkOnBehalfOf(tok(key), 'hub.azure-devices.net', 'e1', 'stray', null), /not in the scope of e1 \(its parent is none\)/);
    const key2 = hub.identity('e2', '$edgeHub').authentication.symmetricKey.primaryKey;
    assert.match(hub.checkOnBehalfOf(tok(key2), 'hub.azure-devices.net', 'e1', 'leaf', null), /signature/);
    assert.match(hub.checkOnBehalfOf(tok(key), 'hub.azure-devices.net', 'leaf', 'leaf', null), /not an edge device/);
    hub.putDevice('leaf', { deviceScope: hub.deviceJSON(hub.device('e2')).deviceScope });
    assert.match(hub.checkOnBehalfOf(tok(key), 'hub.azure-devices.net', 'e1', 'leaf', null), /its parent is e2/);
  } finally {
    hub.close();
  }
});
