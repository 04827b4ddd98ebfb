// URL and URLSearchParams: the WHATWG URL Standard's basic URL parser, with state overrides for the setters.

const SPECIAL_SCHEMES = { "ftp": 21, "file": null, "http": 80, "https": 443, "ws": 80, "wss": 443 };
const isSpecialScheme = (scheme) => Object.prototype.hasOwnProperty.call(SPECIAL_SCHEMES, scheme);

const C0_CONTROL = (c) => c <= 0x1f || c > 0x7e;
const FRAGMENT_SET = (c) => C0_CONTROL(c) || c === 0x20 || c === 0x22 || c === 0x3c || c === 0x3e || c === 0x60;
const QUERY_SET = (c) => C0_CONTROL(c) || c === 0x20 || c === 0x22 || c === 0x23 || c === 0x3c || c === 0x3e;
const SPECIAL_QUERY_SET = (c) => QUERY_SET(c) || c === 0x27;
const PATH_SET = (c) => QUERY_SET(c) || c === 0x3f || c === 0x5e || c === 0x60 || c === 0x7b || c === 0x7d;
const USERINFO_SET = (c) => PATH_SET(c) || c === 0x2f || c === 0x3a || c === 0x3b || c === 0x3d || c === 0x40 ||
  (c >= 0x5b && c <= 0x5d) || c === 0x7c;
const COMPONENT_SET = (c) => USERINFO_SET(c) || (c >= 0x24 && c <= 0x26) || c === 0x2b || c === 0x2c;
const FORM_SET = (c) => COMPONENT_SET(c) || c === 0x21 || (c >= 0x27 && c <= 0x29) || c === 0x7e;

const HEX = "0123456789ABCDEF";

function percentEncode(text, inSet, spaceAsPlus = false) {
  let out = "";
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (spaceAsPlus && code === 0x20) {
      out += "+";
    } else if (code < 0x80 && !inSet(code)) {
      out += ch;
    } else if (code < 0x80) {
      out += "%" + HEX[code >> 4] + HEX[code & 15];
    } else {
      for (const byte of host.utf8Encode(ch)) out += "%" + HEX[byte >> 4] + HEX[byte & 15];
    }
  }
  return out;
}

const hexValue = (c) => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1);

function percentDecodeBytes(bytes) {
  const out = new Uint8Array(bytes.length);
  let o = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x25 && i + 2 < bytes.length && hexValue(bytes[i + 1]) >= 0 && hexValue(bytes[i + 2]) >= 0) {
      out[o++] = hexValue(bytes[i + 1]) * 16 + hexValue(bytes[i + 2]);
      i += 2;
    } else {
      out[o++] = b;
    }
  }
  return out.subarray(0, o);
}

const percentDecodeString = (text) => percentDecodeBytes(host.utf8Encode(text));

// ---- hosts ----

class URLError extends TypeError {}
const failure = () => { throw new URLError("Invalid URL string."); };

const FORBIDDEN_HOST = new Set([0x00, 0x09, 0x0a, 0x0d, 0x20, 0x23, 0x2f, 0x3a, 0x3c, 0x3e, 0x3f, 0x40, 0x5b, 0x5c, 0x5d, 0x5e, 0x7c]);
const isForbiddenHost = (c) => FORBIDDEN_HOST.has(c);
const isForbiddenDomain = (c) => isForbiddenHost(c) || C0_CONTROL(c) || c === 0x25 || c === 0x7f;

function parseIPv6(input) {
  const address = [0, 0, 0, 0, 0, 0, 0, 0];
  let pieceIndex = 0;
  let compress = null;
  let pointer = 0;
  const codes = Array.from(input, (ch) => ch.codePointAt(0));
  const c = () => codes[pointer];
  const isHex = (x) => x !== undefined && hexValue(x) >= 0;
  const isDigit = (x) => x !== undefined && x >= 0x30 && x <= 0x39;
  if (c() === 0x3a) {
    if (codes[pointer + 1] !== 0x3a) failure();
    pointer += 2;
    pieceIndex++;
    compress = pieceIndex;
  }
  while (c() !== undefined) {
    if (pieceIndex === 8) failure();
    if (c() === 0x3a) {
      if (compress !== null) failure();
      pointer++;
      pieceIndex++;
      compress = pieceIndex;
      continue;
    }
    let value = 0;
    let length = 0;
    while (length < 4 && isHex(c())) {
      value = value * 16 + hexValue(c());
      pointer++;
      length++;
    }
    if (c() === 0x2e) {
      if (length === 0) failure();
      pointer -= length;
      if (pieceIndex > 6) failure();
      let numbersSeen = 0;
      while (c() !== undefined) {
        let ipv4Piece = null;
        if (numbersSeen > 0) {
          if (c() === 0x2e && numbersSeen < 4) pointer++;
          else failure();
        }
        if (!isDigit(c())) failure();
        while (isDigit(c())) {
          const number = c() - 0x30;
          if (ipv4Piece === null) ipv4Piece = number;
          else if (ipv4Piece === 0) failure();
          else ipv4Piece = ipv4Piece * 10 + number;
          if (ipv4Piece > 255) failure();
          pointer++;
        }
        address[pieceIndex] = address[pieceIndex] * 0x100 + ipv4Piece;
        numbersSeen++;
        if (numbersSeen === 2 || numbersSeen === 4) pieceIndex++;
      }
      if (numbersSeen !== 4) failure();
      break;
    } else if (c() === 0x3a) {
      pointer++;
      if (c() === undefined) failure();
    } else if (c() !== undefined) {
      failure();
    }
    address[pieceIndex] = value;
    pieceIndex++;
  }
  if (compress !== null) {
    let swaps = pieceIndex - compress;
    pieceIndex = 7;
    while (pieceIndex !== 0 && swaps > 0) {
      const other = compress + swaps - 1;
      [address[pieceIndex], address[other]] = [address[other], address[pieceIndex]];
      pieceIndex--;
      swaps--;
    }
  } else if (pieceIndex !== 8) {
    failure();
  }
  return address;
}

function serializeIPv6(address) {
  // the first longest run of two or more zero pieces is compressed
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (address[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && address[j] === 0) j++;
    if (j - i > bestLength) { best = i; bestLength = j - i; }
    i = j;
  }
  let out = "";
  let ignore0 = false;
  for (let i = 0; i < 8; i++) {
    if (ignore0 && address[i] === 0) continue;
    ignore0 = false;
    if (best === i) {
      out += i === 0 ? "::" : ":";
      ignore0 = true;
      continue;
    }
    out += address[i].toString(16);
    if (i !== 7) out += ":";
  }
  return "[" + out + "]";
}

function parseIPv4Number(text) {
  if (text === "") return NaN;
  let radix = 10;
  if (text.length >= 2 && (text.startsWith("0x") || text.startsWith("0X"))) {
    text = text.slice(2);
    radix = 16;
  } else if (text.length >= 2 && text[0] === "0") {
    text = text.slice(1);
    radix = 8;
  }
  if (text === "") return 0;
  const valid = radix === 10 ? /^[0-9]+$/ : radix === 16 ? /^[0-9a-fA-F]+$/ : /^[0-7]+$/;
  if (!valid.test(text)) return NaN;
  return parseInt(text, radix);
}

function endsInNumber(domain) {
  const parts = domain.split(".");
  if (parts[parts.length - 1] === "") {
    if (parts.length === 1) return false;
    parts.pop();
  }
  const last = parts[parts.length - 1];
  if (last !== "" && /^[0-9]+$/.test(last)) return true;
  return !Number.isNaN(parseIPv4Number(last));
}

function parseIPv4(domain) {
  const parts = domain.split(".");
  if (parts[parts.length - 1] === "" && parts.length > 1) parts.pop();
  if (parts.length > 4) failure();
  const numbers = parts.map((part) => {
    const n = parseIPv4Number(part);
    if (Number.isNaN(n)) failure();
    return n;
  });
  for (let i = 0; i < numbers.length - 1; i++) if (numbers[i] > 255) failure();
  if (numbers[numbers.length - 1] >= 256 ** (5 - numbers.length)) failure();
  let ipv4 = numbers[numbers.length - 1];
  for (let i = 0; i < numbers.length - 1; i++) ipv4 += numbers[i] * 256 ** (3 - i);
  return ipv4;
}

const serializeIPv4 = (n) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");

// Punycode (RFC 3492) encoding of one label.
function punycodeLabel(label) {
  const base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700;
  const codes = Array.from(label, (ch) => ch.codePointAt(0));
  let output = codes.filter((c) => c < 0x80).map((c) => String.fromCharCode(c)).join("");
  const basicLength = output.length;
  let handled = basicLength;
  if (basicLength > 0) output += "-";
  let n = 128, delta = 0, bias = 72;
  const adapt = (d, numPoints, first) => {
    d = first ? Math.floor(d / damp) : d >> 1;
    d += Math.floor(d / numPoints);
    let k = 0;
    while (d > ((base - tMin) * tMax) >> 1) {
      d = Math.floor(d / (base - tMin));
      k += base;
    }
    return k + Math.floor(((base - tMin + 1) * d) / (d + skew));
  };
  const digit = (d) => String.fromCharCode(d + 22 + 75 * (d < 26));
  while (handled < codes.length) {
    const m = Math.min(...codes.filter((c) => c >= n));
    delta += (m - n) * (handled + 1);
    n = m;
    for (const c of codes) {
      if (c < n) delta++;
      if (c === n) {
        let q = delta;
        for (let k = base; ; k += base) {
          const t = k <= bias ? tMin : k >= bias + tMax ? tMax : k - bias;
          if (q < t) break;
          output += digit(t + ((q - t) % (base - t)));
          q = Math.floor((q - t) / (base - t));
        }
        output += digit(q);
        bias = adapt(delta, handled + 1, handled === basicLength);
        delta = 0;
        handled++;
      }
    }
    delta++;
    n++;
  }
  return "xn--" + output;
}

function domainToASCII(domain) {
  // UTS 46 lite: lower-case, NFC, the ideographic full stops as dots, punycode for non-ASCII labels
  domain = domain.normalize("NFC").toLowerCase().replace(/[\u3002\uff0e\uff61]/g, ".");
  if (/^[\x00-\x7f]*$/.test(domain)) return domain;
  return domain.split(".").map((label) => (/^[\x00-\x7f]*$/.test(label) ? label : punycodeLabel(label))).join(".");
}

function parseHost(input, isOpaque) {
  if (input.startsWith("[")) {
    if (!input.endsWith("]")) failure();
    return serializeIPv6(parseIPv6(input.slice(1, -1)));
  }
  if (isOpaque) {
    for (const ch of input) if (isForbiddenHost(ch.codePointAt(0))) failure();
    return percentEncode(input, C0_CONTROL);
  }
  const domain = decodeUtf8(percentDecodeString(input));
  const ascii = domainToASCII(domain);
  if (ascii === "") failure();
  for (let i = 0; i < ascii.length; i++) if (isForbiddenDomain(ascii.charCodeAt(i))) failure();
  if (endsInNumber(ascii)) return serializeIPv4(parseIPv4(ascii));
  return ascii;
}

// ---- the parser ----

const ALPHA = (c) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const DIGIT = (c) => c >= 0x30 && c <= 0x39;
const isWindowsDriveLetter = (s, normalizedOnly) =>
  s.length === 2 && ALPHA(s.charCodeAt(0)) && (s[1] === ":" || (!normalizedOnly && s[1] === "|"));
const startsWithWindowsDriveLetter = (codes, p) =>
  codes.length - p >= 2 && ALPHA(codes[p]) && (codes[p + 1] === 0x3a || codes[p + 1] === 0x7c) &&
  (codes.length - p === 2 || [0x2f, 0x5c, 0x3f, 0x23].includes(codes[p + 2]));
const isSingleDot = (s) => s === "." || s.toLowerCase() === "%2e";
const isDoubleDot = (s) => ["..", ".%2e", "%2e.", "%2e%2e"].includes(s.toLowerCase());

function newRecord() {
  return { scheme: "", username: "", password: "", host: null, port: null, path: [], opaque: false, query: null, fragment: null };
}

function shortenPath(url) {
  if (url.scheme === "file" && url.path.length === 1 && isWindowsDriveLetter(url.path[0], true)) return;
  url.path.pop();
}

const S = {
  SCHEME_START: 1, SCHEME: 2, NO_SCHEME: 3, SPECIAL_RELATIVE_OR_AUTHORITY: 4, PATH_OR_AUTHORITY: 5, RELATIVE: 6,
  RELATIVE_SLASH: 7, SPECIAL_AUTHORITY_SLASHES: 8, SPECIAL_AUTHORITY_IGNORE_SLASHES: 9, AUTHORITY: 10, HOST: 11,
  HOSTNAME: 12, PORT: 13, FILE: 14, FILE_SLASH: 15, FILE_HOST: 16, PATH_START: 17, PATH: 18, OPAQUE_PATH: 19,
  QUERY: 20, FRAGMENT: 21,
};

// Returns the URL record, or throws URLError. With `url` and `override`, changes that record in place
// (the setters); a state override that does not apply returns quietly.
function basicParse(input, base, url, override) {
  if (!url) {
    url = newRecord();
    input = input.replace(/^[\x00-\x20]+|[\x00-\x20]+$/g, "");
  }
  input = input.replace(/[\t\n\r]/g, "");
  let state = override || S.SCHEME_START;
  let buffer = "";
  let atSignSeen = false, insideBrackets = false, passwordTokenSeen = false;
  const codes = Array.from(input, (ch) => ch.codePointAt(0));
  const chars = Array.from(input);
  for (let pointer = 0; pointer <= codes.length; pointer++) {
    const c = codes[pointer];
    const ch = chars[pointer];
    switch (state) {
      case S.SCHEME_START:
        if (c !== undefined && ALPHA(c)) {
          buffer += ch.toLowerCase();
          state = S.SCHEME;
        } else if (!override) {
          state = S.NO_SCHEME;
          pointer--;
        } else {
          return url;
        }
        break;
      case S.SCHEME:
        if (c !== undefined && (ALPHA(c) || DIGIT(c) || c === 0x2b || c === 0x2d || c === 0x2e)) {
          buffer += ch.toLowerCase();
        } else if (c === 0x3a) {
          if (override) {
            if (isSpecialScheme(url.scheme) !== isSpecialScheme(buffer)) return url;
            if ((url.username || url.password || url.port !== null) && buffer === "file") return url;
            if (url.scheme === "file" && url.host === "") return url;
          }
          url.scheme = buffer;
          if (override) {
            if (url.port === SPECIAL_SCHEMES[url.scheme]) url.port = null;
            return url;
          }
          buffer = "";
          if (url.scheme === "file") {
            state = S.FILE;
          } else if (isSpecialScheme(url.scheme) && base && base.scheme === url.scheme) {
            state = S.SPECIAL_RELATIVE_OR_AUTHORITY;
          } else if (isSpecialScheme(url.scheme)) {
            state = S.SPECIAL_AUTHORITY_SLASHES;
          } else if (codes[pointer + 1] === 0x2f) {
            state = S.PATH_OR_AUTHORITY;
            pointer++;
          } else {
            url.opaque = true;
            url.path = "";
            state = S.OPAQUE_PATH;
          }
        } else if (!override) {
          buffer = "";
          state = S.NO_SCHEME;
          pointer = -1;
        } else {
          failure();
        }
        break;
      case S.NO_SCHEME:
        if (!base || (base.opaque && c !== 0x23)) failure();
        if (base.opaque && c === 0x23) {
          url.scheme = base.scheme;
          url.path = base.path;
          url.opaque = true;
          url.query = base.query;
          url.fragment = "";
          state = S.FRAGMENT;
        } else if (base.scheme !== "file") {
          state = S.RELATIVE;
          pointer--;
        } else {
          state = S.FILE;
          pointer--;
        }
        break;
      case S.SPECIAL_RELATIVE_OR_AUTHORITY:
        if (c === 0x2f && codes[pointer + 1] === 0x2f) {
          state = S.SPECIAL_AUTHORITY_IGNORE_SLASHES;
          pointer++;
        } else {
          state = S.RELATIVE;
          pointer--;
        }
        break;
      case S.PATH_OR_AUTHORITY:
        if (c === 0x2f) state = S.AUTHORITY;
        else {
          state = S.PATH;
          pointer--;
        }
        break;
      case S.RELATIVE:
        url.scheme = base.scheme;
        if (c === 0x2f) state = S.RELATIVE_SLASH;
        else if (isSpecialScheme(url.scheme) && c === 0x5c) state = S.RELATIVE_SLASH;
        else {
          url.username = base.username;
          url.password = base.password;
          url.host = base.host;
          url.port = base.port;
          url.path = base.path.slice();
          url.query = base.query;
          if (c === 0x3f) {
            url.query = "";
            state = S.QUERY;
          } else if (c === 0x23) {
            url.fragment = "";
            state = S.FRAGMENT;
          } else if (c !== undefined) {
            url.query = null;
            shortenPath(url);
            state = S.PATH;
            pointer--;
          }
        }
        break;
      case S.RELATIVE_SLASH:
        if (isSpecialScheme(url.scheme) && (c === 0x2f || c === 0x5c)) {
          state = S.SPECIAL_AUTHORITY_IGNORE_SLASHES;
        } else if (c === 0x2f) {
          state = S.AUTHORITY;
        } else {
          url.username = base.username;
          url.password = base.password;
          url.host = base.host;
          url.port = base.port;
          state = S.PATH;
          pointer--;
        }
        break;
      case S.SPECIAL_AUTHORITY_SLASHES:
        if (c === 0x2f && codes[pointer + 1] === 0x2f) {
          state = S.SPECIAL_AUTHORITY_IGNORE_SLASHES;
          pointer++;
        } else {
          state = S.SPECIAL_AUTHORITY_IGNORE_SLASHES;
          pointer--;
        }
        break;
      case S.SPECIAL_AUTHORITY_IGNORE_SLASHES:
        if (c !== 0x2f && c !== 0x5c) {
          state = S.AUTHORITY;
          pointer--;
        }
        break;
      case S.AUTHORITY:
        if (c === 0x40) {
          if (atSignSeen) buffer = "%40" + buffer;
          atSignSeen = true;
          for (const bch of buffer) {
            if (bch === ":" && !passwordTokenSeen) {
              passwordTokenSeen = true;
              continue;
            }
            const encoded = percentEncode(bch, USERINFO_SET);
            if (passwordTokenSeen) url.password += encoded;
            else url.username += encoded;
          }
          buffer = "";
        } else if (c === undefined || c === 0x2f || c === 0x3f || c === 0x23 || (isSpecialScheme(url.scheme) && c === 0x5c)) {
          if (atSignSeen && buffer === "") failure();
          pointer -= Array.from(buffer).length + 1;
          buffer = "";
          state = S.HOST;
        } else {
          buffer += ch;
        }
        break;
      case S.HOST:
      case S.HOSTNAME:
        if (override && url.scheme === "file") {
          pointer--;
          state = S.FILE_HOST;
        } else if (c === 0x3a && !insideBrackets) {
          if (buffer === "") failure();
          if (override === S.HOSTNAME) return url;
          url.host = parseHost(buffer, !isSpecialScheme(url.scheme));
          buffer = "";
          state = S.PORT;
        } else if (c === undefined || c === 0x2f || c === 0x3f || c === 0x23 || (isSpecialScheme(url.scheme) && c === 0x5c)) {
          pointer--;
          if (isSpecialScheme(url.scheme) && buffer === "") failure();
          else if (override && buffer === "" && (url.username || url.password || url.port !== null)) return url;
          url.host = parseHost(buffer, !isSpecialScheme(url.scheme));
          buffer = "";
          state = S.PATH_START;
          if (override) return url;
        } else {
          if (c === 0x5b) insideBrackets = true;
          if (c === 0x5d) insideBrackets = false;
          buffer += ch;
        }
        break;
      case S.PORT:
        if (c !== undefined && DIGIT(c)) {
          buffer += ch;
        } else if (c === undefined || c === 0x2f || c === 0x3f || c === 0x23 || (isSpecialScheme(url.scheme) && c === 0x5c) || override) {
          if (buffer !== "") {
            const port = parseInt(buffer, 10);
            if (port > 65535) failure();
            url.port = SPECIAL_SCHEMES[url.scheme] === port ? null : port;
            buffer = "";
          }
          if (override) return url;
          state = S.PATH_START;
          pointer--;
        } else {
          failure();
        }
        break;
      case S.FILE:
        url.scheme = "file";
        url.host = "";
        if (c === 0x2f || c === 0x5c) {
          state = S.FILE_SLASH;
        } else if (base && base.scheme === "file") {
          url.host = base.host;
          url.path = base.path.slice();
          url.query = base.query;
          if (c === 0x3f) {
            url.query = "";
            state = S.QUERY;
          } else if (c === 0x23) {
            url.fragment = "";
            state = S.FRAGMENT;
          } else if (c !== undefined) {
            url.query = null;
            if (!startsWithWindowsDriveLetter(codes, pointer)) shortenPath(url);
            else url.path = [];
            state = S.PATH;
            pointer--;
          }
        } else {
          state = S.PATH;
          pointer--;
        }
        break;
      case S.FILE_SLASH:
        if (c === 0x2f || c === 0x5c) {
          state = S.FILE_HOST;
        } else {
          if (base && base.scheme === "file") {
            url.host = base.host;
            if (!startsWithWindowsDriveLetter(codes, pointer) && base.path.length > 0 && isWindowsDriveLetter(base.path[0], true)) {
              url.path.push(base.path[0]);
            }
          }
          state = S.PATH;
          pointer--;
        }
        break;
      case S.FILE_HOST:
        if (c === undefined || c === 0x2f || c === 0x5c || c === 0x3f || c === 0x23) {
          pointer--;
          if (!override && isWindowsDriveLetter(buffer, false)) {
            state = S.PATH;
          } else if (buffer === "") {
            url.host = "";
            if (override) return url;
            state = S.PATH_START;
          } else {
            let parsed = parseHost(buffer, false);
            if (parsed === "localhost") parsed = "";
            url.host = parsed;
            if (override) return url;
            buffer = "";
            state = S.PATH_START;
          }
        } else {
          buffer += ch;
        }
        break;
      case S.PATH_START:
        if (isSpecialScheme(url.scheme)) {
          state = S.PATH;
          if (c !== 0x2f && c !== 0x5c) pointer--;
        } else if (!override && c === 0x3f) {
          url.query = "";
          state = S.QUERY;
        } else if (!override && c === 0x23) {
          url.fragment = "";
          state = S.FRAGMENT;
        } else if (c !== undefined) {
          state = S.PATH;
          if (c !== 0x2f) pointer--;
        } else if (override && url.host === null) {
          url.path.push("");
        }
        break;
      case S.PATH:
        if (c === undefined || c === 0x2f || (isSpecialScheme(url.scheme) && c === 0x5c) || (!override && (c === 0x3f || c === 0x23))) {
          if (isDoubleDot(buffer)) {
            shortenPath(url);
            if (c !== 0x2f && !(isSpecialScheme(url.scheme) && c === 0x5c)) url.path.push("");
          } else if (isSingleDot(buffer) && c !== 0x2f && !(isSpecialScheme(url.scheme) && c === 0x5c)) {
            url.path.push("");
          } else if (!isSingleDot(buffer)) {
            if (url.scheme === "file" && url.path.length === 0 && isWindowsDriveLetter(buffer, false)) buffer = buffer[0] + ":";
            url.path.push(buffer);
          }
          buffer = "";
          if (c === 0x3f) {
            url.query = "";
            state = S.QUERY;
          }
          if (c === 0x23) {
            url.fragment = "";
            state = S.FRAGMENT;
          }
        } else {
          buffer += percentEncode(ch, PATH_SET);
        }
        break;
      case S.OPAQUE_PATH:
        if (c === 0x3f) {
          url.query = "";
          state = S.QUERY;
        } else if (c === 0x23) {
          url.fragment = "";
          state = S.FRAGMENT;
        } else if (c === 0x20) {
          const next = codes[pointer + 1];
          url.path += next === 0x3f || next === 0x23 ? "%20" : " ";
        } else if (c !== undefined) {
          url.path += percentEncode(ch, C0_CONTROL);
        }
        break;
      case S.QUERY:
        if ((!override && c === 0x23) || c === undefined) {
          url.query += percentEncode(buffer, isSpecialScheme(url.scheme) ? SPECIAL_QUERY_SET : QUERY_SET);
          buffer = "";
          if (c === 0x23) {
            url.fragment = "";
            state = S.FRAGMENT;
          }
        } else {
          buffer += ch;
        }
        break;
      case S.FRAGMENT:
        if (c !== undefined) url.fragment += percentEncode(ch, FRAGMENT_SET);
        break;
    }
  }
  return url;
}

function serializePath(url) {
  if (url.opaque) return url.path;
  let out = "";
  if (url.host === null && url.path.length > 1 && url.path[0] === "") out += "/.";
  for (const segment of url.path) out += "/" + segment;
  return out;
}

function serializeURL(url, excludeFragment = false) {
  let out = url.scheme + ":";
  if (url.host !== null) {
    out += "//";
    if (url.username || url.password) {
      out += url.username;
      if (url.password) out += ":" + url.password;
      out += "@";
    }
    out += url.host;
    if (url.port !== null) out += ":" + url.port;
  }
  out += serializePath(url);
  if (url.query !== null) out += "?" + url.query;
  if (!excludeFragment && url.fragment !== null) out += "#" + url.fragment;
  return out;
}

function parseURL(text, baseText) {
  let base = null;
  if (baseText !== undefined) base = basicParse(String(baseText), null);
  return basicParse(String(text), base);
}

// ---- URLSearchParams ----

function parseForm(text) {
  const list = [];
  for (const sequence of text.split("&")) {
    if (sequence === "") continue;
    const eq = sequence.indexOf("=");
    const name = eq >= 0 ? sequence.slice(0, eq) : sequence;
    const value = eq >= 0 ? sequence.slice(eq + 1) : "";
    list.push([
      decodeUtf8(percentDecodeString(name.replace(/\+/g, " "))),
      decodeUtf8(percentDecodeString(value.replace(/\+/g, " "))),
    ]);
  }
  return list;
}

const serializeForm = (list) =>
  list.map(([name, value]) => percentEncode(name, FORM_SET, true) + "=" + percentEncode(value, FORM_SET, true)).join("&");

const toUSVString = (value) => String(value).toWellFormed();

class URLSearchParams {
  #list = [];
  #url = null;
  constructor(init = "") {
    if (init instanceof URLSearchParams) {
      this.#list = init.#list.map((pair) => pair.slice());
    } else if (typeof init === "object" && init !== null || typeof init === "function") {
      if (typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const items = Array.from(pair);
          if (items.length !== 2) throw new TypeError("Invalid URL search params sequence.");
          this.#list.push([toUSVString(items[0]), toUSVString(items[1])]);
        }
      } else {
        for (const key of Reflect.ownKeys(init)) {
          if (typeof key !== "string") continue;
          const desc = Reflect.getOwnPropertyDescriptor(init, key);
          if (desc && desc.enumerable) this.#list.push([toUSVString(key), toUSVString(init[key])]);
        }
      }
    } else {
      init = toUSVString(init);
      this.#list = parseForm(init.startsWith("?") ? init.slice(1) : init);
    }
  }
  static [kInternal](url, query) {
    const params = new URLSearchParams(query || "");
    params.#url = url;
    return params;
  }
  [kInternal](query) { this.#list = query ? parseForm(query) : []; }
  #update() {
    if (!this.#url) return;
    const text = serializeForm(this.#list);
    this.#url[kInternal].query = text === "" ? null : text;
    if (text === "") this.#url[kStripSpaces]();
  }
  get size() { return this.#list.length; }
  append(name, value) {
    if (arguments.length < 2) throw new TypeError("Failed to execute 'append' on 'URLSearchParams': 2 arguments required.");
    this.#list.push([toUSVString(name), toUSVString(value)]);
    this.#update();
  }
  delete(name, value) {
    name = toUSVString(name);
    if (value === undefined) this.#list = this.#list.filter(([n]) => n !== name);
    else {
      value = toUSVString(value);
      this.#list = this.#list.filter(([n, v]) => n !== name || v !== value);
    }
    this.#update();
  }
  get(name) {
    name = toUSVString(name);
    const pair = this.#list.find(([n]) => n === name);
    return pair ? pair[1] : null;
  }
  getAll(name) {
    name = toUSVString(name);
    return this.#list.filter(([n]) => n === name).map(([, v]) => v);
  }
  has(name, value) {
    name = toUSVString(name);
    if (value === undefined) return this.#list.some(([n]) => n === name);
    value = toUSVString(value);
    return this.#list.some(([n, v]) => n === name && v === value);
  }
  set(name, value) {
    name = toUSVString(name);
    value = toUSVString(value);
    const index = this.#list.findIndex(([n]) => n === name);
    if (index < 0) this.#list.push([name, value]);
    else {
      this.#list[index][1] = value;
      this.#list = this.#list.filter(([n], i) => n !== name || i === index);
    }
    this.#update();
  }
  sort() {
    // stable sort by code units of the name
    this.#list = this.#list.map((pair, i) => [pair, i]).sort((a, b) => (a[0][0] < b[0][0] ? -1 : a[0][0] > b[0][0] ? 1 : a[1] - b[1])).map(([pair]) => pair);
    this.#update();
  }
  forEach(callback, thisArg) {
    if (typeof callback !== "function") throw new TypeError("The \"callback\" argument must be a function.");
    for (let i = 0; i < this.#list.length; i++) callback.call(thisArg, this.#list[i][1], this.#list[i][0], this);
  }
  entries() { return this.#live((pair) => [pair[0], pair[1]]); }
  keys() { return this.#live((pair) => pair[0]); }
  values() { return this.#live((pair) => pair[1]); }
  // iteration sees edits made while it runs, as the spec's live list
  #live(pick) {
    let index = 0;
    return apiIterator(() => (index < this.#list.length ? { value: pick(this.#list[index++]), done: false } : { value: undefined, done: true }));
  }
  [Symbol.iterator]() { return this.entries(); }
  toString() { return serializeForm(this.#list); }
}

// ---- URL ----

class URL {
  #params;
  constructor(url, base) {
    if (arguments.length === 0) throw new TypeError("Failed to construct 'URL': 1 argument required, but only 0 present.");
    try {
      this[kInternal] = parseURL(url, base);
    } catch (error) {
      if (error instanceof URLError) throw new TypeError("Invalid URL string.");
      throw error;
    }
    this.#params = URLSearchParams[kInternal](this, this[kInternal].query);
  }
  static canParse(url, base) {
    try {
      parseURL(url, base);
      return true;
    } catch {
      return false;
    }
  }
  static parse(url, base) {
    try {
      return new URL(url, base);
    } catch {
      return null;
    }
  }
  [kStripSpaces]() {
    const url = this[kInternal];
    if (!url.opaque || url.fragment !== null || url.query !== null) return;
    url.path = url.path.replace(/ +$/, "");
  }
  get href() { return serializeURL(this[kInternal]); }
  set href(value) {
    let parsed;
    try {
      parsed = parseURL(value);
    } catch {
      throw new TypeError("Invalid URL string.");
    }
    this[kInternal] = parsed;
    this.#params[kInternal](parsed.query);
  }
  get origin() {
    const url = this[kInternal];
    if (url.scheme === "blob") {
      try {
        const inner = parseURL(url.path);
        if (inner.scheme === "http" || inner.scheme === "https") return new URL(serializeURL(inner)).origin;
      } catch {}
      return "null";
    }
    if (["http", "https", "ws", "wss", "ftp"].includes(url.scheme)) {
      return url.scheme + "://" + url.host + (url.port !== null ? ":" + url.port : "");
    }
    return "null";
  }
  get protocol() { return this[kInternal].scheme + ":"; }
  set protocol(value) { try { basicParse(String(value) + ":", null, this[kInternal], S.SCHEME_START); } catch {} }
  get username() { return this[kInternal].username; }
  set username(value) {
    const url = this[kInternal];
    if (url.host === null || url.host === "" || url.scheme === "file") return;
    url.username = percentEncode(String(value), USERINFO_SET);
  }
  get password() { return this[kInternal].password; }
  set password(value) {
    const url = this[kInternal];
    if (url.host === null || url.host === "" || url.scheme === "file") return;
    url.password = percentEncode(String(value), USERINFO_SET);
  }
  get host() {
    const url = this[kInternal];
    if (url.host === null) return "";
    return url.port === null ? url.host : url.host + ":" + url.port;
  }
  set host(value) {
    if (this[kInternal].opaque) return;
    try { basicParse(String(value), null, this[kInternal], S.HOST); } catch {}
  }
  get hostname() { return this[kInternal].host === null ? "" : this[kInternal].host; }
  set hostname(value) {
    if (this[kInternal].opaque) return;
    try { basicParse(String(value), null, this[kInternal], S.HOSTNAME); } catch {}
  }
  get port() { return this[kInternal].port === null ? "" : String(this[kInternal].port); }
  set port(value) {
    const url = this[kInternal];
    if (url.host === null || url.host === "" || url.scheme === "file") return;
    value = String(value);
    if (value === "") url.port = null;
    else try { basicParse(value, null, url, S.PORT); } catch {}
  }
  get pathname() { return serializePath(this[kInternal]); }
  set pathname(value) {
    const url = this[kInternal];
    if (url.opaque) return;
    url.path = [];
    try { basicParse(String(value), null, url, S.PATH_START); } catch {}
  }
  get search() {
    const query = this[kInternal].query;
    return query === null || query === "" ? "" : "?" + query;
  }
  set search(value) {
    const url = this[kInternal];
    value = String(value);
    if (value === "") {
      url.query = null;
      this.#params[kInternal]("");
      this[kStripSpaces]();
      return;
    }
    const input = value.startsWith("?") ? value.slice(1) : value;
    url.query = "";
    try { basicParse(input, null, url, S.QUERY); } catch {}
    this.#params[kInternal](input);
  }
  get searchParams() { return this.#params; }
  get hash() {
    const fragment = this[kInternal].fragment;
    return fragment === null || fragment === "" ? "" : "#" + fragment;
  }
  set hash(value) {
    const url = this[kInternal];
    value = String(value);
    if (value === "") {
      url.fragment = null;
      this[kStripSpaces]();
      return;
    }
    url.fragment = "";
    try { basicParse(value.startsWith("#") ? value.slice(1) : value, null, url, S.FRAGMENT); } catch {}
  }
  toString() { return this.href; }
  toJSON() { return this.href; }
}

defineGlobal("URL", URL);
defineGlobal("URLSearchParams", URLSearchParams);
