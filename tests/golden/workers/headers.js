// requests: [{"path": "/"}, {"path": "/incoming", "headers": {"X-Custom": "One", "x-custom-two": "  padded  ", "Accept": "text/html"}}]
// Headers: case-insensitive names, lower-case sorted iteration, joined repeats, Set-Cookie kept apart, errors.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/incoming") {
      return Response.json({
        custom: request.headers.get("x-custom"),
        two: request.headers.get("X-CUSTOM-TWO"),
        accept: request.headers.get("accept"),
        has: request.headers.has("X-Custom"),
        mutate: attempt(() => request.headers.set("x-new", "1")),
      });
    }
    const h = new Headers({ "Content-Type": "text/plain", "X-Zeta": "z" });
    h.append("x-alpha", "1");
    h.append("X-Alpha", "2");
    h.append("Set-Cookie", "a=1; Path=/");
    h.append("set-cookie", "b=2");
    h.set("X-Beta", "  spaced value\t");
    const out = {
      entries: [...h],
      keys: [...h.keys()],
      values: [...h.values()],
      getAlpha: h.get("X-ALPHA"),
      getCookie: h.get("set-cookie"),
      getSetCookie: h.getSetCookie(),
      missing: h.get("nope"),
      has: [h.has("x-zeta"), h.has("X-ZETA"), h.has("nope")],
    };
    h.delete("x-zeta");
    out.afterDelete = [...h.keys()];
    const seen = [];
    h.forEach((value, name) => seen.push(name + "=" + value));
    out.forEach = seen;
    out.fromPairs = [...new Headers([["b", "2"], ["a", "1"], ["B", "3"]])];
    out.fromHeaders = [...new Headers(new Headers({ q: "1" }))];
    out.badName = attempt(() => new Headers({ "bad name": "x" }));
    out.badValue = attempt(() => new Headers({ ok: "a\nb" }));
    out.badPair = attempt(() => new Headers([["a", "b", "c"]]));
    out.emptyValue = [...new Headers({ empty: "" })];
    out.tag = Object.prototype.toString.call(h);
    const response = new Response("x", { headers: { "X-Out": "one", "Set-Cookie": "s=1" } });
    response.headers.append("x-out", "two");
    out.responseHeaders = [...response.headers];
    return new Response(JSON.stringify(out), {
      headers: [["content-type", "application/json"], ["X-Multi", "a"], ["x-multi", "b"], ["Set-Cookie", "c=3"], ["Set-Cookie", "d=4"]],
    });
  },
};
