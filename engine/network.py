"""Subrequests that leave wasmdeck: one shared httpx client, bounded response bodies."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from .http import Headers

MAX_RESPONSE_BODY = 10 * 1024 * 1024
# Hop-by-hop and length headers are the client library's business, not the Worker's.
_DROP_REQUEST = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"})
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"})


class FetchFailed(Exception):
    """No response: `name` is the protocol's error name, the message one sentence."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass
class FetchResponse:
    status: int
    headers: Headers
    body: bytes


class Network:
    def __init__(self, *, max_connections: int = 100) -> None:
        self._client: httpx.AsyncClient | None = None
        self._max_connections = max_connections

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                headers={"user-agent": "wasmdeck"},
                trust_env=False,  # a Worker's traffic never silently takes the host's proxy settings
                limits=httpx.Limits(max_connections=self._max_connections),
            )
        return self._client

    async def fetch(self, method: str, url: str, headers: Headers, body: bytes, timeout_s: float) -> FetchResponse:
        sent = [(name, value) for name, value in headers if name.lower() not in _DROP_REQUEST]
        try:
            request = self._http().build_request(method, url, headers=sent, content=body or None, timeout=timeout_s)
            response = await self._http().send(request, stream=True)
        except httpx.TimeoutException:
            raise FetchFailed("NetworkError", f"{url} did not answer within {timeout_s:.1f} s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as error:
            raise FetchFailed("InvalidRequest", f"cannot fetch {url!r}: {error}") from None
        except httpx.HTTPError as error:
            raise FetchFailed("NetworkError", f"could not reach {url}: {error or type(error).__name__}") from None
        try:
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data.extend(chunk)
                if len(data) > MAX_RESPONSE_BODY:
                    raise FetchFailed("ResponseTooLarge", f"the response from {url} is over the {MAX_RESPONSE_BODY // 2**20} MiB limit")
        except httpx.TimeoutException:
            raise FetchFailed("NetworkError", f"{url} did not finish its response within {timeout_s:.1f} s") from None
        except httpx.HTTPError as error:
            raise FetchFailed("NetworkError", f"the response from {url} broke off: {error or type(error).__name__}") from None
        finally:
            await response.aclose()
        kept = [(name, value) for name, value in response.headers.multi_items() if name.lower() not in _DROP_RESPONSE]
        return FetchResponse(response.status_code, kept, bytes(data))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
