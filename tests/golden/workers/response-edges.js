// requests: [{"path": "/"}, {"path": "/head-body", "method": "HEAD"}, {"path": "/status-418"}, {"path": "/custom-status-text"}, {"path": "/redirect-url-object"}, {"path": "/redirect-303"}, {"path": "/error-response"}, {"path": "/undefined"}, {"path": "/throw-string"}, {"path": "/throw-later"}, {"path": "/number-body"}, {"path": "/blob-body"}, {"path": "/formdata-type"}, {"path": "/stream-error-start"}, {"path": "/set-cookies"}]
// Response edge cases: bodies of every type, status and statusText checks, redirects, readers and locks; and how each answers over HTTP.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/head-body") return new Response("body for head", { headers: { "x-head": "1" } });
    if (path === "/status-418") return new Response("teapot", { status: 418 });
    if (path === "/custom-status-text") return new Response("ok", { status: 299, statusText: "Fine" });
    if (path === "/redirect-url-object") return Response.redirect(new URL("https://example.com/obj?q=a b"));
    if (path === "/redirect-303") return Response.redirect("https://example.com/see", 303);
    if (path === "/error-response") return new Response("server says no", { status: 503, headers: { "retry-after": "5" } });
    if (path === "/undefined") return undefined;
    if (path === "/throw-string") throw "a plain string";
    if (path === "/throw-later") { await new Promise((r) => setTimeout(r, 1)); throw new RangeError("later"); }
    if (path === "/number-body") return new Response(12345);
    if (path === "/blob-body") return new Response(new Blob(["blob ", "parts"], { type: "text/blobby" }));
    if (path === "/formdata-type") { const r = new Response(new URLSearchParams("x=1")); return new Response(await r.text(), { headers: r.headers }); }
    if (path === "/stream-error-start") return new Response("after", { status: 202 });
    if (path === "/set-cookies") {
      const h = new Headers();
      h.append("set-cookie", "a=1; Path=/");
      h.append("set-cookie", "b=2; HttpOnly");
      h.append("x-multi", "1");
      h.append("x-multi", "2");
      return new Response("cookies", { headers: h });
    }
    const out = {};
    out.bodies = {};
    for (const [name, make] of Object.entries({
      number: () => new Response(12),
      object: () => new Response({ a: 1 }),
      array: () => new Response([1, 2]),
      boolean: () => new Response(true),
      dataView: () => new Response(new DataView(new Uint8Array([65, 66, 67, 68]).buffer, 1, 2)),
      int16: () => new Response(new Int16Array([0x4241])),
      emptyString: () => new Response(""),
      undefinedBody: () => new Response(undefined),
    })) {
      const r = make();
      out.bodies[name] = { text: await r.text(), type: r.headers.get("content-type"), hasBody: r.body !== null };
    }
    out.statusString = attempt(() => new Response("x", { status: "201" }).status);
    out.statusFloat = attempt(() => new Response("x", { status: 201.9 }).status);
    out.statusZero = attempt(() => new Response("x", { status: 0 }));
    out.status101 = attempt(() => new Response(null, { status: 101 }).status);
    out.nullBody205 = attempt(() => new Response("x", { status: 205 }));
    out.nullBody304 = attempt(() => new Response("x", { status: 304 }));
    out.emptyBody204 = attempt(() => new Response("", { status: 204 }));
    out.statusTextBad = attempt(() => new Response("x", { statusText: "bad\ntext" }));
    out.statusTextLatin = attempt(() => new Response("x", { statusText: "caf\u00e9" }).statusText);
    out.statusTextWide = attempt(() => new Response("x", { statusText: "\u20ac" }));
    out.okRange = [200, 299, 300, 404].map((s) => new Response(null, { status: s }).ok);
    out.redirectStatuses = [301, 302, 303, 307, 308, 300, 304, 309].map((s) => attempt(() => Response.redirect("https://e.example/", s).status));
    out.redirectBody = await Response.redirect("https://e.example/").text();
    out.redirectInvalid = attempt(() => Response.redirect("http://exa mple/"));
    out.jsonBigInt = attempt(() => Response.json({ n: 1n }));
    out.jsonUndefined = attempt(() => Response.json(undefined));
    out.jsonCycle = attempt(() => { const o = {}; o.o = o; return Response.json(o); });
    out.jsonString = await Response.json("str").text();
    out.jsonNullBodyStatus = attempt(() => Response.json({}, { status: 204 }));
    out.jsonHeaders = [...Response.json(1, { headers: { "content-type": "text/plain" } }).headers];
    const locked = new Response("locked");
    const reader = locked.body.getReader();
    out.lockedState = [locked.bodyUsed, locked.body.locked];
    out.lockedText = await settle(locked.text());
    out.lockedClone = attempt(() => locked.clone());
    await reader.read();
    out.afterRead = locked.bodyUsed;
    const consumed = new Response("consumed");
    await consumed.arrayBuffer();
    out.consumedBody = [consumed.body === null, consumed.body && consumed.body.locked];
    out.consumedNew = attempt(() => new Response(consumed.body));
    const nullText = new Response(null);
    await nullText.text();
    out.nullTextUsed = [nullText.bodyUsed, await nullText.text()];
    const rebuilt = new Response("source text", { status: 202, headers: { "x-a": "1" } });
    const wrapped = new Response(rebuilt.body, rebuilt);
    out.wrapped = { status: wrapped.status, headers: [...wrapped.headers], text: await wrapped.text(), sourceUsed: rebuilt.bodyUsed };
    out.bytes = attempt(() => typeof new Response("b").bytes);
    out.blob = await (async () => { const b = await new Response("blob", { headers: { "content-type": "Text/Weird; X=1" } }).blob(); return [b.size, b.type]; })();
    out.props = (() => { const r = new Response("p"); return { type: r.type, url: r.url, redirected: r.redirected, webSocket: r.webSocket, cf: r.cf }; })();
    out.callWithoutNew = attempt(() => Response("x"));
    out.errorObject = (() => { const e = Response.error(); return { status: e.status, statusText: e.statusText, ok: e.ok, body: e.body, type: e.type }; })();
    return Response.json(out);
  },
};
