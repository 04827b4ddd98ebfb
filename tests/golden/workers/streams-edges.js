// requests: [{"path": "/"}, {"path": "/async-generator"}, {"path": "/slow-stream"}, {"method": "POST", "path": "/tee-body", "body": "tee me please"}, {"method": "POST", "path": "/pipe-to", "body": "piped body"}]
// Stream edge cases: controller state, cancel and release, readers, writable sinks, transform flush, ReadableStream.from, bodies from timed streams.
const enc = new TextEncoder();
const dec = new TextDecoder();
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/async-generator") {
      async function* parts() { yield enc.encode("gen-1 "); await null; yield enc.encode("gen-2"); }
      return new Response(ReadableStream.from(parts()), { headers: { "content-type": "text/plain" } });
    }
    if (path === "/slow-stream") {
      let i = 0;
      const stream = new ReadableStream({
        async pull(c) {
          await new Promise((r) => setTimeout(r, 2));
          if (++i > 3) c.close(); else c.enqueue(enc.encode(`tick ${i}\n`));
        },
      });
      return new Response(stream);
    }
    if (path === "/tee-body") {
      const [a, b] = request.body.tee();
      const [ta, tb] = await Promise.all([new Response(a).text(), new Response(b).text()]);
      return Response.json({ ta, tb, used: request.bodyUsed, locked: request.body.locked });
    }
    if (path === "/pipe-to") {
      const got = [];
      await request.body.pipeTo(new WritableStream({ write(chunk) { got.push(dec.decode(chunk)); } }));
      return new Response(got.join("|"));
    }
    const out = {};
    let ctrl;
    const s = new ReadableStream({ start(c) { ctrl = c; } }, { highWaterMark: 2 });
    out.desiredSize = [ctrl.desiredSize];
    ctrl.enqueue("a");
    out.desiredSize.push(ctrl.desiredSize);
    ctrl.enqueue("b"); ctrl.enqueue("c");
    out.desiredSize.push(ctrl.desiredSize);
    const r = s.getReader();
    await r.read();
    out.desiredSize.push(ctrl.desiredSize);
    ctrl.close();
    out.afterClose = attempt(() => ctrl.enqueue("late"));
    out.drain = [await r.read(), await r.read(), await r.read()];
    out.closed = await settle(r.closed.then(() => "closed"));
    const cancelled = [];
    const c = new ReadableStream({ pull(cc) { cc.enqueue(1); }, cancel(reason) { cancelled.push(reason); } });
    const cr = c.getReader();
    await cr.read();
    out.cancel = [await cr.cancel("stop reason"), cancelled, await cr.read()];
    const lock = new ReadableStream();
    const lr = lock.getReader();
    out.secondReader = attempt(() => lock.getReader());
    lr.releaseLock();
    out.afterRelease = [lock.locked, attempt(() => { lock.getReader(); return "got"; })];
    out.releasedRead = await settle(lr.read());
    out.cancelLocked = await settle(lock.cancel());
    const writes = [];
    const ws = new WritableStream({ start() { writes.push("start"); }, write(chunk) { writes.push("write " + chunk); }, close() { writes.push("close"); } });
    const w = ws.getWriter();
    await w.write("one");
    await w.write("two");
    await w.close();
    out.writable = writes;
    out.writeAfterClose = await settle(w.write("three"));
    const aborted = [];
    const aw = new WritableStream({ abort(reason) { aborted.push(String(reason)); } }).getWriter();
    await aw.abort("abort reason");
    out.abort = aborted;
    const t = new TransformStream({
      transform(chunk, c) { c.enqueue(chunk * 2); },
      flush(c) { c.enqueue("flushed"); },
    });
    const tw = t.writable.getWriter();
    tw.write(1); tw.write(2); tw.close();
    const tr = [];
    for await (const v of t.readable) tr.push(v);
    out.transform = tr;
    const failing = new TransformStream({ transform() { throw new Error("transform failed"); } });
    const fw = failing.writable.getWriter();
    out.transformError = await Promise.all([settle(fw.write("x")), settle(failing.readable.getReader().read())]);
    out.from = await settle((async () => { const got = []; for await (const v of ReadableStream.from([1, 2, 3])) got.push(v); return got; })());
    out.fromBad = attempt(() => ReadableStream.from(42));
    out.earlyBreak = await (async () => {
      let cancelledWith = "not cancelled";
      const st = new ReadableStream({ pull(cc) { cc.enqueue("x"); }, cancel() { cancelledWith = "cancelled"; } });
      for await (const v of st) break;
      return [cancelledWith, st.locked];
    })();
    out.preventCancel = await (async () => {
      const st = new ReadableStream({ start(cc) { cc.enqueue("y"); } });
      for await (const v of st.values({ preventCancel: true })) break;
      return st.locked;
    })();
    const byob = new ReadableStream({ type: "bytes", start(cc) { cc.enqueue(new Uint8Array([1, 2, 3, 4, 5])); cc.close(); } });
    const br = byob.getReader({ mode: "byob" });
    const first = await br.read(new Uint8Array(2));
    out.byob = [[...first.value], first.done];
    out.textEncoderStream = await (async () => {
      const st = new ReadableStream({ start(cc) { cc.enqueue("hé"); cc.enqueue("\uD83D"); cc.enqueue("\uDE00"); cc.close(); } }).pipeThrough(new TextEncoderStream());
      return [...new Uint8Array(await new Response(st).arrayBuffer())];
    })();
    out.tags = [ReadableStream, WritableStream, TransformStream, ReadableStreamDefaultReader].map((C) => C.name);
    out.responseBodyStream = await (async () => { const body = new Response("abc").body; const rr = body.getReader(); const { value } = await rr.read(); return [value.constructor.name, value.length]; })();
    return Response.json(out);
  },
};
