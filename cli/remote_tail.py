"""`wasmdeck tail --remote URL --token TOKEN`: the live tail of a server's admin listener (`GET /tail`).

URL is the admin listener's address (`http://127.0.0.1:8788`, or `ws://...`); `/tail` is appended
unless the URL already ends with it. Items are printed like the local tail; notices go to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from wasmdeck.engine.traces import format_pretty


def tail_url(url: str, params: dict[str, Any]) -> str:
    """The `ws(s)://.../tail?...` address for an admin base URL and the query parameters."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} (use http, https, ws or wss)")
    path = parts.path.rstrip("/")
    if not path.endswith("/tail"):
        path += "/tail"
    query = urlencode([(k, v) for k, values in params.items() for v in (values if isinstance(values, (list, tuple)) else [values])
                       if v is not None and v != ""])
    return urlunsplit((scheme, parts.netloc, path, query, ""))


async def remote_tail(
    url: str,
    token: str,
    *,
    namespace: str | None = None,
    worker: str | None = None,
    status: str | None = None,
    method: tuple[str, ...] | list[str] = (),
    search: str | None = None,
    header: str | None = None,
    sampling_rate: float | None = None,
    format: str = "pretty",
    history: int = 0,
    follow: bool = True,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the remote tail until it ends; 0 when it ends normally, 1 (with one sentence on stderr) if refused or cut off."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

    out = out or sys.stdout
    err = err or sys.stderr
    params = {"namespace": namespace, "worker": worker, "status": status, "method": list(method), "search": search,
              "header": header, "sampling_rate": sampling_rate, "history": history or None,
              "follow": None if follow else "0"}
    try:
        address = tail_url(url, params)
    except ValueError as error:
        print(f"wasmdeck: {error}", file=err)
        return 1
    shown = address.split("?")[0]
    try:
        async with connect(address, additional_headers={"Authorization": f"Bearer {token}"},
                           open_timeout=10, max_size=16 * 1024 * 1024, ping_interval=20) as websocket:
            async for frame in websocket:
                message = json.loads(frame)
                kind = message.get("type") if isinstance(message, dict) else None
                if kind is None:
                    text = json.dumps(message, separators=(",", ":")) if format == "json" else format_pretty(message)
                    print(text, file=out, flush=True)
                elif kind == "dropped":
                    print(f"wasmdeck: {message.get('count')} trace items dropped (output too slow)", file=err, flush=True)
                elif kind == "closing":
                    reason = str(message.get("reason", ""))
                    if reason != "end of history":
                        print(f"wasmdeck: the server closed the tail: {reason}", file=err, flush=True)
                        return 1
                    return 0
            code = websocket.close_code
            if code not in (None, 1000):
                print(f"wasmdeck: the server closed the tail (code {code}: {websocket.close_reason or 'no reason'})", file=err)
                return 1
            return 0
    except InvalidStatus as error:
        status_code = error.response.status_code
        if status_code == 401:
            print(f"wasmdeck: {shown} refused the admin token (401); pass the server's token with --token", file=err)
        else:
            detail = _envelope_message(error.response.body) or f"HTTP {status_code}"
            print(f"wasmdeck: {shown} refused the tail: {detail}", file=err)
        return 1
    except (InvalidURI, InvalidHandshake) as error:
        print(f"wasmdeck: cannot open a WebSocket to {shown}: {error}", file=err)
        return 1
    except ConnectionClosed as error:
        print(f"wasmdeck: the connection to {shown} was lost ({error})", file=err)
        return 1
    except (OSError, TimeoutError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        print(f"wasmdeck: cannot connect to {shown}: {reason}", file=err)
        return 1


def _envelope_message(body: bytes | bytearray | None) -> str | None:
    try:
        return json.loads(body or b"")["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
