"""The admin API's bearer token: created on first start, kept in a 0600 file, compared in constant time.

The file sits beside the database by default (`<db>.admin-token`). It is written atomically
(a 0600 temporary file, then linked into place, so a reader never sees half a token and two
processes starting at once agree on one token). An existing file that any group or other user
may access is refused rather than used: the token in it may already have leaked.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from wasmdeck.engine import WasmdeckError

TOKEN_SUFFIX = ".admin-token"


class TokenFileError(WasmdeckError):
    """The token file cannot be used (too open, empty, or unreadable)."""


def default_token_path(db_path: str | os.PathLike[str]) -> Path:
    """`<db>.admin-token`, beside the database."""
    db = Path(db_path)
    return db.with_name(db.name + TOKEN_SUFFIX)


def _read_existing(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as error:
        raise TokenFileError(f"cannot read the admin token file {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"the admin token file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise TokenFileError(
            f"the admin token file {path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run `chmod 600 {path}` or delete it to make a new token"
        )
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenFileError(f"cannot read the admin token file {path}: {error}") from None
    if not token:
        raise TokenFileError(f"the admin token file {path} is empty; delete it to make a new token")
    return token


def load_or_create_token(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """Return `(token, created)`: the token in `path`, or a new one written there with mode 0600."""
    target = Path(path)
    if target.exists():
        return _read_existing(target), False
    target.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, target)  # never replaces a token another process wrote meanwhile
        except FileExistsError:
            return _read_existing(target), False
    finally:
        temporary.unlink(missing_ok=True)
    return token, True


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an `Authorization` header value is `Bearer <expected>`, compared in constant time."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8"))
