"""wrangler, unchanged, deploys a tenant Worker into a dispatch namespace of `wasmdeck serve`.

How it reaches wasmdeck (measured with wrangler 3.114 on Node 20; 4.x needs Node 22):

    CLOUDFLARE_API_BASE_URL=http://127.0.0.1:8788/client/v4   # the admin listener
    CLOUDFLARE_API_TOKEN=<the admin token>                     # sent as Authorization: Bearer
    CLOUDFLARE_ACCOUNT_ID=<any account id>
    wrangler deploy --dispatch-namespace NS

is exactly one request: a multipart `PUT /accounts/{account}/workers/dispatch/namespaces/NS/scripts/NAME
?excludeScript=true` with a `metadata` part (`main_module`, `bindings` from `[vars]` as `plain_text`,
`compatibility_date`, `compatibility_flags`) and the Worker bundled by esbuild into one part named
by its file name, typed `application/javascript+module`. wrangler prints a refusal as
`A request to the Cloudflare API (...) failed.` followed by the message and `[code: N]`.

wrangler uploads JavaScript (bundled by esbuild into one ES module), which wasmdeck deploys as a
JavaScript Worker and serves through the dispatch listener.

wrangler is found as `$WASMDECK_WRANGLER` or `wrangler` on PATH (`npm install wrangler@3.114` in any
folder gives `node_modules/.bin/wrangler`); without it these tests are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cloudflare_api import ACCOUNT, Serve, start_serve

WRANGLER = os.environ.get("WASMDECK_WRANGLER") or shutil.which("wrangler")
pytestmark = pytest.mark.skipif(
    WRANGLER is None or shutil.which("node") is None,
    reason="wrangler is not installed (npm install wrangler@3.114, then put node_modules/.bin on PATH or set WASMDECK_WRANGLER)",
)

TENANT = """export default {
  async fetch(request, env) {
    return new Response(`${env.GREETING} from ${new URL(request.url).hostname}`);
  },
};
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("wrangler")
    serve = start_serve(tmp / "w.db", tmp)
    try:
        yield serve
    finally:
        assert serve.stop() == 0, serve.stderr()


def wrangler_deploy(served: Serve, project: Path, name: str, namespace: str) -> subprocess.CompletedProcess[str]:
    project.mkdir(parents=True, exist_ok=True)
    (project / "index.js").write_text(TENANT)
    (project / "wrangler.toml").write_text(
        f'name = "{name}"\nmain = "index.js"\ncompatibility_date = "2024-09-01"\n\n[vars]\nGREETING = "hello from wrangler"\n'
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(project),  # wrangler writes its logs and settings under the home folder
        "XDG_CONFIG_HOME": str(project / ".config"),
        "CLOUDFLARE_API_BASE_URL": f"{served.admin_url}/client/v4",
        "CLOUDFLARE_API_TOKEN": served.token,
        "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
        "WRANGLER_SEND_METRICS": "false",
        "CI": "true",
    }
    assert WRANGLER is not None
    return subprocess.run([WRANGLER, "deploy", "--dispatch-namespace", namespace], cwd=project, env=env,
                          capture_output=True, text=True, timeout=180)


def test_wrangler_deploys_a_tenant_that_answers_through_dispatch(served: Serve, tmp_path: Path) -> None:
    result = wrangler_deploy(served, tmp_path / "tenant", "greeter", "default")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dispatch Namespace: default" in result.stdout
    answer = served.dispatch("greeter.example.com")
    assert answer.status_code == 200 and answer.text == "hello from wrangler from greeter.example.com"
