"""A namespace's egress policy: which hosts and addresses its Workers' `fetch()` calls may reach.

An entry is a hostname (`api.example.com`), a wildcard for its subdomains (`*.example.com`,
which does not match `example.com` itself), `*` (any host), an IP address (`127.0.0.1`,
`[::1]`) or an address range (`10.0.0.0/8`, `[fd00::/8]`), each with an optional port
(`api.example.com:8443`; no port means any port). Blocked entries win over allowed ones, and
a new namespace allows nothing: egress is opt-in.

Decisions are made on canonical hosts, never on spellings: a URL's host is read the way the
HTTP client reads it, then an IPv4 address in any notation `inet_aton` accepts (`127.1`,
`2130706433`, `0x7f.0.0.1`) becomes its dotted quad, an IPv4-mapped IPv6 address becomes
its IPv4 address, and a name is lowercase ASCII (IDNA) without its trailing dot. A host
that cannot be read that way is refused. A name is checked against the name entries here
and, once resolved, each of its addresses with `check_address` (see `network.py`).

Addresses in the closed ranges below (loopback, private, link-local, cloud metadata, ...)
are refused even when an entry such as `*` allows the host; an allow entry that names them
exactly (the address, a range holding it, or the exact hostname that resolved to it) opens
them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx
import idna

from .errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # an entry's labels
_HOST_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")  # a fetched name's labels: what resolvers accept
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
_IPV4_PART = re.compile(r"^(?:0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
MAX_ENTRIES = 256

# Checked in order; the first range holding an address names it in the refusal.
CLOSED_RANGES: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(network), what)
    for network, what in (
        ("169.254.169.254/32", "the cloud metadata address"),
        ("169.254.170.2/32", "a cloud metadata address (container credentials)"),
        ("100.100.100.200/32", "a cloud metadata address"),
        ("168.63.129.16/32", "a cloud platform address (host endpoint)"),
        ("fd00:ec2::254/128", "the cloud metadata address"),
        ("0.0.0.0/8", "an unspecified (this host) address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a reserved (6to4 relay) address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "the loopback address"),
        ("::/96", "a reserved (IPv4-compatible) address"),
        ("::ffff:0:0:0/96", "a reserved (IPv4-translated) address"),
        ("64:ff9b:1::/48", "a private NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


class UnreadableURL(ValueError):
    """A URL whose host cannot be canonicalised; the message is one sentence."""


# -- canonical hosts --------------------------------------------------------------------------


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """`text` read as `inet_aton` reads it (1 to 4 parts, each decimal, octal with a leading 0,
    or hex with 0x; the last part fills the remaining bytes), or None if it is not one."""
    parts = text.lower().split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(part) for part in parts):
        return None
    values = [int(part, 16) if part.startswith("0x") else int(part, 8) if part.startswith("0") else int(part) for part in parts]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(leading):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and may be delivered to (mapped, translated,
    IPv4-compatible, NAT64 or 6to4), else None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if address in _NAT64 or address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and packed > 1):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def canonical_address(address: Address | str) -> tuple[Address, str]:
    """An address as decisions see it (IPv4-mapped IPv6 becomes IPv4, no zone), and its zone."""
    zone = ""
    if isinstance(address, str):
        text, _, zone = address.partition("%")
        address = ipaddress.ip_address(text)
    elif isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        zone, address = address.scope_id, ipaddress.IPv6Address(str(address).partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, ""
    return address, zone


@dataclass(frozen=True)
class Host:
    """A canonical host: a name (lowercase ASCII, no trailing dot) or an address."""

    name: str | None = None
    address: Address | None = None
    zone: str = ""  # an IPv6 zone id, only used to connect

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        return f"[{self.address}]" if isinstance(self.address, ipaddress.IPv6Address) else str(self.address)


def canonical_host(raw: str) -> Host:
    """The host of a URL as the HTTP client gives it (ASCII, IDNA-encoded, lowercase), in
    canonical form; UnreadableURL if it cannot be a host the client would connect to."""
    if not raw:
        raise UnreadableURL("it has no host")
    if ":" in raw:
        text, _, zone = raw.partition("%")
        try:
            address, _ = canonical_address(text)
        except ValueError:
            raise UnreadableURL(f"its host [{raw}] is not an IPv6 address") from None
        zone = unquote("%" + zone)[1:] if zone else ""  # RFC 6874 writes the separator as %25
        if zone and not re.fullmatch(r"[a-z0-9_.-]{1,64}", zone):
            raise UnreadableURL(f"its host [{raw}] has a zone id that is not an interface name")
        return Host(address=address, zone=zone if isinstance(address, ipaddress.IPv6Address) else "")
    name = raw[:-1] if raw.endswith(".") else raw
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        ipv4 = parse_ipv4(name)
        if ipv4 is None:
            raise UnreadableURL(f"its host {raw!r} ends in a number but is not an IPv4 address")
        return Host(address=ipv4)
    if len(name) > 253:
        raise UnreadableURL(f"its host {raw[:40]!r}... is longer than 253 characters")
    for label in labels:
        if not label:
            raise UnreadableURL(f"its host {raw!r} has an empty label")
        if not _HOST_LABEL.match(label):
            raise UnreadableURL(f"its host {raw!r} has characters or a label length no hostname can have")
    return Host(name=name)


@dataclass(frozen=True)
class Destination:
    """Where a URL leads: its scheme, canonical host and port, and the URL as the HTTP client
    parsed it (so the request is built from the same reading the decision was made on)."""

    url: httpx.URL
    scheme: str
    host: Host
    port: int

    @classmethod
    def parse(cls, url: str) -> "Destination":
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as error:
            raise UnreadableURL(f"it cannot be read as a URL: {error}") from None
        host = canonical_host(parsed.raw_host.decode("ascii"))
        port = parsed.port if parsed.port is not None else DEFAULT_PORTS.get(parsed.scheme, 0)
        if not 1 <= port <= 65535:
            raise UnreadableURL(f"its port {port} cannot be connected to")
        return cls(parsed, parsed.scheme, host, port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def canonical_hostname(url: str) -> str:
    """`url`'s canonical host as text (a name, or an address without brackets), "" if unreadable."""
    try:
        host = Destination.parse(url).host
    except UnreadableURL:
        return ""
    return host.name if host.name is not None else str(host.address)


def closed_range(address: Address) -> tuple[Address, str] | None:
    """(the address, what it is) when `address`, or the IPv4 address it carries, is closed."""
    for candidate in (address, embedded_ipv4(address)):
        if candidate is None:
            continue
        for network, what in CLOSED_RANGES:
            if candidate.version == network.version and candidate in network:
                return candidate, what
    return None


# -- entries ----------------------------------------------------------------------------------


def _entry_name(text: str, entry: str) -> str:
    """A hostname entry in canonical form (IDNA with UTS #46 mapping, no trailing dot)."""
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise InvalidInput(f"egress entry {entry!r} is not a valid internationalised hostname") from None
    return text[:-1] if text.endswith(".") and not text.endswith("..") else text


def _entry_network(text: str, entry: str) -> Network:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise InvalidInput(f"egress entry {entry!r} is not an address range like 10.0.0.0/8 ({error})") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96")) \
            and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


@dataclass(frozen=True)
class HostPattern:
    host: str  # "*", "*.example.com", an exact name, an address or a range, all canonical
    port: int | None = None
    network: Network | None = field(default=None, compare=False, repr=False)  # for addresses and ranges

    @classmethod
    def parse(cls, text: str) -> "HostPattern":
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("an egress entry cannot be empty")
        entry = text.strip().lower()
        if "://" in entry or ("/" in entry and not re.search(r"/\d{1,3}(\]|:\d*$|$)", entry)):
            raise InvalidInput(f"egress entry {text!r} must be a host with an optional port, without a scheme or path")
        port_text: str | None = None
        if entry.startswith("["):
            closing = entry.find("]")
            if closing < 0:
                raise InvalidInput(f"egress entry {text!r} has an unclosed IPv6 bracket")
            host, rest = entry[1:closing], entry[closing + 1 :]
            if rest and not rest.startswith(":"):
                raise InvalidInput(f"egress entry {text!r} has text after its IPv6 address")
            port_text = rest[1:] if rest else None
            if "/" not in host:
                try:
                    ipaddress.IPv6Address(host)
                except ValueError:
                    raise InvalidInput(f"egress entry {text!r} is not a valid IPv6 address") from None
            network = _entry_network(host, text)
        elif entry.count(":") > 1:  # a bare IPv6 address or range, which cannot carry a port
            network = _entry_network(entry, text)
        else:
            host, sep, port_text_or_empty = entry.partition(":")
            port_text = port_text_or_empty if sep else None
            network = None
            if "/" in host:
                network = _entry_network(host, text)
            elif host != "*":
                wildcard = host.startswith("*.")
                name = _entry_name(host[2:] if wildcard else host, text)
                labels = name.split(".")
                if _NUMERIC_LABEL.match(labels[-1]):
                    if wildcard:
                        raise InvalidInput(f"egress entry {text!r} puts a wildcard on an IP address; wildcards are for hostnames")
                    address = parse_ipv4(name)
                    if address is None:
                        raise InvalidInput(f"egress entry {text!r} ends in a number but is not an IPv4 address")
                    network = ipaddress.ip_network(address)
                elif not all(_LABEL.match(label) for label in labels) or len(name) > 253:
                    raise InvalidInput(
                        f"egress entry {text!r} is not a hostname, a wildcard like *.example.com, an IP address, "
                        "an address range like 10.0.0.0/8, or *"
                    )
                else:
                    host = f"*.{name}" if wildcard else name
        port = None
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise InvalidInput(f"egress entry {text!r} has a port that is not a number from 1 to 65535")
            port = int(port_text)
        if network is not None:
            if network.prefixlen == network.max_prefixlen:
                single, _ = canonical_address(network.network_address)
                network = ipaddress.ip_network(single)
                host = str(single)
            else:
                host = str(network)
        return cls(host, port, network)

    @property
    def is_explicit(self) -> bool:
        """An exact name, address or range: an entry that can open a closed range."""
        return self.host != "*" and not self.host.startswith("*.")

    def _port_matches(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_name(self, name: str, port: int) -> bool:
        if not self._port_matches(port) or self.network is not None:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host

    def matches_address(self, address: Address, port: int) -> bool:
        """`address`, or the IPv4 address it carries, is this entry's address or in its range (or this is `*`)."""
        if not self._port_matches(port):
            return False
        if self.host == "*":
            return True
        if self.network is None:
            return False
        return any(
            candidate is not None and candidate.version == self.network.version and candidate in self.network
            for candidate in (address, embedded_ipv4(address))
        )

    def matches(self, host: Host, port: int) -> bool:
        if host.name is not None:
            return self.matches_name(host.name, port)
        assert host.address is not None
        return self.matches_address(host.address, port)

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


# -- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EgressPolicy:
    allow: tuple[HostPattern, ...] = ()
    block: tuple[HostPattern, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), block: Iterable[str] = ()) -> "EgressPolicy":
        return cls(_patterns(allow, "allow"), _patterns(block, "block"))

    def check(self, url: str) -> str | None:
        """None when `url`'s host may be fetched, else the reason it may not. A name is judged
        here by the name alone; its addresses are judged by `check_address` once resolved."""
        try:
            destination = Destination.parse(url)
        except UnreadableURL as error:
            return f"{url[:200]!r} cannot be fetched: {error}"
        return self.decide(destination)

    def decide(self, destination: Destination) -> str | None:
        host, port = destination.host, destination.port
        for pattern in self.block:
            if pattern.matches(host, port):
                return f"{destination} matches the block list entry {pattern}"
        if not any(pattern.matches(host, port) for pattern in self.allow):
            if not self.allow:
                return f"{destination} is not allowed, as the policy allows no hosts"
            return f"{destination} is not on the allow list"
        if host.address is not None:
            return self._closed(destination, host.address, f"{destination} is")
        return None

    def check_address(self, destination: Destination, address: Address | str) -> str | None:
        """None when a name's resolved `address` may be connected to, else the reason it may not."""
        checked, _ = canonical_address(address)
        port = destination.port
        for pattern in self.block:
            if pattern.network is not None and pattern.matches_address(checked, port):
                return f"{destination.host} resolves to {checked}, which matches the block list entry {pattern}"
        name = destination.host.name
        if name is not None and any(p.is_explicit and p.matches_name(name, port) for p in self.allow):
            return None  # the operator named this host exactly: wherever it resolves is theirs to allow
        return self._closed(destination, checked, f"{destination.host} resolves to {checked}, which is")

    def _closed(self, destination: Destination, address: Address, subject: str) -> str | None:
        closed = closed_range(address)
        if closed is None:
            return None
        if any(p.is_explicit and p.matches_address(address, destination.port) for p in self.allow):
            return None
        carried, what = closed
        if carried != address:
            what = f"an address that carries {carried}, {what}"
        shown = f"[{address}]" if address.version == 6 else str(address)
        return (
            f"{subject} {what}; such addresses are refused unless an allow entry names them exactly, such as {shown}"
            + ("" if destination.host.name is None else f" or {destination.host.name}")
        )

    def as_dict(self) -> dict[str, list[str]]:
        return {"allow": [str(p) for p in self.allow], "block": [str(p) for p in self.block]}
