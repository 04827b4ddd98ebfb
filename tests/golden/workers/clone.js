// requests: [{"path": "/"}]
// structuredClone: what is copied, what is kept shared, what is refused.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch() {
    const out = {};
    const source = { n: 1, s: "x", b: true, nil: null, arr: [1, [2, 3]], date: new Date(0), re: /a+b/gi, map: new Map([["k", { v: 1 }]]), set: new Set([1, "2"]), big: 10n };
    source.self = source;
    const copy = structuredClone(source);
    out.distinct = copy !== source && copy.arr !== source.arr && copy.map !== source.map;
    out.cycle = copy.self === copy;
    out.values = { n: copy.n, s: copy.s, b: copy.b, nil: copy.nil, arr: copy.arr, date: copy.date.toISOString(), re: [copy.re.source, copy.re.flags], map: [...copy.map], set: [...copy.set], big: String(copy.big) };
    out.undefinedKeys = Object.keys(structuredClone({ a: undefined, b: 1 }));
    const bytes = new Uint8Array([1, 2, 3]);
    const clonedBytes = structuredClone(bytes);
    clonedBytes[0] = 9;
    out.bytes = [bytes[0], clonedBytes[0], clonedBytes.constructor.name];
    const shared = { buf: new ArrayBuffer(4) };
    shared.view = new Uint8Array(shared.buf, 1, 2);
    const sharedCopy = structuredClone(shared);
    out.sharedBuffer = sharedCopy.view.buffer === sharedCopy.buf;
    const err = structuredClone(new RangeError("bad range"));
    out.error = [err.name, err.message, err instanceof RangeError];
    out.function = attempt(() => structuredClone({ f() {} }));
    out.symbol = attempt(() => structuredClone(Symbol("s")));
    out.primitives = [structuredClone(1), structuredClone("s"), structuredClone(null), structuredClone(undefined) === undefined];
    out.classInstance = (() => { class P { constructor() { this.x = 1; } } const c = structuredClone(new P()); return [c.x, c.constructor.name]; })();
    const buffer = new ArrayBuffer(8);
    const moved = structuredClone(buffer, { transfer: [buffer] });
    out.transfer = [buffer.byteLength, moved.byteLength];
    return Response.json(out);
  },
};
