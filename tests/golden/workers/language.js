// requests: [{"path": "/"}]
// What tenants' everyday JavaScript gets from the engine: Date formatting and parsing (UTC), Error and stack APIs, RegExp features, string and array methods (left out: V8's messages that name the expression, such as "o.method is not a function", or the object, and BigInt mixing).
const attempt = (fn) => { try { return { ok: fn() }; } catch (e) { return { error: e.name, message: e.message }; } };

export default {
  async fetch() {
    const out = {};
    const d = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
    out.date = {
      toString: d.toString(), toUTCString: d.toUTCString(), toISOString: d.toISOString(), toDateString: d.toDateString(),
      toTimeString: d.toTimeString(), toJSON: d.toJSON(), getTimezoneOffset: d.getTimezoneOffset(), getHours: d.getHours(),
      invalid: String(new Date("nope")), invalidJSON: new Date(NaN).toJSON(), invalidISO: attempt(() => new Date(NaN).toISOString()),
    };
    out.dateParse = ["2024-01-02", "2024-01-02T03:04:05", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05.678+02:00", "Tue, 02 Jan 2024 03:04:05 GMT",
      "January 2, 2024", "2024/01/02", "02 Jan 2024 03:04:05 +0000", "Jan 2 2024", "2024-1-2", "20240102", ""].map((s) => [s, Date.parse(s)]);
    out.errors = {
      captureStackTrace: typeof Error.captureStackTrace,
      stackTraceLimit: typeof Error.stackTraceLimit,
      cause: new Error("outer", { cause: "inner" }).cause,
      causeMissing: "cause" in new Error("x"),
      stackFirstLine: new TypeError("first line").stack.split("\n")[0],
      stackHasAt: /\n\s+at /.test(new Error("x").stack),
      aggregate: (() => { const e = new AggregateError([new Error("a")], "many"); return [e.name, e.message, e.errors.length]; })(),
      toString: String(new RangeError("r")),
      customName: (() => { class E extends Error { constructor() { super("m"); this.name = "Custom"; } } const e = new E(); return [String(e), e.stack.split("\n")[0], e instanceof Error]; })(),
      thrownMessage: attempt(() => null.x),
      notDefined: attempt(() => notDefinedAnywhere),
      constAssign: attempt(() => { const c = 1; c = 2; }),
      badArrayLength: attempt(() => new Array(-1)),
      jsonCycle: attempt(() => { const a = []; a.push(a); return JSON.stringify(a); }),
      readNullProp: attempt(() => { const n = null; return n.prop; }),
      recursion: attempt(() => { const f = () => f(); return f(); }).error,
    };
    out.regexp = {
      named: "2024-01-02".match(/(?<y>\d+)-(?<m>\d+)/).groups.y,
      lookbehind: "price: $42".match(/(?<=\$)\d+/)[0],
      unicodeProperty: "héllo wörld".match(/\p{L}+/gu),
      sticky: /a/y.sticky,
      dotAll: /a.b/s.test("a\nb"),
      matchAll: [..."a1b2".matchAll(/\d/g)].map((m) => m[0]),
      replaceFn: "a-b".replace(/-(\w)/, (_, c) => c.toUpperCase()),
      hasIndices: attempt(() => /b/d.exec("ab").indices[0]),
      vFlag: attempt(() => new RegExp("[\\p{L}--[a-z]]", "v").test("A")),
    };
    out.strings = {
      normalize: ["\u0065\u0301".normalize("NFC").length, "\u00e9".normalize("NFD").length],
      localeCompare: ["a".localeCompare("b"), "b".localeCompare("a"), "a".localeCompare("a")],
      upper: "straße".toUpperCase(), lower: "İ".toLowerCase().length,
      at: "abc".at(-1), padStart: "5".padStart(3, "0"), wellFormed: "a\uD800".isWellFormed(),
      raw: String.raw`a\nb`, codePoints: [..."a😀"].length, trim: "\u00a0 x \ufeff".trim(),
    };
    out.numbers = {
      toFixed: (1.005).toFixed(2), toPrecision: (123.456).toPrecision(4), exponential: (12345).toExponential(2),
      parse: [parseInt("08"), parseInt("0x1f"), parseFloat("3.14abc"), Number(""), Number("0b101"), Number(" 12 ")],
      string: [String(0.1 + 0.2), String(1e21), String(-0), String(2 ** 53), (255).toString(16), (0.5).toString(2)],
      maxSafe: Number.MAX_SAFE_INTEGER, epsilon: Number.EPSILON > 0,
      bigint: [String(2n ** 64n), BigInt.asUintN(8, 257n).toString(), typeof BigInt(1)],
      mathRound: [Math.round(-0.5), Math.round(2.5), Math.max(), Math.min(), Math.sign(-3), Math.trunc(-4.7), Math.hypot(3, 4)],
    };
    out.arrays = {
      sortStable: [{ k: 1, v: "a" }, { k: 0, v: "b" }, { k: 1, v: "c" }, { k: 0, v: "d" }].sort((x, y) => x.k - y.k).map((x) => x.v).join(""),
      sortDefault: [10, 9, 1, 100].sort(), toSorted: [3, 1, 2].toSorted(), toReversed: [1, 2].toReversed(), with: [1, 2, 3].with(1, 9),
      flat: [1, [2, [3, [4]]]].flat(Infinity), groupBy: attempt(() => Object.fromEntries(Object.entries(Object.groupBy([1, 2, 3], (n) => (n % 2 ? "odd" : "even"))))),
      findLastIndex: [1, 2, 3].findLastIndex((n) => n < 3), fromAsync: typeof Array.fromAsync, includesNaN: [NaN].includes(NaN),
    };
    out.objects = {
      entries: Object.entries({ b: 1, a: 2, 1: "x" }), fromEntries: Object.fromEntries([["a", 1]]), structured: typeof structuredClone,
      spreadOrder: Object.keys({ ...{ z: 1 }, ...{ a: 2 } }),
      symbolDesc: Symbol("d").description, globalThisType: typeof globalThis, setMethods: typeof new Set().union,
    };
    return Response.json(out);
  },
};
