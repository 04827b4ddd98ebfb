"""Egress on addresses, not spellings: canonical hosts, closed ranges, names resolved once and
the connection made to the checked address, for user, Outbound and dispatch Workers.

Every refusal is tried against a real origin on 127.0.0.1 that must not receive the request
(its hits are counted). Names other than `localhost` resolve through an in-process hosts map
set as the engine's resolver (there is no DNS here); `localhost` resolves for real."""

from __future__ import annotations

import http.server
import ipaddress
import random
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
import trustme

from wasmdeck.engine import Engine, InvalidInput
from wasmdeck.engine.egress import CLOSED_RANGES, Destination, EgressPolicy, HostPattern, UnreadableURL, parse_ipv4
from wasmdeck.engine import network as network_module
from wasmdeck.engine.outbound import OutboundSetting
from wasmdeck.engine.network import FetchFailed, Network, system_resolver

from .conftest import protocol_module


class Hosts:
    """A resolver from a table: name -> addresses, or a function of the lookup's number (1, 2, ...).
    Names not in the table go to the system resolver. Records every lookup."""

    def __init__(self, table: dict[str, list[str] | Callable[[int], list[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def __call__(self, name: str, port: int) -> list[str]:
        self.lookups.append(name)
        answer = self.table.get(name)
        if answer is None:
            return await system_resolver(name, port)
        return answer(self.lookups.count(name)) if callable(answer) else answer


@pytest.fixture
def fetcher(engine: Engine) -> Engine:
    engine.deploy("fetcher", protocol_module("fetcher"))
    return engine


async def fetch_line(engine: Engine, url: str, host: str = "fetcher.example.com") -> str:
    """The fetcher Worker's line for one fetch of `url`: "1 STATUS LENGTH" or "1 error NAME: MESSAGE"."""
    response = await engine.request(f"http://{host}/?url={quote(url, safe='')}")
    assert response.status == 200, response.text
    return response.text.splitlines()[0]


def refused(line: str) -> bool:
    return line.startswith("1 error EgressBlocked: ")


# -- canonical hosts ------------------------------------------------------------------------


def test_ipv4_numbers_are_read_as_inet_aton_reads_them() -> None:
    """Every notation the C library accepts, and nothing it refuses, against the real inet_aton."""
    rng = random.Random(20261130)

    def part(value: int) -> str:
        form = rng.choice(("dec", "oct", "hex", "HEX", "zeros"))
        if form == "oct":
            return "0" + format(value, "o")
        if form in ("hex", "HEX"):
            text = "0x" + format(value, "x")
            return text.upper() if form == "HEX" else text
        if form == "zeros":
            return "0" * rng.randint(1, 30) + format(value, "o")
        return str(value)

    samples = ["0x", "0x.1", "1.", ".1", "1..1", "09", "08.1.1.1", "0x0x1", "0xg", "1e1", "+1", "-1", "00", "0",
               "4294967295", "4294967296", "1.16777216", "1.2.65536", "256.1", "1.2.3.4.5", "0xff.0xffffff"]
    for _ in range(4000):
        count = rng.randint(1, 5)
        values = [rng.choice((rng.randint(0, 255), rng.randint(0, 300), rng.randint(0, 2**32 + 5))) for _ in range(count)]
        samples.append(".".join(part(value) for value in values))
    for text in samples:
        try:
            expected = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            expected = None
        assert parse_ipv4(text) == expected, text


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://127.1/", "127.0.0.1:80"),
        ("http://2130706433:8080/", "127.0.0.1:8080"),
        ("http://0x7f.0.0.1/", "127.0.0.1:80"),
        ("http://0X7F000001/", "127.0.0.1:80"),
        ("http://017700000001/", "127.0.0.1:80"),
        ("http://0177.0.1/", "127.0.0.1:80"),
        ("http://127.0.0.1./", "127.0.0.1:80"),
        ("http://127。0。0。1/", "127.0.0.1:80"),
        ("http://0/", "0.0.0.0:80"),
        ("http://169.254.43518/", "169.254.169.254:80"),
        ("https://0xa9fea9fe/", "169.254.169.254:443"),
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1:80"),
        ("http://[::FFFF:7f00:1]:81/", "127.0.0.1:81"),
        ("http://[0:0:0:0:0:0:0:1]/", "[::1]:80"),
        ("http://[fe80::1%25eth0]/", "[fe80::1]:80"),
        ("http://LocalHost./", "localhost:80"),
        ("http://localhost。/", "localhost:80"),
        ("http://Evil．Example｡com/", "evil.example.com:80"),
        ("http://Bücher.de/", "xn--bcher-kva.de:80"),
        ("http://user:pw@127.1:9/", "127.0.0.1:9"),
        ("http://a_b.example.com/", "a_b.example.com:80"),
    ],
)
def test_hosts_are_canonical(url: str, canonical: str) -> None:
    assert str(Destination.parse(url)) == canonical


@pytest.mark.parametrize(
    "url",
    ["http://[::1/", "http://1.2.3.4.5/", "http://a..b/", "http://./", "http:///x", "http://exa%41mple.com/",
     "http://exa mple.com/", "http://0x/", "http://08.1.1.1/", "http://256.1.1.1/", "http://ｅｖｉｌ.test/",
     "http://example.123/", "http://[fe80::1%25eth%2f0]/", "http://example.com:0/", "http://" + "a" * 64 + ".com/"],
)
def test_hosts_that_cannot_be_canonicalised_are_refused_with_a_sentence(url: str) -> None:
    with pytest.raises(UnreadableURL):
        Destination.parse(url)
    reason = EgressPolicy.parse(["*"]).check(url)
    assert reason is not None and "cannot be fetched: " in reason


def test_the_outbound_request_host_parameter_is_the_canonical_host() -> None:
    setting = OutboundSetting.parse("gateway", [("HOST", "{request.host}")])
    for url, host in (("http://127.1:8080/", "127.0.0.1"), ("http://EVIL。Test./x", "evil.test"),
                      ("https://[::ffff:10.0.0.1]/", "10.0.0.1"), ("http://[::1]/", "::1"), ("http://a..b/", "")):
        assert setting.environment({}, worker="w", namespace="n", url=url, tags=()) == {"HOST": host}, url


def test_entries_are_canonical_too() -> None:
    policy = EgressPolicy.parse(
        ["127.1", "LOCALHOST.", "[::ffff:10.0.0.1]:8080", "bücher.de", "*.ｅｘａｍｐｌｅ.com", "10.0.0.0/8", "[fd00::/8]:443",
         "fe80::/10", "2130706433:81", "[::ffff:192.168.0.0/112]"],
        ["169.254.43518"],
    )
    assert policy.as_dict() == {
        "allow": ["127.0.0.1", "localhost", "10.0.0.1:8080", "xn--bcher-kva.de", "*.example.com", "10.0.0.0/8",
                  "[fd00::/8]:443", "[fe80::/10]", "127.0.0.1:81", "192.168.0.0/16"],
        "block": ["169.254.169.254"],
    }
    assert EgressPolicy.parse(policy.as_dict()["allow"], policy.as_dict()["block"]) == policy  # stored form reads back
    for bad in ("10.0.0.1/8", "10.0.0.0/33", "*.0.0.1", "1.2.3.4.5", "0x", "[::1/200]", "x.com/path", "*.bad_host.com"):
        with pytest.raises(InvalidInput):
            HostPattern.parse(bad)


@pytest.mark.parametrize("network", [str(n) for n, _ in CLOSED_RANGES])
def test_every_closed_range_is_refused_under_allow_star_and_opened_by_naming_it(network: str) -> None:
    parsed = ipaddress.ip_network(network)
    address = parsed[1] if parsed.num_addresses > 2 else parsed[0]
    host, entry = (f"[{address}]", f"[{parsed}]") if address.version == 6 else (str(address), str(parsed))
    reason = EgressPolicy.parse(["*"]).check(f"http://{host}/")
    assert reason is not None and "refused unless an allow entry names them exactly" in reason, reason
    assert EgressPolicy.parse(["*.example.com", "*"]).check(f"http://{host}/") is not None  # wildcards never open
    assert EgressPolicy.parse([host]).check(f"http://{host}/") is None  # the address itself
    assert EgressPolicy.parse(["*", entry]).check(f"http://{host}/") is None  # a range holding it
    assert EgressPolicy.parse([f"{host}:8080"]).check(f"http://{host}:8081/") is not None  # an entry's port is kept


def test_addresses_carrying_a_closed_ipv4_address_are_closed() -> None:
    policy = EgressPolicy.parse(["*"])
    for host in ("[64:ff9b::7f00:1]", "[2002:a9fe:a9fe::]", "[::ffff:0:7f00:1]", "[::127.0.0.1]"):
        assert policy.check(f"http://{host}/") is not None, host
    assert policy.check("http://[64:ff9b::808:808]/") is None  # NAT64 of a public address is public
    assert policy.check("http://[2606:4700::1111]/") is None


# -- the engine: every spelling refused, the origin never reached -------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1", "0x7f000001", "0X7F.1", "017700000001", "0177.0.1",
    "127.0.0.1.", "127。0。0。1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
    "user@127.1", "0.0.0.0", "0", "[::]", "[::1]", "localhost", "LOCALHOST", "localhost.", "localhost。",
    "localhost．", "localhost｡", "127.0.0.2",
]


@pytest.mark.parametrize("block", [["127.0.0.1"], []], ids=["allow-star-block-127.0.0.1", "allow-star-alone"])
async def test_every_spelling_of_a_blocked_or_closed_address_is_refused(fetcher: Engine, origin, block: list[str]) -> None:
    fetcher.set_egress(allow=["*"], block=block)
    for spelling in LOOPBACK_SPELLINGS:
        line = await fetch_line(fetcher, f"http://{spelling}:{origin.port}/secret")
        assert refused(line), (spelling, line)
    assert origin.seen == []
    # the same origin is reachable when the policy names it, whatever the spelling
    fetcher.set_egress(allow=["127.0.0.1"])
    for spelling in ("127.1", "0x7f000001", "[::ffff:127.0.0.1]", "127.0.0.1."):
        assert (await fetch_line(fetcher, f"http://{spelling}:{origin.port}/ok")).startswith("1 200"), spelling
    assert [seen.headers["host"] for seen in origin.seen] == [f"127.0.0.1:{origin.port}"] * 4


async def test_the_metadata_address_is_refused_in_every_notation(fetcher: Engine) -> None:
    hosts = Hosts({"metadata.google.internal": ["169.254.169.254"], "metadata.test": ["fd00:ec2::254"]})
    fetcher.network.resolver = hosts
    fetcher.set_egress(allow=["*"])
    for spelling in ("169.254.169.254", "2852039166", "0xa9fea9fe", "0xa9.0xfe.0xa9.0xfe", "169.254.43518",
                     "0251.0376.0251.0376", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[fd00:ec2::254]",
                     "metadata.google.internal", "metadata.test", "[2002:a9fe:a9fe::1]"):
        line = await fetch_line(fetcher, f"http://{spelling}/latest/meta-data/")
        assert refused(line), (spelling, line)
    assert "the cloud metadata address" in await fetch_line(fetcher, "http://0xa9fea9fe/")
    assert hosts.lookups == ["metadata.google.internal", "metadata.test"]  # literals are never looked up


async def test_blocked_names_are_refused_in_every_spelling(fetcher: Engine, origin) -> None:
    hosts = Hosts({"evil.test": ["127.0.0.1"], "good.test": ["127.0.0.1"]})
    fetcher.network.resolver = hosts
    fetcher.set_egress(allow=["*", "127.0.0.1"], block=["evil.test"])
    for spelling in ("evil.test", "evil.test.", "EVIL.Test", "Evil.Test.", "evil。test", "evil．test", "evil｡test",
                     "evil｡test｡", "ＥＶＩＬ.test", "x@evil.test"):
        line = await fetch_line(fetcher, f"http://{spelling}:{origin.port}/")
        assert refused(line), (spelling, line)
    assert origin.seen == [] and hosts.lookups == []  # refused on the name, before any lookup
    assert (await fetch_line(fetcher, f"http://good.test:{origin.port}/")).startswith("1 200")
    assert origin.seen[0].headers["host"] == f"good.test:{origin.port}"


async def test_a_name_resolving_to_a_blocked_or_closed_address_is_refused(fetcher: Engine, origin) -> None:
    hosts = Hosts({"sneaky.test": ["127.0.0.1"], "mixed.test": ["93.184.215.14", "127.0.0.1"]})
    fetcher.network.resolver = hosts
    url = f"http://sneaky.test:{origin.port}/"
    cases = [
        (["*"], ["127.0.0.1"], "resolves to 127.0.0.1, which matches the block list entry 127.0.0.1"),
        (["*"], ["127.0.0.0/8"], "matches the block list entry 127.0.0.0/8"),
        (["*"], [], "resolves to 127.0.0.1, which is a loopback address"),
        (["*.test"], [], "a loopback address"),
        (["sneaky.test"], ["127.0.0.1"], "block list entry 127.0.0.1"),
        (["*", "127.0.0.2"], [], "a loopback address"),
    ]
    for allow, block, reason in cases:
        fetcher.set_egress(allow=allow, block=block)
        line = await fetch_line(fetcher, url)
        assert refused(line) and reason in line, (allow, block, line)
    fetcher.set_egress(allow=["*"])
    line = await fetch_line(fetcher, f"http://mixed.test:{origin.port}/")  # any refused address refuses the fetch
    assert refused(line) and "127.0.0.1" in line
    assert origin.seen == []
    # naming the host exactly, or its address, opens it
    for allow in (["sneaky.test"], [f"sneaky.test:{origin.port}"], ["*", "127.0.0.1"], ["*", "127.0.0.0/8"]):
        fetcher.set_egress(allow=allow)
        assert (await fetch_line(fetcher, url)).startswith("1 200"), allow
    assert len(origin.seen) == 4 and all(seen.headers["host"] == f"sneaky.test:{origin.port}" for seen in origin.seen)
    fetcher.set_egress(allow=["sneaky.test:1"])  # a port on the entry is kept
    assert refused(await fetch_line(fetcher, url))


async def test_a_name_is_resolved_once_and_the_checked_address_is_connected_to(fetcher: Engine, origin) -> None:
    # first answer: an address nothing listens on; any later lookup would answer the origin's
    hosts = Hosts({"rebind.test": lambda n: ["127.0.0.2"] if n == 1 else ["127.0.0.1"]})
    fetcher.network.resolver = hosts
    fetcher.set_egress(allow=["rebind.test"], block=["127.0.0.1"])
    line = await fetch_line(fetcher, f"http://rebind.test:{origin.port}/")
    assert line.startswith("1 error NetworkError") and "127.0.0.2" in line, line
    assert hosts.lookups == ["rebind.test"] and origin.seen == []
    # first answer: the origin; later answers: a blocked address. The fetch goes to the first.
    hosts = Hosts({"rebind.test": lambda n: ["127.0.0.1"] if n == 1 else ["10.0.0.66"]})
    fetcher.network.resolver = hosts
    fetcher.set_egress(allow=["rebind.test"], block=["10.0.0.66"])
    assert (await fetch_line(fetcher, f"http://rebind.test:{origin.port}/")).startswith("1 200")
    assert hosts.lookups == ["rebind.test"] and len(origin.seen) == 1
    # each fetch resolves again and checks again: the pooled connection to the old address is not used
    line = await fetch_line(fetcher, f"http://rebind.test:{origin.port}/")
    assert refused(line) and "resolves to 10.0.0.66" in line
    assert len(origin.seen) == 1


async def test_a_name_with_several_addresses_falls_back_to_the_next_checked_one(fetcher: Engine, origin) -> None:
    hosts = Hosts({"two.test": ["127.0.0.2", "127.0.0.1"]})
    fetcher.network.resolver = hosts
    fetcher.set_egress(allow=["two.test"])
    assert (await fetch_line(fetcher, f"http://two.test:{origin.port}/")).startswith("1 200")
    assert hosts.lookups == ["two.test"]


async def test_unreadable_hosts_are_refused_through_the_engine(fetcher: Engine, origin) -> None:
    fetcher.set_egress(allow=["*"])
    for url in ("http://1.2.3.4.5/", "http://a..b/", "http://exa%41mple.com/", "http://0x/", "http://08.1.1.1/"):
        line = await fetch_line(fetcher, url)
        assert refused(line) and "cannot be fetched: " in line, (url, line)
    response = await fetcher.request(f"http://fetcher.example.com/?url={quote('http://a..b/', safe='')}")
    assert response.trace["subrequests"][0]["via"] == "refused"


# -- Outbound and dispatch Workers: the same checks ----------------------------------------------


async def test_the_outbound_workers_own_fetches_are_checked_on_addresses(fetcher: Engine, origin) -> None:
    fetcher.deploy("outbound-logger", protocol_module("outbound-logger"))
    fetcher.set_outbound("outbound-logger")
    hosts = Hosts({"sneaky.test": ["127.0.0.1"], "api.test": ["127.0.0.1"]})
    fetcher.network.resolver = hosts
    fetcher.set_egress(allow=["*"], block=["127.0.0.1"])
    # a literal spelling is refused before the Outbound Worker runs
    assert refused(await fetch_line(fetcher, f"http://127.1:{origin.port}/"))
    # a name passes to the Outbound Worker, whose own fetch is refused on the resolved address
    response = await fetcher.request(f"http://fetcher.example.com/?url={quote(f'http://sneaky.test:{origin.port}/', safe='')}")
    assert response.text.startswith("1 502"), response.text
    assert "EgressBlocked" in response.text and "resolves to 127.0.0.1" in response.text
    await fetcher.flush_traces()
    hop = next(item for item in fetcher.recent_traces(10) if item["scriptName"] == "outbound-logger")
    assert hop["subrequests"][0]["via"] == "refused" and hop["subrequests"][0]["error"].startswith("EgressBlocked")
    assert origin.seen == []
    # allowed by exact name, the Outbound Worker reaches the origin under that name
    fetcher.set_egress(allow=["api.test"])
    assert (await fetch_line(fetcher, f"http://api.test:{origin.port}/through")).startswith("1 200")
    assert [(seen.path, seen.headers["host"]) for seen in origin.seen] == [("/through", f"api.test:{origin.port}")]


async def test_the_dispatch_workers_fetches_are_checked_on_addresses(fetcher: Engine, origin) -> None:
    fetcher.set_dispatch_worker("fetcher")  # the fetcher fronts the namespace: its fetches are a dispatcher's
    fetcher.set_egress(allow=["*"])
    for spelling in ("127.1", "localhost", "[::ffff:127.0.0.1]"):
        response = await fetcher.request(f"http://any.example.com/?url={quote(f'http://{spelling}:{origin.port}/', safe='')}")
        assert refused(response.text.splitlines()[0]), (spelling, response.text)
        assert response.trace["scriptName"] == "fetcher" and response.trace["subrequests"][0]["via"] == "refused"
    assert origin.seen == []
    fetcher.set_egress(allow=[origin.netloc])
    assert (await fetch_line(fetcher, origin.url("/dispatcher"), host="any.example.com")).startswith("1 200")
    assert len(origin.seen) == 1


# -- the network itself ------------------------------------------------------------------------


async def test_the_network_applies_the_policy_itself(origin) -> None:
    network = Network()
    try:
        for policy, url in ((EgressPolicy(), origin.url()), (EgressPolicy.parse(["*"]), f"http://127.1:{origin.port}/")):
            with pytest.raises(FetchFailed) as caught:
                await network.fetch("GET", url, [], b"", 5, policy=policy)
            assert caught.value.name == "EgressBlocked"
        with pytest.raises(FetchFailed, match="only http and https") as caught:
            await network.fetch("GET", f"ftp://127.0.0.1:{origin.port}/", [], b"", 5, policy=EgressPolicy.parse(["127.0.0.1"]))
        assert caught.value.name == "InvalidRequest"
        got = await network.fetch("GET", origin.url("/echo"), [("Host", "evil.test"), ("X-A", "1")], b"", 5,
                                  policy=EgressPolicy.parse(["127.0.0.1"]))
        assert got.status == 200 and origin.seen[-1].headers["host"] == origin.netloc  # the Worker cannot pick the Host
        assert origin.seen[-1].headers["user-agent"] == "wasmdeck" and origin.seen[-1].headers["x-a"] == "1"
    finally:
        await network.close()
    assert len(origin.seen) == 1


@dataclass
class TLSOrigin:
    port: int
    server_names: list[str | None] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def tls_origin() -> Iterator[tuple[TLSOrigin, ssl.SSLContext]]:
    """An HTTPS origin on 127.0.0.1 whose certificate names secure.test and n0.test to n4.test; /set answers a
    cookie; it records each TLS server name and each request's path and headers. Yields it and
    a client context that trusts its CA."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("secure.test", *(f"n{i}.test" for i in range(5))).configure_cert(server_context)
    record = TLSOrigin(0)
    server_context.sni_callback = lambda sock, name, context: record.server_names.append(name)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            record.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            if self.path == "/set":
                self.send_header("set-cookie", "session=tenant-a-secret; Path=/")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    record.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    try:
        yield record, client_context
    finally:
        server.shutdown()
        server.server_close()


async def test_tls_is_verified_for_the_name_while_connecting_to_the_checked_address(tls_origin) -> None:
    record, client_context = tls_origin
    hosts = Hosts({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    network = Network(resolver=hosts, ssl_context=client_context)
    policy = EgressPolicy.parse(["secure.test", "other.test"])
    try:
        got = await network.fetch("GET", f"https://secure.test:{record.port}/set", [], b"", 5, policy=policy)
        assert (got.status, got.body) == (200, b"ok")
        assert record.server_names == ["secure.test"]
        assert record.requests[0][1]["host"] == f"secure.test:{record.port}"
        # the same address under a name the certificate does not carry: verification fails, even
        # with a verified connection to that address in the pool
        with pytest.raises(FetchFailed, match="(?i)certificate") as caught:
            await network.fetch("GET", f"https://other.test:{record.port}/", [], b"", 5, policy=policy)
        assert caught.value.name == "NetworkError"
        assert len(record.requests) == 1
        # no cookie jar: a cookie one fetch received is never sent by another
        await network.fetch("GET", f"https://secure.test:{record.port}/again", [], b"", 5, policy=policy)
        assert record.requests[-1][0] == "/again" and "cookie" not in record.requests[-1][1]
    finally:
        await network.close()
    assert hosts.lookups == ["secure.test", "other.test", "secure.test"]


async def test_an_https_fetch_through_the_engine_is_verified_for_its_name(db_path, wasmer_cache, tls_origin) -> None:
    record, client_context = tls_origin
    network = Network(resolver=Hosts({"secure.test": ["127.0.0.1"]}), ssl_context=client_context)
    async with Engine(db_path, cache_dir=wasmer_cache, network=network) as fetcher:
        fetcher.deploy("fetcher", protocol_module("fetcher"))
        await _https_fetches_are_verified_for_their_names(fetcher, record)


async def _https_fetches_are_verified_for_their_names(fetcher: Engine, record) -> None:
    fetcher.set_egress(allow=["secure.test"])
    assert (await fetch_line(fetcher, f"https://secure.test:{record.port}/")).startswith("1 200 2")
    fetcher.set_egress(allow=["*", "127.0.0.1"])
    line = await fetch_line(fetcher, f"https://127.0.0.1:{record.port}/")  # no certificate for the address
    assert line.startswith("1 error NetworkError"), line
    assert record.server_names == ["secure.test", None]  # an address is never sent as a TLS server name


async def test_tls_pools_per_name_are_bounded(tls_origin, monkeypatch) -> None:
    record, client_context = tls_origin
    monkeypatch.setattr(network_module, "MAX_TLS_POOLS", 2)
    names = [f"n{i}.test" for i in range(5)]
    network = Network(resolver=Hosts({name: ["127.0.0.1"] for name in names}), ssl_context=client_context)
    policy = EgressPolicy.parse(names)
    try:
        for name in names + names[:1]:
            got = await network.fetch("GET", f"https://{name}:{record.port}/", [], b"", 5, policy=policy)
            assert got.status == 200
            assert len(network._tls) <= 2
    finally:
        await network.close()
    assert [headers["host"] for _, headers in record.requests] == [f"{name}:{record.port}" for name in names + names[:1]]
