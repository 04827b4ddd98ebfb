"""A namespace's egress policy: which hosts its Workers' `fetch()` calls may reach.

An entry is a hostname (`api.example.com`), a wildcard for its subdomains
(`*.example.com`, which does not match `example.com` itself) or `*` (any host), each with
an optional port (`api.example.com:8443`; no port means any port). Blocked entries win
over allowed ones, and a new namespace allows nothing: egress is opt-in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidInput

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_ENTRIES = 256


@dataclass(frozen=True)
class HostPattern:
    host: str  # "*", "*.example.com" or an exact host
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "HostPattern":
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("an egress entry cannot be empty")
        entry = text.strip().lower()
        if "://" in entry or "/" in entry:
            raise InvalidInput(f"egress entry {text!r} must be a host with an optional port, without a scheme or path")
        host, port = entry, None
        if entry.startswith("["):
            closing = entry.find("]")
            if closing < 0:
                raise InvalidInput(f"egress entry {text!r} has an unclosed IPv6 bracket")
            host, rest = entry[1:closing], entry[closing + 1 :]
            if rest and not rest.startswith(":"):
                raise InvalidInput(f"egress entry {text!r} has text after its IPv6 address")
            port_text = rest[1:] if rest else None
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise InvalidInput(f"egress entry {text!r} is not a valid IPv6 address") from None
        else:
            host, sep, port_text = entry.partition(":")
            port_text = port_text if sep else None
            if host != "*":
                name = host[2:] if host.startswith("*.") else host
                labels = name.split(".")
                if not all(_LABEL.match(label) for label in labels):
                    raise InvalidInput(
                        f"egress entry {text!r} is not a hostname, a wildcard like *.example.com, or *"
                    )
                if host.startswith("*.") and labels[-1].isdigit():
                    raise InvalidInput(f"egress entry {text!r} puts a wildcard on an IP address; wildcards are for hostnames")
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise InvalidInput(f"egress entry {text!r} has a port that is not a number from 1 to 65535")
            port = int(port_text)
        return cls(host, port)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def _patterns(entries: Iterable[str], which: str) -> tuple[HostPattern, ...]:
    if isinstance(entries, str):
        raise InvalidInput(f"the egress {which} list must be a list of hosts, not one string")
    parsed: list[HostPattern] = []
    for entry in entries:
        pattern = HostPattern.parse(entry)
        if pattern not in parsed:
            parsed.append(pattern)
    if len(parsed) > MAX_ENTRIES:
        raise InvalidInput(f"the egress {which} list has {len(parsed)} entries; at most {MAX_ENTRIES} are allowed")
    return tuple(parsed)


@dataclass(frozen=True)
class EgressPolicy:
    allow: tuple[HostPattern, ...] = ()
    block: tuple[HostPattern, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), block: Iterable[str] = ()) -> "EgressPolicy":
        return cls(_patterns(allow, "allow"), _patterns(block, "block"))

    def check(self, url: str) -> str | None:
        """None when `url` may be fetched, else the reason it may not."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return f"{url!r} has a bad port"
        where = f"{host}:{port}"
        for pattern in self.block:
            if pattern.matches(host, port):
                return f"{where} matches the block list entry {pattern}"
        for pattern in self.allow:
            if pattern.matches(host, port):
                return None
        if not self.allow:
            return f"{where} is not allowed, as the policy allows no hosts"
        return f"{where} is not on the allow list"

    def as_dict(self) -> dict[str, list[str]]:
        return {"allow": [str(p) for p in self.allow], "block": [str(p) for p in self.block]}
