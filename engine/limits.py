"""Per-invocation limits and how they are resolved from tags, namespace and engine defaults.

Each field resolves on its own: the strictest (smallest) value that any of the worker's
tags sets; if no tag sets it, the namespace's default; if the namespace has none, the
engine's default. A dispatcher may then tighten (never loosen) the result per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import InvalidInput

FIELDS = ("cpu_ms", "memory_mb", "sub_requests", "wall_ms")
CAMEL = {"cpu_ms": "cpuMs", "memory_mb": "memoryMb", "sub_requests": "subRequests", "wall_ms": "wallMs"}
UPPER_BOUNDS = {"cpu_ms": 300_000, "memory_mb": 4096, "sub_requests": 10_000, "wall_ms": 900_000}
LOWER_BOUNDS = {"cpu_ms": 1, "memory_mb": 1, "sub_requests": 0, "wall_ms": 1}


@dataclass(frozen=True)
class Limits:
    """A set of limit values; None means "not set here"."""

    cpu_ms: int | None = None
    memory_mb: int | None = None
    sub_requests: int | None = None
    wall_ms: int | None = None

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{CAMEL[name]} must be a whole number, not {value!r}")
            if not LOWER_BOUNDS[name] <= value <= UPPER_BOUNDS[name]:
                raise InvalidInput(
                    f"{CAMEL[name]} must be between {LOWER_BOUNDS[name]} and {UPPER_BOUNDS[name]}, not {value}"
                )

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in FIELDS)

    def as_dict(self) -> dict[str, int | None]:
        return {CAMEL[name]: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Limits":
        """Accepts camelCase (cpuMs) or snake_case (cpu_ms) keys; refuses unknown ones."""
        by_key = {**{camel: name for name, camel in CAMEL.items()}, **{name: name for name in FIELDS}}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in by_key:
                raise InvalidInput(f"unknown limit {key!r}; known limits are cpuMs, memoryMb, subRequests, wallMs")
            values[by_key[key]] = value
        return cls(**values)


_OUT_OF_MEMORY = re.compile(
    r"out of memory|memory allocation of \d+ bytes failed|cannot allocate memory|failed to allocate|std::bad_alloc|\boom\b",
    re.IGNORECASE,
)


def looks_out_of_memory(text: str) -> bool:
    """Whether a guest's failure reads like running out of memory (C, Rust and C++ runtimes say so)."""
    return bool(_OUT_OF_MEMORY.search(text))


# The engine's defaults, used for any field that neither a tag nor the namespace sets.
ENGINE_DEFAULTS = Limits(cpu_ms=5_000, memory_mb=128, sub_requests=50, wall_ms=30_000)


@dataclass(frozen=True)
class EffectiveLimits:
    """Fully resolved limits. `sources` says where each value came from ("tag:free", "namespace",
    "engine", "dispatch", "caller"), keyed by the limit's API name (`cpuMs`, `memoryMb`,
    `subRequests`, `wallMs`) like everything else wasmdeck shows."""

    cpu_ms: int
    memory_mb: int
    sub_requests: int
    wall_ms: int
    sources: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {CAMEL[name]: getattr(self, name) for name in FIELDS}
        data["sources"] = {CAMEL[name]: self.sources[CAMEL[name]] for name in FIELDS}
        return data

    def tightened(self, override: Limits | None, source: str = "dispatch") -> "EffectiveLimits":
        """Apply a dispatcher's per-request limits: each field can only go down."""
        if override is None:
            return self
        changes: dict[str, Any] = {}
        sources = dict(self.sources)
        for name in FIELDS:
            wanted = getattr(override, name)
            if wanted is not None and wanted < getattr(self, name):
                changes[name] = wanted
                sources[CAMEL[name]] = source
        return replace(self, **changes, sources=sources)


def resolve(
    tags: tuple[str, ...],
    tag_limits: dict[str, Limits],
    namespace_defaults: Limits,
    engine_defaults: Limits = ENGINE_DEFAULTS,
) -> EffectiveLimits:
    values: dict[str, int] = {}
    sources: dict[str, str] = {}
    for name in FIELDS:
        best: int | None = None
        best_source = ""
        for tag in tags:
            limits = tag_limits.get(tag)
            value = getattr(limits, name) if limits else None
            if value is not None and (best is None or value < best):
                best, best_source = value, f"tag:{tag}"
        if best is None and getattr(namespace_defaults, name) is not None:
            best, best_source = getattr(namespace_defaults, name), "namespace"
        if best is None:
            best, best_source = getattr(engine_defaults, name), "engine"
        values[name] = best
        sources[CAMEL[name]] = best_source
    return EffectiveLimits(**values, sources=sources)


assert [f.name for f in fields(Limits)] == list(FIELDS)
