// requests: [{"path": "/"}, {"path": "/json"}, {"path": "/json-status"}, {"path": "/redirect"}, {"path": "/redirect-301"}, {"path": "/empty"}, {"path": "/no-content"}, {"path": "/bytes"}, {"path": "/params"}, {"path": "/throw"}, {"path": "/reject"}, {"path": "/not-a-response"}]
// Response: constructors, Response.json, Response.redirect, clone/bodyUsed, body readers, errors; and what each answers over HTTP.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/json") return Response.json({ a: 1, b: [true, null], c: "é" });
    if (path === "/json-status") return Response.json([1], { status: 201, headers: { "X-Extra": "1", "Content-Type": "application/vnd.custom+json" } });
    if (path === "/redirect") return Response.redirect("https://example.com/target?x=1");
    if (path === "/redirect-301") return Response.redirect("https://example.com/moved path", 301);
    if (path === "/empty") return new Response(null, { status: 404, statusText: "Nothing Here" });
    if (path === "/no-content") return new Response(null, { status: 204 });
    if (path === "/bytes") return new Response(new Uint8Array([0, 1, 2, 255]), { headers: { "content-type": "application/octet-stream" } });
    if (path === "/params") return new Response(new URLSearchParams({ a: "1 2", b: "é" }));
    if (path === "/throw") throw new Error("thrown on purpose");
    if (path === "/reject") return Promise.reject(new TypeError("rejected on purpose"));
    if (path === "/not-a-response") return "just a string";

    const out = {};
    const r = new Response("hello", { status: 201, statusText: "Made", headers: { "X-A": "1" } });
    out.basic = { status: r.status, statusText: r.statusText, ok: r.ok, type: r.type, url: r.url, redirected: r.redirected, bodyUsed: r.bodyUsed, headers: [...r.headers], hasBody: r.body !== null };
    const c = r.clone();
    out.cloneText = [await r.text(), await c.text(), r.bodyUsed, c.bodyUsed];
    out.readTwice = await settle(r.text());
    out.cloneUsed = attempt(() => r.clone());
    out.defaultStatus = [new Response().status, new Response().statusText, new Response().body === null, new Response(null).ok];
    out.contentTypes = {
      string: new Response("s").headers.get("content-type"),
      bytes: new Response(new Uint8Array([1])).headers.get("content-type"),
      buffer: new Response(new ArrayBuffer(1)).headers.get("content-type"),
      params: new Response(new URLSearchParams("a=1")).headers.get("content-type"),
      blob: new Response(new Blob(["x"], { type: "Text/Custom" })).headers.get("content-type"),
      override: new Response("s", { headers: { "content-type": "text/html" } }).headers.get("content-type"),
      stream: new Response(new ReadableStream()).headers.get("content-type"),
    };
    out.json = await new Response('{"x":[1,2]}').json();
    out.badJson = await settle(new Response("{nope").json());
    out.arrayBuffer = [...new Uint8Array(await new Response("ab").arrayBuffer())];
    out.emptyText = await new Response(null).text();
    out.jsonResponse = (() => { const j = Response.json({ k: "v" }); return { status: j.status, headers: [...j.headers] }; })();
    const redirect = Response.redirect("https://example.com/r", 307);
    out.redirect = { status: redirect.status, location: redirect.headers.get("location"), mutate: attempt(() => redirect.headers.set("x", "1")) };
    out.redirectRelative = attempt(() => Response.redirect("/relative"));
    out.redirectBadStatus = attempt(() => Response.redirect("https://example.com/", 200));
    out.statusLow = attempt(() => new Response("x", { status: 199 }));
    out.statusHigh = attempt(() => new Response("x", { status: 600 }));
    out.nullBodyStatus = attempt(() => new Response("x", { status: 204 }));
    out.nullBodyNull = new Response(null, { status: 304 }).status;
    out.error = (() => { const e = Response.error(); return { status: e.status, type: e.type }; })();
    out.tag = Object.prototype.toString.call(r);
    return Response.json(out, { headers: { "x-answer": "yes" } });
  },
};
