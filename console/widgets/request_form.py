"""The request composer: method, URL, headers (one `Name: value` a line) and body.

The form only collects and checks what was typed; it posts `RequestForm.Send` and leaves
running the request to whoever listens (the requests screen).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.widgets import Button, Input, Select, TextArea

from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.http import Request, parse_header_line

from ..styles import stylesheet
from .error_line import ErrorLine
from .field import Field

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_URL = "http://hello.localhost/"


def parse_headers(text: str) -> list[tuple[str, str]]:
    """One `Name: value` a line; blank lines and lines starting with `#` are skipped."""
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            headers.append(parse_header_line(stripped))
        except InvalidInput as error:
            raise InvalidInput(f"{error} (headers, line {number})") from None
    return headers


@dataclass(frozen=True)
class RequestDraft:
    """A request as typed in the form: what history keeps and what fills the form back."""

    method: str = "GET"
    url: str = DEFAULT_URL
    headers: str = ""
    body: str = ""

    def build(self) -> Request:
        """The engine request; raises `InvalidInput` with one sentence when something is malformed."""
        url = self.url.strip()
        if not url:
            raise InvalidInput("type a URL to send the request to, e.g. http://hello.localhost/")
        return Request(url=url, method=self.method, headers=parse_headers(self.headers), body=self.body.encode("utf-8"))


class RequestForm(Vertical):
    """Method, URL and Send on one line; headers and body editors side by side; an inline error."""

    DEFAULT_CSS = stylesheet(__name__)

    class Send(Message):
        """The user asked to send what the form holds."""

        def __init__(self, draft: RequestDraft) -> None:
            super().__init__()
            self.draft = draft

    error = ""
    """The inline error shown under the form, or ""."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="request-line"):
            yield Select([(method, method) for method in METHODS], value="GET", allow_blank=False, id="request-method")
            # arriving on the tab puts the cursor after the URL; ctrl+l selects it on purpose
            yield Field(DEFAULT_URL, placeholder="http://worker.localhost/path?query", id="request-url")
            yield Button("Send", variant="primary", id="request-send")
        with Horizontal(id="request-editors"):
            headers = TextArea(id="request-headers", placeholder="Content-Type: application/json")
            headers.border_title = "Headers [dim](Name: value per line)[/dim]"
            yield headers
            body = TextArea(id="request-body", placeholder='{"hello": "world"}')
            body.border_title = "Body"
            yield body
        yield ErrorLine(classes="-empty", id="request-error")

    @property
    def draft(self) -> RequestDraft:
        method = self.query_one("#request-method", Select).value
        return RequestDraft(
            method=str(method) if method is not Select.BLANK else "GET",
            url=self.query_one("#request-url", Input).value,
            headers=self.query_one("#request-headers", TextArea).text,
            body=self.query_one("#request-body", TextArea).text,
        )

    def fill(self, draft: RequestDraft) -> None:
        """Put a (history) request back into the form."""
        method = draft.method if draft.method in METHODS else "GET"
        self.query_one("#request-method", Select).value = method
        self.query_one("#request-url", Input).value = draft.url
        self.query_one("#request-headers", TextArea).load_text(draft.headers)
        self.query_one("#request-body", TextArea).load_text(draft.body)
        self.show_error("")

    def show_error(self, message: str) -> None:
        self.error = message
        self.query_one("#request-error", ErrorLine).show(escape(message))

    def focus_url(self, *, select: bool = False) -> None:
        """Put the keyboard in the URL; with `select`, select all of it, so typing replaces it."""
        url = self.query_one("#request-url", Input)
        url.focus()
        if select:
            url.select_all()

    @on(Input.Submitted, "#request-url")
    @on(Button.Pressed, "#request-send")
    def _send(self, event: Message) -> None:
        event.stop()
        self.post_message(self.Send(self.draft))
