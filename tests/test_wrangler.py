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


DISPATCHER = """export default {
  async fetch(request, env) {
    const tenant = new URL(request.url).hostname.split(".")[0];
    try {
      const response = await env.tenants.get(tenant, {}, { limits: { cpuMs: 50 } }).fetch(request);
      const answer = new Response(response.body, response);
      answer.headers.set("x-dispatched-by", env.PLATFORM);
      return answer;
    } catch (e) {
      if (e.message.startsWith("Worker not found")) {
        return new Response(`no tenant named ${tenant}`, { status: 404 });
      }
      throw e;
    }
  },
};
"""


def wrangler_deploy(served: Serve, project: Path, name: str, namespace: str | None, *, script: str = TENANT,
                    config: str = '[vars]\nGREETING = "hello from wrangler"\n') -> subprocess.CompletedProcess[str]:
    """`wrangler deploy` of `script` as `name`: into dispatch namespace `namespace`, or (None) as a
    platform Worker of the account."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "index.js").write_text(script)
    (project / "wrangler.toml").write_text(
        f'name = "{name}"\nmain = "index.js"\ncompatibility_date = "2024-09-01"\nworkers_dev = false\n\n{config}'
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
    where = ["--dispatch-namespace", namespace] if namespace is not None else []
    return subprocess.run([WRANGLER, "deploy", *where], cwd=project, env=env, capture_output=True, text=True, timeout=180)


def test_wrangler_deploys_a_tenant_that_answers_through_dispatch(served: Serve, tmp_path: Path) -> None:
    result = wrangler_deploy(served, tmp_path / "tenant", "greeter", "default")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dispatch Namespace: default" in result.stdout
    answer = served.dispatch("greeter.example.com")
    assert answer.status_code == 200 and answer.text == "hello from wrangler from greeter.example.com"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Serve]:
    """A server of its own: its default namespace gets a dispatch Worker."""
    serve = start_serve(tmp_path / "platform.db", tmp_path)
    try:
        yield serve
    finally:
        assert serve.stop() == 0, serve.stderr()


def test_wrangler_deploys_the_platform_s_dispatch_worker_then_a_tenant_behind_it(platform: Serve, tmp_path: Path) -> None:
    """`wrangler deploy` without a namespace: the account's own Worker; its `dispatch_namespaces`
    binding makes it the namespace's dispatcher (wrangler first asks for the service and its
    deployments, which answer Cloudflare's not-found codes for a new Worker)."""
    config = '[vars]\nPLATFORM = "acme-platform"\n\n[[dispatch_namespaces]]\nbinding = "tenants"\nnamespace = "default"\n'
    result = wrangler_deploy(platform, tmp_path / "dispatcher", "front", None, script=DISPATCHER, config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Uploaded front" in result.stdout and "Current Version ID" in result.stdout
    assert platform.admin("GET", "/namespaces/default").json()["result"]["dispatchWorker"] == "front"

    tenant = wrangler_deploy(platform, tmp_path / "tenant", "shop", "default")
    assert tenant.returncode == 0, tenant.stdout + tenant.stderr
    answer = platform.dispatch("shop.example.com")
    assert answer.status_code == 200, answer.text
    assert answer.text == "hello from wrangler from shop.example.com"
    assert answer.headers["x-dispatched-by"] == "acme-platform"
    missing = platform.dispatch("nobody.example.com")
    assert missing.status_code == 404 and missing.text == "no tenant named nobody"

    # deployed again: the Worker exists now, and wrangler reads its deployments before uploading
    again = wrangler_deploy(platform, tmp_path / "dispatcher", "front", None, script=DISPATCHER.replace("no tenant", "none"),
                            config=config)
    assert again.returncode == 0, again.stdout + again.stderr
    deployments = platform.admin("GET", f"/client/v4/accounts/{ACCOUNT}/workers/scripts/front/deployments").json()
    assert [d["versions"][0]["percentage"] for d in deployments["result"]["deployments"]] == [100, 100]
    assert platform.dispatch("nobody.example.com").text == "none named nobody"
