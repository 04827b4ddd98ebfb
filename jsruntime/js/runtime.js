// The instance: init, invocations, calls to the host (fetch, dispatch, sleep), timers, fetch(),
// dispatch namespace bindings, and the driver that host.c calls into.
//
// Everything an invocation starts (timers, calls, waitUntil work) belongs to it: when its final
// frame is written, its timers are dropped and answers to its calls are no longer expected
// (section 9.3 of docs/worker-protocol.md: the engine answers none after the final frame).

const MAX_CALLS_IN_FLIGHT = 64;
const MAX_BODY_BYTES = 10 * 1024 * 1024;
const MAX_REDIRECTS = 20;
const NEVER_RESPONDS = "The script will never generate a response.";
// driver.idle()'s answers to host.c
const IDLE_WAIT = 0;
const IDLE_MORE = 1;
const IDLE_WAIT_CALLS = 2;

let currentInvocation = null;
const initializing = { allowed: false };
let nextCallId = 0;
let nextTimerId = 0;
let retireAfterInvocation = false;

const instance = {
  phase: "new", // new -> initializing -> ready
  check: false,
  format: null,
  filename: "worker.js",
  handlers: null, // {fetch, tail, target}
  listeners: null, // service-worker form: the global scope's EventTarget
  processEnv: {},
  bindings: {},
  baseEnv: null,
  initPromise: null,
  initSettled: false,
};

const wellFormed = (text) => String(text).toWellFormed();

// What the runtime writes when it cannot write a frame any more: host.c refuses a meta that is not a
// plain typed object (see meta_allowed there), which only a Worker that changed the built-ins the
// prelude uses (Object.prototype.toJSON, a setter on Object.prototype...) can bring about.
const OUT_OF_MEMORY = jsonStringify({
  type: "exception", name: "RangeError", retire: true,
  message: "out of memory: the Worker used all the memory its instance may have",
});
const CANNOT_WRITE = jsonStringify({
  type: "exception", name: "Error", retire: true,
  message: "The JavaScript runtime stopped: it could not write a frame, because the Worker changed built-ins it relies on (such as Object.prototype.toJSON).",
});

function send(meta, body) {
  try {
    host.write(jsonStringify(meta), body);
  } catch (error) {
    host.write(isOutOfMemory(error) ? OUT_OF_MEMORY : CANNOT_WRITE);
    host.exit(0);
    throw error;
  }
}

// ---- calls ----

class Invocation {
  constructor(kind, number, env) {
    this.kind = kind;
    this.number = number;
    this.env = env;
    this.calls = new Map(); // id -> {resolve, reject}
    this.queued = []; // calls over the in-flight cap, waiting for a slot
    this.inFlight = 0;
    this.timers = new Map(); // id -> {due, seq, callback, args, interval}
    this.sleeps = new Map(); // sleep call id -> due time
    this.waitUntilPending = 0;
    this.waitUntilErrors = [];
    this.phase = "running"; // running -> responded (response sent, waitUntil work going on) -> done
    this.passThrough = false;
    this.request = null;
    this.savedGlobals = null;
  }
}

function hostCall(meta, body) {
  const invocation = currentInvocation;
  if (!invocation || invocation.phase === "done") {
    return Promise.reject(new Error("Cannot perform I/O on behalf of a different request: this request has already finished."));
  }
  return new Promise((resolve, reject) => {
    const id = ++nextCallId;
    meta.id = id;
    invocation.calls.set(id, { resolve, reject });
    if (invocation.inFlight < MAX_CALLS_IN_FLIGHT) {
      invocation.inFlight++;
      send(meta, body);
    } else {
      invocation.queued.push([meta, body]);
    }
  });
}

function answerCall(meta, body) {
  const invocation = currentInvocation;
  if (!invocation || typeof meta.id !== "number") return;
  const entry = invocation.calls.get(meta.id);
  if (!entry) return; // an answer to a call we gave up on
  invocation.calls.delete(meta.id);
  invocation.inFlight--;
  while (invocation.queued.length && invocation.inFlight < MAX_CALLS_IN_FLIGHT) {
    const [queuedMeta, queuedBody] = invocation.queued.shift();
    invocation.inFlight++;
    send(queuedMeta, queuedBody);
  }
  entry.resolve([meta, body]);
}

// ---- timers ----

function addTimer(callback, delay, args, interval) {
  inGlobalScope();
  if (typeof callback !== "function") {
    throw new TypeError(`Failed to execute '${interval ? "setInterval" : "setTimeout"}' on 'ServiceWorkerGlobalScope': parameter 1 is not of type 'function'.`);
  }
  const invocation = currentInvocation;
  delay = Math.max(0, Number(delay) || 0);
  const id = ++nextTimerId;
  invocation.timers.set(id, { id, due: host.now() + delay, seq: id, callback, args, interval: interval ? Math.max(delay, 1) : 0 });
  return id;
}

function clearTimer(id) {
  if (currentInvocation) currentInvocation.timers.delete(Number(id));
}

function fireTimer(invocation, timer) {
  if (timer.interval) timer.due = host.now() + timer.interval;
  else invocation.timers.delete(timer.id);
  try {
    timer.callback.apply(globalThis, timer.args);
  } catch (error) {
    reportUncaught(error);
  }
}

function ensureSleep(invocation, due, now) {
  for (const pending of invocation.sleeps.values()) if (pending <= due + 1) return;
  const ms = Math.max(0, Math.ceil(due - now));
  const promise = hostCall({ type: "sleep", ms });
  let id = nextCallId;
  invocation.sleeps.set(id, due);
  promise.then(() => invocation.sleeps.delete(id));
}

// ---- uncaught errors ----

function errorDetails(error) {
  if (error instanceof Error || (error && typeof error === "object" && "message" in error && "name" in error)) {
    const name = wellFormed(error.name || "Error");
    const message = wellFormed(error.message);
    return { name, message, stack: formatStack(name, message, error.stack) };
  }
  let message;
  try {
    message = typeof error === "string" ? error : inspect(error, 1);
  } catch {
    message = String(error);
  }
  return { name: "Error", message: wellFormed(message), stack: "" };
}

// An error's frames as QuickJS-ng recorded them, without going through the stack accessor (core.js)
const nativeStack = Object.getOwnPropertyDescriptor(Error.prototype, "stack");
function rawStack(error) {
  const getter = nativeStack && nativeStack.get && nativeStack.get[kInternal];
  const raw = getter ? getter.call(error) : error.stack;
  return typeof raw === "string" ? raw : null;
}

// V8's shape ("Name: message" then "    at ..." lines), without the runtime's own frames.
function formatStack(name, message, stack) {
  // error.stack already starts with a "Name: message" line (core.js); the frames are the lines from the first "at"
  let lines = typeof stack === "string" ? stack.split("\n") : [];
  const first = lines.findIndex((line) => /^\s+at /.test(line));
  lines = first < 0 ? [] : lines.slice(first).filter((line) => line.trim() && !line.includes("wasmdeck:runtime") && !line.includes("at evaluate (native)"));
  return wellFormed([`${name}: ${message}`, ...lines].join("\n"));
}

function isOutOfMemory(error) {
  return error instanceof Error && /out of memory/.test(String(error.message));
}

function reportUncaught(error) {
  const { name, message } = errorDetails(error);
  emitLog("error", [`Uncaught ${name}: ${message}`]);
  if (isOutOfMemory(error)) retireAfterInvocation = true;
}

// ---- ending an invocation ----

function finish(invocation, meta, body) {
  if (invocation.phase === "done") return;
  invocation.phase = "done";
  invocation.timers.clear();
  invocation.calls.clear();
  invocation.queued.length = 0;
  if (retireAfterInvocation) meta.retire = true;
  if (invocation.savedGlobals) restoreGlobals(invocation.savedGlobals);
  currentInvocation = null;
  send(meta, body);
  if (meta.retire) host.exit(0);
}

function exceptionMeta(error) {
  if (isOutOfMemory(error)) {
    host.gc();  // what the Worker hoarded is garbage once its handler has thrown: room for the frame
    const meta = { type: "exception", name: "RangeError", message: "out of memory: the Worker used all the memory its instance may have" };
    try {
      const frames = rawStack(error);
      if (frames !== null) meta.stack = formatStack("RangeError", meta.message, frames);
    } catch {
      // no room even for the stack: the frame goes without it
    }
    meta.retire = true;
    return meta;
  }
  const details = errorDetails(error);
  return { type: "exception", name: details.name, message: details.message, stack: details.stack };
}

function fail(invocation, error) {
  if (invocation.phase === "responded") {
    // the response is out; the failure belongs to the waitUntil work
    invocation.waitUntilErrors.push(errorDetails(error));
    return;
  }
  finish(invocation, exceptionMeta(error));
}

function waitUntil(invocation, promise) {
  if (promise === undefined) {
    throw new TypeError("Failed to execute 'waitUntil' on 'ExecutionContext': parameter 1 is not of type 'Promise'.");
  }
  if (invocation.phase === "done") return;
  invocation.waitUntilPending++;
  Promise.resolve(promise).then(noop, (error) => {
    invocation.waitUntilErrors.push(errorDetails(error));
    if (isOutOfMemory(error)) retireAfterInvocation = true;
  }).finally(() => {
    invocation.waitUntilPending--;
    if (invocation.waitUntilPending === 0 && invocation.phase === "responded") endAfterWaitUntil(invocation);
  });
}

function endAfterWaitUntil(invocation) {
  const meta = { type: "done" };
  if (invocation.waitUntilErrors.length) meta.exceptions = invocation.waitUntilErrors;
  finish(invocation, meta);
}

// The final answer to a fetch event, or (with waitUntil work pending) the response ahead of it.
async function respond(invocation, response) {
  if (!(response instanceof Response)) {
    throw new TypeError("Incorrect type for Promise: the Promise did not resolve to 'Response'.");
  }
  const internal = response[kInternal];
  if (internal.type === "error" || internal.status < 100) {
    throw new TypeError("The Worker answered with Response.error(), which cannot be sent to the client.");
  }
  let bytes = null;
  if (!internal.body.isNull) {
    if (internal.body.usedFlag) throw new TypeError(BODY_USED);
    bytes = internal.body.stream ? await readAllBytes(internal.body.stream) : internal.body.bytes;
    if (bytes.byteLength > MAX_BODY_BYTES) {
      throw new RangeError(`The response body is ${bytes.byteLength} bytes, over the ${MAX_BODY_BYTES} byte limit.`);
    }
  }
  if (invocation.phase !== "running") return;
  if (invocation.request && invocation.request.method === "HEAD") bytes = null;  // a HEAD answer carries headers only
  const meta = { type: "response", status: internal.status, headers: wirePairs(internal.headers) };
  if (invocation.waitUntilPending > 0) {
    meta.waitUntil = true;
    invocation.phase = "responded";
    send(meta, bytes);
  } else {
    finish(invocation, meta, bytes);
  }
}

// ---- fetch() ----

async function requestParts(request) {
  const internal = request[kInternal];
  let bytes = null;
  if (!internal.body.isNull) {
    bytes = await internal.body.consume();
    if (bytes.byteLength > MAX_BODY_BYTES) throw new RangeError(`The request body is over the ${MAX_BODY_BYTES} byte limit.`);
  }
  return { method: internal.method, url: internal.url, headers: wirePairs(request.headers), bytes };
}

const FETCH_ERRORS = {
  TooManySubrequests: (message) => new Error(`Too many subrequests. ${message}`),
  TooManyCalls: (message) => new Error(message),
};

function abortable(promise, signal) {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then((value) => {
      signal.removeEventListener("abort", onAbort);
      resolve(value);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
  });
}

async function fetchOnce(parts) {
  const [answer, body] = await hostCall(
    { type: "fetch", request: { method: parts.method, url: parts.url, headers: parts.headers } },
    parts.bytes,
  );
  if (answer.type === "fetch_error") {
    const make = FETCH_ERRORS[answer.name];
    const error = make ? make(String(answer.message || "")) : new TypeError(String(answer.message || answer.name));
    error.cause = answer.name;
    throw error;
  }
  if (answer.type !== "fetch_result") throw new TypeError(`fetch() got an unexpected answer from the host (${answer.type}).`);
  return { status: answer.status, headers: answer.headers || [], body: new Uint8Array(body) };
}

async function doFetch(input, init) {
  inGlobalScope();
  const request = new Request(input, init);
  const signal = request.signal;
  if (signal.aborted) throw signal.reason;
  let parts = await requestParts(request);
  const scheme = parts.url.slice(0, parts.url.indexOf(":"));
  if (scheme === "data") return dataUrlResponse(parts.url);
  if (scheme !== "http" && scheme !== "https") throw new TypeError(`Fetch API cannot load: ${parts.url}`);
  for (let redirects = 0; ; redirects++) {
    const result = await abortable(fetchOnce(parts), signal);
    const location = result.headers.find(([name]) => name.toLowerCase() === "location");
    if (request.redirect !== "manual" && REDIRECT_STATUS.includes(result.status) && location) {
      if (request.redirect === "error") throw new TypeError("Redirect was not allowed by the request's redirect mode.");
      if (redirects >= MAX_REDIRECTS) throw new TypeError("Too many redirects.");
      let next;
      try {
        next = serializeURL(parseURL(location[1], parts.url));
      } catch {
        throw new TypeError(`Invalid redirect location: ${location[1]}`);
      }
      const toGet = result.status === 303 ? parts.method !== "HEAD" : (result.status === 301 || result.status === 302) && parts.method === "POST";
      const headers = toGet
        ? parts.headers.filter(([name]) => !["content-type", "content-length", "content-encoding", "content-language", "content-location"].includes(name))
        : parts.headers;
      parts = { method: toGet ? "GET" : parts.method, url: next, headers, bytes: toGet ? null : parts.bytes };
      continue;
    }
    return Response[kInternal](result.status, result.headers, result.body, parts.url, redirects > 0);
  }
}

// a data: URL answered inside the Worker, as workerd does: the media type (text/plain;charset=US-ASCII when none), the
// percent-decoded or base64 body (characters outside the alphabet skipped), no url
function dataUrlResponse(url) {
  const comma = url.indexOf(",");
  if (comma < 0) throw new TypeError(`Fetch API cannot load: ${url}`);
  let type = url.slice(5, comma).trim();
  const base64 = /;[\t\n\r ]*base64[\t\n\r ]*$/i.test(type);
  if (base64) type = type.slice(0, type.lastIndexOf(";"));
  if (type.startsWith(";")) type = "text/plain" + type;
  type = normalizeMimeType(type) || "text/plain;charset=US-ASCII";
  const raw = encodeUtf8(url.slice(comma + 1));
  const bytes = [];
  for (let i = 0; i < raw.length; i++) {
    const hex = raw[i] === 0x25 ? String.fromCharCode(raw[i + 1] || 0, raw[i + 2] || 0) : "";
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(raw[i]);
    }
  }
  let body = new Uint8Array(bytes);
  if (base64) {
    const alphabet = String.fromCharCode(...bytes).replace(/[^A-Za-z0-9+/]/g, "");
    const usable = alphabet.length % 4 === 1 ? alphabet.slice(0, -1) : alphabet;
    body = Uint8Array.from(atob(usable), (ch) => ch.charCodeAt(0));
  }
  return Response[kInternal](200, [["content-type", type]], body, "", false);
}

function fetch(input, init = undefined) {
  if (input === undefined) {
    return Promise.reject(new TypeError("Failed to execute 'fetch' on 'ServiceWorkerGlobalScope': parameter 1 is not of type 'Request or string'."));
  }
  try {
    return doFetch(input, init);
  } catch (error) {
    return Promise.reject(error);
  }
}

// ---- dispatch namespace bindings ----

const DISPATCH_OUTCOME_ERRORS = {
  exceededCpu: "Worker exceeded CPU time limit.",
  exceededMemory: "Worker exceeded memory limit.",
  exceededWallTime: "Worker exceeded its wall time limit.",
  loadShed: "Worker could not run: the platform is overloaded.",
  internalError: "Worker could not run because of an internal error.",
};

class DispatchedWorker {
  #name;
  #options;
  constructor(name, options) {
    this.#name = name;
    this.#options = options;
  }
  async fetch(input, init = undefined) {
    const request = new Request(input, init);
    const parts = await requestParts(request);
    const meta = {
      type: "dispatch", name: this.#name, options: this.#options,
      request: { method: parts.method, url: parts.url, headers: parts.headers },
    };
    const [answer, body] = await abortable(hostCall(meta, parts.bytes), request.signal);
    if (answer.type === "dispatch_error") {
      const error = new Error(String(answer.message || answer.name));
      error.cause = answer.name;
      throw error;
    }
    if (answer.type !== "dispatch_result") throw new TypeError(`dispatch got an unexpected answer from the host (${answer.type}).`);
    if (answer.outcome === "scriptNotFound") throw new Error(`Worker not found: ${this.#name}`);
    if (DISPATCH_OUTCOME_ERRORS[answer.outcome]) {
      const error = new Error(DISPATCH_OUTCOME_ERRORS[answer.outcome]);
      error.outcome = answer.outcome;
      throw error;
    }
    return Response[kInternal](answer.status, answer.headers || [], new Uint8Array(body), parts.url, false);
  }
}

class DispatchNamespace {
  get(name, args = undefined, options = undefined) {
    if (typeof name !== "string" || name === "") throw new TypeError("The Worker name must be a non-empty string.");
    const wanted = {};
    if (options && options.limits !== undefined) {
      const limits = {};
      for (const key of ["cpuMs", "subRequests"]) {
        if (options.limits[key] === undefined) continue;
        const value = Number(options.limits[key]);
        if (!Number.isFinite(value) || value < 0) throw new TypeError(`limits.${key} must be a non-negative number.`);
        limits[key] = value;
      }
      wanted.limits = limits;
    }
    if (options && options.outbound !== undefined) {
      if (options.outbound === null || typeof options.outbound !== "object") throw new TypeError("outbound must be an object.");
      const outbound = {};
      for (const [key, value] of Object.entries(options.outbound)) {
        outbound[key] = typeof value === "string" ? value : JSON.stringify(value);
      }
      wanted.outbound = outbound;
    }
    if (args !== undefined && args !== null && Object.keys(args).length) wanted.args = structuredCloneValue(args);
    return new DispatchedWorker(name, wanted);
  }
}

const BINDING_TYPES = {
  dispatch_namespace: () => new DispatchNamespace(),
};

// ---- ExecutionContext and events ----

class ExecutionContext {
  #invocation;
  constructor(invocation) {
    this.#invocation = invocation;
  }
  waitUntil(promise) { waitUntil(this.#invocation, promise); }
  passThroughOnException() { this.#invocation.passThrough = true; }
  get props() { return {}; }
}

class FetchEvent extends Event {
  #request;
  #invocation;
  #responded = false;
  constructor(type, init) {
    super(type);
    if (!init || !(init[kInternal] instanceof Invocation)) throw new TypeError("Illegal constructor");
    this.#request = init.request;
    this.#invocation = init[kInternal];
    this[kInternal].respondWith = null;
  }
  get request() { return this.#request; }
  respondWith(response) {
    if (this.#responded) throw domException("FetchEvent.respondWith() has already been called; it can only be called once.", "InvalidStateError");
    this.#responded = true;
    this[kInternal].respondWith = Promise.resolve(response);
  }
  waitUntil(promise) { waitUntil(this.#invocation, promise); }
  passThroughOnException() { this.#invocation.passThrough = true; }
}

// ---- the global scope (service-worker form) ----

const globalScope = new EventTarget();
function addEventListener(type, listener, options) {
  if (type !== "fetch" && type !== "tail" && type !== "trace" && type !== "scheduled") {
    throw new TypeError(`Unsupported event type "${type}": a Worker listens for "fetch" (or "tail").`);
  }
  if (instance.phase === "ready") throw new Error("addEventListener() can only be called while the script is evaluated.");
  globalScope.addEventListener(type, listener, options);
}

function setGlobals(values) {
  const saved = [];
  for (const [name, value] of Object.entries(values)) {
    saved.push([name, Object.getOwnPropertyDescriptor(globalThis, name)]);
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: true });
  }
  return saved;
}

function restoreGlobals(saved) {
  for (const [name, descriptor] of saved.reverse()) {
    if (descriptor) Object.defineProperty(globalThis, name, descriptor);
    else delete globalThis[name];
  }
}

// ---- init ----

function envFor(invocationEnv) {
  const keys = invocationEnv && typeof invocationEnv === "object" ? Object.keys(invocationEnv) : [];
  if (keys.length === 0) return instance.baseEnv;
  const env = Object.assign({}, instance.baseEnv);
  for (const key of keys) env[key] = String(invocationEnv[key]);
  return env;
}

function syntaxLocation(error, filename) {
  if (!(error instanceof SyntaxError) || typeof error.stack !== "string") return null;
  const escaped = filename.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = new RegExp(escaped + ":(\\d+):(\\d+)").exec(error.stack);
  return match ? { line: Number(match[1]), column: Number(match[2]) } : null;
}

function handlersOf(exports) {
  const target = exports && exports.default;
  if (target === undefined || target === null) return null;
  if (typeof target === "function" && target.prototype) {
    const proto = target.prototype;
    if (typeof proto.fetch === "function" || typeof proto.tail === "function") {
      return { cls: target, fetch: typeof proto.fetch === "function", tail: typeof proto.tail === "function" };
    }
    return null;
  }
  if (typeof target !== "object") return null;
  return { object: target, fetch: typeof target.fetch === "function", tail: typeof target.tail === "function" };
}

function detectFormat(source, filename) {
  // a script that parses as a classic script is the service-worker form; one that only parses
  // as a module is the module form; neither: the module parser's error is the one to report
  if (host.compiles(source, filename, false)) return "service-worker";
  return "module";
}

function initFailed(error) {
  let meta;
  try {
    meta = exceptionMeta(error);
    const location = syntaxLocation(error, instance.filename);
    if (location) {
      meta.line = location.line;
      meta.column = location.column;
      meta.message = `${meta.message} (${instance.filename}:${location.line}:${location.column})`;
    }
    meta.retire = true;
  } catch (failure) {
    // no room to describe the failure (the top-level code still holds what it hoarded), or
    // built-ins the description needs were changed: one of the frames made before any script ran
    host.write(isOutOfMemory(failure) || isOutOfMemory(error) ? OUT_OF_MEMORY : CANNOT_WRITE);
    host.exit(0);
    return;
  }
  send(meta);
  host.exit(0);
}

function startInit(meta, body) {
  if (instance.phase !== "new") {
    protocolError(`the host sent a second init frame`);
    return;
  }
  instance.phase = "initializing";
  instance.check = meta.check === true;
  instance.filename = typeof meta.filename === "string" && meta.filename ? meta.filename : "worker.js";
  if (meta.language !== undefined && meta.language !== "javascript") {
    initFailed(new TypeError(`This runtime runs JavaScript Workers, not "${meta.language}".`));
    return;
  }
  if (typeof meta.memoryMb === "number" && meta.memoryMb > 0) {
    // the heap a little under the linear-memory cap (room for the shadow stack, static data and
    // frame buffers), so a heap bomb ends as a clean exception before the cap refuses an allocation
    const heap = Math.max(4, meta.memoryMb - Math.min(8, meta.memoryMb / 4)) * 1024 * 1024;
    host.setMemoryLimits(heap, meta.memoryMb * 1024 * 1024);
  }
  instance.processEnv = host.environment();
  const bindings = {};
  if (meta.bindings && typeof meta.bindings === "object") {
    for (const [name, spec] of Object.entries(meta.bindings)) {
      const make = spec && BINDING_TYPES[spec.type];
      if (!make) {
        initFailed(new TypeError(`Binding "${name}" has an unknown type ${JSON.stringify(spec && spec.type)}.`));
        return;
      }
      bindings[name] = make(name, spec);
    }
  }
  instance.bindings = bindings;
  instance.baseEnv = Object.assign({}, instance.processEnv, bindings);

  let source;
  try {
    source = host.utf8Decode(new Uint8Array(body), true, false, false)[0];
  } catch {
    initFailed(new TypeError("The Worker's source is not valid UTF-8."));
    return;
  }
  const format = meta.format === "module" || meta.format === "service-worker" ? meta.format : detectFormat(source, instance.filename);
  instance.format = format;
  try {
    if (format === "module") {
      const [namespace, evaluation] = host.evaluate(source, instance.filename, true);
      instance.initPromise = Promise.resolve(evaluation).then(() => {
        instance.exports = namespace;
      });
    } else {
      instance.savedServiceGlobals = setGlobals(instance.baseEnv);
      host.evaluate(source, instance.filename, false);
      instance.initPromise = Promise.resolve();
    }
  } catch (error) {
    initFailed(error);
    return;
  }
  instance.initPromise.then(finishInit, (error) => {
    instance.initSettled = true;
    initFailed(error);
  });
}

function finishInit() {
  instance.initSettled = true;
  let handlers;
  if (instance.format === "module" && !handlersOf(instance.exports) &&
      (listenersOf(globalScope, "fetch").length || listenersOf(globalScope, "tail").length)) {
    // a module that only registers listeners (a service-worker script using top-level await, say)
    instance.format = "service-worker";
  }
  if (instance.format === "module") {
    handlers = handlersOf(instance.exports);
    if (!handlers || (!handlers.fetch && !handlers.tail)) {
      const reason = handlers ? "its default export has no fetch() or tail() method" : "it has no default export";
      initFailed(new TypeError(`The Worker has no handler: ${reason}. Write \`export default { async fetch(request, env, ctx) { ... } }\`.`));
      return;
    }
  } else {
    handlers = { fetch: listenersOf(globalScope, "fetch").length > 0, tail: listenersOf(globalScope, "tail").length > 0 };
    if (!handlers.fetch && !handlers.tail) {
      initFailed(new TypeError("The Worker has no handler: it never calls addEventListener(\"fetch\", ...)."));
      return;
    }
  }
  instance.handlers = handlers;
  instance.phase = "ready";
  const available = ["fetch", "tail"].filter((name) => handlers[name]);
  if (instance.check) {
    send({ type: "ready", format: instance.format, handlers: available, retire: true });
    host.exit(0);
    return;
  }
  send({ type: "ready", format: instance.format, handlers: available });
}

// ---- events ----

function protocolError(message) {
  host.write(jsonStringify({ type: "log", level: "error", message: `wasmdeck JavaScript runtime: ${message}` }));
  send({ type: "exception", name: "Error", message: `The JavaScript runtime stopped: ${message}.`, retire: true });
  host.exit(2);
}

function handlerTarget(invocation, ctx) {
  const handlers = instance.handlers;
  if (handlers.cls) return new handlers.cls(ctx, invocation.env);
  return handlers.object;
}

function startFetch(meta, body) {
  const request = meta.request || {};
  const method = typeof request.method === "string" ? request.method : "GET";
  const url = typeof request.url === "string" ? request.url : "http://localhost/";
  const headers = Array.isArray(request.headers) ? request.headers : [];
  const bytes = body.byteLength || !["GET", "HEAD"].includes(method) ? new Uint8Array(body) : null;
  const invocation = currentInvocation;
  invocation.request = { method, url, headers, bytes };
  // as in workerd, a request declaring a length (even 0) or a chunked body has a body; one declaring neither has none
  const declared = !["GET", "HEAD"].includes(method) && headers.some(([name]) => /^(content-length|transfer-encoding)$/i.test(name));
  const incoming = Request[kInternal](method, url, headers, bytes && (bytes.byteLength || declared) ? bytes : null, meta.cf);
  if (!instance.handlers.fetch) {
    finish(invocation, exceptionMeta(new TypeError("The Worker has no fetch handler.")));
    return;
  }
  let result;
  try {
    if (instance.format === "module") {
      const ctx = new ExecutionContext(invocation);
      const target = handlerTarget(invocation, ctx);
      result = instance.handlers.cls ? target.fetch(incoming) : target.fetch(incoming, invocation.env, ctx);
    } else {
      const event = new FetchEvent("fetch", { request: incoming, [kInternal]: invocation });
      globalScope.dispatchEvent(event);
      result = event[kInternal].respondWith;
      if (result === null) {
        throw new Error("No event handler called respondWith() on the fetch event.");
      }
    }
  } catch (error) {
    handleFetchError(invocation, error);
    return;
  }
  Promise.resolve(result)
    .then((response) => respond(invocation, response))
    .catch((error) => handleFetchError(invocation, error));
}

async function passThrough(invocation, error) {
  emitLog("error", [`Uncaught ${errorDetails(error).name}: ${errorDetails(error).message} (passed through to the origin)`]);
  const original = invocation.request;
  const parts = { method: original.method, url: original.url, headers: original.headers, bytes: original.bytes };
  const result = await fetchOnce(parts);
  return Response[kInternal](result.status, result.headers, result.body, original.url, false);
}

function handleFetchError(invocation, error) {
  if (invocation.phase !== "running") return;
  if (invocation.passThrough && !isOutOfMemory(error)) {
    invocation.passThrough = false;
    passThrough(invocation, error)
      .then((response) => respond(invocation, response))
      .catch(() => fail(invocation, error));
    return;
  }
  fail(invocation, error);
}

function startTail(meta, body) {
  const invocation = currentInvocation;
  if (!instance.handlers.tail) {
    finish(invocation, exceptionMeta(new TypeError("The Worker has no tail handler.")));
    return;
  }
  let events;
  try {
    events = jsonParse(decodeUtf8(new Uint8Array(body)));
  } catch {
    events = [];
  }
  let result;
  try {
    if (instance.format === "module") {
      const ctx = new ExecutionContext(invocation);
      const target = handlerTarget(invocation, ctx);
      result = instance.handlers.cls ? target.tail(events) : target.tail(events, invocation.env, ctx);
    } else {
      const event = new Event("tail");
      Object.defineProperty(event, "events", { value: events });
      Object.defineProperty(event, "traces", { value: events });
      event.waitUntil = (promise) => waitUntil(invocation, promise);
      globalScope.dispatchEvent(event);
      result = undefined;
    }
  } catch (error) {
    fail(invocation, error);
    return;
  }
  Promise.resolve(result).then(() => {
    if (invocation.phase !== "running") return;
    if (invocation.waitUntilPending > 0) invocation.phase = "responded";
    else endAfterWaitUntil(invocation);
  }, (error) => fail(invocation, error));
}

function startEvent(meta, body) {
  if (instance.phase !== "ready") {
    protocolError(`the host sent a ${meta.type} event before the instance was ready`);
    return;
  }
  if (currentInvocation) {
    protocolError(`the host sent a ${meta.type} event while invocation ${currentInvocation.number} was still running`);
    return;
  }
  const invocation = new Invocation(meta.type, meta.invocation, envFor(meta.env));
  currentInvocation = invocation;
  if (instance.format === "service-worker" && invocation.env !== instance.baseEnv) {
    invocation.savedGlobals = setGlobals(meta.env);
  }
  if (meta.type === "fetch") startFetch(meta, body);
  else startTail(meta, body);
}

// ---- the driver host.c calls ----

const driver = {
  frame(metaText, body) {
    let meta;
    try {
      meta = jsonParse(metaText);
    } catch {
      protocolError("the host sent a frame whose meta is not JSON");
      return;
    }
    if (meta === null || typeof meta !== "object" || typeof meta.type !== "string") {
      protocolError("the host sent a frame without a string type");
      return;
    }
    switch (meta.type) {
      case "init": startInit(meta, body); return;
      case "fetch": case "tail": startEvent(meta, body); return;
      case "fetch_result": case "fetch_error": case "dispatch_result": case "dispatch_error":
      case "sleep_result": case "sleep_error":
        answerCall(meta, body);
        return;
      default:
        // fields and frames this runtime does not know are ignored, as the spec asks
        return;
    }
  },
  // Called when the microtask queue is empty. IDLE_MORE: more work was done (run the queue again);
  // IDLE_WAIT_CALLS: the invocation waits for the host (host.c announces it with a waiting frame).
  idle() {
    if (instance.phase === "initializing") {
      if (!instance.initSettled) {
        initFailed(new Error("The Worker's top-level code is waiting on a promise that can never settle while the script is evaluated (I/O is only possible inside a handler)."));
      }
      return IDLE_WAIT;
    }
    const invocation = currentInvocation;
    if (!invocation || invocation.phase === "done") return IDLE_WAIT;
    const now = host.now();
    let next = null;
    for (const timer of invocation.timers.values()) {
      if (next === null || timer.due < next.due || (timer.due === next.due && timer.seq < next.seq)) next = timer;
    }
    if (next && next.due <= now + 0.5) {
      fireTimer(invocation, next);
      return IDLE_MORE;
    }
    if (next) {
      ensureSleep(invocation, next.due, now);
      return IDLE_WAIT_CALLS;
    }
    if (invocation.inFlight > 0 || invocation.queued.length > 0) return IDLE_WAIT_CALLS;
    // nothing left that could ever move this invocation on
    if (invocation.phase === "responded") endAfterWaitUntil(invocation);
    else if (invocation.kind === "fetch") finish(invocation, exceptionMeta(new Error(NEVER_RESPONDS)));
    else endAfterWaitUntil(invocation);
    return IDLE_WAIT;
  },
  uncaught(error) {
    if (currentInvocation && currentInvocation.phase === "running" && currentInvocation.kind === "fetch" && isOutOfMemory(error)) {
      fail(currentInvocation, error);
      return;
    }
    reportUncaught(error);
  },
  rejection(promise, reason, handled) {
    // workerd logs unhandled rejections; the invocation goes on (its handler decides its outcome)
    if (handled) {
      pendingRejections.delete(promise);
      return;
    }
    pendingRejections.set(promise, reason);
    if (!rejectionCheckQueued) {
      rejectionCheckQueued = true;
      Promise.resolve().then(() => Promise.resolve()).then(() => {
        rejectionCheckQueued = false;
        for (const [, value] of pendingRejections) {
          const { name, message } = errorDetails(value);
          emitLog("error", [`Uncaught (in promise) ${name}: ${message}`]);
        }
        pendingRejections.clear();
      });
    }
  },
};

const pendingRejections = new Map();
let rejectionCheckQueued = false;

const scheduler = {
  wait(ms, options = undefined) {
    const signal = options && options.signal;
    // workerd rejects with an Error carrying a reason that is not one
    return abortable(new Promise((resolve) => setTimeout(resolve, ms)), signal)
      .catch((reason) => { throw reason instanceof Error || reason instanceof DOMException ? reason : new Error(String(reason)); });
  },
};

defineGlobal("fetch", fetch);
defineGlobal("setTimeout", (callback, delay, ...args) => addTimer(callback, delay, args, false));
defineGlobal("setInterval", (callback, delay, ...args) => addTimer(callback, delay, args, true));
defineGlobal("clearTimeout", clearTimer);
defineGlobal("clearInterval", clearTimer);
defineGlobal("scheduler", scheduler);
defineGlobal("addEventListener", addEventListener);
defineGlobal("removeEventListener", (type, listener) => globalScope.removeEventListener(type, listener));
defineGlobal("ExecutionContext", ExecutionContext);
defineGlobal("FetchEvent", FetchEvent);
defineGlobal("self", globalThis);
defineGlobal("reportError", function reportError(error) { reportUncaught(error); });
