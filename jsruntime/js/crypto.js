// crypto.getRandomValues, crypto.randomUUID, and crypto.subtle: digest (SHA-1/256/384/512, and MD5 as workerd has it) and HMAC
// (importKey, exportKey, generateKey, sign, verify). The hashing is C (digest.c).

const DIGESTS = { "SHA-1": 160, "SHA-256": 256, "SHA-384": 384, "SHA-512": 512 };
const DIGEST_BLOCK_BITS = { "SHA-1": 512, "SHA-256": 512, "SHA-384": 1024, "SHA-512": 1024 };

function normalizeAlgorithm(algorithm) {
  if (typeof algorithm === "string") return { name: algorithm };
  if (algorithm === null || typeof algorithm !== "object") throw new TypeError("Algorithm must be a string or an object.");
  if (typeof algorithm.name !== "string") throw new TypeError("Algorithm name must be a string.");
  return algorithm;
}

function digestName(algorithm, allowMD5 = false) {
  const name = normalizeAlgorithm(algorithm).name.toUpperCase();
  if (allowMD5 && name === "MD5") return name;
  if (!Object.prototype.hasOwnProperty.call(DIGESTS, name)) {
    throw domException(`Unrecognized or unimplemented digest algorithm requested.`, "NotSupportedError");
  }
  return name;
}

function inGlobalScope(what) {
  if (!currentInvocation && !initializing.allowed) {
    throw new Error(`Disallowed operation called within global scope. Asynchronous I/O (ex: fetch() or connect()), setting a timeout, and generating random values are not allowed within global scope. To fix this error, perform this operation within a handler. https://developers.cloudflare.com/workers/runtime-apis/handlers/`);
  }
}

// workerd's CryptoKey properties are the instance's own (JSON.stringify shows them)
const CRYPTO_KEY_PROPERTIES = {
  usages: { get() { return this[kInternal].usages.slice(); }, enumerable: true, configurable: true },
  algorithm: { get() { return structuredCloneValue(this[kInternal].algorithm); }, enumerable: true, configurable: true },
  extractable: { get() { return this[kInternal].extractable; }, enumerable: true, configurable: true },
  type: { get() { return this[kInternal].type; }, enumerable: true, configurable: true },
};

class CryptoKey {
  constructor(key) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
    Object.defineProperties(this, CRYPTO_KEY_PROPERTIES);
  }
}

class Crypto {
  constructor() { throw new TypeError("Illegal constructor"); }
}

class SubtleCrypto {
  constructor() { throw new TypeError("Illegal constructor"); }
}

const notBufferSource = (method, index) =>
  new TypeError(`Failed to execute '${method}' on 'SubtleCrypto': parameter ${index} is not of type 'BufferSource'.`);

function bufferArgument(value, method, index) {
  if (!isBufferSource(value)) throw notBufferSource(method, index);
  return viewBytes(value);
}

function keyArgument(key, method, index) {
  if (!(key instanceof CryptoKey)) throw new TypeError(`Failed to execute '${method}' on 'SubtleCrypto': parameter ${index} is not of type 'CryptoKey'.`);
  return key;
}

const HMAC_USAGES = ["sign", "verify"];

function makeHmacKey(bytes, hash, length, extractable, usages) {
  for (const usage of usages) {
    if (!HMAC_USAGES.includes(usage)) throw domException(`Attempt to import secret HMAC key with invalid usage "${usage}".`, "SyntaxError");
  }
  if (usages.length === 0) throw domException("Secret key usages must not be empty.", "SyntaxError");
  const key = new CryptoKey(kInternal);
  key[kInternal] = {
    type: "secret", extractable: Boolean(extractable), usages: HMAC_USAGES.filter((u) => usages.includes(u)),
    algorithm: { name: "HMAC", length, hash: { name: hash } }, bytes,
  };
  return key;
}

const base64url = {
  encode(bytes) {
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  decode(text) {
    const binary = atob(String(text).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
  },
  // the key of an "oct" JSON Web Key, or workerd's DataError
  decodeKey(text) {
    const invalid = () => domException(`HMAC "jwk" key import requires a base64Url encoding of the key`, "DataError");
    if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw invalid();
    try {
      return base64url.decode(text);
    } catch {
      throw invalid();
    }
  },
};

function hmacHash(algorithm) {
  if (algorithm.hash === undefined) throw new TypeError(`Missing field "hash" in "algorithm".`);
  return digestName(algorithm.hash);
}

function checkUsage(key, usage, name) {
  if (key[kInternal].algorithm.name !== name) {
    throw domException(`Requested algorithm "${name}" does not match this CryptoKey's algorithm "${key[kInternal].algorithm.name}".`, "InvalidAccessError");
  }
  if (!key[kInternal].usages.includes(usage)) {
    throw domException(`Requested key usage "${usage}" does not match any usage listed in this CryptoKey.`, "InvalidAccessError");
  }
}

const asPromise = (fn) => new Promise((resolve) => resolve(fn()));

const subtle = {
  digest(algorithm, data) {
    return asPromise(() => host.digest(digestName(algorithm, true), bufferArgument(data, "digest", 2)));
  },
  importKey(format, keyData, algorithm, extractable, usages) {
    return asPromise(() => {
      algorithm = normalizeAlgorithm(algorithm);
      if (algorithm.name.toUpperCase() !== "HMAC") {
        throw domException(`Unrecognized key import algorithm "${algorithm.name}" requested.`, "NotSupportedError");
      }
      const hash = hmacHash(algorithm);
      let bytes;
      if (format === "raw") {
        bytes = bufferArgument(keyData, "importKey", 2).slice();
      } else if (format === "jwk") {
        if (!keyData || keyData.kty !== "oct") {
          throw domException(`HMAC "jwk" key import requires a JSON Web Key with Key Type parameter ("kty") equal to "oct" (encountered "${keyData ? keyData.kty : undefined}").`, "DataError");
        }
        bytes = base64url.decodeKey(keyData.k);
        const expected = "HS" + (hash === "SHA-1" ? "1" : hash.slice(4));
        if (keyData.alg !== undefined && keyData.alg !== expected) {
          throw domException(`HMAC "jwk" key import specifies "alg" that is incompatible with the hash name (encountered "${keyData.alg}", expected "${expected}").`, "DataError");
        }
        if (keyData.ext === false && extractable) {
          throw domException(`JWK ext field for "HMAC" is set to false but extractable is true`, "DataError");
        }
      } else {
        throw domException(`Unrecognized key import format "${format}".`, "NotSupportedError");
      }
      const rawBits = bytes.length * 8;
      const length = algorithm.length !== undefined ? Number(algorithm.length) : rawBits;
      if (length === 0 || length > rawBits || length <= rawBits - 8) {
        throw domException(`Imported HMAC key length (${length}) must be a non-zero value up to 7 bits less than, and no greater than, the bit length of the raw key data (${rawBits}).`, "DataError");
      }
      return makeHmacKey(bytes, hash, length, extractable, Array.from(usages || []));
    });
  },
  generateKey(algorithm, extractable, usages) {
    return asPromise(() => {
      algorithm = normalizeAlgorithm(algorithm);
      if (algorithm.name.toUpperCase() !== "HMAC") {
        throw domException(`Unrecognized key generation algorithm "${algorithm.name}" requested.`, "NotSupportedError");
      }
      const hash = hmacHash(algorithm);
      const length = algorithm.length !== undefined ? Number(algorithm.length) : DIGEST_BLOCK_BITS[hash];
      if (!(length > 0)) throw domException("HMAC key length must be a non-zero value.", "OperationError");
      const bytes = new Uint8Array(Math.ceil(length / 8));
      host.randomFill(bytes);
      return makeHmacKey(bytes, hash, length, extractable, Array.from(usages || []));
    });
  },
  exportKey(format, key) {
    return asPromise(() => {
      keyArgument(key, "exportKey", 2);
      if (!key[kInternal].extractable) throw domException(`Attempt to export non-extractable ${key[kInternal].algorithm.name} key.`, "InvalidAccessError");
      const bytes = key[kInternal].bytes;
      if (format === "raw") return copyToArrayBuffer(bytes);
      if (format === "jwk") {
        const hash = key[kInternal].algorithm.hash.name;
        return { kty: "oct", k: base64url.encode(bytes), alg: "HS" + (hash === "SHA-1" ? "1" : hash.slice(4)), key_ops: key[kInternal].usages.slice(), ext: true };
      }
      throw domException(`Unimplemented key export format "${format}".`, "NotSupportedError");
    });
  },
  sign(algorithm, key, data) {
    return asPromise(() => {
      keyArgument(key, "sign", 2);
      const bytes = bufferArgument(data, "sign", 3);
      checkUsage(key, "sign", normalizeAlgorithm(algorithm).name.toUpperCase());
      return host.hmac(key[kInternal].algorithm.hash.name, key[kInternal].bytes, bytes);
    });
  },
  verify(algorithm, key, signature, data) {
    return asPromise(() => {
      keyArgument(key, "verify", 2);
      const given = bufferArgument(signature, "verify", 3);
      const bytes = bufferArgument(data, "verify", 4);
      checkUsage(key, "verify", normalizeAlgorithm(algorithm).name.toUpperCase());
      const expected = new Uint8Array(host.hmac(key[kInternal].algorithm.hash.name, key[kInternal].bytes, bytes));
      return timingSafeEqual(expected, given);
    });
  },
  timingSafeEqual(a, b) {
    a = viewBytes(a);
    b = viewBytes(b);
    if (a.byteLength !== b.byteLength) throw new TypeError("Input buffers must have the same byte length.");
    return timingSafeEqual(a, b);
  },
};
for (const name of ["encrypt", "decrypt", "deriveBits", "deriveKey", "wrapKey", "unwrapKey"]) {
  subtle[name] = () => Promise.reject(domException(`crypto.subtle.${name}() is not supported by wasmdeck's JavaScript runtime yet.`, "NotSupportedError"));
}

function timingSafeEqual(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  let difference = 0;
  for (let i = 0; i < a.byteLength; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];

const crypto = {
  subtle,
  getRandomValues(array) {
    inGlobalScope();
    if (!ArrayBuffer.isView(array)) {
      throw new TypeError("Failed to execute 'getRandomValues' on 'Crypto': parameter 1 is not of type 'ArrayBufferView'.");
    }
    if (!INTEGER_ARRAYS.some((type) => array instanceof type)) {
      throw domException("ArrayBufferView argument to getRandomValues() must be an integer-typed view.", "TypeMismatchError");
    }
    if (array.byteLength > 65536) {
      throw domException(`getRandomValues() only accepts buffers of size <= 64K but provided ${array.byteLength} bytes.`, "QuotaExceededError");
    }
    host.randomFill(array);
    return array;
  },
  randomUUID() {
    inGlobalScope();
    const bytes = new Uint8Array(16);
    host.randomFill(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  },
};

defineGlobal("crypto", crypto);
defineGlobal("CryptoKey", CryptoKey);
defineGlobal("Crypto", Crypto);
defineGlobal("SubtleCrypto", SubtleCrypto);
Object.setPrototypeOf(crypto, Crypto.prototype);
Object.setPrototypeOf(subtle, SubtleCrypto.prototype);

// Math.random from xoshiro128** seeded from the entropy source once per instance: QuickJS-ng seeds
// it from the clock, so two instances started in the same microsecond would draw the same numbers.
{
  const state = new Uint32Array(4);
  do host.randomFill(state); while ((state[0] | state[1] | state[2] | state[3]) === 0);
  const next = () => {
    const result = Math.imul(((Math.imul(state[1], 5) << 7) | (Math.imul(state[1], 5) >>> 25)), 9) >>> 0;
    const t = state[1] << 9;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = (state[3] << 11) | (state[3] >>> 21);
    return result;
  };
  Object.defineProperty(Math, "random", {
    value: function random() { return ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992; },
    writable: true, configurable: true, enumerable: false,
  });
}
