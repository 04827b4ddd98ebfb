// console: each call is one `log` frame at its level, its arguments formatted the way Node's
// util.format does (strings as they are, other values inspected).

const MAX_LOG_MESSAGE = 64 * 1024;

function inspect(value, depth = 0, seen = new Set()) {
  switch (typeof value) {
    case "string": return depth === 0 ? value : `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n")}'`;
    case "number": return Object.is(value, -0) ? "-0" : String(value);
    case "bigint": return `${value}n`;
    case "boolean": case "undefined": return String(value);
    case "symbol": return value.toString();
    case "function": return `[${value.constructor && value.constructor.name === "AsyncFunction" ? "AsyncFunction" : "Function"}: ${value.name || "(anonymous)"}]`;
  }
  if (value === null) return "null";
  if (seen.has(value)) return "[Circular *1]";
  if (value instanceof Error) {
    const stack = typeof value.stack === "string" && value.stack ? value.stack.replace(/\n+$/, "") : "";
    const head = `${value.name}: ${value.message}`;
    return stack.startsWith(head) ? stack : stack ? `${head}\n${stack}` : head;
  }
  if (depth > 2) return Array.isArray(value) ? "[Array]" : "[Object]";
  seen.add(value);
  try {
    if (value instanceof Date) return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
    if (value instanceof RegExp) return String(value);
    if (value instanceof Promise) return "Promise { <pending> }";
    if (Array.isArray(value)) {
      if (value.length === 0) return "[]";
      const items = value.slice(0, 100).map((item) => inspect(item, depth + 1, seen));
      if (value.length > 100) items.push(`... ${value.length - 100} more items`);
      return wrap("[", items, "]");
    }
    if (value instanceof Map) {
      const items = Array.from(value, ([k, v]) => `${inspect(k, depth + 1, seen)} => ${inspect(v, depth + 1, seen)}`);
      return `Map(${value.size}) ` + (items.length ? wrap("{", items, "}") : "{}");
    }
    if (value instanceof Set) {
      const items = Array.from(value, (v) => inspect(v, depth + 1, seen));
      return `Set(${value.size}) ` + (items.length ? wrap("{", items, "}") : "{}");
    }
    if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
      const items = Array.from(value.slice(0, 100), (v) => inspect(v, depth + 1, seen));
      if (value.length > 100) items.push(`... ${value.length - 100} more items`);
      return `${value.constructor.name}(${value.length}) ` + (items.length ? wrap("[", items, "]") : "[]");
    }
    if (value instanceof ArrayBuffer) return `ArrayBuffer { byteLength: ${value.byteLength} }`;
    if (value instanceof Headers) {
      const items = Array.from(value, ([k, v]) => `${inspect(k, depth + 1, seen)} => ${inspect(v, depth + 1, seen)}`);
      return "Headers " + (items.length ? wrap("{", items, "}") : "{}");
    }
    if (value instanceof URL) return `URL '${value.href}'`;
    if (value instanceof Request) return `Request { method: '${value.method}', url: '${value.url}' }`;
    if (value instanceof Response) return `Response { status: ${value.status}, statusText: '${value.statusText}' }`;
    const keys = Object.keys(value);
    const proto = Object.getPrototypeOf(value);
    const name = proto && proto !== Object.prototype && proto.constructor && proto.constructor.name ? proto.constructor.name + " " : proto === null ? "[Object: null prototype] " : "";
    if (keys.length === 0) return `${name}{}`;
    const items = keys.map((key) => `${/^[A-Za-z_$][\w$]*$/.test(key) ? key : `'${key}'`}: ${inspect(value[key], depth + 1, seen)}`);
    return name + wrap("{", items, "}");
  } finally {
    seen.delete(value);
  }
}

function wrap(open, items, close) {
  const oneLine = `${open} ${items.join(", ")} ${close}`;
  if (oneLine.length <= 72 && !items.some((item) => item.includes("\n"))) return oneLine;
  return `${open}\n${items.map((item) => "  " + item.replace(/\n/g, "\n  ")).join(",\n")}\n${close}`;
}

function formatLog(args) {
  if (args.length === 0) return "";
  let first = args[0];
  let rest = 1;
  let out;
  if (typeof first === "string" && first.includes("%")) {
    out = first.replace(/%([sdifjoOc%])/g, (match, spec) => {
      if (spec === "%") return "%";
      if (rest >= args.length) return match;
      const arg = args[rest++];
      switch (spec) {
        case "s": return typeof arg === "string" ? arg : typeof arg === "bigint" ? `${arg}n` : inspect(arg, 1);
        case "d": case "i": return typeof arg === "bigint" ? `${arg}n` : String(spec === "i" ? parseInt(arg, 10) : Number(arg));
        case "f": return String(parseFloat(arg));
        case "j": try { return JSON.stringify(arg); } catch { return "[Circular]"; }
        case "c": return "";
        default: return inspect(arg, 1);
      }
    });
  } else {
    out = inspect(first);
  }
  for (; rest < args.length; rest++) out += " " + inspect(args[rest]);
  return out;
}

function emitLog(level, args) {
  let message = formatLog(args).toWellFormed();
  if (message.length > MAX_LOG_MESSAGE) message = message.slice(0, MAX_LOG_MESSAGE).toWellFormed();
  if (!currentInvocation) return; // a log while no invocation is in flight belongs to nobody (section 9.4)
  host.write(jsonStringify({ type: "log", level, message }));
}

const counters = new Map();
const timersByLabel = new Map();
const console = {
  log: (...args) => emitLog("log", args),
  info: (...args) => emitLog("info", args),
  warn: (...args) => emitLog("warn", args),
  error: (...args) => emitLog("error", args),
  debug: (...args) => emitLog("debug", args),
  trace: (...args) => emitLog("log", ["Trace:", ...args]),
  dir: (value) => emitLog("log", [inspect(value, 1)]),
  table: (...args) => emitLog("log", args),
  assert: (condition, ...args) => { if (!condition) emitLog("error", ["Assertion failed" + (args.length ? ":" : ""), ...args]); },
  count: (label = "default") => {
    const n = (counters.get(label) || 0) + 1;
    counters.set(label, n);
    emitLog("log", [`${label}: ${n}`]);
  },
  countReset: (label = "default") => counters.delete(label),
  time: (label = "default") => timersByLabel.set(label, host.now()),
  timeEnd: (label = "default") => {
    const start = timersByLabel.get(label);
    if (start === undefined) return;
    timersByLabel.delete(label);
    emitLog("log", [`${label}: ${(host.now() - start).toFixed(3)}ms`]);
  },
  timeLog: (label = "default", ...args) => {
    const start = timersByLabel.get(label);
    if (start !== undefined) emitLog("log", [`${label}: ${(host.now() - start).toFixed(3)}ms`, ...args]);
  },
  group: (...args) => { if (args.length) emitLog("log", args); },
  groupCollapsed: (...args) => { if (args.length) emitLog("log", args); },
  groupEnd: () => {},
};

defineGlobal("console", console);
