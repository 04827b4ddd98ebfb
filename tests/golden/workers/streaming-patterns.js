// requests: [{"path": "/writer-waituntil"}, {"path": "/writer-detached"}, {"path": "/sse"}, {"path": "/pipe-transform"}, {"path": "/writer-error"}, {"path": "/tee-response"}]
// How tenants stream answers: a TransformStream written from waitUntil or a detached async function, server-sent events, piping through a transform, a writer that fails.
const enc = new TextEncoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export default {
  async fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    if (path === "/writer-waituntil") {
      const { readable, writable } = new TransformStream();
      const writer = writable.getWriter();
      ctx.waitUntil((async () => {
        for (let i = 0; i < 3; i++) { await sleep(2); await writer.write(enc.encode(`part ${i}\n`)); }
        await writer.close();
      })());
      return new Response(readable, { headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    if (path === "/writer-detached") {
      const { readable, writable } = new TransformStream();
      (async () => {
        const writer = writable.getWriter();
        await writer.write(enc.encode("detached "));
        await sleep(3);
        await writer.write(enc.encode("writer"));
        await writer.close();
      })();
      return new Response(readable);
    }
    if (path === "/sse") {
      let n = 0;
      const stream = new ReadableStream({
        async pull(controller) {
          await sleep(1);
          n++;
          if (n > 3) { controller.enqueue(enc.encode("event: end\ndata: bye\n\n")); controller.close(); return; }
          controller.enqueue(enc.encode(`id: ${n}\ndata: ${JSON.stringify({ n })}\n\n`));
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    }
    if (path === "/pipe-transform") {
      const source = new Response("one two three").body;
      const words = new TransformStream({
        transform(chunk, controller) { for (const w of new TextDecoder().decode(chunk).split(" ")) controller.enqueue(enc.encode(`[${w}]`)); },
        flush(controller) { controller.enqueue(enc.encode("!")); },
      });
      return new Response(source.pipeThrough(words));
    }
    if (path === "/writer-error") {
      const { readable, writable } = new TransformStream();
      const writer = writable.getWriter();
      writer.write(enc.encode("before failure"));
      const failure = writer.abort(new Error("writer gave up")).then(() => "aborted", (e) => e.message);
      const read = await new Response(readable).text().then((t) => ({ text: t }), (e) => ({ error: e.name, message: e.message }));
      return Response.json({ read, failure: await failure });
    }
    if (path === "/tee-response") {
      const upstream = new Response("shared body");
      const [forClient, forLog] = upstream.body.tee();
      ctx.waitUntil(new Response(forLog).text());
      return new Response(forClient, { headers: { "x-teed": "1" } });
    }
    return new Response("?");
  },
};
