// requests: [{"path": "/"}]
// Which Workers globals exist (leaving out those wasmdeck lacks: Intl, WebAssembly, caches, HTMLRewriter, WebSocket, URLPattern, CompressionStream, EventSource, Atomics) and what they say about themselves; console methods; performance and Date; navigator.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const NAMES = ["fetch", "Request", "Response", "Headers", "URL", "URLSearchParams", "TextEncoder", "TextDecoder", "TextEncoderStream", "TextDecoderStream",
  "atob", "btoa", "crypto", "Crypto", "SubtleCrypto", "CryptoKey", "structuredClone", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "queueMicrotask",
  "ReadableStream", "WritableStream", "TransformStream", "ReadableStreamDefaultReader", "ReadableStreamBYOBReader", "WritableStreamDefaultWriter",
  "ByteLengthQueuingStrategy", "CountQueuingStrategy", "AbortController", "AbortSignal", "Event", "EventTarget", "Blob", "File", "FormData", "DOMException",
  "console", "navigator", "performance", "scheduler", "self", "globalThis", "CustomEvent", "MessageChannel", "IdentityTransformStream", "reportError", "addEventListener", "WeakRef", "FinalizationRegistry",
  "process", "Buffer", "require", "window", "document", "importScripts", "SharedArrayBuffer", "connect", "Iterator"];

export default {
  async fetch() {
    const out = {};
    out.types = Object.fromEntries(NAMES.map((n) => [n, typeof globalThis[n]]));
    out.selfIsGlobal = self === globalThis;
    out.navigator = [navigator.userAgent, typeof navigator.hardwareConcurrency, navigator.language];
    out.consoleMethods = ["log", "info", "warn", "error", "debug", "trace", "table", "dir", "time", "timeEnd", "assert", "count", "group", "groupEnd"].map((m) => [m, typeof console[m]]);
    out.consoleReturns = console.log("x") === undefined;
    out.performance = [typeof performance.now(), typeof performance.timeOrigin];
    const a = Date.now();
    let spin = 0;
    for (let i = 0; i < 200000; i++) spin += i;
    out.dateFrozenDuringCompute = Date.now() === a;
    const before = Date.now();
    await new Promise((r) => setTimeout(r, 15));
    out.dateAdvancesAfterIO = Date.now() - before >= 10;
    out.newDateMatchesNow = new Date().getTime() === Date.now();
    out.toStringTags = ["Request", "Response", "Headers", "URL", "TextEncoder", "AbortController", "AbortSignal", "Blob", "FormData", "ReadableStream", "Event", "EventTarget"].map((n) => {
      const make = { Request: () => new Request("https://e.example/"), Response: () => new Response(), Headers: () => new Headers(), URL: () => new URL("https://e.example/"), TextEncoder: () => new TextEncoder(),
        AbortController: () => new AbortController(), AbortSignal: () => new AbortController().signal, Blob: () => new Blob([]), FormData: () => new FormData(), ReadableStream: () => new ReadableStream(),
        Event: () => new Event("e"), EventTarget: () => new EventTarget() }[n];
      return [n, Object.prototype.toString.call(make()), String(make())];
    });
    out.jsonOfApiObjects = JSON.stringify({ h: new Headers({ a: "1" }), u: new URLSearchParams("a=1"), r: new Response("x").status });
    out.customEvent = attempt(() => { const e = new CustomEvent("c", { detail: { d: 1 } }); return [e.type, e.detail]; });
    out.reportError = typeof reportError;
    out.es = { at: [1, 2, 3].at(-1), groupBy: typeof Object.groupBy, findLast: [1, 2, 3].findLast((x) => x < 3), hasOwn: Object.hasOwn({ a: 1 }, "a"), toSorted: typeof [].toSorted, structuredCloneLength: structuredClone.length, replaceAll: "aXbX".replaceAll("X", "-") };
    out.evalBlocked = attempt(() => eval("1 + 1"));
    out.functionBlocked = attempt(() => new Function("return 2")());
    return Response.json(out);
  },
};
