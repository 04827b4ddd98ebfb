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
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
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
  #defaultPrevented = false;
  #timeStamp = Date.now();
  constructor(type, init = {}) {
    if (arguments.length === 0) throw new TypeError("Failed to construct 'Event': 1 argument required, but only 0 present.");
    this.#type = String(type);
    this.#bubbles = Boolean(init && init.bubbles);
    this.#cancelable = Boolean(init && init.cancelable);
    this[kInternal] = { target: null, stop: false };
  }
  get type() { return this.#type; }
  get bubbles() { return this.#bubbles; }
  get cancelable() { return this.#cancelable; }
  get defaultPrevented() { return this.#defaultPrevented; }
  get timeStamp() { return this.#timeStamp; }
  get target() { return this[kInternal].target; }
  get currentTarget() { return this[kInternal].target; }
  get isTrusted() { return false; }
  get eventPhase() { return this[kInternal].target ? 2 : 0; }
  preventDefault() { if (this.#cancelable) this.#defaultPrevented = true; }
  stopPropagation() {}
  stopImmediatePropagation() { this[kInternal].stop = true; }
  composedPath() { return this[kInternal].target ? [this[kInternal].target] : []; }
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
    if (!(event instanceof Event)) throw new TypeError("The event argument must be an Event.");
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
    this.dispatchEvent(new Event("abort"));
  }
  static abort(reason) {
    const signal = new AbortSignal(kInternal);
    signal[kInternal](reason);
    return signal;
  }
  static timeout(ms) {
    const signal = new AbortSignal(kInternal);
    setTimeout(() => signal[kInternal](domException("The operation was aborted due to timeout", "TimeoutError")), ms);
    return signal;
  }
  static any(signals) {
    const signal = new AbortSignal(kInternal);
    for (const source of signals) {
      if (source.aborted) {
        signal[kInternal](source.reason);
        return signal;
      }
    }
    for (const source of signals) source.addEventListener("abort", () => signal[kInternal](source.reason), { once: true });
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
defineGlobal("AbortSignal", AbortSignal);
defineGlobal("AbortController", AbortController);
defineGlobal("TextEncoder", TextEncoder);
defineGlobal("TextDecoder", TextDecoder);
defineGlobal("navigator", Object.freeze(Object.create(Object.prototype, {
  userAgent: { value: "Cloudflare-Workers", enumerable: true },
  hardwareConcurrency: { value: 1, enumerable: true },
  language: { value: "en", enumerable: true },
  languages: { value: Object.freeze(["en"]), enumerable: true },
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
