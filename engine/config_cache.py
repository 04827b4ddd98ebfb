"""The configuration every request reads (namespaces, workers, limits, tail consumers), cached
until any process commits a change to the database.

`refresh()` is the one check, made once per unit of work (a dispatch, a tail delivery); the
lookups after it reuse its answer, so a request costs one cheap `PRAGMA data_version`.
"""

from __future__ import annotations

from collections.abc import Callable

from .limits import EffectiveLimits, Limits, resolve
from .store import Namespace, Store, TailConsumer, Worker

# the platform roles a Worker can have in its namespace, as named in messages
DISPATCH_WORKER = "dispatch Worker"
OUTBOUND_WORKER = "Outbound Worker"
TAIL_WORKER = "Tail Worker"


class ConfigCache:
    def __init__(self, store: Store, engine_defaults: Limits,
                 open_secrets: Callable[[Worker | None], Worker | None] = lambda worker: worker) -> None:
        self._store = store
        self._open_secrets = open_secrets  # a worker to run: its vars joined by its opened secrets
        self._engine_defaults = engine_defaults
        self._config_version: int | None = None
        self._data_version: int | None = None
        self._namespaces: dict[str, Namespace] = {}
        self._workers: dict[tuple[str, str], Worker | None] = {}
        self._limits: dict[tuple[str, str, int], EffectiveLimits] = {}
        self._tag_limits: dict[str, Limits] | None = None
        self._tail_consumers: dict[str, list[TailConsumer]] = {}
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever the cache learns that the configuration changed (a change by
        this process, or one by another process seen at a `refresh()`)."""
        self._listeners.append(listener)

    def refresh(self) -> None:
        """Drop what is cached if any process changed a config table since the last check.

        `PRAGMA data_version` is cheap and changes on any commit by another connection,
        including this engine's own trace writer; only then is the config counter read.
        """
        data_version = int(self._store.db.execute("PRAGMA data_version").fetchone()[0])
        if data_version == self._data_version:
            return
        self._data_version = data_version
        version = self._store.config_version()
        if version != self._config_version:
            self._clear()
            self._config_version = version

    def changed(self) -> None:
        """This process changed the configuration: forget everything."""
        self._clear()
        self._config_version = None
        self._data_version = None

    def _clear(self) -> None:
        self._namespaces.clear()
        self._workers.clear()
        self._limits.clear()
        self._tag_limits = None
        self._tail_consumers.clear()
        for listener in self._listeners:
            listener()

    def namespace(self, name: str) -> Namespace:
        """Raises NotFound for a namespace that does not exist (that answer is not cached)."""
        found = self._namespaces.get(name)
        if found is None:
            found = self._namespaces[name] = self._store.namespace(name)
        return found

    def worker(self, namespace: str, name: str) -> Worker | None:
        key = (namespace, name)
        if key not in self._workers:
            self._workers[key] = self._open_secrets(self._store.find_worker(namespace, name))
        return self._workers[key]

    def limits(self, namespace: Namespace, worker: Worker) -> EffectiveLimits:
        """The worker's limits resolved from its tags, the namespace's defaults and the engine's."""
        key = (namespace.name, worker.name, worker.version)
        found = self._limits.get(key)
        if found is None:
            if self._tag_limits is None:
                self._tag_limits = self._store.tag_limits()
            found = self._limits[key] = resolve(worker.tags, self._tag_limits, namespace.defaults, self._engine_defaults)
        return found

    def tail_consumers(self, namespace: str) -> list[TailConsumer]:
        found = self._tail_consumers.get(namespace)
        if found is None:
            found = self._tail_consumers[namespace] = self._store.tail_consumers(namespace)
        return found

    def platform_role(self, namespace: Namespace, name: str) -> str | None:
        """The platform role `name` has in the namespace (its dispatch, Outbound or a Tail Worker), if any."""
        if name == namespace.dispatch_worker:
            return DISPATCH_WORKER
        if namespace.outbound is not None and name == namespace.outbound.service:
            return OUTBOUND_WORKER
        if any(consumer.consumer == name for consumer in self.tail_consumers(namespace.name)):
            return TAIL_WORKER
        return None
