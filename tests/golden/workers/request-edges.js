// requests: [{"method": "POST", "path": "/bad-json", "headers": {"Content-Type": "application/json"}, "body": "{\"a\": 1,}"}, {"method": "POST", "path": "/not-form", "headers": {"Content-Type": "text/plain"}, "body": "plain"}, {"method": "PATCH", "path": "/bytes?q=%zz&r=+x", "body": "\u00e9t\u00e9"}, {"method": "DELETE", "path": "/"}, {"method": "OPTIONS", "path": "/"}, {"method": "GET", "path": "/a/../b/./c//d?x=1"}, {"method": "POST", "path": "/empty-json", "headers": {"Content-Type": "application/json"}, "body": ""}]
// Request edge cases: bodies that do not parse, methods, the URL as received, new Request() options and copies.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/bad-json" || url.pathname === "/empty-json") {
      const r = await settle(request.json());
      return Response.json({ r, used: request.bodyUsed });
    }
    if (url.pathname === "/not-form") return Response.json({ r: await settle(request.formData()) });
    if (url.pathname === "/bytes") {
      const buffer = await request.arrayBuffer();
      return Response.json({ url: request.url, search: url.search, q: url.searchParams.get("q"), r: url.searchParams.get("r"), hash: url.hash, bytes: [...new Uint8Array(buffer)], method: request.method });
    }
    if (url.pathname !== "/") {
      return Response.json({ url: request.url, pathname: url.pathname, body: request.body, text: await request.text() });
    }
    const out = { method: request.method, body: request.body, text: await request.text(), used: request.bodyUsed };
    out.headBody = attempt(() => new Request("https://e.example/", { method: "HEAD", body: "x" }));
    out.getNullBody = attempt(() => new Request("https://e.example/", { method: "GET", body: null }).method);
    out.getEmptyBody = attempt(() => new Request("https://e.example/", { method: "GET", body: "" }));
    out.forbiddenMethods = ["CONNECT", "TRACE", "TRACK", "connect"].map((m) => attempt(() => new Request("https://e.example/", { method: m }).method));
    out.fragment = new Request("https://e.example/p?q#frag").url;
    out.invalidUrl = attempt(() => new Request("http://exa mple/"));
    out.credentials = attempt(() => new Request("https://user:pw@e.example/").url);
    const r = new Request("https://e.example/", { method: "POST", body: "abc", redirect: "manual" });
    out.props = { redirect: r.redirect, headersType: typeof r.headers, bodyType: Object.prototype.toString.call(r.body), contentType: r.headers.get("content-type"), keepalive: r.keepalive, integrity: r.integrity };
    out.badRedirect = attempt(() => new Request("https://e.example/", { redirect: "nope" }));
    out.copyUsed = await (async () => {
      const a = new Request("https://e.example/", { method: "POST", body: "once" });
      await a.text();
      return attempt(() => new Request(a));
    })();
    out.copyOverride = await (async () => {
      const a = new Request("https://e.example/x", { method: "POST", body: "orig", headers: { "x-a": "1" } });
      const b = new Request(a, { method: "PUT", body: "new" });
      return { method: b.method, url: b.url, text: await b.text(), headers: [...b.headers], aUsed: a.bodyUsed };
    })();
    out.copyToGet = await settle((async () => {
      const a = new Request("https://e.example/x", { method: "POST", body: "orig" });
      return new Request(a, { method: "GET" }).method;
    })());
    out.bodyTypes = await (async () => {
      const res = {};
      for (const [name, body] of Object.entries({ params: new URLSearchParams("a=1"), bytes: new Uint8Array([104, 105]), blob: new Blob(["b"], { type: "x/y" }), string: "s" })) {
        const req = new Request("https://e.example/", { method: "POST", body });
        res[name] = [req.headers.get("content-type"), await req.text()];
      }
      return res;
    })();
    out.jsonBody = await new Request("https://e.example/", { method: "POST", body: JSON.stringify({ z: [1] }) }).json();
    out.blobFromRequest = await (async () => { const b = await new Request("https://e.example/", { method: "POST", body: "xyz", headers: { "content-type": "text/abc" } }).blob(); return [b.size, b.type]; })();
    out.callWithoutNew = attempt(() => Request("https://e.example/"));
    out.signalAborted = (() => { const c = new AbortController(); c.abort(); const q = new Request("https://e.example/", { signal: c.signal }); return q.signal.aborted; })();
    return Response.json(out);
  },
};
