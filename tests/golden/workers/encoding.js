// requests: [{"path": "/"}]
// TextEncoder, TextDecoder (UTF-8, UTF-16LE, windows-1252, fatal, BOM, streaming), atob and btoa.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };
const bytes = (...b) => new Uint8Array(b);

export default {
  async fetch() {
    const enc = new TextEncoder();
    const out = {};
    out.encoding = enc.encoding;
    out.encoded = [...enc.encode("héllo € \u{1F600}")];
    out.loneSurrogate = [...enc.encode("a\uD800b\uDC00")];
    out.encodeEmpty = enc.encode().length;
    const target = new Uint8Array(5);
    out.encodeInto = enc.encodeInto("ab€c", target);
    out.encodeIntoBytes = [...target];
    const dec = new TextDecoder();
    out.decoderProps = [dec.encoding, dec.fatal, dec.ignoreBOM];
    out.decoded = dec.decode(bytes(0x68, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80));
    out.invalid = dec.decode(bytes(0x61, 0xff, 0x62, 0xc3, 0x28, 0xe2, 0x82, 0x63, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80));
    out.bom = [dec.decode(bytes(0xef, 0xbb, 0xbf, 0x41)), new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes(0xef, 0xbb, 0xbf, 0x41)).length];
    out.fatal = attempt(() => new TextDecoder("utf-8", { fatal: true }).decode(bytes(0x61, 0xff)));
    const streaming = new TextDecoder();
    out.stream = [streaming.decode(bytes(0xe2, 0x82), { stream: true }), streaming.decode(bytes(0xac, 0x21))];
    out.truncatedEnd = new TextDecoder().decode(bytes(0x61, 0xe2, 0x82));
    out.labels = ["utf8", "UTF-8", " unicode-1-1-utf-8 ", "utf-16le", "latin1", "ascii"].map((l) => new TextDecoder(l).encoding);
    out.badLabel = attempt(() => new TextDecoder("klingon"));
    out.utf16 = new TextDecoder("utf-16le").decode(bytes(0x68, 0x00, 0xac, 0x20, 0x3d, 0xd8, 0x00, 0xde));
    out.windows1252 = new TextDecoder("windows-1252").decode(bytes(0x41, 0x80, 0x93, 0xe9, 0xff));
    out.fromDataView = new TextDecoder().decode(new DataView(bytes(0x41, 0x42, 0x43).buffer, 1, 2));
    out.btoa = [btoa(""), btoa("a"), btoa("ab"), btoa("abc"), btoa("\u00ff\u00fe")];
    out.btoaWide = attempt(() => btoa("€"));
    out.atob = [atob("YWJj"), atob("YW Jj\n"), atob("YQ"), atob("YQ=="), atob("")];
    out.atobBad = ["YQ=", "a", "!!!!", "YWJj=", "Y===" ].map((s) => attempt(() => atob(s)));
    return Response.json(out);
  },
};
