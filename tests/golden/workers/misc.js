// requests: [{"method": "POST", "path": "/", "headers": {"Content-Type": "text/plain"}, "body": "abc"}]
// Small things tenants lean on: which lengths headers carry, instanceof and names of API classes, property enumeration of API objects.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const out = {};
    out.lengths = {
      incoming: request.headers.get("content-length"),
      stringResponse: new Response("abc").headers.get("content-length"),
      jsonResponse: Response.json({ a: 1 }).headers.get("content-length"),
      request: new Request("https://e.example/", { method: "POST", body: "abc" }).headers.get("content-length"),
    };
    out.names = [Request, Response, Headers, URL, URLSearchParams, TextEncoder, TextDecoder, AbortController, AbortSignal, Blob, File, FormData, ReadableStream, WritableStream, TransformStream, Event, EventTarget, DOMException, CryptoKey].map((C) => [C.name, C.length]);
    out.protoChain = [new File([], "f") instanceof Blob, AbortSignal.abort() instanceof EventTarget, Object.getPrototypeOf(Response.prototype) === Object.prototype];
    out.ownKeys = [Object.keys(new Response("x")), Object.keys(new Headers({ a: "1" })), Object.keys(new URL("https://e.example/")), Object.keys(request)];
    out.inOperator = ["json" in Response, "text" in Response.prototype, "bodyUsed" in new Response(), "getSetCookie" in Headers.prototype];
    out.prototypeMethods = Object.getOwnPropertyNames(Headers.prototype).sort();
    out.responseMethods = Object.getOwnPropertyNames(Response.prototype).sort();
    out.requestMethods = Object.getOwnPropertyNames(Request.prototype).sort();
    out.subclass = await (async () => { class JsonResponse extends Response { constructor(data) { super(JSON.stringify(data), { headers: { "content-type": "application/json" } }); } } const r = new JsonResponse({ s: 1 }); return [r instanceof Response, r instanceof JsonResponse, r.constructor.name, await r.text(), r.headers.get("content-type")]; })();
    out.subclassHeaders = (() => { class H extends Headers { extra() { return "extra"; } } const h = new H({ a: "1" }); return [h.get("a"), h.extra(), h instanceof Headers]; })();
    out.constructorIdentity = [new Response().constructor === Response, new Headers().constructor === Headers, request.constructor === Request];
    out.functionToString = String(Response).includes("native code");
    return Response.json(out);
  },
};
