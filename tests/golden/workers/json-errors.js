// requests: [{"path": "/"}, {"method": "POST", "path": "/body", "headers": {"Content-Type": "application/json"}, "body": "{\"a\": tru}"}, {"method": "POST", "path": "/body", "headers": {"Content-Type": "application/json"}, "body": "[1, 2"}, {"method": "POST", "path": "/body", "headers": {"Content-Type": "application/json"}, "body": "{'single': 1}"}, {"method": "POST", "path": "/body", "body": "  {\"ok\": [1, {\"deep\": null}]}  "}]
// JSON errors as tenants see them: JSON.parse and request.json() on bad input, JSON.stringify refusals, Response.json edge values.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };
const BAD = ["", " ", "{", "}", "[", "]", "{nope", "{\"a\":1,}", "[1,]", "[1 2]", "{\"a\" 1}", "{\"a\":}", "tru", "nul", "01", "1.", ".5", "-", "+1", "\"unterminated", "\"bad \\x escape\"", "\"ctl \u0001\"", "{\"a\":1}x", "NaN", "undefined", "'s'", "[1,2", "{\"a\":\"b\"", "\u00a0 1", "{,}", "1e", "\"\\u12\""];

export default {
  async fetch(request) {
    if (new URL(request.url).pathname === "/body") return Response.json({ result: await settle(request.json()), used: request.bodyUsed });
    const out = {};
    out.parse = BAD.map((text) => [text, attempt(() => JSON.parse(text))]);
    out.parseResponse = await settle(new Response("{\"x\":").json());
    out.stringify = {
      bigint: attempt(() => JSON.stringify({ n: 1n })),
      bigintTop: attempt(() => JSON.stringify(2n)),
      undefinedTop: attempt(() => JSON.stringify(undefined)),
      fn: attempt(() => JSON.stringify(() => 1)),
      symbol: attempt(() => JSON.stringify({ s: Symbol("x") })),
      toJSONThrows: attempt(() => JSON.stringify({ toJSON() { throw new RangeError("from toJSON"); } })),
    };
    out.responseJson = {
      undefinedBody: await settle(Response.json(undefined).text()),
      fnBody: await settle(Response.json(() => 1).text()),
      nullBody: await Response.json(null).text(),
      dateBody: await Response.json(new Date(0)).text(),
      mapBody: await Response.json(new Map([["a", 1]])).text(),
    };
    out.parseReviver = JSON.parse("{\"a\":1,\"b\":[2]}", (k, v) => (typeof v === "number" ? v * 10 : v));
    out.parseProto = Object.getPrototypeOf(JSON.parse("{\"__proto__\": {\"x\": 1}}")) === Object.prototype;
    return Response.json(out);
  },
};
