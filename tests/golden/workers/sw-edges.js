// requests: [{"path": "/"}, {"path": "/twice"}, {"path": "/async-respond"}, {"path": "/throws"}, {"method": "POST", "path": "/props", "headers": {"X-One": "1"}, "body": "sw body"}]
// The service-worker form, edge cases: respondWith twice, a promise given late, a listener that throws, the event and request it gets, globals of the form.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
let served = 0;

addEventListener("fetch", (event) => {
  served++;
  const path = new URL(event.request.url).pathname;
  if (path === "/twice") {
    event.respondWith(new Response("first"));
    const second = attempt(() => event.respondWith(new Response("second")));
    return;
  }
  if (path === "/async-respond") {
    event.respondWith((async () => { await new Promise((r) => setTimeout(r, 1)); return new Response("late but fine", { status: 201 }); })());
    return;
  }
  if (path === "/throws") throw new Error("listener threw");
  if (path === "/props") {
    event.respondWith((async () => Response.json({
      type: event.type, method: event.request.method, header: event.request.headers.get("x-one"), body: await event.request.text(),
      hasWaitUntil: typeof event.waitUntil, hasPassThrough: typeof event.passThroughOnException, isEvent: event instanceof Event,
      selfListener: typeof self.addEventListener, servedPositive: served > 0,
    }))());
    return;
  }
  event.respondWith(new Response("root", { headers: { "x-form": "service-worker" } }));
});

addEventListener("fetch", (event) => {
  const path = new URL(event.request.url).pathname;
  if (path === "/twice") {
    const r = attempt(() => event.respondWith(new Response("from second listener")));
    if (r.error) console.log("second listener", r.error, r.message);
  }
});
