"""A tiny host for the wasmdeck Worker protocol (docs/worker-protocol.md), for SDK tests.

It runs a guest module under wasmer-sdk directly, with no engine: it spawns the guest with
stdin, stdout and stderr on pipes, writes one event frame, reads the guest's frames,
answers each `fetch` or `dispatch` call with whatever the test's handler returns, and
records everything in an `Exchange`. It checks the frame layer the way the spec says a
host must (limits, meta a JSON object with a string `type`), but it does not judge the
protocol state: the test does, from the recorded frames.

A module that exports `wasmdeck_worker_protocol_2` is started as a version 2 instance
(`init`, then `ready`) unless `version=1` says to talk to it as version 1; `Driver.instance`
keeps one running for several events (`WarmInstance`).

    driver = Driver(cache_root)
    exchange = await driver.fetch(module, "GET", "https://w.example/?x=1",
                                  on_fetch=lambda request, body: ({"type": "fetch_result",
                                                                   "status": 200, "headers": []}, b"hi"))
    assert exchange.response_status == 200
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from wasmer_sdk import Wasmer, WasmerError

MAX_META = 1024 * 1024
MAX_BODY = 10 * 1024 * 1024
GUEST_TYPES = {"log", "fetch", "dispatch", "sleep", "ready", "response", "done", "exception"}
FINAL_TYPES = {"response", "done", "exception"}

Meta = dict[str, Any]
Answer = tuple[Meta, bytes]
CallHandler = Callable[[Meta, bytes], Union[Answer, Awaitable[Answer]]]


def encode_frame(meta: Meta | bytes, body: bytes = b"") -> bytes:
    """One frame: meta (a dict, serialised as JSON, or raw bytes) and body."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return struct.pack("<II", len(raw), len(body)) + raw + body


class FrameError(Exception):
    """The guest wrote something that is not a valid frame."""


class FrameReader:
    """Frames from a byte-chunk async iterator (the guest's stdout)."""

    def __init__(self, chunks) -> None:
        self._chunks = chunks.__aiter__()
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size and not self._eof:
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                self._eof = True
        return len(self._buffer) >= size

    async def read(self) -> tuple[Meta, bytes] | None:
        """The next frame, or None at a clean end of output (no partial frame)."""
        if not await self._fill(8):
            if self._buffer:
                raise FrameError(f"output ended inside a frame header ({len(self._buffer)} bytes)")
            return None
        meta_len, body_len = struct.unpack_from("<II", self._buffer)
        if meta_len > MAX_META or body_len > MAX_BODY:
            raise FrameError(f"frame over the limits: meta {meta_len} bytes, body {body_len} bytes")
        if not await self._fill(8 + meta_len + body_len):
            raise FrameError("output ended inside a frame")
        raw_meta = bytes(self._buffer[8 : 8 + meta_len])
        body = bytes(self._buffer[8 + meta_len : 8 + meta_len + body_len])
        del self._buffer[: 8 + meta_len + body_len]
        try:
            meta = json.loads(raw_meta.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise FrameError(f"frame meta is not JSON: {raw_meta[:80]!r} ({error})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("type"), str):
            raise FrameError(f"frame meta is not an object with a string type: {raw_meta[:80]!r}")
        if meta["type"] not in GUEST_TYPES:
            raise FrameError(f"unknown frame type {meta['type']!r}")
        return meta, body


@dataclass
class Exchange:
    """Everything one invocation did."""

    frames: list[tuple[Meta, bytes]] = field(default_factory=list)  # every frame the guest wrote, in order
    calls: list[tuple[Meta, bytes]] = field(default_factory=list)  # fetch/dispatch calls, as sent
    final: tuple[Meta, bytes] | None = None
    after_final: list[tuple[Meta, bytes]] = field(default_factory=list)  # frames after the final one
    frame_error: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    trap: str | None = None
    stderr: bytes = b""
    timed_out: bool = False
    init_frames: list[tuple[Meta, bytes]] = field(default_factory=list)  # version 2: what answered init

    @property
    def logs(self) -> list[tuple[str, str]]:
        return [(meta.get("level", ""), meta.get("message", "")) for meta, _ in self.frames if meta["type"] == "log"]

    @property
    def final_type(self) -> str | None:
        return self.final[0]["type"] if self.final else None

    @property
    def response_status(self) -> int | None:
        return self.final[0].get("status") if self.final and self.final_type == "response" else None

    @property
    def response_headers(self) -> list[list[str]]:
        return self.final[0].get("headers", []) if self.final else []

    @property
    def response_body(self) -> bytes:
        return self.final[1] if self.final else b""

    def header(self, name: str) -> str | None:
        for key, value in self.response_headers:
            if key.lower() == name.lower():
                return value
        return None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.response_headers if key.lower() == name.lower()]


def _no_fetch(request: Meta, body: bytes) -> Answer:
    return {"type": "fetch_error", "name": "NetworkError", "message": "the test driver has no fetch handler"}, b""


def _no_dispatch(call: Meta, body: bytes) -> Answer:
    return {"type": "dispatch_error", "name": "NotAllowed", "message": "the test driver has no dispatch handler"}, b""


def module_version(module: Path) -> int:
    from wasmdeck.engine.wasm_module import inspect_module

    info = inspect_module(Path(module).read_bytes())
    return 2 if info.exports_function("wasmdeck_worker_protocol_2") else 1


def init_frame(worker: str = "probe", namespace: str = "default") -> bytes:
    return encode_frame({"type": "init", "protocol": 2, "worker": worker, "namespace": namespace,
                         "version": 1, "language": "wasm"})


class Driver:
    """Runs protocol guests under wasmer-sdk; one sandbox per module."""

    def __init__(self, cache_root: Path) -> None:
        self._wasmer = Wasmer(cache_root=cache_root)
        self._sandboxes: dict[Path, tuple[object, object]] = {}
        self._instances: list["WarmInstance"] = []

    async def close(self) -> None:
        # processes must be gone before their client closes: freeing one later fails in its __del__
        for instance in self._instances:
            try:
                await instance.process.kill()
            except WasmerError:
                pass
            instance.process = None
        self._instances.clear()
        import gc

        gc.collect()
        for sandbox, _ in self._sandboxes.values():
            try:
                await sandbox.close()  # type: ignore[attr-defined]
            except WasmerError:
                pass
        self._sandboxes.clear()
        await self._wasmer.close()

    async def _sandbox(self, module: Path) -> tuple[object, object]:
        module = Path(module).resolve()
        entry = self._sandboxes.get(module)
        if entry is None:
            package = await self._wasmer.packages.load(module.read_bytes())
            sandbox = await self._wasmer.sandboxes.create(packages=[package], network="disabled")
            entry = self._sandboxes[module] = (sandbox, package)
        return entry

    async def instance(self, module: Path, env: dict[str, str] | None = None) -> tuple["WarmInstance", tuple[Meta, bytes] | None]:
        """Start a version 2 instance and send `init`; returns it and the frame that answered init
        (None if the guest wrote none)."""
        sandbox, package = await self._sandbox(module)
        command = sandbox.command(package, env=dict(env or {}))  # type: ignore[attr-defined]
        process = await command.spawn(stdin="pipe", stdout="pipe", stderr="pipe", timeout=60.0)
        stderr = bytearray()

        async def drain_stderr() -> None:
            async for chunk in process.stderr:
                stderr.extend(chunk)

        instance = WarmInstance(process, stderr, asyncio.ensure_future(drain_stderr()))
        self._instances.append(instance)
        await instance.write(init_frame())
        return instance, await asyncio.wait_for(instance.reader.read(), 20.0)

    async def fetch(
        self,
        module: Path,
        method: str = "GET",
        url: str = "https://worker.example/",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        **options: Any,
    ) -> Exchange:
        """Run a `fetch` event."""
        meta = {
            "type": "fetch",
            "protocol": 1,
            "request": {"method": method, "url": url, "headers": [list(pair) for pair in headers]},
            "worker": options.pop("worker", "probe"),
            "namespace": options.pop("namespace", "default"),
        }
        return await self.run(module, meta, body, **options)

    async def tail(self, module: Path, items: list[Any], **options: Any) -> Exchange:
        """Run a `tail` event with these trace items."""
        meta = {"type": "tail", "protocol": 1, "count": len(items), "worker": "tail", "namespace": "default"}
        return await self.run(module, meta, json.dumps(items).encode(), **options)

    async def run(
        self,
        module: Path,
        event: Meta | bytes,
        body: bytes = b"",
        *,
        env: dict[str, str] | None = None,
        on_fetch: CallHandler = _no_fetch,
        on_dispatch: CallHandler = _no_dispatch,
        timeout: float = 20.0,
        raw_event: bytes | None = None,
        chunk: int | None = None,
        version: int | None = None,
        event_env: dict[str, str] | None = None,
    ) -> Exchange:
        """Write the event (or `raw_event` bytes as they are), serve calls until the final frame, then
        close stdin and collect whatever else the guest writes until it exits. With `chunk`, the
        event and every answer are written `chunk` bytes at a time, so the guest sees short reads.
        A version 2 module (unless `version=1`) gets `init` first, must answer `ready` (kept in
        `exchange.init_frames`), and gets the event as invocation 1 with `event_env` as its `env`."""
        version = version or getattr(module, "protocol_version", None) or module_version(module)
        sandbox, package = await self._sandbox(module)
        command = sandbox.command(package, env=dict(env or {}))  # type: ignore[attr-defined]
        process = await command.spawn(stdin="pipe", stdout="pipe", stderr="pipe", timeout=timeout)
        exchange = Exchange()
        stderr = bytearray()

        async def drain_stderr() -> None:
            async for chunk in process.stderr:
                stderr.extend(chunk)

        stderr_task = asyncio.ensure_future(drain_stderr())
        reader = FrameReader(process.stdout)
        stdin_open = True

        async def close_stdin() -> None:
            nonlocal stdin_open
            if stdin_open:
                stdin_open = False
                try:
                    await process.stdin.close()
                except WasmerError:
                    pass

        async def send(data: bytes) -> None:
            if not chunk:
                await process.stdin.write(data)
                return
            for start in range(0, len(data), chunk):
                await process.stdin.write(data[start : start + chunk])
                await asyncio.sleep(0.001)

        async def converse() -> None:
            nonlocal event
            if version == 2:
                await send(init_frame())
                ready = await reader.read()
                if ready is None:
                    raise FrameError("the instance ended before it answered init")
                exchange.init_frames.append(ready)
                if ready[0]["type"] != "ready":
                    raise FrameError(f"the instance answered init with a {ready[0]['type']!r} frame")
                if isinstance(event, dict):
                    event = {**event, "protocol": 2, "invocation": 1, "env": dict(event_env or {})}
            await send(raw_event if raw_event is not None else encode_frame(event, body))
            while True:
                frame = await reader.read()
                if frame is None:
                    return
                meta, frame_body = frame
                exchange.frames.append(frame)
                if exchange.final is not None:
                    exchange.after_final.append(frame)
                    continue
                kind = meta["type"]
                if kind in FINAL_TYPES:
                    exchange.final = frame
                    await close_stdin()
                elif kind in ("fetch", "dispatch"):
                    exchange.calls.append(frame)
                    handler = on_fetch if kind == "fetch" else on_dispatch
                    answer = handler(meta if kind == "dispatch" else meta.get("request", {}), frame_body)
                    if asyncio.iscoroutine(answer):
                        answer = await answer
                    answer_meta, answer_body = answer
                    answer_meta = {"id": meta.get("id"), **answer_meta}  # a handler may set a (wrong) id itself
                    await send(encode_frame(answer_meta, answer_body))

        try:
            await asyncio.wait_for(converse(), timeout)
        except FrameError as error:
            exchange.frame_error = str(error)
        except asyncio.TimeoutError:
            exchange.timed_out = True
        except WasmerError as error:  # stdin closed under us, and the like
            exchange.frame_error = f"{error.code}: {error}"
        if exchange.frame_error or exchange.timed_out:
            try:
                await process.kill()
            except WasmerError:
                pass
        await close_stdin()
        try:
            output = await asyncio.wait_for(process.wait(), timeout)
            exchange.exit_code = output.exit_code
            exchange.reason = output.reason.value
        except WasmerError as error:
            exchange.trap = f"{error.code}: {error}"
        except asyncio.TimeoutError:
            exchange.timed_out = True
            try:
                await process.kill()
            except WasmerError:
                pass
        # a killed or trapped guest's stderr pipe may never report EOF: do not wait on it for long
        exited = exchange.reason == "exited" and not exchange.frame_error and not exchange.timed_out
        done, _ = await asyncio.wait([stderr_task], timeout=1.0 if exited else 0.05)
        if not done:
            stderr_task.cancel()
        exchange.stderr = bytes(stderr)
        return exchange


class WarmInstance:
    """One version 2 instance kept running for several events (`Driver.instance`)."""

    def __init__(self, process: Any, stderr: bytearray, stderr_task: "asyncio.Future[None]") -> None:
        self.process = process
        self.reader = FrameReader(process.stdout)
        self.stderr = stderr
        self._stderr_task = stderr_task
        self.invocations = 0

    async def write(self, data: bytes) -> None:
        await self.process.stdin.write(data)

    async def fetch(self, url: str, *, method: str = "GET", env: dict[str, str] | None = None,
                    on_fetch: CallHandler = _no_fetch, timeout: float = 20.0) -> Exchange:
        """One fetch event: frames up to and including the final frame (nothing after it is read)."""
        self.invocations += 1
        meta = {"type": "fetch", "protocol": 2, "invocation": self.invocations, "env": dict(env or {}),
                "request": {"method": method, "url": url, "headers": []}, "worker": "probe", "namespace": "default"}
        exchange = Exchange()

        async def converse() -> None:
            await self.write(encode_frame(meta))
            while exchange.final is None:
                frame = await self.reader.read()
                if frame is None:
                    return
                exchange.frames.append(frame)
                kind = frame[0]["type"]
                if kind in FINAL_TYPES:
                    exchange.final = frame
                elif kind == "fetch":
                    exchange.calls.append(frame)
                    answer = on_fetch(frame[0].get("request", {}), frame[1])
                    if asyncio.iscoroutine(answer):
                        answer = await answer
                    answer_meta, answer_body = answer
                    await self.write(encode_frame({"id": frame[0].get("id"), **answer_meta}, answer_body))

        try:
            await asyncio.wait_for(converse(), timeout)
        except FrameError as error:
            exchange.frame_error = str(error)
        except asyncio.TimeoutError:
            exchange.timed_out = True
        return exchange

    async def close(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Close stdin; the exit status and reason (a version 2 guest exits 0 at end of input)."""
        try:
            await self.process.stdin.close()
        except WasmerError:
            pass
        return await self.wait(timeout)

    async def wait(self, timeout: float = 10.0) -> tuple[int | None, str]:
        try:
            output = await asyncio.wait_for(self.process.wait(), timeout)
        except (WasmerError, asyncio.TimeoutError) as error:
            try:
                await self.process.kill()
            except WasmerError:
                pass
            return None, f"{type(error).__name__}: {error}"
        finally:
            done, _ = await asyncio.wait([self._stderr_task], timeout=1.0)
            if not done:
                self._stderr_task.cancel()
        return output.exit_code, output.reason.value
