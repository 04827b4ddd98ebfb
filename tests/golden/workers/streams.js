// requests: [{"path": "/"}, {"path": "/stream-body"}, {"method": "POST", "path": "/echo-body", "body": "streamed request body"}, {"path": "/transform"}]
// ReadableStream, TransformStream and streamed bodies.
const enc = new TextEncoder();

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/stream-body") {
      let n = 0;
      const stream = new ReadableStream({
        pull(controller) {
          n++;
          if (n > 3) controller.close();
          else controller.enqueue(enc.encode(`chunk ${n};`));
        },
      });
      return new Response(stream, { headers: { "content-type": "text/plain" } });
    }
    if (path === "/echo-body") {
      const reader = request.body.getReader();
      const parts = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parts.push(...value);
      }
      return new Response(new Uint8Array(parts));
    }
    if (path === "/transform") {
      const upper = new TransformStream({
        transform(chunk, controller) { controller.enqueue(enc.encode(new TextDecoder().decode(chunk).toUpperCase())); },
      });
      const source = new Response("lower case text").body;
      return new Response(source.pipeThrough(upper));
    }
    const out = {};
    const stream = new ReadableStream({ start(c) { c.enqueue("a"); c.enqueue("b"); c.close(); } });
    out.locked = stream.locked;
    const reader = stream.getReader();
    out.lockedAfter = stream.locked;
    out.reads = [await reader.read(), await reader.read(), await reader.read()];
    const [left, right] = new ReadableStream({ start(c) { c.enqueue(1); c.enqueue(2); c.close(); } }).tee();
    const collect = async (s) => { const got = []; for await (const v of s) got.push(v); return got; };
    out.tee = [await collect(left), await collect(right)];
    const { readable, writable } = new TransformStream();
    const writer = writable.getWriter();
    writer.write(enc.encode("via "));
    writer.write(enc.encode("transform"));
    writer.close();
    out.identity = await new Response(readable).text();
    const text = new ReadableStream({ start(c) { c.enqueue(enc.encode("é")); c.close(); } }).pipeThrough(new TextDecoderStream());
    out.decoderStream = await collect(text);
    out.fromResponse = await collect(new Response("xyz").body.pipeThrough(new TextDecoderStream()));
    const errored = new ReadableStream({ start(c) { c.error(new Error("stream failed")); } });
    try { await errored.getReader().read(); } catch (e) { out.errored = e.message; }
    const body = new Response("used").body;
    await body.getReader().read();
    out.bodyStreamTag = Object.prototype.toString.call(body);
    out.notBytes = await new Response(new ReadableStream({ start(c) { c.enqueue("str"); c.close(); } })).text().then(() => "ok", (e) => e.name);
    return Response.json(out);
  },
};
