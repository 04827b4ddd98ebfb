// requests: [{"path": "/"}]
// AbortController and AbortSignal edge cases: default and odd reasons, any() over aborted signals, timeout arguments, listeners and onabort, Events without init.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const reasonOf = (r) => (r instanceof Error || r instanceof DOMException ? [r.name, r.message, r instanceof DOMException] : r === undefined ? "undefined" : r);

export default {
  async fetch() {
    const out = {};
    out.staticDefault = reasonOf(AbortSignal.abort().reason);
    out.staticUndefined = reasonOf(AbortSignal.abort(undefined).reason);
    out.staticNull = reasonOf(AbortSignal.abort(null).reason);
    out.staticObject = reasonOf(AbortSignal.abort({ why: 1 }).reason);
    const c = new AbortController();
    c.abort(0);
    out.zeroReason = [c.signal.aborted, c.signal.reason];
    out.throwIfAborted = attempt(() => { const s = AbortSignal.abort("plain"); s.throwIfAborted(); });
    out.throwNotAborted = attempt(() => new AbortController().signal.throwIfAborted());
    const already = AbortSignal.abort("first");
    const any = AbortSignal.any([new AbortController().signal, already]);
    out.anyAlready = [any.aborted, any.reason];
    out.anyEmpty = AbortSignal.any([]).aborted;
    out.anyBad = attempt(() => AbortSignal.any([1]));
    const parent = new AbortController();
    const child = AbortSignal.any([parent.signal]);
    const grandchild = AbortSignal.any([child]);
    const order = [];
    child.addEventListener("abort", () => order.push("child"));
    grandchild.addEventListener("abort", () => order.push("grandchild"));
    parent.signal.addEventListener("abort", () => order.push("parent"));
    parent.abort("cascade");
    out.cascade = [order, grandchild.reason];
    out.timeoutBad = [attempt(() => AbortSignal.timeout(-1)), attempt(() => AbortSignal.timeout("x")), attempt(() => AbortSignal.timeout())];
    const t = AbortSignal.timeout(5);
    const reason = await new Promise((resolve) => { t.onabort = (e) => resolve([e.type, t.reason.name, t.reason.message, t.reason.code]); });
    out.timeout = reason;
    const once = new AbortController();
    let count = 0;
    once.signal.addEventListener("abort", () => count++, { once: true });
    once.signal.addEventListener("abort", { handleEvent() { count += 10; } });
    once.abort();
    once.abort();
    out.listenerCount = count;
    const removed = new AbortController();
    const listener = () => { out.removedFired = true; };
    removed.signal.addEventListener("abort", listener);
    removed.signal.removeEventListener("abort", listener);
    removed.abort();
    out.removedFired = out.removedFired || false;
    const withSignal = new AbortController();
    const target = new EventTarget();
    let hits = 0;
    target.addEventListener("x", () => hits++, { signal: withSignal.signal });
    target.dispatchEvent(new Event("x"));
    withSignal.abort();
    target.dispatchEvent(new Event("x"));
    out.listenerSignal = hits;
    out.eventNoArgs = attempt(() => new Event());
    out.eventProps = (() => { const e = new Event("t", { bubbles: true, cancelable: true, composed: true }); return [e.type, e.bubbles, e.cancelable, e.composed, e.defaultPrevented, e.eventPhase, e.isTrusted, typeof e.timeStamp, e.target, e.returnValue]; })();
    out.dispatchResult = (() => { const et = new EventTarget(); et.addEventListener("c", (e) => e.preventDefault()); return [et.dispatchEvent(new Event("c", { cancelable: true })), et.dispatchEvent(new Event("c"))]; })();
    out.dispatchNotEvent = attempt(() => new EventTarget().dispatchEvent({ type: "x" }));
    out.schedulerWaitAbort = await (async () => { const ac = new AbortController(); const p = scheduler.wait(1000, { signal: ac.signal }); ac.abort("stop waiting"); try { await p; return "resolved"; } catch (e) { return [typeof e, e && e.name, e && e.message, String(e)]; } })();
    out.tags = [Object.prototype.toString.call(new AbortController()), Object.prototype.toString.call(AbortSignal.abort())];
    return Response.json(out);
  },
};
