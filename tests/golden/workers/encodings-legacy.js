// requests: [{"path": "/"}]
// TextDecoder's legacy single-byte encodings: every byte from 0x80 to 0xFF under each (multi-byte CJK encodings are left out: wasmdeck has no tables for them).
const LABELS = ["ibm866", "iso-8859-2", "iso-8859-3", "iso-8859-4", "iso-8859-5", "iso-8859-6", "iso-8859-7", "iso-8859-8", "iso-8859-8-i", "iso-8859-10",
  "iso-8859-13", "iso-8859-14", "iso-8859-15", "iso-8859-16", "koi8-r", "koi8-u", "macintosh", "windows-874", "windows-1250", "windows-1251",
  "windows-1253", "windows-1254", "windows-1255", "windows-1256", "windows-1257", "windows-1258", "x-mac-cyrillic", "x-user-defined",
  "latin2", "cp1251", "koi8", "mac", "tis-620", "iso-8859-9", "l9", "cyrillic", "greek", "hebrew", "arabic"];
const high = new Uint8Array(128).map((_, i) => 0x80 + i);

export default {
  async fetch() {
    const out = {};
    for (const label of LABELS) {
      try {
        const decoder = new TextDecoder(label);
        out[label] = [decoder.encoding, [...decoder.decode(high)].map((c) => c.codePointAt(0).toString(16)).join(" ")];
      } catch (e) {
        out[label] = [e.name, e.message];
      }
    }
    out.fatal = (() => { try { return new TextDecoder("iso-8859-3", { fatal: true }).decode(new Uint8Array([0xa5])); } catch (e) { return [e.name, e.message]; } })();
    return Response.json(out);
  },
};
