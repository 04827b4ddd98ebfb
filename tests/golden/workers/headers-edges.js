// requests: [{"path": "/"}, {"path": "/incoming", "headers": {"X-Dup": "one", "Cookie": "a=1; b=2", "X-Empty": ""}}]
// Headers edge cases: value normalisation, invalid names and values, getAll, set-cookie handling, guards, iteration while mutating.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/incoming") {
      const copy = new Headers(request.headers);
      copy.set("x-added", "yes");
      const req = new Request(request);
      return Response.json({
        dup: request.headers.get("x-dup"),
        cookie: request.headers.get("cookie"),
        empty: request.headers.get("x-empty"),
        hasEmpty: request.headers.has("x-empty"),
        copyAdded: copy.get("x-added"),
        copiedRequestMutable: attempt(() => { req.headers.set("x-req", "1"); return req.headers.get("x-req"); }),
        deleteIncoming: attempt(() => request.headers.delete("x-dup")),
        appendIncoming: attempt(() => request.headers.append("x-dup", "two")),
      });
    }
    const out = {};
    const h = new Headers();
    h.append("X-Trim", "  \t value with inner  spaces \t ");
    h.append("x-num", 42);
    h.append("x-null", null);
    h.append("x-undef", undefined);
    h.append("x-obj", { toString() { return "objstr"; } });
    out.normalised = [...h];
    out.values = ["", "a\u0000b", "a\rb", "caf\u00e9", "\u20ac", "a\u007fb"].map((v) => attempt(() => new Headers({ x: v }).get("x")));
    out.names = ["", "a b", "a:b", "a\u0000", "x-ok!#$%&'*+-.^_`|~", "(paren)", "a/b", "a@b", "a\"b"].map((n) => attempt(() => [...new Headers([[n, "v"]])]));
    out.getInvalid = attempt(() => h.get("bad name"));
    out.hasInvalid = attempt(() => h.has("bad name"));
    out.deleteInvalid = attempt(() => h.delete("bad name"));
    out.setInvalid = attempt(() => h.set("ok", "bad\nvalue"));
    const c = new Headers();
    c.append("Set-Cookie", "a=1");
    c.append("Set-Cookie", "b=2, c=3");
    c.append("x-list", "1");
    c.append("x-list", "2");
    out.getAllCookie = attempt(() => c.getAll("set-cookie"));
    out.getAllOther = attempt(() => c.getAll("x-list"));
    out.getSetCookieEmpty = new Headers().getSetCookie();
    out.cookieEntries = [...c];
    c.set("set-cookie", "only=1");
    out.cookieAfterSet = [c.getSetCookie(), c.get("Set-Cookie")];
    c.delete("SET-COOKIE");
    out.cookieAfterDelete = [c.has("set-cookie"), c.getSetCookie()];
    const order = new Headers({ b: "2", A: "1", "c-": "3", "a-b": "4", "a_b": "5", Z: "6", "0": "7" });
    out.sorted = [...order.keys()];
    const mutating = new Headers({ a: "1", b: "2", c: "3" });
    const seen = [];
    for (const [k] of mutating) { seen.push(k); if (k === "a") { mutating.delete("b"); mutating.append("d", "4"); } }
    out.iterateWhileMutating = seen;
    out.recordNumbers = attempt(() => [...new Headers({ n: 1, b: true })]);
    out.fromNull = attempt(() => [...new Headers(null)]);
    out.fromUndefined = attempt(() => [...new Headers(undefined)]);
    out.fromString = attempt(() => [...new Headers("abc")]);
    out.fromNested = attempt(() => [...new Headers([["a"]])]);
    out.responseNullHeaders = attempt(() => [...new Response("x", { headers: null }).headers]);
    out.requestNullHeaders = attempt(() => [...new Request("https://e.example/", { headers: null }).headers]);
    out.iteratorTag = Object.prototype.toString.call(new Headers().entries());
    out.iterIsEntries = Headers.prototype[Symbol.iterator] === Headers.prototype.entries;
    out.callWithoutNew = attempt(() => Headers());
    const error = Response.error();
    out.errorHeaders = attempt(() => error.headers.set("x", "1"));
    const req = new Request("https://e.example/", { headers: { "X-Req": "1" } });
    req.headers.append("x-req", "2");
    out.requestHeaders = [...req.headers];
    const res = new Response("x", { headers: new Headers({ "Content-Type": "text/x" }) });
    res.headers.set("content-type", "text/y");
    out.responseMutable = res.headers.get("content-type");
    const jsonRes = Response.json({});
    jsonRes.headers.append("x-after", "1");
    out.jsonMutable = [...jsonRes.headers];
    return new Response(JSON.stringify(out), { headers: { "content-type": "application/json", "X-Spaced": "  v  ", "x-number": 7 } });
  },
};
