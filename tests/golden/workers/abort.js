// requests: [{"path": "/"}]
// AbortController, AbortSignal (abort, reason, throwIfAborted, events, any, static abort), Event and EventTarget.
export default {
  async fetch() {
    const out = {};
    const controller = new AbortController();
    const events = [];
    controller.signal.addEventListener("abort", (e) => events.push(["listener", e.type, e.target === controller.signal]));
    controller.signal.onabort = () => events.push(["onabort"]);
    out.before = [controller.signal.aborted, controller.signal.reason];
    controller.abort();
    controller.abort("second time is ignored");
    out.after = [controller.signal.aborted, controller.signal.reason.name, controller.signal.reason.message, controller.signal.reason instanceof DOMException];
    out.events = events;
    try { controller.signal.throwIfAborted(); } catch (e) { out.thrown = e.name; }
    const custom = new AbortController();
    custom.abort(new Error("custom reason"));
    out.custom = custom.signal.reason.message;
    const staticSignal = AbortSignal.abort("why");
    out.static = [staticSignal.aborted, staticSignal.reason];
    const a = new AbortController();
    const b = new AbortController();
    const any = AbortSignal.any([a.signal, b.signal]);
    b.abort("b went first");
    out.any = [any.aborted, any.reason];
    try { new AbortSignal(); } catch (e) { out.construct = e.name; }
    const target = new EventTarget();
    const seen = [];
    const listener = (e) => seen.push(e.type);
    target.addEventListener("ping", listener);
    target.addEventListener("ping", listener);
    target.addEventListener("once", () => seen.push("once"), { once: true });
    target.dispatchEvent(new Event("ping"));
    target.dispatchEvent(new Event("once"));
    target.dispatchEvent(new Event("once"));
    target.removeEventListener("ping", listener);
    target.dispatchEvent(new Event("ping"));
    out.eventTarget = seen;
    const cancelable = new Event("x", { cancelable: true });
    cancelable.preventDefault();
    out.defaultPrevented = [cancelable.defaultPrevented, new Event("y").cancelable];
    const timeout = AbortSignal.timeout(10);
    await new Promise((resolve) => timeout.addEventListener("abort", resolve));
    out.timeout = [timeout.aborted, timeout.reason.name];
    return Response.json(out);
  },
};
