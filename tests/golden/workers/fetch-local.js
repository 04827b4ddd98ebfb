// requests: [{"path": "/"}]
// fetch() refusals that never reach the network: bad URLs and schemes, bodies on GET, aborted signals, argument checks.
const settle = async (p) => { try { const r = await p; return { ok: r.status }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch() {
    const out = {};
    out.noArgs = await settle(fetch());
    out.notUrl = await settle(fetch("not a url"));
    out.relative = await settle(fetch("/relative/path"));
    out.ftp = await settle(fetch("ftp://e.example/file"));
    const dataFetch = async (url) => { try { const r = await fetch(url); return [r.status, r.statusText, [...r.headers], await r.text(), r.url, r.redirected]; } catch (e) { return [e.name, e.message]; } };
    out.dataUrls = await Promise.all(["data:text/plain,hi%20there", "data:,no%20type", "data:text/html;base64,PGI+aGk8L2I+", "data:application/json;charset=utf-8,%7B%22a%22%3A1%7D", "data:;base64,!!bad", "data:text/plain", "data:text/plain;charset=UTF-8;base64,w6k="].map(dataFetch));
    out.getBody = await settle(fetch("https://e.example/", { method: "GET", body: "x" }));
    out.badMethod = await settle(fetch("https://e.example/", { method: "bad method" }));
    out.badRedirect = await settle(fetch("https://e.example/", { redirect: "sideways" }));
    const aborted = new AbortController();
    aborted.abort();
    out.abortedSignal = await settle(fetch("https://e.example/", { signal: aborted.signal }));
    out.abortedReason = await settle(fetch("https://e.example/", { signal: AbortSignal.abort(new RangeError("custom abort")) }));
    out.abortedRequest = await settle(fetch(new Request("https://e.example/", { signal: AbortSignal.abort("string reason") })));
    out.usedBody = await (async () => { const r = new Request("https://e.example/", { method: "POST", body: "once" }); await r.text(); return settle(fetch(r)); })();
    out.returnsPromise = fetch("not a url").catch(() => {}) instanceof Promise;
    return Response.json(out);
  },
};
