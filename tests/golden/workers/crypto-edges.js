// requests: [{"path": "/"}, {"method": "POST", "path": "/webhook", "headers": {"X-Signature": "sha256=645e86a36ef1ed458be359c7d3c57737f8a202a88274a809a507f208ba54d991"}, "body": "{\"event\":\"ping\"}"}]
// crypto.subtle edge cases tenants meet: JWK imports written by hand, key lengths, argument checks, webhook signature checks, hex/base64 helpers.
const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
const enc = new TextEncoder();
const settle = async (p) => { try { const v = await p; return { ok: v instanceof ArrayBuffer ? hex(v) : v }; } catch (e) { return { error: e.name, message: e.message }; } };
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const HS = { name: "HMAC", hash: "SHA-256" };

export default {
  async fetch(request) {
    if (new URL(request.url).pathname === "/webhook") {
      const body = await request.text();
      const key = await crypto.subtle.importKey("raw", enc.encode("whsec_test"), HS, false, ["sign", "verify"]);
      const mac = hex(await crypto.subtle.sign("HMAC", key, enc.encode(body)));
      const given = request.headers.get("x-signature").slice(7);
      const bytes = new Uint8Array(given.match(/../g).map((h) => parseInt(h, 16)));
      return Response.json({ mac, matches: mac === given, verify: await crypto.subtle.verify("HMAC", key, bytes, enc.encode(body)) });
    }
    const out = {};
    const k = btoa("jwk secret value").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    out.jwkHand = await settle((async () => {
      const key = await crypto.subtle.importKey("jwk", { kty: "oct", k, alg: "HS256" }, HS, true, ["sign"]);
      return { sig: hex(await crypto.subtle.sign("HMAC", key, enc.encode("m"))), algorithm: key.algorithm, usages: key.usages };
    })());
    out.jwkAlgMismatch = await settle(crypto.subtle.importKey("jwk", { kty: "oct", k, alg: "HS512" }, HS, true, ["sign"]));
    out.jwkWrongKty = await settle(crypto.subtle.importKey("jwk", { kty: "RSA", k }, HS, true, ["sign"]));
    out.jwkNoK = await settle(crypto.subtle.importKey("jwk", { kty: "oct" }, HS, true, ["sign"]));
    out.jwkExtFalse = await settle(crypto.subtle.importKey("jwk", { kty: "oct", k, ext: false }, HS, true, ["sign"]));
    out.jwkKeyOps = await settle(crypto.subtle.importKey("jwk", { kty: "oct", k, key_ops: ["verify"] }, HS, true, ["sign"]));
    out.jwkBadBase64 = await settle(crypto.subtle.importKey("jwk", { kty: "oct", k: "!!!" }, HS, true, ["sign"]));
    out.rawFromBuffer = await settle((async () => hex(await crypto.subtle.sign("HMAC", await crypto.subtle.importKey("raw", enc.encode("key").buffer, HS, false, ["sign"]), enc.encode("data").buffer)))());
    out.rawEmpty = await settle(crypto.subtle.importKey("raw", new Uint8Array(0), HS, false, ["sign"]));
    out.lengthParam = await settle((async () => { const key = await crypto.subtle.importKey("raw", new Uint8Array(4), { ...HS, length: 32 }, true, ["sign"]); return key.algorithm; })());
    out.lengthMismatch = await settle(crypto.subtle.importKey("raw", new Uint8Array(4), { ...HS, length: 16 }, true, ["sign"]));
    out.noHash = await settle(crypto.subtle.importKey("raw", new Uint8Array(4), { name: "HMAC" }, true, ["sign"]));
    out.badHash = await settle(crypto.subtle.importKey("raw", new Uint8Array(4), { name: "HMAC", hash: "SHA-999" }, true, ["sign"]));
    out.lowerName = await settle((async () => (await crypto.subtle.importKey("raw", new Uint8Array(4), { name: "hmac", hash: "sha-1" }, true, ["sign"])).algorithm)());
    out.badFormat = await settle(crypto.subtle.importKey("pem", new Uint8Array(4), HS, true, ["sign"]));
    out.badAlgorithm = await settle(crypto.subtle.importKey("raw", new Uint8Array(4), { name: "NOPE" }, true, ["sign"]));
    out.digestString = await settle(crypto.subtle.digest("SHA-256", "text"));
    out.digestNoData = await settle(crypto.subtle.digest("SHA-256"));
    out.digestArrayBuffer = await settle(crypto.subtle.digest("SHA-1", enc.encode("abc").buffer));
    out.digestUnknownObject = await settle(crypto.subtle.digest({ name: "SHA-512/256" }, enc.encode("abc")));
    const key = await crypto.subtle.importKey("raw", enc.encode("k"), HS, true, ["sign", "verify"]);
    out.verifyShort = await settle(crypto.subtle.verify("HMAC", key, new Uint8Array(5), enc.encode("x")));
    out.verifyLong = await settle(crypto.subtle.verify("HMAC", key, new Uint8Array(64), enc.encode("x")));
    out.signWrongAlgorithm = await settle(crypto.subtle.sign("SHA-256", key, enc.encode("x")));
    out.signNotKey = await settle(crypto.subtle.sign("HMAC", { type: "secret" }, enc.encode("x")));
    out.exportJwk = await settle((async () => { const j = await crypto.subtle.exportKey("jwk", key); return Object.keys(j).sort().map((n) => [n, j[n]]); })());
    out.exportBadFormat = await settle(crypto.subtle.exportKey("spki", key));
    out.generatedSha512 = await settle((async () => { const g = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-512" }, true, ["sign"]); return [g.algorithm, (await crypto.subtle.exportKey("raw", g)).byteLength]; })());
    out.generatedLength = await settle((async () => { const g = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256", length: 128 }, true, ["sign"]); return [g.algorithm, (await crypto.subtle.exportKey("raw", g)).byteLength]; })());
    out.keyFrozen = [Object.isFrozen(key.usages), key instanceof CryptoKey, typeof CryptoKey, Object.prototype.toString.call(key.algorithm)];
    out.timingSafeEqual = [attempt(() => crypto.subtle.timingSafeEqual(enc.encode("a"), enc.encode("a"))), attempt(() => crypto.subtle.timingSafeEqual(enc.encode("a"), enc.encode("b"))), attempt(() => crypto.subtle.timingSafeEqual(enc.encode("a"), enc.encode("ab")))];
    const uuids = new Set(Array.from({ length: 50 }, () => crypto.randomUUID()));
    out.uuidsDistinct = uuids.size;
    out.randomInt8 = attempt(() => crypto.getRandomValues(new Int8Array(3)).length);
    out.randomBigInt = attempt(() => crypto.getRandomValues(new BigUint64Array(2)).length);
    out.randomDataView = attempt(() => crypto.getRandomValues(new DataView(new ArrayBuffer(4))));
    out.randomMax = attempt(() => crypto.getRandomValues(new Uint8Array(65536)).length);
    out.randomNotView = attempt(() => crypto.getRandomValues([1, 2]));
    out.subtleMethods = ["encrypt", "decrypt", "sign", "verify", "digest", "generateKey", "deriveKey", "deriveBits", "importKey", "exportKey", "wrapKey", "unwrapKey"].map((m) => typeof crypto.subtle[m]);
    return Response.json(out);
  },
};
