// requests: [{"path": "/caf%C3%A9/a%20b/%2F?q=%E2%82%AC&q=2&empty=&flag", "headers": {"X-Forwarded-For": "203.0.113.9", "Cookie": "a=1; b=two", "Authorization": "Bearer t0k3n", "Content-Type": "text/plain"}}, {"method": "PUT", "path": "/put", "headers": {"Content-Type": "application/json"}, "body": "[1,2,3]"}, {"method": "DELETE", "path": "/delete?id=7"}]
// The incoming request as tenants read it: the URL with escapes, query parameters, every header, readers on a request without a body.
const settle = async (p) => { try { const v = await p; return { ok: v instanceof ArrayBuffer ? v.byteLength : v instanceof FormData ? [...v] : v }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const out = {
      method: request.method, url: request.url, pathname: url.pathname, decoded: decodeURIComponent(url.pathname),
      search: url.search, q: url.searchParams.getAll("q"), empty: url.searchParams.get("empty"), flag: url.searchParams.has("flag"),
      headers: [...request.headers].filter(([name]) => !["cf-connecting-ip", "cf-ray", "cf-visitor", "x-real-ip"].includes(name)),
      hasBody: request.body !== null,
    };
    if (request.method === "GET" || request.method === "DELETE") {
      out.json = await settle(request.json());
      out.text = await settle(request.text());
      out.buffer = await settle(request.arrayBuffer());
      out.form = await settle(request.formData());
      out.usedAfter = request.bodyUsed;
    } else {
      out.json = await settle(request.json());
    }
    return Response.json(out);
  },
};
