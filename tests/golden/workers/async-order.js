// requests: [{"path": "/"}, {"path": "/unhandled"}]
// Ordering of microtasks, promise jobs, timers and async functions; argument checks of the timer functions; a rejection nobody handles does not fail the response.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    if (path === "/unhandled") {
      Promise.reject(new Error("nobody listens"));
      return new Response("still fine");
    }
    const order = [];
    const log = (s) => () => order.push(s);
    setTimeout(log("timeout A 0"), 0);
    setTimeout(log("timeout B 0"), 0);
    setTimeout(log("timeout C -5"), -5);
    setTimeout(log("timeout D undefined"));
    setTimeout(log("timeout E '2'"), "2");
    Promise.resolve().then(log("then 1")).then(log("then 2"));
    queueMicrotask(log("micro 1"));
    (async () => { order.push("async start"); await null; order.push("async after await"); await new Promise((r) => setTimeout(r, 0)); order.push("async after timer"); })();
    Promise.reject(new Error("x")).catch(log("catch"));
    queueMicrotask(() => { order.push("micro 2"); queueMicrotask(log("micro nested")); });
    order.push("sync end");
    await new Promise((r) => setTimeout(r, 25));
    const nested = [];
    await new Promise((resolve) => setTimeout(() => {
      nested.push("outer");
      setTimeout(() => { nested.push("inner 0"); }, 0);
      Promise.resolve().then(() => nested.push("outer micro"));
      setTimeout(() => { nested.push("inner 5"); resolve(); }, 5);
    }, 0));
    const out = { order, nested };
    out.clearBogus = [attempt(() => clearTimeout(undefined)), attempt(() => clearTimeout("x")), attempt(() => clearInterval(12345)), attempt(() => clearTimeout(null))];
    out.setTimeoutNoFn = attempt(() => typeof setTimeout("1 + 1", 1));
    out.queueNotFn = attempt(() => queueMicrotask("x"));
    out.ids = (() => { const a = setTimeout(() => {}, 1000); const b = setTimeout(() => {}, 1000); clearTimeout(a); clearTimeout(b); return [typeof a, b > a]; })();
    out.intervalClearedInside = await new Promise((resolve) => { let n = 0; const id = setInterval(() => { n++; clearInterval(id); setTimeout(() => resolve(n), 30); }, 1); });
    out.thenable = await { then(r) { r("from thenable"); } };
    out.allSettled = await Promise.allSettled([Promise.resolve(1), Promise.reject(new Error("no")), 3]).then((r) => r.map((x) => x.status + ":" + (x.value ?? x.reason.message)));
    out.any = await Promise.any([Promise.reject(new Error("a")), Promise.reject(new Error("b"))]).catch((e) => [e.name, e.message, e.errors.map((x) => x.message)]);
    out.race = await Promise.race([new Promise((r) => setTimeout(() => r("slow"), 20)), new Promise((r) => setTimeout(() => r("fast"), 1))]);
    out.withResolvers = typeof Promise.withResolvers;
    return Response.json(out);
  },
};
