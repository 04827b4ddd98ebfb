// requests: [{"method": "POST", "path": "/submit?x=1&y=%20z", "headers": {"Content-Type": "application/json", "X-Trace": "abc"}, "body": "{\"k\": [1, 2]}"}, {"method": "GET", "path": "/get"}, {"method": "PUT", "path": "/form", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": "a=1&b=two+words&a=3"}]
// Request: the incoming request as the Worker sees it, and new Request() variations.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const out = { method: request.method, url: request.url, pathname: url.pathname, query: [...url.searchParams] };
    out.contentType = request.headers.get("content-type");
    out.trace = request.headers.get("x-trace");
    out.hasBody = request.body !== null;
    out.bodyUsedBefore = request.bodyUsed;
    if (url.pathname === "/form") {
      const form = await request.formData();
      out.form = [...form];
    } else if (request.method === "POST") {
      const clone = request.clone();
      out.json = await request.json();
      out.cloneText = await clone.text();
      out.bodyUsedAfter = request.bodyUsed;
      out.readAgain = await settle(request.text());
    }
    out.redirect = request.redirect;
    out.signal = typeof request.signal.aborted;
    const made = new Request("https://example.com/api", { method: "post", headers: { "X-A": "1" }, body: "payload" });
    out.made = { method: made.method, url: made.url, headers: [...made.headers], text: await made.text() };
    out.methods = ["get", "Post", "patch", "PATCH", "OPTIONS", "custom", "PROPFIND", "dElEtE", "head", "put"].map((m) => attempt(() => new Request("https://e.example/", { method: m }).method));
    out.badMethod = attempt(() => new Request("https://e.example/", { method: "bad method" }));
    out.getWithBody = attempt(() => new Request("https://e.example/", { method: "GET", body: "x" }));
    out.relative = attempt(() => new Request("/relative"));
    const base = new Request("https://e.example/a", { method: "PUT", body: "moved", headers: { "x-b": "2" } });
    const copy = new Request(base, { headers: { "x-c": "3" } });
    out.copy = { method: copy.method, url: copy.url, headers: [...copy.headers], text: await copy.text(), baseUsed: base.bodyUsed };
    const fromUrl = new Request(new URL("https://e.example/u?q=1"));
    out.fromUrl = fromUrl.url;
    out.cloneAfterRead = attempt(() => made.clone().url);
    const fresh = new Request("https://e.example/fresh", { method: "POST", body: "b" });
    out.cloned = await (async () => { const c = fresh.clone(); return [c.method, c.url, await c.text(), await fresh.text()]; })();
    out.tag = Object.prototype.toString.call(request);
    return Response.json(out);
  },
};
