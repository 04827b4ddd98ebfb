"""A small host for wasmdeck's JavaScript runtime (engine/runtimes/javascript.wasm) speaking the
Worker protocol version 2 (docs/worker-protocol.md section 9), for tests and measurements.

It runs the module under wasmer-sdk directly, with no engine: one sandbox per driver, one guest
process per `Instance`. An instance is started with `init` (the script in the body), answers
`ready`, and then serves event after event; the driver answers the guest's `fetch`, `dispatch`
and `sleep` calls from Python (`on_fetch`, `on_dispatch` handlers; sleeps really sleep). Calls
may overlap: each is answered by its own task, in whatever order they finish.

    async with JsDriver(cache_root) as driver:
        instance = await driver.start("export default { fetch() { return new Response('hi') } }")
        result = await instance.fetch("GET", "https://example.com/")
        assert result.status == 200 and result.body == b"hi"
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from wasmer_sdk import Wasmer, WasmerError

from wasmdeck.engine.protocol import MAX_BODY_BYTES, MAX_META_BYTES, encode

RUNTIME = Path(__file__).resolve().parent.parent / "engine" / "runtimes" / "javascript.wasm"

Meta = dict[str, Any]
Answer = tuple[Meta, bytes]
CallHandler = Callable[[Meta, bytes], Union[Answer, Awaitable[Answer]]]

GUEST_TYPES = {"ready", "log", "fetch", "dispatch", "sleep", "response", "done", "exception", "waiting"}
CALL_TYPES = {"fetch", "dispatch", "sleep"}
FINAL_TYPES = {"done", "exception"}
MAX_CALLS_IN_FLIGHT = 64


class ProtocolError(Exception):
    """The guest broke the frame layer or the protocol's rules."""


@dataclass
class Result:
    """What one event (or the init) did."""

    final: Meta | None = None
    body: bytes = b""
    response: Meta | None = None  # the `response` frame (final, or followed by `done` when waitUntil work ran on)
    response_body: bytes = b""
    frames: list[Meta] = field(default_factory=list)
    calls: list[tuple[Meta, bytes]] = field(default_factory=list)
    max_in_flight: int = 0
    seconds: float = 0.0
    waits: list[Meta] = field(default_factory=list)  # the `waiting` frames, in order

    @property
    def type(self) -> str | None:
        return self.final["type"] if self.final else None

    @property
    def status(self) -> int | None:
        return self.response.get("status") if self.response else None

    @property
    def headers(self) -> list[list[str]]:
        return self.response.get("headers", []) if self.response else []

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def text(self) -> str:
        return self.response_body.decode()

    def json(self) -> Any:
        return json.loads(self.response_body)

    @property
    def logs(self) -> list[tuple[str, str]]:
        return [(meta.get("level", ""), meta.get("message", "")) for meta in self.frames if meta["type"] == "log"]


def _no_fetch(request: Meta, body: bytes) -> Answer:
    return {"type": "fetch_error", "name": "NetworkError", "message": "the test driver has no fetch handler"}, b""


def _no_dispatch(call: Meta, body: bytes) -> Answer:
    return {"type": "dispatch_error", "name": "NotAllowed", "message": "the test driver has no dispatch handler"}, b""


class Instance:
    """One running runtime process."""

    def __init__(self, process: object, on_fetch: CallHandler, on_dispatch: CallHandler) -> None:
        self._process = process
        self.on_fetch = on_fetch
        self.on_dispatch = on_dispatch
        self._buffer = bytearray()
        self._chunks = process.stdout.__aiter__()  # type: ignore[attr-defined]
        self._eof = False
        self.invocations = 0
        self.stderr = bytearray()
        self.exit_code: int | None = None
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        self._write_lock = asyncio.Lock()
        self.retired = False
        self.frames_written = 0  # what the runtime's `waiting` frames count as read
        self.idle_waits: list[Meta] = []  # announcements made between invocations (after a final frame)

    async def _drain_stderr(self) -> None:
        try:
            async for chunk in self._process.stderr:  # type: ignore[attr-defined]
                self.stderr.extend(chunk)
        except WasmerError:
            pass

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size and not self._eof:
            try:
                self._buffer += await self._chunks.__anext__()
            except (StopAsyncIteration, WasmerError):
                self._eof = True
        return len(self._buffer) >= size

    async def read_frame(self) -> tuple[Meta, bytes] | None:
        if not await self._fill(8):
            if self._buffer:
                raise ProtocolError(f"output ended inside a frame header ({len(self._buffer)} bytes)")
            return None
        meta_len = int.from_bytes(self._buffer[0:4], "little")
        body_len = int.from_bytes(self._buffer[4:8], "little")
        if meta_len > MAX_META_BYTES or body_len > MAX_BODY_BYTES:
            raise ProtocolError(f"frame over the limits: meta {meta_len} bytes, body {body_len} bytes ({bytes(self._buffer[:16])!r})")
        if not await self._fill(8 + meta_len + body_len):
            raise ProtocolError("output ended inside a frame")
        raw = bytes(self._buffer[8 : 8 + meta_len])
        body = bytes(self._buffer[8 + meta_len : 8 + meta_len + body_len])
        del self._buffer[: 8 + meta_len + body_len]
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ProtocolError(f"frame meta is not JSON: {raw[:80]!r} ({error})") from None
        if not isinstance(meta, dict) or meta.get("type") not in GUEST_TYPES:
            raise ProtocolError(f"unexpected frame meta {raw[:120]!r}")
        return meta, body

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            self.frames_written += 1  # counted before the write: the runtime may answer before it returns
            await self._process.stdin.write(data)  # type: ignore[attr-defined]

    async def _converse(self, first: bytes, *, init: bool) -> Result:
        """Write `first`, then serve calls until the final frame (or `ready` for an init)."""
        result = Result()
        started = time.perf_counter()
        await self.write(first)
        answering: set[asyncio.Task] = set()
        in_flight: set[Any] = set()

        async def answer(meta: Meta, body: bytes) -> None:
            kind = meta["type"]
            try:
                if kind == "sleep":
                    await asyncio.sleep(max(0, float(meta.get("ms", 0))) / 1000)
                    reply: Answer = ({"type": "sleep_result"}, b"")
                else:
                    handler = self.on_fetch if kind == "fetch" else self.on_dispatch
                    reply = handler(meta.get("request", {}) if kind == "fetch" else meta, body)
                    if asyncio.iscoroutine(reply):
                        reply = await reply
                if meta.get("id") in in_flight:
                    in_flight.discard(meta.get("id"))
                    await self.write(encode({**reply[0], "id": meta.get("id")}, reply[1]))
            except asyncio.CancelledError:
                pass

        try:
            while True:
                frame = await self.read_frame()
                if frame is None:
                    raise ProtocolError("the runtime closed its output before its final frame")
                meta, body = frame
                kind = meta["type"]
                if kind == "waiting":  # the runtime blocks reading stdin (host.c)
                    if isinstance(meta.get("frames"), int) and meta["frames"] < self.frames_written:
                        # made before it read the frame just written: the wait between invocations
                        self.idle_waits.append(meta)
                        continue
                    if init:
                        raise ProtocolError("a waiting frame before ready")
                    result.waits.append(meta)
                    continue
                result.frames.append(meta)
                if init:
                    if kind == "ready" or kind == "exception":
                        result.final, result.body = meta, body
                        break
                    if kind != "log":
                        raise ProtocolError(f"a {kind} frame before ready")
                    continue
                if kind == "ready":
                    raise ProtocolError("a ready frame during an invocation")
                if kind in CALL_TYPES:
                    if meta.get("id") in in_flight:
                        raise ProtocolError(f"call id {meta.get('id')} is already in flight")
                    if len(in_flight) >= MAX_CALLS_IN_FLIGHT:
                        error_type = f"{kind}_error"
                        await self.write(encode({"type": error_type, "id": meta.get("id"), "name": "TooManyCalls",
                                                 "message": "more than 64 calls in flight"}))
                        continue
                    in_flight.add(meta.get("id"))
                    result.max_in_flight = max(result.max_in_flight, len(in_flight))
                    result.calls.append((meta, body))
                    task = asyncio.ensure_future(answer(meta, body))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
                elif kind == "response":
                    if result.response is not None:
                        raise ProtocolError("a second response frame")
                    result.response, result.response_body = meta, body
                    if not meta.get("waitUntil"):
                        result.final, result.body = meta, body
                        break
                elif kind in FINAL_TYPES:
                    result.final, result.body = meta, body
                    break
        finally:
            in_flight.clear()  # the engine answers no call after the final frame
            for task in list(answering):
                task.cancel()
        result.seconds = time.perf_counter() - started
        if result.final and result.final.get("retire"):
            self.retired = True
        return result

    async def init(self, source: str | bytes, *, filename: str = "worker.js", format: str | None = None,
                   **fields: Any) -> Result:
        meta: Meta = {"type": "init", "protocol": 2, "worker": "probe", "namespace": "default", "version": 1,
                      "language": "javascript", "filename": filename, **fields}
        if format is not None:
            meta["format"] = format
        body = source.encode() if isinstance(source, str) else source
        return await self._converse(encode(meta, body), init=True)

    async def fetch(self, method: str = "GET", url: str = "https://worker.example/",
                    headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *, env: dict[str, str] | None = None,
                    **fields: Any) -> Result:
        self.invocations += 1
        meta: Meta = {"type": "fetch", "protocol": 2, "invocation": self.invocations,
                      "request": {"method": method, "url": url, "headers": [list(pair) for pair in headers]},
                      "worker": "probe", "namespace": "default", "env": env or {}, **fields}
        return await self._converse(encode(meta, body), init=False)

    async def tail(self, items: list[Any], *, env: dict[str, str] | None = None) -> Result:
        self.invocations += 1
        meta = {"type": "tail", "protocol": 2, "invocation": self.invocations, "count": len(items),
                "worker": "tail", "namespace": "default", "env": env or {}}
        return await self._converse(encode(meta, json.dumps(items).encode()), init=False)

    async def send_raw(self, data: bytes) -> None:
        await self.write(data)

    async def close(self, timeout: float = 10.0) -> int | None:
        """Close stdin and wait for the exit; the exit code (None if it had to be killed)."""
        try:
            await self._process.stdin.close()  # type: ignore[attr-defined]
        except WasmerError:
            pass
        try:
            output = await asyncio.wait_for(self._process.wait(), timeout)  # type: ignore[attr-defined]
            self.exit_code = output.exit_code
        except (asyncio.TimeoutError, WasmerError):
            await self.kill()
        await asyncio.wait([self._stderr_task], timeout=0.5)
        return self.exit_code

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        try:
            output = await asyncio.wait_for(self._process.wait(), timeout)  # type: ignore[attr-defined]
            self.exit_code = output.exit_code
        except (asyncio.TimeoutError, WasmerError):
            return None
        return self.exit_code

    async def kill(self) -> None:
        try:
            await self._process.kill()  # type: ignore[attr-defined]
        except WasmerError:
            pass

    async def forget_stderr(self) -> None:
        """Stop reading stderr (a killed guest's pipe may never end) before the wasmer client closes."""
        if not self._stderr_task.done():
            self._stderr_task.cancel()
            await asyncio.wait([self._stderr_task], timeout=1.0)


class JsDriver:
    """Starts runtime instances in one sandbox (the module loaded once)."""

    def __init__(self, cache_root: Path, module: bytes | None = None) -> None:
        self._wasmer = Wasmer(cache_root=cache_root)
        self._module = module if module is not None else RUNTIME.read_bytes()
        self._package: object | None = None
        self._sandboxes: dict[tuple, object] = {}
        self._instances: list[Instance] = []

    async def __aenter__(self) -> "JsDriver":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def package(self) -> object:
        if self._package is None:
            self._package = await self._wasmer.packages.load(self._module)
        return self._package

    async def spawn(self, env: dict[str, str] | None = None, on_fetch: CallHandler = _no_fetch,
                    on_dispatch: CallHandler = _no_dispatch) -> Instance:
        package = await self.package()
        key = tuple(sorted((env or {}).items()))
        sandbox = self._sandboxes.get(key)
        if sandbox is None:
            sandbox = await self._wasmer.sandboxes.create(packages=[package], env=dict(env or {}), network="disabled")
            self._sandboxes[key] = sandbox
        process = await sandbox.command(package).spawn(stdin="pipe", stdout="pipe", stderr="pipe")  # type: ignore[attr-defined]
        instance = Instance(process, on_fetch, on_dispatch)
        self._instances.append(instance)
        return instance

    async def start(self, source: str | bytes, *, env: dict[str, str] | None = None, on_fetch: CallHandler = _no_fetch,
                    on_dispatch: CallHandler = _no_dispatch, **init: Any) -> Instance:
        """A ready instance running `source`; raises ProtocolError if init does not answer ready."""
        instance = await self.spawn(env, on_fetch, on_dispatch)
        result = await instance.init(source, **init)
        if result.type != "ready":
            await instance.kill()
            raise ProtocolError(f"init answered {result.final}")
        return instance

    async def close(self) -> None:
        for instance in self._instances:
            if instance.exit_code is None:
                await instance.close(timeout=5.0)
            await instance.forget_stderr()
        for sandbox in self._sandboxes.values():
            try:
                await sandbox.close()  # type: ignore[attr-defined]
            except WasmerError:
                pass
        self._sandboxes.clear()
        await self._wasmer.close()
