"""Bound what a guest can make the host hold in files: generated wrappers around WASI imports.

Why: files a guest writes (under /workspace, /tmp, or anywhere in its root) live in host
memory, outside linear memory, and wasmer-sdk has no setting to cap them (its Python API
exposes no storage provider for the sandbox, and the in-memory filesystem it uses has no
limit). Measured: one request at memoryMb 8 held 1 GiB this way.

How: the metering rewrite (see ``metering``) points every reference to these imports (calls,
``ref.func``, tables, exports) at a wrapper defined in the module, so the guest cannot reach
the raw function. Each guest process may grow files by at most ``FILE_WRITE_QUOTA`` bytes
(a global in the module, fresh in every process); past it the wrapper answers ``ENOSPC``
without calling the host:

- ``fd_write`` to a file (any fd above 2) counts the bytes it is given; over 1,024 buffers is
  ``EINVAL``, as POSIX's IOV_MAX;
- ``fd_pwrite`` counts its bytes plus the gap past the file's end it would leave, ``fd_seek``
  the gap past the end it moves to, ``fd_allocate`` and ``fd_filestat_set_size`` the growth
  they ask for (the file's size comes from ``fd_filestat_get``, given 64 bytes of linear
  memory at address 0 that the wrapper restores);
- creating a file (``path_open`` with ``O_CREAT``), a directory, a symlink or a link counts
  ``ENTRY_BYTES``;
- stdin, stdout and stderr cannot be closed (``fd_close`` says it did) or renumbered
  (``ENOTSUP``), because wasmer-sdk hands a freed descriptor to the next file opened, and a
  file behind descriptor 1 would be written uncounted;
- ``random_get`` fills its buffer in charged chunks, like bulk memory (one call can otherwise
  fill 128 MiB, about 100 ms, with no stop point).

Every path through a wrapper ends in a WASI call (the import itself, or the metering's stop call
when the wrapper answers alone), so a guest calling one in a loop still reaches stop points.

Files under /tmp and elsewhere in the root are freed when the guest process ends; /workspace
outlives it, so the runtime also measures a worker's /workspace after each request of a module
that can create files and replaces the sandbox when it holds more than ``WORKSPACE_BYTES``.
"""

from __future__ import annotations

from .wasm_module import _uleb

FILE_WRITE_QUOTA = 32 << 20  # bytes of file growth per guest process
ENTRY_BYTES = 4096  # what one file, directory or link counts (also bounds how many a request makes)
WORKSPACE_BYTES = 64 << 20  # a sandbox whose /workspace holds more is replaced after the request
IOV_MAX = 1024
RANDOM_CHUNK = 1 << 16

ENOSPC, ENOTSUP, EINVAL = 51, 58, 28
O_CREAT = 1

FILESTAT = "fd_filestat_get"
# name -> its signature's encoding (func type)
_I32, _I64 = 0x7F, 0x7E


def _sig(params: list[int]) -> bytes:
    return b"\x60" + _uleb(len(params)) + bytes(params) + b"\x01\x7f"


SIGNATURES: dict[str, bytes] = {
    "fd_write": _sig([_I32, _I32, _I32, _I32]),
    "fd_pwrite": _sig([_I32, _I32, _I32, _I64, _I32]),
    "fd_seek": _sig([_I32, _I64, _I32, _I32]),
    "fd_allocate": _sig([_I32, _I64, _I64]),
    "fd_filestat_set_size": _sig([_I32, _I64]),
    "path_open": _sig([_I32, _I32, _I32, _I32, _I32, _I64, _I64, _I32, _I32]),
    "path_create_directory": _sig([_I32, _I32, _I32]),
    "path_symlink": _sig([_I32, _I32, _I32, _I32, _I32]),
    "path_link": _sig([_I32, _I32, _I32, _I32, _I32, _I32, _I32]),
    "fd_renumber": _sig([_I32, _I32]),
    "fd_close": _sig([_I32]),
    "random_get": _sig([_I32, _I32]),
}
FILESTAT_SIGNATURE = _sig([_I32, _I32])
NEEDS_FILESTAT = {"fd_pwrite", "fd_seek", "fd_allocate", "fd_filestat_set_size"}
CREATES_FILES = {"path_open", "path_create_directory", "path_symlink", "path_link"}
FILE_SIZE_TYPE = b"\x60\x01\x7f\x01\x7e"  # func [i32] -> [i64]

_GET, _SET, _TEE = b"\x20", b"\x21", b"\x22"


def _i32(n: int) -> bytes:
    return b"\x41" + _sleb(n)


def _i64(n: int) -> bytes:
    return b"\x42" + _sleb(n)


def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _get(i: int) -> bytes:
    return _GET + _uleb(i)


def _set(i: int) -> bytes:
    return _SET + _uleb(i)


def _locals(groups: list[tuple[int, int]]) -> bytes:
    return _uleb(len(groups)) + b"".join(_uleb(n) + bytes([t]) for n, t in groups)


class Wrappers:
    """Makes the wrapper bodies for one module; indices are in the rewritten module."""

    def __init__(self, quota_global: int, file_size: int | None, budget_global: int, stop: int,
                 budget: int, chunk_units: bytes):
        self.q = _uleb(quota_global)
        self.file_size = file_size  # the generated $file_size function, when a wrapper needs it
        self.budget_global = _uleb(budget_global)
        self.stop = stop
        self.budget = budget
        self.chunk_units = chunk_units  # code turning a chunk's length on the stack into its units

    def call(self, index: int) -> bytes:
        return b"\x10" + _uleb(index)

    def charge(self, amount_local: int, errno: int = ENOSPC) -> bytes:
        """amount (i64 local) over the quota left: return ENOSPC (after a stop call: the wrapper's
        work, up to IOV_MAX buffers summed, must not repeat without one); else take it."""
        return (_get(amount_local) + b"\x23" + self.q + b"\x56"  # amount > quota (unsigned)
                + b"\x04\x40" + self.call(self.stop) + _i32(errno) + b"\x0f\x0b"
                + b"\x23" + self.q + _get(amount_local) + b"\x7d\x24" + self.q)  # quota -= amount

    def forward(self, raw: int, params: int) -> bytes:
        return b"".join(_get(i) for i in range(params)) + self.call(raw)

    def stdio_passes(self, fd_local: int, raw: int, params: int) -> bytes:
        """Descriptors 0-2 (stdin, stdout, stderr) are not files: straight through."""
        return _get(fd_local) + _i32(3) + b"\x49\x04\x40" + self.forward(raw, params) + b"\x0f\x0b"

    def gap_past_end(self, fd_local: int, position: bytes, amount_local: int, gap_local: int,
                     over: bytes = b"") -> bytes:
        """amount += max(0, position - size(fd)); a gap over the quota left runs ``over`` then
        returns ENOSPC (so the sum cannot wrap around)."""
        assert self.file_size is not None, "a wrapper that measures files was planned without $file_size"
        size = _get(fd_local) + self.call(self.file_size)  # i64
        return (position + size + b"\x56\x04\x40"  # if position > size:
                + position + size + b"\x7d" + _set(gap_local)  # gap = position - size
                + _get(gap_local) + b"\x23" + self.q + b"\x56\x04\x40" + over + self.call(self.stop)
                + _i32(ENOSPC) + b"\x0f\x0b"
                + _get(amount_local) + _get(gap_local) + b"\x7c" + _set(amount_local)
                + b"\x0b")

    def body(self, name: str, raw: int) -> bytes:
        return getattr(self, "w_" + name)(raw)

    def iov_sum(self, iovs: int, count: int, amount: int, i: int, raw: int, params: int) -> bytes:
        """amount = the bytes the iovecs hold (more than IOV_MAX of them: EINVAL; iovecs outside
        memory: the raw call reports the fault)."""
        return (_get(count) + _i32(IOV_MAX) + b"\x4b\x04\x40" + self.call(self.stop) + _i32(EINVAL) + b"\x0f\x0b"
                + _get(iovs) + b"\xad" + _get(count) + b"\xad" + _i64(3) + b"\x86\x7c"  # iovs + count * 8
                + b"\x3f\x00\xad" + _i64(16) + b"\x86\x56"  # > memory bytes
                + b"\x04\x40" + self.forward(raw, params) + b"\x0f\x0b"
                + b"\x02\x40\x03\x40"  # block loop
                + _get(i) + _get(count) + b"\x4f\x0d\x01"  # i >= count: done
                + _get(amount) + _get(iovs) + _get(i) + _i32(3) + b"\x74\x6a" + b"\x35\x02\x04" + b"\x7c" + _set(amount)
                + _get(i) + _i32(1) + b"\x6a" + _set(i) + b"\x0c\x00"
                + b"\x0b\x0b")

    # fd_write(fd, iovs, iovs_len, nwritten) -> errno
    def w_fd_write(self, raw: int) -> bytes:
        amount, i = 4, 5
        code = (self.stdio_passes(0, raw, 4) + self.iov_sum(1, 2, amount, i, raw, 4)
                + self.charge(amount) + self.forward(raw, 4) + b"\x0b")
        return _locals([(1, _I64), (1, _I32)]) + code

    # fd_pwrite(fd, iovs, iovs_len, offset, nwritten) -> errno
    def w_fd_pwrite(self, raw: int) -> bytes:
        amount, i, gap = 5, 6, 7
        code = (self.stdio_passes(0, raw, 5) + self.iov_sum(1, 2, amount, i, raw, 5)
                + self.gap_past_end(0, _get(3), amount, gap) + self.charge(amount) + self.forward(raw, 5) + b"\x0b")
        return _locals([(1, _I64), (1, _I32), (1, _I64)]) + code

    # fd_seek(fd, offset, whence, newoffset) -> errno: seek, then count a gap past the end (over
    # the quota: back to the end, ENOSPC, so no later write lands past it uncounted)
    def w_fd_seek(self, raw: int) -> bytes:
        err, amount, gap = 4, 5, 6
        position = _get(3) + b"\x29\x03\x00"  # i64.load newoffset (the raw call wrote it)
        assert self.file_size is not None, "a wrapper that measures files was planned without $file_size"
        back = _get(0) + _get(0) + self.call(self.file_size) + _i32(0) + _get(3) + self.call(raw) + b"\x1a"
        code = (self.stdio_passes(0, raw, 4)
                + self.forward(raw, 4) + _b_tee(err) + b"\x04\x40" + _get(err) + b"\x0f\x0b"
                + self.gap_past_end(0, position, amount, gap, over=back)
                + b"\x23" + self.q + _get(amount) + b"\x7d\x24" + self.q
                + _i32(0) + b"\x0b")
        return _locals([(1, _I32), (2, _I64)]) + code

    # fd_allocate(fd, offset, len) -> errno
    def w_fd_allocate(self, raw: int) -> bytes:
        amount, end, gap = 3, 4, 5
        code = (self.stdio_passes(0, raw, 3)
                + _get(1) + _get(2) + b"\x7c" + _b_tee(end) + _get(1) + b"\x54"  # end = offset + len; wrapped?
                + b"\x04\x40" + _i32(ENOSPC) + b"\x0f\x0b"
                + self.gap_past_end(0, _get(end), amount, gap) + self.charge(amount) + self.forward(raw, 3) + b"\x0b")
        return _locals([(3, _I64)]) + code

    # fd_filestat_set_size(fd, size) -> errno
    def w_fd_filestat_set_size(self, raw: int) -> bytes:
        amount, gap = 2, 3
        code = (self.stdio_passes(0, raw, 2) + self.gap_past_end(0, _get(1), amount, gap)
                + self.charge(amount) + self.forward(raw, 2) + b"\x0b")
        return _locals([(2, _I64)]) + code

    def entry(self, params: int, amount: int, extra: bytes = b"") -> bytes:
        return _i64(ENTRY_BYTES) + extra + _set(amount) + self.charge(amount)

    # path_open(fd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened) -> errno
    def w_path_open(self, raw: int) -> bytes:
        amount = 9
        code = (_get(4) + _i32(O_CREAT) + b"\x71\x04\x40" + self.entry(9, amount) + b"\x0b"
                + self.forward(raw, 9) + b"\x0b")
        return _locals([(1, _I64)]) + code

    # path_create_directory(fd, path, path_len) -> errno
    def w_path_create_directory(self, raw: int) -> bytes:
        return _locals([(1, _I64)]) + self.entry(3, 3) + self.forward(raw, 3) + b"\x0b"

    # path_symlink(old_path, old_path_len, fd, new_path, new_path_len) -> errno
    def w_path_symlink(self, raw: int) -> bytes:
        return _locals([(1, _I64)]) + self.entry(5, 5, _get(1) + b"\xad\x7c") + self.forward(raw, 5) + b"\x0b"

    # path_link(old_fd, old_flags, old_path, old_len, new_fd, new_path, new_len) -> errno
    def w_path_link(self, raw: int) -> bytes:
        return _locals([(1, _I64)]) + self.entry(7, 7) + self.forward(raw, 7) + b"\x0b"

    # fd_renumber(fd, to) -> errno: never onto or away from stdin, stdout, stderr
    def w_fd_renumber(self, raw: int) -> bytes:
        code = (_get(0) + _i32(3) + b"\x49" + _get(1) + _i32(3) + b"\x49\x72\x04\x40" + self.call(self.stop)
                + _i32(ENOTSUP) + b"\x0f\x0b"
                + self.forward(raw, 2) + b"\x0b")
        return _locals([]) + code

    # fd_close(fd) -> errno: stdin, stdout and stderr stay open
    def w_fd_close(self, raw: int) -> bytes:
        code = (_get(0) + _i32(3) + b"\x49\x04\x40" + self.call(self.stop) + _i32(0) + b"\x0f\x0b"
                + self.forward(raw, 1) + b"\x0b")
        return _locals([]) + code

    # random_get(buf, len) -> errno: in charged chunks
    def w_random_get(self, raw: int) -> bytes:
        chunk, err, spent = 2, 3, 4
        g = self.budget_global
        code = (b"\x03\x40"
                + _get(1) + _i32(RANDOM_CHUNK) + _get(1) + _i32(RANDOM_CHUNK) + b"\x49\x1b" + _set(chunk)
                + b"\x23" + g + _get(chunk) + self.chunk_units + b"\x6b" + _b_tee(spent) + b"\x24" + g
                + _get(spent) + _i32(0) + b"\x48\x04\x40" + _i32(self.budget) + b"\x24" + g + self.call(self.stop) + b"\x0b"
                + _get(0) + _get(chunk) + self.call(raw) + _b_tee(err) + b"\x04\x40" + _get(err) + b"\x0f\x0b"
                + _get(0) + _get(chunk) + b"\x6a" + _set(0)
                + _get(1) + _get(chunk) + b"\x6b" + _b_tee(1) + b"\x0d\x00"
                + b"\x0b" + _i32(0) + b"\x0b")
        return _locals([(3, _I32)]) + code

    def file_size_body(self, filestat: int) -> bytes:
        """$file_size(fd) -> i64: the file's size from fd_filestat_get, using bytes 0..64 of memory
        and restoring them (0 when the call fails)."""
        saved = range(1, 9)
        err, size = 9, 10
        save = b"".join(_i32(0) + b"\x29\x03" + _uleb(8 * k) + _set(s) for k, s in enumerate(saved))
        restore = b"".join(_i32(0) + _get(s) + b"\x37\x03" + _uleb(8 * k) for k, s in enumerate(saved))
        code = (save + _get(0) + _i32(0) + self.call(filestat) + _set(err)
                + _i32(0) + b"\x29\x03\x20" + _set(size) + restore
                + _get(err) + b"\x04\x7e" + _i64(0) + b"\x05" + _get(size) + b"\x0b\x0b")
        return _locals([(8, _I64), (1, _I32), (1, _I64)]) + code


def _b_tee(i: int) -> bytes:
    return _TEE + _uleb(i)
