"""Keep what the Wasm runtime writes straight to file descriptor 2 off the terminal.

wasmer-sdk prints a guest's trap backtrace to fd 2 of the host process, bypassing
Python. The same text reaches the engine in the raised error and goes into the trace
item; this module moves fd 2 onto a pipe so nothing scribbles over a terminal UI or
a CLI's output, and keeps the captured lines for inspection. Python's own `sys.stderr`
keeps writing to the original destination.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections import deque
from typing import TextIO


class RuntimeStderr:
    """Process-wide and reference-counted: the first `acquire` redirects, the last `release` restores."""

    _lock = threading.Lock()
    _users = 0
    _saved_fd: int | None = None
    _reader: threading.Thread | None = None
    _read_fd: int | None = None
    _saved_sys_stderr: TextIO | None = None
    _saved_dunder_stderr: io.TextIOWrapper | None = None
    lines: deque[str] = deque(maxlen=2000)

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            cls._users += 1
            if cls._users > 1:
                return
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            cls._saved_fd = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
            cls._read_fd = read_fd
            cls._saved_sys_stderr = None
            writer: io.TextIOWrapper | None = None
            if _writes_to_fd2(sys.stderr):
                cls._saved_sys_stderr = sys.stderr
                sys.stderr = writer = _terminal_writer(cls._saved_fd)
            # Textual draws on sys.__stderr__: keep it pointed at the real terminal too
            cls._saved_dunder_stderr = None
            if _writes_to_fd2(sys.__stderr__):
                cls._saved_dunder_stderr = sys.__stderr__
                # typeshed declares sys.__stderr__ Final; moving it is this module's whole point
                sys.__stderr__ = writer or _terminal_writer(cls._saved_fd)  # type: ignore[misc]
            cls._reader = threading.Thread(target=cls._drain, args=(read_fd,), name="wasmdeck-fd2", daemon=True)
            cls._reader.start()

    @classmethod
    def _drain(cls, read_fd: int) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                cls.lines.append(line.decode("utf-8", "replace"))
        if pending:
            cls.lines.append(pending.decode("utf-8", "replace"))
        try:
            os.close(read_fd)
        except OSError:
            pass

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                return
            cls._users -= 1
            if cls._users:
                return
            assert cls._saved_fd is not None
            if cls._saved_dunder_stderr is not None:
                dunder = sys.__stderr__
                sys.__stderr__ = cls._saved_dunder_stderr  # type: ignore[misc]
                if dunder is not None and dunder is not sys.stderr:
                    try:
                        dunder.close()
                    except (OSError, ValueError):
                        pass
                cls._saved_dunder_stderr = None
            if cls._saved_sys_stderr is not None:
                replacement = sys.stderr
                sys.stderr = cls._saved_sys_stderr
                try:
                    replacement.close()
                except (OSError, ValueError):
                    pass
            os.dup2(cls._saved_fd, 2)  # closes the pipe's last write end, so the reader ends
            os.close(cls._saved_fd)
            cls._saved_fd = None
            if cls._reader is not None:
                cls._reader.join(timeout=2)
            cls._reader = None

    @classmethod
    def active(cls) -> bool:
        return cls._users > 0


def _writes_to_fd2(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.fileno() == 2
    except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
        return False


def _terminal_writer(saved_fd: int) -> io.TextIOWrapper:
    """A text stream onto (a copy of) the descriptor fd 2 pointed at before the capture."""
    return io.TextIOWrapper(io.FileIO(os.dup(saved_fd), "w"), encoding="utf-8", errors="replace", line_buffering=True)
