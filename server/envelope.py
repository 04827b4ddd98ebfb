"""The admin API's JSON envelope, `{success, errors: [{code, message, field?}], result}`, shared
by its HTTP routes and the /tail WebSocket's refusals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

_CODES = {400: "invalid_input", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 431: "too_large", 500: "internal_error", 503: "unavailable"}


def envelope_error(status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None,
                   code: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    if field is not None:
        error["field"] = field
    return JSONResponse({"success": False, "errors": [error], "result": None}, status_code=status, headers=headers)


def ok(result: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "errors": [], "result": result}, status_code=status)
