// requests: [{"path": "/"}]
// TextEncoder/TextDecoder and atob/btoa edge cases: argument types, streaming with BOMs and surrogates, fatal streaming, DOMException details.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message, code: e.code, isDOMException: e instanceof DOMException }; } };
const bytes = (...b) => new Uint8Array(b);

export default {
  async fetch() {
    const out = {};
    const enc = new TextEncoder();
    out.encodeTypes = [enc.encode(undefined).length, [...enc.encode(12)], [...enc.encode(null)], enc.encode("x") instanceof Uint8Array];
    out.encodeIntoSmall = (() => { const t = new Uint8Array(3); return [enc.encodeInto("a\u20ac", t), [...t]]; })();
    out.encodeIntoSurrogate = (() => { const t = new Uint8Array(8); return [enc.encodeInto("\u{1F600}x", t), [...t]]; })();
    out.encodeIntoTooSmallForPair = (() => { const t = new Uint8Array(3); return enc.encodeInto("\u{1F600}", t); })();
    const dec = new TextDecoder();
    out.decodeTypes = [dec.decode(), dec.decode(undefined), dec.decode(new ArrayBuffer(0)), dec.decode(bytes(104, 105).buffer)];
    out.decodeBad = attempt(() => dec.decode("string"));
    out.decodeNumbers = attempt(() => dec.decode([104, 105]));
    const split = new TextDecoder();
    out.bomSplit = [split.decode(bytes(0xef), { stream: true }), split.decode(bytes(0xbb, 0xbf, 0x41), { stream: true }), split.decode(bytes(0xef, 0xbb, 0xbf))];
    const sur = new TextDecoder();
    out.fourByteSplit = [sur.decode(bytes(0xf0, 0x9f), { stream: true }), sur.decode(bytes(0x98), { stream: true }), sur.decode(bytes(0x80))];
    const fatal = new TextDecoder("utf-8", { fatal: true });
    out.fatalStream = [attempt(() => fatal.decode(bytes(0xe2, 0x82), { stream: true })), attempt(() => fatal.decode()), attempt(() => fatal.decode(bytes(0x41)))];
    out.fatalOverlong = attempt(() => fatal.decode(bytes(0xc0, 0x80)));
    out.replacements = [...new TextDecoder().decode(bytes(0xc0, 0x80, 0xf8, 0x88, 0x80, 0x80, 0x80, 0xe0, 0x80, 0x80))].map((c) => c.codePointAt(0));
    out.utf16be = attempt(() => new TextDecoder("utf-16be").decode(bytes(0x00, 0x68, 0x20, 0xac)));
    out.utf16Label = attempt(() => new TextDecoder("utf-16").encoding);
    out.utf16OddByte = attempt(() => new TextDecoder("utf-16le").decode(bytes(0x68, 0x00, 0x69)));
    out.utf16Bom = attempt(() => new TextDecoder("utf-16le").decode(bytes(0xff, 0xfe, 0x68, 0x00)));
    out.latin1Label = attempt(() => new TextDecoder("iso-8859-1").encoding);
    out.fatalProp = new TextDecoder("utf-8", { fatal: 1 }).fatal;
    out.tags = [Object.prototype.toString.call(enc), Object.prototype.toString.call(dec)];
    out.btoaTypes = [btoa(123), btoa(null), btoa(undefined), btoa(true)];
    out.btoaLatin = btoa("\u0000\u0080\u00ff");
    out.btoaWide = attempt(() => btoa("\u0100"));
    out.atobTypes = [attempt(() => atob(null)), attempt(() => atob(undefined)), attempt(() => atob(12))];
    out.atobWhitespace = [atob(" Y W J j "), atob("\tYQ\f=\r="), attempt(() => atob("YQ\u00a0=="))];
    out.atobEdge = ["=", "==", "YQ===", "YWI=", "YWI", "Y", "YW=j", "YQ==YQ==", "-_-_", "+/+/"].map((s) => { const r = attempt(() => atob(s)); return r.ok !== undefined ? [...r.ok].map((c) => c.charCodeAt(0)) : [r.error, r.message, r.code]; });
    out.atobLatin = [...atob("/w==")].map((c) => c.charCodeAt(0));
    out.domException = (() => { const e = new DOMException("msg", "InvalidCharacterError"); return [e.name, e.message, e.code, e instanceof Error, Object.prototype.toString.call(e), DOMException.INVALID_CHARACTER_ERR, new DOMException().name, new DOMException("m", "Custom").code]; })();
    return Response.json(out);
  },
};
