// propbag.js — IoT Hub's MQTT property bag, the last topic segment of telemetry and C2D
// messages: `key=value&key2=&key3` with keys and values percent-encoded (RFC 2396, the
// HTTPS query-string encoding); `$.`-keys are system properties.
'use strict';

// The system properties the SDKs and edgeHub put in a bag, by the names the control API uses.
const SYSTEM = {
  '$.mid': 'messageId',
  '$.cid': 'correlationId',
  '$.uid': 'userId',
  '$.to': 'to',
  '$.exp': 'expiryTimeUtc',
  '$.ct': 'contentType',
  '$.ce': 'contentEncoding',
  '$.ctime': 'creationTimeUtc',
  '$.on': 'outputName',
  '$.cdid': 'connectionDeviceId',
  '$.cmid': 'connectionModuleId',
  '$.ifid': 'interfaceId',
  '$.sub': 'componentName',
  '$.schema': 'messageSchema',
};
const BY_NAME = Object.fromEntries(Object.entries(SYSTEM).map(([k, v]) => [v, k]));

// decode(bag) -> {properties, systemProperties, errors}: application properties by name
// (null for a key without "="), system properties by their control-API name (unknown `$.x`
// keys keep their wire name); errors lists what could not be decoded (kept raw).
function decode(bag) {
  const properties = {};
  const systemProperties = {};
  const errors = [];
  if (!bag) return { properties, systemProperties, errors };
  for (const part of bag.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawKey = eq < 0 ? part : part.slice(0, eq);
    const rawValue = eq < 0 ? null : part.slice(eq + 1);
    let key = rawKey;
    let value = rawValue;
    try {
      key = decodeURIComponent(rawKey);
      value = rawValue === null ? null : decodeURIComponent(rawValue);
    } catch (e) {
      errors.push(`bad percent-encoding in "${part}"`);
    }
    if (key.startsWith('$.')) systemProperties[SYSTEM[key] || key] = value;
    else properties[key] = value;
  }
  return { properties, systemProperties, errors };
}

// What IoT Hub escapes in a bag: everything but RFC 2396's unreserved characters, which is
// what encodeURIComponent leaves alone.
const escape = encodeURIComponent;

// encode(systemProperties, properties) -> the bag; system properties by control-API name.
function encode(systemProperties, properties) {
  const parts = [];
  for (const [name, value] of Object.entries(systemProperties || {})) {
    if (value === undefined) continue;
    parts.push(`${escape(BY_NAME[name] || name)}=${escape(String(value))}`);
  }
  for (const [key, value] of Object.entries(properties || {})) {
    if (value === undefined) continue;
    parts.push(value === null ? escape(key) : `${escape(key)}=${escape(String(value))}`);
  }
  return parts.join('&');
}

module.exports = { decode, encode, SYSTEM };
