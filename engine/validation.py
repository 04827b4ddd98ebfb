"""Checks on names, tags and vars that every client of the engine goes through."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import InvalidInput

MAX_TAGS = 8
MAX_TAG_LENGTH = 128
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# CGI/1.1 meta-variables (RFC 3875) and the extensions wasmdeck sets; a var may never
# shadow one of them, nor any HTTP_* header variable.
RESERVED_VARS = frozenset(
    {
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "GATEWAY_INTERFACE",
        "HTTPS",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_IDENT",
        "REMOTE_USER",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "SCRIPT_NAME",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
    }
)


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_NAMES = {"\x00": "NUL", "\r": "CR", "\n": "LF", "\x7f": "DEL"}


def control_character(value: str) -> str | None:
    """The first character an HTTP field value may not hold (a control character other than tab),
    named ("NUL", "CR", "LF", "DEL", "0x01"...), or None when there is none."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    char = found.group()
    return _CONTROL_NAMES.get(char, f"0x{ord(char):02x}")


def check_name(name: str, what: str = "worker name") -> str:
    """A worker or namespace name must be a DNS label, so it can be a hostname's first label."""
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        raise InvalidInput(
            f"{what} {name!r} is not a DNS label: use 1-63 lowercase letters, digits and hyphens, "
            "not starting or ending with a hyphen"
        )
    return name


def _is_unicode(text: str) -> bool:
    """Whether `text` can be stored and sent as UTF-8 (JSON can carry a lone surrogate, "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not tag:
        raise InvalidInput("a tag cannot be empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidInput(f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters")
    if "," in tag or "&" in tag or any(ch.isspace() for ch in tag):
        raise InvalidInput(f"tag {tag!r} contains ',', '&' or whitespace, which tags cannot hold")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in tag):
        raise InvalidInput(f"tag {tag!r} contains a control character")
    if not _is_unicode(tag):
        raise InvalidInput(f"tag {tag!r} is not Unicode text (it holds a lone surrogate)")
    return tag


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    unique: list[str] = []
    for tag in tags:
        check_tag(tag)
        if tag not in unique:
            unique.append(tag)
    if len(unique) > MAX_TAGS:
        raise InvalidInput(f"a worker can have at most {MAX_TAGS} tags, not {len(unique)}")
    return tuple(unique)


def check_vars(variables: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in variables.items():
        if not isinstance(key, str) or not VAR_NAME.match(key):
            raise InvalidInput(
                f"var name {key!r} is not an environment variable name (letters, digits, underscore)"
            )
        if key.upper() in RESERVED_VARS or key.upper().startswith("HTTP_"):
            raise InvalidInput(f"var {key} is reserved for a CGI meta-variable and cannot be set")
        if not isinstance(value, str):
            raise InvalidInput(f"var {key} must be text")
        if "\x00" in value:
            raise InvalidInput(f"var {key} contains a NUL character")
        if not _is_unicode(value):  # the value is never quoted: a secret's is checked here too
            raise InvalidInput(f"var {key} is not Unicode text (it holds a lone surrogate)")
        checked[key] = value
    return checked


def parse_var_assignment(text: str) -> tuple[str, str]:
    """`KEY=VALUE` as given on a command line."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidInput(f"var {text!r} is not of the form KEY=VALUE")
    return key, value
