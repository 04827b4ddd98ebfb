"""The JavaScript runtime answers as Cloudflare's workerd does.

Each Worker in tests/golden/workers/ was run under workerd by jsruntime/record_golden.py, which
recorded status, headers and body for each request in tests/golden/answers/. Here the same Worker
runs on engine/runtimes/javascript.wasm (driven over the Worker protocol by tests/js_driver.py)
and must give the same answers. An `exception` final frame counts as workerd's 500.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.js_driver import JsDriver
from wasmdeck.engine import Engine

GOLDEN = Path(__file__).resolve().parent / "golden"
HOST = "golden.example"
# headers the HTTP layer adds or drops (recorded answers already leave these out)
FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}


def _cases() -> list[tuple[str, int]]:
    cases = []
    for path in sorted((GOLDEN / "answers").glob("*.json")):
        record = json.loads(path.read_text())
        cases += [(path.stem, index) for index in range(len(record["answers"]))]
    return cases


CASES = _cases()


def test_every_golden_worker_has_recorded_answers() -> None:
    workers = {path.stem for path in (GOLDEN / "workers").glob("*.js")}
    answered = {path.stem for path in (GOLDEN / "answers").glob("*.json")}
    assert workers == answered
    assert len(CASES) >= 25


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jsruntime-golden-cache")


def _expected_body(answer: dict) -> bytes:
    body = answer["body"]
    return body["text"].encode() if "text" in body else base64.b64decode(body["base64"])


def _normalised(headers: list[list[str]]) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in headers if name.lower() not in FRAMING)


@pytest.mark.parametrize(("worker", "index"), CASES, ids=[f"{w}-{i}" for w, i in CASES])
async def test_answer_matches_workerd(worker: str, index: int, cache_root: Path) -> None:
    record = json.loads((GOLDEN / "answers" / f"{worker}.json").read_text())
    answer = record["answers"][index]
    request = answer["request"]
    source = (GOLDEN / "workers" / f"{worker}.js").read_text()
    body = request["body"].encode() if request["body"] is not None else b""
    headers = [("host", HOST), ("accept-encoding", "identity"), *((k, v) for k, v in request["headers"].items())]
    if request["body"] is not None:
        headers.append(("content-length", str(len(body))))
    async with JsDriver(cache_root) as driver:
        instance = await driver.start(source, filename=f"{worker}.js")
        result = await instance.fetch(request["method"], f"http://{HOST}{request['path']}", headers, body)
    if result.type == "exception":
        assert answer["status"] == 500, f"the runtime threw {result.final} where workerd answered {answer['status']}"
        return
    assert result.status == answer["status"], result.response_body[:2000]
    assert _normalised(result.headers) == _normalised(answer["headers"])
    expected = _expected_body(answer)
    content_type = dict(_normalised(answer["headers"])).get("content-type", "")
    if content_type.startswith("application/json"):
        assert json.loads(result.response_body) == json.loads(expected)
    else:
        assert result.response_body == expected


WORKERS = sorted(path.stem for path in (GOLDEN / "answers").glob("*.json"))


@pytest.mark.parametrize("worker", WORKERS)
async def test_answers_through_the_engine_match_workerd(worker: str, db_path: Path, wasmer_cache: Path) -> None:
    """The same golden Workers deployed as JavaScript Workers and requested through `Engine.dispatch`
    (warm instances of the runtime, the engine's HTTP model, its trace items), at the URLs workerd saw
    (a dispatch function routes every request to the Worker under test)."""
    record = json.loads((GOLDEN / "answers" / f"{worker}.json").read_text())
    async with Engine(db_path, cache_dir=wasmer_cache, dispatch_function=lambda request, namespace: worker) as engine:
        await _through_the_engine(engine, worker, record)


async def _through_the_engine(engine: Engine, worker: str, record: dict) -> None:
    deployed = engine.deploy(worker, (GOLDEN / "workers" / f"{worker}.js").read_bytes(), filename=f"{worker}.js")
    assert deployed.language == "javascript"
    for answer in record["answers"]:
        request = answer["request"]
        body = request["body"].encode() if request["body"] is not None else b""
        headers = [("host", HOST), ("accept-encoding", "identity"), *((k, v) for k, v in request["headers"].items())]
        if request["body"] is not None:
            headers.append(("content-length", str(len(body))))
        response = await engine.request(f"http://{HOST}{request['path']}", method=request["method"],
                                        headers=headers, body=body)
        if response.finished is not None:
            await response.finished
        where = f"{worker} {request['method']} {request['path']}"
        if response.trace["outcome"] == "exception" and response.status == 500:
            assert answer["status"] == 500, f"{where}: the Worker threw {response.trace['exceptions']} where workerd answered {answer['status']}"
            continue
        assert response.trace["outcome"] == "ok", f"{where}: {response.trace}"
        assert response.status == answer["status"], f"{where}: {response.body[:2000]!r}"
        assert _normalised([list(h) for h in response.headers]) == _normalised(answer["headers"]), where
        expected = _expected_body(answer)
        content_type = dict(_normalised(answer["headers"])).get("content-type", "")
        if content_type.startswith("application/json"):
            assert json.loads(response.body) == json.loads(expected), where
        else:
            assert response.body == expected, where
