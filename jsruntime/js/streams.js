// ReadableStream (default and byte sources, default and BYOB readers, tee, pipes, async iteration),
// WritableStream, TransformStream. Queues are unbounded on the writable side: a write resolves once
// its chunk is transformed and queued, so a Worker that writes before returning its Response never
// deadlocks; the instance's memory limit bounds what it can buffer.

const noop = () => {};

function settledPromise() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  promise.catch(noop);
  return { promise, resolve, reject };
}

class ReadableStreamDefaultController {
  constructor(key, stream) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
    this[kInternal] = stream;
  }
  get desiredSize() { return this[kInternal][kInternal].desiredSize(); }
  enqueue(chunk) { this[kInternal][kInternal].enqueue(chunk); }
  close() { this[kInternal][kInternal].close(); }
  error(reason) { this[kInternal][kInternal].error(reason); }
}

class ReadableByteStreamController extends ReadableStreamDefaultController {
  get byobRequest() { return null; }
  enqueue(chunk) {
    if (!ArrayBuffer.isView(chunk)) throw new TypeError("The chunk must be an ArrayBufferView.");
    super.enqueue(chunk);
  }
}

class ReadableStream {
  constructor(source = undefined, strategy = {}) {
    source = source === undefined || source === null ? {} : source;
    const isBytes = source.type === "bytes";
    if (source.type !== undefined && !isBytes) throw new RangeError(`Invalid type: ${source.type}`);
    const highWaterMark = strategy && strategy.highWaterMark !== undefined ? Number(strategy.highWaterMark) : isBytes ? 0 : 1;
    const size = strategy && typeof strategy.size === "function" ? strategy.size : () => 1;
    const stream = this;
    const state = {
      state: "readable", queue: [], queueSize: 0, error: undefined, reader: null, disturbed: false,
      started: false, pulling: false, pullAgain: false, closeRequested: false, isBytes,
      closed: settledPromise(),
      desiredSize() {
        if (state.state === "errored") return null;
        if (state.state === "closed") return 0;
        return highWaterMark - state.queueSize;
      },
      enqueue(chunk) {
        if (state.closeRequested || state.state !== "readable") throw new TypeError("Unable to enqueue");
        const reader = state.reader;
        if (reader && reader[kInternal].requests.length > 0) {
          reader[kInternal].fulfil(chunk);
        } else {
          state.queue.push(chunk);
          state.queueSize += isBytes ? chunk.byteLength : size(chunk);
        }
        state.pullIfNeeded();
      },
      close() {
        if (state.closeRequested || state.state !== "readable") throw new TypeError("This ReadableStream is closed.");
        state.closeRequested = true;
        if (state.queue.length === 0) state.finish();
      },
      finish() {
        state.state = "closed";
        state.closed.resolve(undefined);
        if (state.reader) state.reader[kInternal].drain(true);
      },
      error(reason) {
        if (state.state !== "readable") return;
        state.state = "errored";
        state.error = reason;
        state.queue = [];
        state.queueSize = 0;
        state.closed.reject(reason);
        if (state.reader) state.reader[kInternal].drain(false);
      },
      shift() {
        const chunk = state.queue.shift();
        state.queueSize -= isBytes ? chunk.byteLength : size(chunk);
        if (state.queueSize < 0) state.queueSize = 0;
        if (state.closeRequested && state.queue.length === 0) state.finish();
        else state.pullIfNeeded();
        return chunk;
      },
      pullIfNeeded() {
        if (!state.started || state.state !== "readable" || state.closeRequested || typeof source.pull !== "function") return;
        const wanted = (state.reader && state.reader[kInternal].requests.length > 0) || state.desiredSize() > 0;
        if (!wanted) return;
        if (state.pulling) {
          state.pullAgain = true;
          return;
        }
        state.pulling = true;
        Promise.resolve()
          .then(() => source.pull.call(source, controller))
          .then(() => {
            state.pulling = false;
            if (state.pullAgain) {
              state.pullAgain = false;
              state.pullIfNeeded();
            }
          }, (reason) => state.error(reason));
      },
      cancel(reason) {
        state.disturbed = true;
        if (state.state === "closed") return Promise.resolve(undefined);
        if (state.state === "errored") return Promise.reject(state.error);
        state.queue = [];
        state.queueSize = 0;
        state.finish();
        return Promise.resolve()
          .then(() => (typeof source.cancel === "function" ? source.cancel.call(source, reason) : undefined))
          .then(() => undefined);
      },
    };
    this[kInternal] = state;
    const controller = new (isBytes ? ReadableByteStreamController : ReadableStreamDefaultController)(kInternal, stream);
    state.controller = controller;
    const started = typeof source.start === "function" ? source.start.call(source, controller) : undefined;
    Promise.resolve(started).then(() => {
      state.started = true;
      state.pullIfNeeded();
    }, (reason) => state.error(reason));
  }
  static from(iterable) {
    if (iterable instanceof ReadableStream) return iterable;
    if (iterable === null || iterable === undefined ||
        (typeof iterable[Symbol.asyncIterator] !== "function" && typeof iterable[Symbol.iterator] !== "function")) {
      throw new TypeError("Failed to execute 'from' on 'ReadableStream': parameter 1 is not of type 'AsyncGenerator'.");
    }
    const iterator = typeof iterable[Symbol.asyncIterator] === "function" ? iterable[Symbol.asyncIterator]() : iterable[Symbol.iterator]();
    return new ReadableStream({
      async pull(controller) {
        const { value, done } = await iterator.next();
        if (done) controller.close();
        else controller.enqueue(await value);
      },
      async cancel(reason) {
        if (typeof iterator.return === "function") await iterator.return(reason);
      },
    }, { highWaterMark: 0 });
  }
  get locked() { return this[kInternal].reader !== null; }
  cancel(reason) {
    if (this.locked) return Promise.reject(new TypeError("This ReadableStream is currently locked to a reader."));
    return this[kInternal].cancel(reason);
  }
  getReader(options = undefined) {
    const mode = options && options.mode;
    if (mode === "byob") {
      if (!this[kInternal].isBytes) throw new TypeError("This ReadableStream does not support BYOB reads.");
      return new ReadableStreamBYOBReader(this);
    }
    if (mode !== undefined) throw new RangeError(`Invalid mode: ${mode}`);
    return new ReadableStreamDefaultReader(this);
  }
  tee() {
    const reader = this.getReader();
    let cancelled = 0;
    let pulling = false;
    const branches = [];
    const pull = async () => {
      if (pulling) return;
      pulling = true;
      try {
        const { value, done } = await reader.read();
        for (const controller of branches) {
          if (!controller) continue;
          try {
            if (done) controller.close();
            else controller.enqueue(value);
          } catch {}
        }
      } catch (error) {
        for (const controller of branches) if (controller) controller.error(error);
      } finally {
        pulling = false;
      }
    };
    const make = (index) => new ReadableStream({
      start(controller) { branches[index] = controller; },
      pull,
      cancel(reason) {
        branches[index] = null;
        if (++cancelled === 2) return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
    return [make(0), make(1)];
  }
  async pipeTo(destination, options = {}) {
    if (this.locked) throw new TypeError("This ReadableStream is currently locked to a reader.");
    if (!(destination instanceof WritableStream)) throw new TypeError("The destination must be a WritableStream.");
    const { preventClose = false, preventAbort = false, preventCancel = false, signal } = options || {};
    const reader = this.getReader();
    const writer = destination.getWriter();
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      const reason = signal.reason;
      if (!preventCancel) reader.cancel(reason).catch(noop);
      if (!preventAbort) writer.abort(reason).catch(noop);
    };
    if (signal) {
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      while (!aborted) {
        const { value, done } = await reader.read();
        if (done) break;
        await writer.write(value);
      }
      if (aborted) throw signal.reason;
      if (!preventClose) await writer.close();
    } catch (error) {
      if (!aborted) {
        if (!preventAbort) await writer.abort(error).catch(noop);
        if (!preventCancel) await reader.cancel(error).catch(noop);
      }
      throw error;
    } finally {
      if (signal) signal.removeEventListener("abort", onAbort);
      reader.releaseLock();
      writer.releaseLock();
    }
  }
  pipeThrough(transform, options = {}) {
    if (!transform || !(transform.readable instanceof ReadableStream) || !(transform.writable instanceof WritableStream)) {
      throw new TypeError("pipeThrough needs a { readable, writable } pair.");
    }
    this.pipeTo(transform.writable, options).catch(noop);
    return transform.readable;
  }
  values(options = {}) {
    const reader = this.getReader();
    const preventCancel = Boolean(options && options.preventCancel);
    return {
      next: () => reader.read().then((result) => {
        if (result.done) reader.releaseLock();
        return result;
      }),
      return: async (value) => {
        if (!preventCancel) await reader.cancel(value);
        reader.releaseLock();
        return { value, done: true };
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }
  [Symbol.asyncIterator](options) { return this.values(options); }
}

class ReadableStreamDefaultReader {
  constructor(stream) {
    if (!(stream instanceof ReadableStream)) throw new TypeError("The argument must be a ReadableStream.");
    const state = stream[kInternal];
    if (state.reader) throw new TypeError("This ReadableStream is currently locked to a reader.");
    state.reader = this;
    const requests = [];
    this[kInternal] = {
      stream,
      requests,
      fulfil(chunk) { requests.shift().resolve({ value: chunk, done: false }); },
      drain(closed) {
        while (requests.length) {
          const request = requests.shift();
          if (closed) request.resolve({ value: undefined, done: true });
          else request.reject(state.error);
        }
      },
    };
  }
  get closed() {
    const internal = this[kInternal];
    if (!internal.stream) return Promise.reject(new TypeError("This reader has been released."));
    return internal.stream[kInternal].closed.promise;
  }
  read() {
    const internal = this[kInternal];
    if (!internal.stream) return Promise.reject(new TypeError("This ReadableStream reader has been released."));
    const state = internal.stream[kInternal];
    state.disturbed = true;
    if (state.queue.length > 0) return Promise.resolve({ value: state.shift(), done: false });
    if (state.state === "closed") return Promise.resolve({ value: undefined, done: true });
    if (state.state === "errored") return Promise.reject(state.error);
    const request = settledPromise();
    internal.requests.push(request);
    state.pullIfNeeded();
    return request.promise;
  }
  releaseLock() {
    const internal = this[kInternal];
    if (!internal.stream) return;
    const state = internal.stream[kInternal];
    for (const request of internal.requests.splice(0)) request.reject(new TypeError("This ReadableStream reader has been released."));
    state.reader = null;
    internal.stream = null;
  }
  cancel(reason) {
    const internal = this[kInternal];
    if (!internal.stream) return Promise.reject(new TypeError("This ReadableStream reader has been released."));
    return internal.stream[kInternal].cancel(reason);
  }
}

class ReadableStreamBYOBReader extends ReadableStreamDefaultReader {
  read(view) {
    if (!ArrayBuffer.isView(view) || view.byteLength === 0) {
      return Promise.reject(new TypeError("You must call read() on a \"byob\" reader with a non-empty ArrayBufferView."));
    }
    const internal = this[kInternal];
    return super.read().then(({ value, done }) => {
      const target = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
      if (done) return { value: new view.constructor(view.buffer, view.byteOffset, 0), done: true };
      const bytes = viewBytes(value);
      const take = Math.min(bytes.byteLength, target.byteLength);
      target.set(bytes.subarray(0, take));
      if (take < bytes.byteLength && internal.stream) {
        const state = internal.stream[kInternal];
        state.queue.unshift(bytes.subarray(take));
        state.queueSize += bytes.byteLength - take;
      }
      const elements = Math.floor(take / (view.BYTES_PER_ELEMENT || 1));
      const result = view instanceof DataView ? new DataView(view.buffer, view.byteOffset, take) : new view.constructor(view.buffer, view.byteOffset, elements);
      return { value: result, done: false };
    });
  }
}

class WritableStreamDefaultController {
  constructor(key, state) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
    this[kInternal] = state;
  }
  error(reason) { this[kInternal].fail(reason); }
  get signal() { return this[kInternal].abortController.signal; }
}

class WritableStream {
  constructor(sink = undefined, strategy = {}) {
    sink = sink === undefined || sink === null ? {} : sink;
    const highWaterMark = strategy && strategy.highWaterMark !== undefined ? Number(strategy.highWaterMark) : 1;
    const state = {
      state: "writable", error: undefined, writer: null, queue: Promise.resolve(), pending: 0,
      abortController: new AbortController(), closed: settledPromise(),
      fail(reason) {
        if (state.state === "errored" || state.state === "closed") return;
        state.state = "errored";
        state.error = reason;
        state.closed.reject(reason);
      },
      enqueue(work) {
        const step = state.queue.then(() => {
          if (state.state === "errored") throw state.error;
          return work();
        });
        state.queue = step.catch((reason) => state.fail(reason));
        return step;
      },
      desiredSize() {
        if (state.state === "errored") return null;
        if (state.state === "closed") return 0;
        return highWaterMark - state.pending;
      },
    };
    this[kInternal] = state;
    const controller = new WritableStreamDefaultController(kInternal, state);
    const started = typeof sink.start === "function" ? sink.start.call(sink, controller) : undefined;
    const ready = Promise.resolve(started);
    state.queue = ready.then(noop, (reason) => state.fail(reason));
    state.write = (chunk) => {
      if (state.state !== "writable") return Promise.reject(state.error || new TypeError("This WritableStream has been closed."));
      state.pending++;
      return state.enqueue(() => (typeof sink.write === "function" ? sink.write.call(sink, chunk, controller) : undefined))
        .then(() => { state.pending--; }, (reason) => { state.pending--; throw reason; });
    };
    state.close = () => {
      if (state.state !== "writable") return Promise.reject(new TypeError("This WritableStream is closed."));
      state.state = "closing";
      return state.enqueue(() => (typeof sink.close === "function" ? sink.close.call(sink) : undefined)).then(() => {
        state.state = "closed";
        state.closed.resolve(undefined);
      });
    };
    state.abort = (reason) => {
      if (state.state === "closed" || state.state === "errored") return Promise.resolve(undefined);
      state.abortController.abort(reason);
      state.fail(reason);
      return Promise.resolve(typeof sink.abort === "function" ? sink.abort.call(sink, reason) : undefined).then(() => undefined);
    };
  }
  get locked() { return this[kInternal].writer !== null; }
  abort(reason) {
    if (this.locked) return Promise.reject(new TypeError("This WritableStream is currently locked to a writer."));
    return this[kInternal].abort(reason);
  }
  close() {
    if (this.locked) return Promise.reject(new TypeError("This WritableStream is currently locked to a writer."));
    return this[kInternal].close();
  }
  getWriter() { return new WritableStreamDefaultWriter(this); }
}

class WritableStreamDefaultWriter {
  constructor(stream) {
    if (!(stream instanceof WritableStream)) throw new TypeError("The argument must be a WritableStream.");
    const state = stream[kInternal];
    if (state.writer) throw new TypeError("This WritableStream is currently locked to a writer.");
    state.writer = this;
    this[kInternal] = stream;
  }
  #state() {
    if (!this[kInternal]) throw new TypeError("This writer has been released.");
    return this[kInternal][kInternal];
  }
  get closed() {
    try {
      return this.#state().closed.promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }
  get ready() { return Promise.resolve(undefined); }
  get desiredSize() { return this.#state().desiredSize(); }
  write(chunk) {
    try {
      return this.#state().write(chunk);
    } catch (error) {
      return Promise.reject(error);
    }
  }
  close() {
    try {
      return this.#state().close();
    } catch (error) {
      return Promise.reject(error);
    }
  }
  abort(reason) {
    try {
      return this.#state().abort(reason);
    } catch (error) {
      return Promise.reject(error);
    }
  }
  releaseLock() {
    if (!this[kInternal]) return;
    this[kInternal][kInternal].writer = null;
    this[kInternal] = null;
  }
}

class TransformStreamDefaultController {
  constructor(key, readableController, terminate) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
    this[kInternal] = { readableController, terminate };
  }
  get desiredSize() { return this[kInternal].readableController.desiredSize; }
  enqueue(chunk) { this[kInternal].readableController.enqueue(chunk); }
  error(reason) { this[kInternal].readableController.error(reason); }
  terminate() { this[kInternal].terminate(); }
}

class TransformStream {
  #readable;
  #writable;
  constructor(transformer = undefined) {
    transformer = transformer === undefined || transformer === null ? {} : transformer;
    let readableController;
    let controller;
    let terminated = false;
    this.#readable = new ReadableStream({
      start(c) { readableController = c; },
      cancel(reason) {
        terminated = true;
        if (typeof transformer.cancel === "function") return transformer.cancel.call(transformer, reason);
      },
    }, { highWaterMark: 0 });
    const terminate = () => {
      if (terminated) return;
      terminated = true;
      try { readableController.close(); } catch {}
    };
    // a transform or flush that fails errors both sides, as the spec's TransformStreamError does
    const failReadable = (error) => {
      if (terminated) return;
      terminated = true;
      try { readableController.error(error); } catch {}
    };
    controller = new TransformStreamDefaultController(kInternal, readableController, terminate);
    const started = typeof transformer.start === "function" ? transformer.start.call(transformer, controller) : undefined;
    this.#writable = new WritableStream({
      start: () => started,
      async write(chunk) {
        if (terminated) throw new TypeError("The TransformStream has been terminated.");
        if (typeof transformer.transform !== "function") return readableController.enqueue(chunk);
        try {
          await transformer.transform.call(transformer, chunk, controller);
        } catch (error) {
          failReadable(error);
          throw error;
        }
      },
      async close() {
        try {
          if (typeof transformer.flush === "function") await transformer.flush.call(transformer, controller);
        } catch (error) {
          failReadable(error);
          throw error;
        }
        terminate();
      },
      abort(reason) {
        terminated = true;
        readableController.error(reason);
      },
    });
  }
  get readable() { return this.#readable; }
  get writable() { return this.#writable; }
}

class IdentityTransformStream extends TransformStream {
  constructor() { super(); }
}

class TextEncoderStream extends TransformStream {
  constructor() {
    const encoder = new TextEncoder();
    let pendingHigh = "";
    super({
      transform(chunk, controller) {
        let text = pendingHigh + String(chunk);
        pendingHigh = "";
        const last = text.charCodeAt(text.length - 1);
        if (last >= 0xd800 && last <= 0xdbff) {
          pendingHigh = text[text.length - 1];
          text = text.slice(0, -1);
        }
        if (text) controller.enqueue(encoder.encode(text));
      },
      flush(controller) { if (pendingHigh) controller.enqueue(encoder.encode(pendingHigh)); },
    });
  }
  get encoding() { return "utf-8"; }
}

class TextDecoderStream extends TransformStream {
  #decoder;
  constructor(label = "utf-8", options = {}) {
    const decoder = new TextDecoder(label, options);
    super({
      transform(chunk, controller) {
        const text = decoder.decode(chunk, { stream: true });
        if (text) controller.enqueue(text);
      },
      flush(controller) {
        const text = decoder.decode();
        if (text) controller.enqueue(text);
      },
    });
    this.#decoder = decoder;
  }
  get encoding() { return this.#decoder.encoding; }
  get fatal() { return this.#decoder.fatal; }
  get ignoreBOM() { return this.#decoder.ignoreBOM; }
}

class CountQueuingStrategy {
  constructor({ highWaterMark }) { this.highWaterMark = highWaterMark; }
  size() { return 1; }
}

class ByteLengthQueuingStrategy {
  constructor({ highWaterMark }) { this.highWaterMark = highWaterMark; }
  size(chunk) { return chunk.byteLength; }
}

// All of a stream's chunks as one Uint8Array; a chunk that is not bytes is a TypeError.
async function readAllBytes(stream) {
  const reader = stream.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (!isBufferSource(value)) {
      reader.releaseLock();
      throw new TypeError("This ReadableStream did not return bytes.");
    }
    const bytes = viewBytes(value);
    chunks.push(bytes);
    total += bytes.byteLength;
  }
  reader.releaseLock();
  return concatBytes(chunks, total).slice();
}

function bytesStream(bytes) {
  return new ReadableStream({
    type: "bytes",
    start(controller) {
      if (bytes.byteLength) controller.enqueue(bytes.slice());
      controller.close();
    },
  });
}

defineGlobal("ReadableStream", ReadableStream);
defineGlobal("ReadableStreamDefaultReader", ReadableStreamDefaultReader);
defineGlobal("ReadableStreamBYOBReader", ReadableStreamBYOBReader);
defineGlobal("ReadableStreamDefaultController", ReadableStreamDefaultController);
defineGlobal("ReadableByteStreamController", ReadableByteStreamController);
defineGlobal("WritableStream", WritableStream);
defineGlobal("WritableStreamDefaultWriter", WritableStreamDefaultWriter);
defineGlobal("WritableStreamDefaultController", WritableStreamDefaultController);
defineGlobal("TransformStream", TransformStream);
defineGlobal("TransformStreamDefaultController", TransformStreamDefaultController);
defineGlobal("IdentityTransformStream", IdentityTransformStream);
defineGlobal("TextEncoderStream", TextEncoderStream);
defineGlobal("TextDecoderStream", TextDecoderStream);
defineGlobal("CountQueuingStrategy", CountQueuingStrategy);
defineGlobal("ByteLengthQueuingStrategy", ByteLengthQueuingStrategy);
