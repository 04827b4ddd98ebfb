// requests: [{"path": "/utf8-header"}, {"path": "/empty-header"}, {"path": "/no-body-204"}, {"path": "/null-body-type"}, {"path": "/stream-with-type"}, {"path": "/json-custom-type"}, {"path": "/many-cookies"}, {"path": "/clone-answer"}, {"path": "/body-from-response"}, {"path": "/latin1-header"}, {"path": "/echo-header", "headers": {"X-Latin1-Byte": "caf\u00e9", "X-Utf8-Bytes": "caf\u00c3\u00a9 \u00e2\u0082\u00ac"}}]
// What goes on the wire: header values outside ASCII, empty values, bodies and content types of each kind, cookies, answers built from other answers.
export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/utf8-header") return new Response("u", { headers: { "x-utf": "caf\u00e9 \u20ac", "x-emoji": "\u{1F600}" } });
    if (path === "/latin1-header") return new Response("l", { headers: { "x-latin": "na\u00efve \u00ff" } });
    if (path === "/echo-header") {
      const codes = (name) => [...(request.headers.get(name) || "")].map((c) => c.codePointAt(0));
      return Response.json({ latin1: codes("x-latin1-byte"), utf8: codes("x-utf8-bytes") }, { headers: { "x-echo": request.headers.get("x-utf8-bytes") } });
    }
    if (path === "/empty-header") return new Response("e", { headers: { "x-empty": "", "x-spaces": "   " } });
    if (path === "/no-body-204") return new Response(null, { status: 204, headers: { "x-kept": "yes" } });
    if (path === "/null-body-type") return new Response(null, { status: 200 });
    if (path === "/stream-with-type") return new Response(new Response("streamed").body, { headers: { "content-type": "text/x-stream" } });
    if (path === "/json-custom-type") return Response.json({ a: 1 }, { headers: { "Content-Type": "application/problem+json" } });
    if (path === "/many-cookies") {
      const response = new Response("cookies");
      for (let i = 0; i < 5; i++) response.headers.append("Set-Cookie", `c${i}=${i}; Path=/; Max-Age=${i * 100}`);
      response.headers.append("Set-Cookie", "expires=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT");
      return response;
    }
    if (path === "/clone-answer") {
      const original = new Response("cloned answer", { status: 202, headers: { "x-c": "1" } });
      const copy = original.clone();
      await original.text();
      return copy;
    }
    if (path === "/body-from-response") {
      const upstream = Response.json({ from: "upstream" }, { status: 203, headers: { "x-up": "1" } });
      const headers = new Headers(upstream.headers);
      headers.set("x-added", "2");
      return new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers });
    }
    return new Response("?");
  },
};
