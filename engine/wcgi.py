"""WCGI: CGI/1.1 (RFC 3875) between an HTTP request and a WASI guest's stdio.

The request becomes meta-variables in the environment plus the body on stdin; the
guest's stdout is parsed as a CGI response: a header block (`Status`, `Content-Type`,
`Location`, others passed through), a blank line, then the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .http import Headers, Request
from .validation import control_character

ABI = "wcgi"
SERVER_SOFTWARE = "wasmdeck/0.1"
MAX_RESPONSE_HEADER_BYTES = 64 * 1024
# Headers the engine sets itself or that must not cross the CGI boundary.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "proxy-connection"})
_ENV_SAFE_HEADER = re.compile(r"^[A-Za-z0-9-]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# Set on every request (so a runtime may keep them in the sandbox and pass only changes).
ALWAYS_SET = frozenset(
    {
        "GATEWAY_INTERFACE",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
        "SERVER_NAME",
        "SERVER_PORT",
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_URI",
        "REMOTE_ADDR",
    }
)


class InvalidResponse(Exception):
    """The guest's stdout is not a CGI response; the message says why."""


@dataclass
class CgiResponse:
    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


def environment(
    request: Request, *, script_name: str = "", path_info: str | None = None, variables: dict[str, str] | None = None
) -> dict[str, str]:
    """The guest's environment: worker vars first, then meta-variables, which always win."""
    parts = urlsplit(request.url)
    raw_path = parts.path or "/"
    env: dict[str, str] = dict(variables or {})
    header_vars: dict[str, str] = {}
    for name, value in request.headers:
        lowered = name.lower()
        if lowered in ("content-type", "content-length", "proxy") or lowered in _HOP_BY_HOP:
            continue
        if not _ENV_SAFE_HEADER.match(name):
            # `X_Foo` would collide with `X-Foo` once mapped to HTTP_X_FOO; drop it as nginx does.
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        header_vars[key] = f"{header_vars[key]}, {value}" if key in header_vars else value
    env.update(header_vars)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    env.update(
        {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SERVER_NAME": request.host,
            "SERVER_PORT": str(port),
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": script_name,
            "PATH_INFO": unquote(path_info if path_info is not None else raw_path),
            "QUERY_STRING": parts.query,
            "REQUEST_URI": raw_path + (f"?{parts.query}" if parts.query else ""),
            "REMOTE_ADDR": request.remote_addr,
        }
    )
    if parts.scheme == "https":
        env["HTTPS"] = "on"
    content_type = request.header("content-type")
    if content_type:
        env["CONTENT_TYPE"] = content_type
    if request.body or request.header("content-length") is not None:
        env["CONTENT_LENGTH"] = str(len(request.body))
    return env


def _status(value: str) -> int:
    code = value.strip().split(" ", 1)[0]
    if not (len(code) == 3 and code.isdigit() and 100 <= int(code) <= 599):
        raise InvalidResponse(f"the Worker sent an invalid Status header {value.strip()[:40]!r}")
    return int(code)


def parse_response(stdout: bytes) -> CgiResponse:
    """Split a CGI response into status, headers and body (RFC 3875 section 6)."""
    crlf, lf = stdout.find(b"\r\n\r\n"), stdout.find(b"\n\n")
    candidates = [(i, 4) for i in (crlf,) if i >= 0] + [(i, 2) for i in (lf,) if i >= 0]
    if not candidates:
        if not stdout:
            raise InvalidResponse("the Worker wrote nothing to stdout: a CGI response needs a header block")
        raise InvalidResponse("the Worker's output has no CGI header block (headers, then a blank line)")
    end, separator = min(candidates)
    if end > MAX_RESPONSE_HEADER_BYTES:
        raise InvalidResponse(f"the Worker's response headers exceed {MAX_RESPONSE_HEADER_BYTES // 1024} KiB")
    head, body = stdout[:end], stdout[end + separator:]
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as error:  # pragma: no cover - latin-1 decodes every byte
        raise InvalidResponse("the Worker's response headers are not text") from error
    status: int | None = None
    location: str | None = None
    content_type: str | None = None
    headers: Headers = []
    for line in text.replace("\r\n", "\n").split("\n"):
        name, sep, value = line.partition(":")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not sep or not _HEADER_NAME.match(name):
            raise InvalidResponse(f"the Worker sent a malformed header line {line[:60]!r}")
        bad = control_character(value)
        if bad is not None:
            raise InvalidResponse(f"the Worker sent header {name} with a control character ({bad}) in its value, which HTTP forbids")
        lowered = name.lower()
        if lowered == "status":
            status = _status(value)
            continue
        if lowered in _HOP_BY_HOP or lowered == "content-length":
            continue
        if lowered == "location":
            location = value
        if lowered == "content-type":
            content_type = value
        headers.append((name, value))
    if content_type is None and location is None:
        raise InvalidResponse("the Worker's response has neither a Content-Type nor a Location header")
    if status is None:
        status = 302 if location is not None else 200
    return CgiResponse(status=status, headers=headers, body=body)
