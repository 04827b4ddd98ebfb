"""Secrets: write-only values per Worker, sealed at rest with a key kept outside the database.

A secret reaches its Worker's guest environment like a var, and nothing else ever shows its
value: no API answer, no trace item, no export, no log line. Values are sealed with
AES-256-GCM (`cryptography`); the 32-byte key lives in its own file, `<db>.secrets-key` by
default (beside the admin token `<db>.admin-token`), mode 0600, never in the database, so a
copy of the database alone opens no secret. Each value is bound to its place (namespace,
worker, name) as associated data, so a ciphertext moved to another row of the database does
not open there either, and each row records which key sealed it (`key_id`, a fingerprint that
reveals nothing about the key), so a wrong key file is told apart from a missing one.

The key file is created on the first `put`, never when sealed secrets already exist: a key
file that is missing while secrets exist is reported (`SecretsUnavailable`), never replaced,
because a new key could open none of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets as token_source
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import InvalidInput, WasmdeckError
from .validation import check_vars

KEY_SUFFIX = ".secrets-key"
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_SECRET_BYTES = 5 * 1024  # Cloudflare's size limit for one secret
MAX_SECRETS_PER_WORKER = 128  # Cloudflare's limit of environment variables and secrets per Worker
_KEY_FILE_HEADER = "wasmdeck-secrets-key-v1:"


class SecretsUnavailable(WasmdeckError):
    """Sealed secrets cannot be opened (the key file is missing, unreadable or not theirs)."""


@dataclass(frozen=True)
class SealedSecret:
    """One secret as the database holds it: its name in clear, its value sealed."""

    name: str
    key_id: str
    nonce: bytes
    ciphertext: bytes


def default_key_path(db_path: str | os.PathLike[str]) -> Path:
    """`<db>.secrets-key`, beside the database and its admin token file."""
    db = Path(db_path)
    return db.with_name(db.name + KEY_SUFFIX)


def check_secret(name: str, value: str) -> None:
    """A secret's name follows the var rules (an environment variable name that shadows no CGI
    meta-variable); its value is text of at most 5 KiB without NUL."""
    if not isinstance(value, str):
        raise InvalidInput(f"secret {name} must be text")
    try:
        check_vars({name: value})
    except InvalidInput as error:  # the var rules, told as secret rules (no message holds the value)
        raise InvalidInput(str(error).replace("var ", "secret ", 1)) from None
    size = len(value.encode("utf-8"))
    if size > MAX_SECRET_BYTES:
        raise InvalidInput(f"secret {name} is {size} bytes, over the {MAX_SECRET_BYTES} byte limit for one secret")


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"wasmdeck secrets key id\0" + key).hexdigest()[:16]


def _associated_data(namespace: str, worker: str, name: str) -> bytes:
    return f"wasmdeck secret\0{namespace}\0{worker}\0{name}".encode()


class SecretBox:
    """Seals and opens a database's secrets with the key in `key_path`."""

    def __init__(self, key_path: str | os.PathLike[str]) -> None:
        self.key_path = Path(key_path)
        self._key: bytes | None = None

    # -- the key file -------------------------------------------------------------------

    def _read_key(self) -> bytes | None:
        """The key, or None when the file does not exist; a file that exists but cannot be used is refused."""
        if self._key is not None:
            return self._key
        try:
            info = self.key_path.stat()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SecretsUnavailable(f"cannot read the secrets key file {self.key_path}: {error.strerror or error}") from None
        if not stat.S_ISREG(info.st_mode):
            raise SecretsUnavailable(f"the secrets key file {self.key_path} is not a regular file")
        if info.st_mode & 0o077:
            raise SecretsUnavailable(
                f"the secrets key file {self.key_path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run `chmod 600 {self.key_path}`"
            )
        try:
            text = self.key_path.read_text(encoding="ascii").strip()
            if not text.startswith(_KEY_FILE_HEADER):
                raise ValueError("no header")
            key = base64.urlsafe_b64decode(text[len(_KEY_FILE_HEADER):].encode("ascii"))
        except (OSError, UnicodeDecodeError, ValueError, binascii.Error):
            raise SecretsUnavailable(f"the secrets key file {self.key_path} does not hold a wasmdeck secrets key") from None
        if len(key) != KEY_BYTES:
            raise SecretsUnavailable(f"the secrets key file {self.key_path} does not hold a wasmdeck secrets key")
        self._key = key
        return key

    def _create_key(self) -> bytes:
        """Write a new key with mode 0600, atomically (never replacing a key another process wrote meanwhile)."""
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        temporary = self.key_path.with_name(f".{self.key_path.name}.{token_source.token_hex(6)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(_KEY_FILE_HEADER + base64.urlsafe_b64encode(key).decode("ascii") + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, self.key_path)
            except FileExistsError:
                found = self._read_key()
                assert found is not None
                return found
        finally:
            temporary.unlink(missing_ok=True)
        self._key = key
        return key

    def _missing(self, sealed_count: int) -> SecretsUnavailable:
        return SecretsUnavailable(
            f"the secrets key file {self.key_path} is missing but the database holds {sealed_count} sealed "
            f"secret{'' if sealed_count == 1 else 's'}; restore that file (a new key could open none of them), "
            "or delete those secrets and set them again"
        )

    # -- sealing and opening ------------------------------------------------------------

    def seal(self, namespace: str, worker: str, values: Mapping[str, str], *, sealed_count: int) -> list[SealedSecret]:
        """Seal `values` for `worker`. `sealed_count` is how many secrets the database holds already:
        with none, a missing key file is created; with some, it must be there."""
        if not values:
            return []
        key = self._read_key()
        if key is None:
            if sealed_count:
                raise self._missing(sealed_count)
            key = self._create_key()
        box, key_id = AESGCM(key), _key_id(key)
        found: list[SealedSecret] = []
        for name, value in values.items():
            check_secret(name, value)
            nonce = os.urandom(NONCE_BYTES)
            found.append(SealedSecret(name, key_id, nonce, box.encrypt(nonce, value.encode("utf-8"), _associated_data(namespace, worker, name))))
        return found

    def open(self, namespace: str, worker: str, sealed: Iterable[SealedSecret], *, sealed_count: int) -> dict[str, str]:
        """The values of `worker`'s sealed secrets; `SecretsUnavailable` (one sentence) when they cannot be opened."""
        rows = list(sealed)
        if not rows:
            return {}
        key = self._read_key()
        if key is None:
            raise self._missing(sealed_count)
        box, key_id = AESGCM(key), _key_id(key)
        values: dict[str, str] = {}
        for row in rows:
            if row.key_id != key_id:
                raise SecretsUnavailable(
                    f"secret {row.name} of worker {worker!r} was sealed with another key than the one in {self.key_path}; "
                    "restore the key file it was sealed with, or set the secret again"
                )
            try:
                values[row.name] = box.decrypt(row.nonce, row.ciphertext, _associated_data(namespace, worker, row.name)).decode("utf-8")
            except (InvalidTag, UnicodeDecodeError):
                raise SecretsUnavailable(
                    f"secret {row.name} of worker {worker!r} does not open with the key in {self.key_path}: "
                    "the database row was altered or belongs to another worker; set the secret again"
                ) from None
        return values
