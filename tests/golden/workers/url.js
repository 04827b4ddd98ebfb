// requests: [{"path": "/"}]
// URL and URLSearchParams: WHATWG parsing, serialisation, setters, invalid input.
const INPUTS = [
  ["https://user:pa%20ss@EXAMPLE.com:443/a/./b/../c?x=1#frag"],
  ["http://example.com:8080/%7Efoo/bar baz?q=a b&c=\u00e9"],
  ["HTTP://Example.COM"],
  ["https://example.com/path?#"],
  ["../up/../x?y#z", "https://h.example/a/b/c"],
  ["//other.example/p", "https://h.example/a"],
  ["?only=query", "https://h.example/a/b?old=1#f"],
  ["#only-hash", "https://h.example/a/b?old=1"],
  ["http://192.168.0.1/"],
  ["http://0x7f.1/"],
  ["http://[::1]:80/"],
  ["http://[2001:db8:0:0:0:0:0:1]/"],
  ["http://münchen.example/ü?ä=ö#ß"],
  ["mailto:someone@example.com"],
  ["data:text/plain,hello world"],
  ["file:///C:/dir/file.txt"],
  ["javascript:alert(1)"],
  ["https://example.com/a%2fb%2Fc"],
  ["https://EXAMPLE.com./trailing-dot"],
  ["  https://example.com/trim  "],
  ["https://ex\tam\nple.com/tabs"],
  ["ws://example.com:80/socket"],
  ["blob:https://example.com/uuid"],
  ["non-special://host/path with space"],
  ["https://example.com/\u{1F600}?\u{1F600}#\u{1F600}"],
];
const INVALID = ["not a url", "https://", "http://exa mple.com/", "https://[::1/", "http://999.1.1.1/", "", "https://example.com:99999/", "//no-base"];
const parts = (u) => ({ href: u.href, origin: u.origin, protocol: u.protocol, username: u.username, password: u.password,
  host: u.host, hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, hash: u.hash });

export default {
  async fetch() {
    const out = { parsed: [], invalid: [], setters: {}, params: {} };
    for (const [input, base] of INPUTS) {
      try { out.parsed.push(parts(new URL(input, base))); } catch (e) { out.parsed.push({ input, error: e.name, message: e.message }); }
    }
    for (const input of INVALID) {
      try { new URL(input); out.invalid.push({ input, ok: true }); } catch (e) { out.invalid.push({ input, error: e.name, canParse: URL.canParse(input) }); }
    }
    const u = new URL("https://example.com/a?b=1#c");
    u.pathname = "/new path/ü";
    u.search = "?q=hello world&x=1";
    u.hash = "section 2";
    u.port = "8443";
    u.hostname = "Other.Example";
    u.username = "me@x";
    u.password = "p:w";
    out.setters.afterAll = u.href;
    u.protocol = "http";
    out.setters.protocol = u.href;
    u.port = "80";
    out.setters.defaultPort = u.href;
    u.searchParams.append("added", "a&b=c");
    out.setters.viaParams = u.href;
    u.search = "";
    out.setters.clearedSearch = [u.href, u.searchParams.toString()];
    u.href = "https://replaced.example/";
    out.setters.href = u.href;
    const p = new URLSearchParams("a=1&b=2&a=3&c=%20x+y&d=%E2%82%AC&e");
    out.params.entries = [...p];
    out.params.getAll = p.getAll("a");
    out.params.get = [p.get("c"), p.get("d"), p.get("e"), p.get("zz")];
    p.append("z", "last");
    p.set("a", "only");
    p.delete("b");
    out.params.afterEdit = p.toString();
    p.sort();
    out.params.sorted = p.toString();
    out.params.size = p.size;
    out.params.fromObject = new URLSearchParams({ k: "v w", "x&y": "=?" }).toString();
    out.params.fromPairs = new URLSearchParams([["a", "1"], ["b", "~!*()'"]]).toString();
    out.params.special = new URLSearchParams({ s: "ü € \u{1F600} +%" }).toString();
    out.params.hasValue = [p.has("a", "only"), p.has("a", "nope")];
    out.json = JSON.stringify({ u: new URL("https://j.example/x") });
    return Response.json(out);
  },
};
