// Blob, File, FormData, and the Body mixin shared by Request and Response.

class Blob {
  #bytes;
  #type;
  constructor(parts = [], options = {}) {
    if (parts === null || typeof parts !== "object" || typeof parts[Symbol.iterator] !== "function") {
      throw new TypeError("Failed to construct 'Blob': The provided value cannot be converted to a sequence.");
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
    if (arguments.length < 2) throw new TypeError("Failed to construct 'File': 2 arguments required.");
    super(parts, options);
    this.#name = String(name);
    this.#lastModified = options && options.lastModified !== undefined ? Number(options.lastModified) : Date.now();
  }
  get name() { return this.#name; }
  get lastModified() { return this.#lastModified; }
}

function formEntry(name, value, filename) {
  name = String(name);
  if (value instanceof Blob) {
    if (!(value instanceof File) || filename !== undefined) {
      value = new File([value], filename !== undefined ? String(filename) : value instanceof File ? value.name : "blob", { type: value.type });
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
  append(name, value, filename) { this.#list.push(formEntry(name, value, filename)); }
  set(name, value, filename) {
    const entry = formEntry(name, value, filename);
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
  *entries() { for (const [n, v] of this.#list.slice()) yield [n, v]; }
  *keys() { for (const [n] of this.#list.slice()) yield n; }
  *values() { for (const [, v] of this.#list.slice()) yield v; }
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
  if (!match) throw new TypeError("Content-Type multipart/form-data has no boundary.");
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

const BODY_USED = "Body has already been used. It can only be used once. Use tee() first if you need to read it twice.";

// { bytes, stream, contentType } for a body init value
function extractBody(init) {
  if (init === null || init === undefined) return { bytes: null, stream: null, contentType: null };
  if (typeof init === "string") return { bytes: encodeUtf8(init), stream: null, contentType: "text/plain;charset=UTF-8" };
  if (init instanceof ReadableStream) {
    if (init.locked || init[kInternal].disturbed) throw new TypeError("This ReadableStream is disturbed or locked.");
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
      if (this.used) this.stream[kInternal].disturbed = true;
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
    this.used = true;
    return Promise.resolve(this.bytes === null ? new Uint8Array(0) : this.bytes);
  }
  clone() {
    if (this.usedFlag) throw new TypeError("This ReadableStream is currently locked to a reader,"); // workerd's words, comma included
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
  json() { return this.text().then((text) => JSON.parse(text)); },
  blob() {
    return this[kInternal].body.consume().then((bytes) => new Blob([bytes], { type: this.headers.get("content-type") || "" }));
  },
  formData() {
    const type = this.headers.get("content-type") || "";
    return this[kInternal].body.consume().then((bytes) => {
      if (/^multipart\/form-data/i.test(type)) return parseMultipart(bytes, type);
      if (/^application\/x-www-form-urlencoded/i.test(type)) {
        const form = new FormData();
        for (const [name, value] of new URLSearchParams(decodeUtf8(bytes))) form.append(name, value);
        return form;
      }
      throw new TypeError("Unrecognized Content-Type header value. FormData can only parse the following MIME types: multipart/form-data, application/x-www-form-urlencoded");
    });
  },
};

function mixBody(cls) {
  for (const key of Object.keys(Object.getOwnPropertyDescriptors(bodyMethods))) {
    Object.defineProperty(cls.prototype, key, { ...Object.getOwnPropertyDescriptor(bodyMethods, key), enumerable: false });
  }
}

defineGlobal("Blob", Blob);
defineGlobal("File", File);
defineGlobal("FormData", FormData);
