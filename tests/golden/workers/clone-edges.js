// requests: [{"path": "/"}]
// structuredClone edge cases (a Proxy is left out: QuickJS-ng clones it as the object it wraps, V8 refuses it): special numbers, wrappers, sparse arrays, typed arrays of every kind, getters, prototypes, property kinds, errors.
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message, isDOMException: e instanceof DOMException, code: e.code }; } };

export default {
  async fetch() {
    const out = {};
    const numbers = structuredClone([NaN, -0, Infinity, -Infinity, 1e308]);
    out.numbers = numbers.map((n) => Object.is(n, -0) ? "-0" : String(n));
    const wrappers = structuredClone([new Number(3), new String("s"), new Boolean(false), Object(5n)]);
    out.wrappers = wrappers.map((w) => [typeof w, Object.prototype.toString.call(w), String(w.valueOf())]);
    const sparse = structuredClone([1, , 3]);
    out.sparse = [sparse.length, 1 in sparse];
    const arrayProps = [1, 2];
    arrayProps.extra = "x";
    out.arrayProps = structuredClone(arrayProps).extra;
    out.typed = [Int8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array].map((T) => {
      const c = structuredClone(new T(2));
      return [c.constructor.name, c.length];
    });
    const dv = structuredClone(new DataView(new ArrayBuffer(8), 2, 4));
    out.dataView = [dv.constructor.name, dv.byteOffset, dv.byteLength, dv.buffer.byteLength];
    let calls = 0;
    const withGetter = { get g() { calls++; return "got"; } };
    const gc = structuredClone(withGetter);
    out.getter = [gc.g, calls, typeof Object.getOwnPropertyDescriptor(gc, "g").get];
    const hidden = {};
    Object.defineProperty(hidden, "secret", { value: 1, enumerable: false });
    hidden[Symbol("s")] = 2;
    hidden.visible = 3;
    out.propertyKinds = Object.getOwnPropertyNames(structuredClone(hidden));
    out.order = Object.keys(structuredClone({ b: 1, a: 2, 1: 3, 0: 4 }));
    out.invalidDate = String(structuredClone(new Date(NaN)).getTime());
    out.regexLastIndex = (() => { const r = /x/g; r.lastIndex = 3; return structuredClone(r).lastIndex; })();
    const mapKeys = structuredClone(new Map([[{ k: 1 }, "obj"], [NaN, "nan"]]));
    out.mapKeys = [...mapKeys].map(([k, v]) => [typeof k, v]);
    const shared = { x: 1 };
    const twice = structuredClone({ a: shared, b: shared });
    out.sharedRefs = twice.a === twice.b;
    const err = new TypeError("with cause", { cause: "why" });
    err.extra = "field";
    const ec = structuredClone(err);
    out.errorClone = [ec.name, ec.message, ec.constructor.name, ec.extra, typeof ec.stack];
    class MyError extends Error { constructor(m) { super(m); this.name = "MyError"; } }
    const mc = structuredClone(new MyError("mine"));
    out.customError = [mc.name, mc.message, mc.constructor.name];
    out.weakMap = attempt(() => structuredClone(new WeakMap()));
    out.promise = attempt(() => structuredClone(Promise.resolve()));
    out.nestedFunction = attempt(() => structuredClone({ a: [1, { f: () => 1 }] }));
    out.request = attempt(() => structuredClone(new Request("https://e.example/")));
    out.noArgs = attempt(() => structuredClone());
    out.transferNotListed = attempt(() => structuredClone(1, { transfer: [1] }));
    out.transferTwice = attempt(() => { const b = new ArrayBuffer(1); return structuredClone(b, { transfer: [b, b] }); });
    out.blob = await (async () => { try { const b = structuredClone(new Blob(["blob"])); return [b.constructor.name, await b.text()]; } catch (e) { return [e.name, e.message]; } })();
    return Response.json(out);
  },
};
