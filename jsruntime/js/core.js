// Shared helpers, Event and EventTarget, AbortController and AbortSignal, TextEncoder and TextDecoder.

const kInternal = Symbol("wasmdeck.internal");
// the frame codec keeps its own references: a Worker that replaces JSON.stringify breaks only its own code
const jsonStringify = JSON.stringify;
const jsonParse = JSON.parse;
const kListeners = Symbol("wasmdeck.listeners");
const kStripSpaces = Symbol("wasmdeck.stripSpaces");
const kPairs = Symbol("wasmdeck.pairs");
const kWire = Symbol("wasmdeck.wire");

function defineGlobal(name, value) {
  if (typeof value === "function" && isClass(value)) value = constructOnly(name, value);
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
}

function isClass(fn) {
  const prototype = Object.getOwnPropertyDescriptor(fn, "prototype");
  return prototype !== undefined && !prototype.writable;
}

// The class as a global: `Headers()` without `new` fails with workerd's sentence instead of QuickJS's.
function constructOnly(name, cls) {
  const global = new Proxy(cls, {
    apply() {
      throw new TypeError(`Failed to construct '${name}': Please use the 'new' operator, this object constructor cannot be called as a function.`);
    },
  });
  Object.defineProperty(cls.prototype, "constructor", { value: global, writable: true, configurable: true, enumerable: false });
  Object.defineProperty(cls, "length", { value: 0, configurable: true });  // workerd's constructors declare no parameters
  return global;
}


// The iterators of Headers, FormData and URLSearchParams: plain iterators (`[object Iterator]`), as workerd's are.
const ApiIteratorPrototype = Object.create(Object.getPrototypeOf(Object.getPrototypeOf([][Symbol.iterator]())), {
  next: { value: function next() { return this[kInternal](); }, writable: true, configurable: true },
});

function apiIterator(step) {
  const iterator = Object.create(ApiIteratorPrototype);
  Object.defineProperty(iterator, kInternal, { value: step });
  return iterator;
}

// an iterator over a snapshot of these items, each passed through pick
function snapshotIterator(items, pick) {
  let index = 0;
  return apiIterator(() => (index < items.length ? { value: pick(items[index++]), done: false } : { value: undefined, done: true }));
}

function isBufferSource(value) {
  return value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

// A Uint8Array over the bytes of an ArrayBuffer or ArrayBufferView (no copy).
function viewBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError("Expected an ArrayBuffer or ArrayBufferView.");
}

// A fresh ArrayBuffer holding a copy of these bytes.
function copyToArrayBuffer(bytes) {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return bytes.buffer.slice(0);
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

function concatBytes(chunks, total) {
  if (chunks.length === 1) return chunks[0];
  if (total === undefined) total = chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

const encodeUtf8 = (text) => host.utf8Encode(String(text));
const decodeUtf8 = (bytes) => host.utf8Decode(bytes, false, false, false)[0];

function domException(message, name) {
  return new DOMException(message, name);
}

// ---- Event and EventTarget ----

class Event {
  #type;
  #bubbles;
  #cancelable;
  #composed;
  #defaultPrevented = false;
  #timeStamp = Date.now();
  constructor(type, init = {}) {
    if (arguments.length === 0) throw new TypeError("Failed to construct 'Event': constructor parameter 1 is not of type 'string'.");
    this.#type = String(type);
    this.#bubbles = Boolean(init && init.bubbles);
    this.#cancelable = Boolean(init && init.cancelable);
    this.#composed = Boolean(init && init.composed);
    this[kInternal] = { target: null, stop: false };
  }
  get type() { return this.#type; }
  get bubbles() { return this.#bubbles; }
  get cancelable() { return this.#cancelable; }
  get composed() { return this.#composed; }
  get returnValue() { return !this.#defaultPrevented; }
  get defaultPrevented() { return this.#defaultPrevented; }
  get timeStamp() { return this.#timeStamp; }
  get target() { return this[kInternal].target; }
  get currentTarget() { return this[kInternal].target; }
  get isTrusted() { return false; }
  get eventPhase() { return this[kInternal].target ? 2 : 0; }
  preventDefault() { this.#defaultPrevented = true; }  // workerd ignores cancelable here
  stopPropagation() {}
  stopImmediatePropagation() { this[kInternal].stop = true; }
  composedPath() { return this[kInternal].target ? [this[kInternal].target] : []; }
}

class CustomEvent extends Event {
  #detail;
  constructor(type, init = {}) {
    if (arguments.length === 0) throw new TypeError("Failed to construct 'CustomEvent': 1 argument required, but only 0 present.");
    super(type, init);
    this.#detail = init && init.detail !== undefined ? init.detail : null;
  }
  get detail() { return this.#detail; }
}

class EventTarget {
  #listeners = new Map();
  addEventListener(type, listener, options) {
    if (listener == null) return;
    if (typeof listener !== "function" && typeof listener.handleEvent !== "function") {
      throw new TypeError("The \"listener\" argument must be a function or an object with a handleEvent method.");
    }
    const once = typeof options === "object" && options !== null && Boolean(options.once);
    const signal = typeof options === "object" && options !== null ? options.signal : undefined;
    if (signal && signal.aborted) return;
    type = String(type);
    let list = this.#listeners.get(type);
    if (!list) this.#listeners.set(type, (list = []));
    if (list.some((entry) => entry.listener === listener)) return;
    const entry = { listener, once };
    list.push(entry);
    if (signal) signal.addEventListener("abort", () => this.removeEventListener(type, listener));
  }
  removeEventListener(type, listener) {
    const list = this.#listeners.get(String(type));
    if (!list) return;
    const index = list.findIndex((entry) => entry.listener === listener);
    if (index >= 0) list.splice(index, 1);
  }
  dispatchEvent(event) {
    if (!(event instanceof Event)) throw new TypeError("Failed to execute 'dispatchEvent' on 'EventTarget': parameter 1 is not of type 'Event'.");
    event[kInternal].target = this;
    const list = this.#listeners.get(event.type);
    if (list) {
      for (const entry of list.slice()) {
        if (entry.once) this.removeEventListener(event.type, entry.listener);
        if (typeof entry.listener === "function") entry.listener.call(this, event);
        else entry.listener.handleEvent(event);
        if (event[kInternal].stop) break;
      }
    }
    return !event.defaultPrevented;
  }
  [kListeners](type) {
    return (this.#listeners.get(type) || []).map((entry) => entry.listener);
  }
}

function listenersOf(target, type) {
  return target[kListeners](type);
}

// ---- AbortController and AbortSignal ----

class AbortSignal extends EventTarget {
  #aborted = false;
  #reason = undefined;
  #onabort = null;
  #onabortRegistered = false;
  // AbortSignal.any: a dependent signal's sources, and a source's dependents (always sources that are not dependent)
  #sources = null;
  #dependents = [];
  constructor(key) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
    super();
  }
  get onabort() { return this.#onabort; }
  set onabort(handler) {
    this.#onabort = typeof handler === "function" ? handler : null;
    if (!this.#onabortRegistered) {
      // an event handler attribute listens from the moment it is first set, in listener order
      this.#onabortRegistered = true;
      this.addEventListener("abort", (event) => { if (this.#onabort) this.#onabort.call(this, event); });
    }
  }
  get aborted() { return this.#aborted; }
  get reason() { return this.#reason; }
  throwIfAborted() { if (this.#aborted) throw this.#reason; }
  [kInternal](reason) {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason === undefined ? domException("The operation was aborted", "AbortError") : reason;
    // the spec's "signal abort": dependents take the reason first, then this signal's event, then theirs
    const dependents = this.#dependents.filter((dependent) => !dependent.#aborted);
    this.#dependents = [];
    for (const dependent of dependents) {
      dependent.#aborted = true;
      dependent.#reason = this.#reason;
    }
    this.dispatchEvent(new Event("abort"));
    for (const dependent of dependents) dependent.dispatchEvent(new Event("abort"));
  }
  static abort(reason) {
    const signal = new AbortSignal(kInternal);
    signal[kInternal](reason);
    return signal;
  }
  static timeout(ms) {
    if (ms === undefined) throw new TypeError("Failed to execute 'timeout' on 'AbortSignal': parameter 1 is not of type 'number'.");
    const signal = new AbortSignal(kInternal);
    setTimeout(() => signal[kInternal](domException("The operation was aborted due to timeout", "TimeoutError")), ms);
    return signal;
  }
  static any(signals) {
    const list = Array.from(signals);
    list.forEach((source, index) => {
      if (!(source instanceof AbortSignal)) {
        throw new TypeError(`Incorrect type for array element ${index}: the provided value is not of type 'AbortSignal'.`);
      }
    });
    const signal = new AbortSignal(kInternal);
    const aborted = list.find((source) => source.#aborted);
    if (aborted) {
      signal.#aborted = true;
      signal.#reason = aborted.#reason;
      return signal;
    }
    signal.#sources = [];
    for (const source of list) {
      for (const root of source.#sources || [source]) {
        if (signal.#sources.includes(root)) continue;
        signal.#sources.push(root);
        root.#dependents.push(signal);
      }
    }
    return signal;
  }
}

class AbortController {
  #signal = new AbortSignal(kInternal);
  get signal() { return this.#signal; }
  abort(reason) { this.#signal[kInternal](reason); }
}

// ---- TextEncoder and TextDecoder ----

class TextEncoder {
  get encoding() { return "utf-8"; }
  encode(input = "") { return host.utf8Encode(String(input)); }
  encodeInto(source, destination) {
    if (!(destination instanceof Uint8Array)) throw new TypeError("The \"destination\" argument must be a Uint8Array.");
    source = String(source);
    let read = 0;
    let written = 0;
    // whole code points only: stop before one that does not fit
    for (const ch of source) {
      const bytes = host.utf8Encode(ch);
      if (written + bytes.length > destination.length) break;
      destination.set(bytes, written);
      written += bytes.length;
      read += ch.length;
    }
    return { read, written };
  }
}

const ENCODING_LABELS = new Map();
for (const label of ["unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8"]) ENCODING_LABELS.set(label, "utf-8");
for (const label of ["csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16", "utf-16le"]) ENCODING_LABELS.set(label, "utf-16le");
ENCODING_LABELS.set("utf-16be", "utf-16be");
ENCODING_LABELS.set("unicodefffe", "utf-16be");
for (const label of ["ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819", "iso-8859-1", "iso-ir-100",
  "iso8859-1", "iso88591", "iso_8859-1", "iso_8859-1:1987", "l1", "latin1", "us-ascii", "windows-1252", "x-cp1252"]) {
  ENCODING_LABELS.set(label, "windows-1252");
}

// windows-1252 bytes 0x80-0x9F that differ from Latin-1
const WINDOWS_1252 = [0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d,
  0x17d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178];

class TextDecoder {
  #encoding;
  #fatal;
  #ignoreBOM;
  #pending = null;
  #bomSeen = false;
  constructor(label = "utf-8", options = {}) {
    const encoding = ENCODING_LABELS.get(String(label).trim().toLowerCase());
    if (!encoding) throw new RangeError(`"${label}" is not a valid encoding.`);
    this.#encoding = encoding;
    this.#fatal = Boolean(options && options.fatal);
    this.#ignoreBOM = Boolean(options && options.ignoreBOM);
  }
  get encoding() { return this.#encoding; }
  get fatal() { return this.#fatal; }
  get ignoreBOM() { return this.#ignoreBOM; }
  decode(input, options = {}) {
    const stream = Boolean(options && options.stream);
    if (input !== undefined && !isBufferSource(input)) {
      throw new TypeError("Failed to execute 'decode' on 'TextDecoder': parameter 1 is not of type 'Array'.");
    }
    let bytes = input === undefined ? new Uint8Array(0) : viewBytes(input);
    if (this.#pending) {
      bytes = concatBytes([this.#pending, bytes]);
      this.#pending = null;
    }
    let text;
    if (this.#encoding === "utf-8") {
      const skipBOM = this.#ignoreBOM || this.#bomSeen;
      const [decoded, tail] = host.utf8Decode(bytes, this.#fatal, skipBOM, stream);
      if (tail) this.#pending = bytes.slice(bytes.length - tail);
      if (bytes.length >= 3 || !stream) this.#bomSeen = stream;
      text = decoded;
    } else if (this.#encoding === "windows-1252") {
      let out = "";
      for (let i = 0; i < bytes.length; i += 8192) {
        const part = Array.from(bytes.subarray(i, i + 8192), (b) => (b >= 0x80 && b < 0xa0 ? WINDOWS_1252[b - 0x80] : b));
        out += String.fromCharCode.apply(null, part);
      }
      text = out;
    } else if (this.#encoding === "x-user-defined" || Object.hasOwn(SINGLE_BYTE_TABLES, this.#encoding)) {
      // encodings.js: a table of the characters of bytes 0x80-0xFF; x-user-defined puts them at U+F780
      const table = SINGLE_BYTE_TABLES[this.#encoding];
      const chars = new Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) {
        const b = bytes[i];
        if (b < 0x80) chars[i] = String.fromCharCode(b);
        else if (!table) chars[i] = String.fromCharCode(0xf780 + b - 0x80);
        else {
          chars[i] = table[b - 0x80];
          if (this.#fatal && chars[i] === "\ufffd") throw new TypeError("Failed to decode input.");
        }
      }
      text = chars.join("");
    } else {
      const bigEndian = this.#encoding === "utf-16be";
      let length = bytes.length & ~1;
      if (stream && length !== bytes.length) this.#pending = bytes.slice(length);
      else if (!stream && length !== bytes.length) {
        if (this.#fatal) throw new TypeError("Failed to decode input.");
      }
      const units = new Array(length / 2);
      for (let i = 0; i < length; i += 2) units[i / 2] = bigEndian ? (bytes[i] << 8) | bytes[i + 1] : bytes[i] | (bytes[i + 1] << 8);
      let start = 0;
      if (!this.#ignoreBOM && !this.#bomSeen && units[0] === 0xfeff) start = 1;
      this.#bomSeen = stream;
      let out = "";
      for (let i = start; i < units.length; i += 8192) out += String.fromCharCode.apply(null, units.slice(i, Math.min(i + 8192, units.length)));
      if (!out.isWellFormed()) {
        if (this.#fatal) throw new TypeError("Failed to decode input.");
        out = out.toWellFormed();
      }
      if (!stream && length !== bytes.length) out += "\ufffd";
      text = out;
    }
    if (!stream) this.#bomSeen = false;
    return text;
  }
}

defineGlobal("Event", Event);
defineGlobal("EventTarget", EventTarget);
defineGlobal("CustomEvent", CustomEvent);
defineGlobal("AbortSignal", AbortSignal);
defineGlobal("AbortController", AbortController);
defineGlobal("TextEncoder", TextEncoder);
defineGlobal("TextDecoder", TextDecoder);
defineGlobal("navigator", Object.freeze(Object.create(Object.prototype, {
  userAgent: { value: "Cloudflare-Workers", enumerable: true },
  hardwareConcurrency: { value: 1, enumerable: true },
})));

// QuickJS-ng's atob and btoa, with workerd's messages
const nativeAtob = globalThis.atob;
const nativeBtoa = globalThis.btoa;
function rethrowAs(error, message) {
  if (error instanceof DOMException && error.name === "InvalidCharacterError") throw domException(message, "InvalidCharacterError");
  throw error;
}
defineGlobal("atob", function atob(data) {
  if (arguments.length === 0) throw new TypeError("Failed to execute 'atob': 1 argument required, but only 0 present.");
  try {
    return nativeAtob(data);
  } catch (error) {
    rethrowAs(error, "atob() called with invalid base64-encoded data. (Only whitespace, '+', '/', alphanumeric ASCII, and up to two terminal '=' signs when the input data length is divisible by 4 are allowed.)");
  }
});
defineGlobal("btoa", function btoa(data) {
  if (arguments.length === 0) throw new TypeError("Failed to execute 'btoa': 1 argument required, but only 0 present.");
  try {
    return nativeBtoa(data);
  } catch (error) {
    rethrowAs(error, "btoa() can only operate on characters in the Latin1 (ISO/IEC 8859-1) range.");
  }
});

// ---- where QuickJS-ng's built-ins say or allow something V8 under workerd does not ----

{
  // JSON: V8's sentences for the errors QuickJS-ng words differently
  const stringify = JSON.stringify;
  const define = (name, value) => Object.defineProperty(JSON, name, { value, writable: true, configurable: true, enumerable: false });
  define("parse", function parse_(text, reviver) { return parseJson(text, reviver); });
  Object.defineProperty(JSON.parse, "name", { value: "parse" });
  define("stringify", function stringify_(value, replacer, space) {
    try {
      return stringify(value, replacer, space);
    } catch (error) {
      throw v8JsonStringifyError(error, value);
    }
  });
  Object.defineProperty(JSON.stringify, "name", { value: "stringify" });
}

// JSON.parse with V8's error messages (Body.json() uses it whatever a Worker does to JSON)
const parseJson = (text, reviver) => {
  try {
    return jsonParse(text, reviver);
  } catch (error) {
    throw v8JsonParseError(error, text);
  }
};

function v8JsonParseError(error, text) {
  if (!(error instanceof SyntaxError)) return error;
  const message = v8JsonSyntaxMessage(String(text));
  if (message !== null) error.message = message;
  return error;
}

// The sentence V8's JSON parser gives for this text (which QuickJS-ng refused), or null if it finds no fault.
// Walks the grammar as V8's JsonParser does, to name the same fault at the same position.
function v8JsonSyntaxMessage(text) {
  let pos = 0;
  const length = text.length;
  class Fault { constructor(message) { this.message = message; } }
  const at = (template) => {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < pos; i++) {
      const ch = text[i];
      if (ch === "\r" && i < pos - 1 && text[i + 1] === "\n") i++;
      if (text[i] === "\r" || text[i] === "\n") { line++; lineStart = i + 1; }
    }
    const where = template.endsWith("after JSON") ? "" : " in JSON";
    return new Fault(`${template}${where} at position ${pos} (line ${line} column ${1 + pos - lineStart})`);
  };
  const unexpected = () => {
    if (pos >= length) return new Fault("Unexpected end of JSON input");
    const ch = text[pos];
    if (ch === '"') return at("Unexpected string");
    if (ch === "-" || (ch >= "0" && ch <= "9")) return at("Unexpected number");
    if (["NaN", "Infinity", "undefined", "[object Object]"].includes(text)) return new Fault(`"${text}" is not valid JSON`);
    const CONTEXT = 10;
    if (length <= CONTEXT * 2 + 1) return new Fault(`Unexpected token '${ch}', "${text}" is not valid JSON`);
    if (pos < CONTEXT) return new Fault(`Unexpected token '${ch}', "${text.slice(0, pos + CONTEXT)}"... is not valid JSON`);
    if (pos < length - CONTEXT) return new Fault(`Unexpected token '${ch}', ..."${text.slice(pos - CONTEXT, pos + CONTEXT)}"... is not valid JSON`);
    return new Fault(`Unexpected token '${ch}', ..."${text.slice(pos - CONTEXT)}" is not valid JSON`);
  };
  const space = () => { while (pos < length && " \t\n\r".includes(text[pos])) pos++; };
  const digit = () => pos < length && text[pos] >= "0" && text[pos] <= "9";
  const literal = (word) => {
    for (let i = 0; i < word.length; i++, pos++) if (text[pos] !== word[i]) throw unexpected();
  };
  const number = () => {
    if (text[pos] === "-") {
      pos++;
      if (!digit()) throw at("No number after minus sign");
    }
    if (text[pos] === "0") {
      pos++;
      if (digit()) throw at("Unexpected number");
    } else {
      while (digit()) pos++;
    }
    if (text[pos] === ".") {
      pos++;
      if (!digit()) throw at("Unterminated fractional number");
      while (digit()) pos++;
    }
    if (text[pos] === "e" || text[pos] === "E") {
      pos++;
      if (text[pos] === "+" || text[pos] === "-") pos++;
      if (!digit()) throw at("Exponent part is missing a number");
      while (digit()) pos++;
    }
  };
  const string = () => {
    pos++;
    for (;;) {
      if (pos >= length) throw at("Unterminated string");
      const ch = text[pos];
      if (ch === '"') { pos++; return; }
      if (ch < " ") throw at("Bad control character in string literal");
      if (ch === "\\") {
        pos++;
        if (text[pos] === "u") {
          pos++;
          for (let i = 0; i < 4; i++, pos++) if (!/[0-9a-fA-F]/.test(text[pos] || "")) throw at("Bad Unicode escape");
          continue;
        }
        if (pos >= length || !'"\\/bfnrt'.includes(text[pos])) throw at("Bad escaped character");
      }
      pos++;
    }
  };
  const value = () => {
    space();
    const ch = text[pos];
    if (ch === '"') return string();
    if (ch === "-" || (ch >= "0" && ch <= "9")) return number();
    if (ch === "t") return literal("true");
    if (ch === "f") return literal("false");
    if (ch === "n") return literal("null");
    if (ch === "[") {
      pos++;
      space();
      if (text[pos] === "]") { pos++; return; }
      for (;;) {
        value();
        space();
        if (text[pos] === ",") { pos++; continue; }
        if (text[pos] === "]") { pos++; return; }
        throw at("Expected ',' or ']' after array element");
      }
    }
    if (ch === "{") {
      pos++;
      space();
      if (text[pos] === "}") { pos++; return; }
      if (text[pos] !== '"') throw at("Expected property name or '}'");
      for (;;) {
        string();
        space();
        if (text[pos] !== ":") throw at("Expected ':' after property name");
        pos++;
        value();
        space();
        if (text[pos] === "}") { pos++; return; }
        if (text[pos] !== ",") throw at("Expected ',' or '}' after property value");
        pos++;
        space();
        if (text[pos] !== '"') throw at("Expected double-quoted property name");
      }
    }
    throw unexpected();
  };
  try {
    value();
    space();
    if (pos < length) throw at("Unexpected non-whitespace character after JSON");
    return null;
  } catch (fault) {
    return fault instanceof Fault ? fault.message : null;  // e.g. nesting too deep for this walk
  }
}

function v8JsonStringifyError(error, value) {
  if (!(error instanceof TypeError)) return error;
  if (/BigInt/.test(error.message) && /JSON/.test(error.message)) error.message = "Do not know how to serialize a BigInt";
  else if (/circular/i.test(error.message)) error.message = circularMessage(value) || error.message;
  return error;
}

// V8's description of the first cycle a depth-first walk meets
function circularMessage(root) {
  const path = []; // [object, key] pairs from the root
  const onPath = new Set();
  const describe = (object) => {
    const ctor = object && object.constructor && typeof object.constructor.name === "string" ? object.constructor.name : "Object";
    return `object with constructor '${ctor}'`;
  };
  const keyText = (holder, key) => (Array.isArray(holder) ? `index ${key}` : `property '${key}'`);
  let found = null;
  const walk = (value) => {
    if (found || value === null || typeof value !== "object") return;
    if (onPath.has(value)) {
      found = value;
      return;
    }
    onPath.add(value);
    for (const key of Object.keys(value)) {
      path.push([value, key]);
      let child;
      try { child = value[key]; } catch { child = undefined; }
      if (child && typeof child.toJSON === "function") { path.pop(); continue; }
      walk(child);
      if (found) return;
      path.pop();
    }
    onPath.delete(value);
  };
  walk(root);
  if (!found) return null;
  const start = path.findIndex(([holder]) => holder === found);
  const steps = path.slice(start);
  const lines = ["Converting circular structure to JSON", `    --> starting at ${describe(found)}`];
  const middle = steps.slice(0, -1).map(([holder, key]) => `    |     ${keyText(holder, key)} -> ${describe(holder[key])}`);
  if (middle.length > 3) lines.push(...middle.slice(0, 2), "    |     ...", middle[middle.length - 1]);
  else lines.push(...middle);
  const [lastHolder, lastKey] = steps[steps.length - 1];
  lines.push(`    --- ${keyText(lastHolder, lastKey)} closes the circle`);
  return lines.join("\n");
}

{
  // V8's message for Promise.any when every promise rejected (QuickJS-ng leaves it empty)
  const any = Promise.any;
  Object.defineProperty(Promise, "any", {
    value: function any_(iterable) {
      return any.call(this, iterable).catch((error) => {
        if (error instanceof AggregateError && error.message === "") error.message = "All promises were rejected";
        throw error;
      });
    },
    writable: true, configurable: true, enumerable: false,
  });
  Object.defineProperty(Promise.any, "name", { value: "any" });

  const nativeQueueMicrotask = globalThis.queueMicrotask;
  defineGlobal("queueMicrotask", function queueMicrotask(callback) {
    if (typeof callback !== "function") {
      throw new TypeError("Failed to execute 'queueMicrotask' on 'ServiceWorkerGlobalScope': parameter 1 is not of type 'function'.");
    }
    nativeQueueMicrotask(callback);
  });

  // workerd generates no code from strings, at any time
  const refuse = function () { throw new EvalError("Code generation from strings disallowed for this context"); };
  defineGlobal("eval", function eval_() { refuse(); });
  Object.defineProperty(globalThis.eval, "name", { value: "eval" });
  const constructors = [Function, (async function () {}).constructor, (function* () {}).constructor, (async function* () {}).constructor];
  for (const ctor of constructors) {
    const guarded = new Proxy(ctor, { apply: refuse, construct: refuse });
    Object.defineProperty(ctor.prototype, "constructor", { value: guarded, writable: true, configurable: true, enumerable: false });
    if (ctor === Function) Object.defineProperty(globalThis, "Function", { value: guarded, writable: true, configurable: true, enumerable: false });
  }

  // workerd exposes neither (garbage collection must not be observable)
  delete globalThis.WeakRef;
  delete globalThis.FinalizationRegistry;

  // DOMException has no tag of its own in workerd
  if (Object.getOwnPropertyDescriptor(DOMException.prototype, Symbol.toStringTag)?.configurable) delete DOMException.prototype[Symbol.toStringTag];
}

{
  // error.stack in V8's shape: "Name: message" then the frames, formatted when first read (so a name set
  // after construction shows, as in V8), without the runtime's own frames
  const native = Object.getOwnPropertyDescriptor(Error.prototype, "stack");
  if (native && native.get && native.configurable) {
    const stacks = new WeakMap();
    Object.defineProperty(Error.prototype, "stack", {
      get() {
        const raw = native.get.call(this);
        if (typeof raw !== "string" || !(raw === "" || raw.startsWith("    at "))) return raw;
        try {
          let formatted = stacks.get(this);
          if (formatted === undefined || formatted.raw !== raw) {
            const frames = raw.split("\n").filter((line) => line.trim() && !line.includes("wasmdeck:runtime") && !line.includes("at evaluate (native)"));
            formatted = { raw, text: [Error.prototype.toString.call(this), ...frames].join("\n") };
            stacks.set(this, formatted);
          }
          return formatted.text;
        } catch {
          return raw;  // out of memory, or a name or message that throws: the frames as they are
        }
      },
      set: native.set,
      enumerable: native.enumerable,
      configurable: true,
    });
    Object.getOwnPropertyDescriptor(Error.prototype, "stack").get[kInternal] = native.get;
  }
}

{
  // Dates: the sandbox's time zone is UTC, which V8 names after the offset
  for (const name of ["toString", "toTimeString"]) {
    const native = Date.prototype[name];
    Object.defineProperty(Date.prototype, name, {
      value: { [name]() { const text = native.call(this); return text.endsWith("GMT+0000") ? `${text} (Coordinated Universal Time)` : text; } }[name],
      writable: true, configurable: true, enumerable: false,
    });
  }
}
