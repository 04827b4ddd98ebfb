// structuredClone (the HTML structured clone algorithm, without transfer of platform objects).

const ERROR_TYPES = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };

function structuredCloneValue(value, transfer = []) {
  const memory = new Map();
  const transferred = new Map();
  for (const buffer of transfer) {
    if (!(buffer instanceof ArrayBuffer)) throw new TypeError("Object is not transferable");
    transferred.set(buffer, null);
  }
  const cloneError = (what) => domException(`${what} could not be cloned.`, "DataCloneError");
  const visit = (input) => {
    if (input === null || (typeof input !== "object" && typeof input !== "function" && typeof input !== "symbol")) return input;
    if (typeof input === "symbol") throw cloneError(String(input));
    if (typeof input === "function") throw cloneError(`${Function.prototype.toString.call(input).slice(0, 60)}`);
    if (memory.has(input)) return memory.get(input);
    let output;
    if (input instanceof ArrayBuffer) {
      if (transferred.has(input)) {
        output = input.transfer();
      } else {
        output = input.slice(0);
      }
      memory.set(input, output);
      return output;
    }
    if (ArrayBuffer.isView(input)) {
      const buffer = visit(input.buffer);
      output = input instanceof DataView
        ? new DataView(buffer, input.byteOffset, input.byteLength)
        : new input.constructor(buffer, input.byteOffset, input.length);
      memory.set(input, output);
      return output;
    }
    if (input instanceof Date) output = new Date(input.getTime());
    else if (input instanceof RegExp) output = new RegExp(input.source, input.flags);
    else if (input instanceof Boolean) output = new Boolean(input.valueOf());
    else if (input instanceof Number) output = new Number(input.valueOf());
    else if (input instanceof String) output = new String(input.valueOf());
    else if (typeof BigInt !== "undefined" && input instanceof BigInt) output = Object(input.valueOf());
    if (output !== undefined) {
      memory.set(input, output);
      return output;
    }
    if (input instanceof Blob) {
      const parts = [Blob[kInternal](input)];
      output = input instanceof File ? new File(parts, input.name, { type: input.type, lastModified: input.lastModified }) : new Blob(parts, { type: input.type });
      memory.set(input, output);
      return output;
    }
    if (input instanceof Map) {
      output = new Map();
      memory.set(input, output);
      for (const [k, v] of input) output.set(visit(k), visit(v));
      return output;
    }
    if (input instanceof Set) {
      output = new Set();
      memory.set(input, output);
      for (const v of input) output.add(visit(v));
      return output;
    }
    if (input instanceof Error) {
      const name = Object.prototype.hasOwnProperty.call(ERROR_TYPES, input.name) ? input.name : "Error";
      output = new ERROR_TYPES[name](input.message);
      memory.set(input, output);
      if (input.stack !== undefined) Object.defineProperty(output, "stack", { value: String(input.stack), writable: true, configurable: true });
      if ("cause" in input) output.cause = visit(input.cause);
      return output;
    }
    if (Array.isArray(input)) {
      output = new Array(input.length);
      memory.set(input, output);
      for (const key of Object.keys(input)) output[key] = visit(input[key]);
      return output;
    }
    const tag = Object.prototype.toString.call(input);
    if (tag !== "[object Object]" || input instanceof Promise || input instanceof WeakMap || input instanceof WeakSet ||
        input instanceof ReadableStream) {
      const name = input.constructor && input.constructor.name ? input.constructor.name : tag.slice(8, -1);
      throw cloneError(`#<${name}>`);
    }
    output = {};
    memory.set(input, output);
    for (const key of Object.keys(input)) output[key] = visit(input[key]);
    return output;
  };
  const result = visit(value);
  return result;
}

function structuredClone(...args) {
  const [value, options] = args;
  if (args.length === 0) throw new TypeError("Failed to execute 'structuredClone' on 'ServiceWorkerGlobalScope': parameter 1 is not of type 'Value'.");
  const transfer = options && options.transfer !== undefined ? Array.from(options.transfer) : [];
  return structuredCloneValue(value, transfer);
}

defineGlobal("structuredClone", structuredClone);
