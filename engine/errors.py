"""Errors the engine raises to its clients.

Every error carries one clear sentence meant for the person who caused it; the CLI
prints it as is, the server returns it in a 4xx/5xx body.
"""


class WasmdeckError(Exception):
    """Base class: the message is one sentence a user can act on."""


class InvalidModule(WasmdeckError):
    """The bytes offered as a Worker are not an acceptable WASI command module."""


class MemoryOverLimit(InvalidModule):
    """The module needs more memory at start than its memory limit allows."""


class InvalidInput(WasmdeckError):
    """A name, tag, var, limit or option is malformed."""


class NotFound(WasmdeckError):
    """A namespace, worker or version does not exist."""
