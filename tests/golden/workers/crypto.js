// requests: [{"path": "/"}]
// crypto.subtle.digest (SHA-1/256/384/512), HMAC importKey/sign/verify/exportKey, getRandomValues and randomUUID (shape only).
const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
const enc = new TextEncoder();
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch() {
    const out = { digest: {}, hmac: {} };
    const inputs = { empty: "", abc: "abc", long: "a".repeat(1000), block: "x".repeat(55), block2: "y".repeat(64), big: "z".repeat(111) };
    for (const alg of ["SHA-1", "SHA-256", "SHA-384", "SHA-512"]) {
      out.digest[alg] = {};
      for (const [name, text] of Object.entries(inputs)) out.digest[alg][name] = hex(await crypto.subtle.digest(alg, enc.encode(text)));
    }
    out.md5 = Object.fromEntries(await Promise.all(Object.entries(inputs).map(async ([name, text]) => [name, hex(await crypto.subtle.digest("MD5", enc.encode(text)))])));
    out.digestObject = hex(await crypto.subtle.digest({ name: "sha-256" }, enc.encode("abc")));
    out.digestView = hex(await crypto.subtle.digest("SHA-256", new DataView(enc.encode("xabcx").buffer, 1, 3)));
    out.digestBad = await settle(crypto.subtle.digest("MD6", enc.encode("abc")));
    for (const hash of ["SHA-1", "SHA-256", "SHA-384", "SHA-512"]) {
      const key = await crypto.subtle.importKey("raw", enc.encode("secret-key"), { name: "HMAC", hash }, true, ["sign", "verify"]);
      const signature = await crypto.subtle.sign("HMAC", key, enc.encode("payload"));
      const longKey = await crypto.subtle.importKey("raw", enc.encode("k".repeat(200)), { name: "HMAC", hash: { name: hash } }, false, ["sign"]);
      out.hmac[hash] = {
        signature: hex(signature),
        verifyOk: await crypto.subtle.verify("HMAC", key, signature, enc.encode("payload")),
        verifyBad: await crypto.subtle.verify("HMAC", key, signature, enc.encode("payload!")),
        longKey: hex(await crypto.subtle.sign({ name: "HMAC" }, longKey, enc.encode("payload"))),
        algorithm: key.algorithm,
        type: key.type,
        extractable: key.extractable,
        usages: key.usages,
        raw: hex(await crypto.subtle.exportKey("raw", key)),
      };
    }
    const key = await crypto.subtle.importKey("raw", enc.encode("k"), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    out.signWithoutUsage = await settle(crypto.subtle.sign("HMAC", key, enc.encode("x")));
    out.exportNotExtractable = await settle(crypto.subtle.exportKey("raw", key));
    const jwkKey = await crypto.subtle.importKey("raw", enc.encode("jwk-secret"), { name: "HMAC", hash: "SHA-256" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", jwkKey);
    out.jwk = { kty: jwk.kty, k: jwk.k, alg: jwk.alg, ext: jwk.ext, key_ops: jwk.key_ops };
    const back = await crypto.subtle.importKey("jwk", jwk, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    out.jwkRoundTrip = hex(await crypto.subtle.sign("HMAC", back, enc.encode("x"))) === hex(await crypto.subtle.sign("HMAC", jwkKey, enc.encode("x")));
    out.badUsage = await settle(crypto.subtle.importKey("raw", enc.encode("k"), { name: "HMAC", hash: "SHA-256" }, false, ["encrypt"]));
    const generated = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, true, ["sign"]);
    out.generated = { algorithm: generated.algorithm, rawLength: (await crypto.subtle.exportKey("raw", generated)).byteLength };
    const uuid = crypto.randomUUID();
    out.uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid);
    const random = crypto.getRandomValues(new Uint8Array(32));
    out.random = { length: random.length, same: random === random, type: random.constructor.name };
    out.randomU32 = crypto.getRandomValues(new Uint32Array(4)).length;
    const attempt = (fn) => { try { fn(); return "ok"; } catch (e) { return [e.name, e.message]; } };
    out.randomFloat = attempt(() => crypto.getRandomValues(new Float64Array(2)));
    out.randomTooBig = attempt(() => crypto.getRandomValues(new Uint8Array(65537)));
    out.tags = [Object.prototype.toString.call(crypto), Object.prototype.toString.call(crypto.subtle), Object.prototype.toString.call(key)];
    return Response.json(out);
  },
};
