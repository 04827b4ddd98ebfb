"""Subrequests that leave wasmdeck: egress checked on the addresses actually connected to,
bounded response bodies.

A fetch is decided, resolved and connected in one place. The URL's canonical host is checked
against the namespace's policy; a name is resolved once, through `Network.resolver`, and
every address it resolves to is checked; the connection is then made to a checked address,
never to the name (so a second lookup cannot send it elsewhere), with the name in the Host
header and, over TLS, in SNI and certificate verification. TLS connections are pooled per
server name, so a connection verified for one name never carries a request for another.
No cookies are kept and no redirects are followed: each fetch stands alone.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import certifi
import httpx

from .egress import Address, Destination, EgressPolicy, UnreadableURL, canonical_address
from .http import Headers

MAX_RESPONSE_BODY = 10 * 1024 * 1024
MAX_TLS_POOLS = 64  # server names with pooled TLS connections; idle ones beyond it are closed
# Hop-by-hop and length headers are the client library's business, not the Worker's; the
# Host header is the name that was checked, never one the Worker chose.
_DROP_REQUEST = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"})
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"})
_DEFAULT_REQUEST = (("user-agent", "wasmdeck"), ("accept", "*/*"), ("accept-encoding", "gzip, deflate"))


def _header_bytes(value: str) -> bytes:
    """A guest's header value on the wire: a byte string (one character per byte), or UTF-8 if it is not one."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")

# (name, port) -> the name's addresses, as text or ipaddress objects.
Resolver = Callable[[str, int], Awaitable[Iterable[str | Address]]]


async def system_resolver(name: str, port: int) -> list[str]:
    """The host's resolver (getaddrinfo), TCP addresses in the order it gives them."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


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


class _Pool:
    """One transport (a connection pool) and how many fetches are using it."""

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.in_use = 0


class Network:
    def __init__(
        self, *, max_connections: int = 100, resolver: Resolver | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.resolver: Resolver = resolver or system_resolver
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._plain: _Pool | None = None
        self._tls: OrderedDict[str, _Pool] = OrderedDict()

    def _transport_pool(self) -> _Pool:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        return _Pool(
            httpx.AsyncHTTPTransport(
                verify=self._ssl_context, trust_env=False, limits=httpx.Limits(max_connections=self._max_connections)
            )
        )

    def _acquire(self, scheme: str, server_name: str) -> _Pool:
        """The pool for a fetch, counted as in use. Plain HTTP shares one pool (its connections
        are keyed by address and port); TLS has one pool per server name."""
        if scheme == "http":
            if self._plain is None:
                self._plain = self._transport_pool()
            pool = self._plain
        else:
            pool = self._tls.get(server_name) or self._transport_pool()
            self._tls[server_name] = pool
            self._tls.move_to_end(server_name)
        pool.in_use += 1
        return pool

    async def _trim(self) -> None:
        """Close the least recently used idle TLS pools beyond MAX_TLS_POOLS."""
        excess = len(self._tls) - MAX_TLS_POOLS
        idle = [name for name, pool in self._tls.items() if pool.in_use == 0][: max(0, excess)]
        closing = [self._tls.pop(name) for name in idle]
        for pool in closing:
            await pool.transport.aclose()

    async def _addresses(self, destination: Destination, policy: EgressPolicy, deadline: float) -> list[tuple[Address, str]]:
        """The addresses to try, each checked: the literal address, or every address the name resolves to."""
        host = destination.host
        if host.address is not None:
            return [(host.address, host.zone)]
        assert host.name is not None
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(self.resolver(host.name, destination.port), max(0.001, deadline - loop.time()))
            found = [canonical_address(address) for address in answer]
        except asyncio.TimeoutError:
            raise FetchFailed("NetworkError", f"{host.name} did not resolve in time") from None
        except socket.gaierror as error:
            raise FetchFailed("NetworkError", f"could not resolve {host.name}: {error.strerror or error}") from None
        except (OSError, ValueError, TypeError) as error:
            raise FetchFailed("NetworkError", f"could not resolve {host.name}: {error}") from None
        addresses = list(dict.fromkeys(found))
        if not addresses:
            raise FetchFailed("NetworkError", f"{host.name} resolves to no address")
        for address, _ in addresses:
            refusal = policy.check_address(destination, address)
            if refusal is not None:
                raise FetchFailed("EgressBlocked", f"the egress policy refused {destination.url}: {refusal}")
        return addresses

    async def fetch(
        self, method: str, url: str, headers: Headers, body: bytes, timeout_s: float, *, policy: EgressPolicy
    ) -> FetchResponse:
        """Fetch `url` under `policy`: FetchFailed("EgressBlocked") when the host or any address
        it resolves to is refused, else the response (or another FetchFailed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            destination = Destination.parse(url)
        except UnreadableURL as error:
            raise FetchFailed("InvalidRequest", f"cannot fetch {url[:200]!r}: {error}") from None
        if destination.scheme not in ("http", "https"):
            raise FetchFailed("InvalidRequest", f"cannot fetch {url[:200]!r}: only http and https URLs can be fetched")
        refusal = policy.decide(destination)
        if refusal is not None:
            raise FetchFailed("EgressBlocked", f"the egress policy refused {url}: {refusal}")
        addresses = await self._addresses(destination, policy, deadline)

        host = destination.host
        host_header = str(host) if destination.url.port is None else f"{host}:{destination.port}"  # no port: the scheme's
        chosen = [(_header_bytes(name), _header_bytes(value)) for name, value in headers if name.lower() not in _DROP_REQUEST]
        given = {name.lower() for name, _ in chosen}
        sent: list[tuple[bytes, bytes]] = [
            (b"host", host_header.encode("latin-1")), *chosen,
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in _DEFAULT_REQUEST if name.encode("latin-1") not in given),
        ]
        server_name = host.name or str(host.address)
        pool = self._acquire(destination.scheme, server_name)
        try:
            failure: FetchFailed | None = None
            for address, zone in addresses:
                seconds = deadline - loop.time()
                if seconds <= 0:
                    break
                target = destination.url.copy_with(host=f"{address}%{zone}" if zone else str(address))
                extensions: dict[str, object] = {"timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}}
                if destination.scheme == "https" and host.name is not None:
                    extensions["sni_hostname"] = host.name
                request = httpx.Request(method, target, headers=sent, content=body or None, extensions=extensions)
                try:
                    response = await pool.transport.handle_async_request(request)
                except httpx.ConnectError as error:  # try the name's next address
                    failure = FetchFailed("NetworkError", f"could not reach {url} at {address}: {error or type(error).__name__}")
                    continue
                except httpx.TimeoutException:
                    raise FetchFailed("NetworkError", f"{url} did not answer within {timeout_s:.1f} s") from None
                except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as error:
                    raise FetchFailed("InvalidRequest", f"cannot fetch {url!r}: {error}") from None
                except httpx.HTTPError as error:
                    raise FetchFailed("NetworkError", f"could not reach {url}: {error or type(error).__name__}") from None
                response.request = request
                return await self._read(url, response, timeout_s)
            raise failure or FetchFailed("NetworkError", f"{url} did not answer within {timeout_s:.1f} s")
        finally:
            pool.in_use -= 1
            await self._trim()

    @staticmethod
    async def _read(url: str, response: httpx.Response, timeout_s: float) -> FetchResponse:
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
        # header values travel as byte strings (one character per byte), as the HTTP server hands them to guests
        received = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in response.headers.raw]
        kept = [(name, value) for name, value in received if name not in _DROP_RESPONSE]
        return FetchResponse(response.status_code, kept, bytes(data))

    async def close(self) -> None:
        pools = ([self._plain] if self._plain is not None else []) + list(self._tls.values())
        self._plain = None
        self._tls.clear()
        for pool in pools:
            await pool.transport.aclose()
