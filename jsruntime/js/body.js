// Blob, File, FormData, and the Body mixin shared by Request and Response.

class Blob {
  #bytes;
  #type;
  constructor(parts = [], options = {}) {
    if (parts === null || typeof parts !== "object" || typeof parts[Symbol.iterator] !== "function") {
      throw new TypeError("Failed to construct 'Blob': constructor parameter 1 is not of type 'Array'.");
    }
    const chunks = [];
    for (const part of parts) {
      if (part instanceof Blob) chunks.push(part.#bytes);
      else if (isBufferSource(part)) chunks.push(viewBytes(part).slice());
      else chunks.push(encodeUtf8(part));
    }
    this.#bytes = concatBytes(chunks.length ? chunks : [new Uint8Array(0)]);
    const type = options && options.type !== undefined ? String(options.type) : "";
    this.#type = /^[\x20-\x7e]*$/.test(type) ? type.toLowerCase() : "";
  }
  static [kInternal](blob) { return blob.#bytes; }
  get size() { return this.#bytes.byteLength; }
  get type() { return this.#type; }
  slice(start = 0, end = this.size, type = "") {
    const size = this.size;
    const clamp = (n) => (n < 0 ? Math.max(size + n, 0) : Math.min(n, size));
    const from = clamp(Math.trunc(Number(start) || 0));
    const to = clamp(Math.trunc(Number(end)));
    return new Blob([this.#bytes.subarray(from, Math.max(from, to))], { type });
  }
  text() { return Promise.resolve(decodeUtf8(this.#bytes)); }
  arrayBuffer() { return Promise.resolve(copyToArrayBuffer(this.#bytes)); }
  bytes() { return Promise.resolve(this.#bytes.slice()); }
  stream() { return bytesStream(this.#bytes); }
}

class File extends Blob {
  #name;
  #lastModified;
  constructor(parts, name, options = {}) {
    if (arguments.length < 2) throw new TypeError("Failed to construct 'File': constructor parameter 2 is not of type 'string'.");
    super(parts, options);
    this.#name = String(name);
    this.#lastModified = options && options.lastModified !== undefined ? Number(options.lastModified) : Date.now();
  }
  get name() { return this.#name; }
  get lastModified() { return this.#lastModified; }
}

function formEntry(name, value, filename, method, argumentCount) {
  if (argumentCount < 2) throw new TypeError(`Failed to execute '${method}' on 'FormData': parameter 2 is not of type 'File or Blob or string'.`);
  name = String(name);
  if (value instanceof Blob) {
    if (!(value instanceof File) || filename !== undefined) {
      // a Blob without a filename takes the entry's name, as in workerd
      value = new File([value], filename !== undefined ? String(filename) : value instanceof File ? value.name : name, { type: value.type });
    }
    return [name, value];
  }
  return [name, String(value)];
}

class FormData {
  #list = [];
  constructor(form) {
    if (form !== undefined) throw new TypeError("FormData can only be constructed without arguments in Workers.");
  }
  append(name, value, filename) { this.#list.push(formEntry(name, value, filename, "append", arguments.length)); }
  set(name, value, filename) {
    const entry = formEntry(name, value, filename, "set", arguments.length);
    const index = this.#list.findIndex(([n]) => n === entry[0]);
    if (index < 0) this.#list.push(entry);
    else {
      this.#list[index] = entry;
      this.#list = this.#list.filter(([n], i) => n !== entry[0] || i === index);
    }
  }
  delete(name) { name = String(name); this.#list = this.#list.filter(([n]) => n !== name); }
  get(name) { name = String(name); const e = this.#list.find(([n]) => n === name); return e ? e[1] : null; }
  getAll(name) { name = String(name); return this.#list.filter(([n]) => n === name).map(([, v]) => v); }
  has(name) { name = String(name); return this.#list.some(([n]) => n === name); }
  forEach(callback, thisArg) { for (const [n, v] of this.#list.slice()) callback.call(thisArg, v, n, this); }
  entries() { return snapshotIterator(this.#list.slice(), ([n, v]) => [n, v]); }
  keys() { return snapshotIterator(this.#list.slice(), ([n]) => n); }
  values() { return snapshotIterator(this.#list.slice(), ([, v]) => v); }
  [Symbol.iterator]() { return this.entries(); }
}

const escapeFormName = (name) => name.replace(/\r\n|\r|\n/g, "\r\n").replace(/"/g, "%22").replace(/\r/g, "%0D").replace(/\n/g, "%0A");

function serializeMultipart(form) {
  const random = new Uint8Array(12);
  host.randomFill(random);
  const boundary = "----wasmdeck" + Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  const chunks = [];
  for (const [name, value] of form) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeFormName(name)}"`;
    if (value instanceof File) {
      head += `; filename="${escapeFormName(value.name)}"\r\nContent-Type: ${value.type || "application/octet-stream"}`;
      chunks.push(encodeUtf8(head + "\r\n\r\n"), Blob[kInternal](value), encodeUtf8("\r\n"));
    } else {
      chunks.push(encodeUtf8(head + "\r\n\r\n" + value.replace(/\r\n|\r|\n/g, "\r\n") + "\r\n"));
    }
  }
  chunks.push(encodeUtf8(`--${boundary}--\r\n`));
  return { bytes: concatBytes(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

function indexOfBytes(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function parseMultipart(bytes, contentType) {
  const match = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  if (!match) {
    throw new TypeError("No boundary string in Content-Type header. The multipart/form-data MIME type requires a boundary parameter, e.g. 'Content-Type: multipart/form-data; boundary=\"abcd\"'. See RFC 7578, section 4.");
  }
  const delimiter = encodeUtf8("--" + (match[1] || match[2]).trim());
  const form = new FormData();
  let position = indexOfBytes(bytes, delimiter, 0);
  if (position < 0) throw new TypeError("Failed to parse multipart/form-data body.");
  for (;;) {
    position += delimiter.length;
    if (bytes[position] === 0x2d && bytes[position + 1] === 0x2d) break;
    position += 2; // CRLF
    const headerEnd = indexOfBytes(bytes, encodeUtf8("\r\n\r\n"), position);
    if (headerEnd < 0) throw new TypeError("Failed to parse multipart/form-data body.");
    const headerText = decodeUtf8(bytes.subarray(position, headerEnd));
    const next = indexOfBytes(bytes, delimiter, headerEnd + 4);
    if (next < 0) throw new TypeError("Failed to parse multipart/form-data body.");
    const content = bytes.subarray(headerEnd + 4, next - 2);
    const disposition = /content-disposition:[^\r\n]*/i.exec(headerText);
    const name = disposition && /\bname="([^"]*)"/i.exec(disposition[0]);
    if (!name) throw new TypeError("A multipart/form-data part has no name.");
    const filename = disposition && /\bfilename="([^"]*)"/i.exec(disposition[0]);
    if (filename) {
      const type = /content-type:\s*([^\r\n]*)/i.exec(headerText);
      form.append(name[1], new File([content], filename[1], { type: type ? type[1].trim() : "" }));
    } else {
      form.append(name[1], decodeUtf8(content));
    }
    position = next;
  }
  return form;
}

// ---- the Body mixin ----

// a MIME type as workerd serialises it: type, subtype and parameter names lower-case, no spaces around ";" and "="
function normalizeMimeType(text) {
  const [essence, ...params] = text.split(";");
  const match = /^[\t\n\r ]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\/([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[\t\n\r ]*$/.exec(essence);
  if (!match) return "";
  let out = `${match[1]}/${match[2]}`.toLowerCase();
  for (const param of params) {
    const eq = param.indexOf("=");
    if (eq < 0) continue;
    const name = param.slice(0, eq).trim().toLowerCase();
    const value = param.slice(eq + 1).trim();
    if (name && value) out += `;${name}=${value}`;
  }
  return out;
}

const BODY_USED = "Body has already been used. It can only be used once. Use tee() first if you need to read it twice.";

// { bytes, stream, contentType } for a body init value
function extractBody(init) {
  if (init === null || init === undefined) return { bytes: null, stream: null, contentType: null };
  if (typeof init === "string") return { bytes: encodeUtf8(init), stream: null, contentType: "text/plain;charset=UTF-8" };
  if (init instanceof ReadableStream) {
    if (init[kInternal].disturbed) throw new TypeError("This ReadableStream is disturbed (has already been read from), and cannot be used as a body.");
    if (init.locked) throw new TypeError("This ReadableStream is locked to a reader, and cannot be used as a body.");
    return { bytes: null, stream: init, contentType: null };
  }
  if (init instanceof ArrayBuffer || ArrayBuffer.isView(init)) return { bytes: viewBytes(init).slice(), stream: null, contentType: null };
  if (init instanceof URLSearchParams) {
    return { bytes: encodeUtf8(init.toString()), stream: null, contentType: "application/x-www-form-urlencoded;charset=UTF-8" };
  }
  if (init instanceof Blob) return { bytes: Blob[kInternal](init), stream: null, contentType: init.type || null };
  if (init instanceof FormData) {
    const { bytes, contentType } = serializeMultipart(init);
    return { bytes, stream: null, contentType };
  }
  return { bytes: encodeUtf8(String(init)), stream: null, contentType: "text/plain;charset=UTF-8" };
}

class BodyState {
  constructor(bytes, stream) {
    this.bytes = bytes; // Uint8Array or null; never mutated
    this.stream = stream; // ReadableStream or null
    this.used = false;
  }
  get isNull() { return this.bytes === null && this.stream === null && !this.used; }
  getStream() {
    if (this.stream === null && this.bytes !== null) {
      this.stream = bytesStream(this.bytes);
      if (this.used) {
        // the body was read through text() and the like: its stream is disturbed and stays locked, as in workerd
        this.stream[kInternal].disturbed = true;
        this.stream.getReader();
      }
    }
    return this.stream;
  }
  get usedFlag() { return this.stream ? this.stream[kInternal].disturbed : this.used; }
  // All the bytes, once; a TypeError if already read.
  consume() {
    if (this.usedFlag) return Promise.reject(new TypeError(BODY_USED));
    if (this.stream) {
      if (this.stream.locked) return Promise.reject(new TypeError("This ReadableStream is currently locked to a reader."));
      return readAllBytes(this.stream);
    }
    if (this.bytes === null) return Promise.resolve(new Uint8Array(0));  // a null body is never "used"
    this.used = true;
    return Promise.resolve(this.bytes);
  }
  clone() {
    // workerd's words, comma included
    if (this.usedFlag || (this.stream && this.stream.locked)) throw new TypeError("This ReadableStream is currently locked to a reader,");
    if (this.stream) {
      const [mine, theirs] = this.stream.tee();
      this.stream = mine;
      return new BodyState(null, theirs);
    }
    return new BodyState(this.bytes, null);
  }
}

const bodyMethods = {
  get body() { return this[kInternal].body.getStream(); },
  get bodyUsed() { return this[kInternal].body.usedFlag; },
  arrayBuffer() { return this[kInternal].body.consume().then((bytes) => copyToArrayBuffer(bytes)); },
  bytes() { return this[kInternal].body.consume().then((bytes) => bytes.slice()); },
  text() { return this[kInternal].body.consume().then((bytes) => decodeUtf8(bytes)); },
  json() { return this.text().then((text) => parseJson(text)); },
  blob() {
    return this[kInternal].body.consume().then((bytes) => new Blob([bytes], { type: normalizeMimeType(this.headers.get("content-type") || "") }));
  },
  formData() {
    const type = this.headers.get("content-type");
    return this[kInternal].body.consume().then((bytes) => {
      if (type === null) throw new TypeError("Parsing a Body as FormData requires a Content-Type header.");
      if (/^multipart\/form-data/i.test(type)) return parseMultipart(bytes, type);
      if (/^application\/x-www-form-urlencoded/i.test(type)) {
        const form = new FormData();
        for (const [name, value] of parseFormUrlencoded(decodeUtf8(bytes))) form.append(name, value);
        return form;
      }
      throw new TypeError("Unrecognized Content-Type header value. FormData can only parse the following MIME types: multipart/form-data, application/x-www-form-urlencoded");
    });
  },
};

// application/x-www-form-urlencoded as workerd reads a body: like URLSearchParams, except that a "%" not
// followed by two hex digits is dropped ("%zz" reads "zz")
function parseFormUrlencoded(text) {
  const decode = (part) => {
    part = part.replace(/\+/g, " ");
    if (!part.includes("%")) return part;
    const bytes = [];
    const raw = encodeUtf8(part);
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] !== 0x25) bytes.push(raw[i]);
      else if (/^[0-9A-Fa-f]{2}$/.test(String.fromCharCode(raw[i + 1] || 0, raw[i + 2] || 0))) {
        bytes.push(parseInt(String.fromCharCode(raw[i + 1], raw[i + 2]), 16));
        i += 2;
      }
    }
    return decodeUtf8(new Uint8Array(bytes));
  };
  const pairs = [];
  for (const piece of text.split("&")) {
    if (piece === "") continue;
    const eq = piece.indexOf("=");
    pairs.push(eq < 0 ? [decode(piece), ""] : [decode(piece.slice(0, eq)), decode(piece.slice(eq + 1))]);
  }
  return pairs;
}

// Request and Response share one prototype holding the Body methods, as workerd's classes inherit them from Body
const bodyPrototype = {};
for (const key of Object.keys(Object.getOwnPropertyDescriptors(bodyMethods))) {
  Object.defineProperty(bodyPrototype, key, { ...Object.getOwnPropertyDescriptor(bodyMethods, key), enumerable: false });
}

function mixBody(cls) {
  Object.setPrototypeOf(cls.prototype, bodyPrototype);
}

defineGlobal("Blob", Blob);
defineGlobal("File", File);
defineGlobal("FormData", FormData);
