// twin.js — twin documents as IoT Hub keeps them: desired and reported property sections with
// their own `$version` (starting at 1, +1 per update), JSON merge patches where null deletes,
// and IoT Hub's limits on keys, depth, strings and section size.
'use strict';

const MAX_DEPTH = 10;          // levels of objects under a section
const MAX_SECTION = 32 * 1024; // bytes of keys and values per section ("Device twin size")
const MAX_KEY = 1024;
const MAX_STRING = 4096;

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// validate(patch, {allowNull}) -> null or a message naming the JSON path that is wrong.
function validate(doc, allowNull, path = '', depth = 1) {
  if (!isObject(doc)) return `${path || 'the document'}: must be a JSON object`;
  if (depth > MAX_DEPTH) return `${path}: deeper than ${MAX_DEPTH} levels`;
  for (const [k, v] of Object.entries(doc)) {
    const p = path ? `${path}.${k}` : k;
    if (k.length === 0) return `${path || 'the document'}: empty key`;
    if (Buffer.byteLength(k) > MAX_KEY) return `${p}: key longer than ${MAX_KEY} bytes`;
    // eslint-disable-next-line no-control-regex
    if (/[.$ \u0000-\u001f\u007f-\u009f]/.test(k)) {
      return `${p}: keys may not contain ".", "$", space or control characters`;
    }
    if (v === null) {
      if (!allowNull) return `${p}: null is not a value here`;
    } else if (isObject(v)) {
      const e = validate(v, allowNull, p, depth + 1);
      if (e) return e;
    } else if (typeof v === 'string') {
      if (Buffer.byteLength(v) > MAX_STRING) return `${p}: string longer than ${MAX_STRING} bytes`;
    } else if (typeof v === 'number') {
      if (Number.isInteger(v) && Math.abs(v) > 4503599627370495) return `${p}: integer out of range`;
    } else if (typeof v !== 'boolean' && !Array.isArray(v)) {
      return `${p}: unsupported value`;
    }
  }
  return null;
}

// The size IoT Hub counts: keys and values as UTF-8 (numbers 8, booleans 4).
function size(doc) {
  let n = 0;
  for (const [k, v] of Object.entries(doc)) {
    if (k === '$version' || k === '$metadata') continue;
    n += Buffer.byteLength(k);
    if (isObject(v)) n += size(v);
    else if (typeof v === 'number') n += 8;
    else if (typeof v === 'boolean') n += 4;
    else if (typeof v === 'string') n += Buffer.byteLength(v);
    else if (v !== null) n += Buffer.byteLength(JSON.stringify(v));
  }
  return n;
}

// merge(target, patch): apply a merge patch in place; null deletes.
function merge(target, patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete target[k];
    else if (isObject(v)) {
      if (!isObject(target[k])) target[k] = {};
      merge(target[k], v);
    } else target[k] = structuredClone(v);
  }
  return target;
}

class Twin {
  constructor() {
    this.desired = {};
    this.reported = {};
    this.tags = {};
    this.desiredVersion = 1;
    this.reportedVersion = 1;
    this.version = 1; // the whole twin's version: +1 per change of any part
  }

  // Apply a patch (merge) or a replacement to one section; returns null or an error message.
  update(section, doc, replace) {
    const e = validate(doc, !replace);
    if (e) return e;
    const next = replace ? structuredClone(doc) : merge(structuredClone(this[section]), doc);
    if (section !== 'tags' && size(next) > MAX_SECTION) {
      return `properties.${section}: larger than ${MAX_SECTION} bytes`;
    }
    if (section === 'tags' && size(next) > 8 * 1024) return 'tags: larger than 8192 bytes';
    this[section] = next;
    if (section === 'desired') this.desiredVersion++;
    if (section === 'reported') this.reportedVersion++;
    this.version++;
    return null;
  }

  // What a device or module gets for `$iothub/twin/GET` (no tags, no metadata).
  deviceView() {
    return {
      desired: { ...structuredClone(this.desired), $version: this.desiredVersion },
      reported: { ...structuredClone(this.reported), $version: this.reportedVersion },
    };
  }

  etag() {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(this.version));
    return b.toString('base64');
  }

  toJSON() {
    return {
      desired: this.desired, reported: this.reported, tags: this.tags,
      desiredVersion: this.desiredVersion, reportedVersion: this.reportedVersion, version: this.version,
    };
  }

  static fromJSON(j) {
    const t = new Twin();
    Object.assign(t, j);
    return t;
  }
}

module.exports = { Twin, validate, merge, isObject };
