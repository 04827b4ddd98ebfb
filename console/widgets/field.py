"""A form's one-line text field."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input


class Field(Input):
    """An Input that, when it gets the keyboard, puts the cursor after its value: never on a
    selection that the first key typed would replace (Input selects everything on focus by
    default, so a tab switch or an opening dialog followed by a key silently lost the value)."""

    def __init__(self, value: str | None = None, placeholder: str = "", **options: Any) -> None:
        options.setdefault("select_on_focus", False)
        super().__init__(value, placeholder, **options)
