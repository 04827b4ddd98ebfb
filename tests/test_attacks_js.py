"""A hostile tenant's JavaScript against the engine: work it keeps doing after its answer, and what
it can make the host hold or spend. "Stopped" is judged by the host process's CPU time and
memory, not by the answer alone."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from wasmdeck.engine import Engine

ANSWER_THEN_SPIN = {
    "microtask loop": "function f() { queueMicrotask(f); } f(); return new Response('answered');",
    "promise chain": "const loop = () => Promise.resolve().then(loop); loop(); return new Response('answered');",
}


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def cpu_over(seconds: float) -> float:
    """The host process's CPU seconds over the next `seconds` (an idle engine uses next to none)."""
    before = process_cpu_s()
    await asyncio.sleep(seconds)
    return process_cpu_s() - before


@pytest.mark.parametrize("attack", list(ANSWER_THEN_SPIN))
async def test_work_that_goes_on_after_the_response_is_stopped(engine: Engine, attack: str) -> None:
    # The response is written, then the runtime's job queue never empties: it never goes back to
    # read the next event, and its instance used to sit in the pool computing at 100 % of a core
    # until the idle timeout (a minute), for nobody. Several requests at once made as many.
    engine.set_limits("free", cpu_ms=50, wall_ms=5_000)
    engine.deploy("spinner", f"export default {{ async fetch(request, env, ctx) {{ {ANSWER_THEN_SPIN[attack]} }} }}".encode(),
                  tags=["free"])
    responses = await asyncio.gather(*(engine.request("http://spinner.example.com/") for _ in range(3)))
    assert [(r.status, r.text) for r in responses] == [(200, "answered")] * 3
    # each instance gets what is left of its invocation's CPU time (at least 0.1 s) to say it waits
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = engine.instance_stats()["spinner"]
        if stats["idle"] == stats["busy"] == 0 and stats["retired"].get("exceededCpu", 0) == stats["started"]:
            break
        await asyncio.sleep(0.05)
    assert stats["retired"] == {"exceededCpu": stats["started"]} and stats["idle"] == 0, stats
    await asyncio.sleep(0.2)  # the stopping itself
    assert await cpu_over(1.0) < 0.2  # nothing computes any more
    await engine.flush_traces()
    retired = [item["event"]["instance"] for item in engine.recent_traces(20) if "instance" in item.get("event", {})]
    assert retired and all(event["retired"] == "exceededCpu" for event in retired)
    again = await engine.request("http://spinner.example.com/")  # the tenant is served again, by a fresh instance
    assert (again.status, again.text, again.trace["newInstance"]) == (200, "answered", True)


async def test_a_timer_left_behind_never_fires_after_the_invocation(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=50)
    engine.deploy("later", b"export default { async fetch() { setTimeout(() => { const f = () => queueMicrotask(f); f(); }, 5);"
                           b" setInterval(() => { for (;;) {} }, 1); return new Response('answered'); } }", tags=["free"])
    responses = await asyncio.gather(*(engine.request("http://later.example.com/") for _ in range(3)))
    assert [(r.status, r.text) for r in responses] == [(200, "answered")] * 3
    assert await cpu_over(1.0) < 0.2
    again = await engine.request("http://later.example.com/")
    assert (again.status, again.trace["outcome"]) == (200, "ok")


async def test_a_worker_that_leaves_no_work_behind_keeps_its_warm_instance(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=50)
    engine.deploy("tidy", b"export default { async fetch() { Promise.resolve().then(() => 1); queueMicrotask(() => {});"
                          b" return new Response('ok'); } }", tags=["free"])
    for _ in range(5):
        assert (await engine.request("http://tidy.example.com/")).text == "ok"
    await asyncio.sleep(0.5)
    last = await engine.request("http://tidy.example.com/")
    assert (last.trace["newInstance"], last.trace["instanceInvocation"]) == (False, 6), engine.instance_stats()
    assert engine.instance_stats()["tidy"]["retired"] == {}


async def test_top_level_code_that_loops_only_outside_the_deploy_check_is_stopped_at_instance_start(engine: Engine) -> None:
    # The deploy check runs top-level code with secrets' names only: a script can tell it from a
    # real start and loop only then. An instance start used to wait for `ready` up to the engine's
    # start timeout (10 s) and the request's wallMs, a core busy all along, whatever cpuMs said.
    engine.set_limits("free", cpu_ms=50, wall_ms=8_000)
    engine.deploy("sleeper", b"if (TOKEN === 's3cret') { for (;;) {} }\n"
                             b"addEventListener('fetch', (event) => event.respondWith(new Response('ok')));",
                  tags=["free"], secrets={"TOKEN": "s3cret"})
    before = process_cpu_s()
    response = await engine.request("http://sleeper.example.com/")
    spent = process_cpu_s() - before
    assert response.status == 500 and response.trace["outcome"] == "exception"
    assert "did not answer init with ready within 2 s" in response.trace["exceptions"][0]["message"]
    assert spent < 4.0  # the deploy check's 2 s of top-level code (and the host's own work), not 8 or 10
    assert await cpu_over(1.0) < 0.2
    assert engine.instance_stats()["sleeper"]["retired"] == {"startFailed": 1}


class CountingOrigin:
    """An origin on 127.0.0.1 that answers every request with the same `size` bytes after `delay_s`,
    counting how many requests it holds open at once."""

    def __init__(self, size: int, delay_s: float) -> None:
        self.payload = b"x" * size
        self.delay_s = delay_s
        self.open = 0
        self.most_open = 0
        self.served = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> "CountingOrigin":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readuntil(b"\r\n\r\n")):
                self.open += 1
                self.most_open = max(self.most_open, self.open)
                try:
                    await asyncio.sleep(self.delay_s)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % len(self.payload))
                    writer.write(self.payload)
                    await writer.drain()
                    self.served += 1
                finally:
                    self.open -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_an_invocation_holds_at_most_six_fetches_open_and_so_a_bounded_amount_of_response_bodies(engine: Engine) -> None:
    # 50 fetches at once of a 9 MiB body each: the host used to read all of them at once (RSS up by
    # about 700 MB for one request of a Worker capped at 32 MiB). Cloudflare lets an invocation hold
    # 6 connections open; the others wait their turn.
    engine.set_egress(allow=["127.0.0.1"])
    engine.set_limits("small", memory_mb=32, cpu_ms=30_000, wall_ms=60_000, sub_requests=50)
    async with CountingOrigin(9 * 2**20, 0.05) as origin:
        engine.deploy("greedy", f"""export default {{ async fetch() {{
  const got = await Promise.allSettled(Array.from({{ length: 50 }}, () => fetch('{origin.url}').then((r) => r.status)));
  return new Response(String(got.length));
}} }}""".encode(), tags=["small"])
        baseline = rss_mb()
        peak = baseline
        done = False

        async def sample() -> None:
            nonlocal peak
            while not done:
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.005)

        sampler = asyncio.ensure_future(sample())
        try:
            response = await engine.request("http://greedy.example.com/")
        finally:
            done = True
            await sampler
        assert response.trace["outcome"] in ("ok", "exceededMemory", "exceededCpu"), response.trace
        assert peak - baseline < 250, f"RSS rose by {peak - baseline:.0f} MB"
        assert origin.served >= 6 and origin.most_open <= 6


@pytest.mark.xfail(strict=True, reason=(
    "runtime change needed (jsruntime): an uncaught exception's name, message and stack go into the exception "
    "frame whole, so a thrown 5 MiB string makes a frame over the protocol's 1 MiB meta limit and the invocation "
    "ends as a ProtocolError (502, instance killed) instead of an exception with a truncated message, as log "
    "lines already are"))
async def test_a_huge_thrown_value_is_an_exception_with_a_truncated_message(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=2_000)
    engine.deploy("thrower", b"export default { fetch() { throw 'x'.repeat(5 << 20); } }", tags=["free"])
    response = await engine.request("http://thrower.example.com/")
    assert (response.status, response.trace["outcome"]) == (500, "exception")
    (exception,) = response.trace["exceptions"]
    assert exception["name"] != "ProtocolError" and exception["message"].startswith("xxxx")
    assert response.trace["newInstance"] is True and "instanceRetired" not in response.trace


@pytest.mark.xfail(strict=True, reason=(
    "runtime change needed (jsruntime): the runtime writes its frames with JSON.stringify, which honours a "
    "tenant's Object.prototype.toJSON; the runtime then stops ('it could not write a frame, because the Worker "
    "changed built-ins it needs'), where workerd answers normally. It holds for safety (no frame can be forged), "
    "not for compatibility"))
async def test_a_tenants_object_prototype_to_json_does_not_break_its_responses(engine: Engine) -> None:
    engine.deploy("dates", b"Object.prototype.toJSON = function () { return 'custom'; };"
                           b" export default { fetch() { console.log('hi'); return new Response('fine'); } }")
    response = await engine.request("http://dates.example.com/")
    assert (response.status, response.text, response.trace["outcome"]) == (200, "fine", "ok")


async def test_requests_at_once_to_a_script_whose_start_never_ends_start_one_instance_not_one_each(engine: Engine) -> None:
    # Each request that found no instance started one, and each start ran the endless top-level code
    # for its whole time: 8 requests at once were 8 starts (measured with wasmer-sdk 0.5.0: the starts
    # of one worker's sandbox took turns on one core, so about 2 s of CPU either way, but 8 processes,
    # and 8 guest threads, for nothing).
    engine.set_limits("free", cpu_ms=50, wall_ms=8_000)
    engine.deploy("sleeper", b"if (TOKEN === 's3cret') { for (;;) {} }\n"
                             b"addEventListener('fetch', (event) => event.respondWith(new Response('ok')));",
                  tags=["free"], secrets={"TOKEN": "s3cret"})
    before = process_cpu_s()
    responses = await asyncio.gather(*(engine.request("http://sleeper.example.com/") for _ in range(8)))
    spent = process_cpu_s() - before
    assert all(r.status == 500 and r.trace["outcome"] == "exception" for r in responses)
    messages = [r.trace["exceptions"][0]["message"] for r in responses]
    assert all("did not answer init with ready within 2 s" in m for m in messages)
    assert sum("a new instance of this version starts 2 s later at the earliest" in m for m in messages) >= 6
    assert engine.instance_stats()["sleeper"]["started"] <= 2
    assert spent < 6.0, f"{spent:.1f} s of CPU"
    assert await cpu_over(1.0) < 0.2
    # a version that starts again is served at once: the backoff belongs to the failing version
    engine.deploy("sleeper", b"addEventListener('fetch', (event) => event.respondWith(new Response('fixed')));", tags=["free"])
    assert (await engine.request("http://sleeper.example.com/")).text == "fixed"
