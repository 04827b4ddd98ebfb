// Headers, as workerd has them: names compared case-insensitively and iterated lower-case and sorted,
// repeated values joined with ", ", Set-Cookie values kept apart.

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// workerd accepts an empty name and any character outside ASCII; it refuses ASCII separators and controls
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z\u0080-\uffff]*$/;
const HTTP_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;

function checkHeaderName(name) {
  name = String(name);
  if (!HEADER_NAME.test(name)) throw new TypeError(`Invalid header name.`);
  return name.toLowerCase();
}

function normalizeHeaderValue(value) {
  value = String(value).replace(HTTP_WHITESPACE, "");
  if (/[\0\r\n]/.test(value)) throw new TypeError(`Invalid header value.`);
  return value;
}

// what a header value is on the wire: a byte string, every character past ASCII as its UTF-8 bytes (as workerd sends them)
function wireHeaderValue(value) {
  return /[^\x00-\x7f]/.test(value) ? decodeLatin1(host.utf8Encode(value)) : value;
}

// a header value as it arrived (one character per byte): read as UTF-8, as workerd reads it
function valueFromWire(value) {
  if (!/[\x80-\xff]/.test(value) || /[^\x00-\xff]/.test(value)) return value;
  return decodeUtf8(Uint8Array.from(value, (ch) => ch.charCodeAt(0)));
}

function decodeLatin1(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) out += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  return out;
}

const GUARD_NONE = 0;
const GUARD_IMMUTABLE = 1;

class Headers {
  // lower-case name -> array of values, in insertion order; iteration sorts
  #map = new Map();
  #guard = GUARD_NONE;
  constructor(init = undefined) {
    if (init === undefined) return;
    if (init instanceof Headers) {
      for (const [name, values] of init.#map) this.#map.set(name, values.slice());
      return;
    }
    if (init === null || (typeof init !== "object" && typeof init !== "function")) {
      throw new TypeError("Failed to construct 'Headers': constructor parameter 1 is not of type 'Headers or Sequence or object'.");
    }
    if (typeof init[Symbol.iterator] === "function") {
      for (const pair of init) {
        const items = typeof pair === "string" ? null : Array.from(pair);
        if (!items || items.length !== 2) {
          throw new TypeError("To initialize a Headers object from a sequence, each inner sequence must have exactly two elements.");
        }
        this.append(items[0], items[1]);
      }
    } else {
      for (const key of Object.keys(init)) this.append(key, init[key]);
    }
  }
  static [kInternal](pairs, immutable) {
    const headers = new Headers();
    for (let i = 0; i < pairs.length; i++) {
      const name = String(pairs[i][0]).toLowerCase();
      const value = valueFromWire(String(pairs[i][1]).replace(HTTP_WHITESPACE, ""));
      const list = headers.#map.get(name);
      if (list) list.push(value);
      else headers.#map.set(name, [value]);
    }
    if (immutable) headers.#guard = GUARD_IMMUTABLE;
    return headers;
  }
  [kInternal](guard) { this.#guard = guard ? GUARD_IMMUTABLE : GUARD_NONE; }
  #mutable() {
    if (this.#guard === GUARD_IMMUTABLE) throw new TypeError("Can't modify immutable headers.");
  }
  append(name, value) {
    if (arguments.length < 2) throw new TypeError("Failed to execute 'append' on 'Headers': 2 arguments required.");
    const key = checkHeaderName(name);
    value = normalizeHeaderValue(value);
    this.#mutable();
    const list = this.#map.get(key);
    if (list) list.push(value);
    else this.#map.set(key, [value]);
  }
  set(name, value) {
    if (arguments.length < 2) throw new TypeError("Failed to execute 'set' on 'Headers': 2 arguments required.");
    const key = checkHeaderName(name);
    value = normalizeHeaderValue(value);
    this.#mutable();
    this.#map.set(key, [value]);
  }
  delete(name) {
    const key = checkHeaderName(name);
    this.#mutable();
    this.#map.delete(key);
  }
  get(name) {
    const list = this.#map.get(checkHeaderName(name));
    return list ? list.join(", ") : null;
  }
  getAll(name) {
    const key = checkHeaderName(name);
    if (key !== "set-cookie") throw new TypeError("getAll() can only be used with the header name \"Set-Cookie\".");
    return (this.#map.get(key) || []).slice();
  }
  getSetCookie() { return (this.#map.get("set-cookie") || []).slice(); }
  has(name) { return this.#map.has(checkHeaderName(name)); }
  // [name, value] pairs in iteration order: sorted, joined, set-cookie values one by one
  [kPairs]() {
    const names = Array.from(this.#map.keys()).sort();
    const pairs = [];
    for (const name of names) {
      const values = this.#map.get(name);
      if (name === "set-cookie") for (const value of values) pairs.push([name, value]);
      else pairs.push([name, values.join(", ")]);
    }
    return pairs;
  }
  [kWire]() {
    const pairs = [];
    for (const name of Array.from(this.#map.keys()).sort()) for (const value of this.#map.get(name)) pairs.push([name, wireHeaderValue(value)]);
    return pairs;
  }
  forEach(callback, thisArg) {
    if (typeof callback !== "function") throw new TypeError("The \"callback\" argument must be a function.");
    for (const [name, value] of this[kPairs]()) callback.call(thisArg, value, name, this);
  }
  entries() { return snapshotIterator(this[kPairs](), (pair) => pair); }
  keys() { return snapshotIterator(this[kPairs](), (pair) => pair[0]); }
  values() { return snapshotIterator(this[kPairs](), (pair) => pair[1]); }
  [Symbol.iterator]() { return this.entries(); }
}

const headerPairs = (headers) => headers[kPairs]();
// what goes on the wire: lower-case names in order, every value of a repeated header on its own line
const wirePairs = (headers) => headers[kWire]();

defineGlobal("Headers", Headers);
