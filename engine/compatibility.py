"""A Worker's compatibility date and flags, as Cloudflare's tools send them.

The date says which runtime behaviour a Worker was written against (`YYYY-MM-DD`, never in
the future); flags opt in or out of single changes. Wasm Workers run the same whatever they
say; they are kept so the tools read back what they wrote, and for JavaScript Workers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from .errors import InvalidInput

MAX_FLAGS = 64
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FLAG = re.compile(r"^[a-z0-9_]{1,128}$")


def check_compatibility(date: str | None, flags: Iterable[str]) -> tuple[str | None, tuple[str, ...]]:
    if date is not None:
        if not isinstance(date, str) or not _DATE.match(date):
            raise InvalidInput(f"compatibility date {date!r} is not of the form YYYY-MM-DD")
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise InvalidInput(f"compatibility date {date} is not a calendar date") from None
        if day > dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1):
            raise InvalidInput(f"compatibility date {date} is in the future")
    checked: list[str] = []
    for flag in flags:
        if not isinstance(flag, str) or not _FLAG.match(flag):
            raise InvalidInput(f"compatibility flag {flag!r} is not a flag name (lowercase letters, digits and underscores)")
        if flag not in checked:
            checked.append(flag)
    if len(checked) > MAX_FLAGS:
        raise InvalidInput(f"a worker can have at most {MAX_FLAGS} compatibility flags, not {len(checked)}")
    return date, tuple(checked)
