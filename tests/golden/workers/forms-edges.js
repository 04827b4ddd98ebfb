// requests: [{"path": "/"}, {"method": "POST", "path": "/urlencoded", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": "a=1&b=x+y%20z&a=%E2%82%AC&empty=&novalue&=anon&c=%zz"}, {"method": "POST", "path": "/multipart", "headers": {"Content-Type": "multipart/form-data; boundary=\"quoted-b\""}, "body": "--quoted-b\r\nContent-Disposition: form-data; name=\"field one\"\r\n\r\nvalue one\r\n--quoted-b\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"r\u00e9sum\u00e9.txt\"\r\n\r\nno type given\r\n--quoted-b\r\nContent-Disposition: form-data; name=\"field one\"\r\n\r\nsecond\r\n--quoted-b--\r\n"}, {"method": "POST", "path": "/multipart", "headers": {"Content-Type": "multipart/form-data"}, "body": "no boundary"}]
// FormData and Blob edge cases: parsing urlencoded and multipart bodies, repeated names, file defaults, Blob slicing and reading.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const settle = async (p) => { try { return { ok: await p }; } catch (e) { return { error: e.name, message: e.message }; } };
const show = async (form) => { const out = []; for (const [k, v] of form) out.push([k, typeof v === "string" ? v : [v.constructor.name, v.name, v.type, v.size, await v.text()]]); return out; };

export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/urlencoded" || path === "/multipart") {
      const r = await settle(request.formData());
      return Response.json(r.ok ? { entries: await show(r.ok), all: r.ok.getAll("field one") } : r);
    }
    const out = {};
    const f = new FormData();
    f.append("n", 1);
    f.append("b", new Blob(["blob"], { type: "text/x" }));
    f.append("named", new Blob(["x"]), "given.bin");
    f.append("file", new File(["file"], "orig.txt", { type: "text/plain" }));
    f.append("renamed", new File(["file"], "orig.txt"), "new.txt");
    out.entries = await show(f);
    out.getMissing = [f.get("missing"), f.getAll("missing")];
    out.fileDefaults = (() => { const file = new File([], "empty"); return [file.size, file.type, typeof file.lastModified, file.name]; })();
    out.fileNoName = attempt(() => new File(["x"]));
    out.formArgs = attempt(() => f.append("only-name"));
    out.blobArgs = [attempt(() => new Blob("string")), attempt(() => new Blob([1, 2, null]).size), attempt(() => new Blob(undefined).size)];
    const blob = new Blob(["0123456789"]);
    out.slices = await Promise.all([[2], [2, 5], [-3], [5, 2], [0, 100], [undefined, undefined, "Type/X"]].map(async (args) => { const s = blob.slice(...args); return [await s.text(), s.type]; }));
    out.blobStream = await new Response(new Blob(["streamed ", "blob"]).stream()).text();
    out.blobBytes = [...new Uint8Array(await new Blob([new Uint16Array([0x4142])]).arrayBuffer())];
    out.blobTypeInvalid = [new Blob([], { type: "caf\u00e9" }).type, new Blob([], { type: "A/B" }).type];
    out.formUrlencodedBody = await (async () => { const r = new Request("https://e.example/", { method: "POST", body: new URLSearchParams({ q: "a b" }) }); return [r.headers.get("content-type"), await r.text()]; })();
    out.formDataSet = (() => { const g = new FormData(); g.append("k", "1"); g.append("x", "2"); g.append("k", "3"); g.set("k", "4"); return [...g]; })();
    out.formTag = [Object.prototype.toString.call(new FormData()), Object.prototype.toString.call(new Blob([])), Object.prototype.toString.call(new File([], "f"))];
    return Response.json(out);
  },
};
