// requests: [{"path": "/"}, {"path": "/sync"}, {"path": "/this"}, {"path": "/null-response"}, {"path": "/object-response"}, {"path": "/waituntil-value"}]
// The module form's handler: what it receives (env, ctx), what `this` is, synchronous answers, answers that are not Responses.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  marker: "the exported object",
  fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    if (path === "/sync") return new Response("synchronous answer");
    if (path === "/this") return Response.json({ marker: this && this.marker });
    if (path === "/null-response") return null;
    if (path === "/object-response") return { status: 200, body: "looks like a response" };
    if (path === "/waituntil-value") {
      const results = [attempt(() => ctx.waitUntil(42)), attempt(() => ctx.waitUntil()), attempt(() => ctx.waitUntil(Promise.resolve("fine")))];
      return Response.json(results);
    }
    return Response.json({
      args: arguments.length,
      envType: Object.prototype.toString.call(env),
      envKeys: Object.keys(env),
      ctxMethods: [typeof ctx.waitUntil, typeof ctx.passThroughOnException],
      ctxTag: Object.prototype.toString.call(ctx),
      requestTag: Object.prototype.toString.call(request),
      requestIsRequest: request instanceof Request,
    });
  },
};
