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
