"""The HTTP-shaped Request every entry point builds: malformed input is one InvalidInput sentence."""

from __future__ import annotations

import pytest

from wasmdeck.engine import InvalidInput, Request


@pytest.mark.parametrize(
    "url",
    ["http://[::1/", "http://[fe80::1%25a%2fb]/", "ftp://example.com/", "http:///path", "http://example.com:99999/", "not a url"],
)
def test_a_malformed_url_is_refused_with_a_sentence(url: str):
    with pytest.raises(InvalidInput) as refused:
        Request(url)
    assert url in str(refused.value)


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "nul\x00byte", "bare\rcr"])
def test_a_header_value_with_a_line_break_or_nul_is_refused(value: str):
    with pytest.raises(InvalidInput):
        Request("http://example.com/", headers=[("X-Test", value)])
