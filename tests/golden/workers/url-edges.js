// requests: [{"path": "/"}]
// URL and URLSearchParams edge cases: hosts and ports, IPv4 forms, IDNA, setters that are ignored, percent-encoding per component, params construction and encoding.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const INPUTS = [
  "http://0300.0250.0.1/", "http://4294967295/", "http://4294967296/", "http://1.2.3/", "http://0x100.1/", "http://[0:0:0:0:0:ffff:7f00:1]/",
  "http://[::ffff:127.0.0.1]/", "http://[1:0:0:2:0:0:0:3]/", "https://example.com:443/", "http://example.com:0080/", "https://EXAMPLE.com:/",
  "https://xn--mnchen-3ya.example/", "https://BÜCHER.example/", "https://faß.example/", "https://a.b\u3002c/", "https://example.com/%41%2e%7e",
  "https://example.com/a/%2e%2E/b", "https://example.com/..%2f", "https://u:p@example.com/", "https://u@:@example.com/",
  "https://example.com/?a=<>\"'`{}|", "https://example.com/#<>\"` {}", "https://example.com/<>\"`{}|^ ", "http://example.com/\\back\\slash",
  "foo://Host/%41", "foo:/path", "foo:opaque path ", "https:example.com/x", "https://example.com?", "https://example.com#",
  "https://exa%41mple.com/", "https://%zz.example/", "https://ex ample.com/", "https://a..b/", "https://1.2.3.4.5/", "https://0..1/", "https://ex<ample.com/",
];
export default {
  async fetch() {
    const out = { parsed: {}, setters: {}, params: {}, canParse: {}, statics: {} };
    for (const input of INPUTS) {
      try { const u = new URL(input); out.parsed[input] = [u.href, u.host, u.origin, u.pathname]; } catch (e) { out.parsed[input] = [e.name, e.message]; }
    }
    const u = new URL("https://example.com:8080/p?q=1#h");
    u.port = "abc"; out.setters.portLetters = u.port;
    u.port = "99999"; out.setters.portTooBig = u.port;
    u.port = "12ab"; out.setters.portPrefix = u.port;
    u.port = ""; out.setters.portEmpty = u.href;
    u.host = "new.example:9090"; out.setters.host = u.href;
    u.hostname = "bad host"; out.setters.badHostname = u.hostname;
    u.protocol = "ftp:"; out.setters.protocolSpecial = u.protocol;
    u.protocol = "foo"; out.setters.protocolNonSpecial = u.protocol;
    u.hash = "#"; out.setters.hashEmpty = u.href;
    u.search = "?"; out.setters.searchEmpty = u.href;
    u.pathname = "a b/%zz/ü"; out.setters.pathname = u.pathname;
    u.username = "us er:@"; u.password = "p@ss/w"; out.setters.credentials = u.href;
    const o = new URL("foo://host/path");
    o.host = "other"; o.pathname = "x y"; out.setters.nonSpecial = [o.href, o.origin];
    out.canParse = { relative: URL.canParse("/x", "https://e.example"), noBase: URL.canParse("/x"), badBase: URL.canParse("/x", "nope"), full: URL.canParse("https://e.example/") };
    out.statics.parse = typeof URL.parse === "function" ? [URL.parse("https://e.example/a")?.href ?? null, URL.parse("nope")] : "absent";
    out.statics.baseObject = new URL("b", new URL("https://e.example/a/")).href;
    out.statics.invalidBase = attempt(() => new URL("a", "not absolute"));
    out.statics.toString = [String(new URL("https://e.example")), new URL("https://e.example").toJSON()];
    out.statics.searchParamsLive = (() => { const x = new URL("https://e.example/?a=1"); const sp = x.searchParams; x.search = "?b=2"; return [sp.get("a"), sp.get("b"), sp === x.searchParams]; })();
    out.statics.sameSearch = (() => { const x = new URL("https://e.example/?a=%20b+c"); x.searchParams.sort(); return x.search; })();
    out.statics.emptyParamsClearsQuestion = (() => { const x = new URL("https://e.example/?a=1"); x.searchParams.delete("a"); return x.href; })();
    out.params.leadingQuestion = [...new URLSearchParams("?a=1&&b=&=c&d")];
    out.params.fromParams = new URLSearchParams(new URLSearchParams("x=1&x=2")).toString();
    out.params.fromMap = new URLSearchParams(new Map([["m", "1"]])).toString();
    out.params.fromRecordNumbers = new URLSearchParams({ n: 1, t: true, u: undefined, nul: null }).toString();
    out.params.badPair = attempt(() => new URLSearchParams([["a"]]));
    out.params.percent = [...new URLSearchParams("a=%zz&b=%4&c=%e2%82&d=%2B+%20")];
    out.params.encoding = new URLSearchParams({ k: "a b+c&d=e/f?g#h%i*j-k.l_m~n!o'p(q)r" }).toString();
    out.params.unicode = new URLSearchParams({ "ключ": "значение", e: "\uD800" }).toString();
    const p = new URLSearchParams("b=1&a=2&b=3&a=1&c=0");
    p.delete("b", "3");
    out.params.deleteValue = p.toString();
    p.sort();
    out.params.sortStable = p.toString();
    const seen = [];
    p.forEach((v, k, self) => seen.push([k, v, self === p]));
    out.params.forEach = seen;
    out.params.keysValues = [[...p.keys()], [...p.values()]];
    out.params.sortUnicode = (() => { const s = new URLSearchParams("\u{1F600}=1&\uFFFD=2&z=3&Z=4"); s.sort(); return [...s.keys()]; })();
    out.params.tag = [Object.prototype.toString.call(p), Object.prototype.toString.call(p.entries())];
    out.params.size = new URLSearchParams("a=1&a=2&b").size;
    out.tag = Object.prototype.toString.call(new URL("https://e.example"));
    out.callWithoutNew = attempt(() => URL("https://e.example"));
    return Response.json(out);
  },
};
