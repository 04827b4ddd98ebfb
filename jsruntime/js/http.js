// Request and Response.

const NORMALIZED_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
// the methods workerd's HTTP layer knows (case-sensitive once the six above are normalised)
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "PURGE", "OPTIONS", "TRACE", "COPY", "LOCK",
  "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE",
  "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "QUERY", "BAN"]);
const NULL_BODY_STATUS = [101, 204, 205, 304];
const REDIRECT_STATUS = [301, 302, 303, 307, 308];

// the headers member of an init dictionary, refused in workerd's words
function headersInit(value, dictionary) {
  if (value === null || (value !== undefined && typeof value !== "object" && typeof value !== "function")) {
    throw new TypeError(`Incorrect type for the 'headers' field on '${dictionary}': the provided value is not of type 'Headers or Sequence or object'.`);
  }
  return value;
}

// WebIDL's unsigned short: truncated, modulo 2^16
function toUnsignedShort(value) {
  const number = Math.trunc(Number(value));
  return Number.isFinite(number) ? ((number % 65536) + 65536) % 65536 : 0;
}

function normalizeMethod(method) {
  method = String(method);
  if (!TOKEN.test(method)) throw new TypeError(`Invalid HTTP method string: ${method}`);
  const upper = method.toUpperCase();
  const normalized = NORMALIZED_METHODS.includes(upper) ? upper : method;
  if (!KNOWN_METHODS.has(normalized)) throw new TypeError(`Invalid HTTP method string: ${method}`);
  return normalized;
}

function parseRequestURL(input) {
  try {
    return serializeURL(parseURL(input));
  } catch (error) {
    if (error instanceof URLError) throw new TypeError(`Invalid URL: ${input}`);
    throw error;
  }
}

class Request {
  constructor(input, init = {}) {
    if (arguments.length === 0) throw new TypeError("Failed to construct 'Request': 1 argument required, but only 0 present.");
    init = init === undefined || init === null ? {} : init;
    let source = null;
    let url;
    if (input instanceof Request) {
      source = input[kInternal];
      url = source.url;
    } else {
      url = parseRequestURL(String(input));
    }
    const method = init.method !== undefined ? normalizeMethod(init.method) : source ? source.method : "GET";
    let headers;
    if (init.headers !== undefined) headers = new Headers(headersInit(init.headers, "RequestInitializerDict"));
    else if (source) headers = new Headers(input.headers);  // the getter: an incoming request makes its Headers lazily
    else headers = new Headers();
    let body;
    if (init.body !== undefined && init.body !== null) {
      if (method === "GET" || method === "HEAD") throw new TypeError("Request with a GET or HEAD method cannot have a body.");
      const extracted = extractBody(init.body);
      body = new BodyState(extracted.bytes, extracted.stream);
      if (extracted.contentType && !headers.has("content-type")) headers.append("content-type", extracted.contentType);
    } else if (source && init.body === undefined && !source.body.isNull) {
      if (source.body.usedFlag) throw new TypeError("Cannot reconstruct a Request with a used body.");
      if (method === "GET" || method === "HEAD") throw new TypeError("Request with a GET or HEAD method cannot have a body.");
      // the body moves to the new Request, as in workerd: the old one is left used
      body = new BodyState(source.body.bytes, source.body.stream);
      source.body.bytes = null;
      source.body.stream = null;
      source.body.used = true;
    } else {
      body = new BodyState(null, null);
    }
    const redirect = init.redirect !== undefined ? String(init.redirect) : source ? source.redirect : "follow";
    if (!["follow", "manual", "error"].includes(redirect)) {
      throw new TypeError(`Invalid redirect value, must be one of "follow" or "manual" ("error" won't be implemented since it does not make sense at the edge; use "manual" and check the response status code).`);
    }
    let signal = init.signal !== undefined ? init.signal : source ? source.signal : null;
    if (signal !== null && !(signal instanceof AbortSignal)) throw new TypeError("Failed to construct 'Request': member signal is not of type AbortSignal.");
    this[kInternal] = {
      url, method, headers, body, redirect, signal: signal || new AbortSignal(kInternal),
      cf: init.cf !== undefined ? init.cf : source ? source.cf : undefined,
    };
  }
  static [kInternal](method, url, headerList, bytes, cf) {
    const request = Object.create(Request.prototype);
    request[kInternal] = {
      url, method, headers: null, headerList, redirect: "manual", signal: new AbortSignal(kInternal),
      body: new BodyState(bytes, null), cf,
    };
    return request;
  }
  get method() { return this[kInternal].method; }
  get url() { return this[kInternal].url; }
  get headers() {
    const internal = this[kInternal];
    if (internal.headers === null) internal.headers = Headers[kInternal](internal.headerList, true);
    return internal.headers;
  }
  get redirect() { return this[kInternal].redirect; }
  get signal() { return this[kInternal].signal; }
  get cf() { return this[kInternal].cf; }
  get fetcher() { return null; }
  get integrity() { return ""; }
  get keepalive() { return false; }
  clone() {
    const internal = this[kInternal];
    const copy = Object.create(Request.prototype);
    copy[kInternal] = { ...internal, headers: new Headers(this.headers), body: internal.body.clone() };
    return copy;
  }
}
mixBody(Request);

class Response {
  constructor(body = null, init = {}) {
    init = init === undefined || init === null ? {} : init;
    const status = init.status !== undefined ? toUnsignedShort(init.status) : 200;
    if (status < 200 || status > 599) {
      throw new RangeError(`Responses may only be constructed with status codes in the range 200 to 599, inclusive.`);
    }
    const statusText = init.statusText !== undefined ? String(init.statusText) : "";
    if (/[\r\n]/.test(statusText)) throw new TypeError("Invalid statusText");
    const headers = new Headers(headersInit(init.headers, "InitializerDict"));
    let state;
    if (body !== null && body !== undefined) {
      const extracted = extractBody(body);
      if (NULL_BODY_STATUS.includes(status)) {
        // workerd lets an empty body through and sends none
        if (extracted.stream || extracted.bytes.byteLength) {
          throw new TypeError(`Response with null body status (101, 204, 205, or 304) cannot have a body.`);
        }
        extracted.bytes = null;
      }
      state = new BodyState(extracted.bytes, extracted.stream);
      if (extracted.contentType && !headers.has("content-type")) headers.append("content-type", extracted.contentType);
    } else {
      state = new BodyState(null, null);
    }
    this[kInternal] = {
      status, statusText, headers, body: state, url: "", redirected: false, type: "default",
      webSocket: init.webSocket || null, cf: init.cf,
    };
  }
  static json(data, init = {}) {
    const text = String(JSON.stringify(data));  // workerd sends "undefined" for what JSON cannot say
    init = init === undefined || init === null ? {} : init;
    const headers = new Headers(headersInit(init.headers, "InitializerDict"));
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(text, { ...init, status: init.status, statusText: init.statusText, headers });
  }
  static redirect(url, status = 302) {
    let location;
    try {
      location = serializeURL(parseURL(String(url)));
    } catch {
      throw new TypeError(`Unable to parse URL: ${url}`);
    }
    status = Number(status);
    if (!REDIRECT_STATUS.includes(status)) {
      throw new RangeError(`${status} is not a redirect status code. It must be one of: 301, 302, 303, 307, or 308.`);
    }
    const response = new Response(null, { status, headers: { location } });
    response[kInternal].headers[kInternal](true);
    return response;
  }
  static error() {
    const response = new Response(null, { status: 200 });
    Object.assign(response[kInternal], { status: 0, type: "error" });
    return response;
  }
  static [kInternal](status, headerList, bytes, url, redirected) {
    const response = Object.create(Response.prototype);
    response[kInternal] = {
      status, statusText: STATUS_TEXT[status] || "", headers: Headers[kInternal](headerList, true),
      body: new BodyState(NULL_BODY_STATUS.includes(status) ? null : bytes, null), url, redirected, type: "default",
      webSocket: null, cf: undefined,
    };
    return response;
  }
  get status() { return this[kInternal].status; }
  get statusText() { return this[kInternal].statusText; }
  get ok() { return this[kInternal].status >= 200 && this[kInternal].status <= 299; }
  get headers() { return this[kInternal].headers; }
  get url() { return this[kInternal].url; }
  get redirected() { return this[kInternal].redirected; }
  get type() { return this[kInternal].type; }
  get webSocket() { return this[kInternal].webSocket; }
  get cf() { return this[kInternal].cf; }
  clone() {
    const internal = this[kInternal];
    const copy = Object.create(Response.prototype);
    copy[kInternal] = { ...internal, headers: new Headers(internal.headers), body: internal.body.clone() };
    return copy;
  }
}
mixBody(Response);

const STATUS_TEXT = {
  100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
  204: "No Content", 205: "Reset Content", 206: "Partial Content", 300: "Multiple Choices", 301: "Moved Permanently",
  302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
  400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
  405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
  411: "Length Required", 412: "Precondition Failed", 413: "Payload Too Large", 414: "URI Too Long",
  415: "Unsupported Media Type", 416: "Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a teapot",
  422: "Unprocessable Entity", 425: "Too Early", 426: "Upgrade Required", 428: "Precondition Required",
  429: "Too Many Requests", 431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
  500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
  504: "Gateway Timeout", 505: "HTTP Version Not Supported",
};

defineGlobal("Request", Request);
defineGlobal("Response", Response);
