"""Secrets (`engine.secrets`): write-only values in a Worker's guest environment, sealed at rest
with a key file kept beside the database and never in it. Real modules in real sandboxes, a real
SQLite file, the CLI as a subprocess, the admin API over httpx, the remote client over loopback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from wasmdeck.client import LocalClient
from wasmdeck.client.remote import RemoteClient
from wasmdeck.engine import Engine, InvalidInput, NotFound
from wasmdeck.engine.manifest import apply_manifest, export_manifest
from wasmdeck.engine.secrets import MAX_SECRET_BYTES, MAX_SECRETS_PER_WORKER, SecretsUnavailable, default_key_path
from wasmdeck.server.admin_app import create_admin_app

from .conftest import fixture_module, protocol_module
from .test_cli import _env, ok, wasmdeck
from .test_remote_client import TOKEN, served

SECRET = "s3cr3t-Value-9f2c1e"  # unlikely to appear anywhere by chance
ECHO = fixture_module("echo")


def env_of(response: Any) -> dict[str, str]:
    return json.loads(response.body)["env"]


def database_bytes(db: Path) -> bytes:
    return b"".join(path.read_bytes() for path in db.parent.glob(db.name + "*") if path.is_file() and not path.name.endswith(".secrets-key"))


# -- the guest environment, and nowhere else -------------------------------------------------------


async def test_a_secret_reaches_the_wcgi_guest_and_no_trace_or_record(engine: Engine) -> None:
    engine.deploy("echo", ECHO, vars={"GREETING": "hi"})
    worker = engine.put_secret("echo", "API_KEY", SECRET)
    assert worker.version == 2 and worker.vars == {"GREETING": "hi"}  # a new version; the record holds no value
    assert engine.secret_names("echo") == ["API_KEY"]
    response = await engine.request("http://echo.example.com/")
    env = env_of(response)
    assert env["API_KEY"] == SECRET and env["GREETING"] == "hi"
    assert SECRET not in json.dumps(response.trace)
    await engine.flush_traces()
    assert SECRET not in json.dumps(engine.recent_traces(10))
    assert [v.message for v in engine.versions("echo")] == ["", "secret API_KEY set"]
    assert SECRET not in repr(engine.worker("echo")) and SECRET not in json.dumps(engine.worker("echo").as_dict())
    assert SECRET.encode() not in database_bytes(engine.db_path)


async def test_a_secret_change_applies_from_the_next_request(engine: Engine) -> None:
    engine.deploy("echo", ECHO)
    engine.put_secret("echo", "TOKEN", "first")
    assert env_of(await engine.request("http://echo.example.com/"))["TOKEN"] == "first"
    engine.put_secret("echo", "TOKEN", "second")
    assert env_of(await engine.request("http://echo.example.com/"))["TOKEN"] == "second"
    engine.delete_secret("echo", "TOKEN")
    assert "TOKEN" not in env_of(await engine.request("http://echo.example.com/"))
    assert [v.message for v in engine.versions("echo")][1:] == ["secret TOKEN set", "secret TOKEN set", "secret TOKEN deleted"]


async def test_a_secret_reaches_a_protocol_guest(engine: Engine, origin: Any) -> None:
    """The Outbound Worker adds `Authorization: Bearer $API_TOKEN`; the token is its secret."""
    engine.deploy("shop", protocol_module("fetcher"))
    engine.deploy("gateway", protocol_module("outbound-credential"))
    engine.put_secret("gateway", "API_TOKEN", SECRET)
    engine.set_egress(allow=[origin.netloc])
    engine.set_outbound("gateway", ["customer_name"])
    response = await engine.request(f"http://shop.example.com/?url={origin.url('/echo')}")
    assert response.status == 200 and response.text.startswith("1 200"), response.text
    assert origin.seen[-1].headers["authorization"] == f"Bearer {SECRET}"
    await engine.flush_traces()
    assert SECRET not in json.dumps(engine.recent_traces(20))


async def test_deploy_keeps_secrets_unless_told_and_sets_them_atomically(engine: Engine) -> None:
    engine.deploy("echo", ECHO, secrets={"A": "1", "B": "2"})
    assert engine.secret_names("echo") == ["A", "B"] and len(engine.versions("echo")) == 1
    engine.deploy("echo", ECHO, tags=["x"])  # keeps them
    assert engine.secret_names("echo") == ["A", "B"]
    engine.deploy("echo", ECHO, secrets={"C": "3"}, keep_secrets=["A"])
    assert engine.secret_names("echo") == ["A", "C"]
    engine.deploy("echo", ECHO, keep_secrets=False)
    assert engine.secret_names("echo") == []
    with pytest.raises(InvalidInput, match="both a var and a secret"):
        engine.deploy("echo", ECHO, vars={"A": "x"}, secrets={"A": "y"})
    assert engine.worker("echo").version == 4 and engine.secret_names("echo") == []


# -- refusals: one sentence, nothing changed --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("REQUEST_METHOD", "x", "secret REQUEST_METHOD is reserved"),
        ("HTTP_X", "x", "secret HTTP_X is reserved"),
        ("1BAD", "x", "secret name '1BAD' is not an environment variable name"),
        ("A-B", "x", "not an environment variable name"),
        ("OK", "a\x00b", "secret OK contains a NUL character"),
        ("BIG", "x" * (MAX_SECRET_BYTES + 1), f"over the {MAX_SECRET_BYTES} byte limit"),
        ("GREETING", "x", "GREETING is both a var and a secret"),
    ],
)
async def test_bad_secrets_are_refused_and_change_nothing(engine: Engine, key: str, value: str, message: str) -> None:
    engine.deploy("echo", ECHO, vars={"GREETING": "hi"})
    with pytest.raises(InvalidInput, match=message) as refused:
        engine.put_secret("echo", key, value)
    assert "\n" not in str(refused.value) and "a\x00b" not in str(refused.value)
    assert engine.worker("echo").version == 1 and engine.secret_names("echo") == []


async def test_unknown_workers_secrets_and_var_clashes_are_refused(engine: Engine) -> None:
    with pytest.raises(NotFound, match="worker 'nope' does not exist"):
        engine.put_secret("nope", "A", "x")
    assert not default_key_path(engine.db_path).exists()  # no key file made for a refused put
    engine.deploy("echo", ECHO)
    engine.put_secret("echo", "TOKEN", "x")
    with pytest.raises(NotFound, match="has no secret named OTHER"):
        engine.delete_secret("echo", "OTHER")
    with pytest.raises(InvalidInput, match="TOKEN is both a var and a secret"):
        engine.set_vars("echo", {"TOKEN": "shadow"})
    with pytest.raises(InvalidInput, match="TOKEN is both a var and a secret"):
        engine.deploy("echo", ECHO, vars={"TOKEN": "shadow"})
    assert engine.worker("echo").version == 2 and engine.worker("echo").vars == {}


async def test_a_worker_holds_at_most_128_secrets(engine: Engine) -> None:
    engine.deploy("echo", ECHO, secrets={f"S{i}": "v" for i in range(MAX_SECRETS_PER_WORKER)})
    with pytest.raises(InvalidInput, match=f"at most {MAX_SECRETS_PER_WORKER} secrets"):
        engine.put_secret("echo", "ONE_MORE", "v")
    assert len(engine.secret_names("echo")) == MAX_SECRETS_PER_WORKER and engine.worker("echo").version == 1


async def test_deleting_a_worker_deletes_its_secrets(engine: Engine) -> None:
    engine.deploy("echo", ECHO, secrets={"A": "1"})
    engine.delete("echo")
    engine.deploy("echo", ECHO)
    assert engine.secret_names("echo") == []
    with sqlite3.connect(engine.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM secrets").fetchone()[0] == 0


# -- at rest: the key file ---------------------------------------------------------------------------


async def test_the_key_file_is_0600_beside_the_database_and_the_admin_token(engine: Engine) -> None:
    engine.deploy("echo", ECHO)
    engine.put_secret("echo", "A", SECRET)
    key = engine.db_path.with_name(engine.db_path.name + ".secrets-key")
    assert key == default_key_path(engine.db_path) and key.exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert SECRET not in key.read_text()


async def test_a_copied_database_alone_opens_no_secret(engine: Engine, tmp_path: Path, wasmer_cache: Path) -> None:
    """The key file is missing beside the copy: Workers with secrets fail with one sentence (500,
    internalError), other Workers serve, names can be listed and secrets deleted, a new value is refused."""
    engine.deploy("echo", ECHO)
    engine.deploy("plain", ECHO)
    engine.put_secret("echo", "API_KEY", SECRET)
    await engine.close()
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    for path in engine.db_path.parent.glob(engine.db_path.name + "*"):
        if path.is_file() and not path.name.endswith(".secrets-key"):
            shutil.copy(path, elsewhere / path.name)
    copied = elsewhere / engine.db_path.name
    assert SECRET.encode() not in database_bytes(copied)
    with sqlite3.connect(copied) as db:  # the sealed value as stored is no longer than the value plus the GCM tag
        (ciphertext,) = db.execute("SELECT ciphertext FROM secrets").fetchone()
        assert SECRET.encode() not in ciphertext and len(ciphertext) == len(SECRET) + 16
    async with Engine(copied, cache_dir=wasmer_cache) as copy:
        response = await copy.request("http://echo.example.com/")
        assert response.status == 500 and response.trace["outcome"] == "internalError"
        assert "the secrets key file" in response.text and "is missing but the database holds 1 sealed secret" in response.text
        assert response.trace["exceptions"][0]["name"] == "SecretsUnavailable" and SECRET not in response.text
        assert (await copy.request("http://plain.example.com/")).status == 200
        assert copy.secret_names("echo") == ["API_KEY"]
        with pytest.raises(SecretsUnavailable, match="restore that file"):
            copy.put_secret("plain", "OTHER", "x")
        assert not default_key_path(copied).exists()  # never replaced by a new key
        copy.delete_secret("echo", "API_KEY")
        assert "API_KEY" not in env_of(await copy.request("http://echo.example.com/"))
        copy.put_secret("echo", "API_KEY", "fresh")  # no sealed secrets left: a new key is made
        assert env_of(await copy.request("http://echo.example.com/"))["API_KEY"] == "fresh"
    async with Engine(engine.db_path, cache_dir=wasmer_cache) as original:  # the original and its key still work
        assert env_of(await original.request("http://echo.example.com/"))["API_KEY"] == SECRET


async def test_another_key_or_a_moved_row_does_not_open(engine: Engine, wasmer_cache: Path) -> None:
    engine.deploy("alpha", ECHO, secrets={"TOKEN": "alpha-token"})
    engine.deploy("beta", ECHO, secrets={"TOKEN": "beta-token"})
    with sqlite3.connect(engine.db_path) as db:  # copy alpha's sealed value into beta's row
        row = db.execute("SELECT s.nonce, s.ciphertext FROM secrets s JOIN workers w ON w.id = s.worker_id WHERE w.name = 'alpha'").fetchone()
        db.execute("UPDATE secrets SET nonce = ?, ciphertext = ? WHERE worker_id = (SELECT id FROM workers WHERE name = 'beta')", row)
        db.execute("UPDATE config_version SET version = version + 1")
    response = await engine.request("http://beta.example.com/")
    assert response.status == 500 and "does not open with the key" in response.text and "alpha-token" not in response.text
    assert env_of(await engine.request("http://alpha.example.com/"))["TOKEN"] == "alpha-token"
    await engine.close()
    key = default_key_path(engine.db_path)
    key.unlink()
    async with Engine(engine.db_path.with_name("other.db"), cache_dir=wasmer_cache) as other:
        other.deploy("x", ECHO, secrets={"A": "b"})  # makes other.db.secrets-key
    os.replace(default_key_path(engine.db_path.with_name("other.db")), key)
    async with Engine(engine.db_path, cache_dir=wasmer_cache) as reopened:
        response = await reopened.request("http://alpha.example.com/")
        assert response.status == 500 and "was sealed with another key than the one in" in response.text


async def test_a_key_file_others_can_read_is_refused(engine: Engine, wasmer_cache: Path) -> None:
    engine.deploy("echo", ECHO, secrets={"A": "b"})
    await engine.close()
    key = default_key_path(engine.db_path)
    key.chmod(0o644)
    async with Engine(engine.db_path, cache_dir=wasmer_cache) as reopened:
        response = await reopened.request("http://echo.example.com/")
        assert response.status == 500 and "is accessible to other users (mode 0644)" in response.text
    key.write_text("not a key\n")
    key.chmod(0o600)
    async with Engine(engine.db_path, cache_dir=wasmer_cache) as reopened:
        response = await reopened.request("http://echo.example.com/")
        assert response.status == 500 and "does not hold a wasmdeck secrets key" in response.text


# -- export -------------------------------------------------------------------------------------------


async def test_export_writes_secret_names_with_a_note_never_values(engine: Engine, tmp_path: Path, wasmer_cache: Path) -> None:
    engine.deploy("echo", ECHO, vars={"GREETING": "hi"}, secrets={"API_KEY": SECRET, "DB_PASSWORD": SECRET + "2"})
    manifest = export_manifest(engine, tmp_path / "out")
    text = manifest.read_text()
    assert SECRET not in text and all(SECRET.encode() not in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert tomllib.loads(text)["namespaces"]["default"]["workers"]["echo"]["secrets"] == ["API_KEY", "DB_PASSWORD"]
    assert "# secret values are never exported: set each with `wasmdeck secret put echo NAME --namespace default`" in text
    async with Engine(tmp_path / "fresh.db", cache_dir=wasmer_cache) as fresh:  # the export applies, and names no value
        apply_manifest(fresh, manifest)
        assert fresh.worker("echo").vars == {"GREETING": "hi"} and fresh.secret_names("echo") == []
        assert export_manifest(fresh, tmp_path / "again").read_text() != text  # the names are not invented


def test_a_manifest_with_bad_secret_names_is_refused(tmp_path: Path) -> None:
    shutil.copy(ECHO, tmp_path / "echo.wasm")
    (tmp_path / "platform.toml").write_text('[namespaces.default.workers.echo]\nmodule = "echo.wasm"\nsecrets = ["REQUEST_METHOD"]\n')
    result = wasmdeck(tmp_path, "apply", str(tmp_path / "platform.toml"))
    assert result.returncode == 1 and "secrets" in result.stderr and "reserved" in result.stderr


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_secret_put_reads_stdin_and_never_prints_the_value(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "echo", str(ECHO))
    out = ok(tmp_path, "secret", "put", "echo", "API_KEY", input=SECRET + "\n")
    assert out.strip() == "secret API_KEY of worker echo set (version 2); its value is never shown"
    assert ok(tmp_path, "secret", "list", "echo").split() == ["API_KEY"]
    assert json.loads(ok(tmp_path, "secret", "list", "echo", "--json"))["secrets"] == ["API_KEY"]
    answered = json.loads(ok(tmp_path, "request", "--json", "http://echo.example.com/"))
    assert json.loads(answered["body"])["env"]["API_KEY"] == SECRET  # one trailing newline dropped
    assert SECRET not in json.dumps(answered["trace"])
    for listing in (ok(tmp_path, "versions", "echo"), ok(tmp_path, "list", "--json"), ok(tmp_path, "export")):
        assert SECRET not in listing
    assert ok(tmp_path, "secret", "delete", "echo", "API_KEY").strip() == "secret API_KEY of worker echo deleted (version 3)"
    assert ok(tmp_path, "secret", "list", "echo").strip() == ""


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("put", "nope", "A"), "x", "worker 'nope' does not exist"),
        (("put", "echo", "A"), "", "the secret value on stdin is empty"),
        (("put", "echo", "A"), "x" * (MAX_SECRET_BYTES + 1), f"over the {MAX_SECRET_BYTES} byte limit"),
        (("put", "echo", "PATH_INFO"), "x", "secret PATH_INFO is reserved"),
        (("delete", "echo", "A"), None, "has no secret named A"),
        (("list", "nope"), None, "worker 'nope' does not exist"),
    ],
)
def test_cli_secret_refusals_are_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...], stdin: str | None, message: str) -> None:
    ok(tmp_path, "deploy", "echo", str(ECHO))
    result = wasmdeck(tmp_path, "secret", *args, input=stdin if stdin is not None else "")
    assert result.returncode == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and ok(tmp_path, "secret", "list", "echo").strip() == ""


def test_cli_secret_value_is_never_an_argument(tmp_path: Path) -> None:
    result = wasmdeck(tmp_path, "secret", "put", "echo", "A", SECRET)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_cli_reads_non_utf8_stdin_as_a_refusal(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "echo", str(ECHO))
    command = [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(tmp_path / "w.db"), "secret", "put", "echo", "A"]
    result = subprocess.run(command, input=b"\xff\xfe", capture_output=True, env=_env(None), timeout=60)
    assert result.returncode == 1 and b"not UTF-8 text" in result.stderr


# -- the admin API and both client transports ----------------------------------------------------------


async def test_admin_api_secrets_are_write_only(engine: Engine) -> None:
    engine.deploy("echo", ECHO, vars={"GREETING": "hi"})
    app = create_admin_app(engine, TOKEN)
    answers: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            response = await client.request(method, path, **kwargs)
            answers.append(response.text)
            return response

        put = await call("PUT", "/namespaces/default/scripts/echo/secrets/API_KEY", json={"value": SECRET})
        assert put.status_code == 200 and put.json()["result"] == ["API_KEY"]
        assert (await call("GET", "/namespaces/default/scripts/echo/secrets")).json()["result"] == ["API_KEY"]
        await engine.request("http://echo.example.com/")
        for path in ("/namespaces/default/scripts/echo", "/namespaces/default/scripts/echo/vars",
                     "/namespaces/default/scripts/echo/versions", "/namespaces/default/scripts", "/traces"):
            assert (await call("GET", path)).status_code == 200
        refused = await call("PUT", "/namespaces/default/scripts/echo/secrets/GREETING", json={"value": "x"})
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "secret"
        assert (await call("PUT", "/namespaces/default/scripts/echo/secrets/A", json={"value": 1})).status_code == 400
        assert (await call("PUT", "/namespaces/default/scripts/echo/secrets/A", json={"value": "x", "x": 1})).status_code == 400
        assert (await call("PUT", "/namespaces/default/scripts/nope/secrets/A", json={"value": "x"})).status_code == 404
        assert (await call("DELETE", "/namespaces/default/scripts/echo/secrets/NOPE")).status_code == 404
        default_key_path(engine.db_path).rename(engine.db_path.with_name("key.bak"))
        engine.secret_box._key = None  # as a freshly started server would find it
        missing = await call("PUT", "/namespaces/default/scripts/echo/secrets/B", json={"value": "x"})
        assert missing.status_code == 503 and missing.json()["errors"][0]["code"] == "secrets_unavailable"
        deleted = await call("DELETE", "/namespaces/default/scripts/echo/secrets/API_KEY")
        assert deleted.status_code == 200 and deleted.json()["result"] == []
    assert all(SECRET not in answer for answer in answers)


async def test_both_client_transports_set_list_and_delete_secrets(engine: Engine) -> None:
    engine.deploy("echo", ECHO)
    local = LocalClient(engine)
    worker = await local.put_secret("echo", "LOCAL", "one", "default")
    assert worker.version == 2 and await local.secret_names("echo", "default") == ["LOCAL"]
    async with served(engine) as server:
        remote = RemoteClient(server.admin_url, TOKEN)
        try:
            worker = await remote.put_secret("echo", "REMOTE", SECRET, "default")
            assert worker == engine.worker("echo") and worker.version == 3
            assert await remote.secret_names("echo", "default") == ["LOCAL", "REMOTE"]
            with pytest.raises(InvalidInput, match="reserved"):
                await remote.put_secret("echo", "SCRIPT_NAME", "x", "default")
            with pytest.raises(NotFound, match="has no secret named NOPE"):
                await remote.delete_secret("echo", "NOPE", "default")
            assert (await remote.delete_secret("echo", "LOCAL", "default")).version == 4
        finally:
            await remote.close()
    assert engine.secret_names("echo") == ["REMOTE"]
    assert env_of(await engine.request("http://echo.example.com/"))["REMOTE"] == SECRET
    assert (await local.delete_secret("echo", "REMOTE", "default")).version == 5
