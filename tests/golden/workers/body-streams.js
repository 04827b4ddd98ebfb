// requests: [{"path": "/"}, {"path": "/chunks-arraybuffer"}, {"path": "/chunks-dataview"}, {"path": "/chunks-mixed-string"}, {"path": "/stream-error-midway"}, {"method": "POST", "path": "/partial-read", "body": "0123456789abcdef"}, {"method": "POST", "path": "/clone-stream", "body": "request body to clone"}]
// Bodies as streams: chunk types a body stream accepts, clones of streamed bodies, partial reads, the body object's identity, a stream that fails midway.
const enc = new TextEncoder();
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };
const streamOf = (...chunks) => new ReadableStream({ start(c) { for (const chunk of chunks) c.enqueue(chunk); c.close(); } });

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/chunks-arraybuffer") return new Response(streamOf(enc.encode("ab").buffer, enc.encode("cd").buffer));
    if (path === "/chunks-dataview") return new Response(streamOf(new DataView(enc.encode("xyz").buffer, 1, 2)));
    if (path === "/chunks-mixed-string") return Response.json(await settle(new Response(streamOf(enc.encode("ok"), "not bytes")).text()));
    if (path === "/stream-error-midway") {
      return Response.json(await settle(new Response(new ReadableStream({ start(c) { c.enqueue(enc.encode("part")); c.error(new RangeError("midway")); } })).text()));
    }
    if (path === "/partial-read") {
      const reader = request.body.getReader();
      const first = await reader.read();
      reader.releaseLock();
      const rest = await settle(request.text());
      return Response.json({ firstLength: first.value.length > 0, used: request.bodyUsed, rest: rest.ok !== undefined ? rest.ok.length + (first.value.length) : rest });
    }
    if (path === "/clone-stream") {
      const copy = request.clone();
      const [a, b] = await Promise.all([request.text(), copy.text()]);
      return Response.json({ a, b, same: a === b, used: [request.bodyUsed, copy.bodyUsed] });
    }
    const out = {};
    const r = new Response("identity");
    out.sameBodyObject = r.body === r.body;
    out.nullBodyObject = new Response(null).body;
    const streamed = new Response(streamOf(enc.encode("s1"), enc.encode("s2")));
    const clone = streamed.clone();
    out.streamClone = [await streamed.text(), await clone.text()];
    const tee = new Response(streamOf(enc.encode("tee"))).body.tee();
    out.teeTexts = await Promise.all(tee.map((s) => new Response(s).text()));
    const used = new Response("used");
    await used.text();
    out.cloneUsed = await settle((async () => used.clone())());
    out.bodyAfterText = [used.body === null, used.bodyUsed];
    out.jsonOfStream = await settle(new Response(streamOf(enc.encode('{"k":'), enc.encode('"v"}'))).json());
    out.arrayBufferOfStream = [...new Uint8Array(await new Response(streamOf(new Uint8Array([1, 2]), new Uint8Array([3]))).arrayBuffer())];
    out.emptyStream = await new Response(streamOf()).text();
    out.requestStreamBody = await settle((async () => {
      const req = new Request("https://e.example/", { method: "POST", body: streamOf(enc.encode("req stream")), duplex: "half" });
      return [req.headers.get("content-type"), await req.text()];
    })());
    out.lockedBodyToResponse = await settle((async () => { const s = streamOf(enc.encode("x")); s.getReader(); return new Response(s); })());
    return Response.json(out);
  },
};
